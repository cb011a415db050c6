//! Image records: look one up (by Docker's names too), list them (the image commands, and
//! `system df`'s measure), show one as Docker's inspect does, prune the unused ones.

use berth_proto::containerd::services::images::v1 as pb;
use berth_proto::containerd::services::images::v1::images_client::ImagesClient;
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::{Client, containers, status, usage};
use crate::oci::{self, repo_tag};

pub fn api(c: &Client) -> ImagesClient<Channel> {
    ImagesClient::new(c.channel.clone())
}

/// The image record `name`.
pub async fn get(c: &Client, name: &str) -> anyhow::Result<pb::Image> {
    Ok(api(c)
        .get(c.req(pb::GetImageRequest {
            name: name.to_string(),
        }))
        .await
        .map_err(status)?
        .into_inner()
        .image
        .unwrap_or_default())
}

/// The image `name` names as Docker reads a name: as given, else normalized (`busybox` is
/// `docker.io/library/busybox:latest`, `host:5000/repo` is `host:5000/repo:latest`), else
/// as an image ID or a prefix of one (the first of its names).
pub async fn find(c: &Client, name: &str) -> anyhow::Result<pb::Image> {
    match find_by_name(c, name).await {
        Ok(img) => Ok(img),
        Err(e) => match by_id(c, name).await?.into_iter().next() {
            Some(img) => Ok(img),
            None => Err(e),
        },
    }
}

/// The image `name` names, by name only (as given, else normalized).
pub async fn find_by_name(c: &Client, name: &str) -> anyhow::Result<pb::Image> {
    match get(c, name).await {
        Ok(img) => Ok(img),
        Err(e) => {
            let normalized = crate::oci::normalize(name);
            if normalized == name {
                return Err(e);
            }
            get(c, &normalized).await.map_err(|_| e)
        }
    }
}

/// The image records whose ID (config digest) is `id` or starts with it (`sha256:` may be
/// left out; at least four hex digits); none when `id` cannot be one.
pub async fn by_id(c: &Client, id: &str) -> anyhow::Result<Vec<pb::Image>> {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    if hex.len() < 4 || hex.len() > 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(Vec::new());
    }
    let prefix = format!("sha256:{}", hex.to_ascii_lowercase());
    let mut found = Vec::new();
    for img in list(c, vec![]).await? {
        let Some(target) = img.target.as_ref() else {
            continue;
        };
        if let Ok(r) = oci::resolve(c, target).await
            && r.config_digest.starts_with(&prefix)
        {
            found.push(img);
        }
    }
    Ok(found)
}

/// Every image of the namespace matching `filters`.
pub async fn list(c: &Client, filters: Vec<String>) -> anyhow::Result<Vec<pb::Image>> {
    Ok(api(c)
        .list(c.req(pb::ListImagesRequest { filters }))
        .await
        .map_err(status)?
        .into_inner()
        .images)
}

/// An image as Docker's inspect shows it.
pub async fn image_json(c: &Client, name: &str) -> anyhow::Result<Value> {
    {
        let img = find(c, name).await?;
        let target = img.target.clone().unwrap_or_default();
        let r = oci::resolve(c, &target).await?;
        let (repo, _) = repo_tag(&img.name);
        Ok(json!({
            "Id": r.config_digest,
            "RepoTags": [img.name],
            "RepoDigests": [format!("{repo}@{}", target.digest)],
            "Created": r.config["created"],
            "Author": r.config["author"],
            "Architecture": r.config["architecture"],
            "Variant": r.config["variant"],
            "Os": r.config["os"],
            "Config": r.config["config"],
            // Docker's names for the OCI config's `rootfs`.
            "RootFS": {"Type": r.config["rootfs"]["type"], "Layers": r.config["rootfs"]["diff_ids"]},
            "Size": r.size(),
            "Manifest": r.manifest_digest,
            "Target": {"mediaType": target.media_type, "digest": target.digest, "size": target.size},
            "Labels": img.labels,
        }))
    }
}

