//! berthd's front doors: the containerd v1 gRPC and ttrpc adapters (`api`), the server that
//! mounts them on one socket (`server`), and the plugin list Introspection reports. The
//! domains and their rules live in `berth-core`; its modules are re-exported here under
//! their own names so that `crate::content`, `crate::tasks`… read the same in both crates.

pub use berth_core::{
    archive, autoremove, collector, config, containers, content, cri, diff, digest, error, events,
    filters, gc, identifiers, images, labels, leases, memory, metadata, namespaces, network, pull,
    push, registry, runtime, snapshots, staged, streams, supervisor, tasks, transfer, types,
    unpack, volumes,
};

pub mod api;
pub mod authority;
pub mod gate;
pub mod hpack;
pub mod plugins;
pub mod server;
