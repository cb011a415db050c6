//! The container's mounts and its `linux` section: namespaces, cgroup resources, devices,
//! sysctls and the masked and read-only paths.

use oci_spec::runtime::{
    Linux, LinuxBuilder, LinuxCpuBuilder, LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder, Mount,
    MountBuilder,
};

use super::{ContainerConfig, Device, Error, INIT_PATH, Namespace, Resources, oci};

/// containerd's masked paths.
const MASKED_PATHS: [&str; 10] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];

/// containerd's read-only paths.
const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn mount(dest: &str, kind: &str, source: &str, options: &[&str]) -> super::Mount {
    super::Mount {
        destination: dest.to_string(),
        kind: kind.to_string(),
        source: source.to_string(),
        options: options.iter().map(|o| o.to_string()).collect(),
    }
}

/// containerd's default mounts, with `/sys/fs/cgroup` read-only as Docker mounts it;
/// privileged, sysfs and cgroupfs are read-write.
pub fn default_mounts(privileged: bool) -> Vec<super::Mount> {
    let sys: &[&str] = if privileged {
        &["nosuid", "noexec", "nodev"]
    } else {
        &["nosuid", "noexec", "nodev", "ro"]
    };
    let cgroup: &[&str] = if privileged {
        &["nosuid", "noexec", "nodev", "relatime"]
    } else {
        &["nosuid", "noexec", "nodev", "relatime", "ro"]
    };
    let tmpfs = ["nosuid", "strictatime", "mode=755", "size=65536k"];
    let devpts = [
        "nosuid",
        "noexec",
        "newinstance",
        "ptmxmode=0666",
        "mode=0620",
        "gid=5",
    ];
    let shm = ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"];
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount("/dev", "tmpfs", "tmpfs", &tmpfs),
        mount("/dev/pts", "devpts", "devpts", &devpts),
        mount("/dev/shm", "tmpfs", "shm", &shm),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount("/sys", "sysfs", "sysfs", sys),
        mount("/sys/fs/cgroup", "cgroup", "cgroup", cgroup),
        mount("/run", "tmpfs", "tmpfs", &tmpfs),
    ]
}

/// The default mounts, the init binary's, then `c.mounts`; a given mount replaces an
/// earlier one at the same destination.
pub(super) fn mounts(c: &ContainerConfig) -> Result<Vec<Mount>, Error> {
    let mut all = default_mounts(c.privileged);
    if let Some(init) = &c.init {
        all.push(mount(INIT_PATH, "bind", init, &["rbind", "ro"]));
    }
    for m in &c.mounts {
        all.retain(|d| d.destination != m.destination);
        all.push(m.clone());
    }
    all.iter()
        .map(|m| {
            MountBuilder::default()
                .destination(&m.destination)
                .typ(&m.kind)
                .source(&m.source)
                .options(m.options.clone())
                .build()
                .map_err(oci("mount"))
        })
        .collect()
}

/// New pid, ipc, uts and mount namespaces (the host's network, as `--network host`).
pub fn default_namespaces() -> Vec<Namespace> {
    [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ]
    .into_iter()
    .map(|kind| Namespace { kind, path: None })
    .collect()
}

fn namespaces(c: &ContainerConfig) -> Result<Vec<LinuxNamespace>, Error> {
    let given = c.namespaces.clone().unwrap_or_else(default_namespaces);
    given
        .iter()
        .map(|n| {
            let b = LinuxNamespaceBuilder::default().typ(n.kind);
            match &n.path {
                Some(p) => b.path(p),
                None => b,
            }
            .build()
            .map_err(oci("namespace"))
        })
        .collect()
}

/// The device cgroup: everything allowed (privileged) or denied, then each device's rule.
fn device_rules(c: &ContainerConfig) -> Result<Vec<LinuxDeviceCgroup>, Error> {
    let mut rules = vec![
        LinuxDeviceCgroupBuilder::default()
            .allow(c.privileged)
            .access("rwm")
            .build()
            .map_err(oci("device cgroup"))?,
    ];
    for d in &c.devices {
        rules.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(d.kind)
                .major(d.major)
                .minor(d.minor)
                .access(&d.access)
                .build()
                .map_err(oci("device cgroup"))?,
        );
    }
    Ok(rules)
}

fn resources(c: &ContainerConfig) -> Result<LinuxResources, Error> {
    let r: &Resources = &c.resources;
    let mut b = LinuxResourcesBuilder::default().devices(device_rules(c)?);
    if let Some(limit) = r.memory_limit {
        let memory = LinuxMemoryBuilder::default().limit(limit).build();
        b = b.memory(memory.map_err(oci("memory"))?);
    }
    if r.cpu_shares.is_some() || r.cpu_quota.is_some() || r.cpu_period.is_some() {
        let mut cpu = LinuxCpuBuilder::default();
        if let Some(s) = r.cpu_shares {
            cpu = cpu.shares(s);
        }
        if let Some(q) = r.cpu_quota {
            cpu = cpu.quota(q);
        }
        if let Some(p) = r.cpu_period {
            cpu = cpu.period(p);
        }
        b = b.cpu(cpu.build().map_err(oci("cpu"))?);
    }
    if let Some(limit) = r.pids_limit {
        let pids = LinuxPidsBuilder::default().limit(limit).build();
        b = b.pids(pids.map_err(oci("pids"))?);
    }
    b.build().map_err(oci("resources"))
}

fn device(d: &Device) -> Result<LinuxDevice, Error> {
    let mut dev = LinuxDeviceBuilder::default()
        .path(&d.path)
        .typ(d.kind)
        .major(d.major)
        .minor(d.minor)
        .build()
        .map_err(oci("device"))?;
    dev.set_file_mode(d.file_mode);
    dev.set_uid(d.uid);
    dev.set_gid(d.gid);
    Ok(dev)
}

/// `given`, or `default` unless privileged; absent when empty.
fn paths(given: &Option<Vec<String>>, default: &[&str], privileged: bool) -> Option<Vec<String>> {
    let list = match given {
        Some(g) => g.clone(),
        None if privileged => Vec::new(),
        None => default.iter().map(|p| p.to_string()).collect(),
    };
    (!list.is_empty()).then_some(list)
}

/// The `linux` section.
pub(super) fn linux(c: &ContainerConfig) -> Result<Linux, Error> {
    let mut linux = LinuxBuilder::default()
        .resources(resources(c)?)
        .namespaces(namespaces(c)?)
        .build()
        .map_err(oci("linux"))?;
    // Unset fields of a built Linux come from oci_spec's Default: say what each is.
    linux.set_cgroups_path(c.cgroups_path.as_ref().map(Into::into));
    linux.set_masked_paths(paths(&c.masked_paths, &MASKED_PATHS, c.privileged));
    linux.set_readonly_paths(paths(&c.readonly_paths, &READONLY_PATHS, c.privileged));
    linux.set_sysctl(super::non_empty_map(&c.sysctls));
    let devices = c
        .devices
        .iter()
        .map(device)
        .collect::<Result<Vec<_>, _>>()?;
    linux.set_devices((!devices.is_empty()).then_some(devices));
    linux.set_uid_mappings(None);
    linux.set_gid_mappings(None);
    linux.set_rootfs_propagation(None);
    linux.set_mount_label(None);
    Ok(linux)
}
