//! What the namespace's images, containers, snapshots and blobs take on disk, measured
//! once (`system df`, `image prune`).

use std::collections::{BTreeMap, BTreeSet};

use berth_proto::containerd::v1::types::Status as TaskStatus;

use super::{Client, containers, content, images, snapshots, status, tasks};
use crate::oci;

/// What the namespace holds, measured once.
pub struct Usage {
    /// digest → size of every blob in the namespace.
    pub blobs: BTreeMap<String, i64>,
    /// snapshot key → (parent, size).
    pub snapshots: BTreeMap<String, (String, i64)>,
    /// image name → (blob digests, top chain ID).
    pub images: BTreeMap<String, (BTreeSet<String>, Option<String>)>,
    /// container id → (image, snapshot key, running).
    pub containers: BTreeMap<String, (String, String, bool)>,
}

impl Usage {
    /// Snapshot keys `top` stands on: itself and its parents.
    pub fn chain(&self, top: &str) -> BTreeSet<String> {
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

    /// The size of snapshot `key` (0 when there is none).
    pub fn snapshot_size(&self, key: &str) -> i64 {
        self.snapshots.get(key).map(|(_, s)| *s).unwrap_or(0)
    }

    pub fn image_parts(&self, names: &[&String]) -> (BTreeSet<String>, BTreeSet<String>) {
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

    pub fn size_of(&self, blobs: &BTreeSet<String>, snaps: &BTreeSet<String>) -> i64 {
        blobs.iter().filter_map(|d| self.blobs.get(d)).sum::<i64>()
            + snaps
                .iter()
                .filter_map(|k| self.snapshots.get(k).map(|(_, s)| *s))
                .sum::<i64>()
    }
}

pub async fn measure(c: &Client) -> anyhow::Result<Usage> {
    let blobs = content::list(c, vec![])
        .await?
        .into_iter()
        .map(|i| (i.digest, i.size))
        .collect();
    let mut snaps = BTreeMap::new();
    for info in snapshots::list(c, "", vec![]).await? {
        let size = snapshots::usage(c, "", &info.name)
            .await
            .map(|u| u.size)
            .unwrap_or(0);
        snaps.insert(info.name, (info.parent, size));
    }
    let mut images = BTreeMap::new();
    for img in images::list(c, vec![]).await? {
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
    let running: BTreeSet<String> = match tasks::list(c).await {
        Ok(list) => list
            .into_iter()
            .filter(|t| tasks::status_of(t) == TaskStatus::Running)
            .map(|t| t.id)
            .collect(),
        // A daemon without the tasks service runs nothing.
        Err(e) if e.code() == tonic::Code::Unimplemented => BTreeSet::new(),
        Err(e) => return Err(status(e)),
    };
    let containers = containers::list_all(c)
        .await?
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
