//! `containerd.services.tasks.v1.Tasks`: each call converts the request, calls one method
//! of the task core ([`crate::tasks::Tasks`]) and converts the answer. The core talks to
//! the shims; no shim type is seen here.
//!
//! No task event is published here: the shim publishes `/tasks/*` itself through the
//! daemon's ttrpc `Events/Forward`.

use berth_proto::containerd::services::tasks::v1 as pb;
use berth_proto::containerd::services::tasks::v1::tasks_server::Tasks as TasksRpc;
use berth_proto::containerd::types::Metric;
use berth_proto::containerd::v1::types::{Process, ProcessInfo};
use tonic::{Request, Response, Status};

use super::snapshots::mount_from_wire;
use super::{any_from_wire, any_to_wire, namespace_required};
use crate::api::status::OrStatus;
use crate::filters::Filter;
use crate::tasks::{CreateOptions, ExecOptions, Exit, ProcessState, ShimTime, Stdio, Tasks};

pub struct TasksApi(pub Tasks);

fn process(container_id: &str, s: ProcessState) -> Process {
    Process {
        container_id: container_id.to_string(),
        // The process id: the container's for its init process, else the exec id.
        id: if s.exec_id.is_empty() {
            container_id.to_string()
        } else {
            s.exec_id.clone()
        },
        pid: s.pid,
        status: s.status.code(),
        stdin: s.stdin,
        stdout: s.stdout,
        stderr: s.stderr,
        terminal: s.terminal,
        exit_status: s.exit_status,
        exited_at: s.exited_at.map(timestamp),
    }
}

fn timestamp(t: ShimTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.seconds,
        nanos: t.nanos,
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

type Res<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl TasksRpc for TasksApi {
    async fn create(&self, req: Request<pb::CreateTaskRequest>) -> Res<pb::CreateTaskResponse> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        let opts = CreateOptions {
            rootfs: r.rootfs.into_iter().map(mount_from_wire).collect(),
            stdio: Stdio {
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
                terminal: r.terminal,
            },
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
        let pid = self
            .0
            .start(&ns, &r.container_id, &r.exec_id)
            .await
            .or_status()?;
        Ok(Response::new(pb::StartResponse { pid }))
    }

    async fn delete(&self, req: Request<pb::DeleteTaskRequest>) -> Res<pb::DeleteResponse> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        let exit = self.0.delete(&ns, &r.container_id).await.or_status()?;
        Ok(Response::new(delete_response(&r.container_id, exit)))
    }

    async fn delete_process(
        &self,
        req: Request<pb::DeleteProcessRequest>,
    ) -> Res<pb::DeleteResponse> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        let exit = self
            .0
            .delete_process(&ns, &r.container_id, &r.exec_id)
            .await
            .or_status()?;
        Ok(Response::new(delete_response(&r.exec_id, exit)))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Res<pb::GetResponse> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        let state = self
            .0
            .state(&ns, &r.container_id, &r.exec_id)
            .await
            .or_status()?;
        Ok(Response::new(pb::GetResponse {
            process: Some(process(&r.container_id, state)),
        }))
    }

    async fn list(&self, req: Request<pb::ListTasksRequest>) -> Res<pb::ListTasksResponse> {
        let ns = namespace_required(req.metadata()).or_status()?;
        // containerd 1.6 ignores the filter; berthd applies it (an empty one matches all).
        let filter = Filter::parse(&req.into_inner().filter).or_status()?;
        let states = self.0.list_states(&ns, &filter).await.or_status()?;
        let tasks = states.into_iter().map(|(t, s)| process(&t.id, s)).collect();
        Ok(Response::new(pb::ListTasksResponse { tasks }))
    }

    async fn kill(&self, req: Request<pb::KillRequest>) -> Res<()> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        self.0
            .kill(&ns, &r.container_id, &r.exec_id, r.signal, r.all)
            .await
            .or_status()?;
        Ok(Response::new(()))
    }

    async fn exec(&self, req: Request<pb::ExecProcessRequest>) -> Res<()> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        let opts = ExecOptions {
            stdio: Stdio {
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
                terminal: r.terminal,
            },
            spec: r.spec.map(any_from_wire),
        };
        self.0
            .exec(&ns, &r.container_id, &r.exec_id, opts)
            .await
            .or_status()?;
        Ok(Response::new(()))
    }

    async fn resize_pty(&self, req: Request<pb::ResizePtyRequest>) -> Res<()> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        self.0
            .resize_pty(&ns, &r.container_id, &r.exec_id, r.width, r.height)
            .await
            .or_status()?;
        Ok(Response::new(()))
    }

    async fn close_io(&self, req: Request<pb::CloseIoRequest>) -> Res<()> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        self.0
            .close_io(&ns, &r.container_id, &r.exec_id, r.stdin)
            .await
            .or_status()?;
        Ok(Response::new(()))
    }

    async fn pause(&self, req: Request<pb::PauseTaskRequest>) -> Res<()> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        self.0.pause(&ns, &r.container_id).await.or_status()?;
        Ok(Response::new(()))
    }

    async fn resume(&self, req: Request<pb::ResumeTaskRequest>) -> Res<()> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        self.0.resume(&ns, &r.container_id).await.or_status()?;
        Ok(Response::new(()))
    }

    async fn list_pids(&self, req: Request<pb::ListPidsRequest>) -> Res<pb::ListPidsResponse> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        let pids = self.0.pids(&ns, &r.container_id).await.or_status()?;
        let processes = pids
            .into_iter()
            .map(|p| ProcessInfo {
                pid: p.pid,
                info: p.info.map(any_to_wire),
            })
            .collect();
        Ok(Response::new(pb::ListPidsResponse { processes }))
    }

    async fn checkpoint(
        &self,
        req: Request<pb::CheckpointTaskRequest>,
    ) -> Res<pb::CheckpointTaskResponse> {
        self.0
            .checkpoint(&req.into_inner().container_id)
            .or_status()?;
        Ok(Response::new(pb::CheckpointTaskResponse::default()))
    }

    async fn update(&self, req: Request<pb::UpdateTaskRequest>) -> Res<()> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        self.0
            .update(
                &ns,
                &r.container_id,
                r.resources.map(any_from_wire),
                r.annotations,
            )
            .await
            .or_status()?;
        Ok(Response::new(()))
    }

    async fn metrics(&self, req: Request<pb::MetricsRequest>) -> Res<pb::MetricsResponse> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let filter = Filter::parse_all(&req.into_inner().filters).or_status()?;
        let metrics = self.0.metrics(&ns, &filter).await.or_status()?;
        let metrics = metrics
            .into_iter()
            .map(|m| Metric {
                timestamp: Some(m.collected.into()),
                id: m.id,
                data: m.data.map(any_to_wire),
            })
            .collect();
        Ok(Response::new(pb::MetricsResponse { metrics }))
    }

    async fn wait(&self, req: Request<pb::WaitRequest>) -> Res<pb::WaitResponse> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        let (exit_status, exited_at) = self
            .0
            .wait(&ns, &r.container_id, &r.exec_id)
            .await
            .or_status()?;
        Ok(Response::new(pb::WaitResponse {
            exit_status,
            exited_at: exited_at.map(timestamp),
        }))
    }
}
