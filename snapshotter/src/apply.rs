//! Layer apply: unpack one OCI/Docker layer tar onto a directory.
//!
//! `tar`'s own `unpack` writes device nodes as regular files and knows nothing of
//! whiteouts, so this is our own loop over the entries, following containerd's
//! `archive.Apply`: every entry's parent is resolved inside the target without following
//! symlinks out of it, an existing path is replaced unless both are directories, hard links
//! take the link header's owner and mode, and directory times are set last.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use filetime::FileTime;
use nix::sys::stat::{Mode, SFlag, makedev, mknod};

use crate::error::{Result, SnapshotterError};
use crate::hashio::HashReader;
use crate::secure::{clean_entry_path, resolve_in_root};
use crate::{OPAQUE_WHITEOUT, OVERLAY_OPAQUE_XATTR, WHITEOUT_PREFIX};

/// How the layer stream is compressed: the image format's one rule (by media type, or
/// [`Compression::Auto`] to look at the stream's first bytes).
pub use berth_oci::image::Compression;

/// How whiteouts are applied.
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// `true`: the target is an overlayfs upper dir; whiteouts become 0/0 character devices
    /// and opaque markers `trusted.overlay.opaque=y`. `false` ("native"): the target holds the
    /// full lower tree, and whited-out paths (and opaque dirs' older contents) are deleted.
    pub overlay_whiteouts: bool,
    /// Set by the caller when the work is no longer wanted (its client went away): the
    /// apply stops at the next entry with [`SnapshotterError::Cancelled`].
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// What applying a layer read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    /// `sha256:<hex>` of the uncompressed tar stream, to check against the image's diff_id.
    pub diff_id: String,
    /// Size of the uncompressed tar stream in bytes.
    pub size: u64,
    /// Whiteout and opaque-directory entries the layer had: where they are written as
    /// overlay markers, the result differs from a native apply onto an empty target.
    pub markers: u64,
}

/// Unpacks one layer from `reader` onto `target` (which must exist).
pub fn apply_layer(
    reader: impl Read,
    compression: Compression,
    target: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats> {
    let mut buffered = BufReader::new(reader);
    let compression = match compression {
        Compression::Auto => {
            let magic = buffered
                .fill_buf()
                .map_err(|source| SnapshotterError::Tar {
                    entry: None,
                    source,
                })?;
            Compression::detect(magic)
        }
        c => c,
    };
    let decoder: Box<dyn Read> = match compression {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered).map_err(
            |source| SnapshotterError::Decompress {
                compression: "zstd",
                source,
            },
        )?),
        _ => Box::new(buffered),
    };
    let mut hashing = HashReader::new(decoder);
    let meta = fs::metadata(target).map_err(|e| SnapshotterError::io("stat target", target, e))?;
    if !meta.is_dir() {
        return Err(SnapshotterError::io(
            "apply onto",
            target,
            io::Error::new(io::ErrorKind::NotADirectory, "target is not a directory"),
        ));
    }
    let mut applier = Applier {
        root: target,
        opts,
        unpacked: HashSet::new(),
        dir_times: Vec::new(),
        last_parent: None,
        proc_fd: Path::new("/proc/self/fd").is_dir(),
        room: free_bytes(target),
        claimed: 0,
        markers: 0,
    };
    let outcome = applier.run(&mut hashing).and_then(|()| {
        // The digest covers the whole stream: the end-of-archive blocks and any padding too.
        io::copy(&mut hashing, &mut io::sink())
            .map(|_| ())
            .map_err(|source| SnapshotterError::Tar {
                entry: None,
                source,
            })
    });
    if matches!(outcome, Err(SnapshotterError::Tar { .. }))
        && compression != Compression::Uncompressed
        && !hashing.inner_failed
    {
        // Deflate notices corruption only at the end (CRC), after the garbage it produced
        // broke the tar parser: read on to tell a corrupt stream from a malformed tar.
        let _ = io::copy(&mut hashing, &mut io::sink());
    }
    let corrupt = hashing.inner_failed && compression != Compression::Uncompressed;
    match outcome {
        Ok(()) => {}
        Err(SnapshotterError::Tar { source, .. }) if corrupt => {
            return Err(SnapshotterError::Decompress {
                compression: compression.as_str(),
                source,
            });
        }
        Err(e) => return Err(e),
    }
    applier.finish()?;
    let (diff_id, size) = hashing.finish();
    Ok(ApplyStats {
        diff_id,
        size,
        markers: applier.markers,
    })
}

