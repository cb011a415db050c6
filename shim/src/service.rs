//! The `containerd.task.v2.Task` service: one shim serves the containers of its group
//! (usually one). The ttrpc methods convert, check the process state and call the runtime;
//! events go to the daemon through the [`EventQueue`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use containerd_shim::ExitSignal;
use containerd_shim_protos::api;
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::oci::{Options, ProcessDetails};
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::{self, r#async::TtrpcContext};
use containerd_shim_protos::types::task::ProcessInfo;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cgroups::Cgroup;
use crate::error::{Result, ShimError};
use crate::events::EventQueue;
use crate::io::{self, ConsoleSocket, ProcessIo, StdioPaths};
use crate::oom::OomWatch;
use crate::process::{LiveExec, LiveExecs, Process, SavedExit, Status};
use crate::reaper::{Exit, Reaper};
use crate::runc::{ChildStdio, Runc, RuntimeConfig};

/// The type of the `Info` of an exec's entry in Pids.
const PROCESS_DETAILS: &str = "containerd.runc.v1.ProcessDetails";

/// How long runc may take to hand over a pty master.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(10);

struct Container {
    id: String,
    bundle: PathBuf,
    runc: Runc,
    rootfs_mounted: bool,
    /// The init is started by the shim itself rather than by `runc start`
    /// (`Runc::start_directly`).
    start_directly: bool,
    init: Arc<Process>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
    /// The execs that started and whose exits were not announced yet.
    live_execs: LiveExecs,
    /// The init's cgroup, found at create (None when it could not be found).
    cgroup: Option<Cgroup>,
    /// Publishes /tasks/oom while the container lives.
    _oom: Option<OomWatch>,
}

impl Container {
    fn process(&self, exec_id: &str) -> Result<Arc<Process>> {
        if exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        lock(&self.execs)
            .get(exec_id)
            .cloned()
            .ok_or_else(|| ShimError::NotFound(format!("exec {exec_id} of {}", self.id)))
    }

    fn rootfs(&self) -> PathBuf {
        self.bundle.join("rootfs")
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn timestamp(at: SystemTime) -> MessageField<Timestamp> {
    MessageField::some(Timestamp::from(at))
}

struct Inner {
    namespace: String,
    events: EventQueue,
    reaper: Reaper,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    exit: Arc<ExitSignal>,
}

impl Inner {
    fn container(&self, id: &str) -> Result<Arc<Container>> {
        lock(&self.containers)
            .get(id)
            .cloned()
            .ok_or_else(|| ShimError::NotFound(format!("container {id}")))
    }

    /// Queues an event for the daemon; never waits for it.
    fn publish<E: crate::events::Event>(&self, topic: &str, event: &E) {
        self.events.publish(topic, event);
    }

    /// Waits for `process` to exit, records it and tells the daemon: not before the event
    /// of the start the exit ends (see [`Process::hold_exit`]), and for a container's init
    /// not before the exits of its execs (see [`InitExit`]).
    fn watch_exit(self: &Arc<Self>, process: Arc<Process>, pid: u32, role: ExitRole) {
        let exited = self.reaper.wait(pid as i32);
        let inner = self.clone();
        tokio::spawn(async move {
            let exit = exited.await.unwrap_or(Exit {
                status: 255,
                at: SystemTime::now(),
            });
            if let ExitRole::Init(init) = &role {
                init.execs.close();
                init.save(&process, pid, exit).await;
            }
            process.exit_released().await;
            let live = match role {
                ExitRole::Init(init) => {
                    init.settle(&process).await;
                    None
                }
                ExitRole::Exec(live) => Some(live),
            };
            process.set_exited(exit).await;
            let id = if process.exec_id.is_empty() {
                process.container_id.clone()
            } else {
                process.exec_id.clone()
            };
            let event = TaskExit {
                container_id: process.container_id.clone(),
                id,
                pid,
                exit_status: exit.status,
                exited_at: timestamp(exit.at),
                ..Default::default()
            };
            inner.publish(topics::TASK_EXIT_EVENT_TOPIC, &event);
            // Counted until its exit is out: the init's exit waits for it.
            drop(live);
        });
    }

    /// Refuses a create request without an id, for a container the shim has, or restoring
    /// a checkpoint.
    fn check_create(&self, req: &api::CreateTaskRequest) -> Result<()> {
        if req.id.is_empty() {
            return Err(ShimError::InvalidArgument(
                "container id must not be empty".into(),
            ));
        }
        if lock(&self.containers).contains_key(&req.id) {
            return Err(ShimError::AlreadyExists(format!("container {}", req.id)));
        }
        if !req.checkpoint.is_empty() {
            return Err(ShimError::Unimplemented(format!(
                "restore of container {} from a checkpoint: containerd-shim-berth-v2 does not checkpoint",
                req.id
            )));
        }
        Ok(())
    }

    /// Publishes /tasks/oom for container `id` while the returned watch lives.
    fn watch_oom(&self, cgroup: &Cgroup, id: &str) -> Option<OomWatch> {
        let (events, container_id) = (self.events.clone(), id.to_string());
        let on_oom = move || {
            let event = TaskOOM {
                container_id: container_id.clone(),
                ..Default::default()
            };
            events.publish(topics::TASK_OOM_EVENT_TOPIC, &event);
        };
        crate::oom::watch(cgroup, on_oom)
            .inspect_err(|e| log::warn!("no OOM events for container {id}: {e}"))
            .ok()
    }

    /// Sets up stdio, runs `launch` (runc create / exec) with it, and returns the new
    /// process's pid (as `launch` returns it, else from `pid_file`) and the shim's side of
    /// its stdio.
    async fn launch<F, Fut>(
        &self,
        container_id: &str,
        stdio: &StdioPaths,
        pid_file: &Path,
        launch: F,
    ) -> Result<(u32, ProcessIo)>
    where
        F: FnOnce(Option<PathBuf>, ChildStdio) -> Fut,
        Fut: std::future::Future<Output = Result<Option<u32>>>,
    {
        if stdio.terminal {
            let socket = ConsoleSocket::new()?;
            let path = socket.path.clone();
            let master = tokio::spawn(socket.receive());
            let launched = match launch(Some(path.clone()), ChildStdio::default()).await {
                Ok(pid) => pid,
                Err(e) => {
                    master.abort();
                    let _ = std::fs::remove_file(&path);
                    return Err(e);
                }
            };
            let master = tokio::time::timeout(CONSOLE_TIMEOUT, master)
                .await
                .map_err(|_| ShimError::Io {
                    context: format!("terminal of {container_id}"),
                    source: std::io::Error::other("runc sent no pty master"),
                })?
                .map_err(|e| ShimError::Io {
                    context: format!("terminal of {container_id}"),
                    source: std::io::Error::other(e.to_string()),
                })??;
            let io = io::setup_console(master, stdio)?;
            let pid = match launched {
                Some(pid) => pid,
                None => read_pid(pid_file)?,
            };
            Ok((pid, io))
        } else {
            let (child, mut io) = io::setup_pipes(stdio, container_id, &self.namespace)?;
            io.logger_ready().await?;
            // `child` moves into runc; our copies of the container's ends close after it.
            let pid = match launch(None, child).await? {
                Some(pid) => pid,
                None => read_pid(pid_file)?,
            };
            Ok((pid, io))
        }
    }
}

/// Whose exit [`Inner::watch_exit`] announces.
enum ExitRole {
    Init(InitExit),
    /// An exec, counted among its container's live execs until its exit is announced.
    Exec(LiveExec),
}

/// What comes between a container's init exit and its announcement.
struct InitExit {
    /// Where the exit is saved as soon as it is reaped (before the daemon hears of it,
    /// which may wait for the start's event and the execs' exits).
    bundle: PathBuf,
    /// The init's runtime when the container shares a PID namespace: once its init is gone,
    /// whatever else runs in the container is killed (through the runtime's `kill --all`,
    /// which walks the container's cgroup), as containerd's shim does, so no process
    /// outlives the exit and holds its output open.
    sweep: Option<Runc>,
    /// The container's execs: their exits are announced before the init's.
    execs: LiveExecs,
}

impl InitExit {
    async fn save(&self, process: &Process, pid: u32, exit: Exit) {
        let saved = SavedExit {
            pid,
            status: exit.status,
            exited_at: exit.at,
        };
        let bundle = self.bundle.clone();
        // fsync may be slow on a busy disk: off the runtime's one thread.
        if let Err(e) = blocking("save the exit", move || saved.save(&bundle)).await {
            log::error!("save the exit of {}: {e}", process.describe());
        }
    }

    /// Once the start's event is out: kills what is left (see `sweep`) and waits until the
    /// execs' exits are announced.
    async fn settle(self, process: &Process) {
        if let Some(runc) = self.sweep
            && let Err(e) = runc
                .kill(&process.container_id, Signal::SIGKILL as u32, true)
                .await
        {
            log::warn!("kill the processes left in {}: {e}", process.describe());
        }
        self.execs.none_live().await;
    }
}

fn create_event(req: &api::CreateTaskRequest, stdio: StdioPaths, pid: u32) -> TaskCreate {
    TaskCreate {
        container_id: req.id.clone(),
        bundle: req.bundle.clone(),
        rootfs: req.rootfs.clone(),
        io: MessageField::some(TaskIO {
            stdin: stdio.stdin,
            stdout: stdio.stdout,
            stderr: stdio.stderr,
            terminal: stdio.terminal,
            ..Default::default()
        }),
        checkpoint: req.checkpoint.clone(),
        pid,
        ..Default::default()
    }
}

/// The runtime a create request asks for (its runc options, when it has them).
fn runtime_config(req: &api::CreateTaskRequest, namespace: &str) -> Result<RuntimeConfig> {
    let options = match req.options.as_ref() {
        Some(any) if any.type_url.ends_with("containerd.runc.v1.Options") => {
            Options::parse_from_bytes(&any.value)?
        }
        _ => Options::default(),
    };
    Ok(RuntimeConfig::new(
        &options.binary_name,
        &options.root,
        options.systemd_cgroup,
        namespace,
    ))
}

fn rootfs_mounts(req: &api::CreateTaskRequest) -> Vec<berth_snapshotter::Mount> {
    req.rootfs
        .iter()
        .map(|m| berth_snapshotter::Mount {
            kind: m.type_.clone(),
            source: m.source.clone(),
            options: m.options.clone(),
        })
        .collect()
}

/// Saves the runtime's config in the bundle, then mounts the rootfs there when the request
/// names mounts: blocking work (an fsync, mount(2), perhaps a mount(8) to wait for), run on
/// the blocking pool.
fn prepare_bundle(
    config: &RuntimeConfig,
    bundle: &Path,
    id: &str,
    mounts: &[berth_snapshotter::Mount],
) -> Result<()> {
    config.save(bundle)?;
    if mounts.is_empty() {
        return Ok(());
    }
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs)
        .map_err(ShimError::io(format!("create {}", rootfs.display())))?;
    berth_snapshotter::mount::mount_all(mounts, &rootfs).map_err(|source| ShimError::Mount {
        id: id.to_string(),
        source,
    })
}

fn read_pid(path: &Path) -> Result<u32> {
    let text =
        std::fs::read_to_string(path).map_err(ShimError::io(format!("read {}", path.display())))?;
    text.trim().parse().map_err(|_| ShimError::Io {
        context: format!("read {}", path.display()),
        source: std::io::Error::other(format!("not a pid: {text:?}")),
    })
}

/// The task service; cheap to clone.
#[derive(Clone)]
pub struct TaskService {
    inner: Arc<Inner>,
}

impl TaskService {
    /// Starts the reaper: call before any child process is spawned.
    pub fn new(namespace: &str, events: EventQueue, exit: Arc<ExitSignal>) -> Result<Self> {
        Ok(TaskService {
            inner: Arc::new(Inner {
                namespace: namespace.to_string(),
                events,
                reaper: Reaper::start()?,
                containers: Mutex::new(HashMap::new()),
                exit,
            }),
        })
    }

    async fn create(&self, req: api::CreateTaskRequest) -> Result<api::CreateTaskResponse> {
        let inner = &self.inner;
        inner.check_create(&req)?;
        let config = runtime_config(&req, &inner.namespace)?;
        let bundle = PathBuf::from(&req.bundle);
        let rootfs = bundle.join("rootfs");
        let mounts = rootfs_mounts(&req);
        let mounted = !mounts.is_empty();
        let runc = Runc::new(config.clone(), &bundle, inner.reaper.clone());
        let (id, dir) = (req.id.clone(), bundle.clone());
        blocking("prepare the bundle", move || {
            prepare_bundle(&config, &dir, &id, &mounts)
        })
        .await?;
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let pid_file = bundle.join("init.pid");
        let launched = inner
            .launch(&req.id, &stdio, &pid_file, |console, child| {
                let (runc, id, pid_file) = (runc.clone(), req.id.clone(), pid_file.clone());
                async move {
                    runc.create(&id, &pid_file, console.as_deref(), child)
                        .await
                        .map(|()| None)
                }
            })
            .await;
        let (pid, io) = match launched {
            Ok(v) => v,
            Err(e) => {
                let _ = runc.delete(&req.id, true).await;
                if mounted {
                    unmount(&rootfs).await;
                }
                return Err(e);
            }
        };
        let init = Arc::new(Process::new(&req.id, "", stdio.clone(), Vec::new()));
        init.set_created(pid, io);
        // Until TaskCreate is out.
        let hold = init.hold_exit();
        let live_execs = LiveExecs::default();
        let facts = spec_facts(&bundle);
        let start_directly = !facts.poststart_hooks && runc.can_start_directly();
        let role = ExitRole::Init(InitExit {
            bundle: bundle.clone(),
            sweep: facts.shares_pid_namespace.then(|| runc.clone()),
            execs: live_execs.clone(),
        });
        inner.watch_exit(init.clone(), pid, role);
        let cgroup = Cgroup::of_pid(pid)
            .inspect_err(|e| log::warn!("no cgroup for container {}: {e}", req.id))
            .ok();
        let oom = cgroup.as_ref().and_then(|cg| inner.watch_oom(cg, &req.id));
        let container = Arc::new(Container {
            id: req.id.clone(),
            bundle: bundle.clone(),
            runc,
            rootfs_mounted: mounted,
            start_directly,
            init,
            execs: Mutex::new(HashMap::new()),
            live_execs,
            cgroup,
            _oom: oom,
        });
        lock(&inner.containers).insert(req.id.clone(), container);
        inner.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            &create_event(&req, stdio, pid),
        );
        drop(hold);
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    async fn start(&self, req: api::StartRequest) -> Result<api::StartResponse> {
        let inner = &self.inner;
        let c = inner.container(&req.id)?;
        let p = c.process(&req.exec_id)?;
        p.check("start", Status::can_start)?;
        // An exit reaped meanwhile (`true` exits at once) waits for the start's event; a
        // failed start releases it.
        let hold = p.hold_exit();
        if req.exec_id.is_empty() {
            if c.start_directly {
                c.runc
                    .start_directly(&c.id, c.live_execs.init_reaped())
                    .await?;
            } else {
                c.runc.start(&c.id).await?;
            }
            p.set_status(Status::Running);
            let pid = p.pid();
            let event = TaskStart {
                container_id: c.id.clone(),
                pid,
                ..Default::default()
            };
            inner.publish(topics::TASK_START_EVENT_TOPIC, &event);
            drop(hold);
            return Ok(api::StartResponse {
                pid,
                ..Default::default()
            });
        }
        c.init.check("exec in", Status::can_exec)?;
        let live = c.live_execs.begin(&c.id)?;
        let spec_file = c.bundle.join(format!(".exec-{}.json", req.exec_id));
        let pid_file = c.bundle.join(format!(".exec-{}.pid", req.exec_id));
        let launched = inner
            .launch(&c.id, &p.stdio, &pid_file, |console, child| {
                let (runc, id, spec) = (c.runc.clone(), c.id.clone(), p.spec.clone());
                let (spec_file, pid_file) = (spec_file.clone(), pid_file.clone());
                async move {
                    let files = (spec_file.as_path(), pid_file.as_path());
                    runc.exec(&id, &spec, files, console.as_deref(), child)
                        .await
                }
            })
            .await;
        let _ = std::fs::remove_file(&spec_file);
        let _ = std::fs::remove_file(&pid_file);
        let (pid, io) = launched?;
        p.set_created(pid, io);
        p.set_status(Status::Running);
        inner.watch_exit(p.clone(), pid, ExitRole::Exec(live));
        let event = TaskExecStarted {
            container_id: c.id.clone(),
            exec_id: req.exec_id.clone(),
            pid,
            ..Default::default()
        };
        inner.publish(topics::TASK_EXEC_STARTED_EVENT_TOPIC, &event);
        drop(hold);
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn delete(&self, req: api::DeleteRequest) -> Result<api::DeleteResponse> {
        let inner = &self.inner;
        let c = inner.container(&req.id)?;
        let p = c.process(&req.exec_id)?;
        let status = p.check("delete", Status::can_delete)?;
        if !req.exec_id.is_empty() {
            if status == Status::Created {
                lock(&c.execs).remove(&req.exec_id);
                return Ok(api::DeleteResponse::default());
            }
            let exit = p.wait().await;
            lock(&c.execs).remove(&req.exec_id);
            return Ok(api::DeleteResponse {
                pid: p.pid(),
                exit_status: exit.status,
                exited_at: timestamp(exit.at),
                ..Default::default()
            });
        }
        let deleted = if status == Status::Created {
            c.runc.delete(&c.id, true).await
        } else {
            c.runc.delete_stopped(&c.id).await
        };
        match deleted {
            Ok(()) => {}
            Err(ShimError::Runtime { message, .. }) if crate::error::is_not_exist(&message) => {}
            Err(e) => return Err(e),
        }
        let exit = match status {
            Status::Created => tokio::time::timeout(Duration::from_secs(5), p.wait())
                .await
                .unwrap_or(Exit {
                    status: 137,
                    at: SystemTime::now(),
                }),
            _ => p.wait().await,
        };
        if c.rootfs_mounted {
            unmount(&c.rootfs()).await;
        }
        lock(&inner.containers).remove(&c.id);
        let pid = p.pid();
        let event = TaskDelete {
            container_id: c.id.clone(),
            pid,
            exit_status: exit.status,
            exited_at: timestamp(exit.at),
            id: c.id.clone(),
            ..Default::default()
        };
        inner.publish(topics::TASK_DELETE_EVENT_TOPIC, &event);
        Ok(api::DeleteResponse {
            pid,
            exit_status: exit.status,
            exited_at: timestamp(exit.at),
            ..Default::default()
        })
    }

    async fn kill(&self, req: api::KillRequest) -> Result<()> {
        let c = self.inner.container(&req.id)?;
        let p = c.process(&req.exec_id)?;
        if p.status() == Status::Stopped {
            return Err(ShimError::NotFound(format!(
                "{}: process already finished",
                p.describe()
            )));
        }
        if req.exec_id.is_empty() {
            return c.runc.kill(&c.id, req.signal, req.all).await;
        }
        let sig = Signal::try_from(req.signal as i32)
            .map_err(|_| ShimError::InvalidArgument(format!("unknown signal {}", req.signal)))?;
        kill(Pid::from_raw(p.pid() as i32), sig)
            .map_err(ShimError::os(format!("signal {}", p.describe())))
    }

    async fn state(&self, req: api::StateRequest) -> Result<api::StateResponse> {
        let c = self.inner.container(&req.id)?;
        let p = c.process(&req.exec_id)?;
        let exit = p.exited();
        Ok(api::StateResponse {
            id: if req.exec_id.is_empty() {
                c.id.clone()
            } else {
                req.exec_id.clone()
            },
            bundle: c.bundle.display().to_string(),
            pid: p.pid(),
            status: p.status().wire().into(),
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exit_status: exit.map(|e| e.status).unwrap_or_default(),
            exited_at: exit.map(|e| timestamp(e.at)).unwrap_or_default(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    async fn pause_resume(&self, id: &str, pause: bool) -> Result<()> {
        let c = self.inner.container(id)?;
        if pause {
            c.init.check("pause", Status::can_pause)?;
            c.runc.pause(id).await?;
            c.init.set_status(Status::Paused);
            let event = TaskPaused {
                container_id: id.to_string(),
                ..Default::default()
            };
            self.inner.publish(topics::TASK_PAUSED_EVENT_TOPIC, &event);
        } else {
            c.init.check("resume", Status::can_resume)?;
            c.runc.resume(id).await?;
            c.init.set_status(Status::Running);
            let event = TaskResumed {
                container_id: id.to_string(),
                ..Default::default()
            };
            self.inner.publish(topics::TASK_RESUMED_EVENT_TOPIC, &event);
        }
        Ok(())
    }

    async fn exec(&self, req: api::ExecProcessRequest) -> Result<()> {
        let c = self.inner.container(&req.id)?;
        c.init.check("exec in", Status::can_exec)?;
        let spec = req
            .spec
            .as_ref()
            .map(|a| a.value.as_slice())
            .ok_or_else(|| {
                ShimError::InvalidArgument(format!("exec {}: no process spec", req.exec_id))
            })?;
        let spec = exec_spec(spec, req.terminal).map_err(|e| {
            ShimError::InvalidArgument(format!("exec {}: process spec: {e}", req.exec_id))
        })?;
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        {
            let mut execs = lock(&c.execs);
            if execs.contains_key(&req.exec_id) {
                return Err(ShimError::AlreadyExists(format!(
                    "exec {} of {}",
                    req.exec_id, c.id
                )));
            }
            let p = Process::new(&c.id, &req.exec_id, stdio, spec);
            execs.insert(req.exec_id.clone(), Arc::new(p));
        }
        let event = TaskExecAdded {
            container_id: c.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        };
        self.inner
            .publish(topics::TASK_EXEC_ADDED_EVENT_TOPIC, &event);
        Ok(())
    }

    /// The container's processes; an exec's entry says which exec it is
    /// (`containerd.runc.v1.ProcessDetails`), as containerd's shim answers.
    async fn pids(&self, id: &str) -> Result<api::PidsResponse> {
        let c = self.inner.container(id)?;
        let pids = c.runc.ps(id).await?;
        let execs: HashMap<u32, String> = lock(&c.execs)
            .values()
            .filter(|p| p.pid() != 0)
            .map(|p| (p.pid(), p.exec_id.clone()))
            .collect();
        let mut processes = Vec::with_capacity(pids.len());
        for pid in pids {
            let mut info = ProcessInfo {
                pid,
                ..Default::default()
            };
            if let Some(exec_id) = execs.get(&pid) {
                let details = ProcessDetails {
                    exec_id: exec_id.clone(),
                    ..Default::default()
                };
                info.info = MessageField::some(Any {
                    type_url: PROCESS_DETAILS.to_string(),
                    value: details.write_to_bytes()?,
                    ..Default::default()
                });
            }
            processes.push(info);
        }
        Ok(api::PidsResponse {
            processes,
            ..Default::default()
        })
    }

    async fn update(&self, req: api::UpdateTaskRequest) -> Result<()> {
        let c = self.inner.container(&req.id)?;
        c.init.check("update", Status::can_kill)?;
        // berthd's ReopenContainerLog (CRI): an update with this annotation and no
        // resources reopens the container's CRI log files.
        if req.resources.is_none() && req.annotations.contains_key(REOPEN_LOG_ANNOTATION) {
            return match c.init.reopen_logs()? {
                true => Ok(()),
                false => Err(ShimError::InvalidArgument(format!(
                    "container {} writes no CRI log to reopen",
                    req.id
                ))),
            };
        }
        let resources = req
            .resources
            .as_ref()
            .map(|a| a.value.clone())
            .ok_or_else(|| {
                ShimError::InvalidArgument(format!("update of {}: no resources", req.id))
            })?;
        c.runc.update(&req.id, resources).await
    }

    async fn wait(&self, req: api::WaitRequest) -> Result<api::WaitResponse> {
        let c = self.inner.container(&req.id)?;
        let p = c.process(&req.exec_id)?;
        let exit = p.wait().await;
        Ok(api::WaitResponse {
            exit_status: exit.status,
            exited_at: timestamp(exit.at),
            ..Default::default()
        })
    }
}

/// The annotation of an Update that asks for the container's CRI logs to be reopened.
pub const REOPEN_LOG_ANNOTATION: &str = "io.berth.cri.reopen-log";

/// What the shim needs to know of the bundle's OCI spec, read once at create.
struct SpecFacts {
    /// The container has no PID namespace of its own (it shares the host's or joins
    /// another's): then its init's exit does not end its other processes.
    shares_pid_namespace: bool,
    /// The spec has poststart hooks, which `runc start` runs (runc 1.2 on): the start
    /// then goes through runc.
    poststart_hooks: bool,
}

/// An unreadable spec gives the careful answers (runc would refuse it anyway).
fn spec_facts(bundle: &Path) -> SpecFacts {
    let careful = SpecFacts {
        shares_pid_namespace: true,
        poststart_hooks: true,
    };
    let Ok(data) = std::fs::read(bundle.join("config.json")) else {
        return careful;
    };
    let Ok(spec) = serde_json::from_slice::<serde_json::Value>(&data) else {
        return careful;
    };
    let own_pid_namespace = crate::runc::own_namespace(spec.pointer("/linux/namespaces"), "pid");
    let poststart_hooks = crate::runc::has_hooks(spec.get("hooks"), "poststart");
    SpecFacts {
        shares_pid_namespace: !own_pid_namespace,
        poststart_hooks,
    }
}

/// The process spec an exec runs: the client's, with `terminal` set from the request (the
/// request decides whether a console socket is passed; runc refuses the two disagreeing).
fn exec_spec(spec: &[u8], terminal: bool) -> std::result::Result<Vec<u8>, serde_json::Error> {
    let mut value: serde_json::Value = serde_json::from_slice(spec)?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert("terminal".into(), serde_json::Value::Bool(terminal));
    }
    serde_json::to_vec(&value)
}

/// Runs blocking work (fsync, mount, unmount) on the runtime's blocking pool, off its one
/// thread; `what` names it should the work panic.
async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(ShimError::io(what)(std::io::Error::other(e))))
}

/// Unmounts a container's rootfs on the blocking pool (a busy mount is retried for a
/// while); a failure is logged.
pub(crate) async fn unmount(rootfs: &Path) {
    let path = rootfs.to_path_buf();
    let done = tokio::task::spawn_blocking(move || berth_snapshotter::mount::unmount(&path)).await;
    if let Ok(Err(e)) = done {
        log::warn!("unmount {}: {e}", rootfs.display());
    }
}

fn ttrpc_result<T>(r: Result<T>) -> ttrpc::Result<T> {
    r.map_err(ttrpc::Error::from)
}

#[async_trait]
impl Task for TaskService {
    async fn state(
        &self,
        _: &TtrpcContext,
        req: api::StateRequest,
    ) -> ttrpc::Result<api::StateResponse> {
        ttrpc_result(TaskService::state(self, req).await)
    }

    async fn create(
        &self,
        _: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> ttrpc::Result<api::CreateTaskResponse> {
        ttrpc_result(TaskService::create(self, req).await)
    }

    async fn start(
        &self,
        _: &TtrpcContext,
        req: api::StartRequest,
    ) -> ttrpc::Result<api::StartResponse> {
        ttrpc_result(TaskService::start(self, req).await)
    }

    async fn delete(
        &self,
        _: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> ttrpc::Result<api::DeleteResponse> {
        ttrpc_result(TaskService::delete(self, req).await)
    }

    async fn pids(
        &self,
        _: &TtrpcContext,
        req: api::PidsRequest,
    ) -> ttrpc::Result<api::PidsResponse> {
        ttrpc_result(TaskService::pids(self, &req.id).await)
    }

    async fn pause(&self, _: &TtrpcContext, req: api::PauseRequest) -> ttrpc::Result<api::Empty> {
        ttrpc_result(
            self.pause_resume(&req.id, true)
                .await
                .map(|()| api::Empty::new()),
        )
    }

    async fn resume(&self, _: &TtrpcContext, req: api::ResumeRequest) -> ttrpc::Result<api::Empty> {
        ttrpc_result(
            self.pause_resume(&req.id, false)
                .await
                .map(|()| api::Empty::new()),
        )
    }

    async fn checkpoint(
        &self,
        _: &TtrpcContext,
        req: api::CheckpointTaskRequest,
    ) -> ttrpc::Result<api::Empty> {
        ttrpc_result(Err(ShimError::Unimplemented(format!(
            "checkpoint of container {}: containerd-shim-berth-v2 does not checkpoint (no CRIU support)",
            req.id
        ))))
    }

    async fn kill(&self, _: &TtrpcContext, req: api::KillRequest) -> ttrpc::Result<api::Empty> {
        ttrpc_result(
            TaskService::kill(self, req)
                .await
                .map(|()| api::Empty::new()),
        )
    }

    async fn exec(
        &self,
        _: &TtrpcContext,
        req: api::ExecProcessRequest,
    ) -> ttrpc::Result<api::Empty> {
        ttrpc_result(
            TaskService::exec(self, req)
                .await
                .map(|()| api::Empty::new()),
        )
    }

    async fn resize_pty(
        &self,
        _: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> ttrpc::Result<api::Empty> {
        let r = self
            .inner
            .container(&req.id)
            .and_then(|c| c.process(&req.exec_id))
            .and_then(|p| p.resize(req.width, req.height));
        ttrpc_result(r.map(|()| api::Empty::new()))
    }

    async fn close_io(
        &self,
        _: &TtrpcContext,
        req: api::CloseIORequest,
    ) -> ttrpc::Result<api::Empty> {
        let r = self
            .inner
            .container(&req.id)
            .and_then(|c| c.process(&req.exec_id));
        ttrpc_result(r.map(|p| {
            if req.stdin {
                p.close_stdin();
            }
            api::Empty::new()
        }))
    }

    async fn update(
        &self,
        _: &TtrpcContext,
        req: api::UpdateTaskRequest,
    ) -> ttrpc::Result<api::Empty> {
        ttrpc_result(
            TaskService::update(self, req)
                .await
                .map(|()| api::Empty::new()),
        )
    }

    async fn wait(
        &self,
        _: &TtrpcContext,
        req: api::WaitRequest,
    ) -> ttrpc::Result<api::WaitResponse> {
        ttrpc_result(TaskService::wait(self, req).await)
    }

    async fn stats(
        &self,
        _: &TtrpcContext,
        req: api::StatsRequest,
    ) -> ttrpc::Result<api::StatsResponse> {
        let r = self.inner.container(&req.id).and_then(|c| {
            let cgroup = c
                .cgroup
                .as_ref()
                .ok_or_else(|| ShimError::NotFound(format!("cgroup of container {}", req.id)))?;
            // A few small cgroupfs and procfs reads: inline (see the cgroups module).
            Ok(api::StatsResponse {
                stats: MessageField::some(cgroup.metrics(c.init.pid())?),
                ..Default::default()
            })
        });
        ttrpc_result(r)
    }

    async fn connect(
        &self,
        _: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> ttrpc::Result<api::ConnectResponse> {
        let task_pid = self
            .inner
            .container(&req.id)
            .map(|c| c.init.pid())
            .unwrap_or_default();
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            ..Default::default()
        })
    }

    async fn shutdown(
        &self,
        _: &TtrpcContext,
        _: api::ShutdownRequest,
    ) -> ttrpc::Result<api::Empty> {
        if lock(&self.inner.containers).is_empty() {
            self.inner.exit.signal();
        }
        Ok(api::Empty::new())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Records what the daemon would get: each event's topic, and an exit's id.
    struct Recorder(tokio::sync::mpsc::UnboundedSender<String>);

    #[async_trait]
    impl crate::events::Sink for Recorder {
        async fn send(
            &mut self,
            envelope: &containerd_shim_protos::shim::event::Envelope,
        ) -> std::result::Result<(), String> {
            let mut seen = envelope.topic.clone();
            if seen == topics::TASK_EXIT_EVENT_TOPIC {
                let exit = TaskExit::parse_from_bytes(&envelope.event.value).unwrap();
                seen = format!("{seen} {}", exit.id);
            }
            let _ = self.0.send(seen);
            Ok(())
        }
    }

    fn service() -> (Arc<Inner>, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            namespace: "default".into(),
            events: EventQueue::start("default", Recorder(tx)),
            reaper: Reaper::default(),
            containers: Mutex::new(HashMap::new()),
            exit: Arc::new(ExitSignal::default()),
        });
        (inner, rx)
    }

    /// Lets every other task of the runtime run its course (none of them waits on time).
    async fn run_others() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn an_exit_reaped_during_start_waits_for_the_start_event() {
        let (inner, mut got) = service();
        let exec = Arc::new(Process::new("c1", "e1", StdioPaths::default(), Vec::new()));
        let hold = exec.hold_exit();
        let live = LiveExecs::default().begin("c1").unwrap();
        inner.watch_exit(exec.clone(), 4242, ExitRole::Exec(live));
        inner.reaper.dispatch(4242, 0, SystemTime::now());
        run_others().await;
        let started = TaskExecStarted {
            container_id: "c1".into(),
            exec_id: "e1".into(),
            ..Default::default()
        };
        inner.publish(topics::TASK_EXEC_STARTED_EVENT_TOPIC, &started);
        drop(hold);
        assert_eq!(got.recv().await.unwrap(), "/tasks/exec-started");
        assert_eq!(got.recv().await.unwrap(), "/tasks/exit e1");
        assert_eq!(exec.status(), Status::Stopped);
    }

    #[tokio::test]
    async fn the_init_exit_comes_after_its_execs_exits() {
        let (inner, mut got) = service();
        let bundle = tempfile::tempdir().unwrap();
        let init = Arc::new(Process::new("c1", "", StdioPaths::default(), Vec::new()));
        let exec = Arc::new(Process::new("c1", "e1", StdioPaths::default(), Vec::new()));
        let execs = LiveExecs::default();
        let live = execs.begin("c1").unwrap();
        let role = ExitRole::Init(InitExit {
            bundle: bundle.path().to_path_buf(),
            sweep: None,
            execs: execs.clone(),
        });
        inner.watch_exit(init.clone(), 100, role);
        // The exec's start is still being announced when both exits are reaped.
        let hold = exec.hold_exit();
        inner.watch_exit(exec.clone(), 101, ExitRole::Exec(live));
        inner.reaper.dispatch(100, 137, SystemTime::now());
        inner.reaper.dispatch(101, 137, SystemTime::now());
        // The init's exit is saved at once (on a blocking thread)...
        let saved = async {
            while SavedExit::load(bundle.path()).is_none() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), saved)
            .await
            .expect("the init's exit was not saved");
        run_others().await;
        // ...and no exec starts after it was reaped.
        assert!(execs.begin("c1").is_err());
        drop(hold);
        assert_eq!(got.recv().await.unwrap(), "/tasks/exit e1");
        assert_eq!(got.recv().await.unwrap(), "/tasks/exit c1");
        assert_eq!(init.wait().await.status, 137);
    }

    #[test]
    fn exec_spec_takes_terminal_from_the_request() {
        let spec = br#"{"args":["sh"],"cwd":"/","terminal":false}"#;
        let out: serde_json::Value =
            serde_json::from_slice(&exec_spec(spec, true).unwrap()).unwrap();
        assert_eq!(out["terminal"], true);
        assert_eq!(out["args"][0], "sh");
        let out: serde_json::Value = serde_json::from_slice(
            &exec_spec(br#"{"args":["sh"],"terminal":true}"#, false).unwrap(),
        )
        .unwrap();
        assert_eq!(out["terminal"], false);
        assert!(exec_spec(b"not json", false).is_err());
    }

    #[test]
    fn kill_all_on_exit_only_without_an_own_pid_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let write = |json: &str| std::fs::write(dir.path().join("config.json"), json).unwrap();
        let shares = || spec_facts(dir.path()).shares_pid_namespace;
        write(r#"{"linux":{"namespaces":[{"type":"mount"},{"type":"pid"}]}}"#);
        assert!(!shares());
        write(r#"{"linux":{"namespaces":[{"type":"mount"}]}}"#);
        assert!(shares());
        write(r#"{"linux":{"namespaces":[{"type":"pid","path":"/proc/1/ns/pid"}]}}"#);
        assert!(shares());
        write(r#"{}"#);
        assert!(shares());
    }

    #[test]
    fn poststart_hooks_are_seen_and_an_unreadable_spec_is_taken_as_having_them() {
        let dir = tempfile::tempdir().unwrap();
        let write = |json: &str| std::fs::write(dir.path().join("config.json"), json).unwrap();
        let hooks = || spec_facts(dir.path()).poststart_hooks;
        write(r#"{"hooks":{"poststart":[{"path":"/bin/true"}]}}"#);
        assert!(hooks());
        write(r#"{"hooks":{"prestart":[{"path":"/bin/true"}],"poststart":[]}}"#);
        assert!(!hooks());
        write(r#"{"process":{"args":["sh"]}}"#);
        assert!(!hooks());
        write("not json");
        assert!(hooks());
    }
}
