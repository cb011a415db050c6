//! The content store: immutable blobs addressed by digest, and resumable ingests.
//!
//! ```text
//! <root>/content/
//! ├── blobs/sha256/<hex>        verified, immutable; one file per digest, shared by namespaces
//! └── ingest/<key>/             one in-progress write; key = sha256("<namespace>\0<ref>")
//!     ├── data                  bytes written so far (the offset is its length)
//!     ├── ref                   "<namespace>\n<ref>"
//!     ├── startedat, updatedat  Unix nanoseconds
//!     ├── total                 expected size (0 when unknown)
//!     ├── expected              expected digest ("" when unknown)
//!     └── lease                 the lease of the writer that last opened it (absent: none)
//! ```
//!
//! Which namespaces hold a blob, with its labels and times, lives in the metadata store's
//! `content` table; a blob is visible in a namespace only through that table. A blob file is
//! written to an ingest first, fsynced, verified against its digest and renamed into
//! `blobs/` — a reader never sees a partial blob. Deleting the last namespace's record of a
//! blob removes its file.
//!
//! One writer per ref at a time: a second `writer()` for a ref in use is Unavailable, as in
//! containerd, so clients retry. All file work runs on the blocking pool.
//!
//! An ingest has an owner, as in containerd: a writer opened under a lease adds the ingest to
//! it (resource type `ingests`), and the ingest lives as long as that lease holds it. An
//! ingest no lease holds is abandoned once untouched for the store's ingest expiry. The
//! garbage collector removes both kinds ([`ContentStore::sweep_ingests`]); an ingest being
//! written is never removed.
//!
//! This module is the store and its writers; the files of one ingest are `ingest`'s.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use prost::Message;
use redb::ReadableTable;
use sha2::{Digest as _, Sha256};

use berth_proto::containerd::events::ContentDelete;

use crate::collector::{Collector, WeakCollector};
use crate::error::{Error, Result};
use crate::events::{Exchange, publish, topics};
use crate::filters::{self, Adaptor, Filter};
use crate::leases::{self, Resource};
use crate::metadata::{self, CONTENT, DbContext, Store};
use crate::{digest, labels, namespaces};

mod ingest;
mod session;

pub use ingest::Status;
use ingest::{WriterState, read_i64, read_small, read_status};
pub use session::{WriteAction, WriteRequest, WriteSession, WriteState};

/// Metadata of a blob in one namespace. Stored as the `content` table's record.
#[derive(Clone, PartialEq, Message)]
pub struct Info {
    #[prost(string, tag = "1")]
    pub digest: String,
    #[prost(int64, tag = "2")]
    pub size: i64,
    #[prost(int64, tag = "3")]
    pub created_at: i64,
    #[prost(int64, tag = "4")]
    pub updated_at: i64,
    #[prost(btree_map = "string, string", tag = "5")]
    pub labels: BTreeMap<String, String>,
}

impl Adaptor for Info {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "digest" => (!self.digest.is_empty()).then(|| self.digest.clone()),
            "size" => Some(self.size.to_string()),
            "labels" => filters::map_field(&self.labels, &path[1..]),
            _ => None,
        }
    }
}

struct Inner {
    root: PathBuf,
    store: Store,
    /// Refs with a live writer ("<namespace>\0<ref>") and when it was taken.
    locks: Mutex<HashMap<String, (Instant, std::time::SystemTime)>>,
    /// Per-digest gates (striped by digest): held while a blob file is put in place and
    /// recorded, and while blob files nobody holds are removed, so a commit finding the file
    /// present can't lose it to a removal that checked the records just before the commit
    /// recorded it. Commits of different blobs don't wait for each other.
    blob_gates: Vec<tokio::sync::Mutex<()>>,
    /// How long an ingest no lease holds may stay untouched.
    ingest_expiry: Duration,
    /// Where deletions are published.
    exchange: Exchange,
    /// Asked for a collection after a deletion; weak, as the collector holds this store.
    gc: WeakCollector,
}

/// The default [`ContentStore::ingest_expiry`] (berthd's `content.ingest_expiry`).
pub const DEFAULT_INGEST_EXPIRY: Duration = Duration::from_secs(3600);

