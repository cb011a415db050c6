//! Containers: the metadata record of a container (spec, image, runtime, snapshot), not the
//! running task.

use std::collections::BTreeMap;

use prost::Message;
use redb::{ReadableTable, WriteTransaction};

use berth_proto::containerd::events::{
    ContainerCreate, ContainerDelete, ContainerUpdate, container_create,
};

use crate::collector::Collector;
use crate::error::{Error, Result};
use crate::events::{Exchange, publish, topics};
use crate::filters::{self, Adaptor, Filter};
use crate::metadata::{self, CONTAINERS, DbContext, Store};
use crate::types::AnyValue;
use crate::{identifiers, labels, namespaces};

/// A container record. Stored as the `containers` table's record.
#[derive(Clone, PartialEq, Message)]
pub struct Container {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(btree_map = "string, string", tag = "2")]
    pub labels: BTreeMap<String, String>,
    #[prost(string, tag = "3")]
    pub image: String,
    #[prost(message, optional, tag = "4")]
    pub runtime: Option<Runtime>,
    #[prost(message, optional, tag = "5")]
    pub spec: Option<AnyValue>,
    #[prost(string, tag = "6")]
    pub snapshotter: String,
    #[prost(string, tag = "7")]
    pub snapshot_key: String,
    /// Unix nanoseconds.
    #[prost(int64, tag = "8")]
    pub created_at: i64,
    #[prost(int64, tag = "9")]
    pub updated_at: i64,
    #[prost(btree_map = "string, message", tag = "10")]
    pub extensions: BTreeMap<String, AnyValue>,
    #[prost(string, tag = "11")]
    pub sandbox: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Runtime {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub options: Option<AnyValue>,
}

impl Container {
    pub fn runtime_name(&self) -> &str {
        self.runtime.as_ref().map(|r| r.name.as_str()).unwrap_or("")
    }
}

impl Adaptor for Container {
    fn field(&self, path: &[String]) -> Option<String> {
        let present = |s: &str| (!s.is_empty()).then(|| s.to_string());
        match path.first().map(String::as_str)? {
            "id" => present(&self.id),
            "runtime" => match path.get(1).map(String::as_str) {
                Some("name") => present(self.runtime_name()),
                _ => None,
            },
            "image" => present(&self.image),
            "snapshotter" => present(&self.snapshotter),
            "snapshotkey" | "snapshot_key" => present(&self.snapshot_key),
            "sandbox" => present(&self.sandbox),
            "labels" => filters::map_field(&self.labels, &path[1..]),
            _ => None,
        }
    }
}

/// The checks containerd applies before a container record is written.
fn validate(c: &Container) -> Result<()> {
    identifiers::validate(&c.id).map_err(|e| e.context("container.ID"))?;
    if c.extensions.keys().any(String::is_empty) {
        return Err(Error::invalid(
            "container.Extension keys must not be zero-length",
        ));
    }
    labels::validate_all(&c.labels).map_err(|e| e.context("containers.Labels"))?;
    if c.runtime_name().is_empty() {
        return Err(Error::invalid("container.Runtime.Name must be set"));
    }
    if c.spec.is_none() {
        return Err(Error::invalid("container.Spec must be set"));
    }
    if !c.snapshot_key.is_empty() && c.snapshotter.is_empty() {
        return Err(Error::invalid(
            "container.Snapshotter must be set if container.SnapshotKey is set",
        ));
    }
    Ok(())
}

/// The stored container `id`, read in the update's transaction (NotFound if there is none).
fn read_for_update(txn: &WriteTransaction, namespace: &str, id: &str) -> Result<Container> {
    let t = txn.open_table(CONTAINERS).ctx("open containers")?;
    let v = t.get((namespace, id)).ctx("read container")?;
    match v {
        Some(v) => metadata::decode("container", id, v.value()),
        None => Err(Error::not_found(format!("container {id:?}"))),
    }
}

