//! `containerd.services.snapshots.v1.Snapshots`, served by berthd and by the
//! `berth-snapshotter` proxy from the same adapter.
//!
//! In berthd ([`SnapshotsApi::daemon`]) the namespace header is required, creations are added
//! to the request's lease first (so a concurrent collection can't take them), events are
//! published and a removal schedules a garbage collection. The proxy
//! ([`SnapshotsApi::proxy`]) has none of these: containerd, its client, keeps leases, events
//! and GC itself, and a request without a namespace header uses `default`.

use crate::api::status::{IntoStatus, OrStatus};
use std::collections::BTreeMap;
use std::pin::Pin;

use berth_proto::containerd::events::{SnapshotCommit, SnapshotPrepare, SnapshotRemove};
use berth_proto::containerd::services::snapshots::v1 as pb;
use berth_proto::containerd::services::snapshots::v1::snapshots_server::Snapshots;
use berth_proto::containerd::types::Mount as WireMount;
use berth_snapshotter::{Info, Mount};
use futures::Stream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::{NAMESPACE_HEADER, Services, lease, namespace_required, publish};
use crate::error::{Error, Result};
use crate::events::Exchange;
use crate::filters::Filter;
use crate::gc::Collector;
use crate::identifiers;
use crate::labels;
use crate::leases::{Leases, Resource};
use crate::metadata::Store;
use crate::snapshots::{self, Snapshotters};

/// Infos per `List` response message, as containerd batches them.
const LIST_BATCH: usize = 100;

// Both sides are foreign types (berth-proto, berth-snapshotter): plain functions, not `From`.

pub fn mount_to_wire(m: Mount) -> WireMount {
    WireMount {
        r#type: m.kind,
        source: m.source,
        target: String::new(),
        options: m.options,
    }
}

pub fn mount_from_wire(m: WireMount) -> Mount {
    Mount {
        kind: m.r#type,
        source: m.source,
        options: m.options,
    }
}

fn info_to_wire(i: Info) -> pb::Info {
    pb::Info {
        name: i.name,
        parent: i.parent.unwrap_or_default(),
        kind: snapshots::kind_number(i.kind),
        created_at: Some(i.created.into()),
        updated_at: Some(i.updated.into()),
        labels: i.labels,
    }
}

/// The fields of an `Update` request's info the snapshotter uses: name and labels.
fn info_from_wire(i: pb::Info) -> Info {
    let kind = match pb::Kind::try_from(i.kind) {
        Ok(pb::Kind::View) => berth_snapshotter::Kind::View,
        Ok(pb::Kind::Committed) => berth_snapshotter::Kind::Committed,
        _ => berth_snapshotter::Kind::Active,
    };
    let time = |t: Option<prost_types::Timestamp>| {
        t.map(|t| super::timestamp_to_system_time(&t))
            .unwrap_or(std::time::UNIX_EPOCH)
    };
    Info {
        name: i.name,
        parent: (!i.parent.is_empty()).then_some(i.parent),
        kind,
        labels: i.labels,
        created: time(i.created_at),
        updated: time(i.updated_at),
    }
}

