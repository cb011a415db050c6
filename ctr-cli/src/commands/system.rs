//! `berth system df`: the space images, containers, snapshots and content use, and how much
//! of it could be reclaimed (what no container uses); `berth system prune`; `berth info`.

use std::collections::BTreeSet;

use clap::Subcommand;
use serde_json::{Value, json};

use berth_proto::containerd::services::introspection::v1 as inpb;
use berth_proto::containerd::services::introspection::v1::introspection_client::IntrospectionClient;
use berth_proto::containerd::services::version::v1::version_client::VersionClient;

use crate::client::tasks::state_name;
use crate::client::usage::{Usage, measure};
use crate::client::{Client, containers, images, status, tasks};
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
    /// Show what the daemon holds and runs on (as `berth info`).
    Info,
    /// Remove stopped containers, unused networks, dangling images (every unused image
    /// with -a) and, with --volumes, unused anonymous volumes.
    Prune {
        #[arg(short, long)]
        all: bool,
        /// Prune unused anonymous volumes too.
        #[arg(long)]
        volumes: bool,
        /// Don't ask for confirmation.
        #[arg(short, long)]
        force: bool,
    },
}

/// `system prune`: Docker's order (containers, networks, volumes, images), its warning
/// and its report.
async fn prune(c: &Client, all: bool, volumes: bool, force: bool) -> anyhow::Result<()> {
    let mut warning = String::from(
        "WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n",
    );
    if volumes {
        warning.push_str("  - all anonymous volumes not used by at least one container\n");
    }
    warning.push_str(if all {
        "  - all images without at least one container associated to them\n"
    } else {
        "  - all dangling images\n"
    });
    if !force && !output::confirm(&warning)? {
        return Ok(());
    }
    let (containers, mut reclaimed) = crate::client::docker::prune_stopped(c).await?;
    output::deleted("Containers", &containers);
    let networks = crate::client::networks::prune_unused(c, Vec::new()).await?;
    output::deleted("Networks", &networks);
    if volumes {
        let (gone, size) = crate::client::volumes::prune(c, Vec::new(), false)
            .await
            .map_err(crate::client::volumes::daemon_error)?;
        output::deleted("Volumes", &gone);
        reclaimed += i64::try_from(size).unwrap_or(0);
    }
    let (images, size) = crate::client::images::prune_unused(c, all).await?;
    let untagged: Vec<String> = images.iter().map(|n| format!("untagged: {n}")).collect();
    output::deleted("Images", &untagged);
    reclaimed += size;
    println!("Total reclaimed space: {}", human_size(reclaimed));
    Ok(())
}

fn reclaim(size: i64, reclaimable: i64) -> String {
    let pct = if size > 0 {
        reclaimable * 100 / size
    } else {
        0
    };
    format!("{} ({pct}%)", human_size(reclaimable))
}

/// One row of the `system df` summary.
#[derive(Clone)]
struct Row {
    kind: &'static str,
    total: usize,
    active: usize,
    size: i64,
    reclaimable: i64,
}

pub async fn run(c: &Client, cmd: Cmd, format: Format) -> anyhow::Result<()> {
    let verbose = match cmd {
        Cmd::Df { verbose } => verbose,
        Cmd::Prune {
            all,
            volumes,
            force,
        } => return prune(c, all, volumes, force).await,
        Cmd::Info => return info(c, &format).await,
    };
    let u = measure(c).await?;
    let mut rows = summary(&u).to_vec();
    let volumes = crate::client::volumes::list_with_sizes(c)
        .await
        .map_err(crate::client::volumes::daemon_error)?;
    rows.push(volumes_row(&volumes));
    if format == Format::Json {
        let v: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "type": r.kind,
                    "total": r.total,
                    "active": r.active,
                    "size": r.size,
                    "reclaimable": r.reclaimable,
                })
            })
            .collect();
        return output::json(&Value::Array(v));
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.kind.to_string(),
                r.total.to_string(),
                r.active.to_string(),
                human_size(r.size),
                reclaim(r.size, r.reclaimable),
            ]
        })
        .collect();
    output::table(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], &table)?;
    if verbose {
        println!();
        images_table(&u)?;
        println!();
        containers_table(&u)?;
        println!();
        volumes_table(&volumes)?;
    }
    Ok(())
}

/// The summary: what images, containers, snapshots and content take, and what of it no
/// container uses.
fn summary(u: &Usage) -> [Row; 4] {
    let all_images: Vec<&String> = u.images.keys().collect();
    let (img_blobs, img_snaps) = u.image_parts(&all_images);
    [
        images_row(u, &img_blobs, &img_snaps),
        containers_row(u),
        snapshots_row(u, &img_snaps),
        content_row(u, &img_blobs),
    ]
}

/// Images: active are those a container uses; reclaimable what only the others hold.
fn images_row(u: &Usage, img_blobs: &BTreeSet<String>, img_snaps: &BTreeSet<String>) -> Row {
    let used_images: Vec<&String> = u
        .images
        .keys()
        .filter(|n| u.containers.values().any(|(img, _, _)| img == *n))
        .collect();
    let (used_blobs, used_snaps) = u.image_parts(&used_images);
    let size = u.size_of(img_blobs, img_snaps);
    Row {
        kind: "Images",
        total: u.images.len(),
        active: used_images.len(),
        size,
        reclaimable: size - u.size_of(&used_blobs, &used_snaps),
    }
}

