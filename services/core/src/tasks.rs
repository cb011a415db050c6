//! The task manager: one shim per task, bundles under `<state>/tasks/<ns>/<id>/`.
//!
//! The map of tasks is locked only briefly (never across an await); each task has its own
//! lock that serialises its creation and deletion.
//!
//! A bundle holds what a restart of berthd needs to find the task again (see
//! [`SavedTask`]):
//!
//! ```text
//! <state>/tasks/<namespace>/<id>/
//!     config.json    the OCI spec (written before the shim starts)
//!     runtime.json   SavedTask: runtime name, its config (shim binary...), the shim's pid
//!     address        the shim's ttrpc address (written once the shim serves)
//!     log            FIFO the shim logs to; berthd forwards it to its own log
//!     rootfs/        mounted by the shim
//! ```
//!
//! At start-up [`Tasks::restore`] reconnects to every shim that answers and cleans up after
//! every one that does not (`shim delete`, `/tasks/exit` and `/tasks/delete`, bundle
//! removed). While berthd runs, a watcher on each shim's pidfd does the same clean-up as soon
//! as the shim dies.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use berth_proto::ttrpc::api;
use berth_proto::ttrpc::protobuf::Message;
use berth_proto::ttrpc::protobuf::well_known_types::any::Any as PbAny;
use berth_snapshotter::Mount;
use serde::{Deserialize, Serialize};

use crate::config::RuntimeConfig;
use crate::containers::Containers;
use crate::error::{Error, Result};
use crate::events::Exchange;
use crate::runtime::{RuntimeManager, Shim};
use crate::snapshots::Snapshotters;
use crate::types::AnyValue;

/// How long start-up waits for one shim to answer before it counts as dead.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long start-up waits, once more, for a shim that is slow but whose process lives.
const SLOW_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one `shim delete` may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(15);
/// The exit status reported for a task whose shim is gone and could not say (containerd's).
const UNKNOWN_EXIT: u32 = 255;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub pid: u32,
    pub status: u32,
    pub exited_at: Option<SystemTime>,
}

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
    const FILE: &'static str = "runtime.json";

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

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running (or created, or stopped but not deleted) task.
pub struct Task {
    pub id: String,
    pub namespace: String,
    pub bundle: PathBuf,
    pub runtime: String,
    runtime_config: RuntimeConfig,
    pub shim: Shim,
    /// The shim's pid, when it told us.
    pub shim_pid: Option<u32>,
    /// Held while the task is being deleted; true once it is.
    lock: tokio::sync::Mutex<bool>,
    /// The watcher that cleans up when the shim dies.
    _watch: Option<AbortOnDrop>,
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

/// The parts of a task before it is put in the table.
struct NewTask {
    namespace: String,
    id: String,
    bundle: PathBuf,
    runtime: String,
    runtime_config: RuntimeConfig,
    shim: Shim,
    shim_pid: Option<u32>,
    /// A pidfd of the shim, to watch.
    pidfd: Option<OwnedFd>,
}

/// What start-up did with one bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restored {
    Running,
    Cleaned,
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

