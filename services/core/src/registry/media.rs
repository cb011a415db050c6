//! Media types and the JSON shapes of manifests, indexes and image configs (only the fields
//! pull and push need), plus platform matching.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::images::Descriptor;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const OCI_LAYER_NONDIST: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
pub const DOCKER_LAYER_FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar";
pub const DOCKER_LAYER_FOREIGN_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// containerd's checkpoint blobs, which count as configs.
const CHECKPOINT_CRIU: &str = "application/vnd.containerd.container.criu.checkpoint.criu.tar";
const CHECKPOINT_CONFIG: &str = "application/vnd.containerd.container.checkpoint.config.v1+proto";

/// The prefix of the garbage-collection labels by which content holds other content.
pub const GC_REF_CONTENT_PREFIX: &str = "containerd.io/gc.ref.content.";

/// Whether a media type is a layer, as containerd's `IsLayerType`: any OCI layer type, and
/// Docker's layer types with any `+` suffix stripped.
pub fn is_layer(media_type: &str) -> bool {
    if media_type.starts_with("application/vnd.oci.image.layer.") {
        return true;
    }
    let base = media_type.split('+').next().unwrap_or_default();
    matches!(
        base,
        DOCKER_LAYER
            | DOCKER_LAYER_GZIP
            | DOCKER_LAYER_ZSTD
            | DOCKER_LAYER_FOREIGN
            | DOCKER_LAYER_FOREIGN_GZIP
            | "application/vnd.erofs.layer.v1"
    )
}

/// Whether a media type is an image config, as containerd's `IsKnownConfig` (checkpoint
/// configs included).
pub fn is_known_config(media_type: &str) -> bool {
    matches!(
        media_type,
        DOCKER_CONFIG | OCI_CONFIG | CHECKPOINT_CRIU | CHECKPOINT_CONFIG
    )
}

/// How a layer of `media_type` is compressed, as containerd's `DiffCompression` (and
/// Docker's zstd layer type): OCI layers by their `+gzip`/`+zstd` suffix, Docker's gzip
/// types as gzip, Docker's plain types by sniffing (they are often compressed anyway).
/// `None` for wrapped types (`+encrypted`) and anything that is not a layer. The one rule
/// for unpack, Diff.Apply and import.
pub fn layer_compression(media_type: &str) -> Option<berth_snapshotter::Compression> {
    use berth_snapshotter::Compression;
    let mut parts = media_type.split('+');
    let base = parts.next().unwrap_or_default();
    let mut ext: Vec<&str> = parts.collect();
    ext.sort_unstable();
    match base {
        DOCKER_LAYER | DOCKER_LAYER_FOREIGN if ext.is_empty() => Some(Compression::Auto),
        DOCKER_LAYER_GZIP | DOCKER_LAYER_FOREIGN_GZIP if ext.is_empty() => Some(Compression::Gzip),
        DOCKER_LAYER_ZSTD if ext.is_empty() => Some(Compression::Zstd),
        OCI_LAYER | OCI_LAYER_NONDIST => match ext.as_slice() {
            [] => Some(Compression::Uncompressed),
            ["gzip"] => Some(Compression::Gzip),
            ["zstd"] => Some(Compression::Zstd),
            _ => None,
        },
        _ => None,
    }
}

/// The labels that make an index or manifest hold its children for garbage collection,
/// as containerd's `ChildGCLabels` + `SetChildrenMappedLabels` name them: `config` for a
/// config, `m.<i>` for manifests, `l.<i>` for layers, `<i>` for anything else, numbered per
/// key (the config's key is unnumbered while it is the only one). The one rule for every
/// way an image arrives (pull, import), so the same image gets the same labels.
pub fn child_gc_labels<'a>(
    children: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> BTreeMap<String, String> {
    let mut counters: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (media_type, digest) in children {
        let key = if is_known_config(media_type) {
            "config"
        } else if matches!(media_type, OCI_MANIFEST | DOCKER_MANIFEST) {
            "m."
        } else if is_layer(media_type) {
            "l."
        } else {
            ""
        };
        let n = counters.entry(key).or_insert(0);
        let name = if key.is_empty() || key.ends_with('.') || *n > 0 {
            format!("{GC_REF_CONTENT_PREFIX}{key}{n}")
        } else {
            format!("{GC_REF_CONTENT_PREFIX}{key}")
        };
        *n += 1;
        out.insert(name, digest.to_string());
    }
    out
}

