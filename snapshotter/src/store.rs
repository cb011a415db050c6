//! The metadata and directory lifecycle both snapshotters share.
//!
//! [`Store`] implements [`Snapshotter`] once; a [`Backend`] only decides what a new
//! snapshot's directory holds and which mounts expose it. On disk:
//!
//! ```text
//! <root>/
//! ├── snapshots/<id>/   one directory per snapshot record (`fs/`, overlay: also `work/`)
//! └── tmp/
//!     ├── new-<random>/ a snapshot being staged by prepare/view (removed on error; open()
//!     │                 clears those a crash left behind)
//!     └── rm-<id>/      a removed snapshot's directory on its way out
//! ```
//!
//! Creation stages the directory in `tmp/`, then one write transaction checks the key and
//! parent, allocates the id and inserts the record, and only then is the directory renamed
//! to `snapshots/<id>`. Removal deletes the record in one transaction and then renames the
//! directory into `tmp/` before deleting it. A crash therefore leaves at worst a directory
//! without a record, which [`Snapshotter::cleanup`] removes.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Display;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{ReadableTable, Table};

use crate::db::SharedDb;

use crate::error::{Result, SnapshotterError};
use crate::metastore::{self, SNAPSHOT_IDS, SNAPSHOTS, SnapshotRecord, kind_to_i32};
use crate::snapshots::{Info, Kind, Mount, Snapshotter, Usage};

/// Most bytes a label's key and value may take together (containerd's `labels.Validate`).
const MAX_LABEL_SIZE: usize = 4096;

/// What differs between snapshotters: the contents of a new snapshot's directory and the
/// mounts that expose it. Everything else is [`Store`]'s.
pub trait Backend: Send + Sync + 'static {
    /// The snapshotter's name, as clients select it and as records are keyed.
    const NAME: &'static str;
    /// Whether a parentless active snapshot can be committed onto a parent.
    const CAN_REBASE: bool = false;

    /// Fills the freshly created, empty directory `dir` of a new `kind` snapshot whose
    /// committed ancestors live in `parents` (snapshot directories, nearest first).
    fn stage(&self, dir: &Path, kind: Kind, parents: &[PathBuf]) -> Result<()>;

    /// The mounts of the active snapshot or view in `dir` with ancestors `parents`
    /// (snapshot directories, nearest first).
    fn mounts(&self, dir: &Path, kind: Kind, parents: &[PathBuf]) -> Vec<Mount>;
}

/// A snapshotter: records in the shared redb database, directories under `root`, and a
/// [`Backend`] for the layout.
pub struct Store<B> {
    db: Arc<SharedDb>,
    root: PathBuf,
    backend: B,
}

impl<B: Backend + Default> Store<B> {
    /// Opens the snapshotter on `root` (creating `snapshots/` and `tmp/`, clearing what a
    /// crash left in `tmp/`) with its tables in `db`.
    pub fn open(db: Arc<SharedDb>, root: &Path) -> Result<Self> {
        Self::with_backend(db, root, B::default())
    }
}

impl<B: Backend> Store<B> {
    /// [`Store::open`] with an explicit backend value.
    pub fn with_backend(db: Arc<SharedDb>, root: &Path, backend: B) -> Result<Self> {
        let store = Self {
            db,
            root: root.to_path_buf(),
            backend,
        };
        for dir in [store.snapshots_dir(), store.tmp_dir()] {
            fs::create_dir_all(&dir).map_err(|e| SnapshotterError::io("create", &dir, e))?;
        }
        let tmp = store.tmp_dir();
        for entry in read_dir_names(&tmp)? {
            let path = tmp.join(&entry);
            tracing::debug!(snapshotter = B::NAME, path = %path.display(), "removing stale temp dir");
            remove_all(&path)?;
        }
        let txn = store.db.begin_write().db("begin write")?;
        txn.open_table(SNAPSHOTS).db("open snapshots")?;
        txn.open_table(SNAPSHOT_IDS).db("open snapshot_ids")?;
        txn.commit().db("commit")?;
        Ok(store)
    }

