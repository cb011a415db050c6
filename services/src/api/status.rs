//! The one place where core errors become gRPC statuses (and, for the ttrpc services,
//! ttrpc statuses): a core error's class picks the code, its text is the message.

use tonic::{Code, Status};

use crate::error::{Class, Error};

/// The gRPC code of a core error class.
fn code(class: Class) -> Code {
    match class {
        Class::NotFound => Code::NotFound,
        Class::AlreadyExists => Code::AlreadyExists,
        Class::InvalidArgument => Code::InvalidArgument,
        Class::FailedPrecondition => Code::FailedPrecondition,
        Class::Unavailable => Code::Unavailable,
        Class::Unimplemented => Code::Unimplemented,
        Class::OutOfRange => Code::OutOfRange,
        Class::ResourceExhausted => Code::ResourceExhausted,
        Class::Cancelled => Code::Cancelled,
        Class::DeadlineExceeded => Code::DeadlineExceeded,
        Class::Internal => Code::Internal,
    }
}

/// `err` as the gRPC status containerd would return for it.
pub fn status(err: Error) -> Status {
    let code = code(err.class());
    if code == Code::Internal {
        tracing::error!(error = %err, "internal error");
    }
    Status::new(code, capped(err.to_string()))
}

/// `err` as a ttrpc status (the events ttrpc service).
pub fn ttrpc_status(err: Error) -> berth_proto::ttrpc::ttrpc::Error {
    use berth_proto::ttrpc::ttrpc::Code as T;
    let code = match err.class() {
        Class::NotFound => T::NOT_FOUND,
        Class::AlreadyExists => T::ALREADY_EXISTS,
        Class::InvalidArgument => T::INVALID_ARGUMENT,
        Class::FailedPrecondition => T::FAILED_PRECONDITION,
        Class::Unavailable => T::UNAVAILABLE,
        Class::Unimplemented => T::UNIMPLEMENTED,
        _ => T::INTERNAL,
    };
    let status = status(err);
    berth_proto::ttrpc::ttrpc::Error::RpcStatus(berth_proto::ttrpc::ttrpc::get_status(
        code,
        status.message(),
    ))
}

/// `?` on a core result inside a handler: `core_call().or_status()?`.
pub trait OrStatus<T> {
    fn or_status(self) -> Result<T, Status>;
}

impl<T> OrStatus<T> for Result<T, Error> {
    fn or_status(self) -> Result<T, Status> {
        self.map_err(status)
    }
}

/// A core error as a status where a value is wanted: `Err(Error::invalid(..).into_status())`.
pub trait IntoStatus {
    fn into_status(self) -> Status;
}

impl IntoStatus for Error {
    fn into_status(self) -> Status {
        status(self)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_capped() {
        let long = status(Error::invalid(format!("bad option {}", "é".repeat(60_000))));
        assert_eq!(long.code(), Code::InvalidArgument);
        assert!(long.message().len() < MAX_STATUS_MESSAGE + 64);
        assert!(long.message().starts_with("bad option é"));
        assert!(long.message().ends_with("more bytes not shown)"));
        let short = status(Error::invalid("short"));
        assert_eq!(short.message(), Error::invalid("short").to_string());
    }

    #[test]
    fn classes_map_to_codes() {
        assert_eq!(status(Error::not_found("x")).code(), Code::NotFound);
        assert_eq!(
            status(Error::precondition("x")).code(),
            Code::FailedPrecondition
        );
        let full = Error::io(
            "write",
            "/x",
            std::io::Error::from_raw_os_error(nix::libc::ENOSPC),
        );
        assert_eq!(status(full).code(), Code::ResourceExhausted);
    }
}
