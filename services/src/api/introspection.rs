//! `containerd.services.introspection.v1.Introspection`.

use crate::api::status::{IntoStatus, OrStatus};
use berth_proto::containerd::services::introspection::v1 as pb;
use berth_proto::containerd::services::introspection::v1::introspection_server::Introspection;
use tonic::{Request, Response, Status};

use super::Services;
use crate::error::Error;
use crate::filters::Filter;
use crate::plugins::PluginInfo;

impl From<&PluginInfo> for pb::Plugin {
    fn from(p: &PluginInfo) -> Self {
        pb::Plugin {
            r#type: p.kind.clone(),
            id: p.id.clone(),
            requires: p.requires.clone(),
            platforms: Vec::new(),
            exports: p.exports.clone(),
            capabilities: p.capabilities.clone(),
            init_err: None,
        }
    }
}

/// The inode number of this process's pid namespace.
fn pid_namespace() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid")
        .map(|m| m.ino())
        .unwrap_or(0)
}

pub struct IntrospectionApi(pub Services);

#[tonic::async_trait]
impl Introspection for IntrospectionApi {
    async fn plugins(
        &self,
        req: Request<pb::PluginsRequest>,
    ) -> Result<Response<pb::PluginsResponse>, Status> {
        let filter = Filter::parse_all(&req.into_inner().filters).or_status()?;
        let plugins = self
            .0
            .plugins
            .get()
            .into_iter()
            .flatten()
            .filter(|p| filter.matches(*p))
            .map(pb::Plugin::from)
            .collect();
        Ok(Response::new(pb::PluginsResponse { plugins }))
    }

    async fn server(&self, _req: Request<()>) -> Result<Response<pb::ServerResponse>, Status> {
        Ok(Response::new(pb::ServerResponse {
            uuid: self.0.server_uuid.clone(),
            pid: u64::from(std::process::id()),
            pidns: pid_namespace(),
            deprecations: Vec::new(),
        }))
    }

    async fn plugin_info(
        &self,
        req: Request<pb::PluginInfoRequest>,
    ) -> Result<Response<pb::PluginInfoResponse>, Status> {
        let req = req.into_inner();
        let (kind, id) = match req.id.rsplit_once('.') {
            Some((kind, id)) if kind.starts_with("io.") => (Some(kind), id),
            _ => (None, req.id.as_str()),
        };
        let plugin = self
            .0
            .plugins
            .get()
            .into_iter()
            .flatten()
            .find(|p| p.id == id && kind.is_none_or(|k| k == p.kind))
            .ok_or_else(|| Error::not_found(format!("plugin {:?}", req.id)))
            .or_status()?;
        if req.options.is_some() {
            return Err(Error::NotImplemented(format!(
                "plugin {:?} takes no info options",
                req.id
            ))
            .into_status());
        }
        Ok(Response::new(pb::PluginInfoResponse {
            plugin: Some(plugin.into()),
            extra: None,
        }))
    }
}