    /// Where the bundles are: `<state>/tasks`.
    pub fn bundles_dir(&self) -> &Path {
        &self.root
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

    /// Makes the task value, with a watcher on its shim's pidfd when there is one.
    fn make_task(&self, t: NewTask) -> Arc<Task> {
        Arc::new_cyclic(|weak: &Weak<Task>| {
            let watch = t.pidfd.map(|fd| {
                let (tasks, weak) = (self.clone(), weak.clone());
                AbortOnDrop(tokio::spawn(async move {
                    if let Err(e) = wait_for_exit(fd).await {
                        tracing::warn!(error = %e, "cannot watch a shim; a dead shim will be noticed on the next call");
                        return;
                    }
                    if let Some(task) = weak.upgrade() {
                        tasks.shim_died(&task).await;
                    }
                }))
            });
            Task {
                id: t.id,
                namespace: t.namespace,
                bundle: t.bundle,
                runtime: t.runtime,
                runtime_config: t.runtime_config,
                shim: t.shim,
                shim_pid: t.shim_pid,
                lock: tokio::sync::Mutex::new(false),
                _watch: watch,
            }
        })
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
        runtime: &RuntimeConfig,
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
            // No task holds it (this create reserved the id): the leftover of a create that
            // never finished. It goes, mounts and all, so the id is never wedged.
            tracing::warn!(namespace = ns, id, bundle = %bundle.display(), "removing a leftover bundle");
            remove_bundle(&bundle).await;
            if bundle.exists() {
                return Err(Error::already_exists(format!(
                    "bundle {} of task {id} (a leftover that could not be removed)",
                    bundle.display()
                )));
            }
        }
        let mut saved = SavedTask {
            runtime: runtime_name.to_string(),
            config: runtime.clone(),
            shim_pid: None,
        };
        // Directories, config.json and runtime.json (fsynced): on the blocking pool.
        let written = {
            let (bundle, saved, spec) = (bundle.clone(), saved.clone(), spec.value.clone());
            blocking(move || {
                let rootfs_dir = bundle.join("rootfs");
                std::fs::create_dir_all(&rootfs_dir)
                    .map_err(|e| Error::io("create bundle", &rootfs_dir, e))?;
                crate::runtime::write_file_atomic(&bundle.join("config.json"), &spec)?;
                saved.save(&bundle)
            })
            .await
        };
        if let Err(e) = written {
            remove_bundle(&bundle).await;
            return Err(e);
        }
        let stdin = match options.as_ref().map(|o| o.write_to_bytes()).transpose() {
            Ok(v) => v,
            Err(e) => {
                remove_bundle(&bundle).await;
                return Err(Error::Internal(format!(
                    "encode the runtime options of task {id}: {e}"
                )));
            }
        };
        let shim = match self
            .manager
            .start_shim(runtime, ns, id, &bundle, stdin)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                remove_bundle(&bundle).await;
                return Err(e);
            }
        };
        // The shim's pid, to watch it and to find it again after a restart.
        let (shim_pid, pidfd) = match shim.pids_of(id).await {
            Ok((pid, _)) if pid != 0 => (Some(pid), open_pidfd(pid)),
            Ok(_) => (None, None),
            Err(e) => {
                tracing::debug!(namespace = ns, id, error = %e, "shim Connect failed; not watching the shim");
                (None, None)
            }
        };
        if shim_pid.is_some() {
            saved.shim_pid = shim_pid;
            let (b, sv) = (bundle.clone(), saved.clone());
            if let Err(e) = blocking(move || sv.save(&b)).await {
                shutdown(&shim).await;
                remove_bundle(&bundle).await;
                return Err(e);
            }
        }
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
                remove_bundle(&bundle).await;
                return Err(e);
            }
        };
        let task = self.make_task(NewTask {
            namespace: ns.to_string(),
            id: id.to_string(),
            bundle,
            runtime: runtime_name.to_string(),
            runtime_config: runtime.clone(),
            shim,
            shim_pid,
            pidfd,
        });
        Ok((task, pid))
    }

    /// Passes `err` on, unless it says the shim is unreachable and the shim is indeed gone:
    /// then the task is cleaned up (`shim delete`, bundle removed) and no longer exists.
    pub async fn check_shim(&self, task: &Arc<Task>, err: Error) -> Error {
        if !matches!(err, Error::Unavailable(_)) || task.shim.alive().await {
            return err;
        }
        let (ns, id) = (&task.namespace, &task.id);
        tracing::warn!(namespace = %ns, id = %id, error = %err, "the task's shim is gone; cleaning up");
        self.shim_died(task).await;
        not_found(ns, id)
    }

    /// Deletes the task: shim Delete, shim Shutdown, bundle removed.
    pub async fn delete(&self, ns: &str, id: &str) -> Result<Exit> {
        let task = self.get(ns, id)?;
        let mut deleted = task.lock.lock().await;
        if *deleted {
            return Err(not_found(ns, id));
        }
        let req = api::DeleteRequest {
            id: id.to_string(),
            ..Default::default()
        };
        let exit = match task.shim.delete(req).await {
            Ok(r) => Exit::from(&r),
            // The shim is gone (crashed, killed): clean up with `shim delete`.
            Err(Error::Unavailable(m)) if !task.shim.alive().await => {
                tracing::warn!(namespace = ns, id, error = %m, "shim unreachable; running shim delete");
                self.clean_up_dead(ns, id, &task.runtime_config, &task.bundle)
                    .await
            }
            Err(e) => return Err(e),
        };
        *deleted = true;
        self.remove_from_table(&task);
        shutdown(&task.shim).await;
        remove_bundle(&task.bundle).await;
        Ok(exit)
    }

    /// The clean-up after a task whose shim died: `shim delete` (bounded in time), then
    /// `/tasks/exit` and `/tasks/delete` with the exit it reports (255 when it cannot say).
    /// The caller removes the task from the table and its bundle.
    async fn clean_up_dead(
        &self,
        ns: &str,
        id: &str,
        runtime: &RuntimeConfig,
        bundle: &Path,
    ) -> Exit {
        let deleted = tokio::time::timeout(
            CLEANUP_TIMEOUT,
            self.manager.delete_shim(runtime, ns, id, bundle),
        )
        .await
        .unwrap_or_else(|_| {
            Err(Error::Unavailable(format!(
                "shim delete of task {id} in namespace {ns} did not finish within {}s",
                CLEANUP_TIMEOUT.as_secs()
            )))
        });
        let exit = deleted.unwrap_or_else(|e| {
            tracing::warn!(namespace = ns, id, error = %e, "shim delete failed");
            Exit {
                pid: 0,
                status: UNKNOWN_EXIT,
                exited_at: Some(SystemTime::now()),
            }
        });
        // The shim cannot tell anyone any more: the daemon publishes its exit.
        self.publish_dead_shim_exit(ns, id, &exit);
        exit
    }

    /// The watcher's (and a failed call's) reaction to a dead shim: clean up and forget the
    /// task, unless it was deleted meanwhile.
    async fn shim_died(&self, task: &Arc<Task>) {
        let mut deleted = task.lock.lock().await;
        if *deleted {
            return;
        }
        let (ns, id) = (task.namespace.as_str(), task.id.as_str());
        tracing::warn!(namespace = ns, id, shim_pid = ?task.shim_pid, "the task's shim died; cleaning up");
        let exit = self
            .clean_up_dead(ns, id, &task.runtime_config, &task.bundle)
            .await;
        *deleted = true;
        remove_bundle(&task.bundle).await;
        self.remove_from_table(task);
        tracing::info!(
            namespace = ns,
            id,
            exit_status = exit.status,
            "cleaned up after a dead shim"
        );
    }

    /// Removes `task` from the table, if the entry is still this task.
    fn remove_from_table(&self, task: &Arc<Task>) {
        let mut table = self.table();
        let k = key(&task.namespace, &task.id);
        if table.tasks.get(&k).is_some_and(|t| Arc::ptr_eq(t, task)) {
            table.tasks.remove(&k);
        }
    }
}

