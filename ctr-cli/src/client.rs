//! The connection to berthd (or containerd): gRPC over a unix socket, with the namespace
//! header on every call.

use std::path::PathBuf;

use anyhow::Context;
use hyper_util::rt::TokioIo;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Status};

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
            r.metadata_mut().insert("containerd-namespace", v);
        }
        r
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
