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
use tokio::sync::mpsc;

use crate::collector::{self, Request, Requests};
pub use crate::collector::{Collector, Stats};
use crate::containers::Container;
use crate::content::{self, ContentStore};
use crate::error::Result;
use crate::images::Image;
use crate::leases::{self, Lease};
use crate::metadata::{
    self, CONTAINERS, CONTENT, DbContext, IMAGES, LEASE_RESOURCES, LEASES, SNAPSHOTS, Store,
};
use crate::snapshots::Snapshotters;

/// Label that makes content or a snapshot a root.
pub const ROOT_LABEL: &str = berth_snapshotter::GC_ROOT_LABEL;
/// Label prefix of references to content: the bare key, and `.x` or `/x` after it (the
/// image format's child labels are the `.x` ones, `berth_oci::image::GC_REF_CONTENT_PREFIX`).
pub const CONTENT_REF_LABEL: &str = "containerd.io/gc.ref.content";
/// Label prefix of references to snapshots (`containerd.io/gc.ref.snapshot.<snapshotter>`),
/// as the image format names it.
pub use berth_oci::image::GC_REF_SNAPSHOT_PREFIX as SNAPSHOT_REF_PREFIX;
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
    let (queue, expired_leases) = roots(graph, now);
    Marked {
        nodes: walk(graph, queue),
        expired_leases,
    }
}

/// Nodes to visit, each with whether it was reached flat (through a flat lease): a node
/// reached flat is visited again when reached normally.
type Queue = Vec<(Node, bool)>;

/// The roots of `graph` at `now`, and the `(namespace, id)` of the leases that expired.
fn roots(graph: &Graph, now: SystemTime) -> (Queue, Vec<(String, String)>) {
    let mut queue = Queue::new();
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
        held_by(graph, lease, &mut queue);
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
    (queue, expired_leases)
}

/// Queues what a live lease holds.
fn held_by(graph: &Graph, lease: &LeaseRoot, queue: &mut Queue) {
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

/// Everything reachable from `queue`: content and snapshot labels are followed (unless
/// reached flat), and a snapshot holds its parent.
fn walk(graph: &Graph, mut queue: Queue) -> HashSet<Node> {
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
    nodes
}

// ---------------------------------------------------------------------------------------
// The database side

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
    load_images(txn, &mut g)?;
    load_containers(txn, &mut g)?;
    load_leases(txn, ingest_expected, &mut g)?;
    load_content(txn, &mut g)?;
    load_snapshots(txn, &mut g)?;
    Ok(g)
}

fn load_images(txn: &WriteTransaction, g: &mut Graph) -> Result<()> {
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
    Ok(())
}

fn load_containers(txn: &WriteTransaction, g: &mut Graph) -> Result<()> {
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
    Ok(())
}

/// The leases with their resources, and the digests their ingests expect.
fn load_leases(
    txn: &WriteTransaction,
    ingest_expected: &dyn Fn(&str, &str) -> Option<String>,
    g: &mut Graph,
) -> Result<()> {
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
    Ok(())
}

fn load_content(txn: &WriteTransaction, g: &mut Graph) -> Result<()> {
    let t = txn.open_table(CONTENT).ctx("open content")?;
    for item in t.iter().ctx("scan content")? {
        let (k, v) = item.ctx("read content")?;
        let (ns, digest) = k.value();
        let info: content::Info = metadata::decode("content", digest, v.value())?;
        g.content
            .insert((ns.to_string(), digest.to_string()), info.labels);
    }
    Ok(())
}

fn load_snapshots(txn: &WriteTransaction, g: &mut Graph) -> Result<()> {
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
    Ok(())
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

/// What a collection works on. Cheap to clone.
#[derive(Clone)]
struct Worker {
    store: Store,
    content: ContentStore,
    snapshotters: Snapshotters,
}

/// Serves `requests` (the other side of a [`Collector`] from [`collector::channel`]) on the
/// current tokio runtime: collections run until the last [`Collector`] clone is dropped.
pub fn spawn(requests: Requests, store: Store, content: ContentStore, snapshotters: Snapshotters) {
    let worker = Worker {
        store,
        content,
        snapshotters,
    };
    tokio::spawn(worker.run(requests.0));
}

/// A collector serving at once: [`collector::channel`] and [`spawn`] in one step.
pub fn start(store: Store, content: ContentStore, snapshotters: Snapshotters) -> Collector {
    let (collector, requests) = collector::channel();
    spawn(requests, store, content, snapshotters);
    collector
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
mod tests;
