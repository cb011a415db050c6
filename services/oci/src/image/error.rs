//! What can be wrong with an image document or a platform string.

use super::media::{DOCKER_MANIFEST, OCI_MANIFEST};

/// A document or a name that the image format does not accept. Which class a caller
/// reports is said per variant: a caller maps it in one place (berth-core's `Error`).
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// An index or manifest that does not parse (the caller's input: invalid argument).
    #[error("{what} {digest} is not valid JSON: {source}")]
    InvalidJson {
        what: &'static str,
        digest: String,
        #[source]
        source: serde_json::Error,
    },
    /// Docker's image manifest schema 1 (a precondition the image does not meet).
    #[error(
        "media type {media_type:?} (Docker image manifest schema 1) is not supported; \
         rebuild the image as {DOCKER_MANIFEST:?} or {OCI_MANIFEST:?}"
    )]
    Schema1 { media_type: String },
    /// A media type that is neither a manifest nor an index, where one was needed (a
    /// precondition the content does not meet).
    #[error("unsupported manifest media type {media_type:?}")]
    UnsupportedManifestType { media_type: String },
    /// A platform that is not `os/arch[/variant]` (invalid argument).
    #[error("{spec:?}: unknown platform specifier, want os/arch[/variant]")]
    InvalidPlatform { spec: String },
}
