//! The OCI runtime spec of a docker-style container: a pure function of the image's config
//! and the user's flags.
//!
//! The base is what containerd's `oci.WithDefaultSpec` + `WithImageConfig` produce (the
//! default mounts, capabilities, masked and read-only paths, `RLIMIT_NOFILE` 1024, the
//! pid/ipc/uts/mount namespaces, cgroups path `/<namespace>/<id>`), with Docker's
//! differences: `noNewPrivileges` is false, `/sys/fs/cgroup` is mounted read-only, the
//! hostname defaults to the short id, and `HOSTNAME` (and `TERM` with a terminal) is set.
//!
//! Networking: there is no network namespace yet, so containers share the host's network
//! (as `--network host`); per-container networks come with the networks issue.

use serde_json::{Value, json};

/// `PATH` when the image sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where `--init` puts the init binary inside the container (Docker's path).
pub const INIT_PATH: &str = "/sbin/docker-init";

/// Linux capability names, by number.
pub const CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// containerd's (and Docker's) default capability set.
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Why a spec could not be made; each names what the user gave.
#[derive(Debug, PartialEq, Eq)]
pub enum SpecError {
    NoCommand,
    UnknownUser(String),
    UnknownGroup(String),
    UnknownCapability(String),
    BadMemory(String),
    BadCpus(String),
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpecError::NoCommand => f.write_str("No command specified"),
            SpecError::UnknownUser(u) => {
                write!(
                    f,
                    "unable to find user {u}: no matching entries in passwd file"
                )
            }
            SpecError::UnknownGroup(g) => {
                write!(
                    f,
                    "unable to find group {g}: no matching entries in group file"
                )
            }
            SpecError::UnknownCapability(c) => write!(f, "unknown capability: {c:?}"),
            SpecError::BadMemory(m) => write!(f, "invalid memory limit {m:?}: minimum is 6MB"),
            SpecError::BadCpus(c) => write!(f, "invalid --cpus {c:?}: must be a positive number"),
        }
    }
}

impl std::error::Error for SpecError {}

/// The parts of an image config (`config` in the image's JSON) a container runs from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub stop_signal: String,
}

impl ImageConfig {
    /// From the whole image config blob (its `config` object).
    pub fn from_image(image: &Value) -> ImageConfig {
        let c = &image["config"];
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let string = |v: &Value| v.as_str().unwrap_or_default().to_string();
        ImageConfig {
            entrypoint: strings(&c["Entrypoint"]),
            cmd: strings(&c["Cmd"]),
            env: strings(&c["Env"]),
            working_dir: string(&c["WorkingDir"]),
            user: string(&c["User"]),
            stop_signal: string(&c["StopSignal"]),
        }
    }
}

/// The user's flags, as `berth run` / `berth create` take them.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub id: String,
    pub namespace: String,
    /// Arguments after the image (replace the image's Cmd when given).
    pub args: Vec<String>,
    /// `--entrypoint` (replaces the image's Entrypoint and drops its Cmd; "" clears it).
    pub entrypoint: Option<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub tty: bool,
    pub read_only: bool,
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub memory: Option<i64>,
    pub cpus: Option<f64>,
    pub pids_limit: Option<i64>,
    /// The host path of the init binary to bind-mount at [`INIT_PATH`] (`--init`).
    pub init: Option<String>,
}

/// The contents of the rootfs' `/etc/passwd` and `/etc/group` (empty when absent).
#[derive(Clone, Debug, Default)]
pub struct Accounts {
    pub passwd: String,
    pub group: String,
}

/// The process a container runs: the image's Entrypoint and Cmd as Docker combines them
/// with `--entrypoint` and the arguments after the image.
pub fn command(img: &ImageConfig, o: &Options) -> Result<Vec<String>, SpecError> {
    let (entrypoint, default_cmd) = match &o.entrypoint {
        Some(e) if e.is_empty() => (Vec::new(), Vec::new()),
        Some(e) => (vec![e.clone()], Vec::new()),
        None => (img.entrypoint.clone(), img.cmd.clone()),
    };
    let cmd = if o.args.is_empty() {
        default_cmd
    } else {
        o.args.clone()
    };
    let all: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if all.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(all)
}

