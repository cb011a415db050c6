//! Processes (a container's init and its execs): their state machine and exit, and the
//! rules for the order in which exits are announced (as containerd's runc shim keeps them):
//!
//! - a process's exit is announced only after the event of the start it ends (TaskCreate,
//!   TaskStart, TaskExecStarted): an exit reaped while a start is being announced waits
//!   for that start's [`ExitHold`] to drop;
//! - a container's init exit is announced only after the exits of all its execs that
//!   started ([`LiveExecs`]), and once the init is reaped no new exec starts.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use containerd_shim_protos::types::task::Status as WireStatus;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::{Result, ShimError};
use crate::io::{ProcessIo, StdioPaths};
use crate::reaper::Exit;

/// Where a process is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }

    pub fn can_start(self) -> bool {
        self == Status::Created
    }

    pub fn can_kill(self) -> bool {
        matches!(self, Status::Created | Status::Running | Status::Paused)
    }

    pub fn can_pause(self) -> bool {
        self == Status::Running
    }

    pub fn can_resume(self) -> bool {
        self == Status::Paused
    }

    pub fn can_delete(self) -> bool {
        matches!(self, Status::Created | Status::Stopped)
    }

    /// Whether a container in this state takes new exec processes.
    pub fn can_exec(self) -> bool {
        matches!(self, Status::Created | Status::Running)
    }

    pub fn wire(self) -> WireStatus {
        match self {
            Status::Created => WireStatus::CREATED,
            Status::Running => WireStatus::RUNNING,
            Status::Paused => WireStatus::PAUSED,
            Status::Stopped => WireStatus::STOPPED,
        }
    }
}

struct Inner {
    status: Status,
    pid: u32,
    io: ProcessIo,
    /// CloseIO came before the process's stdio existed (a client whose stdin ended
    /// between Exec and Start): closed as soon as it is set up.
    stdin_closed: bool,
}

/// One process: `exec_id` is empty for the container's init.
pub struct Process {
    pub container_id: String,
    pub exec_id: String,
    pub stdio: StdioPaths,
    /// The exec's OCI process JSON (empty for init).
    pub spec: Vec<u8>,
    inner: Mutex<Inner>,
    exit: watch::Sender<Option<Exit>>,
    /// How many [`ExitHold`]s of this process are alive.
    holds: watch::Sender<usize>,
}

/// While alive, the exit of its process is not announced: taken before a start (runc
/// create, start or exec) and dropped once that start's event is published — or the
/// start failed, so that the exit is not held forever.
pub struct ExitHold(watch::Sender<usize>);

