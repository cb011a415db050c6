//! Garbage collection with containerd's semantics: mark from the roots of every namespace,
//! follow references, sweep what was not reached.
//!
//! Roots, per namespace:
//! - images: their target digest, and the `containerd.io/gc.ref.*` labels of the image;
//! - containers: their snapshot (`snapshotter`, `snapshot_key`) and their gc.ref labels;
//! - leases that have not expired: every resource they hold (content, `snapshots/<name>`
//!   keys, ingests — through the digest the ingest expects — and images). A lease labelled
//!   `containerd.io/gc.flat` holds only its resources themselves (and a snapshot's parents,
//!   without which it is no filesystem), not what their labels refer to;
//! - content and snapshots labelled `containerd.io/gc.root`.
//!
//! References: a label `containerd.io/gc.ref.content` or `containerd.io/gc.ref.content.<x>`
//! (or `/<x>`) names a digest in the same namespace; `containerd.io/gc.ref.snapshot.<name>`
//! (optionally followed by `/<x>`) names a snapshot key of snapshotter `<name>`. Content and
//! snapshot labels are followed, and a snapshot holds its parent.
//!
//! One collection reads everything, marks and deletes the unmarked content and snapshot
//! records and the expired leases in ONE write transaction, so nothing can change between
//! mark and sweep (redb readers go on reading the previous snapshot meanwhile). After the
//! commit, the blob files no namespace holds any more are removed and every snapshotter's
//! `cleanup()` removes the directories whose records are gone. The marking itself is the
//! pure function [`mark`] over a [`Graph`], apart from the redb plumbing.
//!
//! [`Collector::schedule`] debounces: a collection starts [`DEBOUNCE`] after the last
//! request (at most [`MAX_DELAY`] after the first), one at a time; requests that arrive
//! during a collection are served by the next one. [`Collector::collect`] runs one now.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use redb::{ReadableTable, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use crate::containers::Container;
use crate::content::{self, ContentStore};
use crate::error::{Error, Result};
use crate::images::Image;
use crate::leases::{self, Lease};
use crate::metadata::{
    self, CONTAINERS, CONTENT, DbContext, IMAGES, LEASE_RESOURCES, LEASES, SNAPSHOTS, Store,
};
use crate::snapshots::Snapshotters;

/// Label that makes content or a snapshot a root.
pub const ROOT_LABEL: &str = berth_snapshotter::GC_ROOT_LABEL;
/// Label prefix of references to content (`containerd.io/gc.ref.content[.x]`).
pub const CONTENT_REF_LABEL: &str = "containerd.io/gc.ref.content";
/// Label prefix of references to snapshots (`containerd.io/gc.ref.snapshot.<snapshotter>`).
pub const SNAPSHOT_REF_PREFIX: &str = "containerd.io/gc.ref.snapshot.";
/// Label that makes a lease hold only its resources, not what they refer to.
pub const FLAT_LABEL: &str = "containerd.io/gc.flat";

/// How long after the last request a scheduled collection starts.
pub const DEBOUNCE: Duration = Duration::from_millis(75);
/// The longest a scheduled collection waits while requests keep coming.
pub const MAX_DELAY: Duration = Duration::from_secs(1);
/// How soon a timed collection (an ingest expiring) is tried again after one failed.
const RETRY: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// The graph and its marking

/// A collectable resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Node {
    Content {
        namespace: String,
        digest: String,
    },
    Snapshot {
        namespace: String,
        snapshotter: String,
        key: String,
    },
}

/// An image record: a root.
#[derive(Debug, Clone, Default)]
pub struct ImageRoot {
    pub namespace: String,
    pub name: String,
    pub target: String,
    pub labels: BTreeMap<String, String>,
}

/// A container record: a root.
#[derive(Debug, Clone, Default)]
pub struct ContainerRoot {
    pub namespace: String,
    pub snapshotter: String,
    pub snapshot_key: String,
    pub labels: BTreeMap<String, String>,
}

/// A lease and what it holds.
#[derive(Debug, Clone, Default)]
pub struct LeaseRoot {
    pub namespace: String,
    pub id: String,
    /// From `containerd.io/gc.expire`.
    pub expires: Option<SystemTime>,
    /// Labelled `containerd.io/gc.flat`.
    pub flat: bool,
    pub resources: Vec<leases::Resource>,
}

/// A snapshot record, as far as collection cares.
#[derive(Debug, Clone, Default)]
pub struct SnapshotEntry {
    pub parent: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// Everything a collection looks at, across all namespaces.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    pub images: Vec<ImageRoot>,
    pub containers: Vec<ContainerRoot>,
    pub leases: Vec<LeaseRoot>,
    /// `(namespace, digest)` → labels.
    pub content: BTreeMap<(String, String), BTreeMap<String, String>>,
    /// `(namespace, snapshotter, key)` → record.
    pub snapshots: BTreeMap<(String, String, String), SnapshotEntry>,
    /// `(namespace, ingest ref)` → the digest the ingest expects (leased ingests only).
    pub ingests: BTreeMap<(String, String), String>,
}

/// What marking found alive, and the leases that expired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marked {
    pub nodes: HashSet<Node>,
    /// `(namespace, lease id)` of the leases whose expiry has passed.
    pub expired_leases: Vec<(String, String)>,
}

