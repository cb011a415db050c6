//! `commit`: a container's changes made a new image, as Docker's commit and nerdctl's do
//! it with containerd's API. Under a lease: the Diff service writes the changes between the
//! container's snapshot and its parent as a gzip'd layer; the new config is the image's
//! with the container's run configuration, the `-c` changes, the layer's diff ID and a
//! history entry; config and manifest are written with their garbage-collection references
//! (the config holds the new snapshot, the manifest the config and layers); the layer is
//! applied onto the image's top snapshot and committed under the new chain ID, so the image
//! runs at once; then the image record is made.

use std::collections::BTreeMap;

use berth_proto::containerd::services::containers::v1::Container;
use berth_proto::containerd::services::images::v1 as ipb;
use berth_proto::containerd::services::snapshots::v1 as spb;
use berth_proto::containerd::types::Descriptor;
use serde_json::{Value, json};

use super::snapshots::{self, Create};
use super::{Client, containers, content, image_config, images, layers, status, tasks};
use crate::oci;

/// The gzip'd layer media type `commit` writes.
const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The label naming the uncompressed digest of a compressed layer.
const UNCOMPRESSED: &str = "containerd.io/uncompressed";

/// What `commit` takes.
#[derive(clap::Args, Debug)]
pub struct CommitArgs {
    /// The commit message (the history entry's comment).
    #[arg(short, long)]
    pub message: Option<String>,
    /// The author ("Name <email>").
    #[arg(short, long)]
    pub author: Option<String>,
    /// Apply a Dockerfile instruction to the image's config (CMD, ENV, ...).
    #[arg(short = 'c', long = "change")]
    pub changes: Vec<String>,
    /// Pause the container while it is committed.
    #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set)]
    pub pause: bool,
    pub container: String,
    /// REPOSITORY[:TAG] of the new image (none: a dangling image).
    pub reference: Option<String>,
}

/// Commits the container; returns the new image's ID (its config's digest).
pub async fn commit(c: &Client, a: CommitArgs) -> anyhow::Result<String> {
    let ct = containers::resolve(c, &a.container).await?;
    if ct.snapshot_key.is_empty() {
        anyhow::bail!("container {} has no filesystem to commit", ct.id);
    }
    // A bad change fails before anything is written.
    let mut scratch = json!({});
    for ch in &a.changes {
        image_config::apply(&mut scratch, ch)?;
    }
    let lease = c
        .create_lease(None, std::time::Duration::from_secs(3600), &[])
        .await?;
    let paused = a.pause
        && tasks::find(c, &ct.id).await?.is_some_and(|t| {
            tasks::status_of(&t) == berth_proto::containerd::v1::types::Status::Running
        })
        && tasks::pause(c, &ct.id).await.is_ok();
    let result = commit_leased(c, &ct, &a, &lease).await;
    if paused {
        let _ = tasks::resume(c, &ct.id).await;
    }
    if let Err(e) = c.delete_lease(&lease).await {
        eprintln!("berth: delete lease {lease}: {e:#}");
    }
    result
}

async fn commit_leased(
    c: &Client,
    ct: &Container,
    a: &CommitArgs,
    lease: &str,
) -> anyhow::Result<String> {
    let sn = ct.snapshotter.clone();
    let base = images::find(c, &ct.image).await?;
    let resolved = oci::resolve(c, &base.target.clone().unwrap_or_default()).await?;
    let mut config = new_config(ct, a, &resolved.config)?;
    let mut layers = resolved.manifest["layers"].clone();
    match container_layer(c, ct, lease).await? {
        // No change of the container's own (the runtime's mount points aside): no layer,
        // the history entry marked empty, as Docker's commit does.
        None => mark_empty(&mut config),
        Some(layer) => add_layer(c, &sn, &mut config, &mut layers, &layer, lease).await?,
    }
    let name = a.reference.as_deref().map(oci::normalize);
    store_image(c, name, &sn, config, layers, BTreeMap::new(), lease).await
}

/// A layer the Diff service wrote, with its diff ID.
#[derive(Debug, Clone)]
pub struct Layer {
    pub desc: Descriptor,
    pub diff_id: String,
}

