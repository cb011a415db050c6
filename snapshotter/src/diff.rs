//! Layer diff: an uncompressed OCI layer tar of the changes from a lower tree to an upper.
//!
//! Two sources, as containerd's differs have:
//! - an overlayfs upper dir (`overlay_upper = true`): everything in it is a change; 0/0
//!   character devices are deletions and `trusted.overlay.opaque=y` dirs are opaque;
//! - two full trees: a double walk, entries only in `lower` are deletions, entries whose
//!   metadata (or, when times carry no nanoseconds, content) differ are changes.
//!
//! Entries come in a deterministic order (each directory's names sorted bytewise, a
//! directory before its contents); a changed entry's parent directories are written first;
//! a file with several names is written once and later names are hard-link entries.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{Result, SnapshotterError};
use crate::hashio::HashWriter;
use crate::{OPAQUE_WHITEOUT, OVERLAY_OPAQUE_XATTR, WHITEOUT_PREFIX};

/// What the produced layer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffStats {
    /// `sha256:<hex>` of the uncompressed tar written (the layer's diff_id).
    pub diff_id: String,
    /// Bytes written.
    pub size: u64,
}

/// Writes the changes from `lower` (which may be an empty dir) to `upper` as a tar to `out`.
pub fn diff(lower: &Path, upper: &Path, overlay_upper: bool, out: impl Write) -> Result<DiffStats> {
    let mut differ = Differ {
        lower,
        upper,
        overlay: overlay_upper,
        builder: tar::Builder::new(HashWriter::new(out)),
        links: HashMap::new(),
        emitted_dirs: HashSet::new(),
    };
    differ.builder.follow_symlinks(false);
    differ.walk(Path::new(""))?;
    differ
        .builder
        .finish()
        .map_err(|e| write_err(Path::new("end of archive"), e))?;
    let mut hashing = differ
        .builder
        .into_inner()
        .map_err(|e| write_err(Path::new("end of archive"), e))?;
    hashing
        .flush()
        .map_err(|e| write_err(Path::new("end of archive"), e))?;
    let (diff_id, size) = hashing.finish();
    Ok(DiffStats { diff_id, size })
}

fn write_err(path: &Path, source: io::Error) -> SnapshotterError {
    SnapshotterError::Write {
        path: path.to_path_buf(),
        source,
    }
}

struct Differ<'a, W: Write> {
    lower: &'a Path,
    upper: &'a Path,
    overlay: bool,
    builder: tar::Builder<HashWriter<W>>,
    /// (dev, ino) of multiply-linked files already written → their name in the layer.
    links: HashMap<(u64, u64), PathBuf>,
    /// Directories already written (relative paths).
    emitted_dirs: HashSet<PathBuf>,
}

/// Sorted names in `dir`; empty when `dir` is absent or not a directory.
fn sorted_names(dir: &Path) -> Result<Vec<OsString>> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Ok(Vec::new()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(SnapshotterError::io("lstat", dir, e)),
    }
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| SnapshotterError::io("read dir", dir, e))? {
        names.push(
            entry
                .map_err(|e| SnapshotterError::io("read dir", dir, e))?
                .file_name(),
        );
    }
    names.sort();
    Ok(names)
}

fn lstat(path: &Path) -> Result<Metadata> {
    fs::symlink_metadata(path).map_err(|e| SnapshotterError::io("lstat", path, e))
}

fn is_whiteout_device(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// The xattrs to carry in a layer, sorted; overlayfs' own `trusted.overlay.*` are not.
fn layer_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::Unsupported => return Ok(out),
        Err(e) => return Err(SnapshotterError::io("list xattrs", path, e)),
    };
    for name in names {
        let Some(name) = name.to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with("trusted.overlay.") {
            continue;
        }
        if let Some(value) =
            xattr::get(path, &name).map_err(|e| SnapshotterError::io("get xattr", path, e))?
        {
            out.push((name, value));
        }
    }
    out.sort();
    Ok(out)
}

