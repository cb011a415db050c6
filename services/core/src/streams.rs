//! Client-opened data streams (containerd's Streaming service): a client opens a stream
//! with an id, and a later call (a Transfer) names that id to send progress, ask for
//! credentials, or move image data in either direction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::types::AnyValue;

/// Messages queued per direction before the sender waits.
const QUEUE: usize = 16;

/// One open stream, as the daemon sees it.
pub struct Stream {
    /// Daemon → client.
    pub tx: mpsc::Sender<AnyValue>,
    /// Client → daemon.
    pub rx: mpsc::Receiver<AnyValue>,
}

impl Stream {
    pub async fn send(&self, msg: AnyValue) -> Result<()> {
        self.tx
            .send(msg)
            .await
            .map_err(|_| Error::Unavailable("stream closed by the client".into()))
    }

    pub async fn recv(&mut self) -> Option<AnyValue> {
        self.rx.recv().await
    }
}

/// The client side of a registered stream, held by the Streaming service adapter.
pub struct Endpoint {
    pub to_client: mpsc::Receiver<AnyValue>,
    pub from_client: mpsc::Sender<AnyValue>,
}

/// Streams waiting to be taken by the call that names them. Cheap to clone.
#[derive(Clone, Default)]
pub struct Streams {
    open: Arc<Mutex<HashMap<(String, String), Stream>>>,
}

impl Streams {
    /// Registers a new stream `id` in `namespace`; AlreadyExists if the id is in use.
    pub fn register(&self, namespace: &str, id: &str) -> Result<Endpoint> {
        if id.is_empty() {
            return Err(Error::invalid("stream id must be set"));
        }
        let (to_client_tx, to_client) = mpsc::channel(QUEUE);
        let (from_client, from_client_rx) = mpsc::channel(QUEUE);
        let mut open = self
            .open
            .lock()
            .map_err(|_| Error::Internal("stream table poisoned".into()))?;
        let key = (namespace.to_string(), id.to_string());
        if open.contains_key(&key) {
            return Err(Error::already_exists(format!("stream {id:?}")));
        }
        open.insert(
            key,
            Stream {
                tx: to_client_tx,
                rx: from_client_rx,
            },
        );
        Ok(Endpoint {
            to_client,
            from_client,
        })
    }

    /// Takes the stream `id` for use by one call. A client may open the stream just after
    /// starting the call, so this waits briefly before answering NotFound.
    pub async fn take(&self, namespace: &str, id: &str) -> Result<Stream> {
        let key = (namespace.to_string(), id.to_string());
        for _ in 0..50 {
            if let Some(s) = self.open.lock().ok().and_then(|mut m| m.remove(&key)) {
                return Ok(s);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(Error::not_found(format!("stream {id:?}")))
    }

    /// Forgets a stream nobody took (its client went away).
    pub fn forget(&self, namespace: &str, id: &str) {
        if let Ok(mut m) = self.open.lock() {
            m.remove(&(namespace.to_string(), id.to_string()));
        }
    }
}
