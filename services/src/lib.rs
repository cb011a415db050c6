//! berthd: the core (metadata, namespaces, containers, leases, events) and the gRPC/ttrpc
//! services that expose it. The binary in `main.rs` only parses flags and sets up logging.

pub mod api;
pub mod archive;
pub mod authority;
pub mod autoremove;
pub mod config;
pub mod containers;
pub mod content;
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
pub mod plugins;
pub mod pull;
pub mod push;
pub mod registry;
pub mod runtime;
pub mod server;
pub mod snapshots;
pub mod streams;
pub mod tasks;
pub mod types;
pub mod unpack;
