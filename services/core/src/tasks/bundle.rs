//! A task's bundle on disk: what outlives berthd ([`SavedTask`]), the runtime options
//! handed to the shim, and the bundle's removal (unmounts and recursive removal, on the
//! blocking pool).

use std::path::Path;

use berth_proto::ttrpc::protobuf::Message;
use berth_proto::ttrpc::protobuf::well_known_types::any::Any as PbAny;
use serde::{Deserialize, Serialize};

use crate::config::RuntimeConfig;
use crate::error::{Error, Result};
use crate::types::AnyValue;

/// The facts about a task that outlive berthd, saved as `<bundle>/runtime.json`: which
/// runtime (and so which shim binary) runs it, and the shim's pid once known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedTask {
    pub runtime: String,
    pub config: RuntimeConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shim_pid: Option<u32>,
}

impl SavedTask {
    pub(super) const FILE: &'static str = "runtime.json";

    pub fn save(&self, bundle: &Path) -> Result<()> {
        let data = serde_json::to_vec(self)
            .map_err(|e| Error::Internal(format!("encode {}: {e}", Self::FILE)))?;
        crate::runtime::write_file_atomic(&bundle.join(Self::FILE), &data)
    }

    /// The saved facts; None when the bundle has none (berthd died before writing them).
    pub fn load(bundle: &Path) -> Result<Option<SavedTask>> {
        let path = bundle.join(Self::FILE);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| Error::Corrupt {
                what: "task bundle",
                key: path.display().to_string(),
                message: e.to_string(),
            })
    }
}

/// The type of runc's options (`containerd.runc.v1.Options`), as clients pack it.
pub(super) const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";

/// The runc options of a create: the client's (or none), with an unset binary and root
/// filled from the runtime's config: its OCI runtime, and its root (by default
/// `<state>/runc`, so that each daemon has its own runc state). Options of another type
/// pass unchanged.
/// The options type of containerd 1.x's v1 linux runtime (`runctypes.RuncOptions`).
const LEGACY_RUNC_OPTIONS: &str = "containerd.linux.runc.RuncOptions";

/// `containerd.linux.runc.RuncOptions`: what the legacy options say about the runtime.
#[derive(Clone, PartialEq, prost::Message)]
struct LegacyRuncOptions {
    #[prost(string, tag = "1")]
    runtime: String,
    #[prost(string, tag = "2")]
    runtime_root: String,
    #[prost(bool, tag = "4")]
    systemd_cgroup: bool,
}

pub(super) fn runc_options(
    given: Option<AnyValue>,
    runtime: &RuntimeConfig,
    state: &Path,
) -> Result<Option<PbAny>> {
    use berth_proto::ttrpc::shim::oci::Options;
    let mut opts = match given {
        Some(a) if a.type_url.ends_with(RUNC_OPTIONS) => Options::parse_from_bytes(&a.value)
            .map_err(|e| Error::invalid(format!("runc options: {e}")))?,
        Some(a) if a.type_url.ends_with(LEGACY_RUNC_OPTIONS) => {
            let legacy = <LegacyRuncOptions as prost::Message>::decode(a.value.as_slice())
                .map_err(|e| {
                    Error::invalid(format!("runc options ({LEGACY_RUNC_OPTIONS}): {e}"))
                })?;
            Options {
                binary_name: legacy.runtime,
                root: legacy.runtime_root,
                systemd_cgroup: legacy.systemd_cgroup,
                ..Default::default()
            }
        }
        Some(a) => {
            return Ok(Some(PbAny {
                type_url: a.type_url,
                value: a.value,
                ..Default::default()
            }));
        }
        None => Options::default(),
    };
    if opts.binary_name.is_empty() {
        opts.binary_name = runtime.runtime.clone();
    }
    if opts.root.is_empty() {
        opts.root = runtime
            .runtime_root
            .clone()
            .unwrap_or_else(|| state.join("runc"))
            .display()
            .to_string();
    }
    let value = opts
        .write_to_bytes()
        .map_err(|e| Error::Internal(format!("encode runc options: {e}")))?;
    Ok(Some(PbAny {
        type_url: RUNC_OPTIONS.to_string(),
        value,
        ..Default::default()
    }))
}

/// Runs blocking file work (fsync, directory trees) on the blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("blocking task: {e}")))?
}

/// [`remove_bundle_now`] on the blocking pool (unmount and recursive removal block).
pub(super) async fn remove_bundle(bundle: &Path) {
    let bundle = bundle.to_path_buf();
    if let Err(e) = tokio::task::spawn_blocking(move || remove_bundle_now(&bundle)).await {
        tracing::warn!(error = %e, "remove task bundle");
    }
}

/// Removes a bundle, never reaching through anything still mounted in it: every mount
/// below the bundle (the rootfs, and what runc mounted on it when the container shared the
/// host's mount namespace) is unmounted first, found in the mount table, and the tree is
/// removed only once the table shows nothing mounted below it.
pub(super) fn remove_bundle_now(bundle: &Path) {
    let rootfs = bundle.join("rootfs");
    if let Err(e) = berth_snapshotter::mount::unmount_all_below(bundle) {
        tracing::warn!(bundle = %bundle.display(), error = %e, "unmount in task bundle");
        return;
    }
    // Nothing is mounted below the bundle any more (checked, not assumed): removing the
    // tree can only remove the bundle's own files.
    if !berth_snapshotter::mount::mounts_at_or_below(bundle).is_empty() {
        tracing::warn!(bundle = %bundle.display(), rootfs = %rootfs.display(), "still mounted in task bundle; kept");
        return;
    }
    if let Err(e) = std::fs::remove_dir_all(bundle)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(bundle = %bundle.display(), error = %e, "remove task bundle");
    }
}
