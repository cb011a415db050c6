//! The client layer: everything the commands do against berthd (or containerd), as typed
//! operations over one connection. Commands parse flags, call these and print; they never
//! call each other.
//!
//! The connection is gRPC over a unix socket, with the namespace header on every call.

pub mod attach;
pub mod build;
pub mod changes;
pub mod commit;
pub mod compose;
pub mod containers;
pub mod content;
pub mod docker;
pub mod image_config;
pub mod image_import;
pub mod images;
pub mod layers;
pub mod leases;
pub mod logs;
pub mod metrics;
pub mod mounts;
pub mod networks;
pub mod ports;
pub mod process;
pub mod registry;
pub mod rootfs;
pub mod signal;
pub mod snapshots;
pub mod spec;
pub mod staging;
pub mod stdio;
pub mod supervisor;
pub mod tasks;
pub mod transfer;
pub mod usage;
pub mod volumes;

use std::path::PathBuf;

use anyhow::Context;
use hyper_util::rt::TokioIo;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Status};

use crate::labels;

#[derive(Clone)]
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

/// `Ok` for a call whose object was already gone (NotFound), else the call's own result.
pub fn gone_ok<T>(r: Result<T, Status>) -> anyhow::Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.code() == tonic::Code::NotFound => Ok(()),
        Err(e) => Err(status(e)),
    }
}
