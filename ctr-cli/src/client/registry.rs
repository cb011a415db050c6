//! berthd's registry API (`berth.services.registry.v1`): a login checked by the daemon
//! before the CLI stores it, a catalog search, and the registry configuration for `info`.

use berth_proto::berth::services::registry::v1 as pb;
use berth_proto::berth::services::registry::v1::registry_client::RegistryClient;

use super::Client;

fn api(c: &Client) -> RegistryClient<tonic::transport::Channel> {
    RegistryClient::new(c.channel.clone())
}

/// Checks `username`/`password` against `server` (empty: Docker Hub); the registry host the
/// credentials belong to.
pub async fn login(
    c: &Client,
    server: &str,
    username: &str,
    password: &str,
) -> Result<String, tonic::Status> {
    let req = pb::LoginRequest {
        server: server.to_string(),
        username: username.to_string(),
        password: password.to_string(),
    };
    Ok(api(c).login(c.req(req)).await?.into_inner().server)
}

/// The repositories of `server`'s catalog whose name contains `term`.
pub async fn search(
    c: &Client,
    server: &str,
    term: &str,
    limit: u32,
    creds: Option<(String, String)>,
) -> Result<Vec<String>, tonic::Status> {
    let (username, password) = creds.unwrap_or_default();
    let req = pb::SearchRequest {
        server: server.to_string(),
        term: term.to_string(),
        limit,
        username,
        password,
    };
    Ok(api(c)
        .search(c.req(req))
        .await?
        .into_inner()
        .results
        .into_iter()
        .map(|r| r.name)
        .collect())
}

/// The daemon's registry configuration; None from a daemon without the API (containerd).
pub async fn info(c: &Client) -> anyhow::Result<Option<pb::InfoResponse>> {
    match api(c).info(c.req(pb::InfoRequest {})).await {
        Ok(r) => Ok(Some(r.into_inner())),
        Err(e) if e.code() == tonic::Code::Unimplemented => Ok(None),
        Err(e) => Err(super::status(e)),
    }
}
