//! `containerd.services.tasks.v1.Tasks`: the one place where the daemon's `tasks.v1` (prost)
//! messages and the shim's `task.v2` (rust-protobuf) messages are mapped into each other.
//!
//! No task event is published here: the shim publishes `/tasks/*` itself through the
//! daemon's ttrpc `Events/Forward`.

use crate::api::status::{IntoStatus, OrStatus};
use berth_proto::containerd::services::tasks::v1 as pb;
use berth_proto::containerd::services::tasks::v1::tasks_server::Tasks as TasksRpc;
use berth_proto::containerd::types::Metric;
use berth_proto::containerd::v1::types::{Process, ProcessInfo};
use berth_proto::ttrpc::api;
use berth_proto::ttrpc::protobuf::MessageField;
use berth_proto::ttrpc::protobuf::well_known_types::any::Any as PbAny;
use berth_proto::ttrpc::protobuf::well_known_types::timestamp::Timestamp as PbTimestamp;
use tonic::{Request, Response, Status};

use super::snapshots::mount_from_wire;
use super::{any_from_wire, namespace_required};
use crate::error::Error;
use crate::filters::{Adaptor, Filter};
use crate::tasks::{CreateOptions, Exit, Task, Tasks};

pub struct TasksApi(pub Tasks);

fn any_to_pb(a: prost_types::Any) -> PbAny {
    PbAny {
        type_url: a.type_url,
        value: a.value,
        ..Default::default()
    }
}

fn any_from_pb(a: &PbAny) -> prost_types::Any {
    prost_types::Any {
        type_url: a.type_url.clone(),
        value: a.value.clone(),
    }
}

fn ts_from_pb(t: &MessageField<PbTimestamp>) -> Option<prost_types::Timestamp> {
    t.as_ref().map(|t| prost_types::Timestamp {
        seconds: t.seconds,
        nanos: t.nanos,
    })
}

fn process_from_state(container_id: &str, s: api::StateResponse) -> Process {
    Process {
        container_id: container_id.to_string(),
        // The process id: the container's for its init process, else the exec id.
        id: if s.exec_id.is_empty() {
            container_id.to_string()
        } else {
            s.exec_id.clone()
        },
        pid: s.pid,
        status: s.status.value(),
        stdin: s.stdin,
        stdout: s.stdout,
        stderr: s.stderr,
        terminal: s.terminal,
        exit_status: s.exit_status,
        exited_at: ts_from_pb(&s.exited_at),
    }
}

fn delete_response(id: &str, exit: Exit) -> pb::DeleteResponse {
    pb::DeleteResponse {
        id: id.to_string(),
        pid: exit.pid,
        exit_status: exit.status,
        exited_at: exit.exited_at.map(prost_types::Timestamp::from),
    }
}

/// The name of a process status in filters, as containerd spells it.
fn status_name(status: i32) -> &'static str {
    use berth_proto::containerd::v1::types::Status;
    match Status::try_from(status).unwrap_or(Status::Unknown) {
        Status::Created => "created",
        Status::Running => "running",
        Status::Stopped => "stopped",
        Status::Paused => "paused",
        Status::Pausing => "pausing",
        Status::Unknown => "unknown",
    }
}

/// The fields task filters can name: `id` (and `container_id`), `namespace`, `runtime`,
/// and, once the task's state is known, `pid` and `status`.
struct TaskFields<'a> {
    task: &'a Task,
    process: Option<&'a Process>,
}

impl Adaptor for TaskFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        let t = self.task;
        match path.first().map(String::as_str)? {
            "id" | "container_id" => Some(t.id.clone()),
            "namespace" => Some(t.namespace.clone()),
            "runtime" => Some(t.runtime.clone()),
            "pid" => self.process.map(|p| p.pid.to_string()),
            "status" => self.process.map(|p| status_name(p.status).to_string()),
            _ => None,
        }
    }
}