impl Marked {
    pub fn has_content(&self, namespace: &str, digest: &str) -> bool {
        self.nodes.contains(&Node::Content {
            namespace: namespace.to_string(),
            digest: digest.to_string(),
        })
    }

    pub fn has_snapshot(&self, namespace: &str, snapshotter: &str, key: &str) -> bool {
        self.nodes.contains(&Node::Snapshot {
            namespace: namespace.to_string(),
            snapshotter: snapshotter.to_string(),
            key: key.to_string(),
        })
    }
}

fn content_node(namespace: &str, digest: &str) -> Node {
    Node::Content {
        namespace: namespace.to_string(),
        digest: digest.to_string(),
    }
}

fn snapshot_node(namespace: &str, snapshotter: &str, key: &str) -> Node {
    Node::Snapshot {
        namespace: namespace.to_string(),
        snapshotter: snapshotter.to_string(),
        key: key.to_string(),
    }
}

/// The resources the gc.ref labels of an object in `namespace` refer to.
pub fn label_refs(namespace: &str, labels: &BTreeMap<String, String>) -> Vec<Node> {
    let mut out = Vec::new();
    for (k, v) in labels {
        if v.is_empty() {
            continue;
        }
        if let Some(rest) = k.strip_prefix(CONTENT_REF_LABEL) {
            // `gc.ref.content`, `gc.ref.content.<x>`, `gc.ref.content/<x>`; not
            // `gc.ref.contentfoo`.
            if rest.is_empty() || rest.starts_with('.') || rest.starts_with('/') {
                out.push(content_node(namespace, v));
            }
        } else if let Some(rest) = k.strip_prefix(SNAPSHOT_REF_PREFIX) {
            let snapshotter = rest.split('/').next().unwrap_or_default();
            if !snapshotter.is_empty() {
                out.push(snapshot_node(namespace, snapshotter, v));
            }
        }
    }
    out
}

/// Marks everything reachable from the roots of `graph` at time `now`.
pub fn mark(graph: &Graph, now: SystemTime) -> Marked {
    // (node, flat): a node reached flat is visited again when reached normally.
    let mut queue: Vec<(Node, bool)> = Vec::new();
    let mut expired_leases = Vec::new();

    for image in &graph.images {
        if !image.target.is_empty() {
            queue.push((content_node(&image.namespace, &image.target), false));
        }
        queue.extend(
            label_refs(&image.namespace, &image.labels)
                .into_iter()
                .map(|n| (n, false)),
        );
    }
    for c in &graph.containers {
        if !c.snapshotter.is_empty() && !c.snapshot_key.is_empty() {
            queue.push((
                snapshot_node(&c.namespace, &c.snapshotter, &c.snapshot_key),
                false,
            ));
        }
        queue.extend(
            label_refs(&c.namespace, &c.labels)
                .into_iter()
                .map(|n| (n, false)),
        );
    }
    for lease in &graph.leases {
        if lease.expires.is_some_and(|at| at <= now) {
            expired_leases.push((lease.namespace.clone(), lease.id.clone()));
            continue;
        }
        let ns = lease.namespace.as_str();
        for r in &lease.resources {
            match r.kind.as_str() {
                leases::kind::CONTENT => queue.push((content_node(ns, &r.id), lease.flat)),
                leases::kind::INGESTS => {
                    if let Some(expected) = graph.ingests.get(&(ns.to_string(), r.id.clone())) {
                        queue.push((content_node(ns, expected), lease.flat));
                    }
                }
                leases::kind::IMAGES => {
                    // Image records are never collected; a leased one holds what it names.
                    for image in graph
                        .images
                        .iter()
                        .filter(|i| i.namespace == ns && i.name == r.id)
                    {
                        queue.push((content_node(ns, &image.target), lease.flat));
                    }
                }
                kind => {
                    if let Some(snapshotter) = kind.strip_prefix(leases::kind::SNAPSHOTS_PREFIX) {
                        queue.push((snapshot_node(ns, snapshotter, &r.id), lease.flat));
                    }
                }
            }
        }
    }
    for ((ns, digest), labels) in &graph.content {
        if labels.contains_key(ROOT_LABEL) {
            queue.push((content_node(ns, digest), false));
        }
    }
    for ((ns, snapshotter, key), s) in &graph.snapshots {
        if s.labels.contains_key(ROOT_LABEL) {
            queue.push((snapshot_node(ns, snapshotter, key), false));
        }
    }

    let mut visited: HashSet<(Node, bool)> = HashSet::new();
    let mut nodes: HashSet<Node> = HashSet::new();
    while let Some((node, flat)) = queue.pop() {
        if visited.contains(&(node.clone(), false)) || !visited.insert((node.clone(), flat)) {
            continue;
        }
        match &node {
            Node::Content { namespace, digest } => {
                if !flat
                    && let Some(labels) = graph.content.get(&(namespace.clone(), digest.clone()))
                {
                    queue.extend(
                        label_refs(namespace, labels)
                            .into_iter()
                            .map(|n| (n, false)),
                    );
                }
            }
            Node::Snapshot {
                namespace,
                snapshotter,
                key,
            } => {
                if let Some(s) =
                    graph
                        .snapshots
                        .get(&(namespace.clone(), snapshotter.clone(), key.clone()))
                {
                    if let Some(parent) = &s.parent {
                        queue.push((snapshot_node(namespace, snapshotter, parent), flat));
                    }
                    if !flat {
                        queue.extend(
                            label_refs(namespace, &s.labels)
                                .into_iter()
                                .map(|n| (n, false)),
                        );
                    }
                }
            }
        }
        nodes.insert(node);
    }
    Marked {
        nodes,
        expired_leases,
    }
}