impl Drop for ExitHold {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Process {
    pub fn new(container_id: &str, exec_id: &str, stdio: StdioPaths, spec: Vec<u8>) -> Process {
        Process {
            container_id: container_id.to_string(),
            exec_id: exec_id.to_string(),
            stdio,
            spec,
            inner: Mutex::new(Inner {
                status: Status::Created,
                pid: 0,
                io: ProcessIo::default(),
                stdin_closed: false,
            }),
            exit: watch::channel(None).0,
            holds: watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// "process c1" or "exec e1 of c1", for messages.
    pub fn describe(&self) -> String {
        if self.exec_id.is_empty() {
            format!("container {}", self.container_id)
        } else {
            format!("exec {} of {}", self.exec_id, self.container_id)
        }
    }

    pub fn status(&self) -> Status {
        self.lock().status
    }

    pub fn pid(&self) -> u32 {
        self.lock().pid
    }

    pub fn exited(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    /// Fails with FailedPrecondition unless `allowed(status)`.
    pub fn check(&self, op: &'static str, allowed: fn(Status) -> bool) -> Result<Status> {
        let status = self.status();
        if allowed(status) {
            Ok(status)
        } else {
            Err(ShimError::FailedPrecondition {
                op,
                what: self.describe(),
                state: status.name(),
            })
        }
    }

    pub fn set_created(&self, pid: u32, io: ProcessIo) {
        let mut i = self.lock();
        i.pid = pid;
        i.io = io;
        if i.stdin_closed {
            i.io.close_stdin();
        }
    }

    /// Moves to `to` unless the process stopped meanwhile.
    pub fn set_status(&self, to: Status) {
        let mut i = self.lock();
        if i.status != Status::Stopped {
            i.status = to;
        }
    }

    /// Reopens the process's CRI log files; false when it writes none.
    pub fn reopen_logs(&self) -> crate::error::Result<bool> {
        // The files are opened with the process's lock released.
        let logs = self.lock().io.cri_logs();
        for l in &logs {
            l.reopen()?;
        }
        Ok(!logs.is_empty())
    }

    pub fn close_stdin(&self) {
        let mut i = self.lock();
        i.stdin_closed = true;
        i.io.close_stdin();
    }

    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        self.lock().io.resize(width, height)
    }

    /// Holds the announcement of this process's exit until the returned guard drops.
    pub fn hold_exit(&self) -> ExitHold {
        self.holds.send_modify(|n| *n += 1);
        ExitHold(self.holds.clone())
    }

    /// Resolves once no [`ExitHold`] of this process is alive.
    pub async fn exit_released(&self) {
        // The sender lives as long as `self`: waiting cannot fail.
        let _ = self.holds.subscribe().wait_for(|n| *n == 0).await;
    }

    /// Records the exit once the output has drained (bounded).
    pub async fn set_exited(&self, exit: Exit) {
        let mut io = std::mem::take(&mut self.lock().io);
        io.drain(Duration::from_secs(2)).await;
        self.lock().status = Status::Stopped;
        self.exit.send_replace(Some(exit));
    }

    /// Resolves when the process has exited.
    pub async fn wait(&self) -> Exit {
        let mut rx = self.exit.subscribe();
        loop {
            if let Some(exit) = *rx.borrow_and_update() {
                return exit;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as `self`; unreachable in practice.
                std::future::pending::<()>().await;
            }
        }
    }
}

#[derive(Clone, Copy, Default)]
struct ExecCount {
    /// Execs whose start began and whose exit was not announced yet.
    live: usize,
    /// The init was reaped: no exec starts any more.
    closed: bool,
}

/// A container's execs that started and whose exits were not announced yet: its init's
/// exit is announced after theirs. Cheap to clone (all clones count the same execs).
#[derive(Clone)]
pub struct LiveExecs(watch::Sender<ExecCount>);

/// One exec counted by [`LiveExecs`], from its start until its exit was announced (or its
/// start failed): dropping it ends the count.
pub struct LiveExec(watch::Sender<ExecCount>);

impl Drop for LiveExec {
    fn drop(&mut self) {
        self.0.send_modify(|c| c.live = c.live.saturating_sub(1));
    }
}

impl Default for LiveExecs {
    fn default() -> Self {
        LiveExecs(watch::channel(ExecCount::default()).0)
    }
}

impl LiveExecs {
    /// Counts an exec that is about to start in `container`; fails with FailedPrecondition
    /// once the container's init was reaped.
    pub fn begin(&self, container: &str) -> Result<LiveExec> {
        let mut closed = false;
        self.0.send_modify(|c| {
            closed = c.closed;
            if !c.closed {
                c.live += 1;
            }
        });
        if closed {
            return Err(ShimError::FailedPrecondition {
                op: "exec in",
                what: format!("container {container}"),
                state: Status::Stopped.name(),
            });
        }
        Ok(LiveExec(self.0.clone()))
    }

    /// The init was reaped: no exec starts from now on.
    pub fn close(&self) {
        self.0.send_modify(|c| c.closed = true);
    }

    /// Resolves once the init was reaped ([`LiveExecs::close`]).
    pub async fn init_reaped(&self) {
        // `self` holds a sender: waiting cannot fail.
        let _ = self.0.subscribe().wait_for(|c| c.closed).await;
    }

    /// Resolves once every exec counted has had its exit announced (or failed to start).
    pub async fn none_live(&self) {
        // `self` holds a sender: waiting cannot fail.
        let _ = self.0.subscribe().wait_for(|c| c.live == 0).await;
    }
}

/// A container's init exit as saved in `<bundle>/init.exit`, so that `shim delete` (run
/// when the shim is gone) reports the real status rather than a guess.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedExit {
    pub pid: u32,
    pub status: u32,
    pub exited_at: SystemTime,
}

impl SavedExit {
    pub const FILE: &'static str = "init.exit";

