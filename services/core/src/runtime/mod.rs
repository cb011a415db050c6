//! The runtime manager: maps a container's runtime name to a shim binary through the
//! config's `runtimes` table and runs shims (the shim v2 `start` and `delete` contract).
//! [`shim`] is the one client of a running shim's ttrpc task service.
//!
//! This is the lower layer of tasks: it knows shims and processes, not the task table.

mod shim;

pub use shim::{
    ExecOptions, Exit, PidInfo, ProcessState, ProcessStatus, Shim, ShimTask, ShimTime, Stdio,
};

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use berth_proto::ttrpc::api;

use crate::config::{BERTH_SHIM, RuntimeConfig};
use crate::error::{Error, Result};

/// Knows the configured runtimes and the daemon's addresses that shims are given.
#[derive(Clone)]
pub struct RuntimeManager {
    runtimes: BTreeMap<String, RuntimeConfig>,
    default_runtime: String,
    grpc_address: PathBuf,
    ttrpc_address: PathBuf,
}

impl RuntimeManager {
    pub fn new(
        runtimes: BTreeMap<String, RuntimeConfig>,
        default_runtime: &str,
        grpc_address: &Path,
        ttrpc_address: &Path,
    ) -> Self {
        RuntimeManager {
            runtimes,
            default_runtime: default_runtime.to_string(),
            grpc_address: grpc_address.to_path_buf(),
            ttrpc_address: ttrpc_address.to_path_buf(),
        }
    }

    /// The daemon address shims of this daemon are started with (`-address`).
    pub fn grpc_address(&self) -> &Path {
        &self.grpc_address
    }

    /// The runtime called `name` (the default runtime for an empty name).
    ///
    /// A name in the `runtimes` table uses its entry. Any other name resolves as containerd
    /// resolves it: `io.containerd.<name>.<version>` is the shim binary
    /// `containerd-shim-<name>-<version>` on `PATH`, an absolute path is the shim binary
    /// itself, and the legacy `io.containerd.runtime.v1.linux` runs on the default runtime
    /// (its `RuncOptions` are translated, see [`crate::tasks`]). A shim binary that does not
    /// exist is NotFound.
    pub fn resolve(&self, name: &str) -> Result<(String, RuntimeConfig)> {
        let name = if name.is_empty() {
            self.default_runtime.as_str()
        } else {
            name
        };
        if let Some(r) = self.runtimes.get(name) {
            return Ok((name.to_string(), r.clone()));
        }
        if name == LEGACY_LINUX_RUNTIME
            && let Some(r) = self.runtimes.get(&self.default_runtime)
        {
            return Ok((name.to_string(), r.clone()));
        }
        let shim = shim_binary_name(name).ok_or_else(|| {
            Error::invalid(format!(
                "runtime {name:?} is not a runtime name (io.containerd.<name>.<version> or an absolute path)"
            ))
        })?;
        if find_binary(&shim).is_none() {
            return Err(Error::not_found(format!(
                "runtime {name:?} binary not installed {shim:?}"
            )));
        }
        let default = self
            .runtimes
            .get(&self.default_runtime)
            .cloned()
            .unwrap_or_default();
        Ok((
            name.to_string(),
            RuntimeConfig {
                shim,
                runtime: default.runtime,
                runtime_root: default.runtime_root,
            },
        ))
    }

