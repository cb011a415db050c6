//! The native snapshotter: every snapshot's `fs/` is a full copy of its parent's tree,
//! mounted with a plain bind mount. Slow and space-hungry, but works on any filesystem.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use filetime::FileTime;
use nix::sys::stat::{Mode, SFlag, mknod};

use crate::error::{Result, SnapshotterError};
use crate::snapshots::{Kind, Mount};
use crate::store::{Backend, Store};

/// The native (copying) snapshotter ("native").
pub type Native = Store<NativeLayout>;

/// Directory layout and mounts of the native snapshotter.
#[derive(Debug, Default, Clone, Copy)]
pub struct NativeLayout;

impl Backend for NativeLayout {
    const NAME: &'static str = "native";

    fn stage(&self, dir: &Path, _kind: Kind, parents: &[PathBuf]) -> Result<()> {
        let fs_dir = dir.join("fs");
        fs::create_dir(&fs_dir).map_err(|e| SnapshotterError::io("create", &fs_dir, e))?;
        match parents.first() {
            Some(parent) => copy_tree(&parent.join("fs"), &fs_dir),
            None => fs::set_permissions(&fs_dir, fs::Permissions::from_mode(0o755))
                .map_err(|e| SnapshotterError::io("chmod", &fs_dir, e)),
        }
    }

    fn mounts(&self, dir: &Path, kind: Kind, _parents: &[PathBuf]) -> Vec<Mount> {
        let ro = kind != Kind::Active;
        vec![Mount {
            kind: "bind".into(),
            source: dir.join("fs").to_string_lossy().into_owned(),
            options: vec![if ro { "ro" } else { "rw" }.into(), "rbind".into()],
        }]
    }
}

/// Copies the tree at `src` onto the existing, empty directory `dst`, keeping file types
/// (symlinks, hard links, device nodes, fifos, sockets), owners, modes, times and xattrs.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let mut copier = Copier::default();
    copier.dir(src, dst)?;
    let meta = lstat(src)?;
    copy_metadata(src, dst, &meta)
}

#[derive(Default)]
struct Copier {
    /// (dev, ino) of multiply-linked files already copied → their copy.
    links: HashMap<(u64, u64), PathBuf>,
}

impl Copier {
    fn dir(&mut self, src: &Path, dst: &Path) -> Result<()> {
        let entries = fs::read_dir(src).map_err(|e| SnapshotterError::io("read dir", src, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| SnapshotterError::io("read dir", src, e))?;
            let s = entry.path();
            let d = dst.join(entry.file_name());
            let meta = lstat(&s)?;
            let ft = meta.file_type();
            if ft.is_dir() {
                fs::create_dir(&d).map_err(|e| SnapshotterError::io("create", &d, e))?;
                self.dir(&s, &d)?;
                copy_metadata(&s, &d, &meta)?;
                continue;
            }
            if meta.nlink() > 1 {
                let id = (meta.dev(), meta.ino());
                if let Some(first) = self.links.get(&id) {
                    fs::hard_link(first, &d)
                        .map_err(|e| SnapshotterError::io("hard link", &d, e))?;
                    continue;
                }
                self.links.insert(id, d.clone());
            }
            if ft.is_file() {
                fs::copy(&s, &d).map_err(|e| SnapshotterError::io("copy", &d, e))?;
            } else if ft.is_symlink() {
                let target =
                    fs::read_link(&s).map_err(|e| SnapshotterError::io("readlink", &s, e))?;
                std::os::unix::fs::symlink(&target, &d)
                    .map_err(|e| SnapshotterError::io("symlink", &d, e))?;
            } else {
                // Character and block devices, fifos, sockets.
                mknod(
                    &d,
                    SFlag::from_bits_truncate(meta.mode() & SFlag::S_IFMT.bits()),
                    Mode::from_bits_truncate(meta.mode() & 0o7777),
                    meta.rdev(),
                )
                .map_err(|e| SnapshotterError::nix("mknod", &d, e))?;
            }
            copy_metadata(&s, &d, &meta)?;
        }
        Ok(())
    }
}

fn lstat(path: &Path) -> Result<fs::Metadata> {
    fs::symlink_metadata(path).map_err(|e| SnapshotterError::io("lstat", path, e))
}

/// Owner, mode (after the owner: chown clears set-id bits), xattrs and times of `src`
/// onto `dst`.
fn copy_metadata(src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<()> {
    let is_symlink = meta.file_type().is_symlink();
    std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))
        .map_err(|e| SnapshotterError::io("lchown", dst, e))?;
    if !is_symlink {
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|e| SnapshotterError::io("chmod", dst, e))?;
    }
    copy_xattrs(src, dst, is_symlink)?;
    filetime::set_symlink_file_times(
        dst,
        FileTime::from_last_access_time(meta),
        FileTime::from_last_modification_time(meta),
    )
    .map_err(|e| SnapshotterError::io("set times", dst, e))
}

fn copy_xattrs(src: &Path, dst: &Path, is_symlink: bool) -> Result<()> {
    let names = match xattr::list(src) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTSUP) => return Ok(()),
        Err(e) => return Err(SnapshotterError::io("list xattrs", src, e)),
    };
    for name in names {
        let value = match xattr::get(src, &name) {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(e) => {
                return Err(SnapshotterError::Io {
                    op: "getxattr",
                    path: src.to_path_buf(),
                    source: io::Error::new(e.kind(), format!("{}: {e}", name.to_string_lossy())),
                });
            }
        };
        if let Err(e) = xattr::set(dst, &name, &value) {
            let errno = e.raw_os_error();
            let tolerated = errno == Some(nix::libc::ENOTSUP)
                || (errno == Some(nix::libc::EPERM)
                    && (name.to_string_lossy().starts_with("security.") || is_symlink));
            if tolerated {
                tracing::warn!(path = %dst.display(), xattr = %name.to_string_lossy(), error = %e, "xattr not copied");
                continue;
            }
            return Err(SnapshotterError::Io {
                op: "setxattr",
                path: dst.to_path_buf(),
                source: io::Error::new(e.kind(), format!("{}: {e}", name.to_string_lossy())),
            });
        }
    }
    Ok(())
}
