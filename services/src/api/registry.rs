//! `berth.services.registry.v1.Registry`: berth's own API for a login check, a catalog
//! search and the registry configuration. Conversion only; the HTTP is the registry
//! client's (`crate::registry`).

use berth_proto::berth::services::registry::v1 as pb;
use berth_proto::berth::services::registry::v1::registry_server::Registry;
use tonic::{Request, Response, Status};

use super::Services;
use crate::api::status::OrStatus;
use crate::registry::auth::{Credentials, normalize_host};

/// Docker's default number of search results.
const DEFAULT_LIMIT: u32 = 25;

pub struct RegistryApi(pub Services);

/// The registry host a client named (`http://h:5000/` → `h:5000`; empty and Docker Hub's
/// aliases → `docker.io`).
fn host_of(server: &str) -> String {
    let bare = server
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let bare = bare.split('/').next().unwrap_or(bare);
    if bare.is_empty() {
        return "docker.io".to_string();
    }
    normalize_host(bare)
}

fn credentials(username: String, password: String) -> Option<Credentials> {
    (!username.is_empty() || !password.is_empty()).then_some(Credentials { username, password })
}

#[tonic::async_trait]
impl Registry for RegistryApi {
    async fn login(
        &self,
        req: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let req = req.into_inner();
        let server = host_of(&req.server);
        if req.username.is_empty() || req.password.is_empty() {
            return Err(Status::invalid_argument(
                "username and password must not be empty",
            ));
        }
        let creds = credentials(req.username, req.password);
        let client = self
            .0
            .transfers
            .registry_hosts
            .client(&server, creds)
            .await
            .or_status()?;
        client.check_login().await.or_status()?;
        tracing::info!(registry = %server, "login checked");
        Ok(Response::new(pb::LoginResponse {
            status: "Login Succeeded".to_string(),
            server,
        }))
    }

    async fn search(
        &self,
        req: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let req = req.into_inner();
        let server = host_of(&req.server);
        let limit = if req.limit == 0 {
            DEFAULT_LIMIT
        } else {
            req.limit
        };
        let client = self
            .0
            .transfers
            .registry_hosts
            .client(&server, credentials(req.username, req.password))
            .await
            .or_status()?;
        // The catalog is asked for more than the limit: the term filters it here.
        let names = client.catalog(limit.max(1000)).await.or_status()?;
        let term = req.term.to_ascii_lowercase();
        let results = names
            .into_iter()
            .filter(|n| n.to_ascii_lowercase().contains(&term))
            .take(limit as usize)
            .map(|name| pb::SearchResult { name })
            .collect();
        Ok(Response::new(pb::SearchResponse { results }))
    }

    async fn info(
        &self,
        _req: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        let hosts = &self.0.transfers.registry_hosts;
        let mut insecure = hosts.insecure.clone();
        // Loopback registries are always reached leniently, as Docker lists 127.0.0.0/8.
        insecure.push("127.0.0.0/8".to_string());
        insecure.push("::1/128".to_string());
        Ok(Response::new(pb::InfoResponse {
            mirrors: hosts.mirrors.clone(),
            insecure_registries: insecure,
            config_path: hosts.dir.display().to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_as_clients_name_them() {
        assert_eq!(host_of(""), "docker.io");
        assert_eq!(host_of("http://127.0.0.1:5000/"), "127.0.0.1:5000");
        assert_eq!(host_of("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(host_of("localhost:5000"), "localhost:5000");
    }
}
