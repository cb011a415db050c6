//! The snapshots service: the calls of containerd's Snapshots API over the loaded
//! snapshotters, with what berthd adds around them.
//!
//! In berthd ([`Snapshots::daemon`]) creations join the caller's lease first (so that a
//! concurrent collection can't take them), changes publish `/snapshot/*` events and a
//! removal asks for a garbage collection. The `berth-snapshotter` proxy
//! ([`Snapshots::proxy`]) has none of these: containerd, its client, keeps leases, events
//! and GC itself; and it serves its one snapshotter whatever name a request gives.

use std::collections::BTreeMap;

use berth_proto::containerd::events::{SnapshotCommit, SnapshotPrepare, SnapshotRemove};
use berth_snapshotter::{Info, Mount, Usage};

use super::{SNAPSHOT_REF_LABEL, Snapshotters, check_target, ensure_namespace, list_filtered};
use crate::collector::Collector;
use crate::error::{Error, Result};
use crate::events::{Exchange, publish, topics};
use crate::filters::Filter;
use crate::labels;
use crate::leases::{Leases, Resource};
use crate::metadata::Store;

/// What berthd adds around the snapshotter calls; the proxy has none of it.
#[derive(Clone)]
struct Hooks {
    leases: Leases,
    exchange: Exchange,
    gc: Collector,
}

/// The snapshots service. Cheap to clone.
#[derive(Clone)]
pub struct Snapshots {
    snapshotters: Snapshotters,
    store: Store,
    hooks: Option<Hooks>,
}

/// A Prepare or View: the snapshot `key` on `parent` (none when empty).
#[derive(Debug, Clone, Default)]
pub struct Create {
    pub snapshotter: String,
    pub key: String,
    pub parent: String,
    pub labels: BTreeMap<String, String>,
    /// A read-only view rather than an active snapshot.
    pub view: bool,
}

/// A Commit: the active snapshot `key` committed as `name` (rebased on `parent` when set).
#[derive(Debug, Clone, Default)]
pub struct Commit {
    pub snapshotter: String,
    pub name: String,
    pub key: String,
    pub parent: String,
    pub labels: BTreeMap<String, String>,
}

/// A lease resource added for a creation, taken back if the creation fails.
struct LeaseHold {
    leases: Leases,
    namespace: String,
    lease: String,
    resource: Resource,
}

impl LeaseHold {
    /// Undoes the hold unless the failure says the snapshot already existed (then it may
    /// have been in the lease before this call).
    async fn release_after(self, err: &Error) {
        if err.is_already_exists() {
            return;
        }
        if let Err(e) = self
            .leases
            .delete_resource(&self.namespace, &self.lease, self.resource)
            .await
        {
            tracing::warn!(lease = %self.lease, error = %e, "release lease resource after a failed snapshot call");
        }
    }
}

fn non_empty(what: &str, v: &str) -> Result<()> {
    if v.is_empty() {
        return Err(Error::invalid(format!("{what} must not be empty")));
    }
    Ok(())
}

fn validate_labels(l: &BTreeMap<String, String>) -> Result<()> {
    labels::validate_all(l).map_err(|e| e.context("info.Labels"))
}

impl Snapshots {
    /// The service as berthd serves it: leases, events and GC.
    pub fn daemon(
        snapshotters: Snapshotters,
        store: Store,
        leases: Leases,
        exchange: Exchange,
        gc: Collector,
    ) -> Snapshots {
        Snapshots {
            snapshotters,
            store,
            hooks: Some(Hooks {
                leases,
                exchange,
                gc,
            }),
        }
    }

    /// The service as the `berth-snapshotter` proxy serves it: no leases, events or GC.
    pub fn proxy(snapshotters: Snapshotters, store: Store) -> Snapshots {
        Snapshots {
            snapshotters,
            store,
            hooks: None,
        }
    }

    /// Whether this is the proxy's service (whose requests may omit the namespace).
    pub fn is_proxy(&self) -> bool {
        self.hooks.is_none()
    }

