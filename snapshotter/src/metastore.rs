//! Snapshot metadata in the daemon's redb database.
//!
//! ```text
//! meta.redb (shared with berthd's metadata store, see services/src/metadata.rs)
//! ├── snapshots     (namespace, snapshotter, key) → SnapshotRecord (prost)
//! └── snapshot_ids  snapshotter → last id allocated (u64)
//! ```
//!
//! A record's `id` names its directory (`<snapshotter root>/snapshots/<id>`). Ids are never
//! reused, so a garbage collector may delete records in its own transaction and call
//! [`crate::Snapshotter::cleanup`] afterwards to remove the directories left without one.

use std::collections::BTreeMap;

use redb::TableDefinition;

use crate::error::{Result, SnapshotterError};
use crate::snapshots::Kind;

/// `(namespace, snapshotter, key)` → [`SnapshotRecord`].
pub const SNAPSHOTS: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("snapshots");
/// `snapshotter` → the last id allocated.
pub const SNAPSHOT_IDS: TableDefinition<&str, u64> = TableDefinition::new("snapshot_ids");

/// One snapshot as stored.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotRecord {
    /// Directory number, unique per snapshotter.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// 1 view, 2 active, 3 committed.
    #[prost(int32, tag = "2")]
    pub kind: i32,
    /// Key of the committed parent in the same namespace and snapshotter; empty for none.
    #[prost(string, tag = "3")]
    pub parent: String,
    #[prost(btree_map = "string, string", tag = "4")]
    pub labels: BTreeMap<String, String>,
    /// Unix nanoseconds.
    #[prost(int64, tag = "5")]
    pub created: i64,
    #[prost(int64, tag = "6")]
    pub updated: i64,
    /// Usage of the layer, measured at commit (committed snapshots only).
    #[prost(int64, tag = "7")]
    pub size: i64,
    #[prost(int64, tag = "8")]
    pub inodes: i64,
}

impl SnapshotRecord {
    pub fn kind(&self) -> Result<Kind> {
        kind_from_i32(self.kind)
    }
}

pub fn kind_to_i32(kind: Kind) -> i32 {
    match kind {
        Kind::View => 1,
        Kind::Active => 2,
        Kind::Committed => 3,
    }
}

pub fn kind_from_i32(v: i32) -> Result<Kind> {
    match v {
        1 => Ok(Kind::View),
        2 => Ok(Kind::Active),
        3 => Ok(Kind::Committed),
        other => Err(SnapshotterError::Corrupt {
            key: String::new(),
            message: format!("unknown snapshot kind {other}"),
        }),
    }
}

/// Decodes a stored record; `key` names it in the error.
pub fn decode(key: &str, bytes: &[u8]) -> Result<SnapshotRecord> {
    <SnapshotRecord as prost::Message>::decode(bytes).map_err(|e| SnapshotterError::Corrupt {
        key: key.to_string(),
        message: e.to_string(),
    })
}