// ---------------------------------------------------------------------------------------
// The database side

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

/// What the sweep transaction removed.
#[derive(Debug, Default)]
struct Swept {
    content: Vec<(String, String)>,
    snapshots: Vec<(String, String, String)>,
    leases: Vec<(String, String)>,
    /// `(namespace, lease, ref)` of the ingests the live leases hold.
    held_ingests: HashSet<(String, String, String)>,
}

/// Reads the whole graph inside the collection's transaction. `ingest_expected` gives the
/// digest an ingest (namespace, ref) expects, if it exists.
fn load_graph(
    txn: &WriteTransaction,
    ingest_expected: &dyn Fn(&str, &str) -> Option<String>,
) -> Result<Graph> {
    let mut g = Graph::default();
    {
        let t = txn.open_table(IMAGES).ctx("open images")?;
        for item in t.iter().ctx("scan images")? {
            let (k, v) = item.ctx("read image")?;
            let (ns, name) = k.value();
            let image: Image = metadata::decode("image", name, v.value())?;
            g.images.push(ImageRoot {
                namespace: ns.to_string(),
                name: name.to_string(),
                target: image.target().digest,
                labels: image.labels,
            });
        }
    }
    {
        let t = txn.open_table(CONTAINERS).ctx("open containers")?;
        for item in t.iter().ctx("scan containers")? {
            let (k, v) = item.ctx("read container")?;
            let (ns, id) = k.value();
            let c: Container = metadata::decode("container", id, v.value())?;
            g.containers.push(ContainerRoot {
                namespace: ns.to_string(),
                snapshotter: c.snapshotter,
                snapshot_key: c.snapshot_key,
                labels: c.labels,
            });
        }
    }
    {
        let t = txn.open_table(LEASES).ctx("open leases")?;
        let r = txn
            .open_table(LEASE_RESOURCES)
            .ctx("open lease_resources")?;
        for item in t.iter().ctx("scan leases")? {
            let (k, v) = item.ctx("read lease")?;
            let (ns, id) = k.value();
            let lease: Lease = metadata::decode("lease", id, v.value())?;
            let mut resources = Vec::new();
            for item in r.range((ns, id, "", "")..).ctx("scan lease resources")? {
                let (k, _) = item.ctx("read lease resource")?;
                let (rns, rlease, kind, rid) = k.value();
                if rns != ns || rlease != id {
                    break;
                }
                if kind == "ingests"
                    && let Some(expected) = ingest_expected(ns, rid)
                {
                    g.ingests
                        .insert((ns.to_string(), rid.to_string()), expected);
                }
                resources.push(leases::Resource {
                    id: rid.to_string(),
                    kind: kind.to_string(),
                });
            }
            g.leases.push(LeaseRoot {
                namespace: ns.to_string(),
                id: id.to_string(),
                expires: lease.expires_at(),
                flat: lease.labels.contains_key(FLAT_LABEL),
                resources,
            });
        }
    }
    {
        let t = txn.open_table(CONTENT).ctx("open content")?;
        for item in t.iter().ctx("scan content")? {
            let (k, v) = item.ctx("read content")?;
            let (ns, digest) = k.value();
            let info: content::Info = metadata::decode("content", digest, v.value())?;
            g.content
                .insert((ns.to_string(), digest.to_string()), info.labels);
        }
    }
    {
        let t = txn.open_table(SNAPSHOTS).ctx("open snapshots")?;
        for item in t.iter().ctx("scan snapshots")? {
            let (k, v) = item.ctx("read snapshot")?;
            let (ns, snapshotter, key) = k.value();
            let rec = berth_snapshotter::metastore::decode(key, v.value())?;
            g.snapshots.insert(
                (ns.to_string(), snapshotter.to_string(), key.to_string()),
                SnapshotEntry {
                    parent: (!rec.parent.is_empty()).then_some(rec.parent),
                    labels: rec.labels,
                },
            );
        }
    }
    Ok(g)
}

