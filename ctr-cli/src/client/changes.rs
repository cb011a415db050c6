//! What a container changed in its filesystem, as Docker's `diff` lists it: read from its
//! snapshot's layers (overlayfs: the upper directory against the lower ones). A path in the
//! upper directory is `A`dded when no lower layer has it, else `C`hanged; an overlayfs
//! whiteout (a 0/0 character device) is a `D`eleted path. Directories holding a change
//! are changed themselves, as overlayfs copies them up. What the runtime makes for every
//! container (the mount points of `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`, and
//! `/dev`, `/proc`, `/sys`, `/run`) is not the container's change, and is left out as
//! Docker's init layer leaves it out.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_proto::containerd::services::containers::v1::Container;

use super::{Client, snapshots};

/// One change: `A`, `C` or `D`, and the path inside the container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    pub path: String,
    pub kind: char,
}

/// The changes of container `ct`, by path.
pub async fn of_container(c: &Client, ct: &Container) -> anyhow::Result<Vec<Change>> {
    let mounts = snapshots::rootfs_mounts(c, ct).await?;
    let Some(m) = mounts.first() else {
        anyhow::bail!("container {} has no filesystem of its own", ct.id);
    };
    let (upper, lowers) = match m.r#type.as_str() {
        "overlay" => {
            let opt = |key: &str| {
                m.options
                    .iter()
                    .find_map(|o| o.strip_prefix(key))
                    .map(str::to_string)
            };
            let upper = opt("upperdir=").ok_or_else(|| {
                anyhow::anyhow!(
                    "container {}: its overlay mount has no upper directory",
                    ct.id
                )
            })?;
            let lowers: Vec<PathBuf> = opt("lowerdir=")
                .map(|l| l.split(':').map(PathBuf::from).collect())
                .unwrap_or_default();
            (PathBuf::from(upper), lowers)
        }
        // A bind mount of one directory: a container with no image layers below.
        "bind" | "rbind" => (PathBuf::from(&m.source), Vec::new()),
        other => anyhow::bail!(
            "container {}: cannot list the changes of a {other} mount",
            ct.id
        ),
    };
    tokio::task::spawn_blocking(move || walk(&upper, &lowers)).await?
}

/// The changes in `upper` against `lowers`.
pub fn walk(upper: &Path, lowers: &[PathBuf]) -> anyhow::Result<Vec<Change>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = upper.join(&rel);
        let entries =
            std::fs::read_dir(&dir).map_err(|e| anyhow::anyhow!("read {}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let rel = rel.join(entry.file_name());
            let meta = entry.metadata()?;
            let path = format!("/{}", rel.display());
            let whiteout = meta.file_type().is_char_device() && meta.rdev() == 0;
            let kind = if whiteout {
                'D'
            } else if lowers
                .iter()
                .any(|l| l.join(&rel).symlink_metadata().is_ok())
            {
                'C'
            } else {
                'A'
            };
            out.push(Change { path, kind });
            if meta.is_dir() {
                stack.push(rel);
            }
        }
    }
    out.sort();
    Ok(without_runtime_files(out))
}

/// What the runtime makes in every container's root (see the module docs).
const RUNTIME_FILES: &[&str] = &[
    "/etc/hostname",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/mtab",
    "/dev",
    "/proc",
    "/sys",
    // berth mounts a tmpfs there, as containerd's default spec does.
    "/run",
    "/.dockerenv",
];

/// `changes` less the runtime's files (and what lies under them), and less the directories
/// that were only copied up for them.
fn without_runtime_files(changes: Vec<Change>) -> Vec<Change> {
    let hidden = |p: &str| {
        RUNTIME_FILES
            .iter()
            .any(|h| p == *h || p.strip_prefix(h).is_some_and(|r| r.starts_with('/')))
    };
    let visible: Vec<Change> = changes.into_iter().filter(|c| !hidden(&c.path)).collect();
    let has_visible_below = |dir: &str| {
        visible
            .iter()
            .any(|c| c.path.strip_prefix(dir).is_some_and(|r| r.starts_with('/')))
    };
    let runtime_parent = |dir: &str| {
        RUNTIME_FILES
            .iter()
            .any(|h| h.strip_prefix(dir).is_some_and(|r| r.starts_with('/')))
    };
    visible
        .iter()
        .filter(|c| c.kind != 'C' || !runtime_parent(&c.path) || has_visible_below(&c.path))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_changed_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (upper, lower) = (dir.path().join("upper"), dir.path().join("lower"));
        for d in [lower.join("etc"), lower.join("bin"), upper.join("etc/new")] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(lower.join("etc/passwd"), "root").unwrap();
        std::fs::write(upper.join("etc/passwd"), "root\nx").unwrap();
        std::fs::write(upper.join("etc/new/file"), "x").unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            upper.join("bin"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .unwrap();
        let got: Vec<String> = walk(&upper, &[lower])
            .unwrap()
            .into_iter()
            .map(|c| format!("{} {}", c.kind, c.path))
            .collect();
        assert_eq!(
            got,
            [
                "D /bin",
                "C /etc",
                "A /etc/new",
                "A /etc/new/file",
                "C /etc/passwd"
            ]
        );
    }

    #[test]
    fn the_runtimes_mount_points_are_not_changes() {
        let ch = |kind, path: &str| Change {
            kind,
            path: path.to_string(),
        };
        let got = without_runtime_files(vec![
            ch('A', "/dev"),
            ch('A', "/dev/pts"),
            ch('C', "/etc"),
            ch('A', "/etc/hosts"),
            ch('A', "/etc/resolv.conf"),
            ch('C', "/var"),
        ]);
        assert_eq!(got, [ch('C', "/var")]);
        let got = without_runtime_files(vec![
            ch('C', "/etc"),
            ch('A', "/etc/hosts"),
            ch('A', "/etc/x"),
        ]);
        assert_eq!(got, [ch('C', "/etc"), ch('A', "/etc/x")]);
    }
}