    /// The directory that holds the snapshots (`<root>/snapshots`).
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.snapshots_dir().join(id.to_string())
    }

    /// Creates an active snapshot or view (prepare and view).
    fn create(
        &self,
        ns: &str,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
        kind: Kind,
    ) -> Result<Vec<Mount>> {
        require_key(key)?;
        validate_labels(&labels)?;
        let parent = parent.filter(|p| !p.is_empty());
        tracing::debug!(
            ns,
            key,
            parent,
            snapshotter = B::NAME,
            kind = kind.as_str(),
            "creating snapshot"
        );

        // Check first without staging, so a doomed call costs no copy.
        let chain = {
            let txn = self.db.begin_read().db("begin read")?;
            let table = txn.open_table(SNAPSHOTS).db("open snapshots")?;
            if get(&table, ns, B::NAME, key)?.is_some() {
                return Err(already_exists(key));
            }
            match parent {
                Some(p) => parent_chain(&table, ns, B::NAME, p)?,
                None => Vec::new(),
            }
        };
        let parent_dirs: Vec<PathBuf> = chain.iter().map(|&id| self.dir(id)).collect();

        let staged = Staged::create(&self.tmp_dir())?;
        self.backend.stage(&staged.path, kind, &parent_dirs)?;
        sync_dir(&staged.path)?;

        let now = now_nanos();
        let id = {
            let txn = self.db.begin_write().db("begin write")?;
            let id = {
                let mut table = txn.open_table(SNAPSHOTS).db("open snapshots")?;
                if get(&table, ns, B::NAME, key)?.is_some() {
                    return Err(already_exists(key));
                }
                if let Some(p) = parent
                    && parent_chain(&table, ns, B::NAME, p)? != chain
                {
                    return Err(SnapshotterError::FailedPrecondition(format!(
                        "parent snapshot {p} changed while creating snapshot {key:?}"
                    )));
                }
                let mut ids = txn.open_table(SNAPSHOT_IDS).db("open snapshot_ids")?;
                let id = next_id(&mut ids, B::NAME)?;
                let record = SnapshotRecord {
                    id,
                    kind: kind_to_i32(kind),
                    parent: parent.unwrap_or_default().to_string(),
                    labels,
                    created: now,
                    updated: now,
                    size: 0,
                    inodes: 0,
                };
                put(&mut table, ns, B::NAME, key, &record)?;
                id
            };
            txn.commit().db("commit")?;
            id
        };

        let dir = self.dir(id);
        if let Err(e) = fs::rename(&staged.path, &dir) {
            let err = SnapshotterError::io("rename staged snapshot to", &dir, e);
            if let Err(undo) = self.delete_record(ns, key, id) {
                tracing::warn!(ns, key, snapshotter = B::NAME, error = %undo, "could not delete the record of a snapshot whose directory failed to move into place");
            }
            return Err(err);
        }
        staged.disarm();
        if let Err(e) = sync_dir(&self.snapshots_dir()) {
            tracing::warn!(snapshotter = B::NAME, error = %e, "fsync of the snapshots directory failed");
        }
        tracing::debug!(ns, key, snapshotter = B::NAME, id, "created snapshot");
        Ok(self.backend.mounts(&dir, kind, &parent_dirs))
    }

    /// Deletes the record `key` again if it still names directory `id`.
    fn delete_record(&self, ns: &str, key: &str, id: u64) -> Result<()> {
        let txn = self.db.begin_write().db("begin write")?;
        {
            let mut table = txn.open_table(SNAPSHOTS).db("open snapshots")?;
            if get(&table, ns, B::NAME, key)?.is_some_and(|r| r.id == id) {
                table.remove((ns, B::NAME, key)).db("delete snapshot")?;
            }
        }
        txn.commit().db("commit")
    }

    fn read_record(&self, ns: &str, key: &str) -> Result<SnapshotRecord> {
        let txn = self.db.begin_read().db("begin read")?;
        let table = txn.open_table(SNAPSHOTS).db("open snapshots")?;
        get(&table, ns, B::NAME, key)?.ok_or_else(|| not_found(key))
    }

    fn commit_inner(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        rebase_onto: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<()> {
        require_key(name)?;
        require_key(key)?;
        validate_labels(&labels)?;
        tracing::debug!(
            ns,
            key,
            name,
            parent = rebase_onto,
            snapshotter = B::NAME,
            "committing snapshot"
        );

        let active = self.read_record(ns, key)?;
        check_committable(&active, key, rebase_onto)?;
        let usage = disk_usage(&self.dir(active.id).join("fs"))?;

        let txn = self.db.begin_write().db("begin write")?;
        {
            let mut table = txn.open_table(SNAPSHOTS).db("open snapshots")?;
            if get(&table, ns, B::NAME, name)?.is_some() {
                return Err(already_exists(name));
            }
            let current = get(&table, ns, B::NAME, key)?.ok_or_else(|| not_found(key))?;
            check_committable(&current, key, rebase_onto)?;
            if current.id != active.id {
                return Err(SnapshotterError::FailedPrecondition(format!(
                    "snapshot {key:?} changed while it was being committed"
                )));
            }
            let parent = match rebase_onto {
                Some(p) => {
                    parent_chain(&table, ns, B::NAME, p)?;
                    p.to_string()
                }
                None => current.parent.clone(),
            };
            let now = now_nanos();
            let record = SnapshotRecord {
                id: current.id,
                kind: kind_to_i32(Kind::Committed),
                parent,
                labels: if labels.is_empty() {
                    current.labels
                } else {
                    labels
                },
                created: now,
                updated: now,
                size: usage.size,
                inodes: usage.inodes,
            };
            table
                .remove((ns, B::NAME, key))
                .db("delete active snapshot")?;
            put(&mut table, ns, B::NAME, name, &record)?;
        }
        txn.commit().db("commit")?;
        tracing::debug!(
            ns,
            key,
            name,
            snapshotter = B::NAME,
            id = active.id,
            size = usage.size,
            "committed snapshot"
        );
        Ok(())
    }
}

