//! A container's cgroup and its metrics, in containerd's metric types.
//!
//! [`Cgroup::of_pid`] finds the cgroup of the container's init from `/proc/<pid>/cgroup` and
//! the host's cgroup mounts (`/proc/self/mountinfo`): cgroup v1 (one directory per
//! controller; this host's layout, with a cgroup2 `unified` mount beside it) or cgroup v2
//! (one directory). [`Cgroup::metrics`] reads the controller files and packs the result as
//! containerd-shim-runc-v2 does: `io.containerd.cgroups.v1.Metrics` or
//! `io.containerd.cgroups.v2.Metrics`, the type names `ctr tasks metrics` decodes.
//!
//! The parsing works on file text through the [`Files`] trait, so it is tested from
//! fixtures. Reading is a few dozen small reads of cgroupfs (kernel memory, no disk): they
//! run inline on the shim's one runtime thread, which costs less than handing them to a
//! blocking thread.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};

use crate::error::{Result, ShimError};

pub const V1_METRICS_TYPE: &str = "io.containerd.cgroups.v1.Metrics";
pub const V2_METRICS_TYPE: &str = "io.containerd.cgroups.v2.Metrics";

/// USER_HZ, the unit of `cpuacct.stat`: 100 on every Linux ABI (containerd hard-codes it
/// too rather than asking sysconf).
const CLOCK_TICKS: u64 = 100;
const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Where a container's cgroup lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cgroup {
    /// cgroup v1: the directory of each controller (`memory`, `cpu`, `cpuacct`, ...).
    V1(BTreeMap<String, PathBuf>),
    /// cgroup v2: the one directory.
    V2(PathBuf),
}

/// The network counters of [`own_network`] as the `NetworkStat`s of cgroups metrics module
/// `$v` (v1 and v2 have the same fields in types of their own).
macro_rules! network_stats {
    ($v:ident, $network:expr) => {
        $network
            .iter()
            .map(|(name, c)| $v::NetworkStat {
                name: name.clone(),
                rx_bytes: c[0],
                rx_packets: c[1],
                rx_errors: c[2],
                rx_dropped: c[3],
                tx_bytes: c[4],
                tx_packets: c[5],
                tx_errors: c[6],
                tx_dropped: c[7],
                ..Default::default()
            })
            .collect()
    };
}

impl Cgroup {
    /// The cgroup of a live process.
    pub fn of_pid(pid: u32) -> Result<Cgroup> {
        let path = format!("/proc/{pid}/cgroup");
        let own = std::fs::read_to_string(&path).map_err(ShimError::io(format!("read {path}")))?;
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(ShimError::io("read /proc/self/mountinfo"))?;
        resolve(&own, &mounts)
            .ok_or_else(|| ShimError::NotFound(format!("cgroup of process {pid}")))
    }

    /// The directory whose files tell about memory and OOM kills.
    pub fn memory_dir(&self) -> Option<&Path> {
        match self {
            Cgroup::V1(dirs) => dirs.get("memory").map(PathBuf::as_path),
            Cgroup::V2(dir) => Some(dir),
        }
    }

    /// The metrics now, packed for the StatsResponse; with the network counters of the
    /// namespace of process `pid` (the container's init), when it has one of its own.
    pub fn metrics(&self, pid: u32) -> Result<Any> {
        let network = own_network(pid);
        let (type_url, value) = match self {
            Cgroup::V1(dirs) => {
                if !dirs.values().any(|d| d.exists()) {
                    return Err(ShimError::NotFound(format!(
                        "cgroup {}",
                        dirs.values()
                            .next()
                            .map(|d| d.display().to_string())
                            .unwrap_or_default()
                    )));
                }
                let files = DirFiles::V1(dirs);
                let partitions = std::fs::read_to_string("/proc/partitions").unwrap_or_default();
                let mut m = v1_metrics(&files, &partitions);
                m.network = network_stats!(v1, network);
                (V1_METRICS_TYPE, m.write_to_bytes()?)
            }
            Cgroup::V2(dir) => {
                if !dir.exists() {
                    return Err(ShimError::NotFound(format!("cgroup {}", dir.display())));
                }
                let mut m = v2_metrics(&DirFiles::V2(dir));
                m.network = network_stats!(v2, network);
                (V2_METRICS_TYPE, m.write_to_bytes()?)
            }
        };
        Ok(Any {
            type_url: type_url.to_string(),
            value,
            ..Default::default()
        })
    }
}

/// The interfaces of process `pid`'s network namespace, when it is not the shim's own (a
/// container on the host's network has none to count, as with Docker), loopback left out:
/// each with its counters (rx bytes, packets, errors, dropped; then the same for tx).
fn own_network(pid: u32) -> Vec<(String, [u64; 8])> {
    let ns = |p: &str| std::fs::read_link(p).ok();
    let theirs = ns(&format!("/proc/{pid}/ns/net"));
    if pid == 0 || theirs.is_none() || theirs == ns("/proc/self/ns/net") {
        return Vec::new();
    }
    std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
        .map(|t| net_dev(&t))
        .unwrap_or_default()
        .into_iter()
        .filter(|(name, _)| name != "lo")
        .collect()
}

