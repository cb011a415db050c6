//! The subreaper: one SIGCHLD handler reaps every child (runc invocations, container init
//! and exec processes re-parented to the shim) and hands each exit status to whoever waits
//! for that pid. An exit reaped before anyone asked for it is kept for a while, so waiting
//! for a pid learned from a pid file after the process died is not a race.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

use crate::error::{Result, ShimError};

/// How a process ended: its status as containerd reports it (128+signal for a signal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    pub status: u32,
    pub at: SystemTime,
}

/// Unclaimed exits older than this are dropped (they belong to runc's helper processes).
const UNCLAIMED_TTL: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Table {
    waiters: HashMap<i32, Vec<oneshot::Sender<Exit>>>,
    unclaimed: HashMap<i32, Exit>,
}

/// Dispatches reaped exit statuses by pid. Cheap to clone.
#[derive(Clone, Default)]
pub struct Reaper {
    table: Arc<Mutex<Table>>,
}

impl Reaper {
    /// Starts reaping on SIGCHLD. Call once, before any child is spawned.
    pub fn start() -> Result<Reaper> {
        let reaper = Reaper::default();
        let mut sigchld =
            signal(SignalKind::child()).map_err(ShimError::io("listen for SIGCHLD"))?;
        let r = reaper.clone();
        tokio::spawn(async move {
            // A child may have exited before the handler was installed.
            r.reap_all();
            while sigchld.recv().await.is_some() {
                r.reap_all();
            }
        });
        Ok(reaper)
    }

    /// Resolves with the exit of `pid`, also when it was reaped already.
    pub fn wait(&self, pid: i32) -> oneshot::Receiver<Exit> {
        let (tx, rx) = oneshot::channel();
        let mut t = self.lock();
        if let Some(exit) = t.unclaimed.remove(&pid) {
            let _ = tx.send(exit);
        } else {
            t.waiters.entry(pid).or_default().push(tx);
        }
        rx
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reap_all(&self) {
        loop {
            let (pid, status) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, code as u32),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, 128 + sig as u32),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("waitpid: {e}");
                    return;
                }
            };
            self.dispatch(pid.as_raw(), status, SystemTime::now());
        }
    }

    /// Hands the exit of `pid` to its waiters, or keeps it for a while.
    pub(crate) fn dispatch(&self, pid: i32, status: u32, at: SystemTime) {
        let exit = Exit { status, at };
        let mut t = self.lock();
        match t.waiters.remove(&pid) {
            Some(waiters) => {
                for w in waiters {
                    let _ = w.send(exit);
                }
            }
            None => {
                t.unclaimed
                    .retain(|_, e| at.duration_since(e.at).unwrap_or_default() < UNCLAIMED_TTL);
                t.unclaimed.insert(pid, exit);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exit_before_wait_is_kept() {
        let r = Reaper::default();
        let now = SystemTime::now();
        r.dispatch(4242, 3, now);
        let exit = r.wait(4242).await.expect("exit");
        assert_eq!(exit, Exit { status: 3, at: now });
        // Claimed once only.
        assert!(r.lock().unclaimed.is_empty());
    }

    #[tokio::test]
    async fn wait_then_exit() {
        let r = Reaper::default();
        let rx = r.wait(7);
        let rx2 = r.wait(7);
        r.dispatch(7, 137, SystemTime::now());
        assert_eq!(rx.await.expect("exit").status, 137);
        assert_eq!(rx2.await.expect("exit").status, 137);
    }
}