/// The fields an update without paths replaces (containerd's): labels, spec, extensions,
/// image and snapshot key. The snapshotter and the runtime's name may not change then.
fn default_update_paths(stored: &Container, c: &Container) -> Result<Vec<String>> {
    if stored.snapshotter != c.snapshotter {
        return Err(Error::invalid("container.Snapshotter field is immutable"));
    }
    if stored.runtime_name() != c.runtime_name() {
        return Err(Error::invalid("container.Runtime.Name field is immutable"));
    }
    Ok(["labels", "spec", "extensions", "image", "snapshotkey"]
        .map(String::from)
        .to_vec())
}

/// Copies the field `path` names from `c` into `updated`: a whole field, or one key of the
/// labels (`labels.<key>`, removed when empty or absent) or extensions (`extensions.<key>`,
/// removed when absent). An unknown path is InvalidArgument.
fn apply_update_path(updated: &mut Container, c: &Container, path: &str) -> Result<()> {
    if let Some(key) = path.strip_prefix("labels.") {
        match c.labels.get(key) {
            Some(v) if !v.is_empty() => {
                updated.labels.insert(key.to_string(), v.clone());
            }
            _ => {
                updated.labels.remove(key);
            }
        }
        return Ok(());
    }
    if let Some(key) = path.strip_prefix("extensions.") {
        match c.extensions.get(key) {
            Some(v) => {
                updated.extensions.insert(key.to_string(), v.clone());
            }
            None => {
                updated.extensions.remove(key);
            }
        }
        return Ok(());
    }
    match path {
        "labels" => updated.labels = c.labels.clone(),
        "spec" => updated.spec = c.spec.clone(),
        "extensions" => updated.extensions = c.extensions.clone(),
        "image" => updated.image = c.image.clone(),
        "snapshotkey" | "snapshot_key" => updated.snapshot_key = c.snapshot_key.clone(),
        "snapshotter" => updated.snapshotter = c.snapshotter.clone(),
        "runtime" => updated.runtime = c.runtime.clone(),
        "sandbox" | "sandbox_id" => updated.sandbox = c.sandbox.clone(),
        _ => {
            return Err(Error::invalid(format!(
                "cannot update {path:?} field on {:?}",
                c.id
            )));
        }
    }
    Ok(())
}

fn write(txn: &WriteTransaction, namespace: &str, c: &Container) -> Result<()> {
    let mut t = txn.open_table(CONTAINERS).ctx("open containers")?;
    t.insert((namespace, c.id.as_str()), c.encode_to_vec().as_slice())
        .ctx("write container")?;
    Ok(())
}

/// The containers core: records in the metadata store, and the `/containers/*` events
/// of every change.
#[derive(Clone)]
pub struct Containers {
    store: Store,
    exchange: Exchange,
    gc: Collector,
}

impl Containers {
    pub fn new(store: Store, exchange: Exchange, gc: Collector) -> Self {
        Containers {
            store,
            exchange,
            gc,
        }
    }

    /// Creates the container and publishes `/containers/create`.
    pub async fn create(&self, namespace: &str, c: Container) -> Result<Container> {
        let created = self.create_record(namespace, c).await?;
        let runtime = created.runtime.clone().map(|r| container_create::Runtime {
            name: r.name,
            options: r.options.map(|o| prost_types::Any {
                type_url: o.type_url,
                value: o.value,
            }),
        });
        let event = ContainerCreate {
            id: created.id.clone(),
            image: created.image.clone(),
            runtime,
        };
        publish(&self.exchange, namespace, topics::CONTAINER_CREATE, &event);
        Ok(created)
    }

    /// Updates the fields named by `paths` (all mutable fields when empty) from `c` and
    /// publishes `/containers/update`.
    pub async fn update(
        &self,
        namespace: &str,
        c: Container,
        paths: Vec<String>,
    ) -> Result<Container> {
        let updated = self.update_record(namespace, c, paths).await?;
        let event = ContainerUpdate {
            id: updated.id.clone(),
            image: updated.image.clone(),
            labels: updated.labels.clone(),
            snapshot_key: updated.snapshot_key.clone(),
        };
        publish(&self.exchange, namespace, topics::CONTAINER_UPDATE, &event);
        Ok(updated)
    }

