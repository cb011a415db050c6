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

/// How the layer stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Look at the stream's first bytes (gzip and zstd magic; anything else is plain tar).
    #[default]
    Auto,
    Uncompressed,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression a stream starting with `magic` uses.
    pub fn detect(magic: &[u8]) -> Compression {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::Uncompressed
        }
    }

    fn name(self) -> &'static str {
        match self {
            Compression::Auto => "auto",
            Compression::Uncompressed => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

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
        room: free_bytes(target),
        claimed: 0,
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
                compression: compression.name(),
                source,
            });
        }
        Err(e) => return Err(e),
    }
    applier.finish()?;
    let (diff_id, size) = hashing.finish();
    Ok(ApplyStats { diff_id, size })
}

struct Applier<'a> {
    root: &'a Path,
    opts: &'a ApplyOptions,
    /// Host paths this layer created (native opaque dirs keep only these).
    unpacked: HashSet<PathBuf>,
    /// Directory mtimes, set once every entry is in place.
    dir_times: Vec<(PathBuf, FileTime)>,
    /// The parent directory the last entry resolved to, by its entry components: the next
    /// entry in the same directory (or below it) starts from there. Dropped whenever an
    /// entry removes or replaces anything.
    last_parent: Option<(Vec<std::ffi::OsString>, PathBuf)>,
    /// Bytes the target's filesystem had free when the layer began (None: unknown).
    room: Option<u64>,
    /// File bytes this layer has claimed so far.
    claimed: u64,
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
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(path).map_err(|e| SnapshotterError::io("remove dir", path, e))
        }
        Ok(_) => fs::remove_file(path).map_err(|e| SnapshotterError::io("remove", path, e)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(SnapshotterError::io("lstat", path, e)),
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
    /// prefix of them.
    fn resolve_parent(&mut self, parents: &[std::ffi::OsString], name: &str) -> Result<PathBuf> {
        let resolved = match &self.last_parent {
            Some((comps, dir)) if parents.starts_with(comps) => {
                crate::secure::resolve_from(self.root, dir.clone(), &parents[comps.len()..], name)?
            }
            _ => resolve_in_root(self.root, parents, name)?,
        };
        self.last_parent = Some((parents.to_vec(), resolved.clone()));
        Ok(resolved)
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
            return self.opaque(&parent, &name);
        }
        if let Some(hidden) = base_str.strip_prefix(WHITEOUT_PREFIX) {
            self.last_parent = None;
            return self.whiteout(&parent, hidden, entry.header(), &name);
        }
        self.ensure_dir(&parent, &name)?;
        let path = parent.join(base);
        let header = entry.header().clone();
        let kind = header.entry_type();
        let mode = header.mode().map_err(tar_err(Some(&name)))? & 0o7777;
        let uid = header.uid().map_err(tar_err(Some(&name)))?;
        let gid = header.gid().map_err(tar_err(Some(&name)))?;
        let mtime =
            FileTime::from_unix_time(header.mtime().map_err(tar_err(Some(&name)))? as i64, 0);
        let xattrs = pax_xattrs(entry, &name)?;

        // Replace whatever is there, unless a directory meets a directory.
        if let Ok(existing) = fs::symlink_metadata(&path)
            && !(existing.is_dir() && kind.is_dir())
        {
            self.last_parent = None;
            remove_any(&path)?;
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
                    .open(&path)
                    .map_err(|e| SnapshotterError::io("create", &path, e))?;
                io::copy(entry, &mut file).map_err(tar_err(Some(&name)))?;
            }
            T::Directory => {
                if fs::symlink_metadata(&path).is_err() {
                    fs::create_dir(&path).map_err(|e| SnapshotterError::io("mkdir", &path, e))?;
                }
            }
            T::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(tar_err(Some(&name)))?
                    .ok_or_else(|| invalid(&name, "symlink without a target"))?;
                std::os::unix::fs::symlink(&link, &path)
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
                fs::hard_link(&source, &path).map_err(|e| SnapshotterError::Io {
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
                    &path,
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
        std::os::unix::fs::lchown(&path, Some(uid as u32), Some(gid as u32))
            .map_err(|e| SnapshotterError::io("lchown", &path, e))?;
        let is_symlink = fs::symlink_metadata(&path)
            .map_err(|e| SnapshotterError::io("lstat", &path, e))?
            .file_type()
            .is_symlink();
        if !is_symlink {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(|e| SnapshotterError::io("chmod", &path, e))?;
        }
        for (key, value) in &xattrs {
            if let Err(e) = xattr::set(&path, key, value) {
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
            _ => filetime::set_symlink_file_times(&path, mtime, mtime)
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

    fn finish(&mut self) -> Result<()> {
        for (path, mtime) in self.dir_times.iter().rev() {
            filetime::set_symlink_file_times(path, *mtime, *mtime)
                .map_err(|e| SnapshotterError::io("set times", path, e))?;
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
