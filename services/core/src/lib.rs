//! berthd's core: one module per domain, each owning its rules — it validates, writes its
//! own tables, holds leases, schedules garbage collection and publishes typed events.
//!
//! Front doors (the containerd gRPC adapters in `berth-services`, the CRI and berth's own
//! API next) convert a request, call one method here and convert the answer back. This
//! crate has no transport types: it does not depend on tonic, and the build keeps it so.
//! See `docs/ARCHITECTURE.md` for the layers and which may import which.

pub mod archive;
pub mod autoremove;
pub mod blobs;
pub mod collector;
pub mod config;
pub mod containers;
pub mod content;
pub mod cri;
pub mod diff;
pub mod digest;
pub mod error;
pub mod events;
pub mod filters;
pub mod gc;
pub mod identifiers;
pub mod images;
pub mod labels;
pub mod leases;
pub mod memory;
pub mod metadata;
pub mod namespaces;
pub mod network;
pub mod pull;
pub mod push;
pub mod registry;
pub mod runtime;
pub mod snapshots;
pub mod staged;
pub mod streams;
pub mod supervisor;
pub mod tasks;
pub mod transfer;
pub mod types;
pub mod unpack;
pub mod volumes;
