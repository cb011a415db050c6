//! One module per command group.
pub mod compose;
pub mod containers;
pub mod content;
pub mod docker;
pub mod events;
pub mod images;
pub mod leases;
pub mod namespaces;
pub mod network;
pub mod plugins;
pub mod registry;
pub mod snapshots;
pub mod system;
pub mod tasks;
pub mod version;
pub mod volumes;
