//! The task manager: one shim per task, bundles under `<state>/tasks/<ns>/<id>/`.
//!
//! The map of tasks is locked only briefly (never across an await); each task has its own
//! lock that serialises its creation and deletion.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use berth_proto::ttrpc::api;
use berth_proto::ttrpc::protobuf::Message;
use berth_proto::ttrpc::protobuf::well_known_types::any::Any as PbAny;
use berth_snapshotter::Mount;

use crate::containers::Containers;
use crate::error::{Error, Result};
use crate::events::Exchange;
use crate::runtime::{RuntimeManager, Shim};
use crate::snapshots::Snapshotters;
use crate::types::AnyValue;

/// A running (or created, or stopped but not deleted) task.
pub struct Task {
    pub id: String,
    pub namespace: String,
    pub bundle: PathBuf,
    pub runtime: String,
    runtime_config: crate::config::RuntimeConfig,
    pub shim: Shim,
    /// Held while the task is being deleted.
    lock: tokio::sync::Mutex<bool>,
}

/// What a Create asks for, apart from the container.
#[derive(Debug, Default, Clone)]
pub struct CreateOptions {
    pub rootfs: Vec<Mount>,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
    pub options: Option<AnyValue>,
    pub checkpoint: bool,
}

#[derive(Default)]
struct Table {
    tasks: HashMap<(String, String), Arc<Task>>,
    creating: HashSet<(String, String)>,
}

#[derive(Clone)]
pub struct Tasks {
    manager: RuntimeManager,
    containers: Containers,
    snapshotters: Snapshotters,
    root: PathBuf,
    state: PathBuf,
    exchange: Exchange,
    table: Arc<Mutex<Table>>,
}

fn key(ns: &str, id: &str) -> (String, String) {
    (ns.to_string(), id.to_string())
}

fn not_found(ns: &str, id: &str) -> Error {
    Error::not_found(format!("task {id} in namespace {ns}"))
}

