//! Namespaces: isolated sets of containers, images, leases, content and snapshots.

use std::collections::BTreeMap;

use prost::Message;
use redb::{ReadableTable, WriteTransaction};

use berth_proto::containerd::events::{NamespaceCreate, NamespaceDelete, NamespaceUpdate};

use crate::error::{Error, Result};
use crate::events::{Exchange, publish, topics};
use crate::metadata::{
    self, CONTAINERS, CONTENT, DbContext, IMAGES, LEASES, NAMESPACES, SNAPSHOTS, Store,
};
use crate::{identifiers, labels};

/// The namespace label that names its default snapshotter (containerd's client sets it on
/// a namespace it creates; requests that name no snapshotter use it).
pub const DEFAULT_SNAPSHOTTER_LABEL: &str = "containerd.io/defaults/snapshotter";

/// A namespace and its labels. Stored as the `namespaces` table's record.
#[derive(Clone, PartialEq, Message)]
pub struct Namespace {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(btree_map = "string, string", tag = "2")]
    pub labels: BTreeMap<String, String>,
}

/// How an update applies to the stored labels.
#[derive(Debug, Clone)]
pub enum LabelUpdate {
    /// No field mask: the labels are replaced wholesale.
    Replace(BTreeMap<String, String>),
    /// `labels.<key>` paths: each key is set to the given value, or removed when it has none.
    Keys(Vec<(String, Option<String>)>),
}

/// The namespaces core: its changes publish `/namespaces/*` events.
#[derive(Clone)]
pub struct Namespaces {
    store: Store,
    exchange: Exchange,
}

/// The namespace `name` as stored.
pub async fn get(store: &Store, name: &str) -> Result<Namespace> {
    let name = name.to_string();
    store
        .view(move |txn| {
            let t = txn.open_table(NAMESPACES).ctx("open namespaces")?;
            let v = t.get(name.as_str()).ctx("read namespace")?;
            match v {
                Some(v) => metadata::decode("namespace", &name, v.value()),
                None => Err(Error::not_found(format!("namespace {name:?}"))),
            }
        })
        .await
}

fn validate_labels(labels: &BTreeMap<String, String>) -> Result<()> {
    labels::validate_all(labels).map_err(|e| e.context("namespace.Labels"))
}

fn write(txn: &WriteTransaction, ns: &Namespace) -> Result<()> {
    let mut t = txn.open_table(NAMESPACES).ctx("open namespaces")?;
    t.insert(ns.name.as_str(), ns.encode_to_vec().as_slice())
        .ctx("write namespace")?;
    Ok(())
}

/// Records the namespace if it does not exist yet, in the caller's transaction: objects
/// created in a namespace create it.
pub(crate) fn ensure(txn: &WriteTransaction, namespace: &str) -> Result<()> {
    let mut t = txn.open_table(NAMESPACES).ctx("open namespaces")?;
    if t.get(namespace).ctx("read namespace")?.is_none() {
        let record = Namespace {
            name: namespace.to_string(),
            ..Default::default()
        };
        t.insert(namespace, record.encode_to_vec().as_slice())
            .ctx("write namespace")?;
    }
    Ok(())
}

fn read(txn: &WriteTransaction, name: &str) -> Result<Namespace> {
    let t = txn.open_table(NAMESPACES).ctx("open namespaces")?;
    let v = t.get(name).ctx("read namespace")?;
    match v {
        Some(v) => metadata::decode("namespace", name, v.value()),
        None => Err(Error::not_found(format!("namespace {name:?}"))),
    }
}

impl Namespaces {
    pub fn new(store: Store, exchange: Exchange) -> Self {
        Namespaces { store, exchange }
    }

    #[tracing::instrument(level = "debug", skip(self, ns), fields(namespace = %ns.name))]
    pub async fn create(&self, ns: Namespace) -> Result<Namespace> {
        identifiers::validate(&ns.name)?;
        validate_labels(&ns.labels)?;
        let ns = self
            .store
            .update(move |txn| {
                {
                    let t = txn.open_table(NAMESPACES).ctx("open namespaces")?;
                    if t.get(ns.name.as_str()).ctx("read namespace")?.is_some() {
                        return Err(Error::already_exists(format!("namespace {:?}", ns.name)));
                    }
                }
                write(txn, &ns)?;
                Ok(ns)
            })
            .await?;
        let event = NamespaceCreate {
            name: ns.name.clone(),
            labels: ns.labels.clone(),
        };
        publish(&self.exchange, &ns.name, topics::NAMESPACE_CREATE, &event);
        Ok(ns)
    }

    pub async fn get(&self, name: &str) -> Result<Namespace> {
        get(&self.store, name).await
    }

    pub async fn list(&self) -> Result<Vec<Namespace>> {
        self.store
            .view(|txn| {
                let t = txn.open_table(NAMESPACES).ctx("open namespaces")?;
                let mut out = Vec::new();
                for item in t.iter().ctx("scan namespaces")? {
                    let (k, v) = item.ctx("read namespace")?;
                    out.push(metadata::decode("namespace", k.value(), v.value())?);
                }
                Ok(out)
            })
            .await
    }

