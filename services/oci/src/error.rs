//! berth-oci's one error type: what an image document, a platform string, the credential
//! file or a runtime spec can get wrong.

use std::path::PathBuf;

use oci_spec::OciSpecError;

use crate::image::{DOCKER_MANIFEST, OCI_MANIFEST};

/// Which class a caller reports is said per variant: a caller maps it in one place
/// (berth-core's `From<berth_oci::Error>`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The image format.
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

    // The credential file. The texts follow the daemon's error classes
    // (`...: invalid argument`), as `berth login` has always printed them.
    /// The file is not JSON, or not shaped like a `config.json` (invalid argument).
    #[error("credentials file {}: {message}: invalid argument", path.display())]
    MalformedCredentials { path: PathBuf, message: String },
    /// A host or user name the file cannot hold (invalid argument).
    #[error("{0}: invalid argument")]
    InvalidCredentials(String),
    /// Reading or writing a file or directory failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The credential document could not be encoded (serde_json's message; internal).
    #[error("internal: encode credentials: {0}")]
    EncodeCredentials(String),

    // The runtime spec: each names what the caller gave.
    #[error("No command specified")]
    NoCommand,
    #[error("unknown capability: {0:?}")]
    UnknownCapability(String),
    #[error("unknown rlimit type: {0:?}")]
    UnknownRlimit(String),
    /// `oci_spec`'s builder refused a part of the spec.
    #[error("invalid runtime spec {part}")]
    InvalidSpec {
        part: &'static str,
        #[source]
        source: OciSpecError,
    },
    /// The spec could not be encoded as JSON (internal).
    #[error("encode the runtime spec as JSON")]
    EncodeSpec(#[source] serde_json::Error),
}