    /// Runs `<shim> ... start` in `bundle`, records the address it prints in
    /// `<bundle>/address` and connects to it.
    pub async fn start_shim(
        &self,
        runtime: &RuntimeConfig,
        namespace: &str,
        id: &str,
        bundle: &Path,
        options: Option<Vec<u8>>,
    ) -> Result<Shim> {
        let log = forward_log(bundle, namespace, id)?;
        let out = self
            .run_shim(runtime, namespace, id, bundle, &["start"], options)
            .await?;
        if !out.status.success() {
            return Err(Error::Unavailable(format!(
                "shim {:?} for task {id} failed to start ({}): {}",
                runtime.shim,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let address = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if address.is_empty() {
            return Err(Error::Unavailable(format!(
                "shim {:?} for task {id} printed no address",
                runtime.shim
            )));
        }
        let (path, data) = (bundle.join("address"), address.clone().into_bytes());
        tokio::task::spawn_blocking(move || write_file_atomic(&path, &data))
            .await
            .map_err(|e| Error::Internal(format!("write the shim address of task {id}: {e}")))??;
        let mut shim = Shim::connect(&address, namespace, id).await?;
        shim.set_log(log);
        Ok(shim)
    }
}

impl RuntimeManager {
    /// Runs `<shim> ... delete` in `bundle`: the shim v2 clean-up of a task whose shim is
    /// gone (the runtime's container deleted, the rootfs unmounted). Returns its exit.
    pub async fn delete_shim(
        &self,
        runtime: &RuntimeConfig,
        namespace: &str,
        id: &str,
        bundle: &Path,
    ) -> Result<Exit> {
        use berth_proto::ttrpc::protobuf::Message;
        let out = self
            .run_shim(runtime, namespace, id, bundle, &["delete"], None)
            .await?;
        if !out.status.success() {
            return Err(Error::Internal(format!(
                "shim {:?} delete for task {id} failed ({}): {}",
                runtime.shim,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        api::DeleteResponse::parse_from_bytes(&out.stdout)
            .map(|r| shim::exit_of(&r))
            .map_err(|e| {
                Error::Internal(format!(
                    "shim {:?} delete for task {id}: bad response: {e}",
                    runtime.shim
                ))
            })
    }

    /// Runs the shim binary with the shim v2 flags and `-bundle`, then `tail` (the action and
    /// its flags), with `stdin` (the task's runtime options, a protobuf `Any`, as containerd
    /// 1.x hands them to `start`) on its standard input, and returns its output.
    ///
    /// Other shims run in `bundle`, as containerd runs them (they take it for their bundle).
    /// Ours takes `-bundle` and moves there itself: a working directory to set keeps Rust's
    /// standard library from spawning through `posix_spawn` (a vfork) when the C library is
    /// linked statically, as in the deployed berthd, and a plain fork copies berthd's page
    /// tables and makes every page it writes afterwards a copy-on-write fault.
    async fn run_shim(
        &self,
        runtime: &RuntimeConfig,
        namespace: &str,
        id: &str,
        bundle: &Path,
        tail: &[&str],
        stdin: Option<Vec<u8>>,
    ) -> Result<std::process::Output> {
        use tokio::io::AsyncWriteExt;
        let fail = |e: std::io::Error| {
            Error::Unavailable(format!(
                "run shim {:?} {} for task {id} in namespace {namespace}: {e}",
                runtime.shim,
                tail.last().copied().unwrap_or_default()
            ))
        };
        let mut child = self
            .shim_command(runtime, namespace, id, bundle, tail)
            .stdin(if stdin.is_some() {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(fail)?;
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A shim that does not read its stdin closes it: not an error.
            let _ = pipe.write_all(&data).await;
        }
        child.wait_with_output().await.map_err(fail)
    }
}

impl RuntimeManager {
    /// The shim's command line, environment and working directory (see `run_shim`).
    fn shim_command(
        &self,
        runtime: &RuntimeConfig,
        namespace: &str,
        id: &str,
        bundle: &Path,
        tail: &[&str],
    ) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&runtime.shim);
        if !is_berth_shim(&runtime.shim) {
            cmd.current_dir(bundle);
        }
        cmd.args(["-namespace", namespace, "-id", id, "-address"])
            .arg(&self.grpc_address)
            .args(["-publish-binary", &publish_binary()])
            .arg("-bundle")
            .arg(bundle)
            .args(tail)
            // Its own process group: a signal to berthd's group (a terminal's ^C) never
            // reaches a shim, even one that does not leave the group itself.
            .process_group(0)
            .env("TTRPC_ADDRESS", &self.ttrpc_address);
        cmd
    }
}

/// containerd 1.x's v1 runtime name; its tasks run on the default (v2) runtime here.
pub const LEGACY_LINUX_RUNTIME: &str = "io.containerd.runtime.v1.linux";

/// The shim binary of a runtime name, as containerd derives it: the name itself when it is
/// an absolute path, else `containerd-shim-<name>-<version>` from its last two dotted
/// parts. None for a name that has no such parts.
fn shim_binary_name(runtime: &str) -> Option<String> {
    if Path::new(runtime).is_absolute() {
        return Some(runtime.to_string());
    }
    let parts: Vec<&str> = runtime.split('.').collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty() || p.contains('/')) {
        return None;
    }
    let (name, version) = (parts[parts.len() - 2], parts[parts.len() - 1]);
    Some(format!("containerd-shim-{name}-{version}"))
}

/// Whether `shim` (a name or a path) is berth's own shim, which takes its bundle from
/// `-bundle` whatever the action.
fn is_berth_shim(shim: &str) -> bool {
    Path::new(shim).file_name() == Some(std::ffi::OsStr::new(BERTH_SHIM))
}

/// The file a command name runs: itself when it has a slash, else the first executable of
/// that name on `PATH`.
fn find_binary(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| executable(p))
}

/// What shims are told to run to publish events: this daemon's own binary.
fn publish_binary() -> String {
    std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Ends the log forwarder when the last handle of a shim goes.
pub struct LogForwarder(tokio::task::JoinHandle<()>);

impl Drop for LogForwarder {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Makes the `<bundle>/log` FIFO the shim writes its log to (or, after a restart of berthd,
/// opens it again) and forwards its lines to the daemon's log. Opened read-write so it never
/// reads end-of-file between shim writers.
pub(crate) fn forward_log(bundle: &Path, namespace: &str, id: &str) -> Result<LogForwarder> {
    use tokio::io::AsyncBufReadExt;
    let path = bundle.join("log");
    match nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(Error::io("create log fifo", &path, e.into())),
    }
    let rx = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(&path)
        .map_err(|e| Error::io("open log fifo", &path, e))?;
    let (namespace, id) = (namespace.to_string(), id.to_string());
    Ok(LogForwarder(tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(rx).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!(%namespace, task = %id, "shim: {line}");
        }
    })))
}

/// Writes `path` through a temp file, fsync and rename.
pub(crate) fn write_file_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(data).map_err(|e| Error::io("write", &tmp, e))?;
    f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))
}

/// The shim processes running for the daemon at `address` (their `-address` flag), as
/// (pid, namespace, id) from the process table.
pub fn shims_of(address: &Path) -> Vec<(i32, String, String)> {
    let address = address.display().to_string();
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !args.first().is_some_and(|a| a.contains("containerd-shim")) {
            continue;
        }
        let flag = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        if flag("-address").as_deref() != Some(address.as_str()) {
            continue;
        }
        if let (Some(ns), Some(id)) = (flag("-namespace"), flag("-id")) {
            found.push((pid, ns, id));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shim_binary_names_as_containerd_derives_them() {
        assert_eq!(
            shim_binary_name("io.containerd.runc.v2").as_deref(),
            Some("containerd-shim-runc-v2")
        );
        assert_eq!(
            shim_binary_name("io.containerd.kata.v2").as_deref(),
            Some("containerd-shim-kata-v2")
        );
        assert_eq!(
            shim_binary_name("/opt/shims/my-shim").as_deref(),
            Some("/opt/shims/my-shim")
        );
        assert_eq!(shim_binary_name("runc"), None);
        assert_eq!(shim_binary_name("io..v2"), None);
        assert_eq!(shim_binary_name("a/b.v2"), None);
    }

    #[test]
    fn berths_shim_is_named_its_bundle_and_other_shims_run_in_it() {
        let m = RuntimeManager::new(
            BTreeMap::new(),
            "io.containerd.runc.v2",
            Path::new("/s/b.sock"),
            Path::new("/s/b.sock.ttrpc"),
        );
        let bundle = Path::new("/run/berth/tasks/ns/c1");
        let args = |cmd: &tokio::process::Command| -> Vec<String> {
            cmd.as_std()
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        for shim in [BERTH_SHIM, "/opt/berth/bin/containerd-shim-berth-v2"] {
            let rt = RuntimeConfig {
                shim: shim.into(),
                ..RuntimeConfig::default()
            };
            let cmd = m.shim_command(&rt, "ns", "c1", bundle, &["start"]);
            // No working directory to set: the static build's spawn stays a vfork.
            assert_eq!(cmd.as_std().get_current_dir(), None, "{shim}");
            let args = args(&cmd);
            let at = args.iter().position(|a| a == "-bundle").expect("-bundle");
            assert_eq!(args[at + 1], bundle.to_string_lossy());
            assert_eq!(args.last().map(String::as_str), Some("start"));
        }
        let rt = RuntimeConfig {
            shim: "containerd-shim-runc-v2".into(),
            ..RuntimeConfig::default()
        };
        let cmd = m.shim_command(&rt, "ns", "c1", bundle, &["delete"]);
        assert_eq!(cmd.as_std().get_current_dir(), Some(bundle));
        assert!(args(&cmd).contains(&"-bundle".to_string()));
    }

    #[test]
    fn unknown_runtimes_resolve_to_shims_on_path() {
        let mut runtimes = BTreeMap::new();
        runtimes.insert(
            "io.containerd.runc.v2".to_string(),
            RuntimeConfig::default(),
        );
        let m = RuntimeManager::new(
            runtimes,
            "io.containerd.runc.v2",
            Path::new("/s/b.sock"),
            Path::new("/s/b.sock.ttrpc"),
        );
        let (name, rt) = m.resolve("").expect("default");
        assert_eq!(
            (name.as_str(), rt.shim.as_str()),
            ("io.containerd.runc.v2", "containerd-shim-berth-v2")
        );
        // /bin/sh exists everywhere: an absolute path names the shim itself.
        let (_, rt) = m.resolve("/bin/sh").expect("absolute");
        assert_eq!(rt.shim, "/bin/sh");
        assert_eq!(rt.runtime, "runc");
        assert!(matches!(
            m.resolve("io.containerd.nosuchshim.v9"),
            Err(Error::NotFound(m)) if m.contains("containerd-shim-nosuchshim-v9")
        ));
        assert!(matches!(
            m.resolve("nodots"),
            Err(Error::InvalidArgument(_))
        ));
        let (name, rt) = m.resolve(LEGACY_LINUX_RUNTIME).expect("legacy");
        assert_eq!(
            (name.as_str(), rt.shim.as_str()),
            (LEGACY_LINUX_RUNTIME, "containerd-shim-berth-v2")
        );
    }
}
