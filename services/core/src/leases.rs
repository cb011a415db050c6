//! Leases: named holds that keep content, images, ingests and snapshots alive while a client
//! works with them. A lease with the `containerd.io/gc.expire` label (RFC 3339) is removed
//! once that time has passed.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use prost::Message;
use redb::{ReadableTable, WriteTransaction};

use crate::collector::Collector;
use crate::error::{Error, Result};
use crate::filters::{self, Adaptor, Filter};
use crate::metadata::{self, DbContext, LEASE_RESOURCES, LEASES, Store};
use crate::{digest, labels, namespaces};

/// The label that sets a lease's expiry.
pub const EXPIRE_LABEL: &str = "containerd.io/gc.expire";

/// The id prefix of the lease a pull makes for itself.
pub const PULL_LEASE_PREFIX: &str = "berth-pull-";
/// The id prefix of the lease an import makes for itself.
pub const IMPORT_LEASE_PREFIX: &str = "berth-import-";
/// The id prefix of the lease that holds a new CRI container's snapshot until its record
/// does.
pub const CRI_CREATE_LEASE_PREFIX: &str = "berth-cri-";

/// A lease. Stored as the `leases` table's record.
#[derive(Clone, PartialEq, Message)]
pub struct Lease {
    #[prost(string, tag = "1")]
    pub id: String,
    /// Unix nanoseconds.
    #[prost(int64, tag = "2")]
    pub created_at: i64,
    #[prost(btree_map = "string, string", tag = "3")]
    pub labels: BTreeMap<String, String>,
}

/// A resource a lease holds: `type` is `content`, `ingests`, `images` or
/// `snapshots/<snapshotter>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub id: String,
    pub kind: String,
}

impl Adaptor for Lease {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "id" => (!self.id.is_empty()).then(|| self.id.clone()),
            "labels" => filters::map_field(&self.labels, &path[1..]),
            _ => None,
        }
    }
}

impl Lease {
    /// When the lease expires, if it has a valid expiry label.
    pub fn expires_at(&self) -> Option<SystemTime> {
        let v = self.labels.get(EXPIRE_LABEL)?;
        humantime::parse_rfc3339_weak(v.trim_end_matches('Z'))
            .ok()
            .or_else(|| humantime::parse_rfc3339(v).ok())
    }
}

/// The resource types a lease holds.
pub mod kind {
    pub const CONTENT: &str = "content";
    pub const INGESTS: &str = "ingests";
    pub const IMAGES: &str = "images";
    /// Followed by the snapshotter's name.
    pub const SNAPSHOTS_PREFIX: &str = "snapshots/";
}

impl std::fmt::Display for Resource {
    /// `<type>/<id>`, as `ctr leases ls` shows resources.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.id)
    }
}

impl Resource {
    /// A blob of the namespace, by digest.
    pub fn content(digest: &str) -> Resource {
        Resource {
            id: digest.to_string(),
            kind: kind::CONTENT.to_string(),
        }
    }

    /// An ingest (a partial write), by ref.
    pub fn ingest(reference: &str) -> Resource {
        Resource {
            id: reference.to_string(),
            kind: kind::INGESTS.to_string(),
        }
    }

    /// A snapshot of a snapshotter, by key.
    pub fn snapshot(snapshotter: &str, key: &str) -> Resource {
        Resource {
            id: key.to_string(),
            kind: format!("{}{snapshotter}", kind::SNAPSHOTS_PREFIX),
        }
    }
}

/// Adds a resource to a lease inside a transaction; a missing lease is NotFound. For the
/// cores that hold what they write in the caller's lease in the same transaction.
pub(crate) fn add_in(
    txn: &WriteTransaction,
    namespace: &str,
    lease: &str,
    r: &Resource,
) -> Result<()> {
    require_lease(txn, namespace, lease)?;
    let mut t = txn
        .open_table(LEASE_RESOURCES)
        .ctx("open lease_resources")?;
    t.insert((namespace, lease, r.kind.as_str(), r.id.as_str()), ())
        .ctx("write lease resource")?;
    Ok(())
}

/// Sets a lease's expiry label to `at` and stores it, inside a transaction.
fn put_expiry(
    t: &mut redb::Table<(&str, &str), &[u8]>,
    namespace: &str,
    lease: &mut Lease,
    at: &str,
) -> Result<()> {
    lease
        .labels
        .insert(EXPIRE_LABEL.to_string(), at.to_string());
    t.insert(
        (namespace, lease.id.as_str()),
        lease.encode_to_vec().as_slice(),
    )
    .ctx("write lease")?;
    Ok(())
}

