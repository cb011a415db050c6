//! The crate's one error type.

use std::io;
use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = SnapshotterError> = std::result::Result<T, E>;

/// Everything that can go wrong in a snapshotter or applying or producing a layer.
///
/// The first variants are the classes containerd clients branch on; their `Display` appends
/// containerd's suffix (": not found"), as `errdefs` does, so `ctr` prints the same text.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotterError {
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{0}: already exists")]
    AlreadyExists(String),
    #[error("{0}: invalid argument")]
    InvalidArgument(String),
    #[error("{0}: failed precondition")]
    FailedPrecondition(String),
    #[error("{0}: not implemented")]
    NotImplemented(String),
    /// The metadata database failed.
    #[error("snapshot metadata: {context}: {message}")]
    Database { context: String, message: String },
    /// A stored snapshot record could not be decoded.
    #[error("corrupt snapshot record {key:?}: {message}")]
    Corrupt { key: String, message: String },
    /// A mount or unmount failed.
    #[error("{op} {target}: {message}")]
    Mount {
        op: &'static str,
        target: String,
        message: String,
    },
    /// The compressed stream could not be decoded.
    #[error("decompressing {compression} layer stream: {source}")]
    Decompress {
        compression: &'static str,
        #[source]
        source: io::Error,
    },
    /// The layer uses a compression this build cannot decode.
    #[error("layer compression {0} is not implemented")]
    CompressionNotImplemented(&'static str),
    /// The tar stream itself is malformed (bad header, truncated entry...).
    #[error("reading layer tar{}: {source}", entry_suffix(.entry))]
    Tar {
        entry: Option<String>,
        #[source]
        source: io::Error,
    },
    /// An entry's name, link target or a symlink on its way would leave the target dir.
    #[error("layer entry {entry:?} escapes the target directory: {reason}")]
    PathEscape { entry: String, reason: String },
    /// An entry the applier refuses for another reason (bad name, unsupported type...).
    #[error("layer entry {entry:?}: {reason}")]
    InvalidEntry { entry: String, reason: String },
    /// The caller gave the work up (its client went away).
    #[error("{0}: cancelled")]
    Cancelled(String),
    /// A filesystem operation on `path` failed.
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Writing the produced layer tar failed.
    #[error("writing layer tar at {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn entry_suffix(entry: &Option<String>) -> String {
    match entry {
        Some(e) => format!(" entry {e:?}"),
        None => String::new(),
    }
}

impl SnapshotterError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn nix(
        op: &'static str,
        path: impl Into<PathBuf>,
        errno: nix::errno::Errno,
    ) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source: io::Error::from(errno),
        }
    }
}