/// Restart of berthd.
impl Tasks {
    /// Finds the tasks a previous berthd left: reconnects to each shim that answers and
    /// cleans up after each that does not. Every bundle is handled concurrently and in
    /// bounded time, so a hung shim cannot hold up start-up.
    pub async fn restore(&self) {
        let root = self.root.clone();
        let bundles = match blocking(move || scan_bundles(&root)).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot scan task bundles; no task restored");
                return;
            }
        };
        if bundles.is_empty() {
            self.end_orphan_shims().await;
            return;
        }
        let results = futures::future::join_all(
            bundles
                .into_iter()
                .map(|(ns, id, bundle)| async move { self.restore_one(&ns, &id, &bundle).await }),
        )
        .await;
        self.end_orphan_shims().await;
        let running = results.iter().filter(|r| **r == Restored::Running).count();
        tracing::info!(
            restored = running,
            cleaned = results.len() - running,
            "task bundles of the previous run handled"
        );
    }

    /// Ends the shims of this daemon that serve no task it knows: what a crash in the middle
    /// of a create leaves (a shim started, its bundle then removed as half-made).
    async fn end_orphan_shims(&self) {
        let known: HashSet<(String, String)> = self.table().tasks.keys().cloned().collect();
        // The scan reads /proc: on the blocking pool.
        let address = self.manager.grpc_address().to_path_buf();
        let shims = blocking(move || Ok(crate::runtime::shims_of(&address)))
            .await
            .unwrap_or_default();
        for (pid, ns, id) in shims {
            if known.contains(&key(&ns, &id)) || pid == std::process::id() as i32 {
                continue;
            }
            tracing::warn!(namespace = %ns, id = %id, pid, "ending a shim that serves no task");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    #[tracing::instrument(skip(self, bundle), fields(namespace = ns, id = id))]
    async fn restore_one(&self, ns: &str, id: &str, bundle: &Path) -> Restored {
        // The bundle's small files, read on the blocking pool.
        let dir = bundle.to_path_buf();
        let read = blocking(move || {
            let address = std::fs::read_to_string(dir.join("address"))
                .map(|a| a.trim().to_string())
                .unwrap_or_default();
            Ok((SavedTask::load(&dir), address))
        })
        .await;
        let (saved, address) = match read {
            Ok(r) => r,
            Err(e) => (Err(e), String::new()),
        };
        let saved = match saved {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable runtime record; using the container's runtime");
                None
            }
        };
        let (runtime, config, saved_pid) = match saved {
            Some(s) => (s.runtime, s.config, s.shim_pid),
            None => {
                let name = match self.containers.get(ns, id).await {
                    Ok(c) => c.runtime_name().to_string(),
                    Err(_) => String::new(),
                };
                match self.manager.resolve(&name) {
                    Ok((n, c)) => (n, c, None),
                    Err(_) => (name, RuntimeConfig::default(), None),
                }
            }
        };
        if address.is_empty() {
            // berthd died while creating it: no shim ever served this task.
            if let Err(e) = tokio::time::timeout(
                CLEANUP_TIMEOUT,
                self.manager.delete_shim(&config, ns, id, bundle),
            )
            .await
            .unwrap_or_else(|_| Err(Error::Unavailable("shim delete timed out".into())))
            {
                tracing::debug!(error = %e, "shim delete of a half-made task");
            }
            remove_bundle(bundle).await;
            tracing::info!("removed the bundle of a task whose creation did not finish");
            return Restored::Cleaned;
        }
        let mut probed =
            tokio::time::timeout(PROBE_TIMEOUT, probe(&address, ns, id, saved_pid)).await;
        if probed.is_err() && saved_pid.is_some_and(process_exists) {
            // Slow, not dead: cleaning up would kill its container. One longer wait.
            tracing::warn!("the task's shim is slow to answer; waiting longer");
            probed =
                tokio::time::timeout(SLOW_PROBE_TIMEOUT, probe(&address, ns, id, saved_pid)).await;
        }
        let (shim, shim_pid, pidfd, state) = match probed {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::info!(error = %e, "the task's shim does not answer");
                return self.clean_up_bundle(ns, id, bundle, config, None).await;
            }
            Err(_) => {
                tracing::warn!("the task's shim did not answer in time; treating it as dead");
                return self.clean_up_bundle(ns, id, bundle, config, None).await;
            }
        };
        let Some(state) = state else {
            // The shim serves but has no such task (berthd died during its Create).
            tracing::info!("the shim knows no such task; shutting it down");
            return self
                .clean_up_bundle(ns, id, bundle, config, Some(shim))
                .await;
        };
        let mut shim = shim;
        match crate::runtime::forward_log(bundle, ns, id) {
            Ok(log) => shim.set_log(log),
            Err(e) => tracing::warn!(error = %e, "cannot forward the shim's log"),
        }
        let task = self.make_task(NewTask {
            namespace: ns.to_string(),
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            runtime,
            runtime_config: config,
            shim,
            shim_pid,
            pidfd,
        });
        self.table().tasks.insert(key(ns, id), task);
        tracing::info!(
            pid = state.pid,
            shim_pid = ?shim_pid,
            status = ?state.status,
            exit_status = state.exit_status,
            "task restored"
        );
        Restored::Running
    }

    /// Cleans up after a bundle whose task cannot be restored.
    async fn clean_up_bundle(
        &self,
        ns: &str,
        id: &str,
        bundle: &Path,
        config: RuntimeConfig,
        live_shim: Option<Shim>,
    ) -> Restored {
        if let Some(shim) = live_shim {
            shutdown(&shim).await;
        }
        let exit = self.clean_up_dead(ns, id, &config, bundle).await;
        remove_bundle(bundle).await;
        tracing::info!(
            exit_status = exit.status,
            "cleaned up a task whose shim is gone"
        );
        Restored::Cleaned
    }
}

