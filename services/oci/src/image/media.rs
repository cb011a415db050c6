//! Media types: the OCI and Docker schema 2 strings as one enum, and the questions asked of
//! them (is it a layer, a manifest, an index, a config; which document kind is it).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const OCI_LAYER_NONDIST: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
pub const OCI_LAYER_NONDIST_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const OCI_LAYER_NONDIST_ZSTD: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
pub const DOCKER_LAYER_FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar";
pub const DOCKER_LAYER_FOREIGN_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// containerd's checkpoint blobs, which count as configs.
const CHECKPOINT_CRIU: &str = "application/vnd.containerd.container.criu.checkpoint.criu.tar";
const CHECKPOINT_CONFIG: &str = "application/vnd.containerd.container.checkpoint.config.v1+proto";
/// An erofs layer, which containerd counts as a layer.
const EROFS_LAYER: &str = "application/vnd.erofs.layer.v1";

/// The Accept header for manifest requests: indexes and manifests, OCI and Docker schema 2.
pub const MANIFEST_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, */*";

/// The largest manifest or index accepted, as containerd's limit.
pub const MAX_MANIFEST_SIZE: i64 = 4 << 20;

/// A media type. Every known string parses to its variant and prints back to the same
/// string; anything else (artifacts, `+encrypted` layers, the empty string of a descriptor
/// that states none) is kept as it is in [`MediaType::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MediaType {
    OciIndex,
    OciManifest,
    OciConfig,
    OciLayer,
    OciLayerGzip,
    OciLayerZstd,
    OciLayerNondistributable,
    OciLayerNondistributableGzip,
    OciLayerNondistributableZstd,
    DockerManifestList,
    DockerManifest,
    DockerConfig,
    DockerSchema1,
    DockerSchema1Signed,
    DockerLayer,
    DockerLayerGzip,
    DockerLayerZstd,
    DockerLayerForeign,
    DockerLayerForeignGzip,
    Other(String),
}

/// Every known variant with its string, the one table both directions read.
const KNOWN: [(MediaType, &str); 19] = [
    (MediaType::OciIndex, OCI_INDEX),
    (MediaType::OciManifest, OCI_MANIFEST),
    (MediaType::OciConfig, OCI_CONFIG),
    (MediaType::OciLayer, OCI_LAYER),
    (MediaType::OciLayerGzip, OCI_LAYER_GZIP),
    (MediaType::OciLayerZstd, OCI_LAYER_ZSTD),
    (MediaType::OciLayerNondistributable, OCI_LAYER_NONDIST),
    (
        MediaType::OciLayerNondistributableGzip,
        OCI_LAYER_NONDIST_GZIP,
    ),
    (
        MediaType::OciLayerNondistributableZstd,
        OCI_LAYER_NONDIST_ZSTD,
    ),
    (MediaType::DockerManifestList, DOCKER_LIST),
    (MediaType::DockerManifest, DOCKER_MANIFEST),
    (MediaType::DockerConfig, DOCKER_CONFIG),
    (MediaType::DockerSchema1, DOCKER_SCHEMA1),
    (MediaType::DockerSchema1Signed, DOCKER_SCHEMA1_SIGNED),
    (MediaType::DockerLayer, DOCKER_LAYER),
    (MediaType::DockerLayerGzip, DOCKER_LAYER_GZIP),
    (MediaType::DockerLayerZstd, DOCKER_LAYER_ZSTD),
    (MediaType::DockerLayerForeign, DOCKER_LAYER_FOREIGN),
    (MediaType::DockerLayerForeignGzip, DOCKER_LAYER_FOREIGN_GZIP),
];

/// What a manifest-ish document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Index,
    Manifest,
}

impl MediaType {
    /// The media type's string, exactly as it was parsed.
    pub fn as_str(&self) -> &str {
        match self {
            MediaType::Other(s) => s,
            known => KNOWN
                .iter()
                .find(|(m, _)| m == known)
                .map_or("", |(_, s)| s),
        }
    }

    /// Whether no media type was stated (a descriptor without `mediaType`).
    pub fn is_empty(&self) -> bool {
        self.as_str().is_empty()
    }

    /// An OCI image index or a Docker manifest list.
    pub fn is_index(&self) -> bool {
        matches!(self, MediaType::OciIndex | MediaType::DockerManifestList)
    }

    /// An OCI or Docker schema 2 image manifest.
    pub fn is_manifest(&self) -> bool {
        matches!(self, MediaType::OciManifest | MediaType::DockerManifest)
    }

    /// A manifest or an index: a document that names other content.
    pub fn is_manifest_or_index(&self) -> bool {
        self.is_manifest() || self.is_index()
    }

    /// Docker's image manifest schema 1 (not supported).
    pub fn is_schema1(&self) -> bool {
        matches!(
            self,
            MediaType::DockerSchema1 | MediaType::DockerSchema1Signed
        )
    }

    /// Whether this is a layer, as containerd's `IsLayerType`: any OCI layer type, and
    /// Docker's layer types with any `+` suffix stripped.
    pub fn is_layer(&self) -> bool {
        let s = self.as_str();
        if s.starts_with("application/vnd.oci.image.layer.") {
            return true;
        }
        let base = s.split('+').next().unwrap_or_default();
        matches!(
            base,
            DOCKER_LAYER
                | DOCKER_LAYER_GZIP
                | DOCKER_LAYER_ZSTD
                | DOCKER_LAYER_FOREIGN
                | DOCKER_LAYER_FOREIGN_GZIP
                | EROFS_LAYER
        )
    }

    /// Whether this is an image config, as containerd's `IsKnownConfig` (checkpoint
    /// configs included).
    pub fn is_config(&self) -> bool {
        matches!(self, MediaType::DockerConfig | MediaType::OciConfig)
            || matches!(self.as_str(), CHECKPOINT_CRIU | CHECKPOINT_CONFIG)
    }

    /// Whether this is the config of a runnable image (OCI or Docker; not a checkpoint).
    pub fn is_image_config(&self) -> bool {
        matches!(self, MediaType::DockerConfig | MediaType::OciConfig)
    }

    /// A foreign (Docker) or non-distributable (OCI) layer, which is not pushed. Any type
    /// that says so counts, wrapped ones (`+encrypted`) included.
    pub fn is_nondistributable(&self) -> bool {
        let s = self.as_str();
        s.contains("foreign") || s.contains("nondistributable")
    }

    /// Classifies a manifest-ish document; schema 1 and anything else are rejected with a
    /// clear error.
    pub fn kind(&self) -> Result<Kind, Error> {
        if self.is_index() {
            Ok(Kind::Index)
        } else if self.is_manifest() {
            Ok(Kind::Manifest)
        } else if self.is_schema1() {
            Err(Error::Schema1 {
                media_type: self.to_string(),
            })
        } else {
            Err(Error::UnsupportedManifestType {
                media_type: self.to_string(),
            })
        }
    }
}

impl Default for MediaType {
    /// No media type stated.
    fn default() -> Self {
        MediaType::Other(String::new())
    }
}

impl From<&str> for MediaType {
    fn from(s: &str) -> Self {
        KNOWN
            .iter()
            .find(|(_, known)| *known == s)
            .map_or_else(|| MediaType::Other(s.to_string()), |(m, _)| m.clone())
    }
}

impl From<String> for MediaType {
    fn from(s: String) -> Self {
        match MediaType::from(s.as_str()) {
            MediaType::Other(_) => MediaType::Other(s),
            known => known,
        }
    }
}

impl From<&String> for MediaType {
    fn from(s: &String) -> Self {
        MediaType::from(s.as_str())
    }
}

impl FromStr for MediaType {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(MediaType::from(s))
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for MediaType {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for MediaType {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for MediaType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MediaType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(MediaType::from)
    }
}

impl From<&MediaType> for oci_spec::image::MediaType {
    fn from(m: &MediaType) -> Self {
        oci_spec::image::MediaType::from(m.as_str())
    }
}

impl From<&oci_spec::image::MediaType> for MediaType {
    fn from(m: &oci_spec::image::MediaType) -> Self {
        MediaType::from(m.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip() {
        for (m, s) in KNOWN.iter() {
            assert_eq!(MediaType::from(*s), *m);
            assert_eq!(m.as_str(), *s);
            let json = serde_json::to_string(m).expect("json");
            assert_eq!(json, format!("\"{s}\""));
            let back: MediaType = serde_json::from_str(&json).expect("parse");
            assert_eq!(back, *m);
        }
        let odd = "application/vnd.oci.image.layer.v1.tar+gzip+encrypted";
        assert_eq!(MediaType::from(odd), MediaType::Other(odd.to_string()));
        assert_eq!(MediaType::from(odd).as_str(), odd);
        assert!(MediaType::default().is_empty());
        let spec = oci_spec::image::MediaType::from(&MediaType::OciLayerZstd);
        assert_eq!(spec, oci_spec::image::MediaType::ImageLayerZstd);
        assert_eq!(MediaType::from(&spec), MediaType::OciLayerZstd);
    }

    #[test]
    fn kinds() {
        let k = |s: &str| MediaType::from(s).kind();
        assert_eq!(k(OCI_INDEX).ok(), Some(Kind::Index));
        assert_eq!(k(DOCKER_LIST).ok(), Some(Kind::Index));
        assert_eq!(k(OCI_MANIFEST).ok(), Some(Kind::Manifest));
        assert_eq!(k(DOCKER_MANIFEST).ok(), Some(Kind::Manifest));
        let err = k(DOCKER_SCHEMA1_SIGNED).expect_err("schema1");
        assert!(err.to_string().contains("schema 1"), "{err}");
        assert!(matches!(
            k("text/plain"),
            Err(Error::UnsupportedManifestType { .. })
        ));
    }

    #[test]
    fn predicates() {
        let m = MediaType::from;
        assert!(m(OCI_LAYER_GZIP).is_layer());
        assert!(m("application/vnd.oci.image.layer.v1.tar+gzip+encrypted").is_layer());
        assert!(m("application/vnd.docker.image.rootfs.diff.tar.gzip+encrypted").is_layer());
        assert!(m(EROFS_LAYER).is_layer());
        assert!(!m(OCI_CONFIG).is_layer());
        assert!(m(OCI_CONFIG).is_config() && m(DOCKER_CONFIG).is_config());
        assert!(m(CHECKPOINT_CONFIG).is_config() && !m(CHECKPOINT_CONFIG).is_image_config());
        assert!(m(DOCKER_LAYER_FOREIGN_GZIP).is_nondistributable());
        assert!(m(OCI_LAYER_NONDIST_ZSTD).is_nondistributable());
        assert!(!m(OCI_LAYER).is_nondistributable());
        assert!(m(OCI_INDEX).is_manifest_or_index() && !m(OCI_INDEX).is_manifest());
    }
}