/// `base` with each `KEY=VALUE` (or bare `KEY`) of `over` replacing the entry of the same
/// key, or appended.
pub fn merge_env(base: &[String], over: &[String]) -> Vec<String> {
    let key = |e: &str| e.split('=').next().unwrap_or(e).to_string();
    let mut out: Vec<String> = base.to_vec();
    for e in over {
        match out.iter_mut().find(|b| key(b) == key(e)) {
            Some(b) => *b = e.clone(),
            None => out.push(e.clone()),
        }
    }
    out
}

/// Resolved user: uid, gid, additional gids.
#[derive(Debug, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional: Vec<u32>,
}

/// Resolves `user[:group]` (names or numbers) against the rootfs' accounts, as Docker
/// does: a numeric uid need not exist; a name must. Without a group, the user's primary
/// group from passwd (0 when the uid is not listed). Additional gids: the primary group
/// and the groups listing the user's name as a member (so `id` shows `groups=`, as under
/// Docker).
pub fn resolve_user(spec: &str, acc: &Accounts) -> Result<User, SpecError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd: Vec<Vec<&str>> = acc
        .passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    let groups: Vec<Vec<&str>> = acc
        .group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect();
    let user = if user.is_empty() { "0" } else { user };
    let entry = match user.parse::<u32>() {
        Ok(uid) => passwd
            .iter()
            .find(|f| f[2].parse::<u32>().ok() == Some(uid)),
        Err(_) => passwd.iter().find(|f| f[0] == user),
    };
    let (uid, primary, name) = match (user.parse::<u32>(), entry) {
        (_, Some(f)) => (
            f[2].parse::<u32>()
                .map_err(|_| SpecError::UnknownUser(user.to_string()))?,
            f[3].parse::<u32>().unwrap_or(0),
            Some(f[0]),
        ),
        (Ok(uid), None) => (uid, 0, None),
        (Err(_), None) => return Err(SpecError::UnknownUser(user.to_string())),
    };
    let gid = match group {
        None | Some("") => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse::<u32>().ok())
                .ok_or_else(|| SpecError::UnknownGroup(g.to_string()))?,
        },
    };
    let mut additional = vec![gid];
    if let Some(name) = name {
        for f in &groups {
            let members = f.get(3).copied().unwrap_or_default();
            if members.split(',').any(|m| m == name)
                && let Ok(g) = f[2].parse::<u32>()
                && g != gid
                && !additional.contains(&g)
            {
                additional.push(g);
            }
        }
    }
    Ok(User {
        uid,
        gid,
        additional,
    })
}

/// `CAP_X` for `x`, `X` or `cap_x`; `ALL` stays `ALL`.
fn cap_name(c: &str) -> Result<String, SpecError> {
    let up = c.to_ascii_uppercase();
    if up == "ALL" {
        return Ok(up);
    }
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    if CAPS.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(SpecError::UnknownCapability(c.to_string()))
    }
}

/// The capability set after `--privileged`, `--cap-add` and `--cap-drop`, as Docker
/// computes it; `all` is every capability the host can grant.
pub fn capabilities(o: &Options, all: &[String]) -> Result<Vec<String>, SpecError> {
    if o.privileged {
        return Ok(all.to_vec());
    }
    let add = o
        .cap_add
        .iter()
        .map(|c| cap_name(c))
        .collect::<Result<Vec<_>, _>>()?;
    let drop = o
        .cap_drop
        .iter()
        .map(|c| cap_name(c))
        .collect::<Result<Vec<_>, _>>()?;
    if add.iter().any(|c| c == "ALL") {
        return Ok(all.iter().filter(|c| !drop.contains(c)).cloned().collect());
    }
    let mut caps: Vec<String> = if drop.iter().any(|c| c == "ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPS
            .iter()
            .map(|c| c.to_string())
            .filter(|c| !drop.contains(c))
            .collect()
    };
    for c in add {
        if !caps.contains(&c) {
            caps.push(c);
        }
    }
    Ok(caps)
}