/// The container's changes (its snapshot over its parent) as a gzip'd layer; None when it
/// changed nothing of its own.
pub async fn container_layer(
    c: &Client,
    ct: &Container,
    lease: &str,
) -> anyhow::Result<Option<Layer>> {
    if super::changes::of_container(c, ct).await?.is_empty() {
        return Ok(None);
    }
    let sn = &ct.snapshotter;
    let info = snapshots::stat(c, sn, &ct.snapshot_key).await?;
    let upper = snapshots::mounts(c, sn, &ct.snapshot_key).await?;
    let view = format!("commit-{}-lower", uuid::Uuid::new_v4().simple());
    let lower = if info.parent.is_empty() {
        Vec::new()
    } else {
        layers::temp_view(c, sn, &view, info.parent.clone(), lease).await?
    };
    let desc =
        layers::write_layer(c, lower, upper, LAYER_GZIP.into(), BTreeMap::new(), lease).await?;
    if !info.parent.is_empty() {
        let _ = snapshots::remove(c, sn, &view).await;
    }
    let diff_id = uncompressed_digest(c, &desc).await?;
    Ok(Some(Layer { desc, diff_id }))
}

/// Marks the last history entry of `config` as making no layer.
pub fn mark_empty(config: &mut Value) {
    if let Some(h) = config["history"].as_array_mut().and_then(|h| h.last_mut()) {
        h["empty_layer"] = json!(true);
    }
}

/// Adds `layer` to an image being made: its diff ID to `config`, its descriptor to
/// `layers` (the manifest's), and its snapshot (the layer applied onto the image's top,
/// committed under the new chain ID) so the image runs at once.
pub async fn add_layer(
    c: &Client,
    sn: &str,
    config: &mut Value,
    layers: &mut Value,
    layer: &Layer,
    lease: &str,
) -> anyhow::Result<()> {
    push(&mut config["rootfs"]["diff_ids"], json!(layer.diff_id));
    push(
        layers,
        json!({"mediaType": layer.desc.media_type, "digest": layer.desc.digest, "size": layer.desc.size}),
    );
    let chain = berth_oci::image::chain_ids(&diff_ids_of(config));
    let top = chain.last().cloned().unwrap_or_default();
    let parent = chain
        .len()
        .checked_sub(2)
        .and_then(|i| chain.get(i))
        .cloned();
    let key = format!("commit-{}-apply", uuid::Uuid::new_v4().simple());
    let mounts = snapshots::create(
        c,
        sn,
        Create::Active,
        &key,
        parent,
        BTreeMap::new(),
        Some(lease),
    )
    .await
    .map_err(status)?;
    layers::apply_layer(c, layer.desc.clone(), mounts, lease).await?;
    match snapshots::api(c)
        .commit(c.leased(
            spb::CommitSnapshotRequest {
                snapshotter: sn.to_string(),
                name: top,
                key: key.clone(),
                labels: BTreeMap::new(),
                parent: String::new(),
            },
            lease,
        ))
        .await
    {
        Ok(_) => Ok(()),
        // The same layer was stacked there before: that snapshot serves.
        Err(e) if e.code() == tonic::Code::AlreadyExists => {
            let _ = snapshots::remove(c, sn, &key).await;
            Ok(())
        }
        Err(e) => Err(status(e)),
    }
}

/// The new image's config: the image's, run as the container is (its command, env...),
/// with the `-c` changes, the author, and a history entry for the commit (the layer's
/// diff ID is the caller's to add).
fn new_config(ct: &Container, a: &CommitArgs, base: &Value) -> anyhow::Result<Value> {
    let mut config = base.clone();
    let run = containers::docker_config(ct)["Config"].clone();
    let mut run_config = if config["config"].is_object() {
        config["config"].clone()
    } else {
        json!({})
    };
    for key in [
        "Cmd",
        "Entrypoint",
        "Env",
        "WorkingDir",
        "User",
        "ExposedPorts",
        "Labels",
        "Volumes",
        "StopSignal",
    ] {
        let v = &run[key];
        if !v.is_null() && *v != json!({}) && *v != json!("") {
            run_config[key] = v.clone();
        }
    }
    for ch in &a.changes {
        image_config::apply(&mut run_config, ch)?;
    }
    config["config"] = run_config;
    let now = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    config["created"] = json!(now);
    if let Some(author) = &a.author {
        config["author"] = json!(author);
    }
    config["rootfs"]["type"] = json!("layers");
    if !config["rootfs"]["diff_ids"].is_array() {
        config["rootfs"]["diff_ids"] = json!([]);
    }
    let mut entry = json!({"created": now, "created_by": created_by(ct)});
    if let Some(author) = &a.author {
        entry["author"] = json!(author);
    }
    if let Some(m) = &a.message {
        entry["comment"] = json!(m);
    }
    push(&mut config["history"], entry);
    Ok(config)
}