/// Checks a resource and returns its normalised form.
fn check_resource(r: &Resource) -> Result<Resource> {
    let parts: Vec<&str> = r.kind.split('/').collect();
    match parts[0] {
        kind::CONTENT | kind::INGESTS | kind::IMAGES => {
            if parts.len() != 1 {
                return Err(Error::invalid(format!("invalid resource type {}", r.kind)));
            }
            if parts[0] == kind::CONTENT {
                digest::validate(&r.id).map_err(|e| match e {
                    Error::InvalidArgument(m) => Error::invalid(format!(
                        "invalid content resource id {}: {}",
                        r.id,
                        m.strip_prefix(&format!("{}: ", r.id)).unwrap_or(&m)
                    )),
                    other => other,
                })?;
            }
        }
        "snapshots" => {
            if parts.len() != 2 || parts[1].is_empty() {
                return Err(Error::invalid(format!(
                    "invalid snapshot resource type {}",
                    r.kind
                )));
            }
        }
        _ => {
            return Err(Error::NotImplemented(format!(
                "resource type {} not supported yet",
                r.kind
            )));
        }
    }
    if r.id.is_empty() {
        return Err(Error::invalid(format!(
            "resource of type {} must have an id",
            r.kind
        )));
    }
    Ok(r.clone())
}

fn require_lease(txn: &WriteTransaction, namespace: &str, id: &str) -> Result<()> {
    let t = txn.open_table(LEASES).ctx("open leases")?;
    if t.get((namespace, id)).ctx("read lease")?.is_none() {
        return Err(Error::not_found(format!("lease {id:?}")));
    }
    Ok(())
}

/// Removes a lease and every resource it holds, in the caller's transaction.
pub(crate) fn remove_lease(txn: &WriteTransaction, namespace: &str, id: &str) -> Result<bool> {
    let mut t = txn.open_table(LEASES).ctx("open leases")?;
    let existed = t.remove((namespace, id)).ctx("delete lease")?.is_some();
    let mut r = txn
        .open_table(LEASE_RESOURCES)
        .ctx("open lease_resources")?;
    let keys: Vec<(String, String)> = r
        .range((namespace, id, "", "")..)
        .ctx("scan lease resources")?
        .map(|item| item.ctx("read lease resource"))
        .take_while(|item| match item {
            Ok((k, _)) => {
                let (ns, lease, _, _) = k.value();
                ns == namespace && lease == id
            }
            Err(_) => true,
        })
        .map(|item| {
            item.map(|(k, _)| {
                let (_, _, kind, rid) = k.value();
                (kind.to_string(), rid.to_string())
            })
        })
        .collect::<Result<_>>()?;
    for (kind, rid) in keys {
        r.remove((namespace, id, kind.as_str(), rid.as_str()))
            .ctx("delete lease resource")?;
    }
    Ok(existed)
}

/// The leases core. A lease that ends (released, or expired) leaves what it held to the
/// garbage collector, which it asks for a collection.
#[derive(Clone)]
pub struct Leases {
    store: Store,
    /// Wakes the expiry sweep when a lease gets an expiry it may not know of yet.
    wake: std::sync::Arc<tokio::sync::Notify>,
    gc: Collector,
}

impl Leases {
    pub fn new(store: Store, gc: Collector) -> Self {
        Leases {
            store,
            wake: std::sync::Arc::new(tokio::sync::Notify::new()),
            gc,
        }
    }

    #[tracing::instrument(level = "debug", skip(self, labels))]
    pub async fn create(
        &self,
        namespace: &str,
        id: String,
        labels: BTreeMap<String, String>,
    ) -> Result<Lease> {
        // containerd does not hold lease ids to the identifier rules: its clients generate
        // ids such as "713789225-_qyf". Only emptiness is refused.
        if id.is_empty() {
            return Err(Error::invalid("lease id must be provided"));
        }
        labels::validate_all(&labels).map_err(|e| e.context("lease.Labels"))?;
        if let Some(v) = labels.get(EXPIRE_LABEL) {
            let probe = Lease {
                labels: labels.clone(),
                ..Default::default()
            };
            if probe.expires_at().is_none() {
                return Err(Error::invalid(format!(
                    "lease {id:?}: label {EXPIRE_LABEL}={v:?} is not an RFC 3339 time"
                )));
            }
        }
        let lease = Lease {
            id,
            created_at: metadata::now_nanos(),
            labels,
        };
        let namespace = namespace.to_string();
        self.store
            .update(move |txn| {
                namespaces::ensure(txn, &namespace)?;
                let mut t = txn.open_table(LEASES).ctx("open leases")?;
                if t.get((namespace.as_str(), lease.id.as_str()))
                    .ctx("read lease")?
                    .is_some()
                {
                    return Err(Error::already_exists(format!("lease {:?}", lease.id)));
                }
                t.insert(
                    (namespace.as_str(), lease.id.as_str()),
                    lease.encode_to_vec().as_slice(),
                )
                .ctx("write lease")?;
                Ok(lease)
            })
            .await
            .inspect(|lease| {
                if lease.expires_at().is_some() {
                    self.wake.notify_one();
                }
            })
    }

