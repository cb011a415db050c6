//! The OCI runtime CLI (`runc` by default, or any binary with its command line, such as
//! `crun`). Every invocation logs JSON to `<bundle>/log.json`; its error lines end up in the
//! error message when a command fails.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

use crate::error::{Result, ShimError};
use crate::reaper::Reaper;

/// Where our runtime state lives when the options name no root: apart from containerd's
/// `/run/containerd/runc`.
pub const DEFAULT_ROOT: &str = "/run/berth/runc";
pub const DEFAULT_BINARY: &str = "runc";
/// The fifo runc's init waits on until `runc start`, in the container's state directory.
const EXEC_FIFO: &str = "exec.fifo";

/// Where cgroup file systems are mounted: the only place a container's cgroup is removed
/// from.
const CGROUP_ROOT: &str = "/sys/fs/cgroup/";

/// What `runc delete` does for a stopped container (runc 1.x) whose state directory is
/// `dir`, when nothing of it needs runc: the container had its own PID namespace (so its
/// init's end was the end of all its processes: nothing to kill), cgroupfs cgroups (not
/// systemd's units), no poststop hooks and no Intel RDT group. Then its cgroups are
/// removed (children first, retried while the kernel still counts exiting tasks) and the
/// state directory after them. False, with nothing removed, when `dir/state.json` says
/// anything else or is not runc's; false too when a cgroup will not go (runc then retries
/// and reports).
fn remove_stopped(dir: &Path) -> std::io::Result<bool> {
    let data = match std::fs::read(dir.join("state.json")) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let Ok(state) = serde_json::from_slice::<serde_json::Value>(&data) else {
        return Ok(false);
    };
    let Some(paths) = removable_cgroups(&state) else {
        return Ok(false);
    };
    for path in &paths {
        if !remove_cgroup(Path::new(path))? {
            return Ok(false);
        }
    }
    std::fs::remove_dir_all(dir)?;
    Ok(true)
}

/// The cgroup paths of a runc `state.json` when the container can be removed without runc
/// (see [`remove_stopped`]); None otherwise.
fn removable_cgroups(state: &serde_json::Value) -> Option<Vec<String>> {
    let config = state.get("config")?;
    let own_pid_namespace = own_namespace(config.get("namespaces"), "NEWPID");
    // runc 1.1 writes the flag as `Systemd` (the field has no JSON name).
    let systemd = ["/cgroups/Systemd", "/cgroups/systemd"]
        .iter()
        .any(|key| config.pointer(key).and_then(|v| v.as_bool()) == Some(true));
    let poststop = ["Hooks", "hooks"]
        .iter()
        .any(|key| has_hooks(config.get(key), "poststop"));
    if !own_pid_namespace || systemd || poststop || has_rdt(state) {
        return None;
    }
    state_cgroups(state)
}

/// The cgroup paths of runc's `state.json` when every one is below /sys/fs/cgroup (no
/// `..`): the only cgroups the shim joins or removes itself. None otherwise.
pub(crate) fn state_cgroups(state: &serde_json::Value) -> Option<Vec<String>> {
    let mut paths = Vec::new();
    for path in state.get("cgroup_paths")?.as_object()?.values() {
        let path = path.as_str()?;
        let inside = path
            .strip_prefix(CGROUP_ROOT)
            .is_some_and(|rest| !rest.is_empty() && !rest.split('/').any(|c| c == ".."));
        if !inside {
            return None;
        }
        paths.push(path.to_string());
    }
    Some(paths)
}

/// Whether runc's `state.json` gives the container an Intel RDT group.
pub(crate) fn has_rdt(state: &serde_json::Value) -> bool {
    state
        .get("intel_rdt_path")
        .and_then(|p| p.as_str())
        .is_some_and(|p| !p.is_empty())
}

/// Whether `namespaces` (an OCI spec's `linux.namespaces`, or runc's state's
/// `config.namespaces`) gives the container a namespace of type `kind` of its own: listed,
/// with no path to join.
pub(crate) fn own_namespace(namespaces: Option<&serde_json::Value>, kind: &str) -> bool {
    namespaces.and_then(|n| n.as_array()).is_some_and(|list| {
        list.iter().any(|ns| {
            ns.get("type").and_then(|t| t.as_str()) == Some(kind)
                && ns
                    .get("path")
                    .and_then(|p| p.as_str())
                    .is_none_or(str::is_empty)
        })
    })
}

