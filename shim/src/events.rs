//! Reliable event publishing to the daemon.
//!
//! Every event goes into one in-order queue; a single background task forwards the queue's
//! head to the daemon (`containerd.services.events.ttrpc.v1.Events/Forward` on the
//! `TTRPC_ADDRESS` socket) and removes it only once the daemon accepted it. While the
//! daemon is down the task retries with a growing pause (100 ms doubling to 2 s),
//! reconnecting each time, so a task's exit survives a daemon restart. Publishing only
//! appends to the queue: it never waits for the daemon, so no ttrpc handler blocks on it.
//!
//! The queue is bounded: past [`QUEUE_CAP`] events the oldest event that is not an exit is
//! dropped (and logged); exits go only when nothing else is left to drop.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::{Client, EventsClient};
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::context::Context;
use tokio::sync::Notify;

/// A task event the shim publishes, with its protobuf type name (the `Any`'s type URL, as
/// containerd's shims write it).
///
/// The name is a constant rather than asked of the message's descriptor: rust-protobuf
/// builds a message's descriptor by parsing its whole `.proto` file and every file it
/// imports (the events' import `descriptor.proto`, comments and all) and keeps them for
/// the life of the process, ~0.3 MB of heap in every idle shim.
pub trait Event: Message {
    const TYPE: &'static str;
}

macro_rules! events {
    ($($t:ident),*) => {
        $(impl Event for $t {
            const TYPE: &'static str = concat!("containerd.events.", stringify!($t));
        })*
    };
}

events!(
    TaskCreate,
    TaskStart,
    TaskExit,
    TaskOOM,
    TaskExecAdded,
    TaskExecStarted,
    TaskDelete,
    TaskPaused,
    TaskResumed
);

/// Most events kept while the daemon does not take them.
pub const QUEUE_CAP: usize = 1024;
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long one Forward may take before the connection counts as broken.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Where events go: the daemon, or a test's fake.
#[async_trait]
pub trait Sink: Send + 'static {
    /// Delivers one event; an error means "not delivered, try again later".
    async fn send(&mut self, envelope: &Envelope) -> Result<(), String>;
}

/// The daemon's events service over ttrpc; connects lazily and again after any failure.
pub struct TtrpcSink {
    address: String,
    client: Option<EventsClient>,
}

impl TtrpcSink {
    /// `address` is `TTRPC_ADDRESS`: a socket path or a `unix://` URI.
    pub fn new(address: &str) -> TtrpcSink {
        let address = if address.contains("://") {
            address.to_string()
        } else {
            format!("unix://{address}")
        };
        TtrpcSink {
            address,
            client: None,
        }
    }
}

#[async_trait]
impl Sink for TtrpcSink {
    async fn send(&mut self, envelope: &Envelope) -> Result<(), String> {
        let client = match &self.client {
            Some(c) => c.clone(),
            None => {
                let c = Client::connect(&self.address)
                    .await
                    .map_err(|e| format!("connect to {}: {e}", self.address))?;
                let c = EventsClient::new(c);
                self.client = Some(c.clone());
                c
            }
        };
        let req = ForwardRequest {
            envelope: MessageField::some(envelope.clone()),
            ..Default::default()
        };
        let sent = tokio::time::timeout(FORWARD_TIMEOUT, client.forward(Context::default(), &req))
            .await
            .map_err(|_| format!("forward to {}: timed out", self.address))
            .and_then(|r| r.map_err(|e| format!("forward to {}: {e}", self.address)));
        if sent.is_err() {
            self.client = None;
        }
        sent.map(drop)
    }
}

struct Item {
    seq: u64,
    exit: bool,
    envelope: Envelope,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    next_seq: u64,
}

struct Shared {
    namespace: String,
    queue: Mutex<Queue>,
    /// Wakes the sender when an event arrives.
    added: Notify,
    /// Wakes waiters of [`EventQueue::drained`] when the queue empties.
    emptied: Notify,
}

/// The shim's outgoing events. Cheap to clone.
#[derive(Clone)]
pub struct EventQueue {
    shared: Arc<Shared>,
}