/// Parses `/proc/net/dev`: per interface, its rx bytes, packets, errors, dropped, then
/// the same four for tx.
pub fn net_dev(text: &str) -> Vec<(String, [u64; 8])> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|n| n.parse().unwrap_or(0))
                .collect();
            if f.len() < 12 {
                return None;
            }
            Some((
                name.trim().to_string(),
                [f[0], f[1], f[2], f[3], f[8], f[9], f[10], f[11]],
            ))
        })
        .collect()
}

/// Moves process `pid` into cgroup `path` (as runc's options `ShimCgroup` name it): on
/// cgroup v1 (and the hybrid layout) into that path of every v1 hierarchy where it
/// exists, on a pure v2 host into the one directory. The cgroup must exist already.
pub fn join(pid: u32, path: &str) -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(ShimError::io("read /proc/self/mountinfo"))?;
    let dirs = join_dirs(&mounts, path);
    if dirs.is_empty() {
        return Err(ShimError::NotFound(format!("cgroup {path}")));
    }
    for dir in dirs {
        let procs = dir.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string())
            .map_err(ShimError::io(format!("join cgroup {}", procs.display())))?;
    }
    Ok(())
}

/// The existing directories of cgroup `path` that [`join`] writes to.
fn join_dirs(mountinfo: &str, path: &str) -> Vec<PathBuf> {
    let mut v1 = Vec::new();
    let mut v2 = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split_whitespace().collect();
        let (Some(root), Some(point), Some(fstype)) =
            (left.get(3), left.get(4), right.split_whitespace().next())
        else {
            continue;
        };
        let dir = under(Path::new(&unescape(point)), &unescape(root), path);
        match fstype {
            "cgroup" if !v1.contains(&dir) => v1.push(dir),
            "cgroup2" => {
                v2.get_or_insert(dir);
            }
            _ => {}
        }
    }
    if v1.is_empty() {
        v1.extend(v2);
    }
    v1.retain(|d| d.is_dir());
    v1
}

/// The cgroup named by `/proc/<pid>/cgroup` text, under the mounts of `mountinfo` text.
/// v1 when the process has any v1 controller, else v2.
pub fn resolve(proc_cgroup: &str, mountinfo: &str) -> Option<Cgroup> {
    // (mount root, mount point) of each v1 controller, and of the v2 hierarchy.
    let mut v1_mounts: HashMap<String, (String, PathBuf)> = HashMap::new();
    let mut v2_mount: Option<(String, PathBuf)> = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split_whitespace().collect();
        let right: Vec<&str> = right.split_whitespace().collect();
        let (Some(root), Some(point), Some(fstype)) = (left.get(3), left.get(4), right.first())
        else {
            continue;
        };
        let mount = (unescape(root), PathBuf::from(unescape(point)));
        match *fstype {
            "cgroup" => {
                for opt in right.get(2).copied().unwrap_or_default().split(',') {
                    v1_mounts
                        .entry(opt.to_string())
                        .or_insert_with(|| mount.clone());
                }
            }
            "cgroup2" => {
                v2_mount.get_or_insert(mount);
            }
            _ => {}
        }
    }
    let mut v1_dirs = BTreeMap::new();
    let mut v2_path = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.is_empty() {
            v2_path = Some(path.to_string());
            continue;
        }
        for c in controllers.split(',') {
            if c.starts_with("name=") {
                continue;
            }
            if let Some((root, point)) = v1_mounts.get(c) {
                v1_dirs.insert(c.to_string(), under(point, root, path));
            }
        }
    }
    if !v1_dirs.is_empty() {
        return Some(Cgroup::V1(v1_dirs));
    }
    let (root, point) = v2_mount?;
    Some(Cgroup::V2(under(&point, &root, &v2_path?)))
}

