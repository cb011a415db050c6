//! The CRI ImageService: ListImages, ImageStatus, PullImage, RemoveImage, ImageFsInfo, on
//! the image store of namespace `k8s.io`. An image's CRI id is its config's digest; its
//! names are its tags (`repo_tags`) and `repo@sha256:…` names (`repo_digests`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_oci::image as oci;
use berth_proto::runtime::v1 as cri;
use serde_json::Value;

use super::*;
use crate::images::{Descriptor, Image};
use crate::transfer::{PullRequest, normalized};

/// An image as the CRI sees it: every name of it, its config.
#[derive(Debug, Clone)]
pub(super) struct Resolved {
    /// The config's digest (the CRI image id).
    pub id: String,
    pub names: Vec<String>,
    pub target: Descriptor,
    pub config: Value,
    /// Manifest, config and layers.
    pub size: u64,
}

/// What ImageFsInfo reports: where images' layers are, and what they take.
#[derive(Debug, Clone)]
pub struct ImageFs {
    pub mountpoint: PathBuf,
    pub used_bytes: u64,
    pub inodes_used: u64,
}

impl Cri {
    /// Every image of `k8s.io`, grouped by config (one CRI image per config).
    pub(super) async fn resolved_images(&self) -> Result<Vec<Resolved>> {
        let mut by_id: BTreeMap<String, Resolved> = BTreeMap::new();
        for image in self.p().images.list(NAMESPACE, Filter::parse("")?).await? {
            let Ok(r) = self.resolve_record(&image).await else {
                continue;
            };
            by_id
                .entry(r.id.clone())
                .and_modify(|e| e.names.push(image.name.clone()))
                .or_insert(r);
        }
        Ok(by_id.into_values().collect())
    }

    /// The image `reference` names: a name (normalised), `sha256:<config>` or a unique
    /// prefix of an id.
    pub(super) async fn resolve_image(&self, reference: &str) -> Result<Resolved> {
        if reference.is_empty() {
            return Err(Error::invalid("image reference must not be empty"));
        }
        let name = normalized(reference);
        let all = self.resolved_images().await?;
        if let Some(r) = all
            .iter()
            .find(|r| r.names.iter().any(|n| *n == name || n == reference))
        {
            return Ok(r.clone());
        }
        let bare = reference.strip_prefix("sha256:").unwrap_or(reference);
        let mut by_id = all
            .into_iter()
            .filter(|r| bare.len() >= 4 && r.id.trim_start_matches("sha256:").starts_with(bare));
        match (by_id.next(), by_id.next()) {
            (Some(r), None) => Ok(r),
            _ => Err(Error::not_found(format!("image {reference:?}"))),
        }
    }

    async fn resolve_record(&self, image: &Image) -> Result<Resolved> {
        let target = image.target();
        let content = &self.p().content;
        let manifest =
            crate::blobs::platform_manifest(content, NAMESPACE, &target, &oci::host_platform())
                .await?;
        let data = crate::blobs::read_blob(content, NAMESPACE, &manifest.digest).await?;
        let parsed = oci::parse_manifest(&manifest.digest, &data)?;
        let config_digest = parsed.config.digest.to_string();
        let config_bytes = crate::blobs::read_blob(content, NAMESPACE, &config_digest).await?;
        let config: Value = serde_json::from_slice(&config_bytes)
            .map_err(|e| Error::invalid(format!("image config {config_digest}: {e}")))?;
        let size = [manifest.size, parsed.config.size]
            .into_iter()
            .chain(parsed.layers.iter().map(|l| l.size))
            .map(|s| u64::try_from(s).unwrap_or(0))
            .sum();
        Ok(Resolved {
            id: config_digest,
            names: vec![image.name.clone()],
            target,
            config,
            size,
        })
    }

    /// The CRI view of an image.
    pub(super) fn cri_image(r: &Resolved) -> cri::Image {
        let mut repo_tags = Vec::new();
        let mut repo_digests = Vec::new();
        for n in &r.names {
            if n.contains("@sha256:") {
                repo_digests.push(n.clone());
            } else if !n.starts_with("sha256:") {
                repo_tags.push(n.clone());
                if let Some((repo, _)) = n.rsplit_once(':').filter(|(repo, _)| !repo.ends_with('/'))
                {
                    let d = format!("{repo}@{}", r.target.digest);
                    if !repo_digests.contains(&d) {
                        repo_digests.push(d);
                    }
                }
            }
        }
        let user = r.config["config"]["User"].as_str().unwrap_or_default();
        let user_part = user.split(':').next().unwrap_or_default();
        let (uid, username) = match user_part.parse::<i64>() {
            Ok(n) => (Some(cri::Int64Value { value: n }), String::new()),
            Err(_) if user_part.is_empty() => (Some(cri::Int64Value { value: 0 }), String::new()),
            Err(_) => (None, user_part.to_string()),
        };
        cri::Image {
            id: r.id.clone(),
            repo_tags,
            repo_digests,
            size: r.size,
            uid,
            username,
            spec: Some(cri::ImageSpec {
                image: r.id.clone(),
                ..Default::default()
            }),
            pinned: false,
        }
    }