/// Parses a Docker memory size (`512m`, `1g`, `1048576`, `100MB`): binary units.
pub fn parse_memory(s: &str) -> Result<i64, SpecError> {
    let bad = || SpecError::BadMemory(s.to_string());
    let lower = s.trim().to_ascii_lowercase();
    let t = lower.strip_suffix('b').unwrap_or(&lower);
    let (num, mult): (&str, i64) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    let bytes = (v * mult as f64) as i64;
    if bytes < 6 * 1024 * 1024 {
        return Err(bad());
    }
    Ok(bytes)
}

/// Parses `--cpus` (a positive decimal).
pub fn parse_cpus(s: &str) -> Result<f64, SpecError> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(SpecError::BadCpus(s.to_string())),
    }
}

fn mount(dest: &str, kind: &str, source: &str, options: &[&str]) -> Value {
    json!({"destination": dest, "type": kind, "source": source, "options": options})
}

/// The OCI runtime spec (config.json) of the container, as JSON.
pub fn build(
    img: &ImageConfig,
    o: &Options,
    acc: &Accounts,
    all_caps: &[String],
) -> Result<Value, SpecError> {
    let mut args = command(img, o)?;
    if o.init.is_some() {
        let mut with_init = vec![INIT_PATH.to_string(), "--".to_string()];
        with_init.append(&mut args);
        args = with_init;
    }
    let hostname = o
        .hostname
        .clone()
        .unwrap_or_else(|| super::short_id(&o.id).to_string());
    let base_env = if img.env.is_empty() {
        vec![DEFAULT_PATH.to_string()]
    } else {
        img.env.clone()
    };
    let mut env = merge_env(&base_env, &o.env);
    let mut extra = vec![format!("HOSTNAME={hostname}")];
    if o.tty {
        extra.push("TERM=xterm".to_string());
    }
    for e in extra {
        let k = e.split('=').next().unwrap_or_default().to_string();
        if !env.iter().any(|x| x.split('=').next() == Some(k.as_str())) {
            env.insert(0, e);
        }
    }
    let user_spec = o.user.clone().unwrap_or_else(|| img.user.clone());
    let user = resolve_user(&user_spec, acc)?;
    let cwd = o
        .workdir
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| {
            if img.working_dir.is_empty() {
                "/".to_string()
            } else {
                img.working_dir.clone()
            }
        });
    let caps = capabilities(o, all_caps)?;

    let sys_ro: &[&str] = if o.privileged {
        &["nosuid", "noexec", "nodev"]
    } else {
        &["nosuid", "noexec", "nodev", "ro"]
    };
    let cgroup_opts: &[&str] = if o.privileged {
        &["nosuid", "noexec", "nodev", "relatime"]
    } else {
        &["nosuid", "noexec", "nodev", "relatime", "ro"]
    };
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount("/sys", "sysfs", "sysfs", sys_ro),
        mount("/sys/fs/cgroup", "cgroup", "cgroup", cgroup_opts),
        mount(
            "/run",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
    ];
    if let Some(init) = &o.init {
        mounts.push(mount(INIT_PATH, "bind", init, &["rbind", "ro"]));
    }

    let mut resources = serde_json::Map::new();
    resources.insert(
        "devices".into(),
        json!([{"allow": o.privileged, "access": "rwm"}]),
    );
    if let Some(m) = o.memory {
        resources.insert("memory".into(), json!({"limit": m}));
    }
    if let Some(c) = o.cpus {
        let period: u64 = 100_000;
        resources.insert(
            "cpu".into(),
            json!({"quota": (c * period as f64).round() as i64, "period": period}),
        );
    }
    if let Some(p) = o.pids_limit {
        resources.insert("pids".into(), json!({"limit": p}));
    }

    let mut linux = json!({
        "resources": Value::Object(resources),
        "cgroupsPath": format!("/{}/{}", o.namespace, o.id),
        "namespaces": [
            {"type": "pid"},
            {"type": "ipc"},
            {"type": "uts"},
            {"type": "mount"},
        ],
    });
    if !o.privileged {
        linux["maskedPaths"] = json!([
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
        ]);
        linux["readonlyPaths"] = json!([
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger",
        ]);
    }

    let mut process_user = json!({"uid": user.uid, "gid": user.gid});
    if !user.additional.is_empty() {
        process_user["additionalGids"] = json!(user.additional);
    }
    Ok(json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": o.tty,
            "user": process_user,
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": false,
        },
        "root": {"path": "rootfs", "readonly": o.read_only},
        "hostname": hostname,
        "mounts": mounts,
        "linux": linux,
    }))
}

