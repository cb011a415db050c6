//! berthd's volumes (`berth.services.volumes.v1`): the calls `berth volume` and
//! `run -v`/`--mount`/`rm -v` make, and Docker's wording of the daemon's errors.

use std::collections::BTreeMap;

use berth_proto::berth::services::volumes::v1 as pb;
use berth_proto::berth::services::volumes::v1::volumes_client::VolumesClient;
use berth_proto::containerd::services::containers::v1::Container;
use tonic::transport::Channel;

use super::Client;
use crate::labels;

pub use pb::Volume;

fn api(c: &Client) -> VolumesClient<Channel> {
    VolumesClient::new(c.channel.clone())
}

/// The daemon's message without containerd's class suffix (`: not found`...), as Docker
/// words it: `Error response from daemon: get x: no such volume`.
pub fn daemon_error(s: tonic::Status) -> anyhow::Error {
    let m = s.message();
    let m = [
        ": not found",
        ": already exists",
        ": invalid argument",
        ": failed precondition",
    ]
    .iter()
    .find_map(|suffix| m.strip_suffix(suffix))
    .unwrap_or(m);
    anyhow::anyhow!("Error response from daemon: {m}")
}

/// Creates volume `name` (empty: an anonymous one), or returns the existing one.
pub async fn create(
    c: &Client,
    name: &str,
    driver: &str,
    labels: BTreeMap<String, String>,
    options: BTreeMap<String, String>,
    anonymous: bool,
) -> Result<Volume, tonic::Status> {
    let r = api(c)
        .create(c.req(pb::CreateVolumeRequest {
            name: name.to_string(),
            driver: driver.to_string(),
            labels,
            options,
            anonymous,
        }))
        .await?;
    Ok(r.into_inner().volume.unwrap_or_default())
}

pub async fn get(c: &Client, name: &str) -> Result<Volume, tonic::Status> {
    let r = api(c)
        .get(c.req(pb::GetVolumeRequest {
            name: name.to_string(),
        }))
        .await?;
    Ok(r.into_inner().volume.unwrap_or_default())
}

pub async fn list(c: &Client, filters: Vec<String>) -> Result<Vec<Volume>, tonic::Status> {
    let r = api(c)
        .list(c.req(pb::ListVolumesRequest {
            filters,
            with_sizes: false,
        }))
        .await?;
    Ok(r.into_inner().volumes)
}

/// Every volume with its size measured (`system df`).
pub async fn list_with_sizes(c: &Client) -> Result<Vec<Volume>, tonic::Status> {
    let r = api(c)
        .list(c.req(pb::ListVolumesRequest {
            filters: Vec::new(),
            with_sizes: true,
        }))
        .await?;
    Ok(r.into_inner().volumes)
}

pub async fn delete(c: &Client, name: &str, force: bool) -> Result<(), tonic::Status> {
    api(c)
        .delete(c.req(pb::DeleteVolumeRequest {
            name: name.to_string(),
            force,
        }))
        .await?;
    Ok(())
}

/// Removes unused volumes (anonymous ones only unless `all`): their names and the bytes
/// they held.
pub async fn prune(
    c: &Client,
    filters: Vec<String>,
    all: bool,
) -> Result<(Vec<String>, u64), tonic::Status> {
    let r = api(c)
        .prune(c.req(pb::PruneVolumesRequest { filters, all }))
        .await?
        .into_inner();
    Ok((r.deleted, r.reclaimed))
}

/// The names a container's label lists.
pub fn names(ct: &Container, label: &str) -> Vec<String> {
    ct.labels
        .get(label)
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the anonymous volumes made for a removed container (`rm -v`, `run --rm`); one
/// another container still uses stays (as Docker leaves it).
pub async fn remove_anonymous(c: &Client, ct: &Container) -> anyhow::Result<()> {
    for name in names(ct, labels::ANONYMOUS_VOLUMES) {
        match delete(c, &name, false).await {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.code(),
                    tonic::Code::NotFound | tonic::Code::FailedPrecondition
                ) => {}
            Err(e) => return Err(daemon_error(e)),
        }
    }
    Ok(())
}