impl<B: Backend> Snapshotter for Store<B> {
    fn name(&self) -> &str {
        B::NAME
    }

    fn stat(&self, ns: &str, key: &str) -> Result<Info> {
        require_key(key)?;
        let record = self.read_record(ns, key)?;
        info_of(key, &record)
    }

    fn update(&self, ns: &str, info: Info, fieldpaths: &[String]) -> Result<Info> {
        require_key(&info.name)?;
        tracing::debug!(ns, key = %info.name, snapshotter = B::NAME, ?fieldpaths, "updating snapshot");
        let key = info.name.as_str();
        let txn = self.db.begin_write().db("begin write")?;
        let stored = {
            let mut table = txn.open_table(SNAPSHOTS).db("open snapshots")?;
            let mut record = get(&table, ns, B::NAME, key)?.ok_or_else(|| not_found(key))?;
            if fieldpaths.is_empty() {
                record.labels = info.labels;
            } else {
                for path in fieldpaths {
                    if let Some(label) = path.strip_prefix("labels.") {
                        match info.labels.get(label) {
                            Some(v) => record.labels.insert(label.to_string(), v.clone()),
                            None => record.labels.remove(label),
                        };
                    } else if path == "labels" {
                        record.labels = info.labels.clone();
                    } else {
                        return Err(SnapshotterError::InvalidArgument(format!(
                            "cannot update {path:?} field on snapshot {key:?}"
                        )));
                    }
                }
            }
            validate_labels(&record.labels)?;
            record.updated = now_nanos();
            put(&mut table, ns, B::NAME, key, &record)?;
            record
        };
        txn.commit().db("commit")?;
        info_of(key, &stored)
    }

    fn usage(&self, ns: &str, key: &str) -> Result<Usage> {
        require_key(key)?;
        let record = self.read_record(ns, key)?;
        if record.kind()? == Kind::Active {
            disk_usage(&self.dir(record.id).join("fs"))
        } else {
            Ok(Usage {
                size: record.size,
                inodes: record.inodes,
            })
        }
    }

    fn mounts(&self, ns: &str, key: &str) -> Result<Vec<Mount>> {
        require_key(key)?;
        let txn = self.db.begin_read().db("begin read")?;
        let table = txn.open_table(SNAPSHOTS).db("open snapshots")?;
        let record = get(&table, ns, B::NAME, key)?.ok_or_else(|| not_found(key))?;
        let kind = record.kind()?;
        if kind == Kind::Committed {
            return Err(SnapshotterError::FailedPrecondition(format!(
                "requested snapshot {key} not active or view"
            )));
        }
        let chain = if record.parent.is_empty() {
            Vec::new()
        } else {
            parent_chain(&table, ns, B::NAME, &record.parent)?
        };
        let parents: Vec<PathBuf> = chain.iter().map(|&id| self.dir(id)).collect();
        Ok(self.backend.mounts(&self.dir(record.id), kind, &parents))
    }

