//! Typed operations on tasks (a container's running process and its execs): look up,
//! create, start, signal, wait, delete, pause, resize, metrics.
//!
//! An empty `exec_id` always means the task itself (its init process).

use std::time::Duration;

use berth_proto::containerd::services::tasks::v1 as pb;
use berth_proto::containerd::services::tasks::v1::tasks_client::TasksClient;
use berth_proto::containerd::types::Mount;
use berth_proto::containerd::v1::types::{Process, ProcessInfo, Status as TaskStatus};
use tonic::Status;
use tonic::transport::Channel;

use super::metrics::Metrics;
use super::signal::kills_all;
use super::{Client, status};

pub fn api(c: &Client) -> TasksClient<Channel> {
    TasksClient::new(c.channel.clone())
}

async fn get_raw(c: &Client, id: &str) -> Result<Option<Process>, Status> {
    api(c)
        .get(c.req(pb::GetRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        }))
        .await
        .map(|r| r.into_inner().process)
}

/// The container's task, or None when it has none.
pub async fn find(c: &Client, id: &str) -> anyhow::Result<Option<Process>> {
    match get_raw(c, id).await {
        Ok(p) => Ok(p),
        Err(e) if e.code() == tonic::Code::NotFound => Ok(None),
        Err(e) => Err(status(e)),
    }
}

/// The task of container `id`, with ctr's message when it has none.
pub async fn get(c: &Client, id: &str) -> anyhow::Result<Process> {
    match get_raw(c, id).await {
        Ok(p) => p.ok_or_else(|| anyhow::anyhow!("no running task found: task {id} not found")),
        Err(e) if e.code() == tonic::Code::NotFound => {
            anyhow::bail!("no running task found: task {id} not found: not found")
        }
        Err(e) => Err(status(e)),
    }
}

/// A task's status (Unknown for a number this client does not know).
pub fn status_of(p: &Process) -> TaskStatus {
    TaskStatus::try_from(p.status).unwrap_or(TaskStatus::Unknown)
}

/// Whether a task is alive: running, pausing or paused.
pub fn is_live(t: &Process) -> bool {
    matches!(
        status_of(t),
        TaskStatus::Running | TaskStatus::Paused | TaskStatus::Pausing
    )
}

/// A task status as ctr prints it (`RUNNING`, `STOPPED`...).
pub fn status_name(p: &Process) -> &'static str {
    status_of(p).as_str_name()
}

/// Docker's lower-case state name of a container with task `t`.
pub fn state_name(t: Option<&Process>) -> &'static str {
    match t.map(status_of) {
        Some(TaskStatus::Running) => "running",
        Some(TaskStatus::Paused | TaskStatus::Pausing) => "paused",
        Some(TaskStatus::Stopped) => "exited",
        _ => "created",
    }
}

/// Where a process's stdio goes: URIs (FIFO paths, `file://`, `binary://`) or nothing.
#[derive(Debug, Default)]
pub struct Stdio {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// Creates the task of container `id` on `rootfs` (none: the snapshot the container
/// names); returns its pid.
pub async fn create(c: &Client, id: &str, rootfs: Vec<Mount>, io: Stdio) -> Result<u32, Status> {
    api(c)
        .create(c.req(pb::CreateTaskRequest {
            container_id: id.to_string(),
            rootfs,
            stdin: io.stdin,
            stdout: io.stdout,
            stderr: io.stderr,
            terminal: io.terminal,
            ..Default::default()
        }))
        .await
        .map(|r| r.into_inner().pid)
}

/// Adds exec process `exec_id` running `spec` (an OCI process spec) to the task.
pub async fn exec(
    c: &Client,
    id: &str,
    exec_id: &str,
    spec: prost_types::Any,
    io: Stdio,
) -> Result<(), Status> {
    api(c)
        .exec(c.req(pb::ExecProcessRequest {
            container_id: id.to_string(),
            stdin: io.stdin,
            stdout: io.stdout,
            stderr: io.stderr,
            terminal: io.terminal,
            spec: Some(spec),
            exec_id: exec_id.to_string(),
        }))
        .await
        .map(drop)
}

/// Starts a created process; returns its pid.
pub async fn start(c: &Client, id: &str, exec_id: &str) -> Result<u32, Status> {
    api(c)
        .start(c.req(pb::StartRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
        }))
        .await
        .map(|r| r.into_inner().pid)
}

/// Sends `signal` to a process; with `all`, to every process of the container.
pub async fn kill(
    c: &Client,
    id: &str,
    exec_id: &str,
    signal: u32,
    all: bool,
) -> Result<(), Status> {
    api(c)
        .kill(c.req(pb::KillRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            signal,
            all,
        }))
        .await
        .map(drop)
}

/// Waits for a process to exit: its exit status.
pub async fn wait(c: &Client, id: &str, exec_id: &str) -> anyhow::Result<u32> {
    wait_raw(c, id, exec_id).await.map_err(status)
}

/// [`wait`], with the gRPC status of a failure.
pub async fn wait_raw(c: &Client, id: &str, exec_id: &str) -> Result<u32, Status> {
    api(c)
        .wait(c.req(pb::WaitRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
        }))
        .await
        .map(|r| r.into_inner().exit_status)
}