/// Marks and deletes, all in `txn`.
fn sweep(
    txn: &WriteTransaction,
    ingest_expected: &dyn Fn(&str, &str) -> Option<String>,
    now: SystemTime,
) -> Result<Swept> {
    let graph = load_graph(txn, ingest_expected)?;
    let marked = mark(&graph, now);
    let mut swept = Swept::default();
    for (ns, id) in &marked.expired_leases {
        if leases::remove_lease(txn, ns, id)? {
            swept.leases.push((ns.clone(), id.clone()));
        }
    }
    let expired: HashSet<&(String, String)> = marked.expired_leases.iter().collect();
    for lease in &graph.leases {
        if expired.contains(&(lease.namespace.clone(), lease.id.clone())) {
            continue;
        }
        for r in lease
            .resources
            .iter()
            .filter(|r| r.kind == leases::kind::INGESTS)
        {
            swept
                .held_ingests
                .insert((lease.namespace.clone(), lease.id.clone(), r.id.clone()));
        }
    }
    {
        let mut t = txn.open_table(CONTENT).ctx("open content")?;
        for (ns, digest) in graph.content.keys() {
            if !marked.has_content(ns, digest) {
                t.remove((ns.as_str(), digest.as_str()))
                    .ctx("delete content")?;
                swept.content.push((ns.clone(), digest.clone()));
            }
        }
    }
    {
        let mut t = txn.open_table(SNAPSHOTS).ctx("open snapshots")?;
        for (ns, snapshotter, key) in graph.snapshots.keys() {
            if !marked.has_snapshot(ns, snapshotter, key) {
                t.remove((ns.as_str(), snapshotter.as_str(), key.as_str()))
                    .ctx("delete snapshot")?;
                swept
                    .snapshots
                    .push((ns.clone(), snapshotter.clone(), key.clone()));
            }
        }
    }
    Ok(swept)
}

// ---------------------------------------------------------------------------------------
// Scheduling

enum Request {
    /// Collect soon (debounced).
    Schedule,
    /// Collect now and report.
    Collect(oneshot::Sender<std::result::Result<Stats, String>>),
}

/// What a collection works on. Cheap to clone.
#[derive(Clone)]
struct Worker {
    store: Store,
    content: ContentStore,
    snapshotters: Snapshotters,
}

/// Runs collections: scheduled after deletions, or at once (`sync`). Cheap to clone; the
/// collections stop when the last clone is dropped.
#[derive(Clone)]
pub struct Collector {
    tx: mpsc::UnboundedSender<Request>,
}

impl Collector {
    /// Starts the collector's task (on the current tokio runtime).
    pub fn new(store: Store, content: ContentStore, snapshotters: Snapshotters) -> Collector {
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = Worker {
            store,
            content,
            snapshotters,
        };
        tokio::spawn(worker.run(rx));
        Collector { tx }
    }

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
}