impl EventQueue {
    /// Starts the sender task on the current runtime.
    pub fn start(namespace: &str, sink: impl Sink) -> EventQueue {
        let q = EventQueue {
            shared: Arc::new(Shared {
                namespace: namespace.to_string(),
                queue: Mutex::new(Queue::default()),
                added: Notify::new(),
                emptied: Notify::new(),
            }),
        };
        // The sender lives as long as the shim (or the test's runtime).
        tokio::spawn(run(q.shared.clone(), sink));
        q
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.shared.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `event` under `topic`; returns at once.
    pub fn publish<E: Event>(&self, topic: &str, event: &E) {
        let mut value = Vec::new();
        if let Err(e) = event.write_to_vec(&mut value) {
            log::error!("publish {topic}: encode the event: {e}");
            return;
        }
        let envelope = Envelope {
            timestamp: MessageField::some(SystemTime::now().into()),
            namespace: self.shared.namespace.clone(),
            topic: topic.to_string(),
            event: MessageField::some(Any {
                type_url: E::TYPE.to_string(),
                value,
                ..Default::default()
            }),
            ..Default::default()
        };
        self.push(envelope);
    }

    fn push(&self, envelope: Envelope) {
        {
            let mut q = self.lock();
            if q.items.len() >= QUEUE_CAP {
                let victim = q.items.iter().position(|i| !i.exit).unwrap_or(0);
                if let Some(dropped) = q.items.remove(victim) {
                    log::warn!(
                        "event queue full ({QUEUE_CAP}): dropped {} event {}",
                        if dropped.exit { "exit" } else { "the oldest" },
                        dropped.envelope.topic
                    );
                }
            }
            let seq = q.next_seq;
            q.next_seq += 1;
            let exit = envelope.topic == topics::TASK_EXIT_EVENT_TOPIC;
            q.items.push_back(Item {
                seq,
                exit,
                envelope,
            });
        }
        self.shared.added.notify_one();
    }

    /// How many events wait for the daemon.
    pub fn pending(&self) -> usize {
        self.lock().items.len()
    }

    /// Waits until every queued event was delivered, at most `limit`.
    pub async fn drained(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let emptied = self.shared.emptied.notified();
                if self.pending() == 0 {
                    return;
                }
                emptied.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

/// The sender: forwards the head of the queue until it is taken, in order.
async fn run(s: Arc<Shared>, mut sink: impl Sink) {
    let mut backoff = BACKOFF_START;
    loop {
        let added = s.added.notified();
        let head = {
            let q = s.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.items.front().map(|i| (i.seq, i.envelope.clone()))
        };
        let Some((seq, envelope)) = head else {
            s.emptied.notify_waiters();
            added.await;
            continue;
        };
        match sink.send(&envelope).await {
            Ok(()) => {
                backoff = BACKOFF_START;
                let mut q = s.queue.lock().unwrap_or_else(|p| p.into_inner());
                // The head may have been dropped by the cap meanwhile: remove by seq.
                if let Some(pos) = q.items.iter().position(|i| i.seq == seq) {
                    q.items.remove(pos);
                }
            }
            Err(e) => {
                log::warn!("publish {}: {e}; retrying in {backoff:?}", envelope.topic);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::MessageFull;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn named<E: Event + MessageFull>() {
        assert_eq!(E::TYPE, E::descriptor().full_name());
    }

    #[test]
    fn event_type_names_are_the_descriptors() {
        named::<TaskCreate>();
        named::<TaskStart>();
        named::<TaskExit>();
        named::<TaskOOM>();
        named::<TaskExecAdded>();
        named::<TaskExecStarted>();
        named::<TaskDelete>();
        named::<TaskPaused>();
        named::<TaskResumed>();
    }

    /// Fails the first `fail` sends, then records what it accepts.
    struct Flaky {
        fail: Arc<AtomicUsize>,
        got: Arc<Mutex<Vec<String>>>,
    }

    #[async_trait]
    impl Sink for Flaky {
        async fn send(&mut self, envelope: &Envelope) -> Result<(), String> {
            if self
                .fail
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err("daemon down".into());
            }
            let start = TaskStart::parse_from_bytes(&envelope.event.value).expect("decode");
            self.got
                .lock()
                .expect("lock")
                .push(format!("{} {}", envelope.topic, start.container_id));
            Ok(())
        }
    }

    use containerd_shim_protos::protobuf::Message;

    fn start(id: &str) -> TaskStart {
        TaskStart {
            container_id: id.into(),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_in_order_until_taken() {
        let fail = Arc::new(AtomicUsize::new(5));
        let got = Arc::new(Mutex::new(Vec::new()));
        let q = EventQueue::start(
            "default",
            Flaky {
                fail: fail.clone(),
                got: got.clone(),
            },
        );
        for i in 0..10 {
            q.publish("/tasks/start", &start(&format!("c{i}")));
        }
        assert!(q.drained(Duration::from_secs(60)).await, "not drained");
        let want: Vec<String> = (0..10).map(|i| format!("/tasks/start c{i}")).collect();
        assert_eq!(*got.lock().expect("lock"), want);
        assert_eq!(fail.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_grows_to_two_seconds() {
        let fail = Arc::new(AtomicUsize::new(8));
        let got = Arc::new(Mutex::new(Vec::new()));
        let q = EventQueue::start(
            "default",
            Flaky {
                fail,
                got: got.clone(),
            },
        );
        let t0 = tokio::time::Instant::now();
        q.publish("/tasks/start", &start("c1"));
        assert!(q.drained(Duration::from_secs(60)).await);
        // 0.1 + 0.2 + 0.4 + 0.8 + 1.6 + 2 + 2 + 2
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(9100) && waited < Duration::from_millis(9500),
            "{waited:?}"
        );
        assert_eq!(got.lock().expect("lock").len(), 1);
    }

    #[tokio::test]
    async fn cap_drops_oldest_non_exit_first() {
        // A sink that never takes anything: the queue only fills.
        struct Down;
        #[async_trait]
        impl Sink for Down {
            async fn send(&mut self, _: &Envelope) -> Result<(), String> {
                Err("down".into())
            }
        }
        let q = EventQueue::start("default", Down);
        let exit = TaskExit {
            container_id: "c0".into(),
            exit_status: 3,
            ..Default::default()
        };
        q.publish(topics::TASK_EXIT_EVENT_TOPIC, &exit);
        for i in 0..QUEUE_CAP + 10 {
            q.publish("/tasks/start", &start(&format!("s{i}")));
        }
        let items = &q.lock().items;
        assert_eq!(items.len(), QUEUE_CAP);
        assert!(items[0].exit, "the exit event was dropped");
        let first = TaskStart::parse_from_bytes(&items[1].envelope.event.value).expect("decode");
        assert_eq!(first.container_id, "s11");
    }
}
