//! The connection to berthd (or containerd): gRPC over a unix socket, with the namespace
//! header on every call; and the client-side helpers the commands share.

pub mod stdio;
pub mod transfer;

use std::path::PathBuf;

use anyhow::Context;
use hyper_util::rt::TokioIo;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Status};

use crate::labels;

pub struct Client {
    pub channel: Channel,
    pub namespace: String,
}

impl Client {
    pub async fn connect(address: PathBuf, namespace: String) -> anyhow::Result<Client> {
        let path = address.clone();
        let channel = Endpoint::try_from("http://berthd.invalid")?
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
            .with_context(|| format!("cannot connect to berthd at {}", address.display()))?;
        Ok(Client { channel, namespace })
    }

    /// A request carrying the namespace header.
    pub fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Ok(v) = MetadataValue::try_from(self.namespace.as_str()) {
            r.metadata_mut().insert(labels::NAMESPACE_HEADER, v);
        }
        r
    }
}

impl Client {
    /// A request carrying the namespace and lease headers.
    pub fn leased<T>(&self, msg: T, lease: &str) -> Request<T> {
        let mut r = self.req(msg);
        if let Ok(v) = MetadataValue::try_from(lease) {
            r.metadata_mut().insert(labels::LEASE_HEADER, v);
        }
        r
    }

    /// A request carrying the namespace header and, when given, the lease header.
    pub fn maybe_leased<T>(&self, msg: T, lease: Option<&str>) -> Request<T> {
        match lease {
            Some(l) => self.leased(msg, l),
            None => self.req(msg),
        }
    }

    /// Creates a lease that expires by itself after `ttl` (if the CLI dies before ending it)
    /// and holds `resources` (type, id) from the start.
    pub async fn create_lease(
        &self,
        id: Option<String>,
        ttl: std::time::Duration,
        resources: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        use berth_proto::containerd::services::leases::v1 as lpb;
        let mut api = lpb::leases_client::LeasesClient::new(self.channel.clone());
        let expire = std::time::SystemTime::now() + ttl;
        let labels = [(
            labels::GC_EXPIRE.to_string(),
            humantime::format_rfc3339(expire).to_string(),
        )]
        .into();
        let lease = api
            .create(self.req(lpb::CreateRequest {
                id: id.unwrap_or_default(),
                labels,
            }))
            .await
            .map_err(status)?
            .into_inner()
            .lease
            .unwrap_or_default();
        for (kind, rid) in resources {
            api.add_resource(self.req(lpb::AddResourceRequest {
                id: lease.id.clone(),
                resource: Some(lpb::Resource {
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
        use berth_proto::containerd::services::leases::v1 as lpb;
        lpb::leases_client::LeasesClient::new(self.channel.clone())
            .delete(self.req(lpb::DeleteRequest {
                id: id.to_string(),
                sync: true,
            }))
            .await
            .map_err(status)?;
        Ok(())
    }
}

/// Turns a gRPC status into the error the user sees: the daemon's message, which already
/// names the object and the failure class ("container \"x\": not found").
pub fn status(s: Status) -> anyhow::Error {
    if s.message().is_empty() {
        anyhow::anyhow!("{:?}", s.code())
    } else {
        anyhow::anyhow!("{}", s.message())
    }
}
