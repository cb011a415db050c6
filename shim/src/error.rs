//! The shim's one error type and its mapping to ttrpc status codes.

use containerd_shim_protos::ttrpc::{self, Code};

/// Everything that can go wrong in the shim.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{0}: already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidArgument(String),
    /// A process was asked to do something its state does not allow.
    #[error("cannot {op} {what} in state {state}")]
    FailedPrecondition {
        op: &'static str,
        what: String,
        state: &'static str,
    },
    #[error("{0}")]
    Unimplemented(String),
    /// The OCI runtime CLI failed; `message` carries its stderr / `--log` error lines.
    #[error("{binary} {command} {id}: {message}")]
    Runtime {
        binary: String,
        command: String,
        id: String,
        message: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Os {
        context: String,
        #[source]
        source: nix::Error,
    },
    #[error("mount rootfs of {id}: {source}")]
    Mount {
        id: String,
        #[source]
        source: berth_snapshotter::SnapshotterError,
    },
    #[error("{0}")]
    Protobuf(String),
}

pub type Result<T> = std::result::Result<T, ShimError>;

impl ShimError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ShimError {
        let context = context.into();
        move |source| ShimError::Io { context, source }
    }

    pub fn os(context: impl Into<String>) -> impl FnOnce(nix::Error) -> ShimError {
        let context = context.into();
        move |source| ShimError::Os { context, source }
    }

    /// The ttrpc code containerd's clients branch on.
    pub fn code(&self) -> Code {
        match self {
            ShimError::NotFound(_) => Code::NOT_FOUND,
            ShimError::AlreadyExists(_) => Code::ALREADY_EXISTS,
            ShimError::InvalidArgument(_) | ShimError::Protobuf(_) => Code::INVALID_ARGUMENT,
            ShimError::FailedPrecondition { .. } => Code::FAILED_PRECONDITION,
            ShimError::Unimplemented(_) => Code::UNIMPLEMENTED,
            ShimError::Runtime { message, .. } if is_not_exist(message) => Code::NOT_FOUND,
            ShimError::Runtime { .. }
            | ShimError::Io { .. }
            | ShimError::Os { .. }
            | ShimError::Mount { .. } => Code::UNKNOWN,
        }
    }
}

/// runc's wording for a container it does not know.
pub fn is_not_exist(message: &str) -> bool {
    message.contains("does not exist") || message.contains("container not found")
}

impl From<ShimError> for ttrpc::Error {
    fn from(e: ShimError) -> ttrpc::Error {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

impl From<containerd_shim_protos::protobuf::Error> for ShimError {
    fn from(e: containerd_shim_protos::protobuf::Error) -> ShimError {
        ShimError::Protobuf(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(ShimError::NotFound("x".into()).code(), Code::NOT_FOUND);
        let e = ShimError::FailedPrecondition {
            op: "start",
            what: "process c1".into(),
            state: "running",
        };
        assert_eq!(e.code(), Code::FAILED_PRECONDITION);
        assert_eq!(e.to_string(), "cannot start process c1 in state running");
        let r = ShimError::Runtime {
            binary: "runc".into(),
            command: "kill".into(),
            id: "c1".into(),
            message: "container does not exist".into(),
        };
        assert_eq!(r.code(), Code::NOT_FOUND);
    }
}