/// The task's shim at `address`, if it answers: the connection, the shim's pid and a pidfd
/// of it, and the task's state (None when the shim does not know the task).
async fn probe(
    address: &str,
    ns: &str,
    id: &str,
    saved_pid: Option<u32>,
) -> Result<(
    Shim,
    Option<u32>,
    Option<OwnedFd>,
    Option<api::StateResponse>,
)> {
    let shim = Shim::connect(address, ns, id).await?;
    let shim_pid = match shim.pids_of(id).await {
        Ok((pid, _)) if pid != 0 => Some(pid),
        Ok(_) | Err(Error::NotImplemented(_)) => saved_pid,
        Err(e) => return Err(e),
    };
    // The pidfd is taken before the State below: if the shim answers that, the pid is its.
    let pidfd = shim_pid.and_then(open_pidfd);
    let req = api::StateRequest {
        id: id.to_string(),
        ..Default::default()
    };
    match shim.state(req).await {
        Ok(s) => Ok((shim, shim_pid, pidfd, Some(s))),
        Err(Error::NotFound(_)) => Ok((shim, shim_pid, pidfd, None)),
        Err(e) => Err(e),
    }
}

/// The bundles under `<state>/tasks`: `(namespace, id, path)`. Hidden leftovers (a bundle
/// renamed for removal) are removed.
fn scan_bundles(root: &Path) -> Result<Vec<(String, String, PathBuf)>> {
    let mut out = Vec::new();
    let namespaces = match std::fs::read_dir(root) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("read task bundles", root, e)),
    };
    for ns in namespaces.flatten() {
        if !ns.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let ns_path = ns.path();
        let entries = std::fs::read_dir(&ns_path).map_err(|e| Error::io("read", &ns_path, e))?;
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let (ns, id) = (
                ns.file_name().to_string_lossy().into_owned(),
                entry.file_name().to_string_lossy().into_owned(),
            );
            if id.starts_with('.') {
                remove_bundle_now(&entry.path());
                continue;
            }
            out.push((ns, id, entry.path()));
        }
    }
    Ok(out)
}