/// Whether `hooks` (an OCI spec's, or runc's state's) lists any hook for `stage`.
pub(crate) fn has_hooks(hooks: Option<&serde_json::Value>, stage: &str) -> bool {
    hooks
        .and_then(|h| h.get(stage))
        .and_then(|list| list.as_array())
        .is_some_and(|list| !list.is_empty())
}

/// Removes the cgroup directory `path` and any below it, as runc does: retried with a
/// growing pause while the kernel still counts tasks that are exiting (for up to 1.3 s,
/// longer than runc's 150 ms: on a loaded machine the last task takes longer to leave,
/// and runc's retries would then come on top). False when it is still there after that; a
/// cgroup already gone is removed.
fn remove_cgroup(path: &Path) -> std::io::Result<bool> {
    let mut pause = std::time::Duration::from_millis(10);
    for attempt in 0..8 {
        if attempt > 0 {
            std::thread::sleep(pause);
            pause *= 2;
        }
        match remove_cgroup_tree(path) {
            Ok(()) => return Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

fn remove_cgroup_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir(path) {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            // Children first (a cgroup's files are not files: only its directories go).
            for entry in std::fs::read_dir(path)? {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    remove_cgroup_tree(&entry.path())?;
                }
            }
            std::fs::remove_dir(path)
        }
        other => other,
    }
}

/// [`Runc::start_directly`]'s work on the exec fifo at `path`; `reaped` resolves once the
/// init was reaped. False when there is no fifo there.
async fn let_init_go(
    path: &Path,
    reaped: impl std::future::Future<Output = ()>,
) -> std::result::Result<bool, String> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    // Non-blocking: the open does not wait for the writer, so a dead init cannot hang it.
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("open {}: {e}", path.display())),
    };
    if !file.metadata().is_ok_and(|m| m.file_type().is_fifo()) {
        return Err(format!("{} is not a fifo", path.display()));
    }
    let mut fifo = pipe::Receiver::from_file_unchecked(file)
        .map_err(|e| format!("watch {}: {e}", path.display()))?;
    let mut data = Vec::new();
    let read = async {
        fifo.read_to_end(&mut data).await?;
        Ok::<_, std::io::Error>(())
    };
    let read = tokio::select! {
        biased;
        r = read => Some(r),
        () = reaped => None,
    };
    match read {
        Some(Ok(())) if !data.is_empty() => {}
        Some(Ok(())) => return Err("cannot start an already running container".into()),
        Some(Err(e)) => return Err(format!("read {}: {e}", path.display())),
        // The init is gone: it may have written and exited before the fifo was read.
        None => {
            let mut byte = [0u8; 1];
            if data.is_empty() && !matches!(fifo.try_read(&mut byte), Ok(1)) {
                return Err("container process is already dead".into());
            }
        }
    }
    // The init was let go: a fifo left behind only makes runc call the container created.
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        log::warn!("remove {}: {e}", path.display());
    }
    Ok(true)
}

/// Which runtime binary and root a container uses; saved in the bundle so that
/// `shim delete` finds the container again.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RuntimeConfig {
    pub binary: String,
    pub root: PathBuf,
    pub systemd_cgroup: bool,
}

/// The path of the program `name`: a name without a slash is looked up on `PATH` once
/// per shim (a stat per directory; the child would otherwise try an exec in each one,
/// on every runc call) and kept while the file is there.
fn program(name: &str) -> PathBuf {
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Mutex;
    static FOUND: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    if name.contains('/') {
        return PathBuf::from(name);
    }
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let mut found = FOUND.lock().unwrap_or_else(|e| e.into_inner());
    let found = found.get_or_insert_with(HashMap::new);
    if let Some(p) = found.get(name).filter(|p| executable(p)) {
        return p.clone();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    match std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_absolute() && executable(p))
    {
        Some(p) => {
            found.insert(name.to_string(), p.clone());
            p
        }
        // Not found: the spawn says so in its own words.
        None => PathBuf::from(name),
    }
}