/// The parent directory of the last entry, and a handle on it once it exists.
///
/// Every file operation of an entry goes through `/proc/self/fd/<handle>/<name>`: the
/// kernel jumps to the directory through the handle and walks one component, where the
/// host path would cost it a walk of the entry's whole depth for each of the entry's ten or
/// so system calls (1,000 files at depth 1,000 took 40 s of CPU that way).
struct LastParent {
    /// Its components in the layer.
    comps: Vec<std::ffi::OsString>,
    /// Its path on the host (for messages, records and directory times).
    host: PathBuf,
    /// An `O_PATH` handle on it and the short path that names it.
    handle: Option<(std::os::fd::OwnedFd, PathBuf)>,
}

impl LastParent {
    /// The path to do file operations in this directory through.
    fn at(&self) -> &Path {
        self.handle.as_ref().map_or(&self.host, |(_, p)| p)
    }
}

#[cfg(test)]
thread_local! {
    /// Directory handles opened by this thread (tests check the deep path is taken).
    pub(crate) static HANDLES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Opens an `O_PATH` handle on a directory and the `/proc/self/fd` path that names it.
fn dir_handle(path: &Path) -> Option<(std::os::fd::OwnedFd, PathBuf)> {
    use std::os::fd::AsRawFd;
    #[cfg(test)]
    HANDLES.with(|n| n.set(n.get() + 1));
    let fd = nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_PATH
            | nix::fcntl::OFlag::O_DIRECTORY
            | nix::fcntl::OFlag::O_NOFOLLOW
            | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let short = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    Some((fd, short))
}

/// Paths to a parent directory longer than this go through a handle on it ([`LastParent`]).
pub(crate) const HANDLE_PATH_BYTES: usize = 256;

struct Applier<'a> {
    root: &'a Path,
    opts: &'a ApplyOptions,
    /// Host paths this layer created (native opaque dirs keep only these).
    unpacked: HashSet<PathBuf>,
    /// Directory mtimes, set once every entry is in place.
    dir_times: Vec<(PathBuf, FileTime)>,
    /// The parent directory the last entry resolved to: the next entry in the same
    /// directory (or below it) starts from there. Dropped whenever an entry removes or
    /// replaces anything.
    last_parent: Option<LastParent>,
    /// Whether `/proc/self/fd` can name directory handles (it can wherever /proc is mounted).
    proc_fd: bool,
    /// Bytes the target's filesystem had free when the layer began (None: unknown).
    room: Option<u64>,
    /// File bytes this layer has claimed so far.
    claimed: u64,
    /// Whiteout and opaque entries seen.
    markers: u64,
}

/// Free bytes (for an unprivileged writer's view, as root has the same) on `dir`'s
/// filesystem.
fn free_bytes(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(st.blocks_available().saturating_mul(st.fragment_size()))
}

fn tar_err(entry: Option<&str>) -> impl FnOnce(io::Error) -> SnapshotterError + '_ {
    move |source| SnapshotterError::Tar {
        entry: entry.map(str::to_owned),
        source,
    }
}

fn invalid(entry: &str, reason: impl Into<String>) -> SnapshotterError {
    SnapshotterError::InvalidEntry {
        entry: entry.to_owned(),
        reason: reason.into(),
    }
}

