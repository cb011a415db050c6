//! The supervisor: restart policies enforced by berthd, so they hold with no client running
//! and across berthd restarts (Docker's `--restart`).
//!
//! A container's policy is its [`RESTART_LABEL`] (`no`, `always`, `on-failure[:N]`,
//! `unless-stopped`; parsed by `berth_oci::restart`), written by the client with the
//! container, or through [`Supervisor::set_policy`]. The supervisor watches `/tasks/exit`
//! (as `autoremove` does: shims keep an exit until berthd took it, so an exit during a
//! berthd outage arrives after the restart) and, when the policy says so, waits out Docker's
//! back-off ([`policy::Backoff`]) and restarts the container: the old task deleted (which
//! also takes down its network), a new one created with the old one's stdio (streams that
//! were a client's FIFOs go to the container's log file) and started.
//!
//! A user's stop is not fought: clients call [`Supervisor::mark_stopped`] before they stop
//! or kill a container, and [`Supervisor::mark_started`] before they start it (which also
//! clears the restart count, as Docker's start does). When berthd starts, containers whose
//! task stopped or vanished while it was down are started again as Docker's daemon does:
//! `always` ones in any case, `unless-stopped` ones unless a user stopped them, `on-failure`
//! ones after a failure within their limit ([`Supervisor::resume_all`]); such a start
//! resets the count, as dockerd's does.
//!
//! berth's own containers (docker-style: named by `berth/name`, not auto-remove) keep no
//! process once they exited for good, as Docker keeps none: when no restart follows an
//! exit, the supervisor records the exit status and time on the container
//! ([`EXIT_CODE_LABEL`], [`FINISHED_AT_LABEL`]) and deletes its task, so its shim exits;
//! the next start makes a new one. Containers of other clients (ctr, CRI) keep their
//! stopped task, as containerd's API promises them.
//!
//! The per-container state is a row of the `restart_state` table ([`RestartRecord`]), not
//! labels of the container: it is the daemon's bookkeeping (a counter changing on every
//! restart, a mark set through this API), so it is written without touching the client's
//! record or publishing `/containers/update` for it, and it is read in the same store.
//! The policy itself stays a label: it is the client's configuration, written with the
//! container in one transaction and visible to any containerd client. The row goes when the
//! container is deleted. Auto-remove containers are never restarted (Docker refuses the
//! two together).

mod policy;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use berth_oci::restart::RESTART_LABEL;
use berth_oci::restart::RestartPolicy;
use berth_proto::containerd::events::{ContainerDelete, TaskExit};
use prost::Message;
use redb::ReadableTable;

use crate::autoremove::{AUTO_REMOVE_LABEL, LOG_LABEL, STDIN_LABEL};
use crate::containers::{Container, Containers};
use crate::error::{Error, Result};
use crate::events::{Exchange, NoFields, topics};
use crate::filters::Filter;
use crate::metadata::{self, CONTAINERS, DbContext, RESTART_STATE, Store};
use crate::namespaces::Namespaces;
// The label that makes a container berth's own (docker-style, named).
use crate::network::NAME_LABEL;
use crate::tasks::{CreateOptions, ProcessStatus, Stdio, Tasks};

pub use policy::{Backoff, restart_on_exit, restart_stdio, start_at_boot};

/// When the container's task was last started (RFC 3339), the label clients show as
/// "Up 3 minutes": the supervisor sets it on each restart, as the client does on a start.
pub const STARTED_AT_LABEL: &str = "berth/started-at";

/// The exit status of berth's container's last run (decimal), recorded when its task is
/// retired: Docker's `State.ExitCode` of an exited container.
pub const EXIT_CODE_LABEL: &str = "berth/exit-code";
/// When that run ended (RFC 3339, nanoseconds): Docker's `State.FinishedAt`.
pub const FINISHED_AT_LABEL: &str = "berth/finished-at";

/// The exit status of a task that vanished (its shim gone) while berthd was down.
const UNKNOWN_EXIT: u32 = 255;

