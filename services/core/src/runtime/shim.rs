//! The one client of a shim's ttrpc task service (`containerd.task.v2.Task`): every call a
//! daemon makes to a shim goes through [`Shim`], and this is the only place where the
//! core's process types and the shim's task.v2 (rust-protobuf) messages are mapped into
//! each other. A shim may serve several tasks (a pod's sandbox and its containers): every
//! call names its task.

use std::sync::Arc;
use std::time::SystemTime;

use berth_proto::ttrpc::api;
use berth_proto::ttrpc::protobuf::MessageField;
use berth_proto::ttrpc::protobuf::well_known_types::any::Any as PbAny;
use berth_proto::ttrpc::protobuf::well_known_types::timestamp::Timestamp as PbTimestamp;
use berth_proto::ttrpc::shim_async::{Client, TaskClient};
use berth_proto::ttrpc::ttrpc;
use berth_snapshotter::Mount;

use super::LogForwarder;
use crate::error::{Error, Result};
use crate::types::AnyValue;

/// The gRPC metadata key a shim reads the namespace from.
const NAMESPACE_KEY: &str = "containerd-namespace";

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub pid: u32,
    pub status: u32,
    pub exited_at: Option<SystemTime>,
}

/// Where a process is in its life, numbered as containerd numbers it on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessStatus {
    Unknown,
    Created,
    Running,
    Stopped,
    Paused,
    Pausing,
}

impl ProcessStatus {
    /// The status of containerd's wire number (task.v2 and types.v1 agree).
    pub fn from_code(code: i32) -> ProcessStatus {
        match code {
            1 => ProcessStatus::Created,
            2 => ProcessStatus::Running,
            3 => ProcessStatus::Stopped,
            4 => ProcessStatus::Paused,
            5 => ProcessStatus::Pausing,
            _ => ProcessStatus::Unknown,
        }
    }

    /// containerd's wire number of this status.
    pub fn code(self) -> i32 {
        match self {
            ProcessStatus::Unknown => 0,
            ProcessStatus::Created => 1,
            ProcessStatus::Running => 2,
            ProcessStatus::Stopped => 3,
            ProcessStatus::Paused => 4,
            ProcessStatus::Pausing => 5,
        }
    }

    /// The name filters and messages use, as containerd spells it.
    pub fn name(self) -> &'static str {
        match self {
            ProcessStatus::Unknown => "unknown",
            ProcessStatus::Created => "created",
            ProcessStatus::Running => "running",
            ProcessStatus::Stopped => "stopped",
            ProcessStatus::Paused => "paused",
            ProcessStatus::Pausing => "pausing",
        }
    }
}

/// A time as the shim sent it, kept exact: seconds and nanoseconds since the epoch
/// (seconds may be negative: Go's zero time, from shims written in Go).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShimTime {
    pub seconds: i64,
    pub nanos: i32,
}

/// A process as its shim reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessState {
    /// The exec id; empty for the task's init process.
    pub exec_id: String,
    pub pid: u32,
    pub status: ProcessStatus,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
    pub exit_status: u32,
    pub exited_at: Option<ShimTime>,
}

/// A process's standard streams (FIFO paths or URIs) and whether it has a terminal.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stdio {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// A new exec process: its streams and its OCI process spec.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub stdio: Stdio,
    pub spec: Option<AnyValue>,
}

/// One process of a task (ListPids): its pid and what the shim says of it.
#[derive(Debug, Clone, PartialEq)]
pub struct PidInfo {
    pub pid: u32,
    pub info: Option<AnyValue>,
}

/// What a shim Create needs.
#[derive(Debug, Clone)]
pub struct ShimTask {
    pub id: String,
    pub bundle: String,
    pub rootfs: Vec<Mount>,
    pub stdio: Stdio,
    /// The runtime options, already in the shim's encoding.
    pub options: Option<PbAny>,
}

/// A connection to a shim's task service.
#[derive(Clone)]
pub struct Shim {
    client: TaskClient,
    namespace: String,
    /// The task this connection was made for (for messages).
    id: String,
    pub address: String,
    log: Option<Arc<LogForwarder>>,
}

/// Maps a shim's ttrpc error to the daemon's error class, keeping its message.
fn shim_error(id: &str, what: &str, e: ttrpc::Error) -> Error {
    use ttrpc::Code;
    match e {
        ttrpc::Error::RpcStatus(s) => {
            let msg = s.message().to_string();
            let strip = |suffix: &str| msg.strip_suffix(suffix).unwrap_or(&msg).to_string();
            match s.code() {
                Code::NOT_FOUND => Error::NotFound(strip(": not found")),
                Code::ALREADY_EXISTS => Error::AlreadyExists(strip(": already exists")),
                Code::INVALID_ARGUMENT => Error::InvalidArgument(strip(": invalid argument")),
                Code::FAILED_PRECONDITION => {
                    Error::FailedPrecondition(strip(": failed precondition"))
                }
                Code::UNAVAILABLE => Error::Unavailable(strip(": unavailable")),
                Code::UNIMPLEMENTED => Error::NotImplemented(strip(": not implemented")),
                _ => Error::Internal(format!("{what} of task {id}: {msg}")),
            }
        }
        other => Error::Unavailable(format!("{what} of task {id}: shim: {other}")),
    }
}

