//! The daemon's snapshotters: the ones configured at start-up, by name.
//!
//! Each is a [`berth_snapshotter::Snapshotter`] with its directories under
//! `<root>/snapshots/<name>` and its metadata in the daemon's database. Their calls block
//! (transactions, directory work), so [`Snapshotters::run`] moves them to the blocking pool.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use berth_snapshotter::Snapshotter;

use crate::error::{Error, Result};
use crate::metadata::Store;

/// The snapshotters berthd knows, in the order they are reported.
pub const KNOWN: [&str; 2] = ["overlayfs", "native"];

/// The loaded snapshotters and the default one. Cheap to clone.
#[derive(Clone)]
pub struct Snapshotters {
    by_name: Arc<BTreeMap<String, Arc<dyn Snapshotter>>>,
    default: String,
}

impl Snapshotters {
    /// Opens every known snapshotter under `<root>/snapshots/`. One that cannot be opened is
    /// logged and left out (as containerd skips a plugin that fails to load); calls naming it
    /// then fail with "snapshotter not loaded".
    pub fn open(root: &Path, store: &Store, default: &str) -> Snapshotters {
        let mut by_name = BTreeMap::new();
        for name in KNOWN {
            let dir = root.join("snapshots").join(name);
            match berth_snapshotter::open(name, store.database(), &dir) {
                Ok(s) => {
                    by_name.insert(name.to_string(), s);
                }
                Err(e) => {
                    tracing::error!(snapshotter = name, error = %e, "failed to load snapshotter")
                }
            }
        }
        Snapshotters {
            by_name: Arc::new(by_name),
            default: default.to_string(),
        }
    }

    /// The snapshotter used when a request names none.
    pub fn default_name(&self) -> &str {
        &self.default
    }

    /// Names of the loaded snapshotters.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// The snapshotter called `name` (the default for an empty name).
    pub fn get(&self, name: &str) -> Result<Arc<dyn Snapshotter>> {
        let name = if name.is_empty() { &self.default } else { name };
        self.by_name
            .get(name)
            .cloned()
            .ok_or_else(|| Error::invalid(format!("snapshotter not loaded: {name}")))
    }

    /// Runs `f` against the snapshotter `name` on the blocking pool.
    pub async fn run<T, F>(&self, name: &str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Snapshotter) -> berth_snapshotter::Result<T> + Send + 'static,
    {
        let s = self.get(name)?;
        tokio::task::spawn_blocking(move || f(s.as_ref()))
            .await
            .map_err(|e| Error::Internal(format!("snapshotter task: {e}")))?
            .map_err(Error::from)
    }
}
