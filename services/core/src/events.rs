//! The event exchange: everything berthd changes, and everything shims forward, fans out to
//! every subscriber whose filters match.
//!
//! Publishing never blocks: each subscriber has a bounded queue, and one that falls behind
//! loses the oldest events (with a warning) instead of stalling the daemon.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::broadcast;

use crate::error::{Error, Result};
use crate::filters::{Adaptor, Filter};
use crate::identifiers;
use crate::types::AnyValue;

/// The topics berthd itself publishes (shims publish the other `/tasks/...` ones), as
/// containerd names them.
pub mod topics {
    pub const CONTAINER_CREATE: &str = "/containers/create";
    pub const CONTAINER_UPDATE: &str = "/containers/update";
    pub const CONTAINER_DELETE: &str = "/containers/delete";
    pub const IMAGE_CREATE: &str = "/images/create";
    pub const IMAGE_UPDATE: &str = "/images/update";
    pub const IMAGE_DELETE: &str = "/images/delete";
    pub const CONTENT_DELETE: &str = "/content/delete";
    pub const NAMESPACE_CREATE: &str = "/namespaces/create";
    pub const NAMESPACE_UPDATE: &str = "/namespaces/update";
    pub const NAMESPACE_DELETE: &str = "/namespaces/delete";
    pub const VOLUME_CREATE: &str = "/volumes/create";
    pub const VOLUME_DELETE: &str = "/volumes/delete";
    pub const SNAPSHOT_PREPARE: &str = "/snapshot/prepare";
    pub const SNAPSHOT_COMMIT: &str = "/snapshot/commit";
    pub const SNAPSHOT_REMOVE: &str = "/snapshot/remove";
    pub const TASK_EXIT: &str = "/tasks/exit";
    pub const TASK_DELETE: &str = "/tasks/delete";
}

/// Events a slow subscriber may lag behind before it starts losing them. The queue's slots
/// are allocated up front, so each holds a pointer to its envelope, not the envelope
/// (4096 inline envelopes were 548 KiB of berthd's idle memory).
const QUEUE: usize = 4096;

/// One event on the bus.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub timestamp: SystemTime,
    pub namespace: String,
    pub topic: String,
    pub event: Option<AnyValue>,
}

/// Looks up fields of the event payload (for `event.*` filters).
pub trait EventFields: Send + Sync {
    fn field(&self, event: &AnyValue, path: &[String]) -> Option<String>;
}

/// No event fields: for subscribers whose filters name only `namespace` and `topic`.
pub struct NoFields;

impl EventFields for NoFields {
    fn field(&self, _: &AnyValue, _: &[String]) -> Option<String> {
        None
    }
}

/// Adapts an envelope to the filter language: `namespace`, `topic`, `event.<field>...`.
struct EnvelopeAdaptor<'a> {
    envelope: &'a Envelope,
    fields: &'a dyn EventFields,
}

impl Adaptor for EnvelopeAdaptor<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        let e = self.envelope;
        match path.first().map(String::as_str)? {
            "namespace" => (!e.namespace.is_empty()).then(|| e.namespace.clone()),
            "topic" => (!e.topic.is_empty()).then(|| e.topic.clone()),
            "event" => {
                let event = e.event.as_ref()?;
                self.fields.field(event, &path[1..])
            }
            _ => None,
        }
    }
}

/// Checks a topic the way containerd does: `/` followed by identifier components.
pub fn validate_topic(topic: &str) -> Result<()> {
    let inner = || -> Result<()> {
        if topic.is_empty() {
            return Err(Error::invalid("must not be empty"));
        }
        let Some(rest) = topic.strip_prefix('/') else {
            return Err(Error::invalid("must start with '/'"));
        };
        if rest.is_empty() {
            return Err(Error::invalid("must have at least one component"));
        }
        for component in rest.split('/') {
            identifiers::validate(component)
                .map_err(|e| e.context(&format!("failed validation on component {component:?}")))?;
        }
        Ok(())
    };
    inner().map_err(|e| e.context(&format!("envelope topic {topic:?}")))
}

/// Checks an envelope forwarded from elsewhere (a shim, another daemon).
pub fn validate_envelope(e: &Envelope) -> Result<()> {
    identifiers::validate(&e.namespace)
        .map_err(|err| err.context("event envelope has invalid namespace"))?;
    validate_topic(&e.topic)?;
    if e.timestamp == SystemTime::UNIX_EPOCH {
        return Err(Error::invalid("timestamp must be set on forwarded event"));
    }
    Ok(())
}

