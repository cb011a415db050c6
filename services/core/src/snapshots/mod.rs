//! The daemon's snapshotters: the ones configured at start-up, by name.
//!
//! Each is a [`berth_snapshotter::Snapshotter`] with its directories under
//! `<root>/snapshots/<name>` and its metadata in the daemon's database. Their calls block
//! (transactions, directory work), so [`Snapshotters::run`] moves them to the blocking pool.
//! [`Snapshots`] (in `service.rs`) is the Snapshots API's service over them.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use berth_snapshotter::{Info, Kind, Snapshotter};

use crate::error::{Error, Result};
use crate::filters::{self, Adaptor};
use crate::metadata::Store;
use crate::namespaces;

mod service;

pub use service::{Commit, Create, Snapshots};

/// The label that names the committed snapshot an unpack is about to create (its chain ID):
/// a Prepare carrying it fails with AlreadyExists when that snapshot exists, so a client
/// skips the layer, as containerd's metadata layer does.
pub const SNAPSHOT_REF_LABEL: &str = "containerd.io/snapshot.ref";

/// Snapshot fields for containerd's filters: `name`, `parent`, `kind` and `labels.<key>`.
/// `name` and `parent` are present even when empty, as containerd's adaptor has them.
impl Adaptor for Info {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "name" => Some(self.name.clone()),
            "parent" => Some(self.parent.clone().unwrap_or_default()),
            "kind" => Some(self.kind.as_str().to_string()),
            "labels" => filters::map_field(&self.labels, &path[1..]),
            _ => None,
        }
    }
}

/// Whether a stat result says the snapshot exists (NotFound → false, other errors returned).
fn exists(r: berth_snapshotter::Result<Info>) -> berth_snapshotter::Result<bool> {
    match r {
        Ok(_) => Ok(true),
        Err(berth_snapshotter::SnapshotterError::NotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The snapshotters berthd knows, in the order they are reported.
pub const KNOWN: [&str; 2] = ["overlayfs", "native"];

/// The loaded snapshotters and the default one. Cheap to clone.
#[derive(Clone)]
pub struct Snapshotters {
    by_name: Arc<BTreeMap<String, Arc<dyn Snapshotter>>>,
    default: String,
    /// The daemon's metadata, for namespaces' default snapshotters (None in the proxy).
    store: Option<Store>,
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
            store: Some(store.clone()),
        }
    }

    /// Opens only the snapshotter `name` with its directories in `dir` (the proxy's layout,
    /// `<root>/<name>`); it is the default. Failing to open it is an error here.
    pub fn open_one(name: &str, store: &Store, dir: &Path) -> Result<Snapshotters> {
        if !KNOWN.contains(&name) {
            return Err(Error::invalid(format!(
                "unknown snapshotter {name:?} (known: {})",
                KNOWN.join(", ")
            )));
        }
        let s = berth_snapshotter::open(name, store.database(), dir)?;
        let mut by_name = BTreeMap::new();
        by_name.insert(name.to_string(), s);
        Ok(Snapshotters {
            by_name: Arc::new(by_name),
            default: name.to_string(),
            store: None,
        })
    }

    /// The name a request's `snapshotter` field stands for (the default for an empty one).
    pub fn resolve<'a>(&'a self, name: &'a str) -> &'a str {
        if name.is_empty() { &self.default } else { name }
    }

    /// The snapshotter a request in namespace `ns` means: the one it names; when it names
    /// none, the one the namespace's `containerd.io/defaults/snapshotter` label names (the
    /// label containerd's client reads), else the daemon's default.
    pub async fn name_for(&self, ns: &str, requested: &str) -> Result<String> {
        if !requested.is_empty() {
            self.get(requested)?;
            return Ok(requested.to_string());
        }
        let Some(store) = &self.store else {
            return Ok(self.default.clone());
        };
        let labelled = match crate::namespaces::get(store, ns).await {
            Ok(n) => n
                .labels
                .get(crate::namespaces::DEFAULT_SNAPSHOTTER_LABEL)
                .cloned()
                .filter(|s| !s.is_empty()),
            Err(Error::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        match labelled {
            Some(name) => {
                self.get(&name).map_err(|_| {
                    Error::invalid(format!(
                        "namespace {ns} names snapshotter {name:?} as its default ({}), which is not loaded",
                        crate::namespaces::DEFAULT_SNAPSHOTTER_LABEL
                    ))
                })?;
                Ok(name)
            }
            None => Ok(self.default.clone()),
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
        let name = self.resolve(name);
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

/// Records `namespace` if it does not exist yet: creating a snapshot in a namespace creates
/// it, as for every other object.
pub async fn ensure_namespace(store: &Store, namespace: &str) -> Result<()> {
    let ns = namespace.to_string();
    store.update(move |txn| namespaces::ensure(txn, &ns)).await
}

/// Fails with AlreadyExists when the labels of a new snapshot name a target
/// ([`SNAPSHOT_REF_LABEL`]) that already exists.
pub fn check_target(
    s: &dyn Snapshotter,
    ns: &str,
    labels: &BTreeMap<String, String>,
) -> berth_snapshotter::Result<()> {
    if let Some(target) = labels.get(SNAPSHOT_REF_LABEL)
        && !target.is_empty()
        && exists(s.stat(ns, target))?
    {
        return Err(berth_snapshotter::SnapshotterError::AlreadyExists(format!(
            "target snapshot {target:?}"
        )));
    }
    Ok(())
}

/// The snapshots of `ns` that pass `filter`, ordered by key.
pub fn list_filtered(
    s: &dyn Snapshotter,
    ns: &str,
    filter: &crate::filters::Filter,
) -> berth_snapshotter::Result<Vec<Info>> {
    Ok(s.list(ns)?
        .into_iter()
        .filter(|i| filter.matches(i))
        .collect())
}

/// containerd's wire value of a snapshot kind (1 view, 2 active, 3 committed).
pub fn kind_number(kind: Kind) -> i32 {
    berth_snapshotter::metastore::kind_to_i32(kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::Filter;

    fn info(name: &str, parent: Option<&str>, kind: Kind, labels: &[(&str, &str)]) -> Info {
        Info {
            name: name.into(),
            parent: parent.map(Into::into),
            kind,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            created: std::time::UNIX_EPOCH,
            updated: std::time::UNIX_EPOCH,
        }
    }

    #[test]
    fn filters_over_snapshot_fields() {
        let a = info("a", None, Kind::Committed, &[("x", "1")]);
        let b = info(
            "b",
            Some("a"),
            Kind::Active,
            &[("containerd.io/gc.root", "y")],
        );
        let m = |f: &[&str], i: &Info| Filter::parse_all(f).expect("parse").matches(i);
        assert!(m(&["kind==committed"], &a));
        assert!(!m(&["kind==committed"], &b));
        assert!(m(&["parent==a"], &b));
        assert!(m(&["name==a"], &a));
        assert!(m(&[r#"labels."containerd.io/gc.root""#], &b));
        assert!(!m(&[r#"labels."containerd.io/gc.root""#], &a));
        assert!(m(&["labels.x==1"], &a));
        // Several filters are OR-ed; selectors within one are AND-ed.
        assert!(m(&["name==zzz", "kind==active"], &b));
        assert!(!m(&["name==b,kind==committed"], &b));
        // `parent` is present (empty) even for a snapshot without one.
        assert!(m(&["parent"], &a));
        assert!(m(&["parent==\"\""], &a));
    }
}
