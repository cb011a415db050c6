//! berthd's supervisor (`berth.services.supervisor.v1`): restart policies. The CLI tells it
//! of a user's stop before it stops or kills a container (the policy then does not fight
//! the stop) and of a user's start before it starts one; it reads the restart count and
//! the back-off state for `inspect` and `ps`.

use berth_proto::berth::services::supervisor::v1 as pb;
use berth_proto::berth::services::supervisor::v1::supervisor_client::SupervisorClient;
use tonic::Code;

use super::{Client, status};

fn api(c: &Client) -> SupervisorClient<tonic::transport::Channel> {
    SupervisorClient::new(c.channel.clone())
}

/// `Ok` when the daemon has no supervisor (containerd): there is no policy to tell then;
/// and when the container is gone (the operation that follows says so in its own words).
fn unsupported_ok(r: Result<tonic::Response<()>, tonic::Status>) -> anyhow::Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.code(), Code::Unimplemented | Code::NotFound) => Ok(()),
        Err(e) => Err(status(e)),
    }
}

/// A user is stopping or killing container `id`.
pub async fn mark_stopped(c: &Client, id: &str) -> anyhow::Result<()> {
    let req = pb::MarkRequest {
        container_id: id.to_string(),
    };
    unsupported_ok(api(c).mark_stopped(c.req(req)).await)
}

/// A user is starting container `id`.
pub async fn mark_started(c: &Client, id: &str) -> anyhow::Result<()> {
    let req = pb::MarkRequest {
        container_id: id.to_string(),
    };
    unsupported_ok(api(c).mark_started(c.req(req)).await)
}

/// The policy and restart state of container `id`; None from a daemon without supervisor.
pub async fn get(c: &Client, id: &str) -> anyhow::Result<Option<pb::ContainerState>> {
    let req = pb::GetRequest {
        container_id: id.to_string(),
    };
    match api(c).get(c.req(req)).await {
        Ok(r) => Ok(r.into_inner().state),
        Err(e) if e.code() == Code::Unimplemented => Ok(None),
        Err(e) => Err(status(e)),
    }
}

/// Sets container `id`'s restart policy.
pub async fn set_policy(c: &Client, id: &str, policy: &str) -> Result<(), tonic::Status> {
    let req = pb::SetPolicyRequest {
        container_id: id.to_string(),
        policy: policy.to_string(),
    };
    api(c).set_policy(c.req(req)).await.map(drop)
}