/// What [`ContentStore::sweep_ingests`] did.
#[derive(Debug, Default)]
pub(crate) struct IngestSweep {
    /// `(namespace, ref)` of the ingests removed.
    pub removed: Vec<(String, String)>,
    /// When the next ingest no lease holds will have been untouched too long.
    pub next_expiry: Option<SystemTime>,
}

/// How many gates the blobs are spread over.
const BLOB_GATES: usize = 64;

/// A write this big is hashed beside its file write ([`Writer::write`]); below it, the two
/// threads' hand-offs would cost more than they save.
const SIDE_BY_SIDE: usize = 256 * 1024;

impl Inner {
    /// The gate index of a digest.
    fn gate_of(digest: &str) -> usize {
        let h = digest.bytes().fold(0usize, |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        });
        h % BLOB_GATES
    }

    /// Takes the gates of `digests`, in ascending order (so two holders never deadlock).
    async fn lock_blobs<'d>(
        &self,
        digests: impl Iterator<Item = &'d str>,
    ) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        let idx: std::collections::BTreeSet<usize> = digests.map(Self::gate_of).collect();
        let mut guards = Vec::with_capacity(idx.len());
        for i in idx {
            guards.push(self.blob_gates[i].lock().await);
        }
        guards
    }
}

/// The content store. Cheap to clone.
#[derive(Clone)]
pub struct ContentStore {
    inner: Arc<Inner>,
}

fn hex_of(d: &str) -> Result<&str> {
    digest::validate(d)?;
    match d.split_once(':') {
        Some(("sha256", hex)) => Ok(hex),
        _ => Err(Error::NotImplemented(format!(
            "digest algorithm of {d}: only sha256 is stored"
        ))),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("content task: {e}")))?
}

impl ContentStore {
    /// Opens the store under `<root>/content`, creating its directories. An ingest no lease
    /// holds is removed once untouched for `ingest_expiry`. Deletions publish on `exchange`
    /// and ask `gc` for a collection of what the blob's labels referred to.
    pub fn open(
        root: &Path,
        store: Store,
        ingest_expiry: Duration,
        exchange: Exchange,
        gc: &Collector,
    ) -> Result<ContentStore> {
        let root = root.join("content");
        for d in [root.join("blobs").join("sha256"), root.join("ingest")] {
            fs::create_dir_all(&d).map_err(|e| Error::io("create directory", &d, e))?;
        }
        Ok(ContentStore {
            inner: Arc::new(Inner {
                root,
                store,
                locks: Mutex::new(HashMap::new()),
                blob_gates: (0..BLOB_GATES)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
                ingest_expiry,
                exchange,
                gc: gc.downgrade(),
            }),
        })
    }

    /// How long an ingest no lease holds may stay untouched; also how long a failed pull
    /// keeps what it fetched for a resumed pull.
    pub fn ingest_expiry(&self) -> Duration {
        self.inner.ingest_expiry
    }

