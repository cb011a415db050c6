//! Snapshots: make active ones and views, list, measure, remove; a container's rootfs
//! mounts; mounting snapshot mounts here (the CLI runs as root, like ctr).

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_proto::containerd::services::containers::v1::Container;
use berth_proto::containerd::services::snapshots::v1 as pb;
use berth_proto::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::containerd::types::Mount;
use tonic::Status;
use tonic::transport::Channel;

use super::{Client, status};

pub fn api(c: &Client) -> SnapshotsClient<Channel> {
    SnapshotsClient::new(c.channel.clone())
}

/// Every snapshot of the namespace matching `filters`.
pub async fn list(
    c: &Client,
    snapshotter: &str,
    filters: Vec<String>,
) -> anyhow::Result<Vec<pb::Info>> {
    let mut stream = api(c)
        .list(c.req(pb::ListSnapshotsRequest {
            snapshotter: snapshotter.to_string(),
            filters,
        }))
        .await
        .map_err(status)?
        .into_inner();
    let mut out = Vec::new();
    while let Some(batch) = stream.message().await.map_err(status)? {
        out.extend(batch.info);
    }
    Ok(out)
}

/// The record of one snapshot.
pub async fn stat(c: &Client, snapshotter: &str, key: &str) -> anyhow::Result<pb::Info> {
    Ok(api(c)
        .stat(c.req(pb::StatSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: key.to_string(),
        }))
        .await
        .map_err(status)?
        .into_inner()
        .info
        .unwrap_or_default())
}

/// The mounts of an active snapshot or a view.
pub async fn mounts(c: &Client, snapshotter: &str, key: &str) -> anyhow::Result<Vec<Mount>> {
    Ok(api(c)
        .mounts(c.req(pb::MountsRequest {
            snapshotter: snapshotter.to_string(),
            key: key.to_string(),
        }))
        .await
        .map_err(status)?
        .into_inner()
        .mounts)
}

/// Disk usage of one snapshot.
pub async fn usage(c: &Client, snapshotter: &str, key: &str) -> anyhow::Result<pb::UsageResponse> {
    api(c)
        .usage(c.req(pb::UsageRequest {
            snapshotter: snapshotter.to_string(),
            key: key.to_string(),
        }))
        .await
        .map(|r| r.into_inner())
        .map_err(status)
}

/// Which kind of snapshot [`create`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    Active,
    View,
}

/// Prepares an active snapshot or a view (under `lease` when given); returns its mounts.
pub async fn create(
    c: &Client,
    snapshotter: &str,
    kind: Create,
    key: &str,
    parent: Option<String>,
    labels: BTreeMap<String, String>,
    lease: Option<&str>,
) -> Result<Vec<Mount>, Status> {
    let mut api = api(c);
    let (snapshotter, key, parent) = (
        snapshotter.to_string(),
        key.to_string(),
        parent.unwrap_or_default(),
    );
    match kind {
        Create::Active => api
            .prepare(c.maybe_leased(
                pb::PrepareSnapshotRequest {
                    snapshotter,
                    key,
                    parent,
                    labels,
                },
                lease,
            ))
            .await
            .map(|r| r.into_inner().mounts),
        Create::View => api
            .view(c.maybe_leased(
                pb::ViewSnapshotRequest {
                    snapshotter,
                    key,
                    parent,
                    labels,
                },
                lease,
            ))
            .await
            .map(|r| r.into_inner().mounts),
    }
}

/// Removes a snapshot.
pub async fn remove(c: &Client, snapshotter: &str, key: &str) -> Result<(), Status> {
    api(c)
        .remove(c.req(pb::RemoveSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: key.to_string(),
        }))
        .await
        .map(drop)
}

/// The rootfs mounts of a container's snapshot, for a task Create (as containerd's client
/// passes them; none when the container has no snapshot).
pub async fn rootfs_mounts(c: &Client, ct: &Container) -> anyhow::Result<Vec<Mount>> {
    if ct.snapshot_key.is_empty() {
        return Ok(Vec::new());
    }
    mounts(c, &ct.snapshotter, &ct.snapshot_key).await
}

/// The wire mounts as the snapshotter library's, for mounting here.
pub fn to_local(mounts: &[Mount]) -> Vec<berth_snapshotter::Mount> {
    mounts
        .iter()
        .map(|m| berth_snapshotter::Mount {
            kind: m.r#type.clone(),
            source: m.source.clone(),
            options: m.options.clone(),
        })
        .collect()
}

/// Mounts `mounts` onto `target` from this process.
pub async fn mount_local(mounts: &[Mount], target: PathBuf) -> anyhow::Result<()> {
    let local = to_local(mounts);
    tokio::task::spawn_blocking(move || berth_snapshotter::mount::mount_all(&local, &target))
        .await??;
    Ok(())
}
