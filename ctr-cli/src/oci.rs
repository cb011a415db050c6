//! Reading images from the daemon's content store: blobs, manifests, configs, platform
//! selection. Used by the image commands to show sizes, ids and history. The image format
//! itself (media types, indexes, platforms, chain IDs) is `berth_oci::image`'s.

use berth_oci::image::{self as oci, MediaType};
use berth_proto::containerd::services::content::v1 as cpb;
use berth_proto::containerd::services::content::v1::content_client::ContentClient;
use berth_proto::containerd::types::Descriptor;
use serde_json::Value;

use crate::client::{Client, status};

/// The whole blob `digest`.
pub async fn read_blob(c: &Client, digest: &str) -> anyhow::Result<Vec<u8>> {
    let mut api = ContentClient::new(c.channel.clone());
    let mut stream = api
        .read(c.req(cpb::ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        }))
        .await
        .map_err(status)?
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.message().await.map_err(status)? {
        out.extend_from_slice(&chunk.data);
    }
    Ok(out)
}

pub async fn read_json(c: &Client, digest: &str) -> anyhow::Result<Value> {
    let bytes = read_blob(c, digest).await?;
    serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("blob {digest} is not JSON: {e}"))
}

/// A resolved single-platform image: its manifest and config.
pub struct Resolved {
    pub manifest_digest: String,
    pub manifest: Value,
    pub config_digest: String,
    pub config: Value,
}

impl Resolved {
    /// Compressed size of the layers plus config, as `docker images` shows for a pulled image.
    pub fn size(&self) -> i64 {
        let layers: i64 = self.manifest["layers"]
            .as_array()
            .map(|l| l.iter().filter_map(|d| d["size"].as_i64()).sum())
            .unwrap_or(0);
        layers + self.manifest["config"]["size"].as_i64().unwrap_or(0)
    }

    /// The layers' uncompressed digests, from the config.
    pub fn diff_ids(&self) -> Vec<String> {
        self.config["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The chain IDs of the layers: the names of the image's snapshots, bottom first.
    pub fn chain_ids(&self) -> Vec<String> {
        oci::chain_ids(&self.diff_ids())
    }
}

/// Follows an index to the host platform's manifest and reads the config.
pub async fn resolve(c: &Client, target: &Descriptor) -> anyhow::Result<Resolved> {
    let mut digest = target.digest.clone();
    let mut media = target.media_type.clone();
    let mut manifest = read_json(c, &digest).await?;
    for _ in 0..4 {
        let is_index = MediaType::from(&media).is_index()
            || (manifest.get("manifests").is_some() && manifest.get("layers").is_none());
        if !is_index {
            break;
        }
        let index: oci::Index = serde_json::from_value(manifest)
            .map_err(|e| anyhow::anyhow!("index {digest} is not valid: {e}"))?;
        let host = oci::host_platform();
        let with_platform = index
            .manifests
            .iter()
            .filter(|m| m.platform.is_some())
            .map(|m| (m.platform.as_ref(), m));
        let chosen = oci::best_match(&host, with_platform)
            .or_else(|| index.manifests.first())
            .ok_or_else(|| anyhow::anyhow!("index {digest} lists no manifests"))?;
        digest = chosen.digest.clone();
        media = chosen.media_type.to_string();
        manifest = read_json(c, &digest).await?;
    }
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("manifest {digest} has no config"))?
        .to_string();
    let config = read_json(c, &config_digest).await?;
    Ok(Resolved {
        manifest_digest: digest,
        manifest,
        config_digest,
        config,
    })
}

/// `docker.io/library/busybox:latest` → ("busybox", "latest") as `docker images` shows it.
pub fn repo_tag(name: &str) -> (String, String) {
    let (repo, tag) = match name.rsplit_once('@') {
        Some((repo, _digest)) => (repo.to_string(), "<none>".to_string()),
        None => match name.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
            _ => (name.to_string(), "latest".to_string()),
        },
    };
    let short = repo
        .strip_prefix("docker.io/library/")
        .or_else(|| repo.strip_prefix("docker.io/"))
        .unwrap_or(&repo)
        .to_string();
    (short, tag)
}

/// Docker's reference normalization: a missing registry is docker.io (with `library/`
/// for one-component names), a missing tag is `latest`.
pub fn normalize(name: &str) -> String {
    let (first, _) = name.split_once('/').unwrap_or(("", name));
    let has_registry =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut out = if has_registry {
        name.to_string()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    };
    let last = out.rsplit('/').next().unwrap_or_default();
    if !last.contains(':') && !out.contains('@') {
        out.push_str(":latest");
    }
    out
}

/// A reference as Docker prints it (its familiar name): without `docker.io/` and, for
/// official images, `library/`.
pub fn familiar(full: &str) -> &str {
    full.strip_prefix("docker.io/library/")
        .or_else(|| full.strip_prefix("docker.io/"))
        .unwrap_or(full)
}

/// Human size as docker prints it: decimal units, three significant digits.
pub fn human_size(bytes: i64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes.max(0) as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    let text = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{}", UNITS[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_tags() {
        assert_eq!(
            repo_tag("docker.io/library/busybox:latest"),
            ("busybox".into(), "latest".into())
        );
        assert_eq!(
            repo_tag("127.0.0.1:5000/a/b:v1"),
            ("127.0.0.1:5000/a/b".into(), "v1".into())
        );
        assert_eq!(
            repo_tag("127.0.0.1:5000/a/b"),
            ("127.0.0.1:5000/a/b".into(), "latest".into())
        );
        assert_eq!(
            repo_tag("docker.io/x/y@sha256:ab"),
            ("x/y".into(), "<none>".into())
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(4_260_000), "4.26MB");
        assert_eq!(human_size(12_500_000), "12.5MB");
        assert_eq!(human_size(729_000), "729kB");
        assert_eq!(human_size(1_000_000_000), "1GB");
    }
}