/// Whether a process `pid` exists (and is not a zombie).
fn process_exists(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|i| stat.get(i + 2..i + 3))
            .is_some_and(|state| state != "Z")
    })
}

/// A pidfd of `pid`; None when the process is gone or pidfds are not supported.
fn open_pidfd(pid: u32) -> Option<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).ok()?)?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .map_err(|e| tracing::debug!(pid = pid.as_raw_nonzero().get(), error = %e, "pidfd_open"))
        .ok()
}

/// Waits until the process of `pidfd` has exited (a pidfd polls readable then).
async fn wait_for_exit(pidfd: OwnedFd) -> std::io::Result<()> {
    let fd = register_readable(pidfd)?;
    let _ready = fd.readable().await?;
    Ok(())
}

/// `fd` registered with tokio's reactor for readability.
#[allow(unsafe_code)]
fn register_readable(fd: OwnedFd) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is an open descriptor that stays open, and always the same
    // descriptor, until it is dropped; the AsyncFd owns it for its whole lifetime.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(std::io::Error::from)
}

impl Tasks {
    fn publish_dead_shim_exit(&self, ns: &str, id: &str, exit: &Exit) {
        use berth_proto::containerd::events::{TaskDelete, TaskExit};
        let exited_at = exit.exited_at.map(prost_types::Timestamp::from);
        crate::events::publish(
            &self.exchange,
            ns,
            crate::events::topics::TASK_EXIT,
            &TaskExit {
                container_id: id.to_string(),
                id: id.to_string(),
                pid: exit.pid,
                exit_status: exit.status,
                exited_at,
            },
        );
        crate::events::publish(
            &self.exchange,
            ns,
            crate::events::topics::TASK_DELETE,
            &TaskDelete {
                container_id: id.to_string(),
                pid: exit.pid,
                exit_status: exit.status,
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

fn runc_options(
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

async fn shutdown(shim: &Shim) {
    // The shim exits on Shutdown and may close the connection before it answers.
    let _ = shim
        .shutdown(api::ShutdownRequest {
            now: true,
            ..Default::default()
        })
        .await;
}

/// Runs blocking file work (fsync, directory trees) on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("blocking task: {e}")))?
}

/// [`remove_bundle_now`] on the blocking pool (unmount and recursive removal block).
async fn remove_bundle(bundle: &Path) {
    let bundle = bundle.to_path_buf();
    if let Err(e) = tokio::task::spawn_blocking(move || remove_bundle_now(&bundle)).await {
        tracing::warn!(error = %e, "remove task bundle");
    }
}

/// Removes a bundle, never reaching through anything still mounted in it: every mount
/// below the bundle (the rootfs, and what runc mounted on it when the container shared the
/// host's mount namespace) is unmounted first, found in the mount table, and the tree is
/// removed only once the table shows nothing mounted below it.
fn remove_bundle_now(bundle: &Path) {
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
    fn saved_task_round_trip_and_bundle_scan() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("tasks");
        let bundle = root.join("ns1").join("t1");
        std::fs::create_dir_all(&bundle).expect("bundle");
        assert_eq!(SavedTask::load(&bundle).expect("load"), None);
        let saved = SavedTask {
            runtime: "io.containerd.runc.v2".into(),
            config: runtime(Some("/r")),
            shim_pid: Some(42),
        };
        saved.save(&bundle).expect("save");
        assert_eq!(SavedTask::load(&bundle).expect("load"), Some(saved));
        std::fs::write(bundle.join(SavedTask::FILE), b"{").expect("corrupt");
        assert!(matches!(
            SavedTask::load(&bundle),
            Err(Error::Corrupt { .. })
        ));

        // A hidden leftover goes; a stray file is not a bundle.
        std::fs::create_dir_all(root.join("ns1").join(".t0-deleting")).expect("hidden");
        std::fs::write(root.join("ns1").join("stray"), b"").expect("stray");
        let found = scan_bundles(&root).expect("scan");
        assert_eq!(found, vec![("ns1".into(), "t1".into(), bundle)]);
        assert!(!root.join("ns1").join(".t0-deleting").exists());
        assert!(
            scan_bundles(&dir.path().join("none"))
                .expect("scan")
                .is_empty()
        );
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