    /// The loaded snapshotter a request names. The proxy serves one snapshotter whatever
    /// the request says: containerd's proxy client sends its own name for the plugin
    /// (`[proxy_plugins.<name>]`), not ours.
    fn snapshotter(&self, requested: &str) -> Result<String> {
        let requested = if self.is_proxy() { "" } else { requested };
        self.snapshotters.get(requested)?;
        Ok(self.snapshotters.resolve(requested).to_string())
    }

    /// Adds `snapshots/<snapshotter>` + `key` to `lease`, if there is one (berthd only).
    async fn hold(
        &self,
        ns: &str,
        lease: Option<&str>,
        snapshotter: &str,
        key: &str,
    ) -> Result<Option<LeaseHold>> {
        let (Some(hooks), Some(lease)) = (&self.hooks, lease) else {
            return Ok(None);
        };
        let resource = Resource::snapshot(snapshotter, key);
        hooks
            .leases
            .add_resource(ns, lease, resource.clone())
            .await?;
        Ok(Some(LeaseHold {
            leases: hooks.leases.clone(),
            namespace: ns.to_string(),
            lease: lease.to_string(),
            resource,
        }))
    }

    /// Drops `key` from `lease` after the snapshot is gone (committed or removed).
    async fn unhold(&self, ns: &str, lease: Option<&str>, snapshotter: &str, key: &str) {
        let (Some(hooks), Some(lease)) = (&self.hooks, lease) else {
            return;
        };
        let resource = Resource::snapshot(snapshotter, key);
        if let Err(e) = hooks.leases.delete_resource(ns, lease, resource).await
            && !e.is_not_found()
        {
            tracing::warn!(%lease, key, error = %e, "drop snapshot from lease");
        }
    }

    fn publish<M: prost::Name>(&self, ns: &str, topic: &str, m: &M) {
        if let Some(h) = &self.hooks {
            publish(&h.exchange, ns, topic, m);
        }
    }

    /// Prepare or View (`c.view`), holding the new snapshot in `lease`.
    pub async fn create(&self, ns: &str, c: Create, lease: Option<&str>) -> Result<Vec<Mount>> {
        non_empty("key", &c.key)?;
        validate_labels(&c.labels)?;
        // Fail early (and without touching the lease) for an unknown snapshotter.
        let name = self.snapshotter(&c.snapshotter)?;
        ensure_namespace(&self.store, ns).await?;
        self.skip_existing_target(ns, &name, &c.labels, lease)
            .await?;
        let hold = self.hold(ns, lease, &name, &c.key).await?;
        let (ns2, key, parent, labels, view) = (
            ns.to_string(),
            c.key.clone(),
            c.parent.clone(),
            c.labels,
            c.view,
        );
        let result = self
            .snapshotters
            .run(&name, move |s| {
                let parent = (!parent.is_empty()).then_some(parent.as_str());
                if view {
                    s.view(&ns2, &key, parent, labels)
                } else {
                    s.prepare(&ns2, &key, parent, labels)
                }
            })
            .await;
        match result {
            Ok(mounts) => {
                if !c.view {
                    let event = SnapshotPrepare {
                        key: c.key,
                        parent: c.parent,
                        snapshotter: name,
                    };
                    self.publish(ns, topics::SNAPSHOT_PREPARE, &event);
                }
                Ok(mounts)
            }
            Err(e) => {
                if let Some(h) = hold {
                    h.release_after(&e).await;
                }
                Err(e)
            }
        }
    }

    /// An unpack names the committed snapshot it will make ([`SNAPSHOT_REF_LABEL`]): when
    /// that exists already, the creation fails with AlreadyExists so that the client skips
    /// the layer, and the existing snapshot joins the lease, as containerd does, so it
    /// survives until the client has used it.
    async fn skip_existing_target(
        &self,
        ns: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
        lease: Option<&str>,
    ) -> Result<()> {
        let Some(target) = labels.get(SNAPSHOT_REF_LABEL).filter(|t| !t.is_empty()) else {
            return Ok(());
        };
        let (ns2, l2) = (ns.to_string(), labels.clone());
        let checked = self
            .snapshotters
            .run(name, move |s| check_target(s, &ns2, &l2))
            .await;
        if let Err(e) = checked {
            if e.is_already_exists() {
                self.hold(ns, lease, name, target).await?;
            }
            return Err(e);
        }
        Ok(())
    }

