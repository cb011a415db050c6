//! `berth system df`: the space images, containers, snapshots and content use, and how much
//! of it could be reclaimed (what no container uses).

use std::collections::{BTreeMap, BTreeSet};

use berth_proto::containerd::services::containers::v1 as cpb;
use berth_proto::containerd::services::content::v1 as contentpb;
use berth_proto::containerd::services::images::v1 as ipb;
use berth_proto::containerd::services::tasks::v1 as tpb;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::{Client, status};
use crate::commands::snapshots;
use crate::oci::{self, human_size};
use crate::output::{self, Format};

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Show disk usage.
    Df {
        /// Also list every image and container.
        #[arg(short, long)]
        verbose: bool,
    },
}

/// What the namespace holds, measured once.
struct Usage {
    /// digest → size of every blob in the namespace.
    blobs: BTreeMap<String, i64>,
    /// snapshot key → (parent, size).
    snapshots: BTreeMap<String, (String, i64)>,
    /// image name → (blob digests, top chain ID).
    images: BTreeMap<String, (BTreeSet<String>, Option<String>)>,
    /// container id → (image, snapshot key, running).
    containers: BTreeMap<String, (String, String, bool)>,
}

impl Usage {
    /// Snapshot keys `top` stands on: itself and its parents.
    fn chain(&self, top: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut cur = top.to_string();
        while let Some((parent, _)) = self.snapshots.get(&cur) {
            if !out.insert(cur.clone()) || parent.is_empty() {
                break;
            }
            cur = parent.clone();
        }
        out
    }

    fn image_parts(&self, names: &[&String]) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut blobs = BTreeSet::new();
        let mut snaps = BTreeSet::new();
        for n in names {
            if let Some((b, top)) = self.images.get(*n) {
                blobs.extend(b.iter().cloned());
                if let Some(top) = top {
                    snaps.extend(self.chain(top));
                }
            }
        }
        (blobs, snaps)
    }

    fn size_of(&self, blobs: &BTreeSet<String>, snaps: &BTreeSet<String>) -> i64 {
        blobs.iter().filter_map(|d| self.blobs.get(d)).sum::<i64>()
            + snaps
                .iter()
                .filter_map(|k| self.snapshots.get(k).map(|(_, s)| *s))
                .sum::<i64>()
    }
}

async fn measure(c: &Client) -> anyhow::Result<Usage> {
    let mut blobs = BTreeMap::new();
    let mut stream = contentpb::content_client::ContentClient::new(c.channel.clone())
        .list(c.req(contentpb::ListContentRequest { filters: vec![] }))
        .await
        .map_err(status)?
        .into_inner();
    while let Some(batch) = stream.message().await.map_err(status)? {
        for i in batch.info {
            blobs.insert(i.digest, i.size);
        }
    }
    let mut snaps = BTreeMap::new();
    for info in snapshots::list(c, "", vec![]).await? {
        let size = snapshots::usage(c, "", &info.name)
            .await
            .map(|u| u.size)
            .unwrap_or(0);
        snaps.insert(info.name, (info.parent, size));
    }
    let mut images = BTreeMap::new();
    let list = ipb::images_client::ImagesClient::new(c.channel.clone())
        .list(c.req(ipb::ListImagesRequest { filters: vec![] }))
        .await
        .map_err(status)?
        .into_inner()
        .images;
    for img in list {
        let target = img.target.unwrap_or_default();
        let mut set = BTreeSet::from([target.digest.clone()]);
        let mut top = None;
        if let Ok(r) = oci::resolve(c, &target).await {
            set.insert(r.manifest_digest.clone());
            set.insert(r.config_digest.clone());
            for l in r.manifest["layers"].as_array().into_iter().flatten() {
                if let Some(d) = l["digest"].as_str() {
                    set.insert(d.to_string());
                }
            }
            top = r.chain_ids().last().cloned();
        }
        images.insert(img.name, (set, top));
    }
    let running: BTreeSet<String> = match tpb::tasks_client::TasksClient::new(c.channel.clone())
        .list(c.req(tpb::ListTasksRequest {
            filter: String::new(),
        }))
        .await
    {
        Ok(r) => r
            .into_inner()
            .tasks
            .into_iter()
            .filter(|t| t.status == 2)
            .map(|t| t.id)
            .collect(),
        // A daemon without the tasks service runs nothing.
        Err(e) if e.code() == tonic::Code::Unimplemented => BTreeSet::new(),
        Err(e) => return Err(status(e)),
    };
    let containers = cpb::containers_client::ContainersClient::new(c.channel.clone())
        .list(c.req(cpb::ListContainersRequest { filters: vec![] }))
        .await
        .map_err(status)?
        .into_inner()
        .containers
        .into_iter()
        .map(|ct| {
            let run = running.contains(&ct.id);
            (ct.id, (ct.image, ct.snapshot_key, run))
        })
        .collect();
    Ok(Usage {
        blobs,
        snapshots: snaps,
        images,
        containers,
    })
}

