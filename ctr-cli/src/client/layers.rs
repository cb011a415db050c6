//! Layers made and applied through the Diff service: the changes between two snapshots
//! written as a layer blob (`snapshots diff`, `commit`), a layer applied onto a snapshot.

use std::collections::BTreeMap;

use berth_proto::containerd::services::diff::v1 as diffpb;
use berth_proto::containerd::services::diff::v1::diff_client::DiffClient;
use berth_proto::containerd::types::{Descriptor, Mount};

use super::snapshots::{Create, create};
use super::{Client, status};

/// A view of `parent` under `lease`: removed with the lease if not before.
pub async fn temp_view(
    c: &Client,
    sn: &str,
    key: &str,
    parent: String,
    lease: &str,
) -> anyhow::Result<Vec<Mount>> {
    create(
        c,
        sn,
        Create::View,
        key,
        Some(parent),
        BTreeMap::new(),
        Some(lease),
    )
    .await
    .map_err(status)
}

/// The Diff service's layer of `upper` over `lower`, in the content store under `lease`,
/// with `labels`.
pub async fn write_layer(
    c: &Client,
    lower: Vec<Mount>,
    upper: Vec<Mount>,
    media_type: String,
    labels: BTreeMap<String, String>,
    lease: &str,
) -> anyhow::Result<Descriptor> {
    Ok(DiffClient::new(c.channel.clone())
        .diff(c.leased(
            diffpb::DiffRequest {
                left: lower,
                right: upper,
                media_type,
                r#ref: String::new(),
                labels,
                source_date_epoch: None,
            },
            lease,
        ))
        .await
        .map_err(status)?
        .into_inner()
        .diff
        .unwrap_or_default())
}

/// Applies layer `desc` onto `mounts` (an active snapshot); the applied (uncompressed)
/// layer's descriptor.
pub async fn apply_layer(
    c: &Client,
    desc: Descriptor,
    mounts: Vec<Mount>,
    lease: &str,
) -> anyhow::Result<Descriptor> {
    Ok(DiffClient::new(c.channel.clone())
        .apply(c.leased(
            diffpb::ApplyRequest {
                diff: Some(desc),
                mounts,
                ..Default::default()
            },
            lease,
        ))
        .await
        .map_err(status)?
        .into_inner()
        .applied
        .unwrap_or_default())
}