    pub async fn mounts(&self, ns: &str, snapshotter: &str, key: &str) -> Result<Vec<Mount>> {
        let (ns, key) = (ns.to_string(), key.to_string());
        self.snapshotters
            .run(&self.snapshotter(snapshotter)?, move |s| {
                s.mounts(&ns, &key)
            })
            .await
    }

    /// Commits `c.key` as `c.name`; the committed snapshot takes the active one's place in
    /// `lease`.
    pub async fn commit(&self, ns: &str, c: Commit, lease: Option<&str>) -> Result<()> {
        non_empty("name", &c.name)?;
        non_empty("key", &c.key)?;
        validate_labels(&c.labels)?;
        let name = self.snapshotter(&c.snapshotter)?;
        let hold = self.hold(ns, lease, &name, &c.name).await?;
        let (ns2, target, key, parent, labels) = (
            ns.to_string(),
            c.name.clone(),
            c.key.clone(),
            c.parent,
            c.labels,
        );
        let result = self
            .snapshotters
            .run(&name, move |s| {
                if parent.is_empty() {
                    s.commit(&ns2, &target, &key, labels)
                } else {
                    s.commit_rebased(&ns2, &target, &key, &parent, labels)
                }
            })
            .await;
        if let Err(e) = result {
            if let Some(h) = hold {
                h.release_after(&e).await;
            }
            return Err(e);
        }
        self.unhold(ns, lease, &name, &c.key).await;
        let event = SnapshotCommit {
            key: c.key,
            name: c.name,
            snapshotter: name,
        };
        self.publish(ns, topics::SNAPSHOT_COMMIT, &event);
        Ok(())
    }

    /// Removes `key` (and drops it from `lease`); what it held is collected soon.
    pub async fn remove(
        &self,
        ns: &str,
        snapshotter: &str,
        key: &str,
        lease: Option<&str>,
    ) -> Result<()> {
        non_empty("key", key)?;
        let name = self.snapshotter(snapshotter)?;
        let (ns2, key2) = (ns.to_string(), key.to_string());
        self.snapshotters
            .run(&name, move |s| s.remove(&ns2, &key2))
            .await?;
        self.unhold(ns, lease, &name, key).await;
        let event = SnapshotRemove {
            key: key.to_string(),
            snapshotter: name,
        };
        self.publish(ns, topics::SNAPSHOT_REMOVE, &event);
        if let Some(h) = &self.hooks {
            h.gc.schedule();
        }
        Ok(())
    }

    pub async fn stat(&self, ns: &str, snapshotter: &str, key: &str) -> Result<Info> {
        let (ns, key) = (ns.to_string(), key.to_string());
        self.snapshotters
            .run(&self.snapshotter(snapshotter)?, move |s| s.stat(&ns, &key))
            .await
    }

    /// Updates the fields `paths` names (labels) of `info.name`.
    pub async fn update(
        &self,
        ns: &str,
        snapshotter: &str,
        info: Info,
        paths: Vec<String>,
    ) -> Result<Info> {
        non_empty("info.Name", &info.name)?;
        validate_labels(&info.labels)?;
        let ns = ns.to_string();
        self.snapshotters
            .run(&self.snapshotter(snapshotter)?, move |s| {
                s.update(&ns, info, &paths)
            })
            .await
    }

    pub async fn list(&self, ns: &str, snapshotter: &str, filter: Filter) -> Result<Vec<Info>> {
        let ns = ns.to_string();
        self.snapshotters
            .run(&self.snapshotter(snapshotter)?, move |s| {
                list_filtered(s, &ns, &filter)
            })
            .await
    }

    pub async fn usage(&self, ns: &str, snapshotter: &str, key: &str) -> Result<Usage> {
        let (ns, key) = (ns.to_string(), key.to_string());
        self.snapshotters
            .run(&self.snapshotter(snapshotter)?, move |s| s.usage(&ns, &key))
            .await
    }

    /// Removes the directories of every namespace's removed snapshots.
    pub async fn cleanup(&self, snapshotter: &str) -> Result<()> {
        self.snapshotters
            .run(&self.snapshotter(snapshotter)?, |s| s.cleanup())
            .await
    }
}