/// The raw task.v2 calls, private to this module: the typed methods below wrap them.
macro_rules! shim_calls {
    ($($name:ident($req:ty) -> $resp:ty;)*) => {
        mod raw {
            use super::*;
            impl Shim {
                $(
                    pub(super) async fn $name(&self, req: $req) -> Result<$resp> {
                        self.client
                            .$name(self.context(), &req)
                            .await
                            .map_err(|e| shim_error(&self.id, stringify!($name), e))
                    }
                )*
            }
        }
    };
}

shim_calls! {
    state(api::StateRequest) -> api::StateResponse;
    create(api::CreateTaskRequest) -> api::CreateTaskResponse;
    start(api::StartRequest) -> api::StartResponse;
    delete(api::DeleteRequest) -> api::DeleteResponse;
    pids(api::PidsRequest) -> api::PidsResponse;
    pause(api::PauseRequest) -> api::Empty;
    resume(api::ResumeRequest) -> api::Empty;
    kill(api::KillRequest) -> api::Empty;
    exec(api::ExecProcessRequest) -> api::Empty;
    resize_pty(api::ResizePtyRequest) -> api::Empty;
    close_io(api::CloseIORequest) -> api::Empty;
    update(api::UpdateTaskRequest) -> api::Empty;
    wait(api::WaitRequest) -> api::WaitResponse;
    stats(api::StatsRequest) -> api::StatsResponse;
    shutdown(api::ShutdownRequest) -> api::Empty;
}

fn any_to_pb(a: AnyValue) -> PbAny {
    PbAny {
        type_url: a.type_url,
        value: a.value,
        ..Default::default()
    }
}

fn any_from_pb(a: &PbAny) -> AnyValue {
    AnyValue {
        type_url: a.type_url.clone(),
        value: a.value.clone(),
    }
}

fn timestamp_of(t: &MessageField<PbTimestamp>) -> Option<ShimTime> {
    t.as_ref().map(|t| ShimTime {
        seconds: t.seconds,
        nanos: t.nanos,
    })
}

/// The exit a shim's Delete (or `shim delete`) reports.
pub(super) fn exit_of(r: &api::DeleteResponse) -> Exit {
    Exit {
        pid: r.pid,
        status: r.exit_status,
        exited_at: r.exited_at.as_ref().and_then(|t| {
            let nanos = u32::try_from(t.nanos).ok()?;
            let secs = u64::try_from(t.seconds).ok()?;
            Some(std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos))
        }),
    }
}

/// The typed task operations: each names its task (`id`) and, where a process is meant,
/// its exec id (empty for the task's init process).
impl Shim {
    pub async fn create_task(&self, t: ShimTask) -> Result<u32> {
        let req = api::CreateTaskRequest {
            id: t.id,
            bundle: t.bundle,
            rootfs: t
                .rootfs
                .iter()
                .map(|m| api::Mount {
                    type_: m.kind.clone(),
                    source: m.source.clone(),
                    options: m.options.clone(),
                    ..Default::default()
                })
                .collect(),
            terminal: t.stdio.terminal,
            stdin: t.stdio.stdin,
            stdout: t.stdio.stdout,
            stderr: t.stdio.stderr,
            options: t.options.into(),
            ..Default::default()
        };
        Ok(self.create(req).await?.pid)
    }

    pub async fn start_process(&self, id: &str, exec_id: &str) -> Result<u32> {
        let req = api::StartRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        Ok(self.start(req).await?.pid)
    }

    pub async fn process_state(&self, id: &str, exec_id: &str) -> Result<ProcessState> {
        let req = api::StateRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        let s = self.state(req).await?;
        Ok(ProcessState {
            exec_id: s.exec_id,
            pid: s.pid,
            status: ProcessStatus::from_code(s.status.value()),
            stdin: s.stdin,
            stdout: s.stdout,
            stderr: s.stderr,
            terminal: s.terminal,
            exit_status: s.exit_status,
            exited_at: timestamp_of(&s.exited_at),
        })
    }

    pub async fn delete_process(&self, id: &str, exec_id: &str) -> Result<Exit> {
        let req = api::DeleteRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        Ok(exit_of(&self.delete(req).await?))
    }