/// Every capability this host can grant: the names of the bits of our bounding set.
pub fn host_capabilities() -> Vec<String> {
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    CAPS.iter()
        .enumerate()
        .filter(|(i, _)| bounding & (1u64 << i) != 0)
        .map(|(_, c)| c.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            id: "0123456789abcdef".repeat(4),
            namespace: "default".into(),
            ..Default::default()
        }
    }

    fn img() -> ImageConfig {
        ImageConfig::from_image(&json!({"config": {
            "Env": ["PATH=/bin", "A=1"],
            "Entrypoint": ["/entry"],
            "Cmd": ["serve", "--x"],
            "WorkingDir": "/app",
        }}))
    }

    fn all() -> Vec<String> {
        CAPS.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn entrypoint_and_cmd_combine_as_docker_does() {
        let mut o = opts();
        assert_eq!(command(&img(), &o).unwrap(), ["/entry", "serve", "--x"]);
        o.args = vec!["run".into()];
        assert_eq!(command(&img(), &o).unwrap(), ["/entry", "run"]);
        o.entrypoint = Some("/bin/sh".into());
        assert_eq!(command(&img(), &o).unwrap(), ["/bin/sh", "run"]);
        o.args.clear();
        assert_eq!(command(&img(), &o).unwrap(), ["/bin/sh"]);
        o.entrypoint = Some(String::new());
        assert_eq!(command(&img(), &o), Err(SpecError::NoCommand));
    }

    #[test]
    fn default_spec_matches_containerd_defaults() {
        let s = build(&img(), &opts(), &Accounts::default(), &all()).unwrap();
        assert_eq!(s["process"]["cwd"], "/app");
        assert_eq!(s["process"]["noNewPrivileges"], false);
        assert_eq!(s["hostname"], "0123456789ab");
        assert_eq!(
            s["process"]["env"],
            json!(["HOSTNAME=0123456789ab", "PATH=/bin", "A=1"])
        );
        assert_eq!(
            s["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            14
        );
        assert_eq!(s["process"]["rlimits"][0]["hard"], 1024);
        assert_eq!(s["root"], json!({"path": "rootfs", "readonly": false}));
        assert_eq!(
            s["linux"]["cgroupsPath"],
            format!("/default/{}", "0123456789abcdef".repeat(4))
        );
        let ns: Vec<&str> = s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "ipc", "uts", "mount"]);
        let dests: Vec<&str> = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup",
                "/run"
            ]
        );
        assert_eq!(s["linux"]["maskedPaths"].as_array().unwrap().len(), 10);
        assert_eq!(
            s["linux"]["resources"]["devices"],
            json!([{"allow": false, "access": "rwm"}])
        );
        assert!(s["linux"]["resources"].get("memory").is_none());
    }

    #[test]
    fn flags_reach_the_spec() {
        let mut o = opts();
        o.env = vec!["A=2".into(), "B=3".into()];
        o.workdir = Some("/tmp".into());
        o.hostname = Some("box".into());
        o.tty = true;
        o.read_only = true;
        o.memory = Some(parse_memory("64m").unwrap());
        o.cpus = Some(parse_cpus("1.5").unwrap());
        o.pids_limit = Some(20);
        o.init = Some("/usr/bin/tini-static".into());
        let s = build(&img(), &o, &Accounts::default(), &all()).unwrap();
        assert_eq!(
            s["process"]["env"],
            json!(["TERM=xterm", "HOSTNAME=box", "PATH=/bin", "A=2", "B=3"])
        );
        assert_eq!(s["process"]["cwd"], "/tmp");
        assert_eq!(s["process"]["terminal"], true);
        assert_eq!(s["root"]["readonly"], true);
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(
            s["linux"]["resources"]["cpu"],
            json!({"quota": 150_000, "period": 100_000})
        );
        assert_eq!(s["linux"]["resources"]["pids"]["limit"], 20);
        assert_eq!(
            s["process"]["args"],
            json!([INIT_PATH, "--", "/entry", "serve", "--x"])
        );
        let init = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == INIT_PATH)
            .unwrap();
        assert_eq!(init["source"], "/usr/bin/tini-static");
    }

    #[test]
    fn privileged_lifts_restrictions() {
        let mut o = opts();
        o.privileged = true;
        let s = build(&img(), &o, &Accounts::default(), &all()).unwrap();
        assert_eq!(
            s["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            CAPS.len()
        );
        assert!(s["linux"].get("maskedPaths").is_none());
        assert_eq!(
            s["linux"]["resources"]["devices"],
            json!([{"allow": true, "access": "rwm"}])
        );
    }

    #[test]
    fn cap_add_and_drop() {
        let mut o = opts();
        o.cap_add = vec!["net_admin".into()];
        o.cap_drop = vec!["CAP_CHOWN".into(), "kill".into()];
        let caps = capabilities(&o, &all()).unwrap();
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_CHOWN".to_string()));
        assert!(!caps.contains(&"CAP_KILL".to_string()));
        assert_eq!(caps.len(), 13);
        o.cap_add = vec!["CHOWN".into()];
        o.cap_drop = vec!["ALL".into()];
        assert_eq!(capabilities(&o, &all()).unwrap(), ["CAP_CHOWN"]);
        o.cap_add = vec!["ALL".into()];
        o.cap_drop = vec!["SYS_ADMIN".into()];
        assert_eq!(capabilities(&o, &all()).unwrap().len(), CAPS.len() - 1);
        o.cap_add = vec!["NOPE".into()];
        assert_eq!(
            capabilities(&o, &all()),
            Err(SpecError::UnknownCapability("NOPE".into()))
        );
    }

    #[test]
    fn users_resolve_against_the_rootfs() {
        let acc = Accounts {
            passwd: "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33::/var/www:/bin/false\n".into(),
            group: "root:x:0:\nwww-data:x:33:\nstaff:x:50:www-data,other\n".into(),
        };
        let u = |s: &str| resolve_user(s, &acc);
        assert_eq!(
            u("www-data").unwrap(),
            User {
                uid: 33,
                gid: 33,
                additional: vec![33, 50]
            }
        );
        assert_eq!(
            u("1000").unwrap(),
            User {
                uid: 1000,
                gid: 0,
                additional: vec![0]
            }
        );
        assert_eq!(u("33:staff").unwrap().gid, 50);
        assert_eq!(u("1000:7").unwrap().gid, 7);
        assert_eq!(u("").unwrap().uid, 0);
        assert_eq!(u("nobody"), Err(SpecError::UnknownUser("nobody".into())));
        assert_eq!(u("0:wheel"), Err(SpecError::UnknownGroup("wheel".into())));
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("64m").unwrap(), 64 << 20);
        assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
        assert_eq!(parse_memory("100MB").unwrap(), 100 << 20);
        assert_eq!(parse_memory("10485760").unwrap(), 10 << 20);
        assert!(parse_memory("1k").is_err());
        assert!(parse_memory("lots").is_err());
        assert!(parse_cpus("0").is_err());
    }
}
