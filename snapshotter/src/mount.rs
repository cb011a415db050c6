//! Mounting what snapshotters return: bind and overlay mounts, with overlay option strings
//! longer than the kernel's one-page limit handled by mounting from the lower dirs' common
//! parent with relative paths.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use crate::error::{Result, SnapshotterError};
use crate::snapshots::Mount;

/// How often an unmount that finds the mount busy is retried before detaching it.
const UNMOUNT_RETRIES: u32 = 50;
const UNMOUNT_RETRY_DELAY: Duration = Duration::from_millis(20);

/// Mounts `mounts` in order onto `target` (an existing directory).
///
/// Options that are mount flags (`ro`, `rw`, `bind`, `rbind`, `nosuid`, ...) become flags,
/// the others the data string. A read-only bind mount is a bind followed by a read-only
/// remount, as the kernel ignores `MS_RDONLY` on the first bind.
///
/// When one mount fails, the ones already made on `target` are unmounted again.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    for (done, m) in mounts.iter().enumerate() {
        if let Err(e) = mount_one(m, target) {
            for _ in 0..done {
                if let Err(undo) = nix::mount::umount2(target, MntFlags::MNT_DETACH) {
                    tracing::warn!(target = %target.display(), error = %undo, "could not undo a mount");
                }
            }
            return Err(e);
        }
    }
    Ok(())
}

fn mount_err(target: &Path, message: impl Into<String>) -> SnapshotterError {
    SnapshotterError::Mount {
        op: "mount",
        target: target.display().to_string(),
        message: message.into(),
    }
}

fn mount_one(m: &Mount, target: &Path) -> Result<()> {
    let parsed = parse_options(&m.options);
    tracing::debug!(kind = %m.kind, source = %m.source, target = %target.display(), options = ?m.options, "mount");
    let bind = parsed.flags.contains(MsFlags::MS_BIND) || m.kind == "bind";
    if bind {
        let flags = MsFlags::MS_BIND | (parsed.flags & MsFlags::MS_REC);
        nix::mount::mount(
            Some(m.source.as_str()),
            target,
            None::<&str>,
            flags,
            None::<&str>,
        )
        .map_err(|e| mount_err(target, format!("bind {}: {e}", m.source)))?;
        let extra = parsed.flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
        if !extra.is_empty() {
            let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | extra;
            if let Err(e) =
                nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
            {
                let err = mount_err(
                    target,
                    format!("remount bind of {} {flags:?}: {e}", m.source),
                );
                if let Err(undo) = unmount(target) {
                    tracing::warn!(target = %target.display(), error = %undo, "could not undo a bind mount");
                }
                return Err(err);
            }
        }
        return Ok(());
    }

    let limit = page_size() - 1;
    if m.kind == "overlay" && parsed.data.len() > limit {
        return mount_overlay_relative(m, &parsed, target, limit);
    }
    let data = (!parsed.data.is_empty()).then_some(parsed.data.as_str());
    nix::mount::mount(
        Some(m.source.as_str()),
        target,
        Some(m.kind.as_str()),
        parsed.flags,
        data,
    )
    .map_err(|e| {
        mount_err(
            target,
            format!("{} {} ({}): {e}", m.kind, m.source, m.options.join(",")),
        )
    })
}

/// Mount options split into flags and the data string.
struct Parsed {
    flags: MsFlags,
    /// The options that are flags, as given (for `mount(8)`).
    flag_options: Vec<String>,
    data: String,
}

fn parse_options(options: &[String]) -> Parsed {
    let mut flags = MsFlags::empty();
    let mut flag_options = Vec::new();
    let mut data: Vec<&str> = Vec::new();
    for opt in options {
        let (set, clear) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            other => {
                data.push(other);
                continue;
            }
        };
        flags = (flags | set) - clear;
        flag_options.push(opt.clone());
    }
    Parsed {
        flags,
        flag_options,
        data: data.join(","),
    }
}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|v| usize::try_from(v).ok())
        .unwrap_or(4096)
}

