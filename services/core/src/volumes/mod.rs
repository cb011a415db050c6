//! The volumes domain: named and anonymous volumes of the `local` driver, their records
//! (the `volumes` table, keyed `(namespace, name)`) and their data under berthd's root:
//!
//! ```text
//! <root>/volumes/<namespace>/<name>/_data     what the containers see (Docker's layout)
//! ```
//!
//! Which containers use a volume is said by the containers themselves: the `berth` CLI
//! labels each container with the volumes it mounts ([`VOLUMES_LABEL`]) and the anonymous
//! ones it made for it ([`ANONYMOUS_VOLUMES_LABEL`]), a contract like the network's
//! `berth/network`. A volume is "in use" while a container record of its namespace names
//! it; [`Volumes::delete`] refuses such a volume (Docker's `volume is in use`), and
//! [`Volumes::prune`] leaves it.
//!
//! At task create, a volume that has never been filled and is empty gets the contents of
//! the image directory it is mounted over ([`Volumes::copy_up`], Docker's copy-up), once.
//!
//! The local driver's options `type`, `device` and `o` put a filesystem of its own on a
//! volume (a tmpfs, a bind of a host directory), mounted at first use and unmounted when
//! the volume goes; a volume directory is never removed while anything is mounted in it.
//!
//! A volume is recorded before its directory is made, and its row removed before its
//! directory goes; what a crash leaves between the two (a directory with no record) is
//! removed by [`Volumes::sweep`] at start-up. `<root>/volumes` is root's alone (0700).
//! Creations and removals are published (`/volumes/create`, `/volumes/delete`).

mod copyup;
mod filters;

pub use filters::VolumeFilters;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use prost::Message;
use redb::{ReadableTable, WriteTransaction};

use crate::containers::Container;
use berth_proto::berth::services::volumes::v1::{VolumeCreate, VolumeDelete};

use crate::error::{Error, Result};
use crate::events::{Exchange, publish, topics};
use crate::metadata::{self, CONTAINERS, DbContext, Store, VOLUMES};
use crate::namespaces;

/// The container label listing the volumes a container mounts (named and anonymous), by
/// commas. Written by the `berth` CLI; read here to know what is in use.
pub const VOLUMES_LABEL: &str = "berth/volumes";
/// The container label listing the anonymous volumes made for the container, by commas:
/// removed with it by `rm -v` and `run --rm` (also berthd's auto-remove).
pub const ANONYMOUS_VOLUMES_LABEL: &str = "berth/anonymous-volumes";
/// The container label listing, by commas, the destinations of volume mounts that asked
/// for no copy-up (`-v name:/p:nocopy`, `--mount …,volume-nocopy`).
pub const NOCOPY_LABEL: &str = "berth/volumes-nocopy";
/// The label Docker puts on anonymous volumes (≥ 23), which `prune` without `--all` takes.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";
/// The one volume driver.
pub const LOCAL_DRIVER: &str = "local";

/// A volume's stored record.
#[derive(Clone, PartialEq, Message)]
pub struct VolumeRecord {
    #[prost(string, tag = "1")]
    pub driver: String,
    #[prost(btree_map = "string, string", tag = "2")]
    pub labels: BTreeMap<String, String>,
    #[prost(btree_map = "string, string", tag = "3")]
    pub options: BTreeMap<String, String>,
    /// Unix nanoseconds.
    #[prost(int64, tag = "4")]
    pub created_at: i64,
    /// Made for one container (`-v /path`, an image's VOLUME), with a random name.
    #[prost(bool, tag = "5")]
    pub anonymous: bool,
    /// Whether it has been filled from an image directory (or found not empty) already:
    /// copy-up happens once.
    #[prost(bool, tag = "6")]
    pub filled: bool,
}

/// A volume as the core hands it out.
#[derive(Clone, Debug, PartialEq)]
pub struct Volume {
    pub name: String,
    pub driver: String,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    pub created_at: i64,
    pub anonymous: bool,
    pub filled: bool,
    /// Where its data is on the host (`.../_data`).
    pub mountpoint: PathBuf,
    /// The ids of the containers whose records name it, in id order.
    pub used_by: Vec<String>,
    /// The bytes its files hold, when measured ([`Volumes::measure`]).
    pub size: Option<u64>,
}