impl Tasks {
    /// `state` is the daemon's state directory; bundles go under `<state>/tasks`.
    pub fn new(
        manager: RuntimeManager,
        containers: Containers,
        snapshotters: Snapshotters,
        state: &Path,
        exchange: Exchange,
    ) -> Self {
        Tasks {
            manager,
            containers,
            snapshotters,
            root: state.join("tasks"),
            state: state.to_path_buf(),
            exchange,
            table: Arc::new(Mutex::new(Table::default())),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The task `id` in `ns`.
    pub fn get(&self, ns: &str, id: &str) -> Result<Arc<Task>> {
        self.table()
            .tasks
            .get(&key(ns, id))
            .cloned()
            .ok_or_else(|| not_found(ns, id))
    }

    /// Every task of `ns`, in id order.
    pub fn list(&self, ns: &str) -> Vec<Arc<Task>> {
        let mut v: Vec<Arc<Task>> = self
            .table()
            .tasks
            .values()
            .filter(|t| t.namespace == ns)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Creates the task of container `id`: bundle, shim, shim Create. Returns the pid.
    pub async fn create(
        &self,
        ns: &str,
        id: &str,
        opts: CreateOptions,
    ) -> Result<(Arc<Task>, u32)> {
        if opts.checkpoint {
            return Err(Error::NotImplemented(format!(
                "restore of task {id} from a checkpoint: berthd does not checkpoint"
            )));
        }
        let container = self.containers.get(ns, id).await?;
        let (runtime_name, runtime) = self.manager.resolve(container.runtime_name())?;
        {
            let mut table = self.table();
            let k = key(ns, id);
            if table.tasks.contains_key(&k) || !table.creating.insert(k) {
                return Err(Error::already_exists(format!(
                    "task {id} in namespace {ns}"
                )));
            }
        }
        let result = self
            .create_inner(ns, id, &container, &runtime_name, &runtime, opts)
            .await;
        let mut table = self.table();
        table.creating.remove(&key(ns, id));
        let (task, pid) = result?;
        table.tasks.insert(key(ns, id), task.clone());
        Ok((task, pid))
    }

    async fn create_inner(
        &self,
        ns: &str,
        id: &str,
        container: &crate::containers::Container,
        runtime_name: &str,
        runtime: &crate::config::RuntimeConfig,
        opts: CreateOptions,
    ) -> Result<(Arc<Task>, u32)> {
        let spec = container
            .spec
            .as_ref()
            .filter(|s| !s.value.is_empty())
            .ok_or_else(|| Error::invalid(format!("container {id} has no runtime spec")))?;
        let mut rootfs = opts.rootfs.clone();
        if rootfs.is_empty() && !container.snapshot_key.is_empty() {
            let (n, k) = (ns.to_string(), container.snapshot_key.clone());
            rootfs = self
                .snapshotters
                .run(&container.snapshotter, move |s| s.mounts(&n, &k))
                .await?;
        }
        let given = opts
            .options
            .clone()
            .or_else(|| container.runtime.as_ref().and_then(|r| r.options.clone()));
        let options = runc_options(given, runtime, &self.state)?;
        let bundle = self.root.join(ns).join(id);
        if bundle.exists() {
            return Err(Error::already_exists(format!(
                "bundle {} of task {id}",
                bundle.display()
            )));
        }
        let rootfs_dir = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs_dir)
            .map_err(|e| Error::io("create bundle", &rootfs_dir, e))?;
        let config = bundle.join("config.json");
        if let Err(e) = crate::runtime::write_file_atomic(&config, &spec.value) {
            remove_bundle(&bundle);
            return Err(e);
        }
        let shim = match self.manager.start_shim(runtime, ns, id, &bundle).await {
            Ok(s) => s,
            Err(e) => {
                remove_bundle(&bundle);
                return Err(e);
            }
        };
        let req = api::CreateTaskRequest {
            id: id.to_string(),
            bundle: bundle.display().to_string(),
            rootfs: rootfs
                .iter()
                .map(|m| api::Mount {
                    type_: m.kind.clone(),
                    source: m.source.clone(),
                    options: m.options.clone(),
                    ..Default::default()
                })
                .collect(),
            terminal: opts.terminal,
            stdin: opts.stdin,
            stdout: opts.stdout,
            stderr: opts.stderr,
            options: options.into(),
            ..Default::default()
        };
        let pid = match shim.create(req).await {
            Ok(r) => r.pid,
            Err(e) => {
                shutdown(&shim).await;
                remove_bundle(&bundle);
                return Err(e);
            }
        };
        let task = Arc::new(Task {
            id: id.to_string(),
            namespace: ns.to_string(),
            bundle,
            runtime: runtime_name.to_string(),
            runtime_config: runtime.clone(),
            shim,
            lock: tokio::sync::Mutex::new(false),
        });
        Ok((task, pid))
    }

    /// Passes `err` on, unless it says the shim is unreachable and the shim is indeed gone:
    /// then the task is cleaned up (`shim delete`, bundle removed) and no longer exists.
    pub async fn check_shim(&self, task: &Task, err: Error) -> Error {
        if !matches!(err, Error::Unavailable(_)) || task.shim.alive().await {
            return err;
        }
        let (ns, id) = (&task.namespace, &task.id);
        tracing::warn!(namespace = %ns, task = %id, error = %err, "the task's shim is gone; cleaning up");
        if let Err(e) = self.delete(ns, id).await {
            tracing::warn!(namespace = %ns, task = %id, error = %e, "clean up after a dead shim");
        }
        not_found(ns, id)
    }

    /// Deletes the task: shim Delete, shim Shutdown, bundle removed.
    pub async fn delete(&self, ns: &str, id: &str) -> Result<api::DeleteResponse> {
        let task = self.get(ns, id)?;
        let mut deleted = task.lock.lock().await;
        if *deleted {
            return Err(not_found(ns, id));
        }
        let req = api::DeleteRequest {
            id: id.to_string(),
            ..Default::default()
        };
        let resp = match task.shim.delete(req).await {
            Ok(r) => r,
            // The shim is gone (crashed, killed): clean up with `shim delete`.
            Err(Error::Unavailable(m)) => {
                tracing::warn!(namespace = ns, task = id, error = %m, "shim unreachable; running shim delete");
                let r = self
                    .manager
                    .delete_shim(&task.runtime_config, ns, id, &task.bundle)
                    .await?;
                // The shim cannot tell anyone any more: the daemon publishes its exit.
                self.publish_dead_shim_exit(ns, id, &r);
                r
            }
            Err(e) => return Err(e),
        };
        *deleted = true;
        self.table().tasks.remove(&key(ns, id));
        shutdown(&task.shim).await;
        remove_bundle(&task.bundle);
        Ok(resp)
    }
}

impl Tasks {
    fn publish_dead_shim_exit(&self, ns: &str, id: &str, r: &api::DeleteResponse) {
        use berth_proto::containerd::events::{TaskDelete, TaskExit};
        let exited_at = r.exited_at.as_ref().map(|t| prost_types::Timestamp {
            seconds: t.seconds,
            nanos: t.nanos,
        });
        crate::api::publish(
            &self.exchange,
            ns,
            "/tasks/exit",
            &TaskExit {
                container_id: id.to_string(),
                id: id.to_string(),
                pid: r.pid,
                exit_status: r.exit_status,
                exited_at,
            },
        );
        crate::api::publish(
            &self.exchange,
            ns,
            "/tasks/delete",
            &TaskDelete {
                container_id: id.to_string(),
                pid: r.pid,
                exit_status: r.exit_status,
                exited_at,
                id: String::new(),
            },
        );
    }
}

/// The type of runc's options (`containerd.runc.v1.Options`), as clients pack it.
const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";

/// The runc options of a create: the client's (or none), with an unset binary and root
/// filled from the runtime's config: its OCI runtime, and its root (by default
/// `<state>/runc`, so that each daemon has its own runc state). Options of another type
/// pass unchanged.
fn runc_options(
    given: Option<AnyValue>,
    runtime: &crate::config::RuntimeConfig,
    state: &Path,
) -> Result<Option<PbAny>> {
    use berth_proto::ttrpc::shim::oci::Options;
    let mut opts = match given {
        Some(a) if a.type_url.ends_with(RUNC_OPTIONS) => Options::parse_from_bytes(&a.value)
            .map_err(|e| Error::invalid(format!("runc options: {e}")))?,
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

async fn shutdown(shim: &Shim) {
    // The shim exits on Shutdown and may close the connection before it answers.
    let _ = shim
        .shutdown(api::ShutdownRequest {
            now: true,
            ..Default::default()
        })
        .await;
}

/// Removes a bundle, never reaching through a rootfs that is still mounted: a mounted
/// rootfs is unmounted first, and removed only as an empty directory.
fn remove_bundle(bundle: &Path) {
    let rootfs = bundle.join("rootfs");
    if is_mount_point(&rootfs)
        && let Err(e) = berth_snapshotter::mount::unmount(&rootfs)
    {
        tracing::warn!(rootfs = %rootfs.display(), error = %e, "unmount task rootfs");
        return;
    }
    if let Err(e) = std::fs::remove_dir(&rootfs)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(rootfs = %rootfs.display(), error = %e, "remove task rootfs");
        return;
    }
    if let Err(e) = std::fs::remove_dir_all(bundle) {
        tracing::warn!(bundle = %bundle.display(), error = %e, "remove task bundle");
    }
}

fn is_mount_point(dir: &Path) -> bool {
    let (Ok(a), Some(Ok(b))) = (std::fs::metadata(dir), dir.parent().map(std::fs::metadata)) else {
        return false;
    };
    a.dev() != b.dev() || a.ino() == b.ino()
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::ttrpc::shim::oci::Options;

    fn runtime(root: Option<&str>) -> crate::config::RuntimeConfig {
        crate::config::RuntimeConfig {
            shim: "containerd-shim-berth-v2".into(),
            runtime: "crun".into(),
            runtime_root: root.map(PathBuf::from),
        }
    }

    fn decode(a: Option<PbAny>) -> Options {
        let a = a.expect("options");
        assert_eq!(a.type_url, RUNC_OPTIONS);
        Options::parse_from_bytes(&a.value).expect("decode")
    }

    #[test]
    fn runc_options_fill_binary_and_per_daemon_root() {
        let o = decode(runc_options(None, &runtime(None), Path::new("/run/b")).expect("opts"));
        assert_eq!(o.binary_name, "crun");
        assert_eq!(o.root, "/run/b/runc");

        let o =
            decode(runc_options(None, &runtime(Some("/r")), Path::new("/run/b")).expect("opts"));
        assert_eq!(o.root, "/r");

        // A client's own binary and root win; its other settings are kept.
        let given = Options {
            binary_name: "runc.custom".into(),
            root: "/mine".into(),
            systemd_cgroup: true,
            ..Default::default()
        };
        let any = AnyValue {
            type_url: format!("type.googleapis.com/{RUNC_OPTIONS}"),
            value: given.write_to_bytes().expect("encode"),
        };
        let o = decode(runc_options(Some(any), &runtime(None), Path::new("/s")).expect("opts"));
        assert_eq!(o.binary_name, "runc.custom");
        assert_eq!(o.root, "/mine");
        assert!(o.systemd_cgroup);

        // Options of another type go to the shim unchanged.
        let other = AnyValue {
            type_url: "x.Other".into(),
            value: vec![1, 2],
        };
        let a = runc_options(Some(other), &runtime(None), Path::new("/s"))
            .expect("opts")
            .expect("some");
        assert_eq!(
            (a.type_url.as_str(), a.value.as_slice()),
            ("x.Other", &[1u8, 2][..])
        );

        let bad = AnyValue {
            type_url: RUNC_OPTIONS.into(),
            value: vec![0xff, 0xff],
        };
        assert!(matches!(
            runc_options(Some(bad), &runtime(None), Path::new("/s")),
            Err(Error::InvalidArgument(_))
        ));
    }
}