    /// Creates a lease of berthd's own for one job (a pull, an import, a creation): a fresh
    /// id under `prefix`, expiring `ttl` from now so that what it holds is collected by
    /// itself should berthd die before the job deletes it. Returns its id.
    pub async fn create_temporary(
        &self,
        namespace: &str,
        prefix: &str,
        ttl: Duration,
    ) -> Result<String> {
        let id = format!("{prefix}{}", uuid::Uuid::new_v4().simple());
        let expires = humantime::format_rfc3339_seconds(SystemTime::now() + ttl).to_string();
        let labels = BTreeMap::from([(EXPIRE_LABEL.to_string(), expires)]);
        self.create(namespace, id.clone(), labels).await?;
        Ok(id)
    }

    /// Gives a lease an expiry `after` from now (replacing any it had), so that what it
    /// holds is kept that long and then collected: a failed pull keeps its ingests and
    /// blobs for a resumed pull this way.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn expire_after(&self, namespace: &str, id: &str, after: Duration) -> Result<()> {
        let (namespace, id) = (namespace.to_string(), id.to_string());
        let at = humantime::format_rfc3339_seconds(SystemTime::now() + after).to_string();
        self.store
            .update(move |txn| {
                let mut t = txn.open_table(LEASES).ctx("open leases")?;
                let mut lease: Lease =
                    match t.get((namespace.as_str(), id.as_str())).ctx("read lease")? {
                        Some(v) => metadata::decode("lease", &id, v.value())?,
                        None => return Err(Error::not_found(format!("lease {id:?}"))),
                    };
                put_expiry(&mut t, &namespace, &mut lease, &at)
            })
            .await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Ends a lease for its owner (a client's Delete): deletes it, then collects what it
    /// held before returning when `sync`, else schedules a collection.
    pub async fn release(&self, namespace: &str, id: &str, sync: bool) -> Result<()> {
        self.delete(namespace, id).await?;
        self.gc.after_delete(sync).await
    }

    /// Deletes a lease the daemon took for its own work (a pull, an import); what it held
    /// waits for the next collection.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn delete(&self, namespace: &str, id: &str) -> Result<()> {
        let (namespace, id) = (namespace.to_string(), id.to_string());
        self.store
            .update(move |txn| {
                if !remove_lease(txn, &namespace, &id)? {
                    return Err(Error::not_found(format!("lease {id:?}")));
                }
                Ok(())
            })
            .await
    }

    pub async fn list(&self, namespace: &str, filter: Filter) -> Result<Vec<Lease>> {
        let namespace = namespace.to_string();
        self.store
            .view(move |txn| {
                let t = txn.open_table(LEASES).ctx("open leases")?;
                Ok(
                    metadata::list_in_namespace::<_, Lease>(&t, "lease", &namespace)?
                        .into_iter()
                        .map(|(_, l)| l)
                        .filter(|l| filter.matches(l))
                        .collect(),
                )
            })
            .await
    }

    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn add_resource(&self, namespace: &str, lease: &str, r: Resource) -> Result<()> {
        self.add_resources(namespace, lease, vec![r]).await
    }

    /// Adds several resources to a lease in one transaction.
    #[tracing::instrument(level = "debug", skip(self, resources), fields(count = resources.len()))]
    pub async fn add_resources(
        &self,
        namespace: &str,
        lease: &str,
        resources: Vec<Resource>,
    ) -> Result<()> {
        let (namespace, lease) = (namespace.to_string(), lease.to_string());
        self.store
            .update(move |txn| {
                require_lease(txn, &namespace, &lease)?;
                for r in &resources {
                    add_in(txn, &namespace, &lease, &check_resource(r)?)?;
                }
                Ok(())
            })
            .await
    }

    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn delete_resource(&self, namespace: &str, lease: &str, r: Resource) -> Result<()> {
        let (namespace, lease) = (namespace.to_string(), lease.to_string());
        self.store
            .update(move |txn| {
                require_lease(txn, &namespace, &lease)?;
                let r = check_resource(&r)?;
                let mut t = txn
                    .open_table(LEASE_RESOURCES)
                    .ctx("open lease_resources")?;
                t.remove((
                    namespace.as_str(),
                    lease.as_str(),
                    r.kind.as_str(),
                    r.id.as_str(),
                ))
                .ctx("delete lease resource")?;
                Ok(())
            })
            .await
    }

