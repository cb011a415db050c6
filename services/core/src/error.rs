//! The core's error type and its classes (front doors map a class to their status codes).
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
    /// A deadline the caller gave passed (an ExecSync's timeout).
    #[error("{0}: deadline exceeded")]
    DeadlineExceeded(String),
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
    /// A CNI plugin failed (or could not be run) for a network of a container.
    #[error("CNI plugin {plugin} {command} for network {network:?} of {container}: {message}")]
    Cni {
        plugin: String,
        command: &'static str,
        network: String,
        container: String,
        message: String,
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
                snapshotter_class(e) == Class::ResourceExhausted
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

/// berth-oci's errors: the image format's and the runtime spec's keep their message and
/// take the class their variant names; the credential file's keep their text (without its
/// class suffix) and take the class it names.
impl From<berth_oci::Error> for Error {
    fn from(e: berth_oci::Error) -> Self {
        use berth_oci::Error as O;
        let message = e.to_string();
        match e {
            O::InvalidJson { .. } | O::InvalidPlatform { .. } => Error::InvalidArgument(message),
            O::Schema1 { .. } | O::UnsupportedManifestType { .. } => {
                Error::FailedPrecondition(message)
            }
            O::MalformedCredentials { path, message } => {
                Error::InvalidArgument(format!("credentials file {}: {message}", path.display()))
            }
            O::InvalidCredentials(message) => Error::InvalidArgument(message),
            O::Io { op, path, source } => Error::Io { op, path, source },
            O::EncodeCredentials(message) => {
                Error::Internal(format!("encode credentials: {message}"))
            }
            O::NoCommand
            | O::UnknownCapability(_)
            | O::UnknownRlimit(_)
            | O::InvalidSpec { .. } => Error::InvalidArgument(message),
            O::EncodeSpec(_) => Error::Internal(message),
        }
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

/// The class of an error: what a client branches on. Front doors map it to their own status
/// codes (gRPC, ttrpc) in one place each; the core never sees a transport type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    NotFound,
    AlreadyExists,
    InvalidArgument,
    FailedPrecondition,
    Unavailable,
    Unimplemented,
    OutOfRange,
    ResourceExhausted,
    Cancelled,
    DeadlineExceeded,
    Internal,
}

/// The class of a snapshotter error: bad layers are the caller's input; a full disk is
/// ResourceExhausted, whatever step found it.
fn snapshotter_class(e: &berth_snapshotter::SnapshotterError) -> Class {
    use berth_snapshotter::SnapshotterError as S;
    let no_space = match e {
        S::Io { source, .. }
        | S::Write { source, .. }
        | S::Tar { source, .. }
        | S::Decompress { source, .. } => is_no_space(source),
        S::Database { message, .. } => says_no_space(message),
        _ => false,
    };
    if no_space {
        return Class::ResourceExhausted;
    }
    match e {
        S::NotFound(_) => Class::NotFound,
        S::AlreadyExists(_) => Class::AlreadyExists,
        S::InvalidArgument(_)
        | S::PathEscape { .. }
        | S::InvalidEntry { .. }
        | S::Decompress { .. }
        | S::Tar { .. } => Class::InvalidArgument,
        S::FailedPrecondition(_) => Class::FailedPrecondition,
        S::Cancelled(_) => Class::Cancelled,
        S::NotImplemented(_) | S::CompressionNotImplemented(_) => Class::Unimplemented,
        S::Database { .. }
        | S::Corrupt { .. }
        | S::Mount { .. }
        | S::Io { .. }
        | S::Write { .. } => Class::Internal,
    }
}

impl Error {
    /// The class of this error (the one rule; front doors map classes to codes).
    pub fn class(&self) -> Class {
        match self {
            Error::NotFound(_) => Class::NotFound,
            Error::AlreadyExists(_) => Class::AlreadyExists,
            Error::InvalidArgument(_) => Class::InvalidArgument,
            Error::FailedPrecondition(_) => Class::FailedPrecondition,
            Error::Unavailable(_) => Class::Unavailable,
            Error::NotImplemented(_) => Class::Unimplemented,
            Error::OutOfRange(_) => Class::OutOfRange,
            Error::DeadlineExceeded(_) => Class::DeadlineExceeded,
            Error::Io { source, .. } if is_no_space(source) => Class::ResourceExhausted,
            Error::Database { message, .. } if says_no_space(message) => Class::ResourceExhausted,
            Error::Database { .. }
            | Error::Io { .. }
            | Error::Corrupt { .. }
            | Error::Internal(_)
            | Error::Cni { .. } => Class::Internal,
            Error::Snapshotter(e) | Error::Layer { source: e, .. } => snapshotter_class(e),
        }
    }
}