/// Containers: active are the running ones; reclaimable the stopped ones' snapshots.
fn containers_row(u: &Usage) -> Row {
    Row {
        kind: "Containers",
        total: u.containers.len(),
        active: u.containers.values().filter(|(_, _, r)| *r).count(),
        size: u
            .containers
            .values()
            .map(|(_, k, _)| u.snapshot_size(k))
            .sum(),
        reclaimable: u
            .containers
            .values()
            .filter(|(_, _, r)| !*r)
            .map(|(_, k, _)| u.snapshot_size(k))
            .sum(),
    }
}

/// Snapshots: active are those an image or a container stands on.
fn snapshots_row(u: &Usage, img_snaps: &BTreeSet<String>) -> Row {
    let mut live_snaps = img_snaps.clone();
    for (_, key, _) in u.containers.values() {
        live_snaps.extend(u.chain(key));
    }
    Row {
        kind: "Snapshots",
        total: u.snapshots.len(),
        active: live_snaps.len(),
        size: u.snapshots.values().map(|(_, s)| *s).sum(),
        reclaimable: u
            .snapshots
            .iter()
            .filter(|(k, _)| !live_snaps.contains(*k))
            .map(|(_, (_, s))| *s)
            .sum(),
    }
}

/// Local Volumes (Docker's row): active are those a container uses; reclaimable the
/// others' data.
fn volumes_row(volumes: &[crate::client::volumes::Volume]) -> Row {
    let size = |v: &&crate::client::volumes::Volume| v.size.max(0);
    Row {
        kind: "Local Volumes",
        total: volumes.len(),
        active: volumes.iter().filter(|v| !v.used_by.is_empty()).count(),
        size: volumes.iter().map(|v| size(&v)).sum(),
        reclaimable: volumes
            .iter()
            .filter(|v| v.used_by.is_empty())
            .map(|v| size(&v))
            .sum(),
    }
}

/// Content: active are the blobs of images.
fn content_row(u: &Usage, img_blobs: &BTreeSet<String>) -> Row {
    Row {
        kind: "Content",
        total: u.blobs.len(),
        active: img_blobs.len(),
        size: u.blobs.values().sum(),
        reclaimable: u
            .blobs
            .iter()
            .filter(|(d, _)| !img_blobs.contains(*d))
            .map(|(_, s)| *s)
            .sum(),
    }
}

/// `df -v`'s images: each one's size and how many containers use it.
fn images_table(u: &Usage) -> anyhow::Result<()> {
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
    output::table(&["IMAGE", "SIZE", "CONTAINERS"], &rows)
}

/// `df -v`'s volumes (Docker's `Local Volumes space usage`): each one's users and size.
fn volumes_table(volumes: &[crate::client::volumes::Volume]) -> anyhow::Result<()> {
    let rows: Vec<Vec<String>> = volumes
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                v.used_by.len().to_string(),
                human_size(v.size.max(0)),
            ]
        })
        .collect();
    output::table(&["VOLUME NAME", "LINKS", "SIZE"], &rows)
}

/// `df -v`'s containers: each one's image, snapshot size and whether it runs.
fn containers_table(u: &Usage) -> anyhow::Result<()> {
    let rows: Vec<Vec<String>> = u
        .containers
        .iter()
        .map(|(id, (image, key, run))| {
            vec![
                id.clone(),
                image.clone(),
                human_size(u.snapshot_size(key)),
                if *run { "running" } else { "stopped" }.to_string(),
            ]
        })
        .collect();
    output::table(&["CONTAINER", "IMAGE", "SIZE", "STATUS"], &rows)
}

/// The first line of `/etc/os-release` that sets `key`, unquoted.
fn os_release(key: &str) -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim_matches('"').to_string())
}

/// `MemTotal` of /proc/meminfo, in bytes.
fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Binary units as Docker's `units.BytesSize` prints them (`23.54GiB`).
fn bytes_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    let text = format!("{v:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{}", UNITS[i])
}