    /// Where a committed blob lives.
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self
            .inner
            .root
            .join("blobs")
            .join("sha256")
            .join(hex_of(digest)?))
    }

    fn ingest_dir(&self, namespace: &str, reference: &str) -> PathBuf {
        let key = hex::encode(Sha256::digest(
            format!("{namespace}\0{reference}").as_bytes(),
        ));
        self.inner.root.join("ingest").join(key)
    }

    pub async fn info(&self, namespace: &str, digest: &str) -> Result<Info> {
        digest::validate(digest)?;
        let (ns, d) = (namespace.to_string(), digest.to_string());
        self.inner
            .store
            .view(move |txn| {
                let t = txn.open_table(CONTENT).ctx("open content")?;
                let v = t.get((ns.as_str(), d.as_str())).ctx("read content")?;
                match v {
                    Some(v) => metadata::decode("content", &d, v.value()),
                    None => Err(Error::not_found(format!("content digest {d}"))),
                }
            })
            .await
    }

    pub async fn list(&self, namespace: &str, filter: Filter) -> Result<Vec<Info>> {
        let ns = namespace.to_string();
        self.inner
            .store
            .view(move |txn| {
                let t = txn.open_table(CONTENT).ctx("open content")?;
                Ok(metadata::list_in_namespace::<_, Info>(&t, "content", &ns)?
                    .into_iter()
                    .map(|(_, i)| i)
                    .filter(|i| filter.matches(i))
                    .collect())
            })
            .await
    }

    /// Updates the labels named by `paths` (`labels`, `labels.<key>`; all labels when empty).
    pub async fn update(&self, namespace: &str, info: Info, paths: Vec<String>) -> Result<Info> {
        digest::validate(&info.digest)?;
        let ns = namespace.to_string();
        self.inner
            .store
            .update(move |txn| {
                let mut t = txn.open_table(CONTENT).ctx("open content")?;
                let mut stored: Info = match t
                    .get((ns.as_str(), info.digest.as_str()))
                    .ctx("read content")?
                {
                    Some(v) => metadata::decode("content", &info.digest, v.value())?,
                    None => {
                        return Err(Error::not_found(format!("content digest {}", info.digest)));
                    }
                };
                if paths.is_empty() {
                    stored.labels = info.labels.clone();
                }
                for path in &paths {
                    if let Some(key) = path.strip_prefix("labels.") {
                        match info.labels.get(key) {
                            Some(v) if !v.is_empty() => {
                                stored.labels.insert(key.to_string(), v.clone());
                            }
                            _ => {
                                stored.labels.remove(key);
                            }
                        }
                    } else if path == "labels" {
                        stored.labels = info.labels.clone();
                    } else {
                        return Err(Error::invalid(format!(
                            "cannot update {path:?} field on content info {:?}",
                            info.digest
                        )));
                    }
                }
                labels::validate_all(&stored.labels).map_err(|e| e.context("info.Labels"))?;
                stored.updated_at = metadata::now_nanos();
                t.insert(
                    (ns.as_str(), info.digest.as_str()),
                    stored.encode_to_vec().as_slice(),
                )
                .ctx("write content")?;
                Ok(stored)
            })
            .await
    }

    /// Removes the blob from the namespace; the file goes when no namespace holds it. What
    /// its labels referred to may be garbage now: a collection is scheduled.
    pub async fn delete(&self, namespace: &str, digest: &str) -> Result<()> {
        digest::validate(digest)?;
        self.blob_path(digest)?;
        let (ns, d) = (namespace.to_string(), digest.to_string());
        self.inner
            .store
            .update(move |txn| {
                let mut t = txn.open_table(CONTENT).ctx("open content")?;
                if t.remove((ns.as_str(), d.as_str()))
                    .ctx("delete content")?
                    .is_none()
                {
                    return Err(Error::not_found(format!("content digest {d}")));
                }
                Ok(())
            })
            .await?;
        self.remove_unheld_blobs(vec![digest.to_string()]).await?;
        let event = ContentDelete {
            digest: digest.to_string(),
        };
        publish(
            &self.inner.exchange,
            namespace,
            topics::CONTENT_DELETE,
            &event,
        );
        self.inner.gc.schedule();
        Ok(())
    }

    /// Removes the files of those `digests` that no namespace holds (any more); returns the
    /// digests whose files were removed. Used after deleting content records (a delete, a
    /// garbage collection).
    pub(crate) async fn remove_unheld_blobs(&self, digests: Vec<String>) -> Result<Vec<String>> {
        let wanted: HashSet<String> = digests.into_iter().collect();
        let _gates = self
            .inner
            .lock_blobs(wanted.iter().map(String::as_str))
            .await;
        let unheld: Vec<String> = self
            .inner
            .store
            .view(move |txn| {
                let t = txn.open_table(CONTENT).ctx("open content")?;
                let mut held = HashSet::new();
                for item in t.iter().ctx("scan content")? {
                    let (k, _) = item.ctx("read content")?;
                    let d = k.value().1;
                    if wanted.contains(d) {
                        held.insert(d.to_string());
                    }
                }
                Ok(wanted.into_iter().filter(|d| !held.contains(d)).collect())
            })
            .await?;
        let paths: Vec<(String, PathBuf)> = unheld
            .into_iter()
            .filter_map(|d| self.blob_path(&d).ok().map(|p| (d, p)))
            .collect();
        blocking(move || {
            let mut removed = Vec::new();
            for (d, path) in paths {
                match fs::remove_file(&path) {
                    Ok(()) => removed.push(d),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("remove blob", &path, e)),
                }
            }
            Ok(removed)
        })
        .await
    }

    /// The digest the ingest `reference` of the namespace expects, if it exists and says.
    /// Blocking (reads a small file).
    pub(crate) fn ingest_expected(&self, namespace: &str, reference: &str) -> Option<String> {
        fs::read_to_string(self.ingest_dir(namespace, reference).join("expected"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    /// Opens a committed blob of the namespace for reading; returns the file and its size.
    pub async fn open_blob(&self, namespace: &str, digest: &str) -> Result<(File, i64)> {
        let info = self.info(namespace, digest).await?;
        let path = self.blob_path(digest)?;
        let d = digest.to_string();
        let file = blocking(move || {
            File::open(&path).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    Error::not_found(format!("blob {d} expected at {}", path.display()))
                }
                _ => Error::io("open blob", &path, e),
            })
        })
        .await?;
        Ok((file, info.size))
    }

    /// The status of one ingest of the namespace.
    pub async fn status(&self, namespace: &str, reference: &str) -> Result<Status> {
        let dir = self.ingest_dir(namespace, reference);
        let r = reference.to_string();
        blocking(move || {
            if !dir.join("data").exists() {
                return Err(Error::not_found(format!("reference {r}")));
            }
            read_status(&dir, &r)
        })
        .await
    }

    /// Every ingest of the namespace that matches the filter.
    pub async fn list_statuses(&self, namespace: &str, filter: Filter) -> Result<Vec<Status>> {
        let base = self.inner.root.join("ingest");
        let ns = namespace.to_string();
        blocking(move || {
            let mut out = Vec::new();
            let entries = match fs::read_dir(&base) {
                Ok(e) => e,
                Err(e) => return Err(Error::io("list ingests", &base, e)),
            };
            for entry in entries.flatten() {
                let dir = entry.path();
                let Ok(who) = read_small(&dir.join("ref")) else {
                    continue;
                };
                let Some((ens, eref)) = who.split_once('\n') else {
                    continue;
                };
                if ens != ns {
                    continue;
                }
                if let Ok(st) = read_status(&dir, eref)
                    && filter.matches(&st)
                {
                    out.push(st);
                }
            }
            out.sort_by(|a, b| a.reference.cmp(&b.reference));
            Ok(out)
        })
        .await
    }

    /// Drops an ingest and its data.
    pub async fn abort(&self, namespace: &str, reference: &str) -> Result<()> {
        let guard = self.lock_ref(namespace, reference)?;
        let dir = self.ingest_dir(namespace, reference);
        let r = reference.to_string();
        blocking(move || {
            let _guard = guard;
            match fs::remove_dir_all(&dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(Error::not_found(format!("ingest ref {r:?}")))
                }
                Err(e) => Err(Error::io("remove ingest", &dir, e)),
            }
        })
        .await
    }

    /// Takes the one-writer lock of a ref; Unavailable while someone holds it.
    fn lock_ref(&self, namespace: &str, reference: &str) -> Result<LockGuard> {
        let key = format!("{namespace}\0{reference}");
        let mut locks = self
            .inner
            .locks
            .lock()
            .map_err(|_| Error::Internal("content lock table poisoned".into()))?;
        if let Some((since, at)) = locks.get(&key) {
            return Err(Error::Unavailable(format!(
                "ref {reference} locked for {:?} (since {})",
                since.elapsed(),
                humantime::format_rfc3339_seconds(*at)
            )));
        }
        locks.insert(key.clone(), (Instant::now(), SystemTime::now()));
        Ok(LockGuard {
            store: self.clone(),
            key,
        })
    }

    /// Removes the abandoned ingests of every namespace and says when the next one no lease
    /// holds will expire. An ingest is abandoned when
    /// - its `lease` names a lease that no longer holds it (`held` has `(namespace, lease,
    ///   ref)` for the ingests of every live lease) — unless it was touched at or after
    ///   `began` (when the caller read `held`: a writer under a newer lease), or
    /// - no lease holds it and it was untouched for the ingest expiry.
    ///
    /// An ingest with a live writer is never removed. A directory a crash left half-made (no
    /// `ref`) goes once older than the expiry. A removal that fails is logged and retried by
    /// the next sweep.
    pub(crate) async fn sweep_ingests(
        &self,
        held: HashSet<(String, String, String)>,
        began: SystemTime,
    ) -> Result<IngestSweep> {
        let store = self.clone();
        let base = self.inner.root.join("ingest");
        let expiry = self.inner.ingest_expiry;
        blocking(move || {
            let now = SystemTime::now();
            let mut out = IngestSweep::default();
            let entries = fs::read_dir(&base).map_err(|e| Error::io("list ingests", &base, e))?;
            let remove = |dir: &Path| match fs::remove_dir_all(dir) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => {
                    tracing::warn!(path = %dir.display(), error = %e, "could not remove an abandoned ingest");
                    false
                }
            };
            for entry in entries.flatten() {
                let dir = entry.path();
                let modified = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(now);
                let who = read_small(&dir.join("ref")).ok();
                let Some((ns, r)) = who.as_deref().and_then(|w| w.split_once('\n')) else {
                    let at = modified + expiry;
                    if at <= now {
                        remove(&dir);
                    } else {
                        out.next_expiry = Some(out.next_expiry.map_or(at, |n| n.min(at)));
                    }
                    continue;
                };
                let Ok(_guard) = store.lock_ref(ns, r) else {
                    continue;
                };
                let touched = match read_i64(&dir.join("updatedat")) {
                    n if n > 0 => SystemTime::UNIX_EPOCH + Duration::from_nanos(n.unsigned_abs()),
                    _ => modified,
                };
                let lease = fs::read_to_string(dir.join("lease")).ok();
                let abandoned = match lease {
                    Some(l) => {
                        touched < began && !held.contains(&(ns.to_string(), l, r.to_string()))
                    }
                    None => {
                        let at = touched + expiry;
                        if at > now {
                            out.next_expiry = Some(out.next_expiry.map_or(at, |n| n.min(at)));
                        }
                        at <= now
                    }
                };
                if abandoned && remove(&dir) {
                    out.removed.push((ns.to_string(), r.to_string()));
                }
            }
            Ok(out)
        })
        .await
    }

    /// Opens (or resumes) the writer for `reference`. `total` and `expected` may be unknown
    /// (0 / ""). A blob the namespace already holds under `expected` is AlreadyExists. With a
    /// `lease` (which must exist), the lease holds the ingest from now on.
    pub async fn writer(
        &self,
        namespace: &str,
        reference: &str,
        total: i64,
        expected: &str,
        lease: Option<&str>,
    ) -> Result<Writer> {
        if reference.is_empty() {
            return Err(Error::invalid("ref must not be empty"));
        }
        if !expected.is_empty() {
            digest::validate(expected)?;
            // A blob the namespace has is AlreadyExists, and (as in containerd) held by the
            // writer's lease in the same transaction as the check: a client that skips the
            // download relies on the blob staying while its lease lives.
            let exists = match lease {
                Some(l) => self.hold(namespace, l, expected).await?,
                None => self.info(namespace, expected).await.is_ok(),
            };
            if exists {
                return Err(Error::already_exists(format!("content {expected}")));
            }
        }
        let guard = self.lock_ref(namespace, reference)?;
        if let Some(lease) = lease {
            let (ns, l, r) = (
                namespace.to_string(),
                lease.to_string(),
                reference.to_string(),
            );
            self.inner
                .store
                .update(move |txn| leases::add_in(txn, &ns, &l, &Resource::ingest(&r)))
                .await?;
        }
        let dir = self.ingest_dir(namespace, reference);
        let (ns, r, exp, lease) = (
            namespace.to_string(),
            reference.to_string(),
            expected.to_string(),
            lease.map(str::to_string),
        );
        let state =
            blocking(move || WriterState::open(dir, &ns, &r, total, &exp, lease.as_deref()))
                .await?;
        Ok(Writer {
            store: self.clone(),
            namespace: namespace.to_string(),
            reference: reference.to_string(),
            state: Some(state),
            _guard: guard,
        })
    }

    /// Records an existing blob file (already verified and in `blobs/`) in a namespace.
    /// A blob the namespace already has is AlreadyExists — and is still added to `lease`,
    /// as containerd does, so that the caller's lease holds it either way.
    async fn record(&self, namespace: &str, info: Info, lease: Option<String>) -> Result<Info> {
        let ns = namespace.to_string();
        let digest = info.digest.clone();
        let recorded = self
            .inner
            .store
            .update(move |txn| {
                namespaces::ensure(txn, &ns)?;
                let exists = {
                    let t = txn.open_table(CONTENT).ctx("open content")?;
                    t.get((ns.as_str(), info.digest.as_str()))
                        .ctx("read content")?
                        .is_some()
                };
                if !exists {
                    let mut t = txn.open_table(CONTENT).ctx("open content")?;
                    t.insert(
                        (ns.as_str(), info.digest.as_str()),
                        info.encode_to_vec().as_slice(),
                    )
                    .ctx("write content")?;
                }
                if let Some(lease) = lease {
                    leases::add_in(txn, &ns, &lease, &Resource::content(&info.digest))?;
                }
                Ok((!exists).then_some(info))
            })
            .await?;
        recorded.ok_or_else(|| Error::already_exists(format!("content {digest}")))
    }

    /// Adds a blob the namespace has to `lease`, in one transaction with the check: false
    /// when the namespace no longer has it (a collection took it meanwhile: write it again).
    pub async fn hold(&self, namespace: &str, lease: &str, digest: &str) -> Result<bool> {
        let (ns, lease, digest) = (namespace.to_string(), lease.to_string(), digest.to_string());
        self.inner
            .store
            .update(move |txn| {
                let exists = {
                    let t = txn.open_table(CONTENT).ctx("open content")?;
                    t.get((ns.as_str(), digest.as_str()))
                        .ctx("read content")?
                        .is_some()
                };
                if exists {
                    leases::add_in(txn, &ns, &lease, &Resource::content(&digest))?;
                }
                Ok(exists)
            })
            .await
    }
}

