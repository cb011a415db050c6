//! The metadata store: one redb database, `<root>/meta.redb`, one transaction per mutation.
//!
//! ```text
//! meta.redb
//! ├── meta             &str → bytes          "schema" → u32 LE schema version
//! │                                          "server.uuid" → this daemon's UUID (introspection)
//! ├── namespaces       name → Namespace       (prost-encoded record, see namespaces.rs)
//! ├── containers       (namespace, id) → Container
//! ├── leases           (namespace, id) → Lease
//! ├── lease_resources  (namespace, lease, type, id) → ()
//! │                    type is "content", "ingests", "images" or "snapshots/<snapshotter>"
//! ├── images           (namespace, name) → image record            (images service)
//! ├── content          (namespace, digest) → blob record           (content service)
//! ├── snapshots        (namespace, snapshotter, key) → snapshot    (berth_snapshotter::metastore)
//! ├── snapshot_ids     snapshotter → last directory id allocated   (berth_snapshotter::metastore)
//! ├── network_attachments (namespace, container) → its netns and CNI results (network/)
//! ├── networks         (namespace, name) → a user-defined network     (network/)
//! ├── restart_state    (namespace, container) → the supervisor's restart count, user-stop
//!                      mark, last start and stdio of a container (supervisor/)
//! └── volumes          (namespace, name) → volume record             (volumes/)
//! ```
//!
//! Records are prost-encoded structs defined next to the logic that owns them: new fields get
//! new tags and old records still decode, so adding a field needs no migration. A change that
//! does need one bumps [`SCHEMA_VERSION`] and adds a step to [`Store::migrate`].
//!
//! Every namespace that holds anything has a row in `namespaces`: creating an object in a
//! namespace creates the namespace, as containerd does (`namespaces::ensure`, in the same
//! transaction).
//!
//! All database work runs on the blocking thread pool ([`Store::update`], [`Store::view`]);
//! redb serialises writers and gives readers a consistent snapshot, so there is no lock of
//! ours around it. Commits are durable (fsync) before a call returns.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_snapshotter::SharedDb;
use prost::Message;
use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

use crate::error::{Error, Result};

pub const SCHEMA_VERSION: u32 = 1;

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const NAMESPACES: TableDefinition<&str, &[u8]> = TableDefinition::new("namespaces");
pub(crate) const CONTAINERS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("containers");
pub(crate) const LEASES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("leases");
pub(crate) const LEASE_RESOURCES: TableDefinition<(&str, &str, &str, &str), ()> =
    TableDefinition::new("lease_resources");
pub(crate) const IMAGES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("images");
pub(crate) const CONTENT: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("content");
pub(crate) const NETWORK_ATTACHMENTS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("network_attachments");
/// User-defined networks, by (namespace, name).
pub(crate) const NETWORKS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("networks");
pub(crate) const RESTART_STATE: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("restart_state");
pub(crate) const VOLUMES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("volumes");
/// Owned by the snapshotters (berth_snapshotter::metastore), created here with the rest.
pub(crate) use berth_snapshotter::metastore::{SNAPSHOT_IDS, SNAPSHOTS};

/// Adds context to a redb error.
pub(crate) trait DbContext<T> {
    fn ctx(self, what: &str) -> Result<T>;
}

impl<T, E: std::fmt::Display> DbContext<T> for std::result::Result<T, E> {
    fn ctx(self, what: &str) -> Result<T> {
        self.map_err(|e| Error::db(what, e))
    }
}