type Res<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl TasksRpc for TasksApi {
    async fn create(&self, req: Request<pb::CreateTaskRequest>) -> Res<pb::CreateTaskResponse> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        let opts = CreateOptions {
            rootfs: r.rootfs.into_iter().map(mount_from_wire).collect(),
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            terminal: r.terminal,
            options: r.options.map(any_from_wire),
            checkpoint: r.checkpoint.is_some(),
        };
        let (_, pid) = self
            .0
            .create(&ns, &r.container_id, opts)
            .await
            .or_status()?;
        Ok(Response::new(pb::CreateTaskResponse {
            container_id: r.container_id,
            pid,
        }))
    }

    async fn start(&self, req: Request<pb::StartRequest>) -> Res<pb::StartResponse> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        let t = self.0.get(&ns, &r.container_id).or_status()?;
        let resp = t
            .shim
            .start(api::StartRequest {
                id: r.container_id,
                exec_id: r.exec_id,
                ..Default::default()
            })
            .await
            .or_status()?;
        Ok(Response::new(pb::StartResponse { pid: resp.pid }))
    }

    async fn delete(&self, req: Request<pb::DeleteTaskRequest>) -> Res<pb::DeleteResponse> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        let resp = self.0.delete(&ns, &r.container_id).await.or_status()?;
        Ok(Response::new(delete_response(&r.container_id, resp)))
    }

    async fn delete_process(
        &self,
        req: Request<pb::DeleteProcessRequest>,
    ) -> Res<pb::DeleteResponse> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        if r.exec_id.is_empty() {
            return Err(Error::invalid("exec id must be set to delete a process").into_status());
        }
        let t = self.0.get(&ns, &r.container_id).or_status()?;
        let resp = t
            .shim
            .delete(api::DeleteRequest {
                id: r.container_id,
                exec_id: r.exec_id.clone(),
                ..Default::default()
            })
            .await
            .or_status()?;
        Ok(Response::new(delete_response(
            &r.exec_id,
            Exit::from(&resp),
        )))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Res<pb::GetResponse> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        let t = self.0.get(&ns, &r.container_id).or_status()?;
        let state = match t
            .shim
            .state(api::StateRequest {
                id: r.container_id.clone(),
                exec_id: r.exec_id,
                ..Default::default()
            })
            .await
        {
            Ok(s) => s,
            Err(e) => return Err(self.0.check_shim(&t, e).await.into_status()),
        };
        Ok(Response::new(pb::GetResponse {
            process: Some(process_from_state(&r.container_id, state)),
        }))
    }

    async fn list(&self, req: Request<pb::ListTasksRequest>) -> Res<pb::ListTasksResponse> {
        let ns = namespace_required(req.metadata()).or_status()?;
        // containerd 1.6 ignores the filter; berthd applies it (an empty one matches all).
        let filter = Filter::parse(&req.into_inner().filter).or_status()?;
        let mut tasks = Vec::new();
        for t in self.0.list(&ns) {
            let state = t
                .shim
                .state(api::StateRequest {
                    id: t.id.clone(),
                    ..Default::default()
                })
                .await;
            match state {
                Ok(s) => {
                    let p = process_from_state(&t.id, s);
                    let fields = TaskFields {
                        task: &t,
                        process: Some(&p),
                    };
                    if filter.matches(&fields) {
                        tasks.push(p);
                    }
                }
                Err(e) => match self.0.check_shim(&t, e).await {
                    e if e.is_not_found() => {}
                    e => return Err(e.into_status()),
                },
            }
        }
        Ok(Response::new(pb::ListTasksResponse { tasks }))
    }

    async fn kill(&self, req: Request<pb::KillRequest>) -> Res<()> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        let t = self.0.get(&ns, &r.container_id).or_status()?;
        t.shim
            .kill(api::KillRequest {
                id: r.container_id,
                exec_id: r.exec_id,
                signal: r.signal,
                all: r.all,
                ..Default::default()
            })
            .await
            .or_status()?;
        Ok(Response::new(()))
    }

    async fn exec(&self, req: Request<pb::ExecProcessRequest>) -> Res<()> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        if r.exec_id.is_empty() {
            return Err(Error::invalid("exec id must not be empty").into_status());
        }
        let t = self.0.get(&ns, &r.container_id).or_status()?;
        t.shim
            .exec(api::ExecProcessRequest {
                id: r.container_id,
                exec_id: r.exec_id,
                terminal: r.terminal,
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
                spec: r.spec.map(any_to_pb).into(),
                ..Default::default()
            })
            .await
            .or_status()?;
        Ok(Response::new(()))
    }

    async fn resize_pty(&self, req: Request<pb::ResizePtyRequest>) -> Res<()> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        let t = self.0.get(&ns, &r.container_id).or_status()?;
        t.shim
            .resize_pty(api::ResizePtyRequest {
                id: r.container_id,
                exec_id: r.exec_id,
                width: r.width,
                height: r.height,
                ..Default::default()
            })
            .await
            .or_status()?;
        Ok(Response::new(()))
    }

    async fn close_io(&self, req: Request<pb::CloseIoRequest>) -> Res<()> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        let t = self.0.get(&ns, &r.container_id).or_status()?;
        t.shim
            .close_io(api::CloseIORequest {
                id: r.container_id,
                exec_id: r.exec_id,
                stdin: r.stdin,
                ..Default::default()
            })
            .await
            .or_status()?;
        Ok(Response::new(()))
    }

    async fn pause(&self, req: Request<pb::PauseTaskRequest>) -> Res<()> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        let t = self.0.get(&ns, &r.container_id).or_status()?;
        t.shim
            .pause(api::PauseRequest {
                id: r.container_id,
                ..Default::default()
            })
            .await
            .or_status()?;
        Ok(Response::new(()))
    }

    async fn resume(&self, req: Request<pb::ResumeTaskRequest>) -> Res<()> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        let t = self.0.get(&ns, &r.container_id).or_status()?;
        t.shim
            .resume(api::ResumeRequest {
                id: r.container_id,
                ..Default::default()
            })
            .await
            .or_status()?;
        Ok(Response::new(()))
    }

    async fn list_pids(&self, req: Request<pb::ListPidsRequest>) -> Res<pb::ListPidsResponse> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        let t = self.0.get(&ns, &r.container_id).or_status()?;
        let resp = t
            .shim
            .pids(api::PidsRequest {
                id: r.container_id,
                ..Default::default()
            })
            .await
            .or_status()?;
        let processes = resp
            .processes
            .iter()
            .map(|p| ProcessInfo {
                pid: p.pid,
                info: p.info.as_ref().map(any_from_pb),
            })
            .collect();
        Ok(Response::new(pb::ListPidsResponse { processes }))
    }

    async fn checkpoint(
        &self,
        req: Request<pb::CheckpointTaskRequest>,
    ) -> Res<pb::CheckpointTaskResponse> {
        let r = req.into_inner();
        Err(Error::NotImplemented(format!(
            "checkpoint of task {}: berthd does not checkpoint tasks",
            r.container_id
        ))
        .into_status())
    }

    async fn update(&self, req: Request<pb::UpdateTaskRequest>) -> Res<()> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        let t = self.0.get(&ns, &r.container_id).or_status()?;
        t.shim
            .update(api::UpdateTaskRequest {
                id: r.container_id,
                resources: r.resources.map(any_to_pb).into(),
                annotations: r.annotations.into_iter().collect(),
                ..Default::default()
            })
            .await
            .or_status()?;
        Ok(Response::new(()))
    }

    async fn metrics(&self, req: Request<pb::MetricsRequest>) -> Res<pb::MetricsResponse> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let filter = Filter::parse_all(&req.into_inner().filters).or_status()?;
        let mut metrics = Vec::new();
        for t in self.0.list(&ns) {
            let fields = TaskFields {
                task: &t,
                process: None,
            };
            if !filter.matches(&fields) {
                continue;
            }
            let collected = std::time::SystemTime::now();
            let stats = t
                .shim
                .stats(api::StatsRequest {
                    id: t.id.clone(),
                    ..Default::default()
                })
                .await;
            let stats = match stats {
                Ok(s) => s,
                Err(e) => match self.0.check_shim(&t, e).await {
                    // Deleted meanwhile, or its shim died: as containerd, no metric for it.
                    e if e.is_not_found() => continue,
                    e => return Err(e.into_status()),
                },
            };
            metrics.push(Metric {
                timestamp: Some(collected.into()),
                id: t.id.clone(),
                data: stats.stats.as_ref().map(any_from_pb),
            });
        }
        Ok(Response::new(pb::MetricsResponse { metrics }))
    }

    async fn wait(&self, req: Request<pb::WaitRequest>) -> Res<pb::WaitResponse> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        let t = self.0.get(&ns, &r.container_id).or_status()?;
        let resp = match t
            .shim
            .wait(api::WaitRequest {
                id: r.container_id,
                exec_id: r.exec_id,
                ..Default::default()
            })
            .await
        {
            Ok(r) => r,
            Err(e) => return Err(self.0.check_shim(&t, e).await.into_status()),
        };
        Ok(Response::new(pb::WaitResponse {
            exit_status: resp.exit_status,
            exited_at: ts_from_pb(&resp.exited_at),
        }))
    }
}