fn mounts_to_wire(mounts: Vec<Mount>) -> Vec<WireMount> {
    mounts.into_iter().map(mount_to_wire).collect()
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

/// What berthd adds around the snapshotter calls; the proxy has none of it.
#[derive(Clone)]
struct DaemonHooks {
    leases: Leases,
    exchange: Exchange,
    gc: Collector,
}

/// The Snapshots service over a set of snapshotters.
pub struct SnapshotsApi {
    snapshotters: Snapshotters,
    store: Store,
    hooks: Option<DaemonHooks>,
}

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

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

impl SnapshotsApi {
    /// The service as berthd serves it: namespace required, leases, events and GC.
    pub fn daemon(s: &Services) -> SnapshotsApi {
        SnapshotsApi {
            snapshotters: s.snapshotters.clone(),
            store: s.store.clone(),
            hooks: Some(DaemonHooks {
                leases: s.leases.clone(),
                exchange: s.exchange.clone(),
                gc: s.gc.clone(),
            }),
        }
    }

    /// The service as the `berth-snapshotter` proxy serves it: no leases, events or GC, and
    /// the `default` namespace for requests without a namespace header.
    pub fn proxy(snapshotters: Snapshotters, store: Store) -> SnapshotsApi {
        SnapshotsApi {
            snapshotters,
            store,
            hooks: None,
        }
    }

    /// The loaded snapshotter a request names. The proxy serves one snapshotter whatever
    /// the request says: containerd's proxy client sends its own name for the plugin
    /// (`[proxy_plugins.<name>]`), not ours.
    fn snapshotter(&self, requested: &str) -> Result<String> {
        let requested = if self.hooks.is_some() { requested } else { "" };
        self.snapshotters.get(requested)?;
        Ok(self.snapshotters.resolve(requested).to_string())
    }

    fn namespace(&self, md: &MetadataMap) -> Result<String> {
        if self.hooks.is_some() {
            return namespace_required(md);
        }
        let ns = md
            .get(NAMESPACE_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
            .to_string();
        identifiers::validate(&ns).map_err(|e| e.context("namespace validation"))?;
        Ok(ns)
    }

    /// Adds `snapshots/<snapshotter>` + `key` to the request's lease, if it has one.
    async fn hold(
        &self,
        md: &MetadataMap,
        ns: &str,
        snapshotter: &str,
        key: &str,
    ) -> Result<Option<LeaseHold>> {
        let (Some(hooks), Some(lease)) = (&self.hooks, lease(md)) else {
            return Ok(None);
        };
        let resource = Resource::snapshot(snapshotter, key);
        hooks
            .leases
            .add_resource(ns, &lease, resource.clone())
            .await?;
        Ok(Some(LeaseHold {
            leases: hooks.leases.clone(),
            namespace: ns.to_string(),
            lease,
            resource,
        }))
    }

    /// Drops `key` from the request's lease after the snapshot is gone (committed or removed).
    async fn unhold(&self, md: &MetadataMap, ns: &str, snapshotter: &str, key: &str) {
        let (Some(hooks), Some(lease)) = (&self.hooks, lease(md)) else {
            return;
        };
        let resource = Resource::snapshot(snapshotter, key);
        if let Err(e) = hooks.leases.delete_resource(ns, &lease, resource).await
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

    /// Prepare and View: the same steps, `view` picks the call.
    async fn create(
        &self,
        md: &MetadataMap,
        snapshotter: String,
        key: String,
        parent: String,
        labels: BTreeMap<String, String>,
        view: bool,
    ) -> Result<Vec<Mount>> {
        let ns = self.namespace(md)?;
        non_empty("key", &key)?;
        validate_labels(&labels)?;
        // Fail early (and without touching the lease) for an unknown snapshotter.
        let name = self.snapshotter(&snapshotter)?;
        snapshots::ensure_namespace(&self.store, &ns).await?;
        // An unpack names the committed snapshot it will make: when that exists already,
        // the client skips the layer. The existing snapshot joins the lease, as containerd
        // does, so it survives until the client has used it.
        if let Some(target) = labels
            .get(snapshots::SNAPSHOT_REF_LABEL)
            .filter(|t| !t.is_empty())
        {
            let (ns2, l2) = (ns.clone(), labels.clone());
            let checked = self
                .snapshotters
                .run(&name, move |s| snapshots::check_target(s, &ns2, &l2))
                .await;
            if let Err(e) = checked {
                if e.is_already_exists() {
                    self.hold(md, &ns, &name, target).await?;
                }
                return Err(e);
            }
        }
        let hold = self.hold(md, &ns, &name, &key).await?;
        let (ns2, key2, parent2) = (ns.clone(), key.clone(), parent.clone());
        let result = self
            .snapshotters
            .run(&name, move |s| {
                let parent = (!parent2.is_empty()).then_some(parent2.as_str());
                if view {
                    s.view(&ns2, &key2, parent, labels)
                } else {
                    s.prepare(&ns2, &key2, parent, labels)
                }
            })
            .await;
        match result {
            Ok(mounts) => {
                if !view {
                    self.publish(
                        &ns,
                        crate::events::topics::SNAPSHOT_PREPARE,
                        &SnapshotPrepare {
                            key,
                            parent,
                            snapshotter: name,
                        },
                    );
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
}

#[tonic::async_trait]
impl Snapshots for SnapshotsApi {
    async fn prepare(
        &self,
        req: Request<pb::PrepareSnapshotRequest>,
    ) -> Result<Response<pb::PrepareSnapshotResponse>, Status> {
        let (md, _, r) = req.into_parts();
        let mounts = self
            .create(&md, r.snapshotter, r.key, r.parent, r.labels, false)
            .await
            .or_status()?;
        Ok(Response::new(pb::PrepareSnapshotResponse {
            mounts: mounts_to_wire(mounts),
        }))
    }

    async fn view(
        &self,
        req: Request<pb::ViewSnapshotRequest>,
    ) -> Result<Response<pb::ViewSnapshotResponse>, Status> {
        let (md, _, r) = req.into_parts();
        let mounts = self
            .create(&md, r.snapshotter, r.key, r.parent, r.labels, true)
            .await
            .or_status()?;
        Ok(Response::new(pb::ViewSnapshotResponse {
            mounts: mounts_to_wire(mounts),
        }))
    }

    async fn mounts(
        &self,
        req: Request<pb::MountsRequest>,
    ) -> Result<Response<pb::MountsResponse>, Status> {
        let ns = self.namespace(req.metadata()).or_status()?;
        let r = req.into_inner();
        let key = r.key;
        let mounts = self
            .snapshotters
            .run(&self.snapshotter(&r.snapshotter).or_status()?, move |s| {
                s.mounts(&ns, &key)
            })
            .await
            .or_status()?;
        Ok(Response::new(pb::MountsResponse {
            mounts: mounts_to_wire(mounts),
        }))
    }

    async fn commit(
        &self,
        req: Request<pb::CommitSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let (md, _, r) = req.into_parts();
        let ns = self.namespace(&md).or_status()?;
        non_empty("name", &r.name).or_status()?;
        non_empty("key", &r.key).or_status()?;
        validate_labels(&r.labels).or_status()?;
        let name = self.snapshotter(&r.snapshotter).or_status()?;
        let hold = self.hold(&md, &ns, &name, &r.name).await.or_status()?;
        let (ns2, target, key, parent, labels) = (
            ns.clone(),
            r.name.clone(),
            r.key.clone(),
            r.parent,
            r.labels,
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
            return Err(e.into_status());
        }
        self.unhold(&md, &ns, &name, &r.key).await;
        self.publish(
            &ns,
            crate::events::topics::SNAPSHOT_COMMIT,
            &SnapshotCommit {
                key: r.key,
                name: r.name,
                snapshotter: name,
            },
        );
        Ok(Response::new(()))
    }

    async fn remove(
        &self,
        req: Request<pb::RemoveSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let (md, _, r) = req.into_parts();
        let ns = self.namespace(&md).or_status()?;
        non_empty("key", &r.key).or_status()?;
        let name = self.snapshotter(&r.snapshotter).or_status()?;
        let (ns2, key) = (ns.clone(), r.key.clone());
        self.snapshotters
            .run(&name, move |s| s.remove(&ns2, &key))
            .await
            .or_status()?;
        self.unhold(&md, &ns, &name, &r.key).await;
        self.publish(
            &ns,
            crate::events::topics::SNAPSHOT_REMOVE,
            &SnapshotRemove {
                key: r.key,
                snapshotter: name,
            },
        );
        if let Some(h) = &self.hooks {
            h.gc.schedule();
        }
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        req: Request<pb::StatSnapshotRequest>,
    ) -> Result<Response<pb::StatSnapshotResponse>, Status> {
        let ns = self.namespace(req.metadata()).or_status()?;
        let r = req.into_inner();
        let key = r.key;
        let info = self
            .snapshotters
            .run(&self.snapshotter(&r.snapshotter).or_status()?, move |s| {
                s.stat(&ns, &key)
            })
            .await
            .or_status()?;
        Ok(Response::new(pb::StatSnapshotResponse {
            info: Some(info_to_wire(info)),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateSnapshotRequest>,
    ) -> Result<Response<pb::UpdateSnapshotResponse>, Status> {
        let ns = self.namespace(req.metadata()).or_status()?;
        let r = req.into_inner();
        let info = r
            .info
            .ok_or_else(|| Error::invalid("info must be set"))
            .or_status()?;
        non_empty("info.Name", &info.name).or_status()?;
        validate_labels(&info.labels).or_status()?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let info = info_from_wire(info);
        let updated = self
            .snapshotters
            .run(&self.snapshotter(&r.snapshotter).or_status()?, move |s| {
                s.update(&ns, info, &paths)
            })
            .await
            .or_status()?;
        Ok(Response::new(pb::UpdateSnapshotResponse {
            info: Some(info_to_wire(updated)),
        }))
    }

    type ListStream = Boxed<pb::ListSnapshotsResponse>;

    async fn list(
        &self,
        req: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let ns = self.namespace(req.metadata()).or_status()?;
        let r = req.into_inner();
        let filter = Filter::parse_all(&r.filters).or_status()?;
        let infos = self
            .snapshotters
            .run(&self.snapshotter(&r.snapshotter).or_status()?, move |s| {
                snapshots::list_filtered(s, &ns, &filter)
            })
            .await
            .or_status()?;
        let batches: Vec<Result<pb::ListSnapshotsResponse, Status>> = infos
            .chunks(LIST_BATCH)
            .map(|c| {
                Ok(pb::ListSnapshotsResponse {
                    info: c.iter().cloned().map(info_to_wire).collect(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(batches))))
    }

    async fn usage(
        &self,
        req: Request<pb::UsageRequest>,
    ) -> Result<Response<pb::UsageResponse>, Status> {
        let ns = self.namespace(req.metadata()).or_status()?;
        let r = req.into_inner();
        let key = r.key;
        let usage = self
            .snapshotters
            .run(&self.snapshotter(&r.snapshotter).or_status()?, move |s| {
                s.usage(&ns, &key)
            })
            .await
            .or_status()?;
        Ok(Response::new(pb::UsageResponse {
            size: usage.size,
            inodes: usage.inodes,
        }))
    }

    async fn cleanup(&self, req: Request<pb::CleanupRequest>) -> Result<Response<()>, Status> {
        // Cleanup spans every namespace: no namespace is needed.
        let r = req.into_inner();
        self.snapshotters
            .run(&self.snapshotter(&r.snapshotter).or_status()?, |s| {
                s.cleanup()
            })
            .await
            .or_status()?;
        Ok(Response::new(()))
    }
}