/// `path` (as the process sees it) inside a mount of hierarchy directory `root` at `point`.
fn under(point: &Path, root: &str, path: &str) -> PathBuf {
    let rel = if root == "/" {
        path
    } else {
        path.strip_prefix(root).unwrap_or(path)
    };
    point.join(rel.trim_start_matches('/'))
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Read access to a cgroup's files, by controller (ignored for v2) and file name.
pub trait Files {
    fn read(&self, controller: &str, file: &str) -> Option<String>;
    /// The file names in a controller's directory.
    fn list(&self, controller: &str) -> Vec<String>;
}

enum DirFiles<'a> {
    V1(&'a BTreeMap<String, PathBuf>),
    V2(&'a Path),
}

impl DirFiles<'_> {
    fn dir(&self, controller: &str) -> Option<&Path> {
        match self {
            DirFiles::V1(dirs) => dirs.get(controller).map(PathBuf::as_path),
            DirFiles::V2(dir) => Some(dir),
        }
    }
}

impl Files for DirFiles<'_> {
    fn read(&self, controller: &str, file: &str) -> Option<String> {
        std::fs::read_to_string(self.dir(controller)?.join(file)).ok()
    }

    fn list(&self, controller: &str) -> Vec<String> {
        let Some(dir) = self.dir(controller) else {
            return Vec::new();
        };
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A file holding one number; "max" (no limit) reads as `max`.
fn read_u64(files: &impl Files, controller: &str, file: &str, max: u64) -> u64 {
    files
        .read(controller, file)
        .map(|t| parse_u64(t.trim(), max))
        .unwrap_or(0)
}

fn parse_u64(s: &str, max: u64) -> u64 {
    if s == "max" {
        max
    } else {
        s.parse().unwrap_or(0)
    }
}

/// `key value` lines (memory.stat, cpu.stat, memory.events, ...).
pub fn flat_keyed(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let k = f.next()?;
            let v = f.next()?.parse().ok()?;
            Some((k, v))
        })
        .collect()
}

fn keyed(files: &impl Files, controller: &str, file: &str) -> HashMap<String, u64> {
    files
        .read(controller, file)
        .map(|t| {
            flat_keyed(&t)
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect()
        })
        .unwrap_or_default()
}

/// Block devices by (major, minor), from `/proc/partitions`, as `/dev/<name>`.
fn devices(partitions: &str) -> HashMap<(u64, u64), String> {
    let mut out = HashMap::new();
    for line in partitions.lines().skip(2) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let (Some(maj), Some(min), Some(name)) = (f.first(), f.get(1), f.get(3))
            && let (Ok(maj), Ok(min)) = (maj.parse(), min.parse())
        {
            out.entry((maj, min))
                .or_insert_with(|| format!("/dev/{name}"));
        }
    }
    out
}

/// A blkio file: `major:minor Op value` lines (a trailing `Total n` line is skipped).
fn blkio_entries(text: &str, devices: &HashMap<(u64, u64), String>) -> Vec<v1::BlkIOEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [dev, op, value] = f[..] else {
                return None;
            };
            let (maj, min) = dev.split_once(':')?;
            let (major, minor) = (maj.parse().ok()?, min.parse().ok()?);
            Some(v1::BlkIOEntry {
                op: op.to_string(),
                device: devices.get(&(major, minor)).cloned().unwrap_or_default(),
                major,
                minor,
                value: value.parse().ok()?,
                ..Default::default()
            })
        })
        .collect()
}

fn v1_memory_entry(files: &impl Files, module: &str) -> v1::MemoryEntry {
    let file = |name: &str| {
        if module.is_empty() {
            format!("memory.{name}")
        } else {
            format!("memory.{module}.{name}")
        }
    };
    v1::MemoryEntry {
        limit: read_u64(files, "memory", &file("limit_in_bytes"), u64::MAX),
        usage: read_u64(files, "memory", &file("usage_in_bytes"), 0),
        max: read_u64(files, "memory", &file("max_usage_in_bytes"), 0),
        failcnt: read_u64(files, "memory", &file("failcnt"), 0),
        ..Default::default()
    }
}

/// cgroup v1 metrics, as containerd's cgroups library gathers them; a missing controller
/// or file leaves its part empty.
pub fn v1_metrics(files: &impl Files, partitions: &str) -> v1::Metrics {
    let mut m = v1::Metrics::new();
    m.pids = v1_pids(files).into();
    m.cpu = v1_cpu(files).into();
    if let Some(stat) = files.read("memory", "memory.stat") {
        m.memory = MessageField::some(v1_memory(files, &stat));
        m.memory_oom_control = MessageField::some(v1_oom_control(files));
    }
    m.blkio = v1_blkio(files, partitions).into();
    m.hugetlb = v1_hugetlb(files);
    m
}

/// The pids controller's count and limit, if it is there.
fn v1_pids(files: &impl Files) -> Option<v1::PidsStat> {
    files.read("pids", "pids.current")?;
    Some(v1::PidsStat {
        current: read_u64(files, "pids", "pids.current", 0),
        limit: read_u64(files, "pids", "pids.max", 0),
        ..Default::default()
    })
}

