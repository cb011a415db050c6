//! Path handling that never leaves a root directory: lexical cleaning of entry names and a
//! "securejoin"-like resolution that follows symlinks as if `root` were `/`.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::error::{Result, SnapshotterError};

/// Most symlinks followed while resolving one path (Linux's limit is 40).
const MAX_SYMLINKS: usize = 40;

/// Cleans a layer entry name into its components, relative to the layer root.
/// A leading `/` or `./` is dropped; `..` that would climb above the root is an error.
pub(crate) fn clean_entry_path(name: &Path, entry: &str) -> Result<Vec<OsString>> {
    let mut out: Vec<OsString> = Vec::new();
    for c in name.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if out.pop().is_none() {
                    return Err(SnapshotterError::PathEscape {
                        entry: entry.to_owned(),
                        reason: "the name climbs above the layer root with '..'".into(),
                    });
                }
            }
            Component::Normal(n) => out.push(n.to_owned()),
        }
    }
    Ok(out)
}

#[cfg(test)]
thread_local! {
    /// Path components looked up by this thread (tests count the work, not its time).
    pub(crate) static LOOKUPS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Resolves `components` (already cleaned) under `root`, following every symlink met on
/// the way as if `root` were the filesystem root: absolute link targets restart at `root`,
/// and a `..` that would climb above `root` is refused. Components that do not exist yet
/// are taken literally. The result is always `root` joined with plain names.
pub(crate) fn resolve_in_root(
    root: &Path,
    components: &[OsString],
    entry: &str,
) -> Result<PathBuf> {
    resolve_from(root, root.to_path_buf(), None, components, entry).map(|(p, _)| p)
}

/// [`resolve_in_root`] of `components` below `start`, a path already resolved inside
/// `root` (so a layer's entries in one directory cost one step each, not their depth).
/// `probe` is a short path naming the same directory as `start` (`/proc/self/fd/<n>` of a
/// handle on it): lookups go through it, so the kernel walks a few components instead of
/// the whole depth. The result's second part is the short path of the result, kept while
/// it can be (no symlink or `..` on the way).
pub(crate) fn resolve_from(
    root: &Path,
    start: PathBuf,
    mut probe: Option<PathBuf>,
    components: &[OsString],
    entry: &str,
) -> Result<(PathBuf, Option<PathBuf>)> {
    let mut pending: VecDeque<OsString> = components.iter().cloned().collect();
    let mut depth = start
        .strip_prefix(root)
        .map(|rel| rel.components().count())
        .unwrap_or(0);
    let mut resolved = start;
    let mut links = 0usize;
    let escape = |reason: String| SnapshotterError::PathEscape {
        entry: entry.to_owned(),
        reason,
    };
    while let Some(c) = pending.pop_front() {
        if c == OsStr::new("..") {
            if depth == 0 {
                return Err(escape(format!(
                    "a symlink on its path leads above the target directory (at {})",
                    resolved.display()
                )));
            }
            resolved.pop();
            depth -= 1;
            probe = None;
            continue;
        }
        if c == OsStr::new(".") || c.is_empty() {
            continue;
        }
        let candidate = resolved.join(&c);
        let probe_candidate = probe.as_ref().map(|p| p.join(&c));
        let looked_up = probe_candidate.as_ref().unwrap_or(&candidate);
        #[cfg(test)]
        LOOKUPS.with(|n| n.set(n.get() + 1));
        match fs::symlink_metadata(looked_up) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(escape(format!(
                        "too many levels of symlinks at {}",
                        candidate.display()
                    )));
                }
                let target = fs::read_link(looked_up)
                    .map_err(|e| SnapshotterError::io("readlink", &candidate, e))?;
                probe = None;
                if target.is_absolute() {
                    resolved = root.to_path_buf();
                    depth = 0;
                }
                let mut parts: Vec<OsString> = Vec::new();
                for tc in target.components() {
                    match tc {
                        Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                        Component::ParentDir => parts.push(OsString::from("..")),
                        Component::Normal(n) => parts.push(n.to_owned()),
                    }
                }
                for p in parts.into_iter().rev() {
                    pending.push_front(p);
                }
            }
            Ok(_) => {
                resolved = candidate;
                probe = probe_candidate;
                depth += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                resolved = candidate;
                probe = probe_candidate;
                depth += 1;
            }
            Err(e) => return Err(SnapshotterError::io("lstat", &candidate, e)),
        }
    }
    Ok((resolved, probe))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_names() {
        let c = clean_entry_path(Path::new("./a/b/../c/"), "x").expect("clean");
        assert_eq!(c, vec![OsString::from("a"), OsString::from("c")]);
        let c = clean_entry_path(Path::new("/etc/passwd"), "x").expect("clean");
        assert_eq!(c, vec![OsString::from("etc"), OsString::from("passwd")]);
        assert!(clean_entry_path(Path::new("a/../../b"), "x").is_err());
    }

    #[test]
    fn symlinks_stay_inside() {
        let root = tempfile::tempdir_in("/tmp").expect("tempdir");
        let r = root.path();
        fs::create_dir(r.join("usr")).expect("mkdir");
        std::os::unix::fs::symlink("/usr", r.join("lib")).expect("symlink");
        std::os::unix::fs::symlink("../../..", r.join("up")).expect("symlink");
        std::os::unix::fs::symlink("usr/../lib", r.join("loop")).expect("symlink");
        let p = resolve_in_root(r, &[OsString::from("lib"), OsString::from("x")], "e")
            .expect("resolve");
        assert_eq!(p, r.join("usr/x"));
        let p = resolve_in_root(r, &[OsString::from("loop")], "e").expect("resolve");
        assert_eq!(p, r.join("usr"));
        let err = resolve_in_root(r, &[OsString::from("up"), OsString::from("x")], "e/x");
        assert!(
            matches!(err, Err(SnapshotterError::PathEscape { ref entry, .. }) if entry == "e/x")
        );
    }
}
