//! `containerd.services.events.v1.Events` over gRPC, and the ttrpc
//! `containerd.services.events.ttrpc.v1.Events/Forward` that shims call.

use crate::api::status::OrStatus;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use berth_proto::containerd::services::events::v1 as pb;
use berth_proto::containerd::services::events::v1::events_server::Events;
use berth_proto::containerd::types::Envelope as WireEnvelope;
use berth_proto::ttrpc::ttrpc;
use futures::Stream;
use tonic::{Request, Response, Status};

use super::Convert;
use super::{
    ReflectFields, any_from_wire, any_to_wire, namespace_required, system_time_to_timestamp,
    timestamp_to_system_time,
};
use crate::error::Error;
use crate::events::{Envelope, Exchange};
use crate::filters::Filter;
use crate::types::AnyValue;

impl Convert<WireEnvelope> for Envelope {
    fn convert(self) -> WireEnvelope {
        let e = self;
        WireEnvelope {
            timestamp: Some(system_time_to_timestamp(e.timestamp)),
            namespace: e.namespace,
            topic: e.topic,
            event: e.event.map(any_to_wire),
        }
    }
}

impl Convert<Envelope> for WireEnvelope {
    fn convert(self) -> Envelope {
        let e = self;
        Envelope {
            timestamp: e
                .timestamp
                .as_ref()
                .map(timestamp_to_system_time)
                .unwrap_or(UNIX_EPOCH),
            namespace: e.namespace,
            topic: e.topic,
            event: e.event.map(any_from_wire),
        }
    }
}

pub struct EventsApi(pub Exchange);

type EventStream = Pin<Box<dyn Stream<Item = Result<WireEnvelope, Status>> + Send>>;

#[tonic::async_trait]
impl Events for EventsApi {
    async fn publish(&self, req: Request<pb::PublishRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let req = req.into_inner();
        let event = req
            .event
            .ok_or_else(|| Error::invalid("event must be set"))
            .or_status()?;
        self.0
            .publish(&ns, &req.topic, any_from_wire(event))
            .or_status()?;
        Ok(Response::new(()))
    }

    async fn forward(&self, req: Request<pb::ForwardRequest>) -> Result<Response<()>, Status> {
        let envelope = req
            .into_inner()
            .envelope
            .ok_or_else(|| Error::invalid("envelope must be set"))
            .or_status()?;
        self.0.forward(envelope.convert()).or_status()?;
        Ok(Response::new(()))
    }

    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let filter = Filter::parse_all(&req.into_inner().filters).or_status()?;
        let sub = self.0.subscribe(filter);
        let stream = futures::stream::unfold(sub, |mut sub| async move {
            let e = sub.next(&ReflectFields).await?;
            Some((Ok(e.convert()), sub))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The ttrpc events service on `<address>.ttrpc`, where shims forward their events.
pub struct TtrpcEvents(pub Exchange);

fn envelope_from_ttrpc(e: berth_proto::ttrpc::shim::event::Envelope) -> Envelope {
    let timestamp = e
        .timestamp
        .as_ref()
        .map(|t| {
            UNIX_EPOCH
                + Duration::new(
                    u64::try_from(t.seconds).unwrap_or(0),
                    u32::try_from(t.nanos).unwrap_or(0),
                )
        })
        .unwrap_or(UNIX_EPOCH);
    Envelope {
        timestamp,
        namespace: e.namespace,
        topic: e.topic,
        event: e.event.into_option().map(|a| AnyValue {
            type_url: a.type_url,
            value: a.value,
        }),
    }
}

#[async_trait::async_trait]
impl berth_proto::ttrpc::shim_async::Events for TtrpcEvents {
    async fn forward(
        &self,
        _ctx: &ttrpc::r#async::TtrpcContext,
        req: berth_proto::ttrpc::api::ForwardRequest,
    ) -> ttrpc::Result<berth_proto::ttrpc::api::Empty> {
        let envelope = req
            .envelope
            .into_option()
            .ok_or_else(|| Error::invalid("envelope must be set"))
            .map_err(crate::api::status::ttrpc_status)?;
        self.0
            .forward(envelope_from_ttrpc(envelope))
            .map_err(crate::api::status::ttrpc_status)?;
        Ok(berth_proto::ttrpc::api::Empty::new())
    }
}

/// The ttrpc services berthd serves.
pub fn ttrpc_services(exchange: Exchange) -> HashMap<String, ttrpc::r#async::Service> {
    berth_proto::ttrpc::shim_async::create_events(Arc::new(TtrpcEvents(exchange)))
}
