//! The JSON documents of an image: descriptors, indexes (and Docker manifest lists),
//! manifests, and the parts of an image config that berth reads.
//!
//! Field order is Go's, so a document built here (the manifest an archive import writes
//! for a Docker `save` entry) has the same bytes, and so the same digest, as containerd's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::media::MediaType;
use super::platform::Platform;
use crate::Error;

/// A content descriptor. `digest` and `size` are required; a missing `mediaType` is kept
/// empty (an OCI layout's `index.json` entry may leave it to the document).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: MediaType,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// An OCI image index or a Docker manifest list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    #[serde(default)]
    pub schema_version: i64,
    #[serde(default, skip_serializing_if = "MediaType::is_empty")]
    pub media_type: MediaType,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI or Docker schema 2 image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default)]
    pub schema_version: i64,
    #[serde(default, skip_serializing_if = "MediaType::is_empty")]
    pub media_type: MediaType,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    /// The config, then the layers: what the manifest holds, in order.
    pub fn children(&self) -> impl DoubleEndedIterator<Item = &Descriptor> {
        std::iter::once(&self.config).chain(&self.layers)
    }
}

/// What berth reads of an image config: its platform and its layers' diff IDs. Every field
/// may be missing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: String,
    #[serde(default)]
    pub rootfs: RootFs,
}

/// An image config's `rootfs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl ImageConfig {
    /// The platform the config states, if it states one.
    pub fn platform(&self) -> Option<Platform> {
        if self.os.is_empty() && self.architecture.is_empty() {
            return None;
        }
        Some(Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            variant: self.variant.clone(),
        })
    }
}

pub fn parse_index(digest: &str, data: &[u8]) -> Result<Index, Error> {
    serde_json::from_slice(data).map_err(|source| Error::InvalidJson {
        what: "index",
        digest: digest.to_string(),
        source,
    })
}

pub fn parse_manifest(digest: &str, data: &[u8]) -> Result<Manifest, Error> {
    serde_json::from_slice(data).map_err(|source| Error::InvalidJson {
        what: "manifest",
        digest: digest.to_string(),
        source,
    })
}

/// The head fields of a document, whatever it is.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    media_type: Option<String>,
    schema_version: Option<i64>,
    manifests: Option<serde::de::IgnoredAny>,
    config: Option<serde::de::IgnoredAny>,
}

/// The media type a document says it has (`mediaType`), to check it against the
/// descriptor's, and its `schemaVersion` (1: Docker schema 1). Both `None` when it is not
/// a JSON object.
pub fn sniff(data: &[u8]) -> (Option<String>, Option<i64>) {
    match serde_json::from_slice::<Head>(data) {
        Ok(h) => (h.media_type, h.schema_version),
        Err(_) => (None, None),
    }
}

/// The media type of a document whose descriptor stated none: the one it states itself,
/// else an OCI index if it lists `manifests`, an OCI manifest if it has a `config`;
/// otherwise empty.
pub fn sniff_media_type(data: &[u8]) -> MediaType {
    let Ok(head) = serde_json::from_slice::<Head>(data) else {
        return MediaType::default();
    };
    match head {
        Head {
            media_type: Some(m),
            ..
        } if !m.is_empty() => MediaType::from(m),
        Head {
            manifests: Some(_), ..
        } => MediaType::OciIndex,
        Head {
            config: Some(_), ..
        } => MediaType::OciManifest,
        _ => MediaType::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::media::{DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST};

    #[test]
    fn documents_keep_go_field_order() {
        let config = Descriptor {
            media_type: MediaType::DockerConfig,
            digest: "sha256:c".into(),
            size: 2,
            ..Default::default()
        };
        let layer = Descriptor {
            media_type: MediaType::DockerLayer,
            digest: "sha256:l".into(),
            size: 3,
            ..Default::default()
        };
        let m = Manifest {
            schema_version: 2,
            media_type: MediaType::DockerManifest,
            config,
            layers: vec![layer],
            annotations: BTreeMap::new(),
        };
        let json = String::from_utf8(serde_json::to_vec(&m).expect("json")).expect("utf8");
        assert_eq!(
            json,
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"{DOCKER_CONFIG}","digest":"sha256:c","size":2}},"layers":[{{"mediaType":"{DOCKER_LAYER}","digest":"sha256:l","size":3}}]}}"#
            )
        );
        let back = parse_manifest("sha256:m", json.as_bytes()).expect("parse");
        assert_eq!(back, m);
        assert_eq!(back.children().count(), 2);
    }

    #[test]
    fn parse_errors_and_sniffing() {
        let e = parse_index("sha256:x", b"{").expect_err("bad");
        assert!(
            e.to_string()
                .starts_with("index sha256:x is not valid JSON"),
            "{e}"
        );
        let e = parse_manifest("sha256:x", br#"{"layers":[]}"#).expect_err("no config");
        assert!(e.to_string().contains("config"), "{e}");
        let no_size = br#"{"manifests":[{"digest":"sha256:a"}]}"#;
        assert!(parse_index("sha256:x", no_size).is_err());
        assert_eq!(sniff(br#"{"schemaVersion":1}"#), (None, Some(1)));
        assert_eq!(sniff(b"[]"), (None, None));
        assert_eq!(
            sniff_media_type(br#"{"manifests":[]}"#),
            MediaType::OciIndex
        );
        assert_eq!(
            sniff_media_type(br#"{"config":{}}"#),
            MediaType::OciManifest
        );
        assert_eq!(
            sniff_media_type(br#"{"mediaType":"x/y","config":{}}"#),
            MediaType::from("x/y")
        );
        assert!(sniff_media_type(b"{}").is_empty());
        let cfg: ImageConfig =
            serde_json::from_slice(br#"{"os":"linux","architecture":"arm","variant":"v6"}"#)
                .expect("config");
        assert_eq!(
            cfg.platform().map(|p| p.to_string()).as_deref(),
            Some("linux/arm/v6")
        );
        assert!(ImageConfig::default().platform().is_none());
    }
}