/// Bytes the namespace's blobs and snapshots take (what `image prune` reports as reclaimed).
pub async fn disk_used(c: &Client) -> anyhow::Result<i64> {
    let u = measure(c).await?;
    Ok(u.blobs.values().sum::<i64>() + u.snapshots.values().map(|(_, s)| *s).sum::<i64>())
}

fn reclaim(size: i64, reclaimable: i64) -> String {
    let pct = if size > 0 {
        reclaimable * 100 / size
    } else {
        0
    };
    format!("{} ({pct}%)", human_size(reclaimable))
}

pub async fn run(c: &Client, cmd: Cmd, format: Format) -> anyhow::Result<()> {
    let Cmd::Df { verbose } = cmd;
    let u = measure(c).await?;
    let all_images: Vec<&String> = u.images.keys().collect();
    let used_images: Vec<&String> = u
        .images
        .keys()
        .filter(|n| u.containers.values().any(|(img, _, _)| img == *n))
        .collect();
    let (img_blobs, img_snaps) = u.image_parts(&all_images);
    let (used_blobs, used_snaps) = u.image_parts(&used_images);
    let images_size = u.size_of(&img_blobs, &img_snaps);
    let images_reclaim = images_size - u.size_of(&used_blobs, &used_snaps);

    let container_size = |key: &str| u.snapshots.get(key).map(|(_, s)| *s).unwrap_or(0);
    let containers_size: i64 = u
        .containers
        .values()
        .map(|(_, k, _)| container_size(k))
        .sum();
    let running = u.containers.values().filter(|(_, _, r)| *r).count();
    let containers_reclaim: i64 = u
        .containers
        .values()
        .filter(|(_, _, r)| !*r)
        .map(|(_, k, _)| container_size(k))
        .sum();

    let mut live_snaps = img_snaps.clone();
    for (_, key, _) in u.containers.values() {
        live_snaps.extend(u.chain(key));
    }
    let snaps_size: i64 = u.snapshots.values().map(|(_, s)| *s).sum();
    let snaps_reclaim: i64 = u
        .snapshots
        .iter()
        .filter(|(k, _)| !live_snaps.contains(*k))
        .map(|(_, (_, s))| *s)
        .sum();
    let blobs_size: i64 = u.blobs.values().sum();
    let blobs_reclaim: i64 = u
        .blobs
        .iter()
        .filter(|(d, _)| !img_blobs.contains(*d))
        .map(|(_, s)| *s)
        .sum();

    let rows = [
        (
            "Images",
            u.images.len(),
            used_images.len(),
            images_size,
            images_reclaim,
        ),
        (
            "Containers",
            u.containers.len(),
            running,
            containers_size,
            containers_reclaim,
        ),
        (
            "Snapshots",
            u.snapshots.len(),
            live_snaps.len(),
            snaps_size,
            snaps_reclaim,
        ),
        (
            "Content",
            u.blobs.len(),
            img_blobs.len(),
            blobs_size,
            blobs_reclaim,
        ),
    ];
    if format == Format::Json {
        let v: Vec<Value> = rows
            .iter()
            .map(|(t, total, active, size, rec)| {
                json!({"type": t, "total": total, "active": active, "size": size, "reclaimable": rec})
            })
            .collect();
        return output::json(&Value::Array(v));
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|(t, total, active, size, rec)| {
            vec![
                t.to_string(),
                total.to_string(),
                active.to_string(),
                human_size(*size),
                reclaim(*size, *rec),
            ]
        })
        .collect();
    output::table(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], &table)?;
    if verbose {
        println!();
        let rows: Vec<Vec<String>> = u
            .images
            .iter()
            .map(|(name, (blobs, top))| {
                let snaps = top.as_deref().map(|t| u.chain(t)).unwrap_or_default();
                let users = u.containers.values().filter(|(i, _, _)| i == name).count();
                vec![
                    name.clone(),
                    human_size(u.size_of(blobs, &snaps)),
                    users.to_string(),
                ]
            })
            .collect();
        output::table(&["IMAGE", "SIZE", "CONTAINERS"], &rows)?;
        println!();
        let rows: Vec<Vec<String>> = u
            .containers
            .iter()
            .map(|(id, (image, key, run))| {
                vec![
                    id.clone(),
                    image.clone(),
                    human_size(container_size(key)),
                    if *run { "running" } else { "stopped" }.to_string(),
                ]
            })
            .collect();
        output::table(&["CONTAINER", "IMAGE", "SIZE", "STATUS"], &rows)?;
    }
    Ok(())
}