fn remove_any(path: &Path) -> Result<()> {
    remove_any_at(path, path)
}

/// [`remove_any`] of `at`, which names `shown` (what messages say).
fn remove_any_at(at: &Path, shown: &Path) -> Result<()> {
    match fs::symlink_metadata(at) {
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(at).map_err(|e| SnapshotterError::io("remove dir", shown, e))
        }
        Ok(_) => fs::remove_file(at).map_err(|e| SnapshotterError::io("remove", shown, e)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(SnapshotterError::io("lstat", shown, e)),
    }
}

impl Applier<'_> {
    fn run<R: Read>(&mut self, reader: R) -> Result<()> {
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(tar_err(None))?;
        for entry in entries {
            if self
                .opts
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed))
            {
                return Err(SnapshotterError::Cancelled(format!(
                    "apply onto {}",
                    self.root.display()
                )));
            }
            let mut entry = entry.map_err(tar_err(None))?;
            self.entry(&mut entry)?;
        }
        Ok(())
    }

    /// The host directory of an entry's parent components, from the last one when it is a
    /// prefix of them; it becomes the last parent (with a handle on it if it exists).
    fn resolve_parent(&mut self, parents: &[std::ffi::OsString], name: &str) -> Result<PathBuf> {
        if let Some(last) = &self.last_parent
            && last.comps == parents
        {
            return Ok(last.host.clone());
        }
        let (host, probe) = match &self.last_parent {
            Some(last) if parents.starts_with(&last.comps) => crate::secure::resolve_from(
                self.root,
                last.host.clone(),
                last.handle.as_ref().map(|(_, p)| p.clone()),
                &parents[last.comps.len()..],
                name,
            )?,
            _ => (resolve_in_root(self.root, parents, name)?, None),
        };
        // The new handle is opened through the old one, before the old one is closed.
        let handle = if self.wants_handle(&host) {
            dir_handle(probe.as_ref().unwrap_or(&host))
        } else {
            None
        };
        self.last_parent = Some(LastParent {
            comps: parents.to_vec(),
            host: host.clone(),
            handle,
        });
        Ok(host)
    }

    /// The path to do file operations in the last parent through (see [`LastParent`]),
    /// taking a handle on it if it has none yet (it did not exist when resolved).
    fn parent_at(&mut self) -> Option<PathBuf> {
        let wanted = self
            .last_parent
            .as_ref()
            .is_some_and(|l| l.handle.is_none() && self.wants_handle(&l.host));
        let last = self.last_parent.as_mut()?;
        if wanted {
            last.handle = dir_handle(&last.host);
        }
        Some(last.at().to_path_buf())
    }

    /// Whether operations in `dir` should go through a handle: when its path is long
    /// enough that the kernel's walk of it costs more than the `/proc` lookups (a shallow
    /// tree, as in real images, is quicker by its path: 15% on 10,000 files at depth 10).
    fn wants_handle(&self, dir: &Path) -> bool {
        self.proc_fd && dir.as_os_str().len() > HANDLE_PATH_BYTES
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path().map_err(tar_err(None))?.into_owned();
        let name = raw.to_string_lossy().into_owned();
        let parts = clean_entry_path(&raw, &name)?;
        let Some((base, parents)) = parts.split_last() else {
            // The layer root itself ("./"): the target's own metadata is the snapshotter's.
            return Ok(());
        };
        let parent = self.resolve_parent(parents, &name)?;
        let base_str = base.to_str().unwrap_or("");
        if base_str == OPAQUE_WHITEOUT {
            self.last_parent = None;
            self.markers += 1;
            return self.opaque(&parent, &name);
        }
        if let Some(hidden) = base_str.strip_prefix(WHITEOUT_PREFIX) {
            self.last_parent = None;
            self.markers += 1;
            return self.whiteout(&parent, hidden, entry.header(), &name);
        }
        // A parent with a handle exists and is a directory (the handle is O_DIRECTORY).
        if self.last_parent.as_ref().is_none_or(|l| l.handle.is_none()) {
            self.ensure_dir(&parent, &name)?;
        }
        let path = parent.join(base);
        // `at` names the same file as `path`, through the parent's handle: every system
        // call below uses it; messages and records use `path`. The handle stays open until
        // this entry is done (`_hold` keeps it when the cache is dropped).
        let at = self
            .parent_at()
            .unwrap_or_else(|| parent.clone())
            .join(base);
        let mut _hold: Option<LastParent> = None;
        let header = entry.header().clone();
        let kind = header.entry_type();
        let mode = header.mode().map_err(tar_err(Some(&name)))? & 0o7777;
        let uid = header.uid().map_err(tar_err(Some(&name)))?;
        let gid = header.gid().map_err(tar_err(Some(&name)))?;
        let mtime =
            FileTime::from_unix_time(header.mtime().map_err(tar_err(Some(&name)))? as i64, 0);
        let xattrs = pax_xattrs(entry, &name)?;

        // Replace whatever is there, unless a directory meets a directory.
        if let Ok(existing) = fs::symlink_metadata(&at)
            && !(existing.is_dir() && kind.is_dir())
        {
            _hold = self.last_parent.take();
            remove_any_at(&at, &path)?;
        }

        use tar::EntryType as T;
        match kind {
            T::Regular | T::Continuous => {
                // A file larger than the room left fails before a byte is written, so a
                // layer never fills the disk it is applied to.
                let size = entry.size();
                self.claimed = self.claimed.saturating_add(size);
                if let Some(room) = self.room
                    && self.claimed > room
                {
                    return Err(SnapshotterError::Io {
                        op: "write",
                        path: path.clone(),
                        source: io::Error::new(
                            io::ErrorKind::StorageFull,
                            format!(
                                "layer entry {name:?} of {size} bytes: the layer needs {} bytes, \
                                 {room} are free",
                                self.claimed
                            ),
                        ),
                    });
                }
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&at)
                    .map_err(|e| SnapshotterError::io("create", &path, e))?;
                io::copy(entry, &mut file).map_err(tar_err(Some(&name)))?;
            }
            T::Directory => {
                if fs::symlink_metadata(&at).is_err() {
                    fs::create_dir(&at).map_err(|e| SnapshotterError::io("mkdir", &path, e))?;
                }
            }
            T::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(tar_err(Some(&name)))?
                    .ok_or_else(|| invalid(&name, "symlink without a target"))?;
                std::os::unix::fs::symlink(&link, &at)
                    .map_err(|e| SnapshotterError::io("symlink", &path, e))?;
            }
            T::Link => {
                let link = entry
                    .link_name()
                    .map_err(tar_err(Some(&name)))?
                    .ok_or_else(|| invalid(&name, "hard link without a target"))?
                    .into_owned();
                let link_name = link.to_string_lossy().into_owned();
                let lparts = clean_entry_path(&link, &name)?;
                let Some((lbase, lparents)) = lparts.split_last() else {
                    return Err(invalid(&name, "hard link to the layer root"));
                };
                let source = resolve_in_root(self.root, lparents, &name)?.join(lbase);
                fs::hard_link(&source, &at).map_err(|e| SnapshotterError::Io {
                    op: "hard link",
                    path: path.clone(),
                    source: io::Error::new(
                        e.kind(),
                        format!("to {link_name:?} ({}): {e}", source.display()),
                    ),
                })?;
            }
            T::Char | T::Block | T::Fifo => {
                let sflag = match kind {
                    T::Char => SFlag::S_IFCHR,
                    T::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let major = header
                    .device_major()
                    .map_err(tar_err(Some(&name)))?
                    .unwrap_or(0);
                let minor = header
                    .device_minor()
                    .map_err(tar_err(Some(&name)))?
                    .unwrap_or(0);
                mknod(
                    &at,
                    sflag,
                    Mode::from_bits_truncate(0o600),
                    makedev(major.into(), minor.into()),
                )
                .map_err(|e| SnapshotterError::nix("mknod", &path, e))?;
            }
            // A GNU sparse file stands for far more bytes than it carries: refused, as
            // containerd refuses it (a 2 KB layer must not fill a disk with zeros).
            T::GNUSparse => {
                return Err(invalid(
                    &name,
                    "unhandled tar header type 83 (GNU sparse file)",
                ));
            }
            other => {
                return Err(invalid(
                    &name,
                    format!("unsupported tar entry type {other:?}"),
                ));
            }
        }

        // Owner first: chown clears setuid/setgid and security.capability.
        std::os::unix::fs::lchown(&at, Some(uid as u32), Some(gid as u32))
            .map_err(|e| SnapshotterError::io("lchown", &path, e))?;
        let is_symlink = fs::symlink_metadata(&at)
            .map_err(|e| SnapshotterError::io("lstat", &path, e))?
            .file_type()
            .is_symlink();
        if !is_symlink {
            fs::set_permissions(&at, fs::Permissions::from_mode(mode))
                .map_err(|e| SnapshotterError::io("chmod", &path, e))?;
        }
        for (key, value) in &xattrs {
            if let Err(e) = xattr::set(&at, key, value) {
                // As containerd: a filesystem without xattrs, or a security.* the kernel
                // will not take, is a warning, not a failed pull.
                let errno = e.raw_os_error();
                let tolerated = errno == Some(nix::libc::ENOTSUP)
                    || (errno == Some(nix::libc::EPERM)
                        && (key.starts_with("security.") || is_symlink));
                if tolerated {
                    tracing::warn!(entry = %name, xattr = %key, error = %e, "ignored xattr in layer");
                    continue;
                }
                return Err(SnapshotterError::Io {
                    op: "setxattr",
                    path: path.clone(),
                    source: io::Error::new(e.kind(), format!("{key}: {e}")),
                });
            }
        }
        match kind {
            T::Directory => self.dir_times.push((path.clone(), mtime)),
            T::Link => {}
            _ => filetime::set_symlink_file_times(&at, mtime, mtime)
                .map_err(|e| SnapshotterError::io("set times", &path, e))?,
        }
        self.unpacked.insert(path);
        Ok(())
    }

    /// Creates a missing parent directory (0755, like containerd); refuses a non-directory.
    fn ensure_dir(&self, dir: &Path, name: &str) -> Result<()> {
        match fs::symlink_metadata(dir) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(invalid(
                name,
                format!("parent {} is not a directory", dir.display()),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|e| SnapshotterError::io("mkdir", dir, e)),
            Err(e) => Err(SnapshotterError::io("lstat", dir, e)),
        }
    }

    fn whiteout(
        &mut self,
        parent: &Path,
        hidden: &str,
        header: &tar::Header,
        name: &str,
    ) -> Result<()> {
        if hidden.is_empty()
            || hidden == "."
            || hidden == ".."
            || hidden.starts_with(WHITEOUT_PREFIX)
        {
            return Err(invalid(name, "invalid whiteout name"));
        }
        let path = parent.join(hidden);
        if !self.opts.overlay_whiteouts {
            return remove_any(&path);
        }
        self.ensure_dir(parent, name)?;
        remove_any(&path)?;
        mknod(&path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
            .map_err(|e| SnapshotterError::nix("mknod whiteout", &path, e))?;
        let uid = header.uid().unwrap_or(0);
        let gid = header.gid().unwrap_or(0);
        std::os::unix::fs::lchown(&path, Some(uid as u32), Some(gid as u32))
            .map_err(|e| SnapshotterError::io("lchown", &path, e))?;
        self.unpacked.insert(path);
        Ok(())
    }

    fn opaque(&mut self, dir: &Path, name: &str) -> Result<()> {
        self.ensure_dir(dir, name)?;
        if self.opts.overlay_whiteouts {
            return xattr::set(dir, OVERLAY_OPAQUE_XATTR, b"y")
                .map_err(|e| SnapshotterError::io("set trusted.overlay.opaque", dir, e));
        }
        let entries = fs::read_dir(dir).map_err(|e| SnapshotterError::io("read dir", dir, e))?;
        for child in entries {
            let child = child.map_err(|e| SnapshotterError::io("read dir", dir, e))?;
            let path = child.path();
            if !self.unpacked.contains(&path) {
                remove_any(&path)?;
            }
        }
        Ok(())
    }

    /// Sets the directories' times, last created first, once every entry is in place (as
    /// containerd does). One handle walks from directory to directory by names and `..`,
    /// never through a symlink, and each time is set on a name in its parent without
    /// following it: a directory that a later entry removed or put behind a symlink is
    /// skipped, no time lands outside the target, and no step costs a directory's depth.
    fn finish(&mut self) -> Result<()> {
        use nix::errno::Errno;
        use nix::fcntl::{OFlag, open, openat};
        use nix::sys::stat::{UtimensatFlags, utimensat};
        use nix::sys::time::TimeSpec;
        use std::ffi::{OsStr, OsString};
        use std::os::fd::{AsFd, OwnedFd};

        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let root = open(self.root, flags, Mode::empty())
            .map_err(|e| SnapshotterError::nix("open", self.root, e))?;
        // Where the handle is: its components below the root, and the handle (None: root).
        let mut at: Vec<OsString> = Vec::new();
        let mut handle: Option<OwnedFd> = None;
        for (path, mtime) in self.dir_times.iter().rev() {
            let Ok(rel) = path.strip_prefix(self.root) else {
                continue;
            };
            let want: Vec<&OsStr> = rel.components().map(|c| c.as_os_str()).collect();
            let Some((name, parent)) = want.split_last() else {
                continue;
            };
            let common = at
                .iter()
                .zip(parent)
                .take_while(|(a, b)| a.as_os_str() == **b)
                .count();
            while at.len() > common {
                let dir = handle.as_ref().map_or(root.as_fd(), |h| h.as_fd());
                let up = openat(dir, "..", flags, Mode::empty())
                    .map_err(|e| SnapshotterError::nix("open ..", path, e))?;
                at.pop();
                handle = (!at.is_empty()).then_some(up);
            }
            let mut reached = true;
            for c in &parent[common..] {
                let dir = handle.as_ref().map_or(root.as_fd(), |h| h.as_fd());
                match openat(dir, *c, flags, Mode::empty()) {
                    Ok(next) => {
                        handle = Some(next);
                        at.push(c.to_os_string());
                    }
                    Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => {
                        reached = false;
                        break;
                    }
                    Err(e) => return Err(SnapshotterError::nix("open", path, e)),
                }
            }
            if !reached {
                continue;
            }
            let dir = handle.as_ref().map_or(root.as_fd(), |h| h.as_fd());
            let t = TimeSpec::new(mtime.unix_seconds(), i64::from(mtime.nanoseconds()));
            match utimensat(dir, *name, &t, &t, UtimensatFlags::NoFollowSymlink) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(SnapshotterError::nix("set times", path, e)),
            }
        }
        Ok(())
    }
}

/// The `SCHILY.xattr.*` records of an entry's PAX header, as (name, value).
fn pax_xattrs<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    name: &str,
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let Some(exts) = entry.pax_extensions().map_err(tar_err(Some(name)))? else {
        return Ok(out);
    };
    for ext in exts {
        let ext = ext.map_err(tar_err(Some(name)))?;
        let Ok(key) = ext.key() else { continue };
        if let Some(attr) = key.strip_prefix("SCHILY.xattr.") {
            out.push((attr.to_owned(), ext.value_bytes().to_vec()));
        }
    }
    Ok(out)
}
