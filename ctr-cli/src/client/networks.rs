//! berthd's networks API (`berth.services.networks.v1`): the user-defined networks and the
//! containers attached to them.

use berth_proto::berth::services::networks::v1 as pb;
use berth_proto::berth::services::networks::v1::networks_client::NetworksClient;
use tonic::transport::Channel;

use std::collections::HashMap;

use berth_proto::containerd::services::containers::v1::Container;

use super::Client;
use crate::exit::Exit;
use crate::labels;

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

/// The networks a container's [`labels::NETWORK`] label names that berthd attaches it to
/// (not host, none or another container's).
pub fn networks_of(ct: &Container) -> Vec<String> {
    label_networks(ct)
        .into_iter()
        .filter(|n| n != "host" && n != "none" && !n.starts_with("container:"))
        .collect()
}

/// Every entry of the container's [`labels::NETWORK`] label, as written.
pub fn label_networks(ct: &Container) -> Vec<String> {
    ct.labels
        .get(labels::NETWORK)
        .map(|v| {
            v.split(',')
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The endpoints of the containers on `networks` (one Get each), by container id; a network
/// that is gone is skipped.
pub async fn endpoints_by_container(
    c: &Client,
    networks: impl IntoIterator<Item = String>,
) -> HashMap<String, Vec<pb::Endpoint>> {
    let mut names: Vec<String> = networks.into_iter().collect();
    names.sort();
    names.dedup();
    let mut out: HashMap<String, Vec<pb::Endpoint>> = HashMap::new();
    for name in names {
        if let Ok(n) = get(c, &name).await {
            for e in n.endpoints {
                out.entry(e.container_id.clone()).or_default().push(e);
            }
        }
    }
    out
}

/// The ports container `ct` publishes, host ports as berthd chose them (none while it does
/// not run).
pub async fn ports_of(c: &Client, ct: &Container) -> Vec<pb::PortBinding> {
    let mut by = endpoints_by_container(c, networks_of(ct)).await;
    let mut ports: Vec<pb::PortBinding> = by
        .remove(&ct.id)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|e| e.ports)
        .collect();
    ports.sort_by_key(|p| (p.container_port, p.protocol.clone(), p.host_port));
    ports
}

/// Removes the user-defined networks no container is on; returns their names.
pub async fn prune_unused(c: &Client, filters: Vec<String>) -> anyhow::Result<Vec<String>> {
    Ok(api(c)
        .prune(c.req(pb::PruneNetworksRequest { filters }))
        .await
        .map_err(|s| daemon_error(s, 1))?
        .into_inner()
        .deleted)
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