/// The supervisor's state of one container, kept in the `restart_state` table.
#[derive(Clone, PartialEq, Message)]
pub struct RestartRecord {
    /// Restarts made since a user last started the container.
    #[prost(uint32, tag = "1")]
    pub restart_count: u32,
    /// A user stopped the container and did not start it since.
    #[prost(bool, tag = "2")]
    pub manually_stopped: bool,
    /// When its task was last started (Unix nanoseconds): the back-off starts over once a
    /// container ran ten seconds.
    #[prost(int64, tag = "3")]
    pub last_start: i64,
    /// It was started at least once (a container only created is not started by berthd).
    #[prost(bool, tag = "4")]
    pub has_started: bool,
    /// The stdio of its last task, for a restart after that task vanished.
    #[prost(string, tag = "5")]
    pub stdout: String,
    #[prost(string, tag = "6")]
    pub stderr: String,
    #[prost(bool, tag = "7")]
    pub terminal: bool,
}

/// What [`Supervisor::get`] reports.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerState {
    pub policy: RestartPolicy,
    pub restart_count: u32,
    pub manually_stopped: bool,
    /// It exited and waits out its back-off.
    pub restarting: bool,
}

/// In memory, per container: the lock that serialises decisions about it, its back-off and
/// whether it is waiting one out.
#[derive(Default)]
struct Entry {
    lock: tokio::sync::Mutex<()>,
    backoff: Mutex<Backoff>,
    restarting: AtomicBool,
    /// Bumped by a user's start or stop: a restart decided before it is called off.
    generation: AtomicU64,
}

/// The container's task, as far as a restart cares.
enum Current {
    /// No task: never started, deleted, or vanished with its shim.
    Absent,
    /// Created, running or paused: nothing to do.
    Live,
    Stopped {
        pid: u32,
        exit_status: u32,
        exited_at: Option<SystemTime>,
        stdio: Stdio,
    },
}

/// Why a restart is considered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Occasion {
    /// An exit while berthd runs.
    Exit,
    /// berthd's start-up.
    Boot,
}

#[derive(Clone)]
pub struct Supervisor {
    store: Store,
    exchange: Exchange,
    namespaces: Namespaces,
    containers: Containers,
    tasks: Tasks,
    entries: Arc<Mutex<Entries>>,
}

/// The in-memory state of the containers seen, by `(namespace, id)`.
type Entries = HashMap<(String, String), Arc<Entry>>;

fn key(ns: &str, id: &str) -> (String, String) {
    (ns.to_string(), id.to_string())
}

/// The container's policy; a label that does not parse is logged and counts as `no`, and
/// auto-remove containers have none.
fn policy_of(ns: &str, c: &Container) -> RestartPolicy {
    if c.labels.get(AUTO_REMOVE_LABEL).map(String::as_str) == Some("true") {
        return RestartPolicy::No;
    }
    let Some(label) = c.labels.get(RESTART_LABEL) else {
        return RestartPolicy::No;
    };
    label.parse().unwrap_or_else(|e| {
        tracing::warn!(namespace = ns, id = %c.id, label = %label, error = %e, "restart policy label ignored");
        RestartPolicy::No
    })
}

/// Both output streams into the container's log file (its [`LOG_LABEL`]), as clients start
/// a detached container, with a terminal when its spec asks for one; nothing without a
/// log file.
fn log_stdio(c: &Container) -> Stdio {
    let Some(log) = c.labels.get(LOG_LABEL).filter(|l| !l.is_empty()) else {
        return Stdio::default();
    };
    let uri = format!("file://{log}?format=cri");
    let terminal = c
        .spec
        .as_ref()
        .and_then(|s| serde_json::from_slice::<serde_json::Value>(&s.value).ok())
        .and_then(|v| v["process"]["terminal"].as_bool())
        .unwrap_or(false);
    Stdio {
        stdin: c.labels.get(STDIN_LABEL).cloned().unwrap_or_default(),
        stdout: uri.clone(),
        stderr: uri,
        terminal,
    }
}

