//! A container's root filesystem seen from the host: `/proc/<pid>/root` of its running
//! task, else its snapshot mounted for a moment; paths inside it resolved as the container
//! would (symlinks followed within the root, never out of it); its users looked up.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use berth_proto::containerd::services::containers::v1::Container;

use super::{Client, snapshots, tasks};

/// Runs `f` on the container's root: `/proc/<pid>/root` of its running task, else its
/// snapshot mounted on a temporary directory.
pub async fn with_root<T: Send + 'static>(
    c: &Client,
    ct: &Container,
    f: impl FnOnce(&Path) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    if let Ok(t) = tasks::get(c, &ct.id).await
        && tasks::is_live(&t)
        && t.pid != 0
    {
        let root = PathBuf::from(format!("/proc/{}/root", t.pid));
        return tokio::task::spawn_blocking(move || f(&root)).await?;
    }
    if ct.snapshot_key.is_empty() {
        anyhow::bail!("container {} has no running task and no snapshot", ct.id);
    }
    let mounts = snapshots::to_local(&snapshots::rootfs_mounts(c, ct).await?);
    tokio::task::spawn_blocking(move || {
        let mut out = None;
        berth_snapshotter::mount::with_temp_mount(&mounts, |dir| {
            out = Some(f(dir));
            Ok(())
        })?;
        out.unwrap_or_else(|| Err(anyhow::anyhow!("mount of the container's rootfs failed")))
    })
    .await?
}

/// Resolves `path` (as seen inside the container) to a host path under `root`, following
/// every symlink within `root`: `..` never climbs above it, an absolute link target starts
/// again at it. Components that do not exist are kept as they are.
pub fn resolve_in_root(root: &Path, path: &Path) -> io::Result<PathBuf> {
    let mut resolved = PathBuf::new();
    let mut pending: Vec<OsString> = components(path);
    pending.reverse();
    let mut links = 0;
    while let Some(c) = pending.pop() {
        if c == ".." {
            resolved.pop();
            continue;
        }
        let candidate = root.join(&resolved).join(&c);
        match fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    return Err(io::Error::other(format!(
                        "{}: too many levels of symbolic links",
                        path.display()
                    )));
                }
                let target = fs::read_link(&candidate)?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                let mut more = components(&target);
                more.reverse();
                pending.extend(more);
            }
            _ => resolved.push(c),
        }
    }
    Ok(root.join(resolved))
}

/// Like [`resolve_in_root`] for the parent of `path`, the last component left as it is
/// (not followed when it is a symlink).
pub fn resolve_parent_in_root(root: &Path, path: &Path) -> io::Result<PathBuf> {
    let mut comps = components(path);
    match comps.pop() {
        Some(last) if last != ".." => {
            let parent: PathBuf = comps.iter().collect();
            Ok(resolve_in_root(root, &parent)?.join(last))
        }
        _ => resolve_in_root(root, path),
    }
}

/// The normal and `..` components of a path (`.` and the root dropped).
pub fn components(p: &Path) -> Vec<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// The user of a process spec for `user` (`name|uid[:group|gid]`), names looked up in the
/// container's /etc/passwd and /etc/group under `root` (the task's /proc/<pid>/root).
pub fn resolve_user(root: &Path, user: &str) -> anyhow::Result<serde_json::Value> {
    let read = |p: &str| -> String {
        resolve_in_root(root, Path::new(p))
            .and_then(std::fs::read_to_string)
            .unwrap_or_default()
    };
    let passwd = read("/etc/passwd");
    let group = read("/etc/group");
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    let pw = entries
        .iter()
        .find(|f| f[0] == u)
        .or_else(|| entries.iter().find(|f| f[2] == u));
    let (uid, mut gid, name) = match (pw, u.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse::<u32>().unwrap_or(0),
            f[3].parse::<u32>().unwrap_or(0),
            Some(f[0].to_string()),
        ),
        (None, Ok(uid)) => (uid, 0, None),
        (None, Err(_)) => {
            anyhow::bail!("unable to find user {u}: no matching entries in passwd file")
        }
    };
    let groups: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect();
    if let Some(g) = g {
        gid = match groups.iter().find(|f| f[0] == g) {
            Some(f) => f[2].parse().unwrap_or(0),
            None => g.parse().map_err(|_| {
                anyhow::anyhow!("unable to find group {g}: no matching entries in group file")
            })?,
        };
    }
    let mut additional: Vec<u32> = Vec::new();
    if let (Some(name), None) = (name, g) {
        for f in &groups {
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                let id = f[2].parse().unwrap_or(0);
                if id != gid && !additional.contains(&id) {
                    additional.push(id);
                }
            }
        }
    }
    let mut v = serde_json::json!({ "uid": uid, "gid": gid });
    if !additional.is_empty() {
        v["additionalGids"] = serde_json::json!(additional);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/passwd"), "x").unwrap();
        std::os::unix::fs::symlink("/", root.join("up")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", root.join("etc/rel")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("pw")).unwrap();
        assert_eq!(
            resolve_in_root(root, Path::new("/up/etc/passwd")).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/etc/rel/passwd")).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/../../pw")).unwrap(),
            root.join("etc/passwd")
        );
        // The last component is not followed by the parent-only form.
        assert_eq!(
            resolve_parent_in_root(root, Path::new("/up/pw")).unwrap(),
            root.join("pw")
        );
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert!(resolve_in_root(root, Path::new("/loop/x")).is_err());
    }
}