/// What a create asks for.
#[derive(Clone, Debug, Default)]
pub struct CreateVolume {
    /// None or empty: an anonymous volume with a random name (64 hex digits).
    pub name: Option<String>,
    /// Empty: `local`.
    pub driver: String,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    /// Made for one container (`-v /path`, an image's VOLUME).
    pub anonymous: bool,
}

/// What a prune removed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pruned {
    pub deleted: Vec<String>,
    /// The bytes the deleted volumes held (apparent sizes of their files).
    pub reclaimed: u64,
}

/// Docker's rule for volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn check_name(name: &str) -> Result<()> {
    if valid_name(name) {
        return Ok(());
    }
    if name.len() < 2 && name.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(Error::invalid(format!(
            "create {name}: volume name is too short, names should be at least two alphanumeric characters"
        )));
    }
    Err(Error::invalid(format!(
        "create {name}: \"{name}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
    )))
}

/// A random anonymous volume name: 64 hex digits, as Docker's.
pub fn anonymous_name() -> String {
    crate::identifiers::random_id()
}

/// The volume names a container's labels list (named and anonymous).
pub fn names_in_label(labels: &BTreeMap<String, String>, key: &str) -> Vec<String> {
    crate::labels::list(labels, key)
}

/// The ids of the containers of `namespace` whose labels name volume `name`.
fn users_of(
    txn_table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    namespace: &str,
    name: &str,
) -> Result<Vec<String>> {
    let containers: Vec<(String, Container)> =
        metadata::list_in_namespace(txn_table, "container", namespace)?;
    Ok(containers
        .into_iter()
        .filter(|(_, c)| {
            names_in_label(&c.labels, VOLUMES_LABEL)
                .iter()
                .any(|n| n == name)
        })
        .map(|(id, _)| id)
        .collect())
}

/// Every volume name any container of `namespace` uses.
fn all_used(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    namespace: &str,
) -> Result<Vec<(String, Vec<String>)>> {
    let containers: Vec<(String, Container)> =
        metadata::list_in_namespace(table, "container", namespace)?;
    Ok(containers
        .into_iter()
        .map(|(id, c)| (id, names_in_label(&c.labels, VOLUMES_LABEL)))
        .collect())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("volume task: {e}")))?
}

/// The lock of one volume's preparation for a task.
type VolumeLock = Arc<tokio::sync::Mutex<()>>;

/// The volumes domain's service. Cheap to clone.
#[derive(Clone)]
pub struct Volumes {
    store: Store,
    exchange: Exchange,
    /// `<root>/volumes`.
    root: PathBuf,
    /// One lock per volume, held while it is prepared for a task (mount, copy-up), so
    /// that two containers starting on one new volume do not both fill it.
    preparing: Arc<Mutex<HashMap<(String, String), VolumeLock>>>,
}

impl Volumes {
    /// `root` is where the volumes live (`<berthd root>/volumes`); creations and
    /// removals are published on `exchange` (`/volumes/create`, `/volumes/delete`).
    pub fn new(store: Store, exchange: Exchange, root: PathBuf) -> Volumes {
        Volumes {
            store,
            exchange,
            root,
            preparing: Arc::default(),
        }
    }