/// Mounts an overlay whose data string is over the kernel's limit: the directories in
/// `lowerdir=`, `upperdir=` and `workdir=` are made relative to their longest common
/// parent, and `mount(8)` runs from there (the kernel resolves relative paths against the
/// mounting process's working directory).
fn mount_overlay_relative(m: &Mount, parsed: &Parsed, target: &Path, limit: usize) -> Result<()> {
    let abs_target = if target.is_absolute() {
        target.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| mount_err(target, format!("current directory: {e}")))?
            .join(target)
    };
    let options: Vec<&str> = parsed.data.split(',').collect();
    let mut dirs: Vec<&Path> = Vec::new();
    for opt in &options {
        if let Some(v) = opt.strip_prefix("lowerdir=") {
            dirs.extend(v.split(':').map(Path::new));
        } else if let Some(v) = opt
            .strip_prefix("upperdir=")
            .or_else(|| opt.strip_prefix("workdir="))
        {
            dirs.push(Path::new(v));
        }
    }
    let common = common_dir(&dirs).ok_or_else(|| {
        mount_err(
            target,
            format!(
                "overlay options are {} bytes, more than the kernel's {limit}, and its directories share no parent",
                parsed.data.len()
            ),
        )
    })?;
    let rel = |p: &str| -> String {
        Path::new(p)
            .strip_prefix(&common)
            .map(|r| r.to_string_lossy().into_owned())
            .unwrap_or_else(|_| p.to_string())
    };
    let relative: Vec<String> = options
        .iter()
        .map(|opt| {
            if let Some(v) = opt.strip_prefix("lowerdir=") {
                format!(
                    "lowerdir={}",
                    v.split(':').map(rel).collect::<Vec<_>>().join(":")
                )
            } else if let Some(v) = opt.strip_prefix("upperdir=") {
                format!("upperdir={}", rel(v))
            } else if let Some(v) = opt.strip_prefix("workdir=") {
                format!("workdir={}", rel(v))
            } else {
                (*opt).to_string()
            }
        })
        .collect();
    let data = relative.join(",");
    if data.len() > limit {
        return Err(mount_err(
            target,
            format!(
                "overlay options are {} bytes even relative to {}, more than the kernel's {limit}",
                data.len(),
                common.display()
            ),
        ));
    }
    let all: Vec<String> = parsed
        .flag_options
        .iter()
        .cloned()
        .chain(std::iter::once(data))
        .collect();
    tracing::debug!(target = %abs_target.display(), dir = %common.display(), "mounting a long overlay with relative paths");
    let out = Command::new("mount")
        .current_dir(&common)
        .arg("-t")
        .arg(&m.kind)
        .arg(&m.source)
        .arg("-o")
        .arg(all.join(","))
        .arg(&abs_target)
        .output()
        .map_err(|e| mount_err(target, format!("running mount(8): {e}")))?;
    if !out.status.success() {
        return Err(mount_err(
            target,
            format!(
                "mount(8) of overlay from {} failed ({}): {}",
                common.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(())
}

/// The longest directory that contains every path of `dirs` (all absolute).
fn common_dir(dirs: &[&Path]) -> Option<PathBuf> {
    let first = dirs.first()?;
    let mut common: Vec<Component<'_>> = first.parent()?.components().collect();
    for d in &dirs[1..] {
        let parent: Vec<Component<'_>> = d.parent()?.components().collect();
        let n = common
            .iter()
            .zip(parent.iter())
            .take_while(|(a, b)| a == b)
            .count();
        common.truncate(n);
    }
    if !matches!(common.first(), Some(Component::RootDir)) {
        return None;
    }
    Some(common.iter().collect())
}

/// The mount points at or below `dir` in this process's mount table, deepest first. The
/// mount table, not a device comparison, is the truth: a bind mount of the same filesystem
/// has the same device as its parent directory.
pub fn mounts_at_or_below(dir: &Path) -> Vec<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mount_points_below(&table, dir)
}

fn mount_points_below(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo writes space, tab, newline and backslash in paths as octal escapes.
fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Unmounts every mount at or below `dir`, deepest first (see [`unmount`] for each).
pub fn unmount_all_below(dir: &Path) -> Result<()> {
    for point in mounts_at_or_below(dir) {
        unmount(&point)?;
    }
    Ok(())
}

/// Unmounts `target` and anything stacked on it.
///
/// A busy mount is retried for about a second, then detached (`MNT_DETACH`). A `target`
/// that is not (or no longer) a mount point is not an error, so cleanup paths may call
/// this unconditionally; a `target` that does not exist is.
pub fn unmount(target: &Path) -> Result<()> {
    let err = |e: Errno| SnapshotterError::Mount {
        op: "unmount",
        target: target.display().to_string(),
        message: e.to_string(),
    };
    // Each round removes the topmost mount; stop when none is left.
    for _ in 0..64 {
        let mut tries = 0;
        loop {
            match nix::mount::umount2(target, MntFlags::empty()) {
                Ok(()) => break,
                Err(Errno::EINTR) => continue,
                Err(Errno::EINVAL) => return Ok(()),
                Err(Errno::EBUSY) if tries < UNMOUNT_RETRIES => {
                    tries += 1;
                    thread::sleep(UNMOUNT_RETRY_DELAY);
                }
                Err(Errno::EBUSY) => {
                    tracing::warn!(target = %target.display(), "mount still busy, detaching it");
                    match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
                        Ok(()) | Err(Errno::EINVAL) => break,
                        Err(e) => return Err(err(e)),
                    }
                }
                Err(e) => return Err(err(e)),
            }
        }
    }
    Err(SnapshotterError::Mount {
        op: "unmount",
        target: target.display().to_string(),
        message: "still mounted after 64 unmounts".into(),
    })
}

/// Mounts `mounts` on a fresh temporary directory, runs `f` on it and always unmounts and
/// removes the directory again.
///
/// The directory is made under [`std::env::temp_dir`]. It is removed with `rmdir` only, so
/// a failed unmount can never delete the mounted tree; `f`'s error wins over an unmount
/// error.
pub fn with_temp_mount<T>(mounts: &[Mount], f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let dir = TempMountDir::create()?;
    mount_all(mounts, &dir.path)?;
    let mounted = Mounted(&dir.path);
    let result = f(&dir.path);
    let unmounted = mounted.finish();
    let value = result?;
    unmounted?;
    Ok(value)
}

/// A temporary mount point, removed (rmdir) on drop.
struct TempMountDir {
    path: PathBuf,
}

impl TempMountDir {
    fn create() -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let path = base.join(format!(
                "berth-mount-{}-{n}-{nanos:08x}",
                std::process::id()
            ));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(Self { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(SnapshotterError::io("create mount point", &path, e)),
            }
        }
    }
}

impl Drop for TempMountDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove a temporary mount point");
        }
    }
}

