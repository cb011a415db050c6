//! The daemon's error type and its one mapping to gRPC status codes.
//!
//! Variants follow the classes containerd clients branch on. Each carries a message that
//! names the object ("container \"web\" in namespace \"default\""); the class suffix
//! (": not found") is appended by `Display`, exactly as containerd's `errdefs` does, so the
//! real `ctr` prints the same text for both daemons.

use std::path::PathBuf;

/// Everything that can go wrong in berthd's core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{0}: already exists")]
    AlreadyExists(String),
    #[error("{0}: invalid argument")]
    InvalidArgument(String),
    #[error("{0}: failed precondition")]
    FailedPrecondition(String),
    #[error("{0}: unavailable")]
    Unavailable(String),
    #[error("{0}: not implemented")]
    NotImplemented(String),
    /// A write at the wrong offset (gRPC OutOfRange, as containerd's content service).
    #[error("{0}")]
    OutOfRange(String),
    /// The metadata database failed (I/O, corruption, a transaction that could not commit).
    #[error("metadata database: {context}: {message}")]
    Database { context: String, message: String },
    /// A file or directory operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A stored record could not be decoded.
    #[error("corrupt {what} record {key:?} in the metadata database: {message}")]
    Corrupt {
        what: &'static str,
        key: String,
        message: String,
    },
    /// Work spawned onto a blocking thread did not finish.
    #[error("internal: {0}")]
    Internal(String),
    /// A snapshotter or the layer applier failed; its own variant gives the class.
    #[error(transparent)]
    Snapshotter(#[from] berth_snapshotter::SnapshotterError),
    /// Applying one layer of an image failed (bad tar, path escape, corrupt stream...); the
    /// source's variant gives the class.
    #[error("unpacking layer {layer}: {source}")]
    Layer {
        layer: String,
        #[source]
        source: berth_snapshotter::SnapshotterError,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn not_found(msg: impl Into<String>) -> Self {
        Error::NotFound(msg.into())
    }
    pub fn already_exists(msg: impl Into<String>) -> Self {
        Error::AlreadyExists(msg.into())
    }
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }
    pub fn precondition(msg: impl Into<String>) -> Self {
        Error::FailedPrecondition(msg.into())
    }
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
    pub fn db(context: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Error::Database {
            context: context.into(),
            message: err.to_string(),
        }
    }

    /// Prefixes the message with more context while keeping the class:
    /// `container.ID` + `identifier "x" must match ...` → `container.ID: identifier ...`.
    pub fn context(self, prefix: &str) -> Self {
        match self {
            Error::NotFound(m) => Error::NotFound(format!("{prefix}: {m}")),
            Error::AlreadyExists(m) => Error::AlreadyExists(format!("{prefix}: {m}")),
            Error::InvalidArgument(m) => Error::InvalidArgument(format!("{prefix}: {m}")),
            Error::FailedPrecondition(m) => Error::FailedPrecondition(format!("{prefix}: {m}")),
            Error::Unavailable(m) => Error::Unavailable(format!("{prefix}: {m}")),
            Error::NotImplemented(m) => Error::NotImplemented(format!("{prefix}: {m}")),
            other => other,
        }
    }

    /// Whether this says the disk (or the quota) is full.
    pub fn is_no_space(&self) -> bool {
        match self {
            Error::Io { source, .. } => is_no_space(source),
            Error::Database { message, .. } => says_no_space(message),
            Error::Snapshotter(e) | Error::Layer { source: e, .. } => {
                snapshotter_code(e) == tonic::Code::ResourceExhausted
            }
            _ => false,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::NotFound(_)
                | Error::Snapshotter(berth_snapshotter::SnapshotterError::NotFound(_))
        )
    }

    pub fn is_already_exists(&self) -> bool {
        matches!(
            self,
            Error::AlreadyExists(_)
                | Error::Snapshotter(berth_snapshotter::SnapshotterError::AlreadyExists(_))
        )
    }
}

/// Whether an I/O error says the disk (or the quota) is full.
fn is_no_space(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(
            e.raw_os_error(),
            Some(nix::libc::ENOSPC) | Some(nix::libc::EDQUOT)
        )
}

/// Whether a database error's text says the disk is full (redb keeps only the text).
fn says_no_space(message: &str) -> bool {
    message.contains("No space left on device") || message.contains("Disk quota exceeded")
}

