//! Wire bindings for berth.
//!
//! - `containerd::*` and `runtime::v1`: prost messages with tonic servers and clients,
//!   generated at build time from our own `.proto` files in `protos/` (same packages, names
//!   and field numbers as containerd's v1 API and Kubernetes' CRI).
//! - [`ttrpc`]: the shim's `containerd.task.v2.Task` and the events `Forward` service over
//!   ttrpc, from `containerd-shim-protos` (rust-protobuf messages, kept apart from prost).
//! - [`descriptors`]: a reflection pool over every message we compiled, used to decode an
//!   `Any` whose type is only known at run time (event payloads, for filters and for display).

#![allow(clippy::all, clippy::unwrap_used, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/_includes.rs"));

/// ttrpc bindings for the shim v2 task API and the events forwarding service.
pub mod ttrpc {
    pub use containerd_shim_protos::*;
}

pub mod descriptors;
