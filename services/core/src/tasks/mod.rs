//! The task core: every task operation (create, start, kill, exec, pause, resume, pids,
//! update, resize, close-io, wait, stats, delete) is a method of [`Tasks`]. Each keeps a
//! daemon-side status of the task's init process ([`status`]) whose `can_*` rules refuse
//! what cannot succeed, and each notices a dead shim (the task is cleaned up and is then
//! NotFound). Shims are reached only through [`crate::runtime::Shim`]; a shim may serve
//! several tasks (a pod: the tasks whose spec names the same sandbox).
//!
//! The map of tasks is locked only briefly (never across an await); each task has its own
//! lock that serialises its creation and deletion. Bundles live under
//! `<state>/tasks/<ns>/<id>/`.
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

mod bundle;
mod ops;
mod restore;
mod status;

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use berth_proto::ttrpc::protobuf::Message;
use berth_proto::ttrpc::protobuf::well_known_types::any::Any as PbAny;
use berth_snapshotter::Mount;

use crate::config::RuntimeConfig;
use crate::containers::Containers;
use crate::error::{Error, Result};
use crate::events::Exchange;
use crate::network::Networks;
use crate::runtime::{RuntimeManager, Shim, ShimTask};
use crate::snapshots::Snapshotters;
use crate::types::AnyValue;

pub use crate::runtime::{
    ExecOptions, Exit, PidInfo, ProcessState, ProcessStatus, ShimTime, Stdio,
};
pub use bundle::SavedTask;
pub use ops::{Metric, TaskFields};
pub use status::TaskStatus;

use bundle::{blocking, remove_bundle, runc_options};

/// How long start-up waits for one shim to answer before it counts as dead.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long start-up waits, once more, for a shim that is slow but whose process lives.
const SLOW_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one `shim delete` may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(15);
/// The exit status reported for a task whose shim is gone and could not say (containerd's).
const UNKNOWN_EXIT: u32 = 255;

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
    /// What the daemon knows of the init process (see [`status`]).
    status: Mutex<TaskStatus>,
    /// Its init process was started (or asked to be: set before the shim's Start, so an
    /// exit racing the answer finds it); a task only created and deleted never was.
    started: std::sync::atomic::AtomicBool,
    /// Held while the task is being deleted; true once it is.
    lock: tokio::sync::Mutex<bool>,
    /// Held while the task's network is being taken down.
    network: tokio::sync::Mutex<()>,
    /// The watcher that cleans up when the shim dies.
    _watch: Option<AbortOnDrop>,
}

