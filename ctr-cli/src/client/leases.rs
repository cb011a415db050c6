//! Leases the CLI takes while it builds something (a container's snapshot, a mount, a
//! diff): they hold what is made until a record holds it, and expire by themselves if the
//! CLI dies first.

use berth_proto::containerd::services::leases::v1 as pb;
use berth_proto::containerd::services::leases::v1::leases_client::LeasesClient;

use super::{Client, status};
use crate::labels;

pub fn api(c: &Client) -> LeasesClient<tonic::transport::Channel> {
    LeasesClient::new(c.channel.clone())
}

impl Client {
    /// Creates a lease that expires by itself after `ttl` (if the CLI dies before ending it)
    /// and holds `resources` (type, id) from the start.
    pub async fn create_lease(
        &self,
        id: Option<String>,
        ttl: std::time::Duration,
        resources: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        let mut api = api(self);
        let expire = std::time::SystemTime::now() + ttl;
        let labels = [(
            labels::GC_EXPIRE.to_string(),
            humantime::format_rfc3339(expire).to_string(),
        )]
        .into();
        let lease = api
            .create(self.req(pb::CreateRequest {
                id: id.unwrap_or_default(),
                labels,
            }))
            .await
            .map_err(status)?
            .into_inner()
            .lease
            .unwrap_or_default();
        for (kind, rid) in resources {
            api.add_resource(self.req(pb::AddResourceRequest {
                id: lease.id.clone(),
                resource: Some(pb::Resource {
                    id: rid.to_string(),
                    r#type: kind.to_string(),
                }),
            }))
            .await
            .map_err(status)?;
        }
        Ok(lease.id)
    }

    /// Deletes a lease and waits for what it alone held to be collected.
    pub async fn delete_lease(&self, id: &str) -> anyhow::Result<()> {
        api(self)
            .delete(self.req(pb::DeleteRequest {
                id: id.to_string(),
                sync: true,
            }))
            .await
            .map_err(status)?;
        Ok(())
    }

    /// Ends a lease without waiting for the collector (errors ignored: it expires anyway).
    pub async fn end_lease(&self, id: &str) {
        let _ = api(self)
            .delete(self.req(pb::DeleteRequest {
                id: id.to_string(),
                sync: false,
            }))
            .await;
    }
}