/// The class of a snapshotter error: bad layers are the caller's input; a full disk is
/// ResourceExhausted, whatever step found it.
fn snapshotter_code(e: &berth_snapshotter::SnapshotterError) -> tonic::Code {
    use berth_snapshotter::SnapshotterError as S;
    use tonic::Code;
    let no_space = match e {
        S::Io { source, .. }
        | S::Write { source, .. }
        | S::Tar { source, .. }
        | S::Decompress { source, .. } => is_no_space(source),
        S::Database { message, .. } => says_no_space(message),
        _ => false,
    };
    if no_space {
        return Code::ResourceExhausted;
    }
    match e {
        S::NotFound(_) => Code::NotFound,
        S::AlreadyExists(_) => Code::AlreadyExists,
        S::InvalidArgument(_)
        | S::PathEscape { .. }
        | S::InvalidEntry { .. }
        | S::Decompress { .. }
        | S::Tar { .. } => Code::InvalidArgument,
        S::FailedPrecondition(_) => Code::FailedPrecondition,
        S::Cancelled(_) => Code::Cancelled,
        S::NotImplemented(_) | S::CompressionNotImplemented(_) => Code::Unimplemented,
        S::Database { .. }
        | S::Corrupt { .. }
        | S::Mount { .. }
        | S::Io { .. }
        | S::Write { .. } => Code::Internal,
    }
}

/// The one place where berthd errors become gRPC statuses.
impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        use tonic::Code;
        let code = match &err {
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Unavailable(_) => Code::Unavailable,
            Error::NotImplemented(_) => Code::Unimplemented,
            Error::OutOfRange(_) => Code::OutOfRange,
            Error::Io { source, .. } if is_no_space(source) => Code::ResourceExhausted,
            Error::Database { message, .. } if says_no_space(message) => Code::ResourceExhausted,
            Error::Database { .. }
            | Error::Io { .. }
            | Error::Corrupt { .. }
            | Error::Internal(_) => Code::Internal,
            Error::Snapshotter(e) | Error::Layer { source: e, .. } => snapshotter_code(e),
        };
        if code == Code::Internal {
            tracing::error!(error = %err, "internal error");
        }
        tonic::Status::new(code, capped(err.to_string()))
    }
}

/// Longest status message sent: a message echoes the client's input (a name, a mount
/// option, a label), and one over the HTTP/2 header limit (16 KB) would reach the client
/// as RESOURCE_EXHAUSTED instead of the error.
const MAX_STATUS_MESSAGE: usize = 4096;

/// `message`, cut to [`MAX_STATUS_MESSAGE`] bytes (on a character boundary) with a note of
/// how much was left out.
fn capped(message: String) -> String {
    if message.len() <= MAX_STATUS_MESSAGE {
        return message;
    }
    let mut end = MAX_STATUS_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… ({} more bytes not shown)",
        &message[..end],
        message.len() - end
    )
}

impl Error {
    /// The one place where berthd errors become ttrpc statuses (for the ttrpc services).
    pub fn into_ttrpc(self) -> berth_proto::ttrpc::ttrpc::Error {
        use berth_proto::ttrpc::ttrpc::Code;
        let status = tonic::Status::from(self);
        let code = match status.code() {
            tonic::Code::NotFound => Code::NOT_FOUND,
            tonic::Code::AlreadyExists => Code::ALREADY_EXISTS,
            tonic::Code::InvalidArgument => Code::INVALID_ARGUMENT,
            tonic::Code::FailedPrecondition => Code::FAILED_PRECONDITION,
            tonic::Code::Unavailable => Code::UNAVAILABLE,
            tonic::Code::Unimplemented => Code::UNIMPLEMENTED,
            _ => Code::INTERNAL,
        };
        berth_proto::ttrpc::ttrpc::Error::RpcStatus(berth_proto::ttrpc::ttrpc::get_status(
            code,
            status.message(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_capped() {
        let status =
            tonic::Status::from(Error::invalid(format!("bad option {}", "é".repeat(60_000))));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().len() < MAX_STATUS_MESSAGE + 64);
        assert!(status.message().starts_with("bad option é"));
        assert!(status.message().ends_with("more bytes not shown)"));
        let short = tonic::Status::from(Error::invalid("short"));
        assert_eq!(short.message(), Error::invalid("short").to_string());
    }
}