/// What a Create asks for, apart from the container.
#[derive(Debug, Default, Clone)]
pub struct CreateOptions {
    pub rootfs: Vec<Mount>,
    pub stdio: Stdio,
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
    /// Where a task's container joins its network at create and leaves it at delete.
    networks: Networks,
    /// The volumes a task's container mounts are filled from its image at create (copy-up).
    volumes: Option<crate::volumes::Volumes>,
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
    status: TaskStatus,
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
        networks: Networks,
    ) -> Self {
        Tasks {
            manager,
            containers,
            snapshotters,
            networks,
            volumes: None,
            root: state.join("tasks"),
            state: state.to_path_buf(),
            exchange,
            table: Arc::new(Mutex::new(Table::default())),
        }
    }

    /// The same tasks, with new volumes filled from the image at task create (copy-up).
    pub fn with_volumes(mut self, volumes: crate::volumes::Volumes) -> Self {
        self.volumes = Some(volumes);
        self
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
                started: (t.status.status != ProcessStatus::Created).into(),
                status: Mutex::new(t.status),
                lock: tokio::sync::Mutex::new(false),
                network: tokio::sync::Mutex::new(()),
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
            .create_networked(ns, id, container, &runtime_name, &runtime, opts)
            .await;
        let mut table = self.table();
        table.creating.remove(&key(ns, id));
        let (task, pid) = result?;
        table.tasks.insert(key(ns, id), task.clone());
        Ok((task, pid))
    }

    /// [`Self::create_inner`] with the container's network joined first, as its labels ask
    /// (and left again when the create fails).
    async fn create_networked(
        &self,
        ns: &str,
        id: &str,
        mut container: crate::containers::Container,
        runtime_name: &str,
        runtime: &RuntimeConfig,
        opts: CreateOptions,
    ) -> Result<(Arc<Task>, u32)> {
        let joined = match container.spec.as_mut().filter(|s| !s.value.is_empty()) {
            Some(spec) => {
                let began = std::time::Instant::now();
                let joined = self
                    .networks
                    .join(ns, id, &container.labels, &spec.value)
                    .await?;
                tracing::debug!(
                    namespace = ns,
                    id,
                    ms = began.elapsed().as_secs_f64() * 1000.0,
                    "joined the network"
                );
                if let Some(bytes) = &joined {
                    spec.value = bytes.clone();
                }
                joined.is_some()
            }
            None => false,
        };
        let result = match self.copy_up(ns, id, &container, &opts.rootfs).await {
            Ok(()) => {
                self.create_inner(ns, id, &container, runtime_name, runtime, opts)
                    .await
            }
            Err(e) => Err(e),
        };
        if result.is_err() && joined {
            self.leave_network(ns, id).await;
        }
        result
    }

    /// Releases the network of task `id` whose init process `pid` exited: its address, ports
    /// and names go (as Docker releases a stopped container's); the next start joins again.
    /// Nothing when the task was deleted meanwhile (a new one may own the name).
    pub async fn release_network(&self, ns: &str, id: &str, pid: u32) {
        let Ok(task) = self.get(ns, id) else {
            return;
        };
        if task.status().pid != pid {
            return;
        }
        let _held = task.network.lock().await;
        // A deleted task left its network before it left the table.
        if self.get(ns, id).is_ok_and(|t| Arc::ptr_eq(&t, &task)) {
            self.leave_network(ns, id).await;
        }
    }

    /// [`Self::leave_network`] of `task`, one at a time.
    async fn leave_task_network(&self, task: &Task) {
        let _held = task.network.lock().await;
        self.leave_network(&task.namespace, &task.id).await;
    }

    /// Fills the new, empty volumes the container mounts from its image (Docker's
    /// copy-up), before the shim mounts anything.
    async fn copy_up(
        &self,
        ns: &str,
        id: &str,
        container: &crate::containers::Container,
        given: &[Mount],
    ) -> Result<()> {
        let Some(volumes) = &self.volumes else {
            return Ok(());
        };
        let Some(spec) = container.spec.as_ref().filter(|s| !s.value.is_empty()) else {
            return Ok(());
        };
        if !container.labels.contains_key(crate::volumes::VOLUMES_LABEL) {
            return Ok(());
        }
        let rootfs = self.task_rootfs(ns, container, given).await?;
        volumes
            .copy_up(ns, id, &container.labels, &spec.value, &rootfs)
            .await
    }

    /// Takes down the task's network, if it has one; a failure is logged (the attachment
    /// stays recorded, and the next start-up's sweep tries again).
    async fn leave_network(&self, ns: &str, id: &str) {
        if let Err(e) = self.networks.leave(ns, id).await {
            tracing::warn!(namespace = ns, id, error = %e, "take down the task's network");
        }
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
        let rootfs = self.task_rootfs(ns, container, &opts.rootfs).await?;
        let given = opts
            .options
            .clone()
            .or_else(|| container.runtime.as_ref().and_then(|r| r.options.clone()));
        let options = runc_options(given, runtime, &self.state)?;
        let bundle = self.root.join(ns).join(id);
        clear_leftover_bundle(ns, id, &bundle).await?;
        let mut saved = SavedTask {
            runtime: runtime_name.to_string(),
            config: runtime.clone(),
            shim_pid: None,
        };
        write_bundle(&bundle, &saved, &spec.value).await?;
        let shim = self
            .start_task_shim(ns, id, runtime, &bundle, options.as_ref())
            .await?;
        let (shim_pid, pidfd) = watchable_shim_pid(&shim, ns, id).await;
        saved.shim_pid = shim_pid;
        let request = ShimTask {
            id: id.to_string(),
            bundle: bundle.display().to_string(),
            rootfs,
            stdio: opts.stdio,
            options,
        };
        let pid = match create_in_shim(&shim, &bundle, &saved, request).await {
            Ok(pid) => pid,
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
            status: TaskStatus::created(pid),
        });
        Ok((task, pid))
    }

    /// The task's root filesystem: the mounts the request gives, else the mounts of the
    /// container's snapshot (none when it has no snapshot).
    async fn task_rootfs(
        &self,
        ns: &str,
        container: &crate::containers::Container,
        given: &[Mount],
    ) -> Result<Vec<Mount>> {
        if !given.is_empty() || container.snapshot_key.is_empty() {
            return Ok(given.to_vec());
        }
        let (n, k) = (ns.to_string(), container.snapshot_key.clone());
        self.snapshotters
            .run(&container.snapshotter, move |s| s.mounts(&n, &k))
            .await
    }

    /// Encodes the runtime options (the shim reads them on its stdin) and starts the shim.
    /// On an error the bundle is removed.
    async fn start_task_shim(
        &self,
        ns: &str,
        id: &str,
        runtime: &RuntimeConfig,
        bundle: &Path,
        options: Option<&PbAny>,
    ) -> Result<Shim> {
        let stdin = match options.map(|o| o.write_to_bytes()).transpose() {
            Ok(v) => v,
            Err(e) => {
                remove_bundle(bundle).await;
                return Err(Error::Internal(format!(
                    "encode the runtime options of task {id}: {e}"
                )));
            }
        };
        match self
            .manager
            .start_shim(runtime, ns, id, bundle, stdin)
            .await
        {
            Ok(s) => Ok(s),
            Err(e) => {
                remove_bundle(bundle).await;
                Err(e)
            }
        }
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
        self.delete_task(&task).await
    }

    /// Whether the task of `id` whose init process is `pid` was started (not only created).
    pub fn was_started(&self, ns: &str, id: &str, pid: u32) -> bool {
        self.get(ns, id).is_ok_and(|t| {
            t.status().pid == pid && t.started.load(std::sync::atomic::Ordering::SeqCst)
        })
    }

    /// Deletes the task of `id` if it is still the one whose init process `pid` exited
    /// (a client may have replaced it meanwhile); Ok(false) when it is not.
    pub async fn delete_exited(&self, ns: &str, id: &str, pid: u32) -> Result<bool> {
        let task = match self.get(ns, id) {
            Ok(t) => t,
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e),
        };
        if task.status().pid != pid {
            return Ok(false);
        }
        match self.delete_task(&task).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn delete_task(&self, task: &Arc<Task>) -> Result<Exit> {
        let (ns, id) = (task.namespace.as_str(), task.id.as_str());
        let mut deleted = task.lock.lock().await;
        if *deleted {
            return Err(not_found(ns, id));
        }
        let process = async {
            match task.shim.delete_process(id, "").await {
                Ok(exit) => Ok(exit),
                // The shim is gone (crashed, killed): clean up with `shim delete`.
                Err(Error::Unavailable(m)) if !task.shim.alive().await => {
                    tracing::warn!(namespace = ns, id, error = %m, "shim unreachable; running shim delete");
                    Ok(self
                        .clean_up_dead(ns, id, &task.runtime_config, &task.bundle)
                        .await)
                }
                Err(e) => Err(e),
            }
        };
        // An exited task's network goes while the shim deletes its process (neither
        // touches what the other does): the DEL is off a `run --rm`'s path.
        let exited = task.status().is_final();
        let network = async {
            if exited {
                self.leave_task_network(task).await;
            }
        };
        let began = std::time::Instant::now();
        let (exit, ()) = tokio::join!(
            async {
                let exit = process.await;
                tracing::debug!(
                    namespace = ns,
                    id,
                    ms = began.elapsed().as_secs_f64() * 1000.0,
                    "process deleted"
                );
                exit
            },
            async {
                network.await;
                tracing::debug!(
                    namespace = ns,
                    id,
                    ms = began.elapsed().as_secs_f64() * 1000.0,
                    "network left"
                );
            }
        );
        let exit = exit?;
        // Gone before the task leaves the table (a new task of the id may join at once);
        // nothing to do if it went above.
        self.leave_task_network(task).await;
        *deleted = true;
        self.remove_from_table(task);
        // A shim that still hosts other tasks (a pod's) stays: nothing to shut down, and
        // nothing to wait for.
        let shared = task
            .shim_pid
            .is_some_and(|pid| self.table().tasks.values().any(|t| t.shim_pid == Some(pid)));
        if !shared {
            shutdown(&task.shim).await;
            // A new task of the same id starts a shim on the same socket path: the old one
            // must be gone first, or the new start could find (and reuse) the old listener.
            wait_gone(task.shim_pid).await;
        }
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
        self.leave_task_network(task).await;
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

/// Whether a process `pid` exists (and is not a zombie).
pub(super) fn process_exists(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|i| stat.get(i + 2..i + 3))
            .is_some_and(|state| state != "Z")
    })
}

