//! Snapshotters (overlayfs, native), layer apply and diff.
//!
//! Nothing lives here yet: the snapshotters arrive with the snapshots work (see DESIGN.md).