impl Worker {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Request>) {
        // When the next ingest no lease holds expires: a collection runs then by itself.
        let mut next_expiry: Option<SystemTime> = None;
        loop {
            let first = match next_expiry {
                Some(at) => {
                    let wait = at
                        .duration_since(SystemTime::now())
                        .unwrap_or_default()
                        .saturating_add(Duration::from_millis(10));
                    tokio::select! {
                        r = rx.recv() => r,
                        _ = tokio::time::sleep(wait) => Some(Request::Schedule),
                    }
                }
                None => rx.recv().await,
            };
            let Some(first) = first else {
                return;
            };
            let mut waiters = Vec::new();
            let mut now = false;
            let take = |r: Request, waiters: &mut Vec<_>| match r {
                Request::Schedule => false,
                Request::Collect(tx) => {
                    waiters.push(tx);
                    true
                }
            };
            now |= take(first, &mut waiters);
            let started = Instant::now();
            let mut closed = false;
            while !now {
                let left = MAX_DELAY.saturating_sub(started.elapsed());
                match tokio::time::timeout(DEBOUNCE.min(left), rx.recv()).await {
                    Err(_) => break,
                    Ok(None) => {
                        closed = true;
                        break;
                    }
                    Ok(Some(r)) => now |= take(r, &mut waiters),
                }
            }
            // Everything asked for so far is served by this collection.
            while let Ok(r) = rx.try_recv() {
                take(r, &mut waiters);
            }
            // Each collection runs as a task of its own: one that panics fails its waiters
            // and the next collection runs as usual; the worker never dies with it.
            let worker = self.clone();
            let result = match tokio::spawn(async move { worker.collect_once().await }).await {
                Ok(Ok((stats, next))) => {
                    next_expiry = next;
                    Ok(stats)
                }
                Ok(Err(e)) => {
                    next_expiry = next_expiry.map(|_| SystemTime::now() + RETRY);
                    tracing::error!(error = %e, "garbage collection failed");
                    Err(e.to_string())
                }
                Err(e) => {
                    next_expiry = next_expiry.map(|_| SystemTime::now() + RETRY);
                    tracing::error!(error = %e, "garbage collection panicked");
                    Err(format!("garbage collection panicked: {e}"))
                }
            };
            for w in waiters {
                let _ = w.send(result.clone());
            }
            if closed {
                return;
            }
        }
    }

    /// One collection: mark and sweep in one transaction, then the files. Also returns when
    /// the next ingest no lease holds expires.
    async fn collect_once(&self) -> Result<(Stats, Option<SystemTime>)> {
        let start = Instant::now();
        let began = SystemTime::now();
        let content = self.content.clone();
        let swept = self
            .store
            .update(move |txn| {
                let expected = |ns: &str, r: &str| content.ingest_expected(ns, r);
                sweep(txn, &expected, SystemTime::now())
            })
            .await?;
        let marked_at = start.elapsed();

        let candidates: Vec<String> = {
            let mut d: Vec<String> = swept.content.iter().map(|(_, d)| d.clone()).collect();
            d.sort();
            d.dedup();
            d
        };
        let removed_blobs = if candidates.is_empty() {
            Vec::new()
        } else {
            self.content.remove_unheld_blobs(candidates).await?
        };
        let ingests = self
            .content
            .sweep_ingests(swept.held_ingests, began)
            .await?;

        let mut cleanup_errors = Vec::new();
        let names: Vec<String> = self.snapshotters.names().map(str::to_string).collect();
        for name in names {
            if let Err(e) = self.snapshotters.run(&name, |s| s.cleanup()).await {
                tracing::warn!(snapshotter = %name, error = %e, "snapshotter cleanup failed");
                cleanup_errors.push(e);
            }
        }

        let stats = Stats {
            content: removed_blobs.len(),
            snapshots: swept.snapshots.len(),
            content_records: swept.content.len(),
            leases: swept.leases.len(),
            ingests: ingests.removed.len(),
        };
        let took = start.elapsed();
        if stats == Stats::default() {
            tracing::debug!(
                duration_ms = took.as_millis() as u64,
                "garbage collected: nothing to remove"
            );
        } else {
            for (ns, id) in &swept.leases {
                tracing::info!(namespace = %ns, lease = %id, "gc: expired lease removed");
            }
            for (ns, d) in &swept.content {
                tracing::debug!(namespace = %ns, digest = %d, "gc: content removed");
            }
            for (ns, ss, key) in &swept.snapshots {
                tracing::debug!(namespace = %ns, snapshotter = %ss, key = %key, "gc: snapshot removed");
            }
            for (ns, r) in &ingests.removed {
                tracing::info!(namespace = %ns, reference = %r, "gc: abandoned ingest removed");
            }
            tracing::info!(
                blobs = stats.content,
                content_records = stats.content_records,
                snapshots = stats.snapshots,
                leases = stats.leases,
                ingests = stats.ingests,
                mark_sweep_ms = marked_at.as_millis() as u64,
                duration_ms = took.as_millis() as u64,
                "garbage collected"
            );
        }
        match cleanup_errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok((stats, ingests.next_expiry)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn content(g: &mut Graph, ns: &str, digest: &str, l: &[(&str, &str)]) {
        g.content
            .insert((ns.to_string(), digest.to_string()), labels(l));
    }

    fn snapshot(
        g: &mut Graph,
        ns: &str,
        ss: &str,
        key: &str,
        parent: Option<&str>,
        l: &[(&str, &str)],
    ) {
        g.snapshots.insert(
            (ns.to_string(), ss.to_string(), key.to_string()),
            SnapshotEntry {
                parent: parent.map(str::to_string),
                labels: labels(l),
            },
        );
    }

    fn res(kind: &str, id: &str) -> leases::Resource {
        leases::Resource {
            id: id.to_string(),
            kind: kind.to_string(),
        }
    }

    /// index → manifest → (config → snapshot chain l2 → l1 → l0, layers) in `ns`.
    fn image_graph(g: &mut Graph, ns: &str, name: &str) {
        content(
            g,
            ns,
            &d('i'),
            &[("containerd.io/gc.ref.content.m.0", &d('m'))],
        );
        content(
            g,
            ns,
            &d('m'),
            &[
                ("containerd.io/gc.ref.content.config", &d('c')),
                ("containerd.io/gc.ref.content.l.0", &d('0')),
                ("containerd.io/gc.ref.content.l.1", &d('1')),
                ("containerd.io/distribution.source.x", "repo"),
            ],
        );
        content(
            g,
            ns,
            &d('c'),
            &[("containerd.io/gc.ref.snapshot.overlayfs", "chain2")],
        );
        content(g, ns, &d('0'), &[]);
        content(g, ns, &d('1'), &[]);
        snapshot(g, ns, "overlayfs", "chain0", None, &[]);
        snapshot(g, ns, "overlayfs", "chain1", Some("chain0"), &[]);
        snapshot(g, ns, "overlayfs", "chain2", Some("chain1"), &[]);
        g.images.push(ImageRoot {
            namespace: ns.to_string(),
            name: name.to_string(),
            target: d('i'),
            labels: BTreeMap::new(),
        });
    }

    fn now() -> SystemTime {
        SystemTime::now()
    }

    #[test]
    fn image_holds_its_whole_tree_and_nothing_else() {
        let mut g = Graph::default();
        image_graph(&mut g, "a", "img");
        content(&mut g, "a", &d('x'), &[]);
        snapshot(&mut g, "a", "overlayfs", "stray", None, &[]);
        snapshot(&mut g, "a", "overlayfs", "stray-child", Some("chain2"), &[]);
        let m = mark(&g, now());
        for c in ['i', 'm', 'c', '0', '1'] {
            assert!(m.has_content("a", &d(c)), "{c} not marked");
        }
        for s in ["chain0", "chain1", "chain2"] {
            assert!(m.has_snapshot("a", "overlayfs", s), "{s} not marked");
        }
        assert!(!m.has_content("a", &d('x')));
        assert!(!m.has_snapshot("a", "overlayfs", "stray"));
        // A child is not held by its parent.
        assert!(!m.has_snapshot("a", "overlayfs", "stray-child"));

        // Without the image, nothing is alive.
        g.images.clear();
        let m = mark(&g, now());
        assert!(m.nodes.is_empty(), "{:?}", m.nodes);
    }

    #[test]
    fn namespaces_are_isolated() {
        let mut g = Graph::default();
        image_graph(&mut g, "a", "img");
        // The same digests and keys in "b", with no image there.
        content(
            &mut g,
            "b",
            &d('i'),
            &[("containerd.io/gc.ref.content.m.0", &d('m'))],
        );
        content(&mut g, "b", &d('m'), &[]);
        snapshot(&mut g, "b", "overlayfs", "chain2", None, &[]);
        let m = mark(&g, now());
        assert!(m.has_content("a", &d('i')));
        assert!(!m.has_content("b", &d('i')));
        assert!(!m.has_content("b", &d('m')));
        assert!(!m.has_snapshot("b", "overlayfs", "chain2"));
    }

    #[test]
    fn label_forms() {
        let l = labels(&[
            ("containerd.io/gc.ref.content", &d('1')),
            ("containerd.io/gc.ref.content.anything.here", &d('2')),
            ("containerd.io/gc.ref.content/slash", &d('3')),
            ("containerd.io/gc.ref.contentious", &d('4')),
            ("containerd.io/gc.ref.snapshot.overlayfs", "k1"),
            ("containerd.io/gc.ref.snapshot.native/extra", "k2"),
            ("containerd.io/gc.ref.snapshot.", "k3"),
            ("containerd.io/gc.ref.content.empty", ""),
            ("other", &d('5')),
        ]);
        let mut refs = label_refs("ns", &l);
        refs.sort();
        assert_eq!(
            refs,
            vec![
                content_node("ns", &d('1')),
                content_node("ns", &d('2')),
                content_node("ns", &d('3')),
                snapshot_node("ns", "native", "k2"),
                snapshot_node("ns", "overlayfs", "k1"),
            ]
        );
    }

    #[test]
    fn containers_hold_their_snapshot_and_its_parents() {
        let mut g = Graph::default();
        snapshot(&mut g, "a", "overlayfs", "base", None, &[]);
        snapshot(&mut g, "a", "overlayfs", "rw", Some("base"), &[]);
        snapshot(&mut g, "a", "native", "rw", None, &[]);
        content(&mut g, "a", &d('s'), &[]);
        g.containers.push(ContainerRoot {
            namespace: "a".into(),
            snapshotter: "overlayfs".into(),
            snapshot_key: "rw".into(),
            labels: labels(&[("containerd.io/gc.ref.content.spec", &d('s'))]),
        });
        let m = mark(&g, now());
        assert!(m.has_snapshot("a", "overlayfs", "rw"));
        assert!(m.has_snapshot("a", "overlayfs", "base"));
        assert!(!m.has_snapshot("a", "native", "rw"));
        assert!(m.has_content("a", &d('s')));
        g.containers.clear();
        assert!(mark(&g, now()).nodes.is_empty());
    }

    #[test]
    fn leases_hold_resources_until_they_expire() {
        let mut g = Graph::default();
        image_graph(&mut g, "a", "img");
        g.images.clear();
        content(&mut g, "a", &d('w'), &[]);
        snapshot(
            &mut g,
            "a",
            "overlayfs",
            "extract-1 chain3",
            Some("chain2"),
            &[],
        );
        g.ingests.insert(("a".into(), "layer-x".into()), d('w'));
        g.leases.push(LeaseRoot {
            namespace: "a".into(),
            id: "pull".into(),
            expires: Some(now() + Duration::from_secs(3600)),
            flat: false,
            resources: vec![
                res("content", &d('i')),
                res("snapshots/overlayfs", "extract-1 chain3"),
                res("ingests", "layer-x"),
            ],
        });
        let m = mark(&g, now());
        assert!(m.expired_leases.is_empty());
        for c in ['i', 'm', 'c', '0', '1', 'w'] {
            assert!(m.has_content("a", &d(c)), "{c}");
        }
        for s in ["chain0", "chain1", "chain2", "extract-1 chain3"] {
            assert!(m.has_snapshot("a", "overlayfs", s), "{s}");
        }

        // Expired: holds nothing, and is reported for removal.
        g.leases[0].expires = Some(now() - Duration::from_secs(1));
        let m = mark(&g, now());
        assert_eq!(
            m.expired_leases,
            vec![("a".to_string(), "pull".to_string())]
        );
        assert!(m.nodes.is_empty());
    }

    #[test]
    fn flat_leases_hold_only_their_resources_and_snapshot_parents() {
        let mut g = Graph::default();
        image_graph(&mut g, "a", "img");
        g.images.clear();
        snapshot(
            &mut g,
            "a",
            "overlayfs",
            "top",
            Some("chain1"),
            &[("containerd.io/gc.ref.content.x", &d('0'))],
        );
        g.leases.push(LeaseRoot {
            namespace: "a".into(),
            id: "flat".into(),
            expires: None,
            flat: true,
            resources: vec![res("content", &d('m')), res("snapshots/overlayfs", "top")],
        });
        let m = mark(&g, now());
        assert!(m.has_content("a", &d('m')));
        // The manifest's references are not followed.
        assert!(!m.has_content("a", &d('c')));
        assert!(!m.has_content("a", &d('1')));
        // The snapshot's parents are; its labels are not.
        assert!(m.has_snapshot("a", "overlayfs", "top"));
        assert!(m.has_snapshot("a", "overlayfs", "chain1"));
        assert!(m.has_snapshot("a", "overlayfs", "chain0"));
        assert!(!m.has_content("a", &d('0')));

        // Reached flat first, then normally: the references are followed after all.
        g.leases.push(LeaseRoot {
            namespace: "a".into(),
            id: "deep".into(),
            expires: None,
            flat: false,
            resources: vec![res("content", &d('m'))],
        });
        let m = mark(&g, now());
        assert!(m.has_content("a", &d('c')));
        assert!(m.has_snapshot("a", "overlayfs", "chain2"));
    }

    #[test]
    fn gc_root_labels_and_shared_configs() {
        let mut g = Graph::default();
        content(
            &mut g,
            "a",
            &d('r'),
            &[(ROOT_LABEL, "2024-01-01T00:00:00Z")],
        );
        content(&mut g, "a", &d('x'), &[]);
        snapshot(
            &mut g,
            "a",
            "native",
            "keep",
            Some("p"),
            &[(ROOT_LABEL, "")],
        );
        snapshot(&mut g, "a", "native", "p", None, &[]);
        let m = mark(&g, now());
        assert!(m.has_content("a", &d('r')));
        assert!(!m.has_content("a", &d('x')));
        assert!(m.has_snapshot("a", "native", "keep"));
        assert!(m.has_snapshot("a", "native", "p"));

        // Two names, one tree: held while either name exists.
        let mut g = Graph::default();
        image_graph(&mut g, "a", "one");
        g.images.push(ImageRoot {
            namespace: "a".into(),
            name: "two".into(),
            target: d('i'),
            labels: BTreeMap::new(),
        });
        g.images.remove(0);
        let m = mark(&g, now());
        assert!(m.has_snapshot("a", "overlayfs", "chain0"));
        assert!(m.has_content("a", &d('1')));
    }

    #[test]
    fn leased_images_and_image_labels() {
        let mut g = Graph::default();
        content(&mut g, "a", &d('t'), &[]);
        content(&mut g, "a", &d('e'), &[]);
        g.images.push(ImageRoot {
            namespace: "a".into(),
            name: "img".into(),
            target: d('t'),
            labels: labels(&[("containerd.io/gc.ref.content.extra", &d('e'))]),
        });
        g.leases.push(LeaseRoot {
            namespace: "a".into(),
            id: "l".into(),
            expires: None,
            flat: false,
            resources: vec![res("images", "img"), res("images", "missing")],
        });
        let m = mark(&g, now());
        assert!(m.has_content("a", &d('t')));
        assert!(m.has_content("a", &d('e')));
    }

    /// The redb side: one collection removes unreferenced records, their blob files and
    /// expired leases, and keeps what the image reaches; `schedule` collects on its own.
    #[tokio::test]
    async fn collector_sweeps_the_database_and_the_files() {
        use crate::images::{Descriptor, Images};
        use berth_snapshotter::metastore::SnapshotRecord;
        use prost::Message;

        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(&dir.path().join("meta.redb")).expect("db");
        let cs = ContentStore::open(
            dir.path(),
            store.clone(),
            crate::content::DEFAULT_INGEST_EXPIRY,
        )
        .expect("content");
        let images = Images::new(store.clone());
        let leases = crate::leases::Leases::new(store.clone());
        let write = |data: &'static [u8], l: BTreeMap<String, String>, lease: Option<String>| {
            let cs = cs.clone();
            async move {
                let mut w = cs
                    .writer("ns", &format!("w-{}", data.len()), 0, "", None)
                    .await
                    .expect("writer");
                w.write(data.to_vec()).await.expect("write");
                w.commit(0, "", l, lease).await.expect("commit").digest
            }
        };
        let child = write(b"child", BTreeMap::new(), None).await;
        let top = write(
            b"top blob",
            labels(&[
                ("containerd.io/gc.ref.content.l.0", &child),
                ("containerd.io/gc.ref.snapshot.overlayfs", "kept"),
            ]),
            None,
        )
        .await;
        let stray = write(b"stray blob!", BTreeMap::new(), None).await;
        let past = humantime::format_rfc3339_seconds(SystemTime::now() - Duration::from_secs(5));
        leases
            .create(
                "ns",
                "old".into(),
                labels(&[(crate::leases::EXPIRE_LABEL, &past.to_string())]),
            )
            .await
            .expect("lease");
        let leased = write(b"leased, expired", BTreeMap::new(), Some("old".into())).await;
        images
            .create(
                "ns",
                Image {
                    name: "img".into(),
                    target: Some(Descriptor {
                        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                        digest: top.clone(),
                        size: 8,
                        annotations: BTreeMap::new(),
                    }),
                    ..Default::default()
                },
            )
            .await
            .expect("image");
        store
            .update(|txn| {
                let mut t = txn.open_table(SNAPSHOTS).ctx("open")?;
                for (key, id) in [("kept", 1u64), ("stray", 2)] {
                    let rec = SnapshotRecord {
                        id,
                        kind: 3,
                        ..Default::default()
                    };
                    t.insert(("ns", "overlayfs", key), rec.encode_to_vec().as_slice())
                        .ctx("insert")?;
                }
                Ok(())
            })
            .await
            .expect("snapshots");

        let snapshotters = Snapshotters::open(dir.path(), &store, "overlayfs");
        let gc = Collector::new(store.clone(), cs.clone(), snapshotters);
        let stats = gc.collect().await.expect("collect");
        assert_eq!(
            stats,
            Stats {
                content: 2,
                snapshots: 1,
                content_records: 2,
                leases: 1,
                ingests: 0,
            }
        );
        for d in [&top, &child] {
            assert!(cs.blob_path(d).expect("path").exists(), "{d} removed");
        }
        for d in [&stray, &leased] {
            assert!(!cs.blob_path(d).expect("path").exists(), "{d} kept");
            assert!(cs.info("ns", d).await.is_err());
        }
        assert!(
            leases
                .list("ns", crate::filters::Filter::always())
                .await
                .expect("leases")
                .is_empty()
        );
        let keys: Vec<String> = store
            .view(|txn| {
                let t = txn.open_table(SNAPSHOTS).ctx("open")?;
                let mut out = Vec::new();
                for item in t.iter().ctx("iter")? {
                    out.push(item.ctx("row")?.0.value().2.to_string());
                }
                Ok(out)
            })
            .await
            .expect("keys");
        assert_eq!(keys, vec!["kept".to_string()]);

        // A scheduled collection after the image goes takes the rest.
        images.delete("ns", "img", None).await.expect("delete");
        gc.schedule();
        let deadline = Instant::now() + Duration::from_secs(5);
        while cs.blob_path(&top).expect("path").exists() {
            assert!(
                Instant::now() < deadline,
                "scheduled collection did not run"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stats = gc.collect().await.expect("collect");
        assert_eq!(stats, Stats::default(), "nothing left to collect");
        assert!(!cs.blob_path(&child).expect("path").exists());
    }

    /// Ingests have owners: one under a lease lives while the lease does and goes at the next
    /// collection after it; one no lease holds goes once untouched for the expiry, by a
    /// collection the collector runs on its own at that time; one being written stays.
    #[tokio::test]
    async fn abandoned_ingests_are_collected() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(&dir.path().join("meta.redb")).expect("db");
        let expiry = Duration::from_millis(600);
        let cs = ContentStore::open(dir.path(), store.clone(), expiry).expect("content");
        let leases = crate::leases::Leases::new(store.clone());
        for id in ["pull", "live"] {
            leases
                .create("ns", id.into(), BTreeMap::new())
                .await
                .expect("lease");
        }
        let ingest = |r: &'static str, lease: Option<&'static str>| {
            let cs = cs.clone();
            async move {
                let mut w = cs
                    .writer("ns", r, 1 << 20, "", lease)
                    .await
                    .expect("writer");
                w.write(b"partial".to_vec()).await.expect("write");
            }
        };
        ingest("by-pull", Some("pull")).await;
        ingest("by-live", Some("live")).await;
        ingest("unleased", None).await;
        let mut busy = cs.writer("ns", "busy", 0, "", None).await.expect("writer");
        busy.write(b"x".to_vec()).await.expect("write");
        // The lease lists the ingest among its resources, as containerd's does.
        let held: Vec<String> = leases
            .list_resources("ns", "pull")
            .await
            .expect("resources")
            .into_iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(held, vec!["ingests/by-pull".to_string()]);
        let refs = || async {
            let mut r: Vec<String> = cs
                .list_statuses("ns", crate::filters::Filter::always())
                .await
                .expect("statuses")
                .into_iter()
                .map(|s| s.reference)
                .collect();
            r.sort();
            r
        };

        let snapshotters = Snapshotters::open(dir.path(), &store, "overlayfs");
        let gc = Collector::new(store.clone(), cs.clone(), snapshotters);
        assert_eq!(gc.collect().await.expect("collect").ingests, 0);
        assert_eq!(refs().await, ["busy", "by-live", "by-pull", "unleased"]);

        // The pull's lease ends: its ingest goes with the next collection.
        leases.delete("ns", "pull").await.expect("delete");
        assert_eq!(gc.collect().await.expect("collect").ingests, 1);
        assert_eq!(refs().await, ["busy", "by-live", "unleased"]);

        // The unleased one expires and is collected without being asked; the one being
        // written stays however old it is.
        let deadline = Instant::now() + Duration::from_secs(10);
        while refs().await.contains(&"unleased".to_string()) {
            assert!(Instant::now() < deadline, "expired ingest not collected");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(expiry).await;
        gc.collect().await.expect("collect");
        assert_eq!(refs().await, ["busy", "by-live"]);
        drop(busy);
        tokio::time::sleep(expiry).await;
        gc.collect().await.expect("collect");
        assert_eq!(
            refs().await,
            ["by-live"],
            "a leased ingest never expires by age"
        );
    }
}
