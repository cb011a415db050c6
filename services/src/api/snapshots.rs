//! `containerd.services.snapshots.v1.Snapshots`, served by berthd and by the
//! `berth-snapshotter` proxy from the same adapter over the core's [`Snapshots`] service
//! (which holds leases, publishes events and schedules GC in berthd, and not in the proxy).
//! A proxy request without a namespace header uses `default`.

use crate::api::status::OrStatus;
use std::pin::Pin;

use berth_proto::containerd::services::snapshots::v1 as pb;
use berth_proto::containerd::services::snapshots::v1::snapshots_server::Snapshots as SnapshotsService;
use berth_proto::containerd::types::Mount as WireMount;
use berth_snapshotter::{Info, Mount};
use futures::Stream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::{NAMESPACE_HEADER, Services, lease, namespace_required};
use crate::error::{Error, Result};
use crate::filters::Filter;
use crate::identifiers;
use crate::metadata::Store;
use crate::snapshots::{self, Commit, Create, Snapshots, Snapshotters};

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

/// The Snapshots service over a set of snapshotters.
pub struct SnapshotsApi(Snapshots);

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl SnapshotsApi {
    /// The service as berthd serves it: namespace required, leases, events and GC.
    pub fn daemon(s: &Services) -> SnapshotsApi {
        SnapshotsApi(s.snapshots.clone())
    }

    /// The service as the `berth-snapshotter` proxy serves it: no leases, events or GC, and
    /// the `default` namespace for requests without a namespace header.
    pub fn proxy(snapshotters: Snapshotters, store: Store) -> SnapshotsApi {
        SnapshotsApi(Snapshots::proxy(snapshotters, store))
    }

    fn namespace(&self, md: &MetadataMap) -> Result<String> {
        if !self.0.is_proxy() {
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

    /// Prepare and View: `c.view` picks the call.
    async fn create(&self, md: &MetadataMap, c: Create) -> Result<Vec<WireMount>> {
        let ns = self.namespace(md)?;
        let mounts = self.0.create(&ns, c, lease(md).as_deref()).await?;
        Ok(mounts_to_wire(mounts))
    }
}

#[tonic::async_trait]
impl SnapshotsService for SnapshotsApi {
    async fn prepare(
        &self,
        req: Request<pb::PrepareSnapshotRequest>,
    ) -> Result<Response<pb::PrepareSnapshotResponse>, Status> {
        let (md, _, r) = req.into_parts();
        let c = Create {
            snapshotter: r.snapshotter,
            key: r.key,
            parent: r.parent,
            labels: r.labels,
            view: false,
        };
        let mounts = self.create(&md, c).await.or_status()?;
        Ok(Response::new(pb::PrepareSnapshotResponse { mounts }))
    }

    async fn view(
        &self,
        req: Request<pb::ViewSnapshotRequest>,
    ) -> Result<Response<pb::ViewSnapshotResponse>, Status> {
        let (md, _, r) = req.into_parts();
        let c = Create {
            snapshotter: r.snapshotter,
            key: r.key,
            parent: r.parent,
            labels: r.labels,
            view: true,
        };
        let mounts = self.create(&md, c).await.or_status()?;
        Ok(Response::new(pb::ViewSnapshotResponse { mounts }))
    }

    async fn mounts(
        &self,
        req: Request<pb::MountsRequest>,
    ) -> Result<Response<pb::MountsResponse>, Status> {
        let ns = self.namespace(req.metadata()).or_status()?;
        let r = req.into_inner();
        let mounts = self
            .0
            .mounts(&ns, &r.snapshotter, &r.key)
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
        let c = Commit {
            snapshotter: r.snapshotter,
            name: r.name,
            key: r.key,
            parent: r.parent,
            labels: r.labels,
        };
        self.0
            .commit(&ns, c, lease(&md).as_deref())
            .await
            .or_status()?;
        Ok(Response::new(()))
    }

    async fn remove(
        &self,
        req: Request<pb::RemoveSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let (md, _, r) = req.into_parts();
        let ns = self.namespace(&md).or_status()?;
        self.0
            .remove(&ns, &r.snapshotter, &r.key, lease(&md).as_deref())
            .await
            .or_status()?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        req: Request<pb::StatSnapshotRequest>,
    ) -> Result<Response<pb::StatSnapshotResponse>, Status> {
        let ns = self.namespace(req.metadata()).or_status()?;
        let r = req.into_inner();
        let info = self.0.stat(&ns, &r.snapshotter, &r.key).await.or_status()?;
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
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let updated = self
            .0
            .update(&ns, &r.snapshotter, info_from_wire(info), paths)
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
        let infos = self.0.list(&ns, &r.snapshotter, filter).await.or_status()?;
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
        let usage = self
            .0
            .usage(&ns, &r.snapshotter, &r.key)
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
        self.0.cleanup(&r.snapshotter).await.or_status()?;
        Ok(Response::new(()))
    }
}