/// The handle to the metadata database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<SharedDb>,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) the database, creates missing tables and checks the schema version.
    /// Blocking: call it at start-up, before serving.
    pub fn open(path: &Path) -> Result<Store> {
        let db =
            SharedDb::open(path).map_err(|e| Error::db(format!("open {}", path.display()), e))?;
        let store = Store {
            db,
            path: path.to_path_buf(),
        };
        store.migrate()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database itself, for the snapshotters that keep their tables in it.
    pub fn database(&self) -> Arc<SharedDb> {
        self.db.clone()
    }

    /// Creates every table and brings the schema to [`SCHEMA_VERSION`].
    fn migrate(&self) -> Result<()> {
        let txn = self.db.begin_write().ctx("begin migration")?;
        {
            let mut meta = txn.open_table(META).ctx("open meta")?;
            let found = meta
                .get("schema")
                .ctx("read schema version")?
                .map(|v| {
                    let b = v.value();
                    <[u8; 4]>::try_from(b)
                        .map(u32::from_le_bytes)
                        .map_err(|_| Error::Corrupt {
                            what: "meta",
                            key: "schema".into(),
                            message: format!("{} bytes, want 4", b.len()),
                        })
                })
                .transpose()?;
            match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(Error::precondition(format!(
                        "metadata database {} has schema version {v}, newer than this berthd's {SCHEMA_VERSION}",
                        self.path.display()
                    )));
                }
                Some(_) => {}
                None => {
                    meta.insert("schema", &SCHEMA_VERSION.to_le_bytes()[..])
                        .ctx("write schema version")?;
                }
            }
        }
        txn.open_table(NAMESPACES).ctx("create namespaces")?;
        txn.open_table(CONTAINERS).ctx("create containers")?;
        txn.open_table(LEASES).ctx("create leases")?;
        txn.open_table(LEASE_RESOURCES)
            .ctx("create lease_resources")?;
        txn.open_table(IMAGES).ctx("create images")?;
        txn.open_table(CONTENT).ctx("create content")?;
        txn.open_table(NETWORK_ATTACHMENTS)
            .ctx("create network_attachments")?;
        txn.open_table(NETWORKS).ctx("create networks")?;
        txn.open_table(RESTART_STATE).ctx("create restart_state")?;
        txn.open_table(VOLUMES).ctx("create volumes")?;
        txn.open_table(SNAPSHOTS).ctx("create snapshots")?;
        txn.open_table(SNAPSHOT_IDS).ctx("create snapshot_ids")?;
        txn.commit().ctx("commit migration")?;
        Ok(())
    }

    /// Runs `f` in one write transaction on a blocking thread and commits it durably if `f`
    /// returns Ok; an error aborts the transaction and nothing is stored.
    pub async fn update<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_write().ctx("begin write transaction")?;
            match f(&txn) {
                Ok(v) => {
                    txn.commit().ctx("commit")?;
                    Ok(v)
                }
                Err(e) => {
                    // Dropping aborts; an explicit abort reports failures to roll back.
                    if let Err(abort) = txn.abort() {
                        tracing::warn!(error = %abort, "abort of failed transaction");
                    }
                    Err(e)
                }
            }
        })
        .await
        .map_err(|e| Error::Internal(format!("metadata write task: {e}")))?
    }

    /// Runs `f` against a consistent read snapshot on a blocking thread.
    pub async fn view<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().ctx("begin read transaction")?;
            f(&txn)
        })
        .await
        .map_err(|e| Error::Internal(format!("metadata read task: {e}")))?
    }

    /// Reads a value from the `meta` table, or stores `make()` there if absent.
    pub fn meta_get_or_init(&self, key: &str, make: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>> {
        let txn = self.db.begin_write().ctx("begin write transaction")?;
        let value = {
            let mut meta = txn.open_table(META).ctx("open meta")?;
            let existing = meta.get(key).ctx("read meta")?.map(|v| v.value().to_vec());
            match existing {
                Some(v) => v,
                None => {
                    let v = make();
                    meta.insert(key, v.as_slice()).ctx("write meta")?;
                    v
                }
            }
        };
        txn.commit().ctx("commit")?;
        Ok(value)
    }
}

/// Decodes a stored record.
pub(crate) fn decode<M: Message + Default>(
    what: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<M> {
    M::decode(bytes).map_err(|e| Error::Corrupt {
        what,
        key: key.to_string(),
        message: e.to_string(),
    })
}

/// Every `(id, record)` of one namespace in a `(namespace, id)` table, in id order.
pub(crate) fn list_in_namespace<T, M>(
    table: &T,
    what: &'static str,
    namespace: &str,
) -> Result<Vec<(String, M)>>
where
    T: ReadableTable<(&'static str, &'static str), &'static [u8]>,
    M: Message + Default,
{
    let mut out = Vec::new();
    for item in table.range((namespace, "")..).ctx("scan table")? {
        let (k, v) = item.ctx("read row")?;
        let (ns, id) = k.value();
        if ns != namespace {
            break;
        }
        out.push((id.to_string(), decode(what, id, v.value())?));
    }
    Ok(out)
}

/// Whether a `(namespace, ...)`-keyed table has any row in `namespace`.
pub(crate) fn namespace_has_rows2<T>(table: &T, namespace: &str) -> Result<bool>
where
    T: ReadableTable<(&'static str, &'static str), &'static [u8]>,
{
    let first = table.range((namespace, "")..).ctx("scan table")?.next();
    match first {
        Some(item) => Ok(item.ctx("read row")?.0.value().0 == namespace),
        None => Ok(false),
    }
}

/// The snapshotters that still hold snapshots in `namespace`.
pub(crate) fn snapshotters_in_namespace<T>(table: &T, namespace: &str) -> Result<Vec<String>>
where
    T: ReadableTable<(&'static str, &'static str, &'static str), &'static [u8]>,
{
    let mut out: Vec<String> = Vec::new();
    for item in table.range((namespace, "", "")..).ctx("scan snapshots")? {
        let (k, _) = item.ctx("read row")?;
        let (ns, snapshotter, _) = k.value();
        if ns != namespace {
            break;
        }
        if out.last().map(String::as_str) != Some(snapshotter) {
            out.push(snapshotter.to_string());
        }
    }
    Ok(out)
}

/// Now, as Unix nanoseconds.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