/// The exchange. Cheap to clone.
#[derive(Clone)]
pub struct Exchange {
    tx: broadcast::Sender<Arc<Envelope>>,
    closed: tokio::sync::watch::Sender<bool>,
}

impl Default for Exchange {
    fn default() -> Self {
        Self::new()
    }
}

impl Exchange {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(QUEUE);
        let (closed, _) = tokio::sync::watch::channel(false);
        Exchange { tx, closed }
    }

    /// Publishes an event that happened in `namespace`.
    pub fn publish(&self, namespace: &str, topic: &str, event: AnyValue) -> Result<()> {
        validate_topic(topic)?;
        identifiers::validate(namespace).map_err(|e| e.context("namespace validation"))?;
        self.send(Envelope {
            timestamp: SystemTime::now(),
            namespace: namespace.to_string(),
            topic: topic.to_string(),
            event: Some(event),
        });
        Ok(())
    }

    /// Re-publishes an envelope created elsewhere, keeping its timestamp and namespace.
    pub fn forward(&self, envelope: Envelope) -> Result<()> {
        validate_envelope(&envelope)?;
        self.send(envelope);
        Ok(())
    }

    fn send(&self, envelope: Envelope) {
        tracing::debug!(namespace = %envelope.namespace, topic = %envelope.topic, "event");
        // An error only means nobody is subscribed.
        let _ = self.tx.send(Arc::new(envelope));
    }

    /// A subscription that yields the envelopes matching `filter`.
    pub fn subscribe(&self, filter: Filter) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
            closed: self.closed.subscribe(),
            filter,
        }
    }

    /// Ends every subscription (at shutdown, so that streaming clients let go).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }
}

/// A live subscription.
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Envelope>>,
    closed: tokio::sync::watch::Receiver<bool>,
    filter: Filter,
}

impl Subscription {
    /// The next matching envelope; None once the exchange is closed.
    pub async fn next(&mut self, fields: &dyn EventFields) -> Option<Envelope> {
        loop {
            if *self.closed.borrow() {
                return None;
            }
            let received = tokio::select! {
                r = self.rx.recv() => r,
                _ = self.closed.changed() => return None,
            };
            match received {
                Ok(e) => {
                    let adaptor = EnvelopeAdaptor {
                        envelope: &e,
                        fields,
                    };
                    if self.filter.matches(&adaptor) {
                        return Some(Arc::unwrap_or_clone(e));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(lost = n, "event subscriber fell behind; events dropped");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// Packs an event message the way containerd's typeurl does: the type URL is the message's
/// full protobuf name (`containerd.events.ContainerCreate`).
pub fn event_any<M: prost::Name>(m: &M) -> AnyValue {
    AnyValue {
        type_url: M::full_name(),
        value: m.encode_to_vec(),
    }
}

/// Publishes a daemon event; a failure is logged, never returned (the change already
/// happened, as in containerd). The core publishes its own events through this; the
/// adapters reach it as `api::publish`.
pub fn publish<M: prost::Name>(exchange: &Exchange, namespace: &str, topic: &str, m: &M) {
    if let Err(e) = exchange.publish(namespace, topic, event_any(m)) {
        tracing::warn!(%namespace, %topic, error = %e, "publish event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        assert!(validate_topic("/containers/create").is_ok());
        assert_eq!(
            validate_topic("containers").unwrap_err().to_string(),
            "envelope topic \"containers\": must start with '/': invalid argument"
        );
        assert!(validate_topic("/").is_err());
        assert!(validate_topic("").is_err());
        assert!(validate_topic("/a//b").is_err());
    }

    #[tokio::test]
    async fn filtered_subscription() {
        let ex = Exchange::new();
        let mut sub = ex.subscribe(Filter::parse_all(&["topic==\"/b\""]).expect("filter"));
        let any = AnyValue::default();
        ex.publish("ns", "/a", any.clone()).expect("publish");
        ex.publish("ns", "/b", any).expect("publish");
        let got = sub.next(&NoFields).await.expect("event");
        assert_eq!(got.topic, "/b");
        assert_eq!(got.namespace, "ns");
    }
}