impl RuntimeConfig {
    /// From the runc options of a create request (`binary_name`, `root`); the root gets
    /// the namespace appended, as containerd does.
    pub fn new(binary: &str, root: &str, systemd_cgroup: bool, namespace: &str) -> Self {
        let binary = if binary.is_empty() {
            DEFAULT_BINARY
        } else {
            binary
        };
        let root = if root.is_empty() { DEFAULT_ROOT } else { root };
        RuntimeConfig {
            binary: binary.to_string(),
            root: Path::new(root).join(namespace),
            systemd_cgroup,
        }
    }

    const FILE: &'static str = "berth-runtime.json";

    pub fn save(&self, bundle: &Path) -> Result<()> {
        let data = serde_json::to_vec(self).map_err(|e| ShimError::Protobuf(e.to_string()))?;
        write_atomic(&bundle.join(Self::FILE), &data)
    }

    pub fn load(bundle: &Path) -> Option<Self> {
        let data = std::fs::read(bundle.join(Self::FILE)).ok()?;
        serde_json::from_slice(&data).ok()
    }
}

/// The runtime CLI for one container.
#[derive(Clone)]
pub struct Runc {
    pub config: RuntimeConfig,
    pub bundle: PathBuf,
    reaper: Reaper,
}

/// The container's stdio for `create` / `exec`: it inherits these.
#[derive(Default)]
pub struct ChildStdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// Writes a file that must survive a crash: a hidden temp file beside it, fsync, rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut f =
        std::fs::File::create(&tmp).map_err(ShimError::io(format!("create {}", tmp.display())))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(ShimError::io(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(ShimError::io(format!("rename to {}", path.display())))
}

fn stdio(fd: Option<OwnedFd>) -> Stdio {
    fd.map(Stdio::from).unwrap_or_else(Stdio::null)
}

/// The command's stdio: the container's (`child_stdio`), or pipes to capture stdout and
/// stderr, with a piped stdin when there is input to write.
fn set_stdio(cmd: &mut Command, child_stdio: Option<ChildStdio>, has_input: bool) {
    match child_stdio {
        Some(s) => {
            cmd.stdin(stdio(s.stdin))
                .stdout(stdio(s.stdout))
                .stderr(stdio(s.stderr));
        }
        None => {
            cmd.stdin(if has_input {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        }
    }
}

/// Writes `input` to the child's piped stdin while reading its piped stdout and stderr to
/// their ends, all at once (a full pipe cannot stall the child); returns (stdout, stderr),
/// empty where not piped.
async fn exchange(child: &mut std::process::Child, input: Option<Vec<u8>>) -> (Vec<u8>, Vec<u8>) {
    let read = |fd: Option<OwnedFd>| async move {
        let mut buf = Vec::new();
        if let Some(fd) = fd
            && let Ok(mut rx) = pipe::Receiver::from_owned_fd(fd)
        {
            let _ = rx.read_to_end(&mut buf).await;
        }
        buf
    };
    let stdin = child.stdin.take().map(OwnedFd::from);
    let write = async move {
        if let (Some(fd), Some(data)) = (stdin, input)
            && let Ok(mut tx) = pipe::Sender::from_owned_fd(fd)
        {
            let _ = tx.write_all(&data).await;
        }
    };
    let (stdout, stderr, ()) = tokio::join!(
        read(child.stdout.take().map(OwnedFd::from)),
        read(child.stderr.take().map(OwnedFd::from)),
        write
    );
    (stdout, stderr)
}

#[derive(Deserialize)]
struct LogLine {
    #[serde(default)]
    level: String,
    #[serde(default)]
    msg: String,
}

impl Runc {
    pub fn new(config: RuntimeConfig, bundle: &Path, reaper: Reaper) -> Runc {
        Runc {
            config,
            bundle: bundle.to_path_buf(),
            reaper,
        }
    }

    fn log_path(&self) -> PathBuf {
        self.bundle.join("log.json")
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(program(&self.config.binary));
        cmd.arg("--root")
            .arg(&self.config.root)
            .arg("--log")
            .arg(self.log_path())
            .arg("--log-format")
            .arg("json");
        if self.config.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        // runc runs in the shim's working directory, its first bundle (`BerthShim::new`),
        // as containerd's runc shim runs it; setting one here would make every runc call a
        // fork of the shim rather than a vfork (see `start_shim`).
        cmd
    }

    /// The last error lines runc logged (at most three), joined.
    fn log_errors(&self) -> String {
        let Ok(text) = std::fs::read_to_string(self.log_path()) else {
            return String::new();
        };
        let errors: Vec<String> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<LogLine>(l).ok())
            .filter(|l| l.level == "error" || l.level == "fatal")
            .map(|l| l.msg)
            .collect();
        errors[errors.len().saturating_sub(3)..].join("; ")
    }

    /// Runs one command to its end; returns its stdout. With `child_stdio` the command's
    /// stdio is that (create/exec: the container inherits it) and errors come from the log
    /// only; otherwise stdout and stderr are captured.
    async fn run(
        &self,
        id: &str,
        args: &[&str],
        input: Option<Vec<u8>>,
        child_stdio: Option<ChildStdio>,
    ) -> Result<Vec<u8>> {
        let command = args.first().copied().unwrap_or_default().to_string();
        let fail = |message: String| ShimError::Runtime {
            binary: self.config.binary.clone(),
            command: command.clone(),
            id: id.to_string(),
            message,
        };
        let mut cmd = self.command();
        cmd.args(args);
        let captured = child_stdio.is_none();
        set_stdio(&mut cmd, child_stdio, input.is_some());
        let mut child = cmd
            .spawn()
            .map_err(|e| fail(format!("cannot run {}: {e}", self.config.binary)))?;
        // Registered right after the spawn; an exit reaped before this is kept by the reaper.
        let exited = self.reaper.wait(child.id() as i32);
        let (stdout, stderr) = exchange(&mut child, input).await;
        let exit = exited
            .await
            .map_err(|_| fail("its exit status was lost".to_string()))?;
        if exit.status != 0 {
            return Err(fail(self.failure_message(
                exit.status,
                captured.then_some(stderr.as_slice()),
            )));
        }
        Ok(stdout)
    }

    /// Why a command failed: the error lines runc logged, then its captured stderr (when
    /// captured and not said already), else its exit status.
    fn failure_message(&self, status: u32, stderr: Option<&[u8]>) -> String {
        let mut message = self.log_errors();
        if let Some(stderr) = stderr {
            let err = String::from_utf8_lossy(stderr);
            let err = err.trim();
            if !err.is_empty() && !message.contains(err) {
                if !message.is_empty() {
                    message.push_str("; ");
                }
                message.push_str(err);
            }
        }
        if message.is_empty() {
            message = format!("exit status {status}");
        }
        message
    }

    pub async fn create(
        &self,
        id: &str,
        pid_file: &Path,
        console_socket: Option<&Path>,
        stdio: ChildStdio,
    ) -> Result<()> {
        let bundle = self.bundle.display().to_string();
        let pid_file = pid_file.display().to_string();
        let mut args = vec!["create", "--bundle", &bundle, "--pid-file", &pid_file];
        let socket;
        if let Some(s) = console_socket {
            socket = s.display().to_string();
            args.extend(["--console-socket", &socket]);
        }
        args.push(id);
        self.run(id, &args, None, Some(stdio)).await.map(drop)
    }

    pub async fn start(&self, id: &str) -> Result<()> {
        self.run(id, &["start", id], None, None).await.map(drop)
    }

    /// Whether `start_directly` can stand in for `runc start` with this runtime: runc
    /// itself (by its file name), and no `NOTIFY_SOCKET` in the shim's environment (with
    /// one, `runc start` also relays the container's readiness).
    pub fn can_start_directly(&self) -> bool {
        self.is_runc() && std::env::var_os("NOTIFY_SOCKET").is_none()
    }

    /// Whether the runtime is runc itself (by its file name), whose state layout the shim
    /// knows.
    fn is_runc(&self) -> bool {
        Path::new(&self.config.binary).file_name() == Some("runc".as_ref())
    }

    /// What `runc start` does for a created container (without poststart hooks, which
    /// the caller checks), done here, which saves starting runc (~10 ms of a container's
    /// start): runc's init waits, blocked, to open `<root>/<id>/exec.fifo` for writing;
    /// once the fifo is open for reading, it writes one byte and execs the container's
    /// process. runc start reads that byte and removes the fifo (runc tells a created
    /// container from a running one by the fifo). As runc, it gives up when the init is
    /// gone without writing (`reaped` resolves once the init was reaped). Without the fifo
    /// (another state layout), `runc start` runs.
    pub async fn start_directly(
        &self,
        id: &str,
        reaped: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        match let_init_go(&self.config.root.join(id).join(EXEC_FIFO), reaped).await {
            Ok(true) => Ok(()),
            Ok(false) => self.start(id).await,
            Err(message) => Err(ShimError::Runtime {
                binary: self.config.binary.clone(),
                command: "start".into(),
                id: id.to_string(),
                message,
            }),
        }
    }

    /// Starts an exec's process: in the shim when nothing of it needs runc
    /// ([`crate::nsexec`]: starting runc is most of an exec's time), else through
    /// `runc exec` with `spec` written to `process_file` and the pid to `pid_file`. The pid
    /// when the shim started the process (None: it is in `pid_file`).
    pub async fn exec(
        &self,
        id: &str,
        spec: &[u8],
        files: (&Path, &Path),
        console_socket: Option<&Path>,
        stdio: ChildStdio,
    ) -> Result<Option<u32>> {
        let stdio = match console_socket {
            None if self.is_runc() => match self.exec_directly(id, spec, stdio).await? {
                Ok(pid) => return Ok(Some(pid)),
                Err(stdio) => stdio,
            },
            _ => stdio,
        };
        let (process_file, pid_file) = files;
        std::fs::write(process_file, spec)
            .map_err(ShimError::io(format!("write {}", process_file.display())))?;
        let process = process_file.display().to_string();
        let pid_file = pid_file.display().to_string();
        let mut args = vec![
            "exec",
            "--detach",
            "--process",
            &process,
            "--pid-file",
            &pid_file,
        ];
        let socket;
        if let Some(s) = console_socket {
            socket = s.display().to_string();
            args.extend(["--console-socket", &socket]);
        }
        args.push(id);
        self.run(id, &args, None, Some(stdio)).await.map(|_| None)
    }

    /// The exec started by the shim ([`crate::nsexec`]): the process's pid, or `stdio`
    /// back when runc should start it.
    async fn exec_directly(
        &self,
        id: &str,
        spec: &[u8],
        stdio: ChildStdio,
    ) -> Result<std::result::Result<u32, ChildStdio>> {
        let dir = self.config.root.join(id);
        let (container, spec) = (id.to_string(), spec.to_vec());
        let spawned = tokio::task::spawn_blocking(move || {
            match crate::nsexec::Plan::new(&dir, &container, &spec) {
                Ok(plan) => Ok(plan.spawn(stdio)),
                Err(why) => Err((why, stdio)),
            }
        })
        .await
        .map_err(|e| ShimError::Io {
            context: format!("exec in {id}"),
            source: std::io::Error::other(e.to_string()),
        })?;
        let spawned = match spawned {
            Ok(spawned) => spawned.map_err(ShimError::io(format!("exec in {id}")))?,
            Err((why, stdio)) => {
                log::debug!("exec in {id} through runc: {why}");
                return Ok(Err(stdio));
            }
        };
        // The helper has exited; its exit (and a failed process's) is collected here,
        // not left for a later process of the same pid.
        let _ = self.reaper.wait(spawned.helper as i32).await;
        match spawned.outcome {
            Ok(pid) => Ok(Ok(pid)),
            Err(failure) => {
                if let Some(pid) = failure.pid {
                    let _ = self.reaper.wait(pid as i32).await;
                }
                Err(ShimError::Runtime {
                    binary: self.config.binary.clone(),
                    command: "exec".into(),
                    id: id.to_string(),
                    message: failure.message,
                })
            }
        }
    }

    pub async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        let sig = signal.to_string();
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend([id, &sig]);
        self.run(id, &args, None, None).await.map(drop)
    }

    /// `runc delete` of a stopped container, done here when it can be (see
    /// [`remove_stopped`]), which saves starting runc (~10 ms of a container's removal);
    /// otherwise, or when any of it fails, runc does it.
    pub async fn delete_stopped(&self, id: &str) -> Result<()> {
        if self.is_runc() {
            let dir = self.config.root.join(id);
            let removed = tokio::task::spawn_blocking(move || remove_stopped(&dir)).await;
            match removed {
                Ok(Ok(true)) => return Ok(()),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => log::warn!("removing stopped container {id} without runc: {e}"),
                Err(e) => log::warn!("removing stopped container {id} without runc: {e}"),
            }
        }
        self.delete(id, false).await
    }

    pub async fn delete(&self, id: &str, force: bool) -> Result<()> {
        let mut args = vec!["delete"];
        if force {
            args.push("--force");
        }
        args.push(id);
        self.run(id, &args, None, None).await.map(drop)
    }

    pub async fn pause(&self, id: &str) -> Result<()> {
        self.run(id, &["pause", id], None, None).await.map(drop)
    }

    pub async fn resume(&self, id: &str) -> Result<()> {
        self.run(id, &["resume", id], None, None).await.map(drop)
    }

    /// Pids of every process in the container.
    pub async fn ps(&self, id: &str) -> Result<Vec<u32>> {
        let out = self
            .run(id, &["ps", "--format", "json", id], None, None)
            .await?;
        serde_json::from_slice::<Option<Vec<u32>>>(&out)
            .map(Option::unwrap_or_default)
            .map_err(|e| ShimError::Runtime {
                binary: self.config.binary.clone(),
                command: "ps".into(),
                id: id.into(),
                message: format!("unreadable output: {e}"),
            })
    }

    /// `resources` is an OCI `LinuxResources` object as JSON.
    pub async fn update(&self, id: &str, resources: Vec<u8>) -> Result<()> {
        self.run(
            id,
            &["update", "--resources", "-", id],
            Some(resources),
            None,
        )
        .await
        .map(drop)
    }

    /// `runc state`: the runtime's view, as JSON.
    pub async fn state(&self, id: &str) -> Result<serde_json::Value> {
        let out = self.run(id, &["state", id], None, None).await?;
        serde_json::from_slice(&out).map_err(|e| ShimError::Runtime {
            binary: self.config.binary.clone(),
            command: "state".into(),
            id: id.into(),
            message: format!("unreadable output: {e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runc 1.1 `state.json` of a stopped container, as far as `remove_stopped` reads it.
    fn runc_state(pid_ns_path: &str, systemd: bool, poststop: bool) -> serde_json::Value {
        let hooks = if poststop {
            serde_json::json!({"poststop": [{"path": "/bin/true"}]})
        } else {
            serde_json::Value::Null
        };
        serde_json::json!({
            "id": "c1",
            "config": {
                "namespaces": [
                    {"type": "NEWNS", "path": ""},
                    {"type": "NEWPID", "path": pid_ns_path},
                ],
                "cgroups": {"path": "/ns/c1", "Systemd": systemd},
                "Hooks": hooks,
            },
            "cgroup_paths": {
                "": "/sys/fs/cgroup/unified/ns/c1",
                "memory": "/sys/fs/cgroup/memory/ns/c1",
            },
            "intel_rdt_path": "",
        })
    }

    #[test]
    fn only_plain_stopped_containers_are_removed_without_runc() {
        assert_eq!(
            removable_cgroups(&runc_state("", false, false)),
            Some(vec![
                "/sys/fs/cgroup/unified/ns/c1".to_string(),
                "/sys/fs/cgroup/memory/ns/c1".to_string(),
            ])
        );
        // Another PID namespace (processes may be left to kill), systemd's cgroups, poststop
        // hooks: runc's work.
        assert_eq!(
            removable_cgroups(&runc_state("/proc/1/ns/pid", false, false)),
            None
        );
        assert_eq!(removable_cgroups(&runc_state("", true, false)), None);
        // (runc 1.1 writes `Systemd`; a lower-case key is read too.)
        let mut lower = runc_state("", false, false);
        lower["config"]["cgroups"] = serde_json::json!({"systemd": true});
        assert_eq!(removable_cgroups(&lower), None);
        assert_eq!(removable_cgroups(&runc_state("", false, true)), None);
        let mut no_pid_ns = runc_state("", false, false);
        no_pid_ns["config"]["namespaces"] = serde_json::json!([{"type": "NEWNS"}]);
        assert_eq!(removable_cgroups(&no_pid_ns), None);
        let mut rdt = runc_state("", false, false);
        rdt["intel_rdt_path"] = "/sys/fs/resctrl/c1".into();
        assert_eq!(removable_cgroups(&rdt), None);
        // Never a directory outside the cgroup file systems.
        for path in [
            "/etc",
            "/sys/fs/cgroup/",
            "/sys/fs/cgroup/memory/../../../etc",
            "x",
        ] {
            let mut odd = runc_state("", false, false);
            odd["cgroup_paths"]["memory"] = path.into();
            assert_eq!(removable_cgroups(&odd), None, "{path}");
        }
        let mut odd = runc_state("", false, false);
        odd["cgroup_paths"]["memory"] = 7.into();
        assert_eq!(removable_cgroups(&odd), None);
    }

    #[test]
    fn a_state_directory_runc_should_remove_is_left_whole() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("c1");
        std::fs::create_dir(&state).unwrap();
        // No state.json; one that is not JSON; one that asks for runc.
        assert!(!remove_stopped(&state).unwrap());
        std::fs::write(state.join("state.json"), b"{not json").unwrap();
        assert!(!remove_stopped(&state).unwrap());
        let hooks = runc_state("", false, true).to_string();
        std::fs::write(state.join("state.json"), hooks).unwrap();
        assert!(!remove_stopped(&state).unwrap());
        assert!(state.join("state.json").exists());
        // Cgroups already gone: the state directory goes.
        let mut gone = runc_state("", false, false);
        gone["cgroup_paths"] = serde_json::json!({"memory": "/sys/fs/cgroup/no-such-berth-cgroup"});
        std::fs::write(state.join("state.json"), gone.to_string()).unwrap();
        assert!(remove_stopped(&state).unwrap());
        assert!(!state.exists());
    }

    fn fifo_in(dir: &Path) -> PathBuf {
        let path = dir.join(EXEC_FIFO);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o622)).unwrap();
        path
    }

    #[tokio::test]
    async fn the_init_is_let_go_through_its_exec_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let path = fifo_in(dir.path());
        // The init: blocked opening the fifo for writing, then one byte, then its exec.
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
                f.write_all(b"0").unwrap();
            })
        };
        let living = std::future::pending();
        assert_eq!(let_init_go(&path, living).await, Ok(true));
        writer.join().unwrap();
        assert!(!path.exists(), "the fifo is removed, as runc start does");
        // No fifo (started already, or another state layout): runc start's turn.
        assert_eq!(let_init_go(&path, async {}).await, Ok(false));
    }

    #[tokio::test]
    async fn a_dead_init_is_not_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = fifo_in(dir.path());
        // Reaped, never having opened the fifo: not waited for (a hang fails the test).
        let within = |f| tokio::time::timeout(std::time::Duration::from_secs(5), f);
        let err = within(let_init_go(&path, async {})).await.expect("in time");
        assert_eq!(err, Err("container process is already dead".into()));
        assert!(path.exists(), "a failed start leaves the fifo");
        // Not a fifo: refused.
        let file = dir.path().join("plain");
        std::fs::write(&file, "0").unwrap();
        assert!(
            let_init_go(&file, async {})
                .await
                .unwrap_err()
                .contains("not a fifo")
        );
    }

    #[test]
    fn programs_are_found_on_path_once() {
        let sh = program("sh");
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{sh:?}");
        assert_eq!(program("sh"), sh);
        assert_eq!(program("/opt/x/runc"), Path::new("/opt/x/runc"));
        // Not found: left to the spawn to say so.
        assert_eq!(
            program("no-such-runtime-here"),
            Path::new("no-such-runtime-here")
        );
    }

    #[test]
    fn config_roots_per_namespace() {
        let c = RuntimeConfig::new("", "", false, "default");
        assert_eq!(c.binary, "runc");
        assert_eq!(c.root, Path::new("/run/berth/runc/default"));
        let c = RuntimeConfig::new("crun", "/run/x", true, "k8s.io");
        assert_eq!(c.root, Path::new("/run/x/k8s.io"));
    }
}