    /// ListImages (`filter`: an image reference, or empty for all).
    pub async fn list_images(&self, filter: &str) -> Result<Vec<cri::Image>> {
        if !filter.is_empty() {
            return Ok(match self.resolve_image(filter).await {
                Ok(r) => vec![Self::cri_image(&r)],
                Err(Error::NotFound(_)) => Vec::new(),
                Err(e) => return Err(e),
            });
        }
        Ok(self
            .resolved_images()
            .await?
            .iter()
            .map(Self::cri_image)
            .collect())
    }

    /// ImageStatus: None when there is no such image (the CRI's answer, not an error).
    pub async fn image_status(
        &self,
        reference: &str,
        verbose: bool,
    ) -> Result<(Option<cri::Image>, BTreeMap<String, String>)> {
        let r = match self.resolve_image(reference).await {
            Ok(r) => r,
            Err(Error::NotFound(_)) => return Ok((None, BTreeMap::new())),
            Err(e) => return Err(e),
        };
        let mut info = BTreeMap::new();
        if verbose {
            let v = serde_json::json!({
                "imageSpec": r.config,
                "chainID": oci::chain_ids(&diff_ids(&r.config)).last().cloned().unwrap_or_default(),
                "target": {"mediaType": r.target.media_type, "digest": r.target.digest, "size": r.target.size},
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok((Some(Self::cri_image(&r)), info))
    }

    /// PullImage: pulled and unpacked, named by its normalised reference; its id.
    pub async fn pull_image(
        &self,
        reference: &str,
        auth: Option<cri::AuthConfig>,
    ) -> Result<String> {
        if reference.is_empty() {
            return Err(Error::invalid("image reference must not be empty"));
        }
        let name = normalized(reference);
        let credentials = auth.and_then(credentials_of);
        let req = PullRequest {
            reference: name.clone(),
            names: vec![name.clone()],
            snapshotter: Some(self.p().snapshotter.clone()),
            credentials,
            ..Default::default()
        };
        // Progress is for the Transfer service's clients; nobody watches it here.
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let pulled = self.p().transfers.pull(NAMESPACE, req, tx).await;
        let _ = drain.await;
        pulled.map_err(|e| e.context(&format!("failed to pull and unpack image {reference:?}")))?;
        Ok(self.resolve_image(&name).await?.id)
    }

    /// RemoveImage: every name of the image goes. An image that is not there is no error.
    pub async fn remove_image(&self, reference: &str) -> Result<()> {
        let r = match self.resolve_image(reference).await {
            Ok(r) => r,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        for name in &r.names {
            match self.p().images.delete(NAMESPACE, name, None, false).await {
                Ok(()) | Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// ImageFsInfo: the snapshotter's directory and what is under it.
    pub async fn image_fs(&self) -> Result<ImageFs> {
        let dir = self.p().snapshots_root.clone();
        blocking(move || {
            let u = berth_snapshotter::store::disk_usage(&dir)?;
            Ok(ImageFs {
                mountpoint: dir,
                used_bytes: u64::try_from(u.size).unwrap_or(0),
                inodes_used: u64::try_from(u.inodes).unwrap_or(0),
            })
        })
        .await
    }
}

/// The image config's layer diff IDs (berth-oci's reading of a config).
pub(super) fn diff_ids(config: &Value) -> Vec<String> {
    serde_json::from_value::<oci::ImageConfig>(config.clone())
        .map(|c| c.rootfs.diff_ids)
        .unwrap_or_default()
}

/// A pull's credentials: username and password, or Docker's base64 `auth`.
fn credentials_of(a: cri::AuthConfig) -> Option<berth_oci::credentials::Credentials> {
    use base64::Engine as _;
    if !a.username.is_empty() {
        return Some(berth_oci::credentials::Credentials {
            username: a.username,
            password: a.password,
        });
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(a.auth.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some(berth_oci::credentials::Credentials {
        username: u.to_string(),
        password: p.to_string(),
    })
}