fn same_content(a: &Path, b: &Path) -> Result<bool> {
    let mut fa = File::open(a).map_err(|e| SnapshotterError::io("open", a, e))?;
    let mut fb = File::open(b).map_err(|e| SnapshotterError::io("open", b, e))?;
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(|e| SnapshotterError::io("read", a, e))?;
        let nb = read_full(&mut fb, &mut bb).map_err(|e| SnapshotterError::io("read", b, e))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Whether `lower` and `upper` are the same entry as far as a layer can tell.
fn same_entry(lp: &Path, l: &Metadata, up: &Path, u: &Metadata) -> Result<bool> {
    let lt = l.file_type();
    let ut = u.file_type();
    if l.mode() != u.mode() || l.uid() != u.uid() || l.gid() != u.gid() {
        return Ok(false);
    }
    if (lt.is_char_device() || lt.is_block_device()) && l.rdev() != u.rdev() {
        return Ok(false);
    }
    if !ut.is_dir() && l.size() != u.size() {
        return Ok(false);
    }
    if l.mtime() != u.mtime() || l.mtime_nsec() != u.mtime_nsec() {
        return Ok(false);
    }
    if layer_xattrs(lp)? != layer_xattrs(up)? {
        return Ok(false);
    }
    if ut.is_symlink() {
        let a = fs::read_link(lp).map_err(|e| SnapshotterError::io("readlink", lp, e))?;
        let b = fs::read_link(up).map_err(|e| SnapshotterError::io("readlink", up, e))?;
        return Ok(a == b);
    }
    if ut.is_file() && (l.mtime_nsec() == 0 || u.mtime_nsec() == 0) {
        // Times were truncated (a tar round trip): only the bytes can tell.
        return same_content(lp, up);
    }
    Ok(true)
}

fn tar_name(rel: &Path, dir: bool) -> PathBuf {
    if dir {
        let mut s = rel.as_os_str().to_owned();
        s.push("/");
        PathBuf::from(s)
    } else {
        rel.to_path_buf()
    }
}

impl<W: Write> Differ<'_, W> {
    /// Compares directory `rel` of both trees (the lower side may be missing).
    fn walk(&mut self, rel: &Path) -> Result<()> {
        let upper_dir = self.upper.join(rel);
        let upper_names = sorted_names(&upper_dir)?;
        let lower_names = if self.overlay {
            Vec::new()
        } else {
            sorted_names(&self.lower.join(rel))?
        };

        let (mut i, mut j) = (0, 0);
        while i < upper_names.len() || j < lower_names.len() {
            let take_upper = match (upper_names.get(i), lower_names.get(j)) {
                (Some(u), Some(l)) => u <= l,
                (Some(_), None) => true,
                _ => false,
            };
            if !take_upper {
                // Only in lower: deleted.
                let name = &lower_names[j];
                j += 1;
                self.whiteout(rel, name)?;
                continue;
            }
            let name = upper_names[i].clone();
            i += 1;
            let in_lower = lower_names.get(j) == Some(&name);
            if in_lower {
                j += 1;
            }
            let child = rel.join(&name);
            let up = self.upper.join(&child);
            let u = lstat(&up)?;
            if self.overlay {
                if is_whiteout_device(&u) {
                    self.whiteout(rel, &name)?;
                    continue;
                }
                self.emit(&child, &up, &u)?;
                if u.is_dir() {
                    let opaque = xattr::get(&up, OVERLAY_OPAQUE_XATTR)
                        .map_err(|e| SnapshotterError::io("get xattr", &up, e))?;
                    if opaque.as_deref() == Some(b"y") {
                        self.opaque_marker(&child)?;
                    }
                    self.walk(&child)?;
                }
                continue;
            }
            let lp = self.lower.join(&child);
            let changed = if in_lower {
                let l = lstat(&lp)?;
                l.file_type() != u.file_type() || !same_entry(&lp, &l, &up, &u)?
            } else {
                true
            };
            if changed {
                self.emit(&child, &up, &u)?;
            }
            if u.is_dir() {
                self.walk(&child)?;
            }
        }
        Ok(())
    }

    /// Writes the parent directories of `rel` that are not in the layer yet.
    fn ensure_parents(&mut self, rel: &Path) -> Result<()> {
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        if parent.as_os_str().is_empty() || self.emitted_dirs.contains(parent) {
            return Ok(());
        }
        let parent = parent.to_path_buf();
        self.ensure_parents(&parent)?;
        let full = self.upper.join(&parent);
        let meta = lstat(&full)?;
        self.emit(&parent, &full, &meta)
    }

    fn whiteout(&mut self, dir: &Path, name: &OsString) -> Result<()> {
        let mut wh = OsString::from(WHITEOUT_PREFIX);
        wh.push(name);
        let rel = dir.join(wh);
        self.marker(&rel)
    }

    fn opaque_marker(&mut self, dir: &Path) -> Result<()> {
        self.marker(&dir.join(OPAQUE_WHITEOUT))
    }

    /// An empty regular file owned by root with mode 0 and time 0 (whiteouts).
    fn marker(&mut self, rel: &Path) -> Result<()> {
        self.ensure_parents(rel)?;
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(0);
        self.builder
            .append_data(&mut h, rel, io::empty())
            .map_err(|e| write_err(rel, e))
    }

    fn emit(&mut self, rel: &Path, full: &Path, meta: &Metadata) -> Result<()> {
        let ft = meta.file_type();
        if ft.is_socket() {
            return Ok(()); // sockets do not go into layers
        }
        self.ensure_parents(rel)?;
        let xattrs = layer_xattrs(full)?;
        if !xattrs.is_empty() {
            let records: Vec<(String, Vec<u8>)> = xattrs
                .into_iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v))
                .collect();
            self.builder
                .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(|e| write_err(rel, e))?;
        }
        let mut h = tar::Header::new_ustar();
        h.set_mode(meta.mode() & 0o7777);
        h.set_uid(meta.uid().into());
        h.set_gid(meta.gid().into());
        h.set_mtime(meta.mtime().max(0) as u64);
        h.set_size(0);
        let err = |e| write_err(rel, e);

        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            self.builder
                .append_data(&mut h, tar_name(rel, true), io::empty())
                .map_err(err)?;
            self.emitted_dirs.insert(rel.to_path_buf());
            return Ok(());
        }
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                h.set_entry_type(tar::EntryType::Link);
                let first = first.clone();
                return self.builder.append_link(&mut h, rel, &first).map_err(err);
            }
            self.links.insert(key, rel.to_path_buf());
        }
        if ft.is_symlink() {
            let target =
                fs::read_link(full).map_err(|e| SnapshotterError::io("readlink", full, e))?;
            h.set_entry_type(tar::EntryType::Symlink);
            return self.builder.append_link(&mut h, rel, &target).map_err(err);
        }
        if ft.is_file() {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(meta.len());
            let file = File::open(full).map_err(|e| SnapshotterError::io("open", full, e))?;
            return self
                .builder
                .append_data(&mut h, rel, file.take(meta.len()))
                .map_err(err);
        }
        let kind = if ft.is_char_device() {
            tar::EntryType::Char
        } else if ft.is_block_device() {
            tar::EntryType::Block
        } else {
            tar::EntryType::Fifo
        };
        h.set_entry_type(kind);
        if kind != tar::EntryType::Fifo {
            let rdev = meta.rdev();
            let major = u32::try_from(nix::sys::stat::major(rdev)).unwrap_or(u32::MAX);
            let minor = u32::try_from(nix::sys::stat::minor(rdev)).unwrap_or(u32::MAX);
            h.set_device_major(major).map_err(err)?;
            h.set_device_minor(minor).map_err(err)?;
        }
        self.builder
            .append_data(&mut h, rel, io::empty())
            .map_err(err)
    }
}