/// A pidfd of `pid`; None when the process is gone or pidfds are not supported.
pub(super) fn open_pidfd(pid: u32) -> Option<OwnedFd> {
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

/// Removes a bundle no task holds (the create calling this reserved the id): the leftover
/// of a create that never finished. It goes, mounts and all, so the id is never wedged;
/// AlreadyExists if it could not be removed.
async fn clear_leftover_bundle(ns: &str, id: &str, bundle: &Path) -> Result<()> {
    if !bundle.exists() {
        return Ok(());
    }
    tracing::warn!(namespace = ns, id, bundle = %bundle.display(), "removing a leftover bundle");
    remove_bundle(bundle).await;
    if bundle.exists() {
        return Err(Error::already_exists(format!(
            "bundle {} of task {id} (a leftover that could not be removed)",
            bundle.display()
        )));
    }
    Ok(())
}

/// Writes the bundle's directories, config.json and runtime.json (fsynced), on the
/// blocking pool. On an error the bundle is removed.
async fn write_bundle(bundle: &Path, saved: &SavedTask, spec: &[u8]) -> Result<()> {
    let written = {
        let (bundle, saved, spec) = (bundle.to_path_buf(), saved.clone(), spec.to_vec());
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
        remove_bundle(bundle).await;
        return Err(e);
    }
    Ok(())
}

/// The shim's pid and a pidfd of it, to watch it and to find it again after a restart;
/// none when the shim does not say.
async fn watchable_shim_pid(shim: &Shim, ns: &str, id: &str) -> (Option<u32>, Option<OwnedFd>) {
    match shim.pids_of(id).await {
        Ok((pid, _)) if pid != 0 => (Some(pid), open_pidfd(pid)),
        Ok(_) => (None, None),
        Err(e) => {
            tracing::debug!(namespace = ns, id, error = %e, "shim Connect failed; not watching the shim");
            (None, None)
        }
    }
}

/// Records the shim's pid in runtime.json (when known), then creates the task in the shim.
/// Returns the init pid; the caller undoes the shim and bundle on an error.
async fn create_in_shim(
    shim: &Shim,
    bundle: &Path,
    saved: &SavedTask,
    request: ShimTask,
) -> Result<u32> {
    if saved.shim_pid.is_some() {
        let (b, sv) = (bundle.to_path_buf(), saved.clone());
        blocking(move || sv.save(&b)).await?;
    }
    shim.create_task(request).await
}

async fn shutdown(shim: &Shim) {
    shim.shut_down().await;
}

/// Waits (at most two seconds) until process `pid` is gone or a zombie: woken by its
/// pidfd where the kernel has them, else by looking every 5 ms.
async fn wait_gone(pid: Option<u32>) {
    let Some(pid) = pid else {
        return;
    };
    let limit = Duration::from_secs(2);
    if let Some(pidfd) = open_pidfd(pid) {
        let _ = tokio::time::timeout(limit, wait_for_exit(pidfd)).await;
        return;
    }
    let stat = PathBuf::from(format!("/proc/{pid}/stat"));
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        match tokio::fs::read_to_string(&stat).await {
            // The state follows the parenthesised command name.
            Ok(text)
                if text
                    .rsplit_once(") ")
                    .is_some_and(|(_, rest)| !rest.starts_with('Z')) =>
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests;