/// The Accept header for manifest requests: indexes and manifests, OCI and Docker schema 2.
pub const MANIFEST_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, */*";

/// The largest manifest or index accepted, as containerd's limit.
pub const MAX_MANIFEST_SIZE: i64 = 4 << 20;

/// Whether a media type is an image manifest or index (OCI or Docker schema 2).
pub fn is_manifest_type(media_type: &str) -> bool {
    matches!(
        media_type,
        OCI_INDEX | DOCKER_LIST | OCI_MANIFEST | DOCKER_MANIFEST
    )
}

/// Whether a media type is Docker's image manifest schema 1 (not supported).
pub fn is_schema1(media_type: &str) -> bool {
    matches!(media_type, DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED)
}

/// What a manifest-ish document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Index,
    Manifest,
}

/// Classifies a media type; schema 1 and anything unknown are rejected with a clear error.
pub fn kind(media_type: &str) -> Result<Kind> {
    match media_type {
        OCI_INDEX | DOCKER_LIST => Ok(Kind::Index),
        OCI_MANIFEST | DOCKER_MANIFEST => Ok(Kind::Manifest),
        DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED => Err(Error::precondition(format!(
            "media type {media_type:?} (Docker image manifest schema 1) is not supported; \
             rebuild the image as {DOCKER_MANIFEST:?} or {OCI_MANIFEST:?}"
        ))),
        other => Err(Error::precondition(format!(
            "unsupported manifest media type {other:?}"
        ))),
    }
}

/// A descriptor as it appears in JSON.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct JsonDescriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl JsonDescriptor {
    pub fn to_descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            annotations: self.annotations.clone(),
        }
    }
}

/// An OCI platform.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// The fields of an index or manifest list that matter here.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    #[serde(default)]
    pub schema_version: i64,
    #[serde(default)]
    pub media_type: String,
    #[serde(default)]
    pub manifests: Vec<JsonDescriptor>,
}

/// The fields of an image manifest that matter here.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default)]
    pub schema_version: i64,
    #[serde(default)]
    pub media_type: String,
    pub config: JsonDescriptor,
    #[serde(default)]
    pub layers: Vec<JsonDescriptor>,
}

/// The platform fields of an image config.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConfigPlatform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: String,
}

pub fn parse_index(digest: &str, data: &[u8]) -> Result<Index> {
    serde_json::from_slice(data)
        .map_err(|e| Error::invalid(format!("index {digest} is not valid JSON: {e}")))
}

pub fn parse_manifest(digest: &str, data: &[u8]) -> Result<Manifest> {
    serde_json::from_slice(data)
        .map_err(|e| Error::invalid(format!("manifest {digest} is not valid JSON: {e}")))
}

/// The media type a document says it has (`mediaType`), to check it against the
/// descriptor's, and to detect schema 1 (`schemaVersion: 1`).
pub fn sniff(data: &[u8]) -> (Option<String>, Option<i64>) {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Head {
        media_type: Option<String>,
        schema_version: Option<i64>,
    }
    match serde_json::from_slice::<Head>(data) {
        Ok(h) => (h.media_type, h.schema_version),
        Err(_) => (None, None),
    }
}

/// Maps Rust's `std::env::consts::ARCH` to the OCI architecture (and default variant).
pub fn host_platform() -> Platform {
    let (architecture, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", ""),
        "x86" => ("386", ""),
        "aarch64" => ("arm64", ""),
        "arm" => ("arm", "v7"),
        "powerpc64" => ("ppc64le", ""),
        "s390x" => ("s390x", ""),
        "riscv64" => ("riscv64", ""),
        "loongarch64" => ("loong64", ""),
        "mips64" => ("mips64le", ""),
        other => (other, ""),
    };
    Platform {
        architecture: architecture.to_string(),
        os: std::env::consts::OS.to_string(),
        variant: variant.to_string(),
    }
}

/// Parses `os[/arch[/variant]]` (`linux/arm64`, `linux/arm/v7`); `arch` alone means linux.
pub fn parse_platform(s: &str) -> Result<Platform> {
    let bad = || {
        Error::invalid(format!(
            "{s:?}: unknown platform specifier, want os/arch[/variant]"
        ))
    };
    let parts: Vec<&str> = s.trim().split('/').collect();
    if parts.iter().any(|p| p.is_empty()) || parts.len() > 3 {
        return Err(bad());
    }
    let lower: Vec<String> = parts.iter().map(|p| p.to_ascii_lowercase()).collect();
    let p = match lower.as_slice() {
        [arch] => Platform {
            os: "linux".into(),
            architecture: arch.clone(),
            variant: String::new(),
        },
        [os, arch] => Platform {
            os: os.clone(),
            architecture: arch.clone(),
            variant: String::new(),
        },
        [os, arch, variant] => Platform {
            os: os.clone(),
            architecture: arch.clone(),
            variant: variant.clone(),
        },
        _ => return Err(bad()),
    };
    Ok(normalize(p))
}

/// Normalises architecture aliases and default variants the way containerd's `platforms`
/// package does.
pub fn normalize(mut p: Platform) -> Platform {
    p.os = p.os.to_ascii_lowercase();
    let arch = p.architecture.to_ascii_lowercase();
    let variant = p.variant.to_ascii_lowercase();
    let (arch, variant) = match arch.as_str() {
        "i386" => ("386".to_string(), String::new()),
        "x86_64" | "x86-64" | "amd64" => {
            let v = if variant == "v1" {
                String::new()
            } else {
                variant
            };
            ("amd64".to_string(), v)
        }
        "aarch64" | "arm64" => {
            let v = if variant == "8" || variant == "v8" {
                String::new()
            } else {
                variant
            };
            ("arm64".to_string(), v)
        }
        "armhf" => ("arm".to_string(), "v7".to_string()),
        "armel" => ("arm".to_string(), "v6".to_string()),
        "arm" => {
            let v = match variant.as_str() {
                "" | "7" => "v7".to_string(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            };
            ("arm".to_string(), v)
        }
        _ => (arch, variant),
    };
    p.architecture = arch;
    p.variant = variant;
    p
}

/// Whether an image built for `have` runs on the wanted platform, and how well: lower is
/// better (0 = exact). An unspecified wanted variant accepts any variant.
pub fn match_rank(want: &Platform, have: &Platform) -> Option<u32> {
    let have = normalize(have.clone());
    if want.os != have.os || want.architecture != have.architecture {
        return None;
    }
    if want.variant == have.variant {
        return Some(0);
    }
    if want.architecture == "arm" && !want.variant.is_empty() {
        // arm/v7 also runs v6 and v5 images, preferring the newest.
        let n = |v: &str| v.strip_prefix('v').and_then(|n| n.parse::<u32>().ok());
        return match (n(&want.variant), n(&have.variant)) {
            (Some(w), Some(h)) if h < w => Some(w - h),
            _ => None,
        };
    }
    if want.variant.is_empty() {
        return Some(1);
    }
    None
}

/// Whether `have` is the wanted platform itself rather than one that merely runs on it
/// (what archive import and export select by): arm/v7 does not take arm/v6 here, though an
/// unspecified wanted variant still accepts any variant.
pub fn matches_strict(want: &Platform, have: &Platform) -> bool {
    match_rank(want, have).is_some_and(|rank| rank == 0 || want.variant.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        parse_platform(s).expect("platform")
    }

    #[test]
    fn platforms_parse_and_normalize() {
        assert_eq!(p("linux/arm64").to_string(), "linux/arm64");
        assert_eq!(p("linux/aarch64/v8").to_string(), "linux/arm64");
        assert_eq!(p("linux/arm").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/arm/v6").to_string(), "linux/arm/v6");
        assert_eq!(p("amd64").to_string(), "linux/amd64");
        assert_eq!(p("Linux/X86_64").to_string(), "linux/amd64");
        assert!(parse_platform("linux//v7").is_err());
        assert!(parse_platform("a/b/c/d").is_err());
        assert!(parse_platform("").is_err());
        let host = host_platform();
        assert_eq!(host.os, std::env::consts::OS);
        assert!(!host.architecture.is_empty());
    }

    #[test]
    fn platform_matching() {
        let have = |s: &str| {
            let mut parts = s.split('/');
            Platform {
                os: parts.next().unwrap_or_default().into(),
                architecture: parts.next().unwrap_or_default().into(),
                variant: parts.next().unwrap_or_default().into(),
            }
        };
        assert_eq!(match_rank(&p("linux/amd64"), &have("linux/amd64")), Some(0));
        assert_eq!(match_rank(&p("linux/amd64"), &have("linux/arm64")), None);
        assert_eq!(
            match_rank(&p("linux/arm64"), &have("linux/arm64/v8")),
            Some(0)
        );
        assert_eq!(
            match_rank(&p("linux/arm/v7"), &have("linux/arm/v7")),
            Some(0)
        );
        assert_eq!(
            match_rank(&p("linux/arm/v7"), &have("linux/arm/v6")),
            Some(1)
        );
        assert_eq!(match_rank(&p("linux/arm/v6"), &have("linux/arm/v7")), None);
        assert_eq!(match_rank(&p("linux/amd64"), &have("windows/amd64")), None);
        assert_eq!(
            match_rank(&p("linux/amd64"), &have("linux/amd64/v3")),
            Some(1)
        );
        assert!(matches_strict(&p("linux/arm/v7"), &have("linux/arm/v7")));
        assert!(!matches_strict(&p("linux/arm/v7"), &have("linux/arm/v6")));
        assert!(matches_strict(&p("linux/amd64"), &have("linux/amd64/v3")));
        assert!(!matches_strict(&p("linux/amd64"), &have("linux/arm64")));
    }

    #[test]
    fn kinds() {
        assert_eq!(kind(OCI_INDEX).ok(), Some(Kind::Index));
        assert_eq!(kind(DOCKER_LIST).ok(), Some(Kind::Index));
        assert_eq!(kind(OCI_MANIFEST).ok(), Some(Kind::Manifest));
        assert_eq!(kind(DOCKER_MANIFEST).ok(), Some(Kind::Manifest));
        let err = kind(DOCKER_SCHEMA1_SIGNED).expect_err("schema1");
        assert!(err.to_string().contains("schema 1"), "{err}");
        assert!(matches!(
            kind("text/plain"),
            Err(Error::FailedPrecondition(_))
        ));
    }
}