/// The 12-digit form of an image ID or digest (`sha256:` left out), as `images` shows it.
pub fn short_image_id(digest: &str) -> String {
    digest
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect()
}

/// Records `image`: made, or when its name is taken, that record given its target and
/// (with `labels`) its labels.
pub async fn put(c: &Client, image: pb::Image, labels: bool) -> anyhow::Result<()> {
    let mut api = api(c);
    match api
        .create(c.req(pb::CreateImageRequest {
            image: Some(image.clone()),
            source_date_epoch: None,
        }))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code() == tonic::Code::AlreadyExists => {
            let mut paths = vec!["target".to_string()];
            if labels {
                paths.push("labels".to_string());
            }
            api.update(c.req(pb::UpdateImageRequest {
                image: Some(image),
                update_mask: Some(prost_types::FieldMask { paths }),
                source_date_epoch: None,
            }))
            .await
            .map_err(status)?;
            Ok(())
        }
        Err(e) => Err(status(e)),
    }
}

/// An image's identity and layers, for what its removal deletes.
pub struct Layers {
    /// The image record's target (its manifest or index).
    pub target: String,
    /// Its ID (the config's digest).
    pub id: String,
    /// The chain IDs of its layers, bottom first.
    pub chain: Vec<String>,
}

/// The [`Layers`] of `img`.
pub async fn layers_of(c: &Client, img: &pb::Image) -> anyhow::Result<Layers> {
    let target = img.target.clone().unwrap_or_default();
    let r = oci::resolve(c, &target).await?;
    let diff_ids = super::commit::diff_ids_of(&r.config);
    Ok(Layers {
        target: target.digest,
        id: r.config_digest,
        chain: berth_oci::image::chain_ids(&diff_ids),
    })
}

/// Docker's `Deleted:` lines once an image record went: none while another name keeps
/// the image; else its ID, then its layers no other image has, top first.
pub async fn deleted_lines(c: &Client, gone: &Layers) -> anyhow::Result<Vec<String>> {
    let rest = list(c, vec![]).await?;
    if rest
        .iter()
        .any(|i| i.target.as_ref().is_some_and(|t| t.digest == gone.target))
    {
        return Ok(Vec::new());
    }
    let mut kept = std::collections::BTreeSet::new();
    for img in &rest {
        if let Ok(l) = layers_of(c, img).await {
            kept.extend(l.chain);
        }
    }
    let mut lines = vec![format!("Deleted: {}", gone.id)];
    for chain in gone.chain.iter().rev() {
        if !kept.contains(chain) {
            lines.push(format!("Deleted: {chain}"));
        }
    }
    Ok(lines)
}

/// Removes the images no container was made from: the dangling ones, or all with `all`;
/// returns their names and what that freed.
pub async fn prune_unused(c: &Client, all: bool) -> anyhow::Result<(Vec<String>, i64)> {
    let mut api = api(c);
    let images = list(c, vec![]).await?;
    let used: std::collections::BTreeSet<String> = containers::list_all(c)
        .await?
        .into_iter()
        .map(|c| c.image)
        .collect();
    let before = usage::disk_used(c).await?;
    let mut removed = Vec::new();
    for img in images {
        // The build cache goes with -a only (a dangling image otherwise).
        let cache = img.labels.contains_key(crate::labels::BUILD_CACHE);
        if used.contains(&img.name) || !(all || (is_dangling(&img.name) && !cache)) {
            continue;
        }
        api.delete(c.req(pb::DeleteImageRequest {
            name: img.name.clone(),
            sync: true,
            target: None,
        }))
        .await
        .map_err(status)?;
        removed.push(img.name);
    }
    let after = usage::disk_used(c).await?;
    Ok((removed, (before - after).max(0)))
}

/// An image known by digest alone (Docker's `<none>:<none>`).
pub fn is_dangling(name: &str) -> bool {
    name.contains("@sha256:") || name.ends_with(":<none>")
}