    /// Updates the fields an update mask names (`labels`, `labels.<key>`; all labels when
    /// `paths` is empty) from `labels`, as containerd's namespaces service reads a mask.
    pub async fn update_fields(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
        paths: &[String],
    ) -> Result<Namespace> {
        let mut keys = Vec::new();
        for path in paths {
            if let Some(key) = path.strip_prefix("labels.") {
                keys.push((key.to_string(), labels.get(key).cloned()));
            } else if path == "labels" {
                // The whole label set, whatever else the mask names.
                return self.update(name, LabelUpdate::Replace(labels)).await;
            } else {
                return Err(Error::invalid(format!(
                    "cannot update {path:?} field on namespace {name:?}"
                )));
            }
        }
        let update = if paths.is_empty() {
            LabelUpdate::Replace(labels)
        } else {
            LabelUpdate::Keys(keys)
        };
        self.update(name, update).await
    }

    /// Applies a label update and returns the namespace as stored. A namespace that does not
    /// exist is created with the update's labels, as containerd's store does (its client
    /// labels a fresh namespace this way before anything else is in it).
    #[tracing::instrument(level = "debug", skip(self, update))]
    pub async fn update(&self, name: &str, update: LabelUpdate) -> Result<Namespace> {
        identifiers::validate(name)?;
        match &update {
            LabelUpdate::Replace(labels) => validate_labels(labels)?,
            LabelUpdate::Keys(keys) => {
                for (k, v) in keys {
                    labels::validate(k, v.as_deref().unwrap_or(""))
                        .map_err(|e| e.context("namespace.Labels"))?;
                }
            }
        }
        let name = name.to_string();
        let ns = self
            .store
            .update(move |txn| {
                let mut ns = match read(txn, &name) {
                    Ok(ns) => ns,
                    Err(Error::NotFound(_)) => Namespace {
                        name: name.clone(),
                        labels: BTreeMap::new(),
                    },
                    Err(e) => return Err(e),
                };
                match update {
                    LabelUpdate::Replace(labels) => ns.labels = labels,
                    LabelUpdate::Keys(keys) => {
                        for (k, v) in keys {
                            match v {
                                Some(v) if !v.is_empty() => {
                                    ns.labels.insert(k, v);
                                }
                                _ => {
                                    ns.labels.remove(&k);
                                }
                            }
                        }
                    }
                }
                write(txn, &ns)?;
                Ok(ns)
            })
            .await?;
        let event = NamespaceUpdate {
            name: ns.name.clone(),
            labels: ns.labels.clone(),
        };
        publish(&self.exchange, &ns.name, topics::NAMESPACE_UPDATE, &event);
        Ok(ns)
    }

    /// Deletes an empty namespace. A namespace that still holds objects is a
    /// FailedPrecondition naming what it holds, in containerd's words.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn delete(&self, name: &str) -> Result<()> {
        let owned = name.to_string();
        self.store
            .update(move |txn| {
                read(txn, &owned)?;
                let mut held: Vec<String> = Vec::new();
                let images = txn.open_table(IMAGES).ctx("open images")?;
                if metadata::namespace_has_rows2(&images, &owned)? {
                    held.push("images".into());
                }
                let content = txn.open_table(CONTENT).ctx("open content")?;
                if metadata::namespace_has_rows2(&content, &owned)? {
                    held.push("blobs".into());
                }
                let containers = txn.open_table(CONTAINERS).ctx("open containers")?;
                if metadata::namespace_has_rows2(&containers, &owned)? {
                    held.push("containers".into());
                }
                let snapshots = txn.open_table(SNAPSHOTS).ctx("open snapshots")?;
                for s in metadata::snapshotters_in_namespace(&snapshots, &owned)? {
                    held.push(format!("snapshots on {s:?} snapshotter"));
                }
                let leases = txn.open_table(LEASES).ctx("open leases")?;
                if metadata::namespace_has_rows2(&leases, &owned)? {
                    held.push("leases".into());
                }
                let volumes = txn.open_table(metadata::VOLUMES).ctx("open volumes")?;
                if metadata::namespace_has_rows2(&volumes, &owned)? {
                    held.push("volumes".into());
                }
                if !held.is_empty() {
                    return Err(Error::precondition(format!(
                        "namespace {owned:?} must be empty, but it still has {}",
                        held.join(", ")
                    )));
                }
                let mut t = txn.open_table(NAMESPACES).ctx("open namespaces")?;
                t.remove(owned.as_str()).ctx("delete namespace")?;
                Ok(())
            })
            .await?;
        let event = NamespaceDelete {
            name: name.to_string(),
        };
        publish(&self.exchange, name, topics::NAMESPACE_DELETE, &event);
        Ok(())
    }
}
