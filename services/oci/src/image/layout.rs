//! The OCI image layout (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`) as image archives
//! use it, and the annotations that name the images of an `index.json`.

use serde::{Deserialize, Serialize};

/// The layout marker file.
pub const LAYOUT_FILE: &str = "oci-layout";
/// The layout's index of images.
pub const INDEX_FILE: &str = "index.json";
/// The layout version berth writes and reads.
pub const LAYOUT_VERSION: &str = "1.0.0";

/// The annotation containerd puts the full image name in.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// The OCI annotation for an image's reference name (by convention only its tag).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The `oci-layout` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciLayout {
    #[serde(rename = "imageLayoutVersion", default)]
    pub version: String,
}

impl Default for OciLayout {
    fn default() -> Self {
        OciLayout {
            version: LAYOUT_VERSION.into(),
        }
    }
}

/// Where a blob lives in a layout: `blobs/<alg>/<hex>`. `None` for a string that is not
/// `<alg>:<hex>`.
pub fn blob_path(digest: &str) -> Option<String> {
    let (alg, hex) = digest.split_once(':')?;
    Some(format!("blobs/{alg}/{hex}"))
}

/// The digest (`<alg>:<hex>`) a `blobs/<alg>/<hex>` path stands for, unchecked.
pub fn blob_path_digest(path: &str) -> Option<String> {
    let rest = path.strip_prefix("blobs/")?;
    let (alg, hex) = rest.split_once('/')?;
    Some(format!("{alg}:{hex}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_paths() {
        let json = serde_json::to_string(&OciLayout::default()).expect("json");
        assert_eq!(json, r#"{"imageLayoutVersion":"1.0.0"}"#);
        assert_eq!(blob_path("sha256:ab").as_deref(), Some("blobs/sha256/ab"));
        assert_eq!(blob_path("ab"), None);
        assert_eq!(
            blob_path_digest("blobs/sha256/ab").as_deref(),
            Some("sha256:ab")
        );
        assert_eq!(blob_path_digest("blobs/sha256"), None);
        assert_eq!(blob_path_digest("other/sha256/ab"), None);
    }
}
