//! The per-container shim, `containerd-shim-berth-v2`: the shim v2 binary contract and the
//! `containerd.task.v2.Task` ttrpc service over the OCI runtime CLI (runc by default).
//!
//! - [`shim`]: `start` / `delete` / serve, as the shim crate drives them;
//! - [`service`]: the Task service;
//! - [`runc`]: the OCI runtime CLI wrapper;
//! - [`io`]: stdio (FIFOs, `file://`, `binary://`, null, terminals);
//! - [`cgroups`]: the container's cgroup, its metrics;
//! - [`events`]: the reliable, ordered event queue to the daemon;
//! - [`oom`]: OOM-kill events from the container's memory cgroup;
//! - [`nsexec`]: an exec's process started without runc, when nothing of it needs runc;
//! - [`reaper`]: the SIGCHLD subreaper dispatching exit statuses by pid;
//! - [`process`]: process states and their checks;
//! - [`crilog`]: the CRI log record format (`file://...?format=cri`);
//! - [`error`]: the one error type and its ttrpc codes.
//!
//! One current-thread tokio runtime runs everything: no thread per container. Work that
//! blocks in the kernel (fsync, mount, unmount) goes to the runtime's blocking pool, whose
//! threads end once idle (tokio's default: after 10 s).

pub mod cgroups;
pub mod crilog;
pub mod error;
pub mod events;
pub mod io;
pub mod logger;
pub mod nsexec;
pub mod oom;
pub mod process;
pub mod reaper;
pub mod runc;
pub mod service;
pub mod shim;

pub use error::{Result, ShimError};
