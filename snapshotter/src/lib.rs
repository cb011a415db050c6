//! Snapshotters (overlayfs, native), layer apply and diff.
//!
//! - [`apply`]: unpack one OCI/Docker layer tar (plain, gzip) onto a directory that becomes
//!   an overlayfs upper dir (whiteouts as 0/0 character devices, opaque dirs as
//!   `trusted.overlay.opaque=y`) or, in "native" mode, onto a full copy of the lower tree.
//! - [`diff`]: the reverse, an uncompressed OCI layer tar of the changes from a lower tree
//!   to an upper tree (an overlay upper dir or a full tree).
//!
//! - [`snapshots`]: the [`Snapshotter`] trait both snapshotters implement.
//! - [`store`]: the one implementation of it ([`store::Store`]), over a layout backend:
//!   [`overlay::Overlay`] and [`native::Native`]. [`open`] picks one by name.
//! - [`mount`]: mounting (and unmounting) what a snapshotter returns.
//!
//! Everything here is blocking; the daemon runs it on its blocking pool.

pub mod apply;
pub mod db;
pub mod diff;
pub mod error;
mod hashio;
pub mod metastore;
pub mod mount;
pub mod native;
pub mod overlay;
mod secure;
pub mod snapshots;
pub mod store;

pub use apply::{ApplyOptions, ApplyStats, Compression, apply_layer};
pub use db::SharedDb;
pub use diff::{DiffStats, diff};
pub use error::{Result, SnapshotterError};
pub use snapshots::{GC_ROOT_LABEL, Info, Kind, Mount, Snapshotter, Usage};

/// Prefix of a whiteout entry's base name in an OCI layer.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Base name of the entry that marks its directory opaque in an OCI layer.
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
/// The xattr overlayfs reads to treat an upper directory as opaque.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

#[cfg(test)]
mod layer_tests;

/// The snapshotters [`open`] knows, by name.
pub const SNAPSHOTTERS: &[&str] = &["overlayfs", "native"];

/// Opens the snapshotter called `name` ("overlayfs" or "native"), its directories under
/// `root` (e.g. `<berth root>/snapshots/overlayfs`) and its metadata in `db`.
///
/// Creates `root/snapshots` and `root/tmp`, clears what a crash left in `root/tmp`, and
/// makes sure the snapshot tables exist. Any other name is InvalidArgument.
pub fn open(
    name: &str,
    db: std::sync::Arc<db::SharedDb>,
    root: &std::path::Path,
) -> Result<std::sync::Arc<dyn Snapshotter>> {
    match name {
        "overlayfs" => Ok(std::sync::Arc::new(overlay::Overlay::open(db, root)?)),
        "native" => Ok(std::sync::Arc::new(native::Native::open(db, root)?)),
        other => Err(SnapshotterError::InvalidArgument(format!(
            "unknown snapshotter {other:?}"
        ))),
    }
}