/// CPU usage (cpuacct, its ticks in nanoseconds) and throttling (cpu), if cpuacct is there.
fn v1_cpu(files: &impl Files) -> Option<v1::CPUStat> {
    let usage = files.read("cpuacct", "cpuacct.usage")?;
    let stat = keyed(files, "cpuacct", "cpuacct.stat");
    let ticks = |k: &str| stat.get(k).copied().unwrap_or(0) * NANOS_PER_SEC / CLOCK_TICKS;
    let per_cpu = files
        .read("cpuacct", "cpuacct.usage_percpu")
        .map(|t| {
            t.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let throttle = keyed(files, "cpu", "cpu.stat");
    let get = |k: &str| throttle.get(k).copied().unwrap_or(0);
    Some(v1::CPUStat {
        usage: MessageField::some(v1::CPUUsage {
            total: parse_u64(usage.trim(), 0),
            kernel: ticks("system"),
            user: ticks("user"),
            per_cpu,
            ..Default::default()
        }),
        throttling: MessageField::some(v1::Throttle {
            periods: get("nr_periods"),
            throttled_periods: get("nr_throttled"),
            throttled_time: get("throttled_time"),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The memory controller's `memory.stat` (given) and its usage, swap and kernel entries.
fn v1_memory(files: &impl Files, stat: &str) -> v1::MemoryStat {
    let raw = flat_keyed(stat);
    let g = |k: &str| raw.get(k).copied().unwrap_or(0);
    v1::MemoryStat {
        cache: g("cache"),
        rss: g("rss"),
        rss_huge: g("rss_huge"),
        mapped_file: g("mapped_file"),
        dirty: g("dirty"),
        writeback: g("writeback"),
        pg_pg_in: g("pgpgin"),
        pg_pg_out: g("pgpgout"),
        pg_fault: g("pgfault"),
        pg_maj_fault: g("pgmajfault"),
        inactive_anon: g("inactive_anon"),
        active_anon: g("active_anon"),
        inactive_file: g("inactive_file"),
        active_file: g("active_file"),
        unevictable: g("unevictable"),
        hierarchical_memory_limit: g("hierarchical_memory_limit"),
        hierarchical_swap_limit: g("hierarchical_memsw_limit"),
        total_cache: g("total_cache"),
        total_rss: g("total_rss"),
        total_rss_huge: g("total_rss_huge"),
        total_mapped_file: g("total_mapped_file"),
        total_dirty: g("total_dirty"),
        total_writeback: g("total_writeback"),
        total_pg_pg_in: g("total_pgpgin"),
        total_pg_pg_out: g("total_pgpgout"),
        total_pg_fault: g("total_pgfault"),
        total_pg_maj_fault: g("total_pgmajfault"),
        total_inactive_anon: g("total_inactive_anon"),
        total_active_anon: g("total_active_anon"),
        total_inactive_file: g("total_inactive_file"),
        total_active_file: g("total_active_file"),
        total_unevictable: g("total_unevictable"),
        usage: MessageField::some(v1_memory_entry(files, "")),
        swap: MessageField::some(v1_memory_entry(files, "memsw")),
        kernel: MessageField::some(v1_memory_entry(files, "kmem")),
        kernel_tcp: MessageField::some(v1_memory_entry(files, "kmem.tcp")),
        ..Default::default()
    }
}

/// `memory.oom_control`.
fn v1_oom_control(files: &impl Files) -> v1::MemoryOomControl {
    let oom = keyed(files, "memory", "memory.oom_control");
    let g = |k: &str| oom.get(k).copied().unwrap_or(0);
    v1::MemoryOomControl {
        oom_kill_disable: g("oom_kill_disable"),
        under_oom: g("under_oom"),
        oom_kill: g("oom_kill"),
        ..Default::default()
    }
}

/// Block I/O, if the blkio controller has files: CFQ's statistics where the kernel keeps
/// them, else the throttle policy's (recursive when there).
fn v1_blkio(files: &impl Files, partitions: &str) -> Option<v1::BlkIOStat> {
    let blkio_files = files.list("blkio");
    if blkio_files.is_empty() {
        return None;
    }
    let devs = devices(partitions);
    let read = |name: &str| {
        files
            .read("blkio", &format!("blkio.{name}"))
            .map(|t| blkio_entries(&t, &devs))
            .unwrap_or_default()
    };
    let mut b = v1::BlkIOStat::new();
    if blkio_files
        .iter()
        .any(|f| f == "blkio.io_serviced_recursive")
    {
        b.sectors_recursive = read("sectors_recursive");
        b.io_service_bytes_recursive = read("io_service_bytes_recursive");
        b.io_serviced_recursive = read("io_serviced_recursive");
        b.io_queued_recursive = read("io_queued_recursive");
        b.io_service_time_recursive = read("io_service_time_recursive");
        b.io_wait_time_recursive = read("io_wait_time_recursive");
        b.io_merged_recursive = read("io_merged_recursive");
        b.io_time_recursive = read("time_recursive");
    }
    if b.io_service_bytes_recursive.is_empty() && b.io_serviced_recursive.is_empty() {
        let recursive = blkio_files
            .iter()
            .any(|f| f == "blkio.throttle.io_serviced_recursive");
        let suffix = if recursive { "_recursive" } else { "" };
        b.io_service_bytes_recursive = read(&format!("throttle.io_service_bytes{suffix}"));
        b.io_serviced_recursive = read(&format!("throttle.io_serviced{suffix}"));
    }
    Some(b)
}

/// One entry per huge page size the hugetlb controller lists, in size-name order.
fn v1_hugetlb(files: &impl Files) -> Vec<v1::HugetlbStat> {
    let mut sizes: Vec<String> = files
        .list("hugetlb")
        .iter()
        .filter_map(|f| {
            f.strip_prefix("hugetlb.")?
                .strip_suffix(".usage_in_bytes")
                .map(str::to_string)
        })
        .collect();
    sizes.sort();
    sizes
        .into_iter()
        .map(|size| {
            let f = |name: &str| format!("hugetlb.{size}.{name}");
            v1::HugetlbStat {
                usage: read_u64(files, "hugetlb", &f("usage_in_bytes"), 0),
                max: read_u64(files, "hugetlb", &f("max_usage_in_bytes"), 0),
                failcnt: read_u64(files, "hugetlb", &f("failcnt"), 0),
                pagesize: size,
                ..Default::default()
            }
        })
        .collect()
}

/// One `io.stat` line per device: `maj:min rbytes=.. wbytes=.. rios=.. wios=.. ...`.
fn io_stat(text: &str) -> Vec<v2::IOEntry> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (maj, min) = f.next()?.split_once(':')?;
            let mut e = v2::IOEntry {
                major: maj.parse().ok()?,
                minor: min.parse().ok()?,
                ..Default::default()
            };
            for kv in f {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let v = v.parse().unwrap_or(0);
                match k {
                    "rbytes" => e.rbytes = v,
                    "wbytes" => e.wbytes = v,
                    "rios" => e.rios = v,
                    "wios" => e.wios = v,
                    _ => {}
                }
            }
            Some(e)
        })
        .collect()
}

/// cgroup v2 metrics, as containerd's cgroup2 manager gathers them.
pub fn v2_metrics(files: &impl Files) -> v2::Metrics {
    let mut m = v2::Metrics::new();
    m.pids = v2_pids(files).into();
    m.cpu = MessageField::some(v2_cpu(files));
    if let Some(stat) = files.read("", "memory.stat") {
        m.memory = MessageField::some(v2_memory(files, &stat));
    }
    if let Some(events) = files.read("", "memory.events") {
        m.memory_events = MessageField::some(memory_events(&events));
    }
    if let Some(io) = files.read("", "io.stat") {
        m.io = MessageField::some(v2::IOStat {
            usage: io_stat(&io),
            ..Default::default()
        });
    }
    m.hugetlb = v2_hugetlb(files);
    m
}

/// `pids.current` and `pids.max`, if the pids controller is there.
fn v2_pids(files: &impl Files) -> Option<v2::PidsStat> {
    files.read("", "pids.current")?;
    Some(v2::PidsStat {
        current: read_u64(files, "", "pids.current", 0),
        limit: read_u64(files, "", "pids.max", 0),
        ..Default::default()
    })
}

/// `cpu.stat` (zeros where it is missing).
fn v2_cpu(files: &impl Files) -> v2::CPUStat {
    let cpu = keyed(files, "", "cpu.stat");
    let c = |k: &str| cpu.get(k).copied().unwrap_or(0);
    v2::CPUStat {
        usage_usec: c("usage_usec"),
        user_usec: c("user_usec"),
        system_usec: c("system_usec"),
        nr_periods: c("nr_periods"),
        nr_throttled: c("nr_throttled"),
        throttled_usec: c("throttled_usec"),
        nr_bursts: c("nr_bursts"),
        burst_usec: c("burst_usec"),
        ..Default::default()
    }
}

/// `memory.stat` (given) with the usage, swap and peak files beside it.
fn v2_memory(files: &impl Files, stat: &str) -> v2::MemoryStat {
    let raw = flat_keyed(stat);
    let g = |k: &str| raw.get(k).copied().unwrap_or(0);
    v2::MemoryStat {
        anon: g("anon"),
        file: g("file"),
        kernel_stack: g("kernel_stack"),
        slab: g("slab"),
        sock: g("sock"),
        shmem: g("shmem"),
        file_mapped: g("file_mapped"),
        file_dirty: g("file_dirty"),
        file_writeback: g("file_writeback"),
        anon_thp: g("anon_thp"),
        inactive_anon: g("inactive_anon"),
        active_anon: g("active_anon"),
        inactive_file: g("inactive_file"),
        active_file: g("active_file"),
        unevictable: g("unevictable"),
        slab_reclaimable: g("slab_reclaimable"),
        slab_unreclaimable: g("slab_unreclaimable"),
        pgfault: g("pgfault"),
        pgmajfault: g("pgmajfault"),
        workingset_refault: g("workingset_refault"),
        workingset_activate: g("workingset_activate"),
        workingset_nodereclaim: g("workingset_nodereclaim"),
        pgrefill: g("pgrefill"),
        pgscan: g("pgscan"),
        pgsteal: g("pgsteal"),
        pgactivate: g("pgactivate"),
        pgdeactivate: g("pgdeactivate"),
        pglazyfree: g("pglazyfree"),
        pglazyfreed: g("pglazyfreed"),
        thp_fault_alloc: g("thp_fault_alloc"),
        thp_collapse_alloc: g("thp_collapse_alloc"),
        usage: read_u64(files, "", "memory.current", 0),
        usage_limit: read_u64(files, "", "memory.max", u64::MAX),
        swap_usage: read_u64(files, "", "memory.swap.current", 0),
        swap_limit: read_u64(files, "", "memory.swap.max", u64::MAX),
        max_usage: read_u64(files, "", "memory.peak", 0),
        swap_max_usage: read_u64(files, "", "memory.swap.peak", 0),
        ..Default::default()
    }
}

/// One entry per huge page size the cgroup lists, in size-name order.
fn v2_hugetlb(files: &impl Files) -> Vec<v2::HugeTlbStat> {
    let mut sizes: Vec<String> = files
        .list("")
        .iter()
        .filter_map(|f| {
            f.strip_prefix("hugetlb.")?
                .strip_suffix(".current")
                .map(str::to_string)
        })
        .collect();
    sizes.sort();
    sizes
        .into_iter()
        .map(|size| {
            let events = keyed(files, "", &format!("hugetlb.{size}.events"));
            v2::HugeTlbStat {
                current: read_u64(files, "", &format!("hugetlb.{size}.current"), 0),
                max: read_u64(files, "", &format!("hugetlb.{size}.max"), u64::MAX),
                failcnt: events.get("max").copied().unwrap_or(0),
                pagesize: size,
                ..Default::default()
            }
        })
        .collect()
}

/// `memory.events` of cgroup v2.
pub fn memory_events(text: &str) -> v2::MemoryEvents {
    let raw = flat_keyed(text);
    let g = |k: &str| raw.get(k).copied().unwrap_or(0);
    v2::MemoryEvents {
        low: g("low"),
        high: g("high"),
        max: g("max"),
        oom: g("oom"),
        oom_kill: g("oom_kill"),
        oom_group_kill: g("oom_group_kill"),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_counters() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  eth0:    1296      12    1    2    0     0          0         0      656       8    3    4    0     0       0          0
";
        let got = net_dev(text);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], ("eth0".to_string(), [1296, 12, 1, 2, 656, 8, 3, 4]));
        // A process of the shim's own namespace has none of its own to count.
        assert!(own_network(std::process::id()).is_empty());
    }

    #[derive(Default)]
    struct Fixture(BTreeMap<(String, String), String>);

    impl Fixture {
        fn with(mut self, controller: &str, file: &str, text: &str) -> Self {
            self.0
                .insert((controller.to_string(), file.to_string()), text.to_string());
            self
        }
    }

    impl Files for Fixture {
        fn read(&self, controller: &str, file: &str) -> Option<String> {
            self.0
                .get(&(controller.to_string(), file.to_string()))
                .cloned()
        }
        fn list(&self, controller: &str) -> Vec<String> {
            self.0
                .keys()
                .filter(|(c, _)| c == controller)
                .map(|(_, f)| f.clone())
                .collect()
        }
    }

    const MOUNTINFO: &str = "\
24 30 0:21 / /sys ro,nosuid shared:7 - sysfs sysfs rw
30 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
35 24 0:30 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
36 35 0:31 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
37 35 0:32 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
38 35 0:33 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 35 0:34 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 35 0:35 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 35 0:36 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 35 0:37 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
";

    #[test]
    fn resolves_v1_by_controller() {
        let own = "9:name=systemd:/\n8:pids:/default/c1\n7:blkio:/default/c1\n\
                   4:memory:/default/c1\n2:cpuacct:/default/c1\n1:cpu:/default/c1\n0::/\n";
        let Some(Cgroup::V1(dirs)) = resolve(own, MOUNTINFO) else {
            panic!("not v1");
        };
        assert_eq!(
            dirs["memory"],
            Path::new("/sys/fs/cgroup/memory/default/c1")
        );
        assert_eq!(
            dirs["cpuacct"],
            Path::new("/sys/fs/cgroup/cpuacct/default/c1")
        );
        assert_eq!(dirs["pids"], Path::new("/sys/fs/cgroup/pids/default/c1"));
        assert!(!dirs.contains_key("name=systemd"));
        // A combined cpu,cpuacct mount serves both controllers.
        let combined =
            "50 35 0:40 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let Some(Cgroup::V1(dirs)) = resolve("3:cpu,cpuacct:/k/c2\n", combined) else {
            panic!("not v1");
        };
        assert_eq!(dirs["cpu"], Path::new("/sys/fs/cgroup/cpu,cpuacct/k/c2"));
        assert_eq!(dirs["cpuacct"], dirs["cpu"]);
    }

    #[test]
    fn resolves_v2_and_nested_roots() {
        let mounts = "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            resolve("0::/default/c1\n", mounts),
            Some(Cgroup::V2(PathBuf::from("/sys/fs/cgroup/default/c1")))
        );
        // Inside a cgroup namespace the mount's root is the namespace's root.
        let mounts = "30 1 0:26 /outer /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            resolve("0::/outer/c1\n", mounts),
            Some(Cgroup::V2(PathBuf::from("/sys/fs/cgroup/c1")))
        );
        assert_eq!(resolve("0::/c\n", ""), None);
    }

    #[test]
    fn v1_fixture() {
        let files = Fixture::default()
            .with("pids", "pids.current", "3\n")
            .with("pids", "pids.max", "max\n")
            .with("cpuacct", "cpuacct.usage", "123456789\n")
            .with("cpuacct", "cpuacct.usage_percpu", "100 200 \n")
            .with("cpuacct", "cpuacct.stat", "user 250\nsystem 50\n")
            .with(
                "cpu",
                "cpu.stat",
                "nr_periods 10\nnr_throttled 2\nthrottled_time 999\n",
            )
            .with(
                "memory",
                "memory.stat",
                "cache 4096\nrss 8192\npgfault 7\nhierarchical_memory_limit 8388608\n\
                 hierarchical_memsw_limit 16777216\ntotal_cache 4096\ntotal_rss 8192\n\
                 total_inactive_file 11\n",
            )
            .with("memory", "memory.usage_in_bytes", "12288\n")
            .with("memory", "memory.limit_in_bytes", "8388608\n")
            .with("memory", "memory.max_usage_in_bytes", "65536\n")
            .with("memory", "memory.failcnt", "4\n")
            .with("memory", "memory.memsw.usage_in_bytes", "12288\n")
            .with("memory", "memory.kmem.usage_in_bytes", "100\n")
            .with(
                "memory",
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
            )
            .with("blkio", "blkio.io_serviced_recursive", "")
            .with(
                "blkio",
                "blkio.throttle.io_serviced_recursive",
                "254:0 Read 2\n254:0 Write 3\nTotal 5\n",
            )
            .with(
                "blkio",
                "blkio.throttle.io_service_bytes_recursive",
                "254:0 Read 8192\n254:0 Write 4096\n254:0 Sync 0\nTotal 12288\n",
            )
            .with("hugetlb", "hugetlb.2MB.usage_in_bytes", "2097152\n")
            .with("hugetlb", "hugetlb.2MB.max_usage_in_bytes", "4194304\n")
            .with("hugetlb", "hugetlb.2MB.failcnt", "1\n");
        let partitions = "major minor  #blocks  name\n\n 254        0  268435456 vda\n";
        let m = v1_metrics(&files, partitions);
        assert_eq!((m.pids.current, m.pids.limit), (3, 0));
        let usage = &m.cpu.usage;
        assert_eq!(usage.total, 123456789);
        assert_eq!(usage.per_cpu, [100, 200]);
        assert_eq!(usage.user, 2_500_000_000);
        assert_eq!(usage.kernel, 500_000_000);
        assert_eq!(m.cpu.throttling.periods, 10);
        assert_eq!(m.cpu.throttling.throttled_periods, 2);
        assert_eq!(m.cpu.throttling.throttled_time, 999);
        let mem = &m.memory;
        assert_eq!((mem.cache, mem.rss, mem.pg_fault), (4096, 8192, 7));
        assert_eq!(mem.hierarchical_swap_limit, 16777216);
        assert_eq!(mem.total_inactive_file, 11);
        assert_eq!(mem.usage.usage, 12288);
        assert_eq!(mem.usage.limit, 8388608);
        assert_eq!(mem.usage.max, 65536);
        assert_eq!(mem.usage.failcnt, 4);
        assert_eq!(mem.swap.usage, 12288);
        assert_eq!(mem.kernel.usage, 100);
        assert_eq!(mem.kernel_tcp.usage, 0);
        assert_eq!(m.memory_oom_control.oom_kill, 1);
        // The CFQ file is empty: the throttle policy's recursive counters are used.
        let b = &m.blkio;
        assert_eq!(b.io_service_bytes_recursive.len(), 3);
        let read = &b.io_service_bytes_recursive[0];
        assert_eq!(
            (
                read.op.as_str(),
                read.device.as_str(),
                read.major,
                read.minor,
                read.value
            ),
            ("Read", "/dev/vda", 254, 0, 8192)
        );
        assert_eq!(b.io_serviced_recursive[1].value, 3);
        assert_eq!(m.hugetlb.len(), 1);
        assert_eq!(m.hugetlb[0].pagesize, "2MB");
        assert_eq!(
            (m.hugetlb[0].usage, m.hugetlb[0].max, m.hugetlb[0].failcnt),
            (2097152, 4194304, 1)
        );
    }

    #[test]
    fn v1_missing_controllers_are_empty() {
        let m = v1_metrics(&Fixture::default(), "");
        assert!(m.pids.is_none() && m.cpu.is_none() && m.memory.is_none() && m.blkio.is_none());
    }

    #[test]
    fn v2_fixture() {
        let files = Fixture::default()
            .with("", "pids.current", "2\n")
            .with("", "pids.max", "100\n")
            .with(
                "",
                "cpu.stat",
                "usage_usec 5000\nuser_usec 3000\nsystem_usec 2000\nnr_periods 4\n\
                 nr_throttled 1\nthrottled_usec 77\nnr_bursts 0\nburst_usec 0\n",
            )
            .with("", "memory.current", "1048576\n")
            .with("", "memory.max", "max\n")
            .with("", "memory.swap.current", "0\n")
            .with("", "memory.swap.max", "0\n")
            .with("", "memory.peak", "2097152\n")
            .with(
                "",
                "memory.stat",
                "anon 4096\nfile 8192\nkernel_stack 16384\nslab 100\nshmem 3\n\
                 file_mapped 5\ninactive_file 6\nactive_anon 7\npgfault 42\npgmajfault 1\n\
                 workingset_refault_anon 9\nthp_fault_alloc 2\n",
            )
            .with(
                "",
                "memory.events",
                "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n",
            )
            .with(
                "",
                "io.stat",
                "254:0 rbytes=1024 wbytes=2048 rios=3 wios=4 dbytes=0 dios=0\n8:16 rbytes=1 wbytes=0 rios=1 wios=0\n",
            )
            .with("", "hugetlb.1GB.current", "0\n")
            .with("", "hugetlb.1GB.max", "max\n")
            .with("", "hugetlb.1GB.events", "max 5\n");
        let m = v2_metrics(&files);
        assert_eq!((m.pids.current, m.pids.limit), (2, 100));
        assert_eq!(
            (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec),
            (5000, 3000, 2000)
        );
        assert_eq!(
            (m.cpu.nr_periods, m.cpu.nr_throttled, m.cpu.throttled_usec),
            (4, 1, 77)
        );
        let mem = &m.memory;
        assert_eq!((mem.usage, mem.usage_limit), (1048576, u64::MAX));
        assert_eq!(
            (mem.swap_usage, mem.swap_limit, mem.max_usage),
            (0, 0, 2097152)
        );
        assert_eq!((mem.anon, mem.file, mem.kernel_stack), (4096, 8192, 16384));
        assert_eq!(
            (mem.pgfault, mem.pgmajfault, mem.thp_fault_alloc),
            (42, 1, 2)
        );
        assert_eq!(mem.workingset_refault, 0);
        assert_eq!(
            (
                m.memory_events.max,
                m.memory_events.oom,
                m.memory_events.oom_kill
            ),
            (12, 2, 1)
        );
        assert_eq!(m.io.usage.len(), 2);
        let d = &m.io.usage[0];
        assert_eq!(
            (d.major, d.minor, d.rbytes, d.wbytes, d.rios, d.wios),
            (254, 0, 1024, 2048, 3, 4)
        );
        assert_eq!(m.hugetlb[0].pagesize, "1GB");
        assert_eq!((m.hugetlb[0].max, m.hugetlb[0].failcnt), (u64::MAX, 5));
    }

    #[test]
    fn packs_with_containerd_type_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("memory.current"), "4096\n").expect("write");
        std::fs::write(dir.path().join("memory.stat"), "anon 1\n").expect("write");
        let any = Cgroup::V2(dir.path().to_path_buf())
            .metrics(0)
            .expect("metrics");
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        let m = v2::Metrics::parse_from_bytes(&any.value).expect("decode");
        assert_eq!(m.memory.usage, 4096);
        let gone = Cgroup::V2(dir.path().join("gone")).metrics(0);
        assert!(matches!(gone, Err(ShimError::NotFound(_))));
    }
}