/// Unmounts on drop (also when `f` panics) unless [`Mounted::finish`] already did.
struct Mounted<'a>(&'a Path);

impl Mounted<'_> {
    fn finish(self) -> Result<()> {
        let r = unmount(self.0);
        std::mem::forget(self);
        r
    }
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        if let Err(e) = unmount(self.0) {
            tracing::warn!(target = %self.0.display(), error = %e, "could not unmount a temporary mount");
        }
    }
}

/// Where a layer can be applied without mounting: the upper dir of a single writable overlay
/// mount (apply with overlay whiteouts: `true`), or the source of a single writable bind
/// mount (apply natively: `false`). `None` when the mounts need mounting first.
pub fn apply_target(mounts: &[Mount]) -> Option<(PathBuf, bool)> {
    let [m] = mounts else {
        return None;
    };
    if m.options.iter().any(|o| o == "ro") {
        return None;
    }
    match m.kind.as_str() {
        "overlay" => m
            .options
            .iter()
            .find_map(|o| o.strip_prefix("upperdir="))
            .map(|u| (PathBuf::from(u), true)),
        "bind" => Some((PathBuf::from(&m.source), false)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let opts: Vec<String> = ["ro", "nosuid", "lowerdir=/a:/b", "index=off"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let p = parse_options(&opts);
        assert_eq!(p.flags, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
        assert_eq!(p.data, "lowerdir=/a:/b,index=off");
        assert_eq!(p.flag_options, vec!["ro", "nosuid"]);
    }

    #[test]
    fn common_parent_of_layer_dirs() {
        let a = Path::new("/r/snapshots/1/fs");
        let b = Path::new("/r/snapshots/12/fs");
        let c = Path::new("/r/snapshots/3/work");
        assert_eq!(common_dir(&[a, b, c]), Some(PathBuf::from("/r/snapshots")));
        assert_eq!(common_dir(&[a]), Some(PathBuf::from("/r/snapshots/1")));
        assert_eq!(
            common_dir(&[a, Path::new("/x/fs")]),
            Some(PathBuf::from("/"))
        );
    }

    #[test]
    fn apply_targets() {
        let m = |kind: &str, source: &str, opts: &[&str]| Mount {
            kind: kind.into(),
            source: source.into(),
            options: opts.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(
            apply_target(&[m(
                "overlay",
                "overlay",
                &["workdir=/w", "upperdir=/u", "lowerdir=/l"]
            )]),
            Some((PathBuf::from("/u"), true))
        );
        assert_eq!(
            apply_target(&[m("bind", "/s", &["rw", "rbind"])]),
            Some((PathBuf::from("/s"), false))
        );
        assert_eq!(apply_target(&[m("bind", "/s", &["ro", "rbind"])]), None);
        assert_eq!(
            apply_target(&[m("overlay", "overlay", &["lowerdir=/a:/b"])]),
            None
        );
        assert_eq!(apply_target(&[]), None);
    }
}

#[cfg(test)]
mod table_tests {
    use super::*;

    #[test]
    fn mount_points_below_a_dir_deepest_first() {
        let table = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
40 22 8:1 /var/lib/x /run/b/tasks/ns/id/rootfs rw - ext4 /dev/sda1 rw
41 40 0:5 / /run/b/tasks/ns/id/rootfs/dev rw - tmpfs tmpfs rw
42 41 0:6 / /run/b/tasks/ns/id/rootfs/dev/pts rw - devpts devpts rw
43 22 0:7 / /run/b/tasks/ns/id2/rootfs rw - overlay overlay rw
44 22 0:8 / /run/b/tasks/ns/with\\040space rw - tmpfs tmpfs rw
";
        let got = mount_points_below(table, Path::new("/run/b/tasks/ns/id"));
        assert_eq!(
            got,
            vec![
                PathBuf::from("/run/b/tasks/ns/id/rootfs/dev/pts"),
                PathBuf::from("/run/b/tasks/ns/id/rootfs/dev"),
                PathBuf::from("/run/b/tasks/ns/id/rootfs"),
            ]
        );
        assert_eq!(
            mount_points_below(table, Path::new("/run/b/tasks/ns/with space")),
            vec![PathBuf::from("/run/b/tasks/ns/with space")]
        );
    }
}
