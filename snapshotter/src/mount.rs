//! Mounting what snapshotters return: bind and overlay mounts, with overlay option strings
//! longer than the kernel's one-page limit handled by mounting from the lower dirs' common
//! parent with relative paths.

use std::path::{Path, PathBuf};

use crate::error::{Result, SnapshotterError};
use crate::snapshots::Mount;

/// Mounts `mounts` in order onto `target` (an existing directory).
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    let _ = (mounts, target);
    Err(SnapshotterError::NotImplemented("mount_all".into()))
}

/// Unmounts `target` (and anything mounted over it).
pub fn unmount(target: &Path) -> Result<()> {
    let _ = target;
    Err(SnapshotterError::NotImplemented("unmount".into()))
}

/// Mounts `mounts` on a fresh temporary directory, runs `f` on it and always unmounts and
/// removes the directory again.
pub fn with_temp_mount<T>(mounts: &[Mount], f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let _ = (mounts, f);
    Err(SnapshotterError::NotImplemented("with_temp_mount".into()))
}

/// Where a layer can be applied without mounting: the upper dir of a single writable overlay
/// mount (apply with overlay whiteouts: `true`), or the source of a single writable bind
/// mount (apply natively: `false`). `None` when the mounts need mounting first.
pub fn apply_target(mounts: &[Mount]) -> Option<(PathBuf, bool)> {
    let _ = mounts;
    None
}
