//! The formats berth's daemon (`berth-core`) and its clients (`berth` CLI) share, so that
//! each rule is written once: the OCI image format, the OCI runtime spec builder, label
//! names and the registry credential file. Pure data and rules: no daemon state, no I/O
//! beyond what a format needs, no transport.

pub mod credentials;
mod error;
pub mod image;
pub mod restart;
pub mod spec;

pub use error::Error;
