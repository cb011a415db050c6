//! berthd's networks API (`berth.services.networks.v1`): the user-defined networks and the
//! containers attached to them.

use berth_proto::berth::services::networks::v1 as pb;
use berth_proto::berth::services::networks::v1::networks_client::NetworksClient;
use tonic::transport::Channel;

use super::Client;
use crate::exit::Exit;

pub fn api(c: &Client) -> NetworksClient<Channel> {
    NetworksClient::new(c.channel.clone())
}

/// The daemon's message without the class suffix its statuses carry (`…: not found`), as
/// Docker's CLI prints it after "Error response from daemon: ".
pub fn daemon_message(s: &tonic::Status) -> String {
    let m = s.message();
    for suffix in [
        ": not found",
        ": already exists",
        ": invalid argument",
        ": failed precondition",
        ": unavailable",
    ] {
        if let Some(stripped) = m.strip_suffix(suffix) {
            return match s.code() {
                tonic::Code::NotFound => format!("{stripped} not found"),
                tonic::Code::AlreadyExists => format!("{stripped} already exists"),
                _ => stripped.to_string(),
            };
        }
    }
    m.to_string()
}

/// A daemon error as Docker prints it, ending the CLI with `code`.
pub fn daemon_error(s: tonic::Status, code: u8) -> anyhow::Error {
    Exit::with(
        code,
        format!("Error response from daemon: {}", daemon_message(&s)),
    )
}

/// The network `name` names (name, id or unique id prefix), with its endpoints.
pub async fn get(c: &Client, name: &str) -> Result<pb::Network, tonic::Status> {
    Ok(api(c)
        .get(c.req(pb::GetNetworkRequest {
            name: name.to_string(),
        }))
        .await?
        .into_inner()
        .network
        .unwrap_or_default())
}

/// Every network of the namespace.
pub async fn list(c: &Client) -> Result<Vec<pb::Network>, tonic::Status> {
    Ok(api(c)
        .list(c.req(pb::ListNetworksRequest {}))
        .await?
        .into_inner()
        .networks)
}

/// A stable endpoint id for a container on a network (Docker's is random per endpoint).
pub fn endpoint_id(container: &str, network: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut out = String::new();
    for salt in 0..4u8 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (container, network, salt).hash(&mut h);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_messages_read_as_dockers() {
        let s = tonic::Status::not_found("network nope: not found");
        assert_eq!(daemon_message(&s), "network nope not found");
        let s = tonic::Status::already_exists("network with name a: already exists");
        assert_eq!(daemon_message(&s), "network with name a already exists");
        let s = tonic::Status::failed_precondition("x has active endpoints: failed precondition");
        assert_eq!(daemon_message(&s), "x has active endpoints");
    }
}