struct LockGuard {
    store: ContentStore,
    key: String,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Ok(mut locks) = self.store.inner.locks.lock() {
            locks.remove(&self.key);
        }
    }
}

/// A live writer for one ref. Dropping it keeps the ingest for a later resume.
pub struct Writer {
    store: ContentStore,
    namespace: String,
    reference: String,
    state: Option<WriterState>,
    _guard: LockGuard,
}

impl Writer {
    fn state(&mut self) -> Result<WriterState> {
        self.state
            .take()
            .ok_or_else(|| Error::precondition("cannot use a writer after a failed operation"))
    }

    pub fn status(&self) -> Status {
        self.state
            .as_ref()
            .map(|s| s.status(&self.reference))
            .unwrap_or_default()
    }

    pub fn offset(&self) -> i64 {
        self.state
            .as_ref()
            .map(|s| i64::try_from(s.offset).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }

    /// The digest of what has been written so far.
    pub fn digest(&self) -> String {
        self.state
            .as_ref()
            .map(WriterState::digest)
            .unwrap_or_default()
    }

    /// Appends `data`. A big write is written to the file on one blocking thread while it
    /// is hashed on another: a client that waits for each write's answer (ctr writes a
    /// layer 1 MiB at a time) waits for the longer of the two, not for both.
    pub async fn write(&mut self, data: impl Into<Bytes>) -> Result<()> {
        let data: Bytes = data.into();
        let mut st = self.state()?;
        if data.len() < SIDE_BY_SIDE {
            let (st, r) = tokio::task::spawn_blocking(move || {
                let r = st.write(&data);
                (st, r)
            })
            .await
            .map_err(|e| Error::Internal(format!("content write task: {e}")))?;
            self.state = Some(st);
            return r;
        }
        let writing = {
            let (file, dir, data, offset) =
                (st.file.clone(), st.dir.clone(), data.clone(), st.offset);
            tokio::task::spawn_blocking(move || ingest::write_at(&file, &dir, &data, offset))
        };
        let len = data.len();
        let hashing = tokio::task::spawn_blocking(move || {
            let before = st.hash(&data);
            (st, before)
        });
        let (written, hashed) = tokio::join!(writing, hashing);
        let (mut st, before) =
            hashed.map_err(|e| Error::Internal(format!("content hash task: {e}")))?;
        let r = match written {
            Ok(Ok(())) => st.appended(len),
            Ok(Err(e)) => {
                st.unhash(before);
                Err(e)
            }
            Err(e) => {
                st.unhash(before);
                Err(Error::Internal(format!("content write task: {e}")))
            }
        };
        self.state = Some(st);
        r
    }

    /// Starts the ingest over from offset 0.
    pub async fn truncate(&mut self) -> Result<()> {
        let mut st = self.state()?;
        let (st, r) = tokio::task::spawn_blocking(move || {
            let r = st.truncate();
            (st, r)
        })
        .await
        .map_err(|e| Error::Internal(format!("content truncate task: {e}")))?;
        self.state = Some(st);
        r
    }

    /// Verifies size and digest, makes the blob durable and visible in the namespace (and
    /// in `lease`, if given). On a mismatch the ingest is removed: nothing partial remains.
    pub async fn commit(
        mut self,
        size: i64,
        expected: &str,
        labels: BTreeMap<String, String>,
        lease: Option<String>,
    ) -> Result<Info> {
        labels::validate_all(&labels).map_err(|e| e.context("info.Labels"))?;
        let st = self.state()?;
        let expected = if expected.is_empty() {
            st.expected.clone()
        } else {
            expected.to_string()
        };
        if !expected.is_empty() {
            hex_of(&expected)?;
        }
        let blob_dir = self.store.inner.root.join("blobs").join("sha256");
        // Verify and make durable first (slow for big blobs), then put the file in place and
        // record it under the blob gate, so a concurrent removal of unheld blobs can't take
        // a file this commit is about to record.
        let (st, digest, written) = blocking(move || {
            let actual = st.digest();
            let written = i64::try_from(st.offset).unwrap_or(i64::MAX);
            let fail = |e: Error| {
                let _ = fs::remove_dir_all(&st.dir);
                e
            };
            if size > 0 && written != size {
                return Err(fail(Error::precondition(format!(
                    "unexpected commit size {written}, expected {size}"
                ))));
            }
            if !expected.is_empty() && actual != expected {
                return Err(fail(Error::precondition(format!(
                    "unexpected commit digest {actual}, expected {expected}"
                ))));
            }
            let data = st.dir.join("data");
            st.file
                .sync_all()
                .map_err(|e| Error::io("fsync ingest", &data, e))?;
            Ok((st, actual, written))
        })
        .await?;
        let store = self.store.clone();
        let _gates = store
            .inner
            .lock_blobs(std::iter::once(digest.as_str()))
            .await;
        let target_digest = digest.clone();
        blocking(move || {
            let data = st.dir.join("data");
            let target = blob_dir.join(target_digest.trim_start_matches("sha256:"));
            if target.exists() {
                // Already stored for another namespace: the bytes are identical.
                fs::remove_dir_all(&st.dir).map_err(|e| Error::io("remove ingest", &st.dir, e))?;
            } else {
                fs::rename(&data, &target).map_err(|e| Error::io("commit blob", &target, e))?;
                File::open(&blob_dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| Error::io("fsync", &blob_dir, e))?;
                fs::remove_dir_all(&st.dir).map_err(|e| Error::io("remove ingest", &st.dir, e))?;
            }
            Ok(())
        })
        .await?;
        let now = metadata::now_nanos();
        let info = Info {
            digest,
            size: written,
            created_at: now,
            updated_at: now,
            labels,
        };
        self.store.record(&self.namespace, info, lease).await
    }
}

/// A content store of its own in `dir` (its own metadata database), for tests.
#[cfg(test)]
pub(crate) fn test_store(dir: &Path) -> ContentStore {
    let meta = Store::open(&dir.join("meta.redb")).expect("db");
    ContentStore::open(
        dir,
        meta,
        DEFAULT_INGEST_EXPIRY,
        crate::events::Exchange::new(),
        &crate::collector::channel().0,
    )
    .expect("content")
}

#[cfg(test)]
mod tests;