    pub async fn list_resources(&self, namespace: &str, lease: &str) -> Result<Vec<Resource>> {
        let (namespace, lease) = (namespace.to_string(), lease.to_string());
        self.store
            .view(move |txn| {
                let t = txn.open_table(LEASES).ctx("open leases")?;
                if t.get((namespace.as_str(), lease.as_str()))
                    .ctx("read lease")?
                    .is_none()
                {
                    return Err(Error::not_found(format!("lease {lease:?}")));
                }
                let r = txn
                    .open_table(LEASE_RESOURCES)
                    .ctx("open lease_resources")?;
                let mut out = Vec::new();
                for item in r
                    .range((namespace.as_str(), lease.as_str(), "", "")..)
                    .ctx("scan")?
                {
                    let (k, _) = item.ctx("read lease resource")?;
                    let (ns, l, kind, id) = k.value();
                    if ns != namespace || l != lease {
                        break;
                    }
                    out.push(Resource {
                        id: id.to_string(),
                        kind: kind.to_string(),
                    });
                }
                Ok(out)
            })
            .await
    }

    /// Deletes every lease whose expiry has passed. Returns the leases removed and the
    /// earliest expiry still pending.
    pub async fn expire(
        &self,
        now: SystemTime,
    ) -> Result<(Vec<(String, String)>, Option<SystemTime>)> {
        self.store
            .update(move |txn| {
                let mut due = Vec::new();
                let mut next: Option<SystemTime> = None;
                {
                    let t = txn.open_table(LEASES).ctx("open leases")?;
                    for item in t.iter().ctx("scan leases")? {
                        let (k, v) = item.ctx("read lease")?;
                        let (ns, id) = k.value();
                        let lease: Lease = metadata::decode("lease", id, v.value())?;
                        if let Some(at) = lease.expires_at() {
                            if at <= now {
                                due.push((ns.to_string(), id.to_string()));
                            } else if next.is_none_or(|n| at < n) {
                                next = Some(at);
                            }
                        }
                    }
                }
                for (ns, id) in &due {
                    remove_lease(txn, ns, id)?;
                }
                Ok((due, next))
            })
            .await
    }

    /// At start: the leases berthd made for its own pulls and imports that a previous run
    /// left (it was killed mid-way) belong to work that died with it. Each is given `keep`
    /// to live from now (unless it ends sooner), so that what it fetched stays for a resumed
    /// pull that long and is then collected, as after a failed pull. Returns their ids.
    pub async fn expire_leftovers(&self, keep: Duration) -> Result<Vec<(String, String)>> {
        let now = SystemTime::now();
        let at = now + keep;
        let label = humantime::format_rfc3339_seconds(at).to_string();
        let changed = self
            .store
            .update(move |txn| {
                let mut t = txn.open_table(LEASES).ctx("open leases")?;
                let mut due = Vec::new();
                for item in t.iter().ctx("scan leases")? {
                    let (k, v) = item.ctx("read lease")?;
                    let (ns, id) = k.value();
                    if !(id.starts_with(PULL_LEASE_PREFIX) || id.starts_with(IMPORT_LEASE_PREFIX)) {
                        continue;
                    }
                    let lease: Lease = metadata::decode("lease", id, v.value())?;
                    if lease.expires_at().is_some_and(|e| e <= at) {
                        continue;
                    }
                    due.push((ns.to_string(), lease));
                }
                for (ns, lease) in &mut due {
                    put_expiry(&mut t, ns, lease, &label)?;
                }
                Ok(due
                    .into_iter()
                    .map(|(ns, l)| (ns, l.id))
                    .collect::<Vec<_>>())
            })
            .await?;
        if !changed.is_empty() {
            self.wake.notify_one();
        }
        Ok(changed)
    }

    /// Runs the expiry sweep until `shutdown` fires: at each pending expiry, when a lease
    /// gets an expiry, and at least once a minute. Asks for a collection when leases
    /// expired.
    pub async fn run_expiry(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            let wait = match self.expire(SystemTime::now()).await {
                Ok((removed, next)) => {
                    if !removed.is_empty() {
                        self.gc.schedule();
                    }
                    for (namespace, id) in removed {
                        tracing::info!(%namespace, lease = %id, "lease expired and was removed");
                    }
                    next.and_then(|n| n.duration_since(SystemTime::now()).ok())
                        .map(|d| d + Duration::from_millis(10))
                        .unwrap_or(Duration::from_secs(60))
                        .min(Duration::from_secs(60))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lease expiry sweep failed");
                    Duration::from_secs(10)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
