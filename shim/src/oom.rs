//! OOM-kill notifications for a container's cgroup, on the shim's runtime (no thread).
//!
//! - cgroup v1: an eventfd registered through `cgroup.event_control` for
//!   `memory.oom_control`; the kernel signals it on each OOM in the cgroup (and once more
//!   when the cgroup is removed, which ends the watch).
//! - cgroup v2: inotify on `memory.events`; a rise of its `oom_kill` count is an OOM kill.
//!
//! Either way the descriptor sits in tokio's reactor (`AsyncFd`); the watch is one small
//! task that ends with the cgroup, or when its handle is dropped.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

use crate::cgroups::{Cgroup, memory_events};
use crate::error::{Result, ShimError};

/// A running watch; dropping it stops the watch.
pub struct OomWatch(JoinHandle<()>);

impl Drop for OomWatch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Calls `on_oom` for each OOM kill in `cgroup`'s memory controller.
pub fn watch(cgroup: &Cgroup, on_oom: impl Fn() + Send + 'static) -> Result<OomWatch> {
    let dir = cgroup
        .memory_dir()
        .ok_or_else(|| ShimError::NotFound("memory cgroup".into()))?
        .to_path_buf();
    let task = match cgroup {
        Cgroup::V1(_) => {
            let fd = register_v1(&dir)?;
            tokio::spawn(watch_v1(fd, dir, on_oom))
        }
        Cgroup::V2(_) => {
            let fd = register_v2(&dir)?;
            tokio::spawn(watch_v2(fd, dir, on_oom))
        }
    };
    Ok(OomWatch(task))
}

fn register_v1(dir: &Path) -> Result<AsyncFd<EventFd>> {
    let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(ShimError::os("create an eventfd"))?;
    let control = dir.join("memory.oom_control");
    let oom = std::fs::File::open(&control)
        .map_err(ShimError::io(format!("open {}", control.display())))?;
    let event_control = dir.join("cgroup.event_control");
    let line = format!("{} {}", efd.as_raw_fd(), oom.as_raw_fd());
    std::fs::write(&event_control, line)
        .map_err(ShimError::io(format!("write {}", event_control.display())))?;
    // The kernel holds its own reference to memory.oom_control now; ours may close.
    drop(oom);
    crate::io::register(efd, "the OOM eventfd")
}

async fn watch_v1(fd: AsyncFd<EventFd>, dir: PathBuf, on_oom: impl Fn()) {
    loop {
        let Ok(mut ready) = fd.readable().await else {
            return;
        };
        match ready.try_io(|f| f.get_ref().read().map_err(std::io::Error::from)) {
            Ok(Ok(_count)) => {
                // The eventfd also fires when the cgroup goes away.
                if !dir.exists() {
                    return;
                }
                on_oom();
            }
            Ok(Err(e)) => {
                log::warn!("OOM eventfd of {}: {e}", dir.display());
                return;
            }
            Err(_would_block) => continue,
        }
    }
}

/// inotify's descriptor, for the reactor.
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

fn register_v2(dir: &Path) -> Result<AsyncFd<InotifyFd>> {
    let ino = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
        .map_err(ShimError::os("create an inotify instance"))?;
    let events = dir.join("memory.events");
    ino.add_watch(&events, AddWatchFlags::IN_MODIFY)
        .map_err(ShimError::os(format!("watch {}", events.display())))?;
    crate::io::register(InotifyFd(ino), "the inotify descriptor")
}

fn oom_kills(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("memory.events")).ok()?;
    Some(memory_events(&text).oom_kill)
}

async fn watch_v2(fd: AsyncFd<InotifyFd>, dir: PathBuf, on_oom: impl Fn()) {
    let mut seen = oom_kills(&dir).unwrap_or(0);
    loop {
        let Ok(mut ready) = fd.readable().await else {
            return;
        };
        match ready.try_io(|f| f.get_ref().0.read_events().map_err(std::io::Error::from)) {
            Ok(Ok(events)) => {
                if events
                    .iter()
                    .any(|e| e.mask.contains(AddWatchFlags::IN_IGNORED))
                {
                    return; // the file (the cgroup) is gone
                }
                let Some(now) = oom_kills(&dir) else { return };
                if now > seen {
                    on_oom();
                }
                seen = now;
            }
            Ok(Err(e)) => {
                log::warn!("inotify on {}: {e}", dir.display());
                return;
            }
            Err(_would_block) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The v2 watch on a plain file standing in for memory.events: only a rise of
    /// oom_kill counts.
    #[tokio::test]
    async fn v2_counts_oom_kill_rises() {
        let dir = tempfile::tempdir().expect("tempdir");
        let events = dir.path().join("memory.events");
        std::fs::write(&events, "oom 0\noom_kill 0\n").expect("write");
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let _watch = watch(&Cgroup::V2(dir.path().to_path_buf()), move || {
            h.fetch_add(1, Ordering::SeqCst);
        })
        .expect("watch");
        let settle = || tokio::time::sleep(std::time::Duration::from_millis(100));
        settle().await;
        std::fs::write(&events, "oom 1\noom_kill 0\n").expect("write");
        settle().await;
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        std::fs::write(&events, "oom 1\noom_kill 1\n").expect("write");
        settle().await;
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        std::fs::write(&events, "oom 2\noom_kill 3\n").expect("write");
        settle().await;
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }
}
