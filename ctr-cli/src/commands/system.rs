//! `berth system df`: the space images, containers, snapshots and content use, and how much
//! of it could be reclaimed (what no container uses).

use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::Client;
use crate::client::usage::measure;
use crate::oci::human_size;
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
