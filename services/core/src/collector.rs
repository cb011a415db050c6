//! Asking for a garbage collection.
//!
//! The garbage collector ([`crate::gc`]) reads every domain's tables, so no domain can name
//! it without an import cycle. The domains hold a [`Collector`] instead: a handle that asks
//! for a collection, soon ([`Collector::schedule`], after a deletion) or now
//! ([`Collector::collect`], a `sync` deletion). [`crate::gc::spawn`] serves the requests.

use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

/// What one collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Blob files removed from disk (no namespace held them any more).
    pub content: usize,
    /// Snapshot records removed (their directories go with the snapshotters' cleanup).
    pub snapshots: usize,
    /// Content records removed from namespaces (a blob may stay for another namespace).
    pub content_records: usize,
    /// Expired leases removed.
    pub leases: usize,
    /// Abandoned ingests removed (their lease is gone, or none held them and they expired).
    pub ingests: usize,
}

/// A request to the collector.
pub(crate) enum Request {
    /// Collect soon (debounced).
    Schedule,
    /// Collect now and report.
    Collect(oneshot::Sender<std::result::Result<Stats, String>>),
}

/// The collector's side of the channel: what [`crate::gc::spawn`] serves.
pub struct Requests(pub(crate) mpsc::UnboundedReceiver<Request>);

/// Asks for collections. Cheap to clone; the collector stops when the last clone is dropped.
#[derive(Clone)]
pub struct Collector {
    tx: mpsc::UnboundedSender<Request>,
}

/// A collector handle and the requests it sends, for [`crate::gc::spawn`] to serve. The
/// handle can be given to the domains before the collector runs.
pub fn channel() -> (Collector, Requests) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Collector { tx }, Requests(rx))
}

impl Collector {
    /// Asks for a collection soon (after deletions); returns at once.
    pub fn schedule(&self) {
        if self.tx.send(Request::Schedule).is_err() {
            tracing::debug!("garbage collector stopped; schedule ignored");
        }
    }

    /// Collects now (after a collection already running, if any) and returns when done.
    pub async fn collect(&self) -> Result<Stats> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Collect(tx))
            .map_err(|_| Error::Unavailable("garbage collector is not running".into()))?;
        match rx.await {
            Ok(Ok(stats)) => Ok(stats),
            Ok(Err(message)) => Err(Error::Internal(format!(
                "garbage collection failed: {message}"
            ))),
            Err(_) => Err(Error::Unavailable(
                "garbage collector stopped before collecting".into(),
            )),
        }
    }

    /// A handle that does not keep the collector running, for what the collector itself
    /// holds (the content store): the collector still stops when the last [`Collector`] goes.
    pub fn downgrade(&self) -> WeakCollector {
        WeakCollector(self.tx.downgrade())
    }

    /// After a deletion: collects now when `sync` (and returns when done), else schedules.
    pub async fn after_delete(&self, sync: bool) -> Result<()> {
        if sync {
            self.collect().await?;
        } else {
            self.schedule();
        }
        Ok(())
    }
}

/// A [`Collector`] that does not keep the collector running (see [`Collector::downgrade`]).
#[derive(Clone)]
pub struct WeakCollector(mpsc::WeakUnboundedSender<Request>);

impl WeakCollector {
    /// Asks for a collection soon, if the collector still runs.
    pub fn schedule(&self) {
        match self.0.upgrade() {
            Some(tx) => Collector { tx }.schedule(),
            None => tracing::debug!("garbage collector stopped; schedule ignored"),
        }
    }
}