    /// [`Volumes::new`] at start-up: `root` made (mode 0700), then [`Volumes::sweep`].
    pub async fn open(store: Store, exchange: Exchange, root: PathBuf) -> Result<Volumes> {
        let dir = root.clone();
        blocking(move || {
            use std::os::unix::fs::PermissionsExt;
            std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io("set mode of", &dir, e))
        })
        .await?;
        let volumes = Volumes::new(store, exchange, root);
        match volumes.sweep().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                directories = n,
                "removed volume directories without a record"
            ),
            Err(e) => tracing::warn!(error = %e, "volume sweep at start-up"),
        }
        Ok(volumes)
    }

    /// Where the volumes live.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of volume `name` (its `_data` is below it).
    fn dir(&self, namespace: &str, name: &str) -> PathBuf {
        self.root.join(namespace).join(name)
    }

    /// Where volume `name`'s data is: `<root>/volumes/<namespace>/<name>/_data`.
    pub fn mountpoint(&self, namespace: &str, name: &str) -> PathBuf {
        self.dir(namespace, name).join("_data")
    }

    fn volume(&self, namespace: &str, name: &str, r: VolumeRecord, used_by: Vec<String>) -> Volume {
        Volume {
            mountpoint: self.mountpoint(namespace, name),
            name: name.to_string(),
            driver: r.driver,
            labels: r.labels,
            options: r.options,
            created_at: r.created_at,
            anonymous: r.anonymous,
            filled: r.filled,
            used_by,
            size: None,
        }
    }

    /// Creates a volume, or returns the existing one of that name (Docker's create is
    /// idempotent: `-v name:/path` creates it implicitly). Returns it and whether it was
    /// made now.
    #[tracing::instrument(skip(self, req), fields(name = ?req.name))]
    pub async fn create(&self, namespace: &str, req: CreateVolume) -> Result<(Volume, bool)> {
        let name = match req.name.as_deref().filter(|n| !n.is_empty()) {
            Some(n) => {
                check_name(n)?;
                n.to_string()
            }
            None => anonymous_name(),
        };
        let driver = if req.driver.is_empty() {
            LOCAL_DRIVER.to_string()
        } else {
            req.driver.clone()
        };
        if driver != LOCAL_DRIVER {
            return Err(Error::not_found(format!(
                "create {name}: error looking up volume plugin {driver}: plugin \"{driver}\" not found"
            )));
        }
        check_options(&name, &req.options)?;
        let mut labels = req.labels.clone();
        if req.anonymous {
            labels.entry(ANONYMOUS_LABEL.to_string()).or_default();
        }
        let record = VolumeRecord {
            driver,
            labels,
            options: req.options.clone(),
            created_at: metadata::now_nanos(),
            anonymous: req.anonymous,
            filled: false,
        };
        let (ns, n, rec) = (namespace.to_string(), name.clone(), record);
        let (stored, created) = self
            .store
            .update(move |txn| {
                let mut t = txn.open_table(VOLUMES).ctx("open volumes")?;
                if let Some(v) = t.get((ns.as_str(), n.as_str())).ctx("read volume")? {
                    let old: VolumeRecord = metadata::decode("volume", &n, v.value())?;
                    return Ok((old, false));
                }
                namespaces::ensure(txn, &ns)?;
                t.insert((ns.as_str(), n.as_str()), rec.encode_to_vec().as_slice())
                    .ctx("write volume")?;
                Ok((rec, true))
            })
            .await?;
        let data = self.mountpoint(namespace, &name);
        let made = {
            let data = data.clone();
            blocking(move || {
                std::fs::create_dir_all(&data)
                    .map_err(|e| Error::io("create volume directory", &data, e))
            })
            .await
        };
        if let Err(e) = made {
            if created && let Err(undo) = self.forget(namespace, &name).await {
                tracing::warn!(%namespace, %name, error = %undo, "forget a volume whose directory failed");
            }
            return Err(e);
        }
        if created {
            tracing::info!(%namespace, %name, anonymous = stored.anonymous, "volume created");
            let event = VolumeCreate {
                name: name.clone(),
                driver: stored.driver.clone(),
                labels: stored.labels.clone(),
            };
            publish(&self.exchange, namespace, topics::VOLUME_CREATE, &event);
        }
        let used_by = if created {
            Vec::new()
        } else {
            self.users(namespace, &name).await?
        };
        Ok((self.volume(namespace, &name, stored, used_by), created))
    }

    async fn forget(&self, namespace: &str, name: &str) -> Result<()> {
        let (ns, n) = (namespace.to_string(), name.to_string());
        self.store
            .update(move |txn| {
                let mut t = txn.open_table(VOLUMES).ctx("open volumes")?;
                t.remove((ns.as_str(), n.as_str())).ctx("delete volume")?;
                Ok(())
            })
            .await
    }

    /// The containers using volume `name`.
    async fn users(&self, namespace: &str, name: &str) -> Result<Vec<String>> {
        let (ns, n) = (namespace.to_string(), name.to_string());
        self.store
            .view(move |txn| {
                let c = txn.open_table(CONTAINERS).ctx("open containers")?;
                users_of(&c, &ns, &n)
            })
            .await
    }

    /// Volume `name`; NotFound as Docker says it (`get NAME: no such volume`).
    pub async fn get(&self, namespace: &str, name: &str) -> Result<Volume> {
        let (ns, n) = (namespace.to_string(), name.to_string());
        let (rec, used_by) = self
            .store
            .view(move |txn| {
                let t = txn.open_table(VOLUMES).ctx("open volumes")?;
                let rec: VolumeRecord = match t.get((ns.as_str(), n.as_str())).ctx("read volume")? {
                    Some(v) => metadata::decode("volume", &n, v.value())?,
                    None => return Err(no_such_volume(&n)),
                };
                let c = txn.open_table(CONTAINERS).ctx("open containers")?;
                Ok((rec, users_of(&c, &ns, &n)?))
            })
            .await?;
        Ok(self.volume(namespace, name, rec, used_by))
    }

    /// The volumes of `namespace` that match `filters` (Docker's `name`, `label`,
    /// `dangling`, `driver`), in name order.
    pub async fn list(&self, namespace: &str, filters: &VolumeFilters) -> Result<Vec<Volume>> {
        let all = self.all(namespace).await?;
        Ok(all.into_iter().filter(|v| filters.matches(v)).collect())
    }

    /// `list` with each volume's size measured (`system df`).
    pub async fn measure(&self, volumes: Vec<Volume>) -> Result<Vec<Volume>> {
        blocking(move || {
            Ok(volumes
                .into_iter()
                .map(|mut v| {
                    v.size = Some(dir_size(&v.mountpoint));
                    v
                })
                .collect())
        })
        .await
    }

    /// Every volume of `namespace`, with its users.
    async fn all(&self, namespace: &str) -> Result<Vec<Volume>> {
        let ns = namespace.to_string();
        let (records, used) = self
            .store
            .view(move |txn| {
                let t = txn.open_table(VOLUMES).ctx("open volumes")?;
                let records: Vec<(String, VolumeRecord)> =
                    metadata::list_in_namespace(&t, "volume", &ns)?;
                let c = txn.open_table(CONTAINERS).ctx("open containers")?;
                Ok((records, all_used(&c, &ns)?))
            })
            .await?;
        Ok(records
            .into_iter()
            .map(|(name, rec)| {
                let users = used
                    .iter()
                    .filter(|(_, names)| names.contains(&name))
                    .map(|(id, _)| id.clone())
                    .collect();
                self.volume(namespace, &name, rec, users)
            })
            .collect())
    }

    /// Removes volume `name` and its data. Refused while a container of the namespace uses
    /// it (`remove NAME: volume is in use - [ID, ...]`), even when `force`d, as Docker
    /// refuses; `force` makes a missing volume no error (`docker volume rm -f`).
    #[tracing::instrument(skip(self))]
    pub async fn delete(&self, namespace: &str, name: &str, force: bool) -> Result<()> {
        let (ns, n) = (namespace.to_string(), name.to_string());
        let removed = self.store.update(move |txn| remove_row(txn, &ns, &n)).await;
        match removed {
            Ok(()) => {}
            Err(e) if force && e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        }
        self.remove_dir(namespace, name).await;
        self.removed(namespace, name);
        Ok(())
    }

    /// The lock that serialises preparing volume `name` for tasks.
    fn preparing_lock(&self, namespace: &str, name: &str) -> VolumeLock {
        let mut map = self.preparing.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((namespace.to_string(), name.to_string()))
            .or_default()
            .clone()
    }

    fn removed(&self, namespace: &str, name: &str) {
        self.preparing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(namespace.to_string(), name.to_string()));
        tracing::info!(%namespace, %name, "volume removed");
        let event = VolumeDelete {
            name: name.to_string(),
        };
        publish(&self.exchange, namespace, topics::VOLUME_DELETE, &event);
    }

    /// Removes the directory of a volume whose record is gone; a failure is logged (the
    /// start-up sweep tries again).
    async fn remove_dir(&self, namespace: &str, name: &str) -> u64 {
        let dir = self.dir(namespace, name);
        blocking(move || remove_volume_dir(&dir))
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(%namespace, %name, error = %e, "remove a volume's data");
                0
            })
    }

    /// Removes the anonymous volumes a container's labels list (`rm -v`, `run --rm`):
    /// named volumes stay, and so does one that another container still uses.
    pub async fn remove_anonymous_of(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<()> {
        let mut first = None;
        for name in names_in_label(labels, ANONYMOUS_VOLUMES_LABEL) {
            match self.get(namespace, &name).await {
                Ok(v) if !v.anonymous || !v.used_by.is_empty() => continue,
                Ok(_) => {}
                Err(e) if e.is_not_found() => continue,
                Err(e) => {
                    first.get_or_insert(e);
                    continue;
                }
            }
            if let Err(e) = self.delete(namespace, &name, true).await {
                tracing::warn!(%namespace, %name, error = %e, "remove an anonymous volume");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Removes the unused volumes of `namespace` that match `filters`: only anonymous ones
    /// unless `all` (Docker ≥ 23's `volume prune`, whose `-a` is `all`).
    #[tracing::instrument(skip(self, filters))]
    pub async fn prune(
        &self,
        namespace: &str,
        all: bool,
        filters: &VolumeFilters,
    ) -> Result<Pruned> {
        let mut out = Pruned::default();
        for v in self.all(namespace).await? {
            if !v.used_by.is_empty() || !(all || v.anonymous) || !filters.matches(&v) {
                continue;
            }
            let (ns, n) = (namespace.to_string(), v.name.clone());
            match self.store.update(move |txn| remove_row(txn, &ns, &n)).await {
                Ok(()) => {}
                // Taken into use (or removed) meanwhile: not pruned.
                Err(e) if e.is_not_found() || matches!(e, Error::FailedPrecondition(_)) => {
                    continue;
                }
                Err(e) => return Err(e),
            }
            out.reclaimed += self.remove_dir(namespace, &v.name).await;
            self.removed(namespace, &v.name);
            out.deleted.push(v.name);
        }
        Ok(out)
    }

    /// Mounts the filesystem volume `v`'s options ask for (`type`, `device`, `o`) on its
    /// data directory, if it is not mounted yet: at a container's first use, as Docker's
    /// local driver. It stays mounted until the volume is removed.
    pub(crate) async fn mount_if_needed(&self, v: &Volume) -> Result<()> {
        if v.options.is_empty() {
            return Ok(());
        }
        let (data, options, name) = (v.mountpoint.clone(), v.options.clone(), v.name.clone());
        blocking(move || mount_device(&data, &options))
            .await
            .map_err(|e| e.context(&format!("mount volume {name}")))
    }

    /// Records that volume `name` has been filled (copy-up done, or found not empty).
    async fn mark_filled(&self, namespace: &str, name: &str) -> Result<()> {
        let (ns, n) = (namespace.to_string(), name.to_string());
        self.store
            .update(move |txn| {
                let mut t = txn.open_table(VOLUMES).ctx("open volumes")?;
                let mut rec: VolumeRecord =
                    match t.get((ns.as_str(), n.as_str())).ctx("read volume")? {
                        Some(v) => metadata::decode("volume", &n, v.value())?,
                        None => return Err(no_such_volume(&n)),
                    };
                rec.filled = true;
                t.insert((ns.as_str(), n.as_str()), rec.encode_to_vec().as_slice())
                    .ctx("write volume")?;
                Ok(())
            })
            .await
    }

    /// Removes the volume directories that have no record (a crash between a record's
    /// removal and its directory's, or a create that did not finish). Returns how many.
    pub async fn sweep(&self) -> Result<usize> {
        let known: HashSet<(String, String)> = self
            .store
            .view(|txn| {
                let t = txn.open_table(VOLUMES).ctx("open volumes")?;
                let mut out = HashSet::new();
                for item in t.iter().ctx("scan volumes")? {
                    let (k, _) = item.ctx("read volume")?;
                    let (ns, n) = k.value();
                    out.insert((ns.to_string(), n.to_string()));
                }
                Ok(out)
            })
            .await?;
        let root = self.root.clone();
        blocking(move || {
            let mut removed = 0;
            let Ok(namespaces) = std::fs::read_dir(&root) else {
                return Ok(0);
            };
            for ns in namespaces.flatten() {
                let ns_name = ns.file_name().to_string_lossy().into_owned();
                let Ok(vols) = std::fs::read_dir(ns.path()) else {
                    continue;
                };
                for v in vols.flatten() {
                    let name = v.file_name().to_string_lossy().into_owned();
                    if known.contains(&(ns_name.clone(), name.clone())) {
                        continue;
                    }
                    match remove_volume_dir(&v.path()) {
                        Ok(_) => removed += 1,
                        Err(e) => {
                            tracing::warn!(path = %v.path().display(), error = %e, "volume sweep")
                        }
                    }
                }
            }
            Ok(removed)
        })
        .await
    }
}

fn no_such_volume(name: &str) -> Error {
    Error::not_found(format!("get {name}: no such volume"))
}

/// Removes volume `name`'s row unless a container of the namespace uses it.
fn remove_row(txn: &WriteTransaction, ns: &str, name: &str) -> Result<()> {
    let mut t = txn.open_table(VOLUMES).ctx("open volumes")?;
    if t.get((ns, name)).ctx("read volume")?.is_none() {
        return Err(no_such_volume(name));
    }
    let users = {
        let c = txn.open_table(CONTAINERS).ctx("open containers")?;
        users_of(&c, ns, name)?
    };
    if !users.is_empty() {
        return Err(Error::precondition(format!(
            "remove {name}: volume is in use - [{}]",
            users.join(", ")
        )));
    }
    t.remove((ns, name)).ctx("delete volume")?;
    Ok(())
}

/// The local driver's options: `type`, `device` and `o`, a filesystem mounted on the
/// volume's data directory when a container first uses it (`type=tmpfs,device=tmpfs,
/// o=size=64m`; `type=none,o=bind,device=/path`). Any other key is refused (Docker:
/// `invalid option: "KEY"`); given any, `type` and `device` must be.
fn check_options(name: &str, options: &BTreeMap<String, String>) -> Result<()> {
    if let Some(other) = options
        .keys()
        .find(|k| !["type", "device", "o"].contains(&k.as_str()))
    {
        return Err(Error::invalid(format!(
            "create {name}: invalid option: {other:?}"
        )));
    }
    if options.is_empty() {
        return Ok(());
    }
    for required in ["type", "device"] {
        if options.get(required).is_none_or(|v| v.is_empty()) {
            return Err(Error::invalid(format!(
                "create {name}: missing required option: {required:?}"
            )));
        }
    }
    Ok(())
}

/// The filesystem a volume's options ask for, if any.
fn device_mount(options: &BTreeMap<String, String>) -> Option<berth_snapshotter::Mount> {
    let kind = options.get("type")?.clone();
    let source = options.get("device")?.clone();
    let options = options
        .get("o")
        .map(|o| {
            o.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Some(berth_snapshotter::Mount {
        kind,
        source,
        options,
    })
}

/// Mounts a volume's filesystem on its data directory unless it is mounted already.
fn mount_device(data: &Path, options: &BTreeMap<String, String>) -> Result<()> {
    let Some(m) = device_mount(options) else {
        return Ok(());
    };
    std::fs::create_dir_all(data).map_err(|e| Error::io("create volume directory", data, e))?;
    if berth_snapshotter::mount::mounts_at_or_below(data)
        .iter()
        .any(|p| p == data)
    {
        return Ok(());
    }
    berth_snapshotter::mount::mount_all(&[m], data)?;
    Ok(())
}

/// Removes a volume's directory: whatever is mounted in it is unmounted first, and while
/// anything still is, nothing is removed (a bind-mounted host directory must never be
/// emptied). Returns the bytes its files held.
fn remove_volume_dir(dir: &Path) -> Result<u64> {
    let size = dir_size(dir);
    berth_snapshotter::mount::unmount_all_below(dir)?;
    let left = berth_snapshotter::mount::mounts_at_or_below(dir);
    if !left.is_empty() {
        return Err(Error::precondition(format!(
            "volume directory {} still has mounts: {left:?}",
            dir.display()
        )));
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(size),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Error::io("remove volume directory", dir, e)),
    }
}

/// The apparent size of the files under `dir` (what Docker reports as reclaimed).
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for e in entries.flatten() {
        let Ok(meta) = e.path().symlink_metadata() else {
            continue;
        };
        if meta.is_dir() {
            total += dir_size(&e.path());
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    total
}

#[cfg(test)]
mod tests;