    fn prepare(
        &self,
        ns: &str,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>> {
        self.create(ns, key, parent, labels, Kind::Active)
    }

    fn view(
        &self,
        ns: &str,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>> {
        self.create(ns, key, parent, labels, Kind::View)
    }

    fn commit(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<()> {
        self.commit_inner(ns, name, key, None, labels)
    }

    fn can_rebase(&self) -> bool {
        B::CAN_REBASE
    }

    fn commit_rebased(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<()> {
        if !B::CAN_REBASE {
            return Err(SnapshotterError::NotImplemented(format!(
                "snapshotter {} cannot commit a snapshot onto a new parent",
                B::NAME
            )));
        }
        require_key(parent)?;
        self.commit_inner(ns, name, key, Some(parent), labels)
    }

    fn remove(&self, ns: &str, key: &str) -> Result<()> {
        require_key(key)?;
        tracing::debug!(ns, key, snapshotter = B::NAME, "removing snapshot");
        let txn = self.db.begin_write().db("begin write")?;
        let id = {
            let mut table = txn.open_table(SNAPSHOTS).db("open snapshots")?;
            let record = get(&table, ns, B::NAME, key)?.ok_or_else(|| not_found(key))?;
            if has_child(&table, ns, B::NAME, key)? {
                return Err(SnapshotterError::FailedPrecondition(
                    "cannot remove snapshot with child".into(),
                ));
            }
            table.remove((ns, B::NAME, key)).db("delete snapshot")?;
            record.id
        };
        txn.commit().db("commit")?;

        // The record is gone: from here on a failure only leaves a directory that
        // cleanup() removes, so it is logged rather than returned.
        let dir = self.dir(id);
        let doomed = self.tmp_dir().join(format!("rm-{id}"));
        match fs::rename(&dir, &doomed) {
            Ok(()) => {
                if let Err(e) = remove_all(&doomed) {
                    tracing::warn!(ns, key, snapshotter = B::NAME, error = %e, "could not delete a removed snapshot's directory; cleanup will retry");
                }
            }
            Err(e) => {
                tracing::warn!(ns, key, snapshotter = B::NAME, path = %dir.display(), error = %e, "could not move a removed snapshot's directory away; cleanup will retry");
            }
        }
        tracing::debug!(ns, key, snapshotter = B::NAME, id, "removed snapshot");
        Ok(())
    }

    fn list(&self, ns: &str) -> Result<Vec<Info>> {
        let txn = self.db.begin_read().db("begin read")?;
        let table = txn.open_table(SNAPSHOTS).db("open snapshots")?;
        let mut out = Vec::new();
        for item in table.range((ns, B::NAME, "")..).db("scan snapshots")? {
            let (k, v) = item.db("read snapshot")?;
            let (rns, rsn, key) = k.value();
            if rns != ns || rsn != B::NAME {
                break;
            }
            out.push(info_of(key, &metastore::decode(key, v.value())?)?);
        }
        Ok(out)
    }

    fn cleanup(&self) -> Result<()> {
        // Directories first: one created after this listing is not in it, and one in it
        // had its record committed before it was renamed into place, so the read below
        // sees that record.
        let snapshots = self.snapshots_dir();
        let dirs = read_dir_names(&snapshots)?;
        let live: HashSet<String> = {
            let txn = self.db.begin_read().db("begin read")?;
            let table = txn.open_table(SNAPSHOTS).db("open snapshots")?;
            let mut live = HashSet::new();
            for item in table.iter().db("scan snapshots")? {
                let (k, v) = item.db("read snapshot")?;
                let (_, sn, key) = k.value();
                if sn == B::NAME {
                    live.insert(metastore::decode(key, v.value())?.id.to_string());
                }
            }
            live
        };
        let tmp = self.tmp_dir();
        for name in read_dir_names(&tmp)? {
            if name.to_string_lossy().starts_with("rm-") {
                remove_all(&tmp.join(&name))?;
            }
        }
        for name in dirs {
            let name_str = name.to_string_lossy();
            if live.contains(name_str.as_ref()) {
                continue;
            }
            let dir = snapshots.join(&name);
            let doomed = tmp.join(format!("rm-{name_str}"));
            tracing::debug!(snapshotter = B::NAME, path = %dir.display(), "removing orphan snapshot directory");
            match fs::rename(&dir, &doomed) {
                Ok(()) => remove_all(&doomed)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(SnapshotterError::io("rename orphan snapshot", &dir, e)),
            }
        }
        Ok(())
    }
}

/// A directory staged under `tmp/`, removed on drop unless disarmed.
struct Staged {
    path: PathBuf,
    armed: bool,
}

impl Staged {
    fn create(tmp: &Path) -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        loop {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .subsec_nanos();
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = tmp.join(format!("new-{}-{n}-{nanos:08x}", std::process::id()));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(Self { path, armed: true }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(SnapshotterError::io("create", &path, e)),
            }
        }
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = remove_all(&self.path)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove a staged snapshot directory");
        }
    }
}

/// Converts a database error into [`SnapshotterError::Database`] naming what was done.
trait DbContext<T> {
    fn db(self, context: &str) -> Result<T>;
}

impl<T, E: Display> DbContext<T> for std::result::Result<T, E> {
    fn db(self, context: &str) -> Result<T> {
        self.map_err(|e| SnapshotterError::Database {
            context: context.to_string(),
            message: e.to_string(),
        })
    }
}

type SnapshotsTable<'a> = Table<'a, (&'static str, &'static str, &'static str), &'static [u8]>;

fn get<T>(table: &T, ns: &str, sn: &str, key: &str) -> Result<Option<SnapshotRecord>>
where
    T: ReadableTable<(&'static str, &'static str, &'static str), &'static [u8]>,
{
    match table.get((ns, sn, key)).db("read snapshot")? {
        Some(v) => Ok(Some(metastore::decode(key, v.value())?)),
        None => Ok(None),
    }
}

fn put(
    table: &mut SnapshotsTable<'_>,
    ns: &str,
    sn: &str,
    key: &str,
    record: &SnapshotRecord,
) -> Result<()> {
    let bytes = prost::Message::encode_to_vec(record);
    table
        .insert((ns, sn, key), bytes.as_slice())
        .db("write snapshot")?;
    Ok(())
}

/// Allocates the next directory id of snapshotter `sn` (ids start at 1, never reused).
fn next_id(ids: &mut Table<'_, &'static str, u64>, sn: &str) -> Result<u64> {
    let last = ids
        .get(sn)
        .db("read snapshot id")?
        .map(|v| v.value())
        .unwrap_or(0);
    let id = last
        .checked_add(1)
        .ok_or_else(|| SnapshotterError::Corrupt {
            key: sn.to_string(),
            message: "snapshot ids exhausted".into(),
        })?;
    ids.insert(sn, id).db("write snapshot id")?;
    Ok(id)
}

/// The directory ids of `parent` and its ancestors, nearest first. The parent must exist
/// (NotFound) and be committed (InvalidArgument).
fn parent_chain<T>(table: &T, ns: &str, sn: &str, parent: &str) -> Result<Vec<u64>>
where
    T: ReadableTable<(&'static str, &'static str, &'static str), &'static [u8]>,
{
    let first = get(table, ns, sn, parent)?.ok_or_else(|| {
        SnapshotterError::NotFound(format!("parent snapshot {parent} does not exist"))
    })?;
    if first.kind()? != Kind::Committed {
        return Err(SnapshotterError::InvalidArgument(format!(
            "parent {parent:?} is not committed snapshot"
        )));
    }
    let mut chain = vec![first.id];
    let mut next = first.parent;
    while !next.is_empty() {
        let record = get(table, ns, sn, &next)?.ok_or_else(|| SnapshotterError::Corrupt {
            key: next.clone(),
            message: format!("ancestor of {parent:?} is missing"),
        })?;
        if chain.len() > 100_000 || chain.contains(&record.id) {
            return Err(SnapshotterError::Corrupt {
                key: next,
                message: "the parent chain loops".into(),
            });
        }
        chain.push(record.id);
        next = record.parent;
    }
    Ok(chain)
}

/// Whether any snapshot of `(ns, sn)` has `key` as its parent.
fn has_child<T>(table: &T, ns: &str, sn: &str, key: &str) -> Result<bool>
where
    T: ReadableTable<(&'static str, &'static str, &'static str), &'static [u8]>,
{
    for item in table.range((ns, sn, "")..).db("scan snapshots")? {
        let (k, v) = item.db("read snapshot")?;
        let (rns, rsn, rkey) = k.value();
        if rns != ns || rsn != sn {
            break;
        }
        if metastore::decode(rkey, v.value())?.parent == key {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A record may be committed if it is active and, for a rebase, has no parent.
fn check_committable(record: &SnapshotRecord, key: &str, rebase_onto: Option<&str>) -> Result<()> {
    if record.kind()? != Kind::Active {
        return Err(SnapshotterError::FailedPrecondition(format!(
            "snapshot {key:?} is not active"
        )));
    }
    if rebase_onto.is_some() && !record.parent.is_empty() {
        return Err(SnapshotterError::InvalidArgument(format!(
            "snapshot {key:?} has parent {:?}: only a snapshot prepared without a parent can be committed onto a new one",
            record.parent
        )));
    }
    Ok(())
}

fn info_of(key: &str, record: &SnapshotRecord) -> Result<Info> {
    let kind = record.kind().map_err(|e| match e {
        SnapshotterError::Corrupt { message, .. } => SnapshotterError::Corrupt {
            key: key.to_string(),
            message,
        },
        other => other,
    })?;
    Ok(Info {
        name: key.to_string(),
        parent: (!record.parent.is_empty()).then(|| record.parent.clone()),
        kind,
        labels: record.labels.clone(),
        created: time_of(record.created),
        updated: time_of(record.updated),
    })
}

fn require_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(SnapshotterError::InvalidArgument(
            "snapshot key must not be empty".into(),
        ));
    }
    Ok(())
}

fn validate_labels(labels: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in labels {
        if k.len() + v.len() > MAX_LABEL_SIZE {
            return Err(SnapshotterError::InvalidArgument(format!(
                "label key and value greater than maximum size ({MAX_LABEL_SIZE} bytes), key: {}",
                k.chars().take(64).collect::<String>()
            )));
        }
    }
    Ok(())
}

fn not_found(key: &str) -> SnapshotterError {
    SnapshotterError::NotFound(format!("snapshot {key} does not exist"))
}

fn already_exists(key: &str) -> SnapshotterError {
    SnapshotterError::AlreadyExists(format!("snapshot {key:?}"))
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn time_of(nanos: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
}

/// Disk usage of the tree at `path` as `du` counts it: allocated blocks of each inode
/// once (hard links are not counted twice), and the number of inodes, `path` included.
pub fn disk_usage(path: &Path) -> Result<Usage> {
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut usage = Usage::default();
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = fs::symlink_metadata(&p).map_err(|e| SnapshotterError::io("lstat", &p, e))?;
        if seen.insert((meta.dev(), meta.ino())) {
            usage.size += i64::try_from(meta.blocks() * 512).unwrap_or(i64::MAX);
            usage.inodes += 1;
        }
        if meta.is_dir() {
            for name in read_dir_names(&p)? {
                stack.push(p.join(name));
            }
        }
    }
    Ok(usage)
}

/// The names in directory `dir`.
fn read_dir_names(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    let entries = fs::read_dir(dir).map_err(|e| SnapshotterError::io("read dir", dir, e))?;
    entries
        .map(|e| {
            e.map(|e| e.file_name())
                .map_err(|e| SnapshotterError::io("read dir", dir, e))
        })
        .collect()
}

/// Removes `path` and everything below it; a path that is already gone is fine. A second
/// attempt covers entries that vanished underneath (a concurrent removal of the same tree).
fn remove_all(path: &Path) -> Result<()> {
    let once = |path: &Path| match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => fs::remove_file(path),
        other => other,
    };
    match once(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) if fs::symlink_metadata(path).is_ok() => match once(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(SnapshotterError::io("remove", path, e))
            }
            _ => Ok(()),
        },
        Err(_) => Ok(()),
    }
}

/// fsyncs the directory `dir` (its entries: creations and renames in it).
fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| SnapshotterError::io("fsync", dir, e))
}