    pub async fn kill_process(
        &self,
        id: &str,
        exec_id: &str,
        signal: u32,
        all: bool,
    ) -> Result<()> {
        let req = api::KillRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            signal,
            all,
            ..Default::default()
        };
        self.kill(req).await.map(drop)
    }

    pub async fn exec_process(&self, id: &str, exec_id: &str, opts: ExecOptions) -> Result<()> {
        let req = api::ExecProcessRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            terminal: opts.stdio.terminal,
            stdin: opts.stdio.stdin,
            stdout: opts.stdio.stdout,
            stderr: opts.stdio.stderr,
            spec: opts.spec.map(any_to_pb).into(),
            ..Default::default()
        };
        self.exec(req).await.map(drop)
    }

    pub async fn resize(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        let req = api::ResizePtyRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            width,
            height,
            ..Default::default()
        };
        self.resize_pty(req).await.map(drop)
    }

    pub async fn close_stdin(&self, id: &str, exec_id: &str, stdin: bool) -> Result<()> {
        let req = api::CloseIORequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            stdin,
            ..Default::default()
        };
        self.close_io(req).await.map(drop)
    }

    pub async fn pause_task(&self, id: &str) -> Result<()> {
        let req = api::PauseRequest {
            id: id.to_string(),
            ..Default::default()
        };
        self.pause(req).await.map(drop)
    }

    pub async fn resume_task(&self, id: &str) -> Result<()> {
        let req = api::ResumeRequest {
            id: id.to_string(),
            ..Default::default()
        };
        self.resume(req).await.map(drop)
    }

    pub async fn list_pids(&self, id: &str) -> Result<Vec<PidInfo>> {
        let req = api::PidsRequest {
            id: id.to_string(),
            ..Default::default()
        };
        let resp = self.pids(req).await?;
        Ok(resp
            .processes
            .iter()
            .map(|p| PidInfo {
                pid: p.pid,
                info: p.info.as_ref().map(any_from_pb),
            })
            .collect())
    }

    pub async fn update_task(
        &self,
        id: &str,
        resources: Option<AnyValue>,
        annotations: impl IntoIterator<Item = (String, String)>,
    ) -> Result<()> {
        let req = api::UpdateTaskRequest {
            id: id.to_string(),
            resources: resources.map(any_to_pb).into(),
            annotations: annotations.into_iter().collect(),
            ..Default::default()
        };
        self.update(req).await.map(drop)
    }

    /// Waits for the process to exit: its exit status and time, as the shim sent them.
    pub async fn wait_process(&self, id: &str, exec_id: &str) -> Result<(u32, Option<ShimTime>)> {
        let req = api::WaitRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        let r = self.wait(req).await?;
        Ok((r.exit_status, timestamp_of(&r.exited_at)))
    }

    /// The task's statistics (a typed `Any`, cgroup v1 or v2 metrics), if the shim has any.
    pub async fn task_stats(&self, id: &str) -> Result<Option<AnyValue>> {
        let req = api::StatsRequest {
            id: id.to_string(),
            ..Default::default()
        };
        Ok(self.stats(req).await?.stats.as_ref().map(any_from_pb))
    }

    /// Asks the shim to exit; it does once it serves no task. The shim may close the
    /// connection before it answers, so no error is reported.
    pub async fn shut_down(&self) {
        let req = api::ShutdownRequest {
            now: true,
            ..Default::default()
        };
        let _ = self.shutdown(req).await;
    }
}

impl Shim {
    pub async fn connect(address: &str, namespace: &str, id: &str) -> Result<Shim> {
        let client = Client::connect(address).await.map_err(|e| {
            Error::Unavailable(format!(
                "connect to the shim of task {id} at {address}: {e}"
            ))
        })?;
        Ok(Shim {
            client: TaskClient::new(client),
            namespace: namespace.to_string(),
            id: id.to_string(),
            address: address.to_string(),
            log: None,
        })
    }

    /// Keeps the forwarder of the shim's log running as long as this connection lives.
    pub fn set_log(&mut self, log: LogForwarder) {
        self.log = Some(Arc::new(log));
    }

    /// The shim's own pid and the pid of the task's init process (the shim v2 Connect).
    pub async fn pids_of(&self, id: &str) -> Result<(u32, u32)> {
        let req = api::ConnectRequest {
            id: id.to_string(),
            ..Default::default()
        };
        let r = self
            .client
            .connect(self.context(), &req)
            .await
            .map_err(|e| shim_error(&self.id, "connect", e))?;
        Ok((r.shim_pid, r.task_pid))
    }

    /// Whether the shim still accepts connections on its address.
    pub async fn alive(&self) -> bool {
        let path = self
            .address
            .strip_prefix("unix://")
            .unwrap_or(&self.address);
        tokio::net::UnixStream::connect(path).await.is_ok()
    }

    fn context(&self) -> ttrpc::context::Context {
        let mut ctx = ttrpc::context::Context::default();
        ctx.add(NAMESPACE_KEY.to_string(), self.namespace.clone());
        ctx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_keep_containerds_numbers() {
        for code in 0..6 {
            assert_eq!(ProcessStatus::from_code(code).code(), code);
        }
        assert_eq!(ProcessStatus::from_code(99), ProcessStatus::Unknown);
        assert_eq!(ProcessStatus::from_code(3).name(), "stopped");
    }

    #[test]
    fn exits_before_the_epoch_have_no_time() {
        let mut r = api::DeleteResponse {
            pid: 7,
            exit_status: 137,
            ..Default::default()
        };
        r.exited_at = MessageField::some(PbTimestamp {
            seconds: -62_135_596_800,
            nanos: 0,
            ..Default::default()
        });
        let e = exit_of(&r);
        assert_eq!((e.pid, e.status, e.exited_at), (7, 137, None));
    }
}
