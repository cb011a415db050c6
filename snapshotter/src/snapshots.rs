//! The snapshotter contract: one trait, implemented by [`crate::overlay::Overlay`] and
//! [`crate::native::Native`], and run through one conformance suite
//! (`snapshotter/tests/conformance.rs`).
//!
//! A snapshot is named by a key inside a namespace. Active snapshots are writable and can be
//! committed into a read-only committed snapshot under a new name; views are read-only
//! snapshots of a committed parent that can't be committed. Every call is blocking (redb
//! transactions, directory work): async callers run them on the blocking pool.
//!
//! Metadata lives in the daemon's redb database ([`crate::metastore`]), keyed by
//! `(namespace, snapshotter, key)`; the data of a snapshot lives in
//! `<root>/snapshots/<id>/` where `id` is a number allocated per snapshotter, so a key can be
//! reused after a removal without ever sharing a directory.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::error::Result;

/// Label that makes a snapshot (or blob) a garbage-collection root.
pub const GC_ROOT_LABEL: &str = "containerd.io/gc.root";

/// What a snapshot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Read-only, created by `view`; can't be committed.
    View,
    /// Writable, created by `prepare`; can be committed.
    Active,
    /// Read-only, the result of `commit`; can be a parent.
    Committed,
}

impl Kind {
    /// containerd's name for the kind ("view", "active", "committed").
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

/// What `stat`/`list` report about a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The key (active/view) or name (committed).
    pub name: String,
    /// The committed parent, if any.
    pub parent: Option<String>,
    pub kind: Kind,
    pub labels: BTreeMap<String, String>,
    pub created: SystemTime,
    pub updated: SystemTime,
}

/// Disk used by one snapshot's own layer (not its parents).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes, counted by allocated blocks as `du` does (hard links counted once).
    pub size: i64,
    pub inodes: i64,
}

/// A mount a client performs to get the snapshot's filesystem, as containerd's `types.Mount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Filesystem type: "overlay" or "bind".
    pub kind: String,
    /// "overlay" for overlay mounts, the directory for bind mounts.
    pub source: String,
    /// Options as `mount(8)` takes them: "ro", "rbind", "lowerdir=...", "upperdir=...".
    pub options: Vec<String>,
}

/// A snapshotter: the copy-on-write filesystems containers and image layers live in.
///
/// Errors follow containerd's classes (see [`crate::error::SnapshotterError`]): a missing key
/// is NotFound, an existing key AlreadyExists, a parent that is not committed or a commit of
/// a non-active snapshot FailedPrecondition/InvalidArgument as containerd reports them.
pub trait Snapshotter: Send + Sync {
    /// The snapshotter's name as clients select it ("overlayfs", "native").
    fn name(&self) -> &str;

    /// Information about one snapshot.
    fn stat(&self, ns: &str, key: &str) -> Result<Info>;

    /// Updates the labels of a snapshot. `fieldpaths` empty replaces all labels; otherwise
    /// each path is `labels` (replace all) or `labels.<key>` (set, or delete when absent from
    /// `info.labels`). Any other path is InvalidArgument. Returns the stored info.
    fn update(&self, ns: &str, info: Info, fieldpaths: &[String]) -> Result<Info>;

    /// Disk usage of the snapshot's own layer (for an active snapshot: measured now).
    fn usage(&self, ns: &str, key: &str) -> Result<Usage>;

    /// The mounts of an active snapshot or a view.
    fn mounts(&self, ns: &str, key: &str) -> Result<Vec<Mount>>;

    /// Creates an active snapshot `key` on top of the committed `parent` and returns its mounts.
    fn prepare(
        &self,
        ns: &str,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>>;

    /// Creates a read-only view `key` of the committed `parent` and returns its mounts.
    fn view(
        &self,
        ns: &str,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>>;

    /// Commits the active snapshot `key` as the committed snapshot `name`; `key` is gone
    /// afterwards. `labels` replace the active snapshot's labels when not empty.
    fn commit(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<()>;

    /// Whether [`Snapshotter::commit_rebased`] is supported: an active snapshot prepared
    /// without a parent can be committed on top of a parent chosen at commit time. True for
    /// overlayfs, whose layers are self-contained upper dirs (this is what lets unpack apply
    /// several layers in parallel).
    fn can_rebase(&self) -> bool {
        false
    }

    /// Commits the parentless active snapshot `key` as `name` with committed parent `parent`.
    fn commit_rebased(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<()> {
        let _ = (ns, name, key, parent, labels);
        Err(crate::error::SnapshotterError::NotImplemented(format!(
            "snapshotter {} cannot commit a snapshot onto a new parent",
            self.name()
        )))
    }

    /// Removes a snapshot. A snapshot that is the parent of another is FailedPrecondition.
    /// The metadata goes in one transaction; the directory is renamed away, then deleted.
    fn remove(&self, ns: &str, key: &str) -> Result<()>;

    /// Every snapshot of the namespace, ordered by key. Filtering is the caller's business.
    fn list(&self, ns: &str) -> Result<Vec<Info>>;

    /// Removes directories no metadata refers to (left by a crash, or by a garbage collection
    /// that deleted records in its own transaction). Never touches a live snapshot.
    fn cleanup(&self) -> Result<()>;
}
