//! `berth.services.supervisor.v1.Supervisor`: berth's own API onto the supervisor (restart
//! policies). Conversion only; the rules are `crate::supervisor`'s.

use berth_proto::berth::services::supervisor::v1 as pb;
use berth_proto::berth::services::supervisor::v1::supervisor_server::Supervisor;
use tonic::{Request, Response, Status};

use super::Convert;
use super::{Services, namespace_required};
use crate::api::status::OrStatus;
use crate::supervisor::ContainerState;

impl Convert<pb::ContainerState> for (String, ContainerState) {
    fn convert(self) -> pb::ContainerState {
        let (id, s) = self;
        pb::ContainerState {
            container_id: id,
            policy: Some(pb::RestartPolicy {
                name: s.policy.name().to_string(),
                maximum_retry_count: s.policy.maximum_retry_count(),
            }),
            restart_count: s.restart_count,
            manually_stopped: s.manually_stopped,
            restarting: s.restarting,
        }
    }
}

pub struct SupervisorApi(pub Services);

#[tonic::async_trait]
impl Supervisor for SupervisorApi {
    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let id = req.into_inner().container_id;
        let state = self.0.supervisor.get(&ns, &id).await.or_status()?;
        Ok(Response::new(pb::GetResponse {
            state: Some((id, state).convert()),
        }))
    }

    async fn mark_stopped(&self, req: Request<pb::MarkRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let id = req.into_inner().container_id;
        self.0.supervisor.mark_stopped(&ns, &id).await.or_status()?;
        Ok(Response::new(()))
    }

    async fn mark_started(&self, req: Request<pb::MarkRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let id = req.into_inner().container_id;
        self.0.supervisor.mark_started(&ns, &id).await.or_status()?;
        Ok(Response::new(()))
    }

    async fn set_policy(&self, req: Request<pb::SetPolicyRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let req = req.into_inner();
        self.0
            .supervisor
            .set_policy(&ns, &req.container_id, &req.policy)
            .await
            .or_status()?;
        Ok(Response::new(()))
    }
}
