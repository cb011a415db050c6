//! `berth.services.registry.v1.Registry`: berth's own API for a login check, a catalog
//! search and the registry configuration. Conversion only; the rules are the registry
//! core's (`crate::registry`).

use berth_proto::berth::services::registry::v1 as pb;
use berth_proto::berth::services::registry::v1::registry_server::Registry;
use tonic::{Request, Response, Status};

use super::Services;
use crate::api::status::OrStatus;
use crate::registry::auth::Credentials;

pub struct RegistryApi(pub Services);

/// Credentials given with a request (none when both are empty).
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
        let creds = Credentials {
            username: req.username,
            password: req.password,
        };
        let server = self
            .0
            .transfers
            .registry_hosts
            .login(&req.server, creds)
            .await
            .or_status()?;
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
        let names = self
            .0
            .transfers
            .registry_hosts
            .search(
                &req.server,
                &req.term,
                req.limit,
                credentials(req.username, req.password),
            )
            .await
            .or_status()?;
        let results = names
            .into_iter()
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