/// The daemon and its host, with Docker's field names.
async fn gather(c: &Client) -> anyhow::Result<Value> {
    let version = VersionClient::new(c.channel.clone())
        .version(c.req(()))
        .await
        .map_err(status)?
        .into_inner();
    let mut intro = IntrospectionClient::new(c.channel.clone());
    let server = intro.server(c.req(())).await.map_err(status)?.into_inner();
    let plugins = intro
        .plugins(c.req(inpb::PluginsRequest::default()))
        .await
        .map_err(status)?
        .into_inner()
        .plugins;
    let root = plugins
        .iter()
        .find(|p| p.r#type == "io.containerd.metadata.v1")
        .and_then(|p| p.exports.get("root").cloned())
        .unwrap_or_default();
    let snapshotters: Vec<&str> = plugins
        .iter()
        .filter(|p| p.r#type == "io.containerd.snapshotter.v1")
        .map(|p| p.id.as_str())
        .collect();
    let driver = if snapshotters.contains(&"overlayfs") {
        "overlayfs"
    } else {
        snapshotters.first().copied().unwrap_or("")
    };
    let all = containers::list_all(c).await?;
    let procs = tasks::list(c).await.map_err(status)?;
    let state = |id: &str| state_name(procs.iter().find(|p| p.id == id));
    let count = |s: &str| all.iter().filter(|ct| state(&ct.id) == s).count();
    let (running, paused) = (count("running"), count("paused"));
    let images = images::list(c, Vec::new()).await?.len();
    let proc = |f: &str| {
        std::fs::read_to_string(format!("/proc/sys/kernel/{f}"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    Ok(json!({
        "ID": server.uuid,
        "Containers": all.len(),
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": all.len() - running - paused,
        "Images": images,
        "Driver": driver,
        "ServerVersion": version.version,
        "CgroupVersion": if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() { "2" } else { "1" },
        "KernelVersion": proc("osrelease"),
        "OperatingSystem": os_release("PRETTY_NAME").unwrap_or_default(),
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "NCPU": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "MemTotal": mem_total(),
        "Name": proc("hostname"),
        "DockerRootDir": root,
        "Namespace": c.namespace,
        "RegistryConfig": registry_config(c).await?,
    }))
}

/// Docker's `RegistryConfig`: the insecure registries (host names, and CIDR ranges apart)
/// and Docker Hub's mirrors, from berthd's configuration.
async fn registry_config(c: &Client) -> anyhow::Result<Value> {
    let Some(r) = crate::client::registry::info(c).await? else {
        return Ok(Value::Null);
    };
    let (cidrs, names): (Vec<&String>, Vec<&String>) =
        r.insecure_registries.iter().partition(|e| e.contains('/'));
    let mut indexes = serde_json::Map::new();
    for name in names {
        indexes.insert(
            name.clone(),
            json!({"Name": name, "Mirrors": [], "Secure": false, "Official": false}),
        );
    }
    indexes.insert(
        "docker.io".to_string(),
        json!({"Name": "docker.io", "Mirrors": r.mirrors, "Secure": true, "Official": true}),
    );
    Ok(json!({
        "InsecureRegistryCIDRs": cidrs,
        "IndexConfigs": indexes,
        "Mirrors": r.mirrors,
    }))
}

/// `berth info` / `berth system info`: what the daemon holds and runs on, in Docker's words
/// (`--format` takes a template over Docker's field names).
pub async fn info(c: &Client, format: &Format) -> anyhow::Result<()> {
    let v = gather(c).await?;
    match format {
        Format::Template(t) | Format::TableTemplate(t) => {
            println!("{}", crate::template::Compiled::new(t)?.render(&v)?);
            return Ok(());
        }
        Format::Json => {
            println!("{v}");
            return Ok(());
        }
        Format::Table => {}
    }
    let f = |k: &str| match &v[k] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    println!("Client:");
    println!(" Version:    {}", env!("CARGO_PKG_VERSION"));
    println!(" Debug Mode: false");
    println!();
    println!("Server:");
    println!(" Containers: {}", f("Containers"));
    println!("  Running: {}", f("ContainersRunning"));
    println!("  Paused: {}", f("ContainersPaused"));
    println!("  Stopped: {}", f("ContainersStopped"));
    println!(" Images: {}", f("Images"));
    println!(" Server Version: {}", f("ServerVersion"));
    println!(" Storage Driver: {}", f("Driver"));
    println!(" Cgroup Version: {}", f("CgroupVersion"));
    println!(" Kernel Version: {}", f("KernelVersion"));
    println!(" Operating System: {}", f("OperatingSystem"));
    println!(" OSType: {}", f("OSType"));
    println!(" Architecture: {}", f("Architecture"));
    println!(" CPUs: {}", f("NCPU"));
    println!(
        " Total Memory: {}",
        bytes_size(v["MemTotal"].as_u64().unwrap_or(0))
    );
    println!(" Name: {}", f("Name"));
    println!(" ID: {}", f("ID"));
    println!(" Berth Root Dir: {}", f("DockerRootDir"));
    println!(" Namespace: {}", f("Namespace"));
    println!(" Debug Mode: false");
    let registries = &v["RegistryConfig"];
    let insecure: Vec<String> = registries["IndexConfigs"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, i)| i["Secure"] == json!(false))
        .map(|(name, _)| name.clone())
        .chain(
            registries["InsecureRegistryCIDRs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str().map(str::to_string)),
        )
        .collect();
    if !insecure.is_empty() {
        println!(" Insecure Registries:");
        for r in insecure {
            println!("  {r}");
        }
    }
    let mirrors = registries["Mirrors"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !mirrors.is_empty() {
        println!(" Registry Mirrors:");
        for m in mirrors {
            println!("  {}", m.as_str().unwrap_or_default());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn binary_sizes_as_docker_prints_them() {
        assert_eq!(super::bytes_size(512), "512B");
        assert_eq!(super::bytes_size(1536), "1.5KiB");
        assert_eq!(super::bytes_size(25_275_000_000), "23.54GiB");
    }
}
