//! Network namespaces that outlive any process, as `ip netns add` makes them: an empty file
//! with the namespace bind-mounted over it. A container (or a whole pod) joins one by path;
//! CNI plugins configure it by path; removing it unmounts and unlinks the file.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

use crate::error::{Error, Result};
use crate::identifiers;

/// Creates the network namespace `name` under `dir` and returns its path. Blocking: run it
/// on the blocking pool. The namespace is made on a thread of its own, which ends with the
/// call, so no thread of the daemon is ever left in it.
pub fn create(dir: &Path, name: &str) -> Result<PathBuf> {
    identifiers::validate(name).map_err(|e| e.context("network namespace name"))?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    let path = dir.join(name);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                Error::already_exists(format!("network namespace {}", path.display()))
            }
            _ => Error::io("create network namespace file", &path, e),
        })?;
    let target = path.clone();
    let made = std::thread::spawn(move || -> Result<()> {
        unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error::Internal(format!("unshare the network namespace: {e}")))?;
        let tid = nix::unistd::gettid();
        let own = format!("/proc/self/task/{tid}/ns/net");
        mount(
            Some(own.as_str()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| {
            Error::Internal(format!(
                "bind-mount network namespace at {}: {e}",
                target.display()
            ))
        })
    })
    .join()
    .map_err(|_| Error::Internal("network namespace thread panicked".into()))
    .and_then(|r| r);
    if let Err(e) = made {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

/// Runs `f` inside the network namespace at `path` and returns what it gives: a socket
/// made there stays there. Blocking: run it on the blocking pool. As with [`create`], `f`
/// runs on a thread of its own that ends with it, so no thread of the daemon is ever left
/// in the namespace.
pub fn run_in<T: Send>(
    path: &Path,
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    let ns = std::fs::File::open(path)?;
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            f()
        })
        .join()
        .map_err(|_| std::io::Error::other("network namespace thread panicked"))?
    })
}

/// Removes the network namespace at `path`: unmounts and unlinks it. One already gone is
/// no error (a removal after a crash may find half of it). Blocking.
pub fn remove(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            return Err(Error::Internal(format!(
                "unmount network namespace {}: {e}",
                path.display()
            )));
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove network namespace file", path, e)),
    }
}

/// Whether `path` holds a network namespace (a bind mount of one, not a bare file).
pub fn exists(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(file), Ok(parent)) = (
        std::fs::metadata(path),
        std::fs::metadata(path.parent().unwrap_or(Path::new("/"))),
    ) else {
        return false;
    };
    // A bind-mounted namespace lives on the nsfs filesystem, not on the directory's.
    file.dev() != parent.dev()
}

/// Deletes the host's network interface `name` (a network's bridge); one that does not exist
/// is no error. Blocking: run it on the blocking pool.
pub fn delete_link(name: &str) -> Result<()> {
    if !Path::new("/sys/class/net").join(name).exists() {
        return Ok(());
    }
    let out = std::process::Command::new("ip")
        .args(["link", "delete", name])
        .output()
        .map_err(|e| Error::io("run ip link delete for", name, e))?;
    if out.status.success() || !Path::new("/sys/class/net").join(name).exists() {
        Ok(())
    } else {
        Err(Error::Internal(format!(
            "delete interface {name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Waits until none of the host's interfaces `names` exists, polling for up to `limit`:
/// the kernel takes a namespace's veth pairs away a moment after its last user is gone.
/// Returns the ones still there. Blocking: run it on the blocking pool.
pub fn wait_links_gone(names: &[String], limit: std::time::Duration) -> Vec<String> {
    let exists = |n: &String| Path::new("/sys/class/net").join(n).exists();
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left: Vec<String> = names.iter().filter(|n| exists(n)).cloned().collect();
        if left.is_empty() || std::time::Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}