    /// Deletes the container and publishes `/containers/delete`. Its snapshot (and what
    /// its labels held) may be garbage now: the caller schedules a collection.
    pub async fn delete(&self, namespace: &str, id: &str) -> Result<()> {
        self.delete_record(namespace, id).await?;
        let event = ContainerDelete { id: id.to_string() };
        publish(&self.exchange, namespace, topics::CONTAINER_DELETE, &event);
        // Its snapshot (and what its labels held) may be garbage now.
        self.gc.schedule();
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn get(&self, namespace: &str, id: &str) -> Result<Container> {
        let (namespace, id) = (namespace.to_string(), id.to_string());
        self.store
            .view(move |txn| {
                let t = txn.open_table(CONTAINERS).ctx("open containers")?;
                let v = t
                    .get((namespace.as_str(), id.as_str()))
                    .ctx("read container")?;
                match v {
                    Some(v) => metadata::decode("container", &id, v.value()),
                    None => Err(Error::not_found(format!(
                        "container {id:?} in namespace {namespace:?}"
                    ))),
                }
            })
            .await
    }

    #[tracing::instrument(level = "debug", skip(self, filter))]
    pub async fn list(&self, namespace: &str, filter: Filter) -> Result<Vec<Container>> {
        let namespace = namespace.to_string();
        self.store
            .view(move |txn| {
                let t = txn.open_table(CONTAINERS).ctx("open containers")?;
                Ok(
                    metadata::list_in_namespace::<_, Container>(&t, "container", &namespace)?
                        .into_iter()
                        .map(|(_, c)| c)
                        .filter(|c| filter.matches(c))
                        .collect(),
                )
            })
            .await
    }

    #[tracing::instrument(level = "debug", skip(self, c), fields(id = %c.id))]
    async fn create_record(&self, namespace: &str, mut c: Container) -> Result<Container> {
        validate(&c).map_err(|e| e.context("create container failed validation"))?;
        let now = metadata::now_nanos();
        c.created_at = now;
        c.updated_at = now;
        let namespace = namespace.to_string();
        self.store
            .update(move |txn| {
                namespaces::ensure(txn, &namespace)?;
                {
                    let t = txn.open_table(CONTAINERS).ctx("open containers")?;
                    if t.get((namespace.as_str(), c.id.as_str()))
                        .ctx("read container")?
                        .is_some()
                    {
                        return Err(Error::already_exists(format!("container {:?}", c.id)));
                    }
                }
                write(txn, &namespace, &c)?;
                Ok(c)
            })
            .await
    }

    #[tracing::instrument(level = "debug", skip(self, c), fields(id = %c.id))]
    async fn update_record(
        &self,
        namespace: &str,
        c: Container,
        paths: Vec<String>,
    ) -> Result<Container> {
        if c.id.is_empty() {
            return Err(Error::invalid("must specify a container id"));
        }
        let namespace = namespace.to_string();
        self.store
            .update(move |txn| {
                let mut updated = read_for_update(txn, &namespace, &c.id)?;
                let paths = if paths.is_empty() {
                    default_update_paths(&updated, &c)?
                } else {
                    paths
                };
                for path in &paths {
                    apply_update_path(&mut updated, &c, path)?;
                }
                validate(&updated).map_err(|e| e.context("update failed validation"))?;
                updated.updated_at = metadata::now_nanos();
                write(txn, &namespace, &updated)?;
                Ok(updated)
            })
            .await
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn delete_record(&self, namespace: &str, id: &str) -> Result<()> {
        let (namespace, id) = (namespace.to_string(), id.to_string());
        self.store
            .update(move |txn| {
                let mut t = txn.open_table(CONTAINERS).ctx("open containers")?;
                let removed = t
                    .remove((namespace.as_str(), id.as_str()))
                    .ctx("delete container")?;
                if removed.is_none() {
                    return Err(Error::not_found(format!("container {id}")));
                }
                Ok(())
            })
            .await
    }
}
