//! berthd's core and its gRPC services.
pub mod error;
