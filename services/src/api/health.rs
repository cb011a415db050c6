//! `grpc.health.v1.Health`: the standard gRPC health service. containerd's client waits for
//! the daemon with it (`IsServing`), as do `grpc_health_probe` and Kubernetes' gRPC probes.
//!
//! The server as a whole (the empty service name) and each service berthd serves answer
//! SERVING while the daemon serves and NOT_SERVING once it is shutting down; any other
//! name is NotFound from Check and SERVICE_UNKNOWN from Watch, as gRPC's own health server
//! answers.

use crate::api::status::IntoStatus;
use std::pin::Pin;

use berth_proto::grpc::health::v1 as pb;
use berth_proto::grpc::health::v1::health_check_response::ServingStatus;
use berth_proto::grpc::health::v1::health_server::Health;
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub struct HealthApi {
    /// Becomes true when the daemon starts shutting down.
    stopping: watch::Receiver<bool>,
    /// The fully qualified names of the services served next to this one.
    services: Vec<String>,
}

impl HealthApi {
    pub fn new(stopping: watch::Receiver<bool>, services: Vec<String>) -> Self {
        HealthApi { stopping, services }
    }

    fn known(&self, service: &str) -> bool {
        service.is_empty() || self.services.iter().any(|s| s == service)
    }

    fn status(stopping: bool) -> ServingStatus {
        if stopping {
            ServingStatus::NotServing
        } else {
            ServingStatus::Serving
        }
    }
}

fn answer(status: ServingStatus) -> pb::HealthCheckResponse {
    pb::HealthCheckResponse {
        status: status.into(),
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthApi {
    async fn check(
        &self,
        req: Request<pb::HealthCheckRequest>,
    ) -> Result<Response<pb::HealthCheckResponse>, Status> {
        let service = req.into_inner().service;
        if !self.known(&service) {
            return Err(crate::error::Error::not_found(format!("service {service}")).into_status());
        }
        Ok(Response::new(answer(Self::status(*self.stopping.borrow()))))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<pb::HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let known = self.known(&req.into_inner().service);
        let mut stopping = self.stopping.clone();
        let stream = async_stream(move |tx| async move {
            let mut last = None;
            loop {
                let now_stopping = *stopping.borrow_and_update();
                let status = if known {
                    Self::status(now_stopping)
                } else {
                    ServingStatus::ServiceUnknown
                };
                if last != Some(status) {
                    last = Some(status);
                    if tx.send(Ok(answer(status))).await.is_err() {
                        return;
                    }
                }
                // A daemon going away ends the call, so that its drain does not wait on it.
                if now_stopping || stopping.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }
}

/// A stream fed by `f` through a small channel.
fn async_stream<F, Fut>(f: F) -> WatchStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pb::HealthCheckResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