/// Sends `signal` to a process and waits for it to exit, up to `timeout` when given:
/// its exit status, or None when it did not exit in time or there was nothing to wait for.
///
/// The wait is asked for before the signal goes out, so an exit in between is not missed
/// (ctr's `WithProcessKill`). A SIGKILL to the task reaches every process of the container
/// ([`kills_all`]). A paused task is thawed after the signal so that it lands. A process
/// already gone (NotFound) still has its exit status to wait for; one never started
/// (FailedPrecondition) has none.
pub async fn kill_and_wait(
    c: &Client,
    id: &str,
    exec_id: &str,
    signal: u32,
    timeout: Option<Duration>,
) -> anyhow::Result<Option<u32>> {
    let paused = exec_id.is_empty()
        && find(c, id)
            .await?
            .is_some_and(|t| status_of(&t) == TaskStatus::Paused);
    let waiter = wait(c, id, exec_id);
    tokio::pin!(waiter);
    let killer = async {
        match kill(c, id, exec_id, signal, kills_all(exec_id, signal)).await {
            Ok(()) => Ok(true),
            Err(e) if e.code() == tonic::Code::NotFound => Ok(true),
            Err(e) if e.code() == tonic::Code::FailedPrecondition => Ok(false),
            Err(e) => Err(status(e)),
        }
    };
    let must_wait = tokio::select! {
        killed = killer => killed?,
        done = &mut waiter => return done.map(Some),
    };
    if !must_wait {
        return Ok(None);
    }
    if paused {
        let _ = resume(c, id).await;
    }
    match timeout {
        None => waiter.await.map(Some),
        Some(t) => match tokio::time::timeout(t, waiter).await {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        },
    }
}

/// Deletes the task (stopped, or created and not started); returns its exit status.
pub async fn delete(c: &Client, id: &str) -> Result<u32, Status> {
    api(c)
        .delete(c.req(pb::DeleteTaskRequest {
            container_id: id.to_string(),
        }))
        .await
        .map(|r| r.into_inner().exit_status)
}

/// Deletes an exec process that exited; returns its exit status.
pub async fn delete_process(c: &Client, id: &str, exec_id: &str) -> Result<u32, Status> {
    api(c)
        .delete_process(c.req(pb::DeleteProcessRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
        }))
        .await
        .map(|r| r.into_inner().exit_status)
}

pub async fn pause(c: &Client, id: &str) -> Result<(), Status> {
    api(c)
        .pause(c.req(pb::PauseTaskRequest {
            container_id: id.to_string(),
        }))
        .await
        .map(drop)
}

pub async fn resume(c: &Client, id: &str) -> Result<(), Status> {
    api(c)
        .resume(c.req(pb::ResumeTaskRequest {
            container_id: id.to_string(),
        }))
        .await
        .map(drop)
}

/// Resizes a process's pty.
pub async fn resize(c: &Client, id: &str, exec_id: &str, w: u16, h: u16) -> Result<(), Status> {
    api(c)
        .resize_pty(c.req(pb::ResizePtyRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            width: u32::from(w),
            height: u32::from(h),
        }))
        .await
        .map(drop)
}

/// Closes a process's stdin.
pub async fn close_stdin(c: &Client, id: &str, exec_id: &str) -> Result<(), Status> {
    api(c)
        .close_io(c.req(pb::CloseIoRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            stdin: true,
        }))
        .await
        .map(drop)
}

/// Every task of the namespace.
pub async fn list(c: &Client) -> Result<Vec<Process>, Status> {
    api(c)
        .list(c.req(pb::ListTasksRequest::default()))
        .await
        .map(|r| r.into_inner().tasks)
}

/// The processes of container `id`'s task.
pub async fn list_pids(c: &Client, id: &str) -> anyhow::Result<Vec<ProcessInfo>> {
    Ok(api(c)
        .list_pids(c.req(pb::ListPidsRequest {
            container_id: id.to_string(),
        }))
        .await
        .map_err(status)?
        .into_inner()
        .processes)
}

/// One data point of container `id`'s metrics: its time and decoded data.
pub async fn metrics(
    c: &Client,
    id: &str,
) -> anyhow::Result<(Option<prost_types::Timestamp>, Metrics)> {
    let list = api(c)
        .metrics(c.req(pb::MetricsRequest {
            filters: vec![format!("id=={id}")],
        }))
        .await
        .map_err(status)?
        .into_inner()
        .metrics;
    let m = list
        .into_iter()
        .find(|m| m.id == id)
        .ok_or_else(|| anyhow::anyhow!("no metrics received for task {id}"))?;
    let data = m
        .data
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("task {id}: metrics carry no data"))?;
    Ok((m.timestamp, Metrics::decode(data)?))
}

/// The type URL of an OCI `LinuxResources` (JSON), as containerd's clients send it.
const LINUX_RESOURCES: &str = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

/// Changes the running task `id`'s resource limits (`resources`: OCI `LinuxResources`).
pub async fn update_resources(
    c: &Client,
    id: &str,
    resources: &serde_json::Value,
) -> Result<(), Status> {
    api(c)
        .update(c.req(pb::UpdateTaskRequest {
            container_id: id.to_string(),
            resources: Some(prost_types::Any {
                type_url: LINUX_RESOURCES.to_string(),
                value: serde_json::to_vec(resources).unwrap_or_default(),
            }),
            ..Default::default()
        }))
        .await
        .map(drop)
}