#[cfg(test)]
mod join_tests {
    use super::*;

    #[test]
    fn join_dirs_v1_hierarchies_where_the_path_exists() {
        let root = tempfile::tempdir().expect("tempdir");
        let r = root.path().display().to_string();
        for d in ["pids/shims", "memory/shims", "unified/shims"] {
            std::fs::create_dir_all(root.path().join(d)).expect("mkdir");
        }
        std::fs::create_dir_all(root.path().join("cpu")).expect("mkdir");
        let mountinfo = format!(
            "30 25 0:26 / {r}/pids rw - cgroup cgroup rw,pids\n\
             31 25 0:27 / {r}/memory rw - cgroup cgroup rw,memory\n\
             32 25 0:28 / {r}/cpu rw - cgroup cgroup rw,cpu\n\
             33 25 0:29 / {r}/unified rw - cgroup2 cgroup2 rw\n\
             34 25 0:30 / /proc rw - proc proc rw\n"
        );
        let dirs = join_dirs(&mountinfo, "/shims");
        assert_eq!(
            dirs,
            vec![
                root.path().join("pids/shims"),
                root.path().join("memory/shims")
            ]
        );
        // A pure v2 host: the one hierarchy.
        let v2 = format!("33 25 0:29 / {r}/unified rw - cgroup2 cgroup2 rw\n");
        assert_eq!(
            join_dirs(&v2, "shims"),
            vec![root.path().join("unified/shims")]
        );
        assert!(join_dirs(&mountinfo, "/missing").is_empty());
    }
}