    /// Writes the file atomically (temp + fsync + rename).
    pub fn save(&self, bundle: &Path) -> Result<()> {
        let data = serde_json::to_vec(self).map_err(|e| ShimError::Io {
            context: format!("encode {}", bundle.join(Self::FILE).display()),
            source: std::io::Error::other(e),
        })?;
        crate::runc::write_atomic(&bundle.join(Self::FILE), &data)
    }

    pub fn load(bundle: &Path) -> Option<SavedExit> {
        let data = std::fs::read(bundle.join(Self::FILE)).ok()?;
        serde_json::from_slice(&data).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_checks() {
        let p = Process::new("c1", "", StdioPaths::default(), Vec::new());
        assert!(p.check("start", Status::can_start).is_ok());
        let e = p
            .check("pause", Status::can_pause)
            .expect_err("created cannot pause");
        assert_eq!(e.to_string(), "cannot pause container c1 in state created");
        p.set_status(Status::Running);
        assert!(p.check("pause", Status::can_pause).is_ok());
        assert!(p.check("delete", Status::can_delete).is_err());
    }

    #[tokio::test]
    async fn exit_is_sticky() {
        let p = Process::new("c1", "e1", StdioPaths::default(), Vec::new());
        p.set_status(Status::Running);
        let exit = Exit {
            status: 3,
            at: std::time::SystemTime::now(),
        };
        p.set_exited(exit).await;
        p.set_status(Status::Running);
        assert_eq!(p.status(), Status::Stopped);
        assert_eq!(p.wait().await, exit);
    }

    /// Whether `f` is ready when polled once now.
    fn ready<F: std::future::Future>(f: std::pin::Pin<&mut F>) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        f.poll(&mut cx).is_ready()
    }

    #[tokio::test]
    async fn exit_held_until_every_hold_drops() {
        let p = Process::new("c1", "", StdioPaths::default(), Vec::new());
        assert!(ready(std::pin::pin!(p.exit_released())));
        let create = p.hold_exit();
        let start = p.hold_exit();
        let mut released = std::pin::pin!(p.exit_released());
        assert!(!ready(released.as_mut()));
        drop(create);
        assert!(!ready(released.as_mut()));
        drop(start);
        assert!(ready(released.as_mut()));
    }

    #[tokio::test]
    async fn init_waits_for_live_execs_and_closes_the_door() {
        let execs = LiveExecs::default();
        let e1 = execs.begin("c1").expect("exec e1");
        let e2 = execs.clone().begin("c1").expect("exec e2");
        execs.close();
        let e = execs
            .begin("c1")
            .err()
            .expect("exec after the init was reaped");
        assert_eq!(
            e.to_string(),
            "cannot exec in container c1 in state stopped"
        );
        let mut settled = std::pin::pin!(execs.none_live());
        assert!(!ready(settled.as_mut()));
        drop(e2);
        assert!(!ready(settled.as_mut()));
        drop(e1);
        assert!(ready(settled.as_mut()));
    }

    #[test]
    fn saved_exit_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(SavedExit::load(dir.path()), None);
        let e = SavedExit {
            pid: 42,
            status: 3,
            exited_at: SystemTime::now(),
        };
        e.save(dir.path()).expect("save");
        assert_eq!(SavedExit::load(dir.path()), Some(e));
    }
}