pub fn diff_ids_of(config: &Value) -> Vec<String> {
    config["rootfs"]["diff_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_str().map(str::to_string))
        .collect()
}

/// Writes the config (holding the snapshot of its top layer) and the manifest (holding the
/// config and `layers`), and makes the image record `name` with `labels` (none: a dangling
/// record named by the manifest's digest, Docker's `<none>`); returns the image's ID.
pub async fn store_image(
    c: &Client,
    name: Option<String>,
    sn: &str,
    config: Value,
    layers: Value,
    labels: BTreeMap<String, String>,
    lease: &str,
) -> anyhow::Result<String> {
    let top = berth_oci::image::chain_ids(&diff_ids_of(&config))
        .last()
        .cloned()
        .unwrap_or_default();
    // Config and manifest, holding what they need.
    let config_bytes = serde_json::to_vec(&config)?;
    let config_digest = berth_oci::image::sha256_digest(&config_bytes);
    let config_labels = BTreeMap::from([(
        format!("containerd.io/gc.ref.snapshot.{sn}"),
        top.to_string(),
    )]);
    write_blob(
        c,
        &config_digest,
        config_bytes.clone(),
        config_labels,
        lease,
    )
    .await?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_bytes.len(),
        },
        "layers": layers,
    });
    let mut manifest_labels = BTreeMap::from([(
        "containerd.io/gc.ref.content.config".to_string(),
        config_digest.clone(),
    )]);
    for (i, l) in manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Some(d) = l["digest"].as_str() {
            manifest_labels.insert(format!("containerd.io/gc.ref.content.l.{i}"), d.to_string());
        }
    }
    let manifest_bytes = serde_json::to_vec(&manifest)?;
    let manifest_digest = berth_oci::image::sha256_digest(&manifest_bytes);
    write_blob(
        c,
        &manifest_digest,
        manifest_bytes.clone(),
        manifest_labels,
        lease,
    )
    .await?;
    let name = name.unwrap_or_else(|| format!("commit@{manifest_digest}"));
    let target = Descriptor {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: manifest_digest,
        size: manifest_bytes.len() as i64,
        ..Default::default()
    };
    let image = ipb::Image {
        name: name.clone(),
        target: Some(target),
        labels,
        ..Default::default()
    };
    images::put(c, image, true).await?;
    Ok(config_digest)
}

/// Appends `v` to the array at `slot` (made one when it is not).
pub fn push(slot: &mut Value, v: Value) {
    if !slot.is_array() {
        *slot = json!([]);
    }
    if let Some(a) = slot.as_array_mut() {
        a.push(v);
    }
}

/// What made the layer, as Docker's history says it: the container's command.
fn created_by(ct: &Container) -> String {
    let cfg = containers::docker_config(ct);
    let mut words = vec![cfg["Path"].as_str().unwrap_or_default().to_string()];
    words.extend(
        cfg["Args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_string)),
    );
    words.join(" ").trim().to_string()
}

/// The diff ID of a compressed layer the Diff service wrote (its uncompressed label).
async fn uncompressed_digest(c: &Client, layer: &Descriptor) -> anyhow::Result<String> {
    if let Some(d) = layer.annotations.get(UNCOMPRESSED) {
        return Ok(d.clone());
    }
    let info = content::api(c)
        .info(c.req(
            berth_proto::containerd::services::content::v1::InfoRequest {
                digest: layer.digest.clone(),
            },
        ))
        .await
        .map_err(status)?
        .into_inner()
        .info
        .unwrap_or_default();
    info.labels
        .get(UNCOMPRESSED)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("layer {} has no uncompressed digest", layer.digest))
}

async fn write_blob(
    c: &Client,
    digest: &str,
    data: Vec<u8>,
    labels: BTreeMap<String, String>,
    lease: &str,
) -> anyhow::Result<()> {
    let w = content::Write {
        reference: format!("commit-{digest}"),
        expected: digest.to_string(),
        labels,
        lease: Some(lease.to_string()),
        ..Default::default()
    };
    match content::write(c, w, data).await {
        Ok(_) => Ok(()),
        // The same blob is there already: it serves.
        Err(e) if format!("{e:#}").contains("already exists") => Ok(()),
        Err(e) => Err(e),
    }
}
