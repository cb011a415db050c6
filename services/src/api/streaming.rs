//! `containerd.services.streaming.v1.Streaming`.

use crate::api::status::{IntoStatus, OrStatus};
use std::pin::Pin;

use berth_proto::containerd::services::streaming::v1::StreamInit;
use berth_proto::containerd::services::streaming::v1::streaming_server::Streaming;
use futures::{Stream, StreamExt};
use prost::Message;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming as Incoming};

use super::{Services, any_from_wire, any_to_wire, namespace_required};
use crate::error::Error;
use crate::types::AnyValue;

pub struct StreamingApi(pub Services);

type AnyStream = Pin<Box<dyn Stream<Item = Result<prost_types::Any, Status>> + Send>>;

#[tonic::async_trait]
impl Streaming for StreamingApi {
    type StreamStream = AnyStream;

    async fn stream(
        &self,
        req: Request<Incoming<prost_types::Any>>,
    ) -> Result<Response<AnyStream>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let mut input = req.into_inner();
        let first = input
            .message()
            .await?
            .ok_or_else(|| Error::invalid("stream closed before StreamInit"))
            .or_status()?;
        if !first
            .type_url
            .ends_with("containerd.services.streaming.v1.StreamInit")
        {
            return Err(Error::invalid(format!(
                "first stream message must be StreamInit, got {}",
                first.type_url
            ))
            .into_status());
        }
        let init = StreamInit::decode(first.value.as_slice())
            .map_err(|e| Error::invalid(format!("decode StreamInit: {e}")))
            .or_status()?;
        let endpoint = self.0.streams.register(&ns, &init.id).or_status()?;
        tracing::debug!(namespace = %ns, stream = %init.id, "stream registered");

        // Client → daemon: forward until the client closes its side.
        let from_client = endpoint.from_client;
        let (streams, id, ns2) = (self.0.streams.clone(), init.id.clone(), ns.clone());
        tokio::spawn(async move {
            loop {
                match input.message().await {
                    Ok(Some(msg)) => {
                        if from_client.send(any_from_wire(msg)).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => {
                        tracing::debug!(stream = %id, "client closed its side of the stream");
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(stream = %id, error = %e, "stream from client ended");
                        break;
                    }
                }
            }
            // The client is done sending: let the taker see the end of its data.
            drop(from_client);
            // A client may close its sending side and still wait for what the daemon sends
            // (a progress stream does): give the call that names the stream time to take
            // it, then drop it if nobody did.
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            streams.forget(&ns2, &id);
        });

        // The acknowledgement containerd sends once the stream is registered.
        let ack = AnyValue {
            type_url: "google.protobuf.Empty".into(),
            value: Vec::new(),
        };
        let out = futures::stream::once(async move { Ok(any_to_wire(ack)) })
            .chain(ReceiverStream::new(endpoint.to_client).map(|m| Ok(any_to_wire(m))));
        Ok(Response::new(Box::pin(out)))
    }
}