fn nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Supervisor {
    pub fn new(
        store: Store,
        exchange: Exchange,
        namespaces: Namespaces,
        containers: Containers,
        tasks: Tasks,
    ) -> Self {
        Supervisor {
            store,
            exchange,
            namespaces,
            containers,
            tasks,
            entries: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn entry(&self, ns: &str, id: &str) -> Arc<Entry> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.entry(key(ns, id)).or_default().clone()
    }

    fn forget(&self, ns: &str, id: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.remove(&key(ns, id));
    }

    /// Subscribes at once (so no exit published from now on is missed), then starts what
    /// the previous run left stopped ([`Self::resume_all`]) and handles exits in a task of
    /// its own until `stop` turns true.
    pub fn spawn(self, stop: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let filters = [
            format!("topic==\"{}\"", topics::TASK_EXIT),
            format!("topic==\"{}\"", topics::CONTAINER_DELETE),
        ];
        let events = match Filter::parse_all(&filters) {
            Ok(f) => Some(self.exchange.subscribe(f)),
            Err(e) => {
                tracing::error!(error = %e, "supervisor: bad event filter");
                None
            }
        };
        tokio::spawn(async move {
            let Some(events) = events else { return };
            let boot = self.clone();
            tokio::spawn(async move { boot.resume_all().await });
            self.run(events, stop).await;
        })
    }

    async fn run(
        self,
        mut events: crate::events::Subscription,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let envelope = tokio::select! {
                e = events.next(&NoFields) => match e {
                    Some(e) => e,
                    None => return,
                },
                _ = stop.changed() => return,
            };
            let Some(any) = envelope.event.as_ref() else {
                continue;
            };
            let ns = envelope.namespace.clone();
            if envelope.topic == topics::CONTAINER_DELETE {
                if let Ok(d) = ContainerDelete::decode(any.value.as_slice()) {
                    let this = self.clone();
                    tokio::spawn(async move { this.container_deleted(&ns, &d.id).await });
                }
                continue;
            }
            let Ok(exit) = TaskExit::decode(any.value.as_slice()) else {
                continue;
            };
            // Only the init process's exit ends the container (an exec's id differs).
            if exit.id != exit.container_id || exit.container_id.is_empty() {
                continue;
            }
            let this = self.clone();
            // One container's back-off never holds up the next event.
            tokio::spawn(async move { this.exited(&ns, &exit.container_id, exit.pid).await });
        }
    }

    async fn container_deleted(&self, ns: &str, id: &str) {
        self.forget(ns, id);
        let (n, i) = (ns.to_string(), id.to_string());
        let removed = self
            .store
            .update(move |txn| {
                let mut t = txn.open_table(RESTART_STATE).ctx("open restart_state")?;
                t.remove((n.as_str(), i.as_str()))
                    .ctx("delete restart state")?;
                Ok(())
            })
            .await;
        if let Err(e) = removed {
            tracing::warn!(namespace = ns, id, error = %e, "supervisor: forget a deleted container");
        }
    }

    /// The exit of the init process `pid` of container `id`: restarted after its back-off
    /// when the policy says so and nothing changed meanwhile.
    #[tracing::instrument(skip(self), fields(namespace = ns, id = id))]
    async fn exited(&self, ns: &str, id: &str, pid: u32) {
        let entry = self.entry(ns, id);
        let delay = {
            let _held = entry.lock.lock().await;
            match self.decide(ns, id, Some(pid), Occasion::Exit).await {
                Ok(Decision::Restart(d)) => entry
                    .backoff
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .next(d.ran_for),
                Ok(Decision::Retire(exit)) => {
                    self.retire(ns, id, exit).await;
                    return;
                }
                Ok(Decision::Nothing) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "supervisor: cannot decide on a restart");
                    return;
                }
            }
        };
        let generation = entry.generation.load(Ordering::SeqCst);
        entry.restarting.store(true, Ordering::SeqCst);
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "container exited; restarting after its back-off"
        );
        tokio::time::sleep(delay).await;
        let _held = entry.lock.lock().await;
        // Restarting until the new task runs, as Docker's state says (or until called off).
        let _done = ClearOnDrop(&entry.restarting);
        if entry.generation.load(Ordering::SeqCst) != generation {
            tracing::debug!("a user started or stopped the container meanwhile; no restart");
            return;
        }
        // It may have been removed, or its policy changed, meanwhile: decide again.
        let decided = match self.decide(ns, id, Some(pid), Occasion::Exit).await {
            Ok(Decision::Restart(d)) => d,
            Ok(Decision::Retire(exit)) => {
                self.retire(ns, id, exit).await;
                return;
            }
            Ok(Decision::Nothing) => return,
            Err(e) => {
                tracing::warn!(error = %e, "supervisor: cannot decide on a restart");
                return;
            }
        };
        if let Err(e) = self.restart(ns, id, decided, Occasion::Exit).await {
            tracing::warn!(error = %e, "supervisor: restart failed");
        }
    }

    /// Starts, once berthd is up, every container the previous run left stopped (or whose
    /// task vanished) that its policy wants running.
    pub async fn resume_all(&self) {
        let namespaces = match self.namespaces.list().await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "supervisor: cannot list namespaces; nothing restarted at start-up");
                return;
            }
        };
        let mut started = Vec::new();
        for ns in namespaces {
            let list = match self.containers.list(&ns.name, Filter::always()).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(namespace = %ns.name, error = %e, "supervisor: cannot list containers");
                    continue;
                }
            };
            for c in list {
                // berth's own containers too: one whose exit was taken but whose task was
                // not retired before berthd went down is retired now.
                if policy_of(&ns.name, &c).is_none() && !retires(&c) {
                    continue;
                }
                let (this, n) = (self.clone(), ns.name.clone());
                started.push(tokio::spawn(async move { this.resume(&n, &c.id).await }));
            }
        }
        for s in started {
            let _ = s.await;
        }
        self.prune().await;
    }

    /// Removes the rows of containers that no longer exist (deleted while an event was
    /// lost): a new container of the same id must start with a clean slate. The containers
    /// table is read in the same transaction, so a container made meanwhile keeps its row.
    async fn prune(&self) {
        let pruned = self
            .store
            .update(move |txn| {
                let containers = txn.open_table(CONTAINERS).ctx("open containers")?;
                let mut t = txn.open_table(RESTART_STATE).ctx("open restart_state")?;
                let mut gone = Vec::new();
                for item in t.iter().ctx("scan restart_state")? {
                    let (k, _) = item.ctx("read restart state")?;
                    let (ns, id) = k.value();
                    if containers.get((ns, id)).ctx("read container")?.is_none() {
                        gone.push((ns.to_string(), id.to_string()));
                    }
                }
                for (ns, id) in &gone {
                    t.remove((ns.as_str(), id.as_str()))
                        .ctx("delete restart state")?;
                }
                Ok(gone.len())
            })
            .await;
        match pruned {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "supervisor: forgot containers that are gone"),
            Err(e) => tracing::warn!(error = %e, "supervisor: prune restart states"),
        }
    }

    #[tracing::instrument(skip(self), fields(namespace = ns, id = id))]
    async fn resume(&self, ns: &str, id: &str) {
        let entry = self.entry(ns, id);
        let _held = entry.lock.lock().await;
        let decided = match self.decide(ns, id, None, Occasion::Boot).await {
            Ok(Decision::Restart(d)) => d,
            Ok(Decision::Retire(exit)) => {
                self.retire(ns, id, exit).await;
                return;
            }
            Ok(Decision::Nothing) => return,
            Err(e) => {
                tracing::warn!(error = %e, "supervisor: cannot decide on a start at start-up");
                return;
            }
        };
        tracing::info!("starting a container its restart policy wants running");
        if let Err(e) = self.restart(ns, id, decided, Occasion::Boot).await {
            tracing::warn!(error = %e, "supervisor: start at start-up failed");
        }
    }

    /// Whether container `id` is to be restarted now (with the wait before), or its
    /// exited task retired, given the exit of `pid` (None: whatever stopped it). Called
    /// with the container's lock held.
    async fn decide(
        &self,
        ns: &str,
        id: &str,
        pid: Option<u32>,
        occasion: Occasion,
    ) -> Result<Decision> {
        let container = match self.containers.get(ns, id).await {
            Ok(c) => c,
            Err(e) if e.is_not_found() => return Ok(Decision::Nothing),
            Err(e) => return Err(e),
        };
        let policy = policy_of(ns, &container);
        let retire = retires(&container);
        if policy.is_none() && !retire {
            return Ok(Decision::Nothing);
        }
        let record = self.record(ns, id).await?.unwrap_or_default();
        let mut stopped_task = None;
        let (exit_status, exited_at, stdio) = match self.current(ns, id).await? {
            Current::Live => return Ok(Decision::Nothing),
            Current::Stopped {
                pid: stopped,
                exit_status,
                exited_at,
                stdio,
            } => {
                // The exit of an earlier task: this one was handled already.
                if pid.is_some_and(|p| p != stopped && p != 0) {
                    return Ok(Decision::Nothing);
                }
                stopped_task = Some(Retired {
                    pid: stopped,
                    exit_status,
                    exited_at: exited_at.unwrap_or_else(SystemTime::now),
                });
                (exit_status, exited_at, stdio)
            }
            Current::Absent => {
                // Never started (only created) or removed by its user: nothing to restart.
                if !record.has_started || policy.is_none() {
                    return Ok(Decision::Nothing);
                }
                let stdio = if record.stdout.is_empty() && record.stderr.is_empty() {
                    // Its stdio was never seen (a client started it): its log file.
                    log_stdio(&container)
                } else {
                    Stdio {
                        stdin: String::new(),
                        stdout: record.stdout.clone(),
                        stderr: record.stderr.clone(),
                        terminal: record.terminal,
                    }
                };
                // Retired after its last run: that run's status, else unknown.
                let status = container
                    .labels
                    .get(EXIT_CODE_LABEL)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(UNKNOWN_EXIT);
                (status, None, stdio)
            }
        };
        let not_restarted = move || match stopped_task {
            Some(exit) if retire => Decision::Retire(exit),
            _ => Decision::Nothing,
        };
        if policy.is_none() {
            return Ok(not_restarted());
        }
        let wanted = match occasion {
            Occasion::Exit => restart_on_exit(
                policy,
                exit_status,
                record.manually_stopped,
                record.restart_count,
            ),
            Occasion::Boot => start_at_boot(
                policy,
                exit_status,
                record.manually_stopped,
                record.restart_count,
            ),
        };
        if !wanted {
            tracing::debug!(%policy, exit_status, manually_stopped = record.manually_stopped, restart_count = record.restart_count, "not restarted");
            return Ok(not_restarted());
        }
        let started =
            UNIX_EPOCH + Duration::from_nanos(u64::try_from(record.last_start).unwrap_or(0));
        let ran_for = exited_at
            .unwrap_or_else(SystemTime::now)
            .duration_since(started)
            .unwrap_or_default();
        let log = container.labels.get(LOG_LABEL).map(String::as_str);
        let stdin = container.labels.get(STDIN_LABEL).map(String::as_str);
        Ok(Decision::Restart(Decided {
            ran_for,
            stdio: restart_stdio(&stdio, log, stdin),
            record,
        }))
    }

    /// Records the exit of container `id`'s last run on it and deletes its task (the shim
    /// exits): unless a client replaced the task meanwhile. Called with its lock held.
    async fn retire(&self, ns: &str, id: &str, exit: Retired) {
        // A task whose start failed leaves the container created, as Docker's; its
        // client deletes it.
        if !self.tasks.was_started(ns, id, exit.pid) {
            return;
        }
        let finished = humantime::format_rfc3339_nanos(exit.exited_at).to_string();
        let update = Container {
            id: id.to_string(),
            labels: [
                (EXIT_CODE_LABEL.to_string(), exit.exit_status.to_string()),
                (FINISHED_AT_LABEL.to_string(), finished),
            ]
            .into(),
            ..Default::default()
        };
        let paths = vec![
            format!("labels.{EXIT_CODE_LABEL}"),
            format!("labels.{FINISHED_AT_LABEL}"),
        ];
        // First: a task gone without its exit recorded would read as never started.
        if let Err(e) = self.containers.update(ns, update, paths).await {
            if !e.is_not_found() {
                tracing::warn!(namespace = ns, id, error = %e, "supervisor: record an exit");
            }
            return;
        }
        match self.tasks.delete_exited(ns, id, exit.pid).await {
            Ok(true) => tracing::debug!(
                namespace = ns,
                id,
                exit_status = exit.exit_status,
                "exited task retired"
            ),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(namespace = ns, id, error = %e, "supervisor: retire an exited task")
            }
        }
    }

    /// The container's task as a restart sees it.
    async fn current(&self, ns: &str, id: &str) -> Result<Current> {
        match self.tasks.state(ns, id, "").await {
            Ok(s) if s.status == ProcessStatus::Stopped => Ok(Current::Stopped {
                pid: s.pid,
                exit_status: s.exit_status,
                exited_at: s.exited_at.map(|t| {
                    UNIX_EPOCH
                        + Duration::new(
                            u64::try_from(t.seconds).unwrap_or(0),
                            u32::try_from(t.nanos).unwrap_or(0),
                        )
                }),
                stdio: Stdio {
                    stdin: s.stdin,
                    stdout: s.stdout,
                    stderr: s.stderr,
                    terminal: s.terminal,
                },
            }),
            Ok(_) => Ok(Current::Live),
            Err(e) if e.is_not_found() => Ok(Current::Absent),
            Err(e) => Err(e),
        }
    }

    /// Replaces the stopped (or vanished) task of `id` with a new one, started. The count
    /// and start time are recorded first, so a crash in between still counts the restart.
    async fn restart(&self, ns: &str, id: &str, d: Decided, occasion: Occasion) -> Result<()> {
        match self.tasks.delete(ns, id).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let mut record = d.record;
        match occasion {
            // Docker's daemon starts them as a user's start would (dockerd 20.10, compared):
            // count reset, a user's stop of an `always` container forgotten.
            Occasion::Boot => {
                record.restart_count = 0;
                record.manually_stopped = false;
            }
            Occasion::Exit => record.restart_count = record.restart_count.saturating_add(1),
        }
        let now = SystemTime::now();
        record.last_start = nanos(now);
        record.has_started = true;
        record.stdout = d.stdio.stdout.clone();
        record.stderr = d.stdio.stderr.clone();
        record.terminal = d.stdio.terminal;
        self.save(ns, id, record.clone()).await?;
        let opts = CreateOptions {
            stdio: d.stdio,
            ..Default::default()
        };
        self.tasks.create(ns, id, opts).await?;
        if let Err(e) = self.tasks.start(ns, id, "").await {
            let _ = self.tasks.delete(ns, id).await;
            return Err(e);
        }
        let label = humantime::format_rfc3339_nanos(now).to_string();
        let update = Container {
            id: id.to_string(),
            labels: [(STARTED_AT_LABEL.to_string(), label)].into(),
            ..Default::default()
        };
        if let Err(e) = self
            .containers
            .update(ns, update, vec![format!("labels.{STARTED_AT_LABEL}")])
            .await
        {
            tracing::warn!(namespace = ns, id, error = %e, "supervisor: record the start time");
        }
        tracing::info!(
            namespace = ns,
            id,
            restart_count = record.restart_count,
            "container restarted by its restart policy"
        );
        Ok(())
    }

    async fn record(&self, ns: &str, id: &str) -> Result<Option<RestartRecord>> {
        let (n, i) = (ns.to_string(), id.to_string());
        self.store
            .view(move |txn| {
                let t = txn.open_table(RESTART_STATE).ctx("open restart_state")?;
                let v = t.get((n.as_str(), i.as_str())).ctx("read restart state")?;
                v.map(|v| metadata::decode("restart state", &i, v.value()))
                    .transpose()
            })
            .await
    }

    /// Stores the row of container `id`, which must exist (checked in the same transaction:
    /// a row never outlives its container, whose deletion removes it).
    async fn save(&self, ns: &str, id: &str, r: RestartRecord) -> Result<()> {
        let (n, i) = (ns.to_string(), id.to_string());
        self.store
            .update(move |txn| {
                let containers = txn.open_table(CONTAINERS).ctx("open containers")?;
                if containers
                    .get((n.as_str(), i.as_str()))
                    .ctx("read container")?
                    .is_none()
                {
                    return Err(Error::not_found(format!(
                        "container {i:?} in namespace {n:?}"
                    )));
                }
                let mut t = txn.open_table(RESTART_STATE).ctx("open restart_state")?;
                t.insert((n.as_str(), i.as_str()), r.encode_to_vec().as_slice())
                    .ctx("write restart state")?;
                Ok(())
            })
            .await
    }

    /// Changes the stored state of an existing container under its lock, calling off a
    /// restart it waits for (a user's start or stop overrides it).
    async fn change(&self, ns: &str, id: &str, f: impl FnOnce(&mut RestartRecord)) -> Result<()> {
        self.containers.get(ns, id).await?;
        let entry = self.entry(ns, id);
        let _held = entry.lock.lock().await;
        entry.generation.fetch_add(1, Ordering::SeqCst);
        entry.restarting.store(false, Ordering::SeqCst);
        let mut record = self.record(ns, id).await?.unwrap_or_default();
        f(&mut record);
        self.save(ns, id, record).await
    }

    /// A user is stopping (or killing) container `id`: its exit is not restarted, and an
    /// `unless-stopped` one stays stopped when berthd restarts.
    pub async fn mark_stopped(&self, ns: &str, id: &str) -> Result<()> {
        self.change(ns, id, |r| r.manually_stopped = true).await
    }

    /// A user is starting container `id`: the stop mark and the restart count are cleared
    /// and its back-off starts over.
    pub async fn mark_started(&self, ns: &str, id: &str) -> Result<()> {
        self.change(ns, id, |r| {
            r.manually_stopped = false;
            r.restart_count = 0;
            r.has_started = true;
            r.last_start = nanos(SystemTime::now());
        })
        .await?;
        let entry = self.entry(ns, id);
        entry
            .backoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reset();
        Ok(())
    }

    /// The policy and state of container `id`.
    pub async fn get(&self, ns: &str, id: &str) -> Result<ContainerState> {
        let container = self.containers.get(ns, id).await?;
        let record = self.record(ns, id).await?.unwrap_or_default();
        let restarting = self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key(ns, id))
            .is_some_and(|e| e.restarting.load(Ordering::SeqCst));
        Ok(ContainerState {
            policy: policy_of(ns, &container),
            restart_count: record.restart_count,
            manually_stopped: record.manually_stopped,
            restarting,
        })
    }

    /// Sets container `id`'s restart policy (`on-failure:3`...), refused as Docker refuses
    /// it: an invalid policy, or one on an auto-remove container.
    pub async fn set_policy(&self, ns: &str, id: &str, policy: &str) -> Result<()> {
        let parsed: RestartPolicy = policy.parse().map_err(|e| Error::invalid(format!("{e}")))?;
        let container = self.containers.get(ns, id).await?;
        if !parsed.is_none()
            && container.labels.get(AUTO_REMOVE_LABEL).map(String::as_str) == Some("true")
        {
            return Err(Error::invalid(
                "Restart policy cannot be updated because AutoRemove is enabled for the container",
            ));
        }
        let update = Container {
            id: id.to_string(),
            labels: [(RESTART_LABEL.to_string(), parsed.to_string())].into(),
            ..Default::default()
        };
        self.containers
            .update(ns, update, vec![format!("labels.{RESTART_LABEL}")])
            .await?;
        Ok(())
    }
}

/// Clears a flag when dropped.
struct ClearOnDrop<'a>(&'a AtomicBool);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// What an exit (or berthd's start-up) leads to.
enum Decision {
    Nothing,
    Restart(Decided),
    /// No restart, and the container keeps no process once exited.
    Retire(Retired),
}

/// The exit of a task to retire.
struct Retired {
    pid: u32,
    exit_status: u32,
    exited_at: SystemTime,
}

/// Whether container `c` is berth's own and so keeps no task once exited (an auto-remove
/// one goes whole, by `autoremove`).
fn retires(c: &Container) -> bool {
    c.labels.contains_key(NAME_LABEL)
        && c.labels.get(AUTO_REMOVE_LABEL).map(String::as_str) != Some("true")
}

/// A restart decided on.
struct Decided {
    /// How long the stopped task ran (the back-off starts over after ten seconds).
    ran_for: Duration,
    stdio: Stdio,
    record: RestartRecord,
}
