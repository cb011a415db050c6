//! Running a process with this terminal's stdio: an exec (`berth exec`, `berth tasks
//! exec`) or a task (`berth tasks start`). FIFOs (or a terminal in raw mode) are wired to
//! our stdio, the signals the user sends us are forwarded, and the exit status is waited
//! for and handed back. Also the process specs such an exec runs.

use nix::sys::signal::Signal;

use super::rootfs::resolve_user;
use super::stdio::{self, Attached, Fifos};
use super::tasks::{self, Stdio};
use super::{Client, status};
use crate::labels;
use berth_proto::containerd::services::containers::v1::Container;
use berth_proto::containerd::types::Mount;

/// The process spec of container `ct` (its spec's `process`), as JSON.
pub fn process_of(ct: &Container) -> anyhow::Result<serde_json::Value> {
    let spec = ct
        .spec
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("container {} has no spec", ct.id))?;
    let v: serde_json::Value = serde_json::from_slice(&spec.value)
        .map_err(|e| anyhow::anyhow!("container {}: spec is not valid JSON: {e}", ct.id))?;
    Ok(v.get("process")
        .cloned()
        .unwrap_or_else(|| serde_json::json!({"cwd": "/", "user": {"uid": 0, "gid": 0}})))
}

/// What an exec changes of its container's process.
pub struct ExecOverrides<'a> {
    /// The command and its arguments.
    pub args: &'a [String],
    pub tty: bool,
    /// `KEY=VALUE` (or bare `KEY`, from our environment) entries over the container's.
    pub env: &'a [String],
    pub cwd: Option<String>,
    /// A user name or uid[:gid], resolved in the container's root filesystem.
    pub user: Option<&'a str>,
    /// Add `TERM=xterm` to a terminal's environment that has no TERM (as `docker exec`).
    pub default_term: bool,
}

/// The process an exec runs in container `ct`, whose init process is `pid`: the container's
/// own process spec with the exec's changes. Every other field of it, known to this CLI or
/// not, is kept as the container has it.
pub fn exec_process(
    ct: &Container,
    pid: u32,
    o: ExecOverrides<'_>,
) -> anyhow::Result<serde_json::Value> {
    let mut process = process_of(ct)?;
    process["args"] = serde_json::json!(o.args);
    process["terminal"] = serde_json::Value::Bool(o.tty);
    let base: Vec<String> = process
        .get("env")
        .and_then(|e| serde_json::from_value(e.clone()).ok())
        .unwrap_or_default();
    let mut env = o.env.to_vec();
    if o.default_term && o.tty && !base.iter().chain(&env).any(|e| e.starts_with("TERM=")) {
        env.insert(0, "TERM=xterm".into());
    }
    if !env.is_empty() {
        process["env"] = serde_json::json!(merge_env(&base, &env));
    }
    if let Some(cwd) = o.cwd.filter(|c| !c.is_empty()) {
        process["cwd"] = serde_json::Value::String(cwd);
    }
    if let Some(user) = o.user.filter(|u| !u.is_empty()) {
        let root = std::path::PathBuf::from(format!("/proc/{pid}/root"));
        process["user"] = resolve_user(&root, user)?;
    }
    Ok(process)
}

/// An exec's environment: `KEY=VALUE` pairs in `env` replace same-key entries of `base`,
/// a bare `KEY` takes our own environment's value (as docker exec -e does).
fn merge_env(base: &[String], env: &[String]) -> Vec<String> {
    let mut out: Vec<String> = base.to_vec();
    for e in env {
        let entry = match e.split_once('=') {
            Some(_) => e.clone(),
            None => match std::env::var(e) {
                Ok(v) => format!("{e}={v}"),
                Err(_) => continue,
            },
        };
        let key = entry.split('=').next().unwrap_or_default().to_string();
        out.retain(|x| x.split('=').next() != Some(key.as_str()));
        out.push(entry);
    }
    out
}

/// How an exec's stdio is wired.
pub struct ExecIo {
    /// Attach our stdin.
    pub stdin: bool,
    /// A terminal (ours in raw mode).
    pub tty: bool,
    /// Return once started: no stdio (or `log_uri`), no wait.
    pub detach: bool,
    /// Send output to this URI (file://, binary://) instead.
    pub log_uri: Option<String>,
}

/// How a task's stdio is wired (`tasks start`).
pub struct TaskIo {
    pub tty: bool,
    pub null_io: bool,
    pub detach: bool,
    pub log_uri: Option<String>,
    pub pid_file: Option<std::path::PathBuf>,
}

/// A start that failed: the daemon's message, kept apart so `berth exec` can map it to
/// Docker's exit codes.
#[derive(Debug)]
pub struct StartFailed(pub String);

impl std::fmt::Display for StartFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartFailed {}

/// Forwards the signals a user sends us (^C...) to the process.
pub fn forward_signals(c: &Client, id: &str, exec_id: &str) -> tokio::task::JoinHandle<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (c, id, exec_id) = (c.clone(), id.to_string(), exec_id.to_string());
    tokio::spawn(async move {
        let kinds = [
            (SignalKind::interrupt(), Signal::SIGINT),
            (SignalKind::terminate(), Signal::SIGTERM),
            (SignalKind::hangup(), Signal::SIGHUP),
            (SignalKind::quit(), Signal::SIGQUIT),
            (SignalKind::user_defined1(), Signal::SIGUSR1),
            (SignalKind::user_defined2(), Signal::SIGUSR2),
        ];
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        for (kind, sig) in kinds {
            let Ok(mut s) = signal(kind) else { continue };
            let tx = tx.clone();
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    if tx.send(sig as u32).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        while let Some(sig) = rx.recv().await {
            let _ = tasks::kill(&c, &id, &exec_id, sig, false).await;
        }
    })
}

/// Keeps the process's pty the size of our terminal.
pub fn follow_size(c: &Client, id: &str, exec_id: &str) -> stdio::ResizeWatcher {
    let resize = |c: &Client, id: &str, exec_id: &str, (w, h): (u16, u16)| {
        let (c, id, exec_id) = (c.clone(), id.to_string(), exec_id.to_string());
        tokio::spawn(async move {
            let _ = tasks::resize(&c, &id, &exec_id, w, h).await;
        });
    };
    if let Some(size) = stdio::terminal_size() {
        resize(c, id, exec_id, size);
    }
    let (c, id, exec_id) = (c.clone(), id.to_string(), exec_id.to_string());
    stdio::on_resize(move |w, h| resize(&c, &id, &exec_id, (w, h)))
}

/// Closes the process's stdin once ours reached its end.
pub fn close_stdin_on_eof(c: &Client, id: &str, exec_id: &str, attached: &mut Attached) {
    let Some(eof) = attached.take_stdin_eof() else {
        return;
    };
    let (c, id, exec_id) = (c.clone(), id.to_string(), exec_id.to_string());
    tokio::spawn(async move {
        if eof.await.is_ok() {
            let _ = tasks::close_stdin(&c, &id, &exec_id).await;
        }
    });
}

/// Our stdio for a process: the FIFOs and their copies, or nothing (null IO or a log URI).
struct Wired {
    uris: (String, String, String),
    fifos: Option<Fifos>,
    attached: Option<Attached>,
}

impl Wired {
    fn stdio(&self, terminal: bool) -> Stdio {
        let (stdin, stdout, stderr) = self.uris.clone();
        Stdio {
            stdin,
            stdout,
            stderr,
            terminal,
        }
    }
}

fn wire(
    name: &str,
    stdin: bool,
    tty: bool,
    null: bool,
    log_uri: Option<String>,
) -> anyhow::Result<Wired> {
    if let Some(uri) = log_uri {
        if tty {
            anyhow::bail!("can't use log-uri with tty");
        }
        return Ok(Wired {
            uris: (String::new(), uri.clone(), uri),
            fifos: None,
            attached: None,
        });
    }
    if null {
        return Ok(Wired {
            uris: Default::default(),
            fifos: None,
            attached: None,
        });
    }
    let fifos = Fifos::new(name, stdin, tty)?;
    let attached = Attached::start(&fifos)?;
    Ok(Wired {
        uris: fifos.uris(),
        fifos: Some(fifos),
        attached: Some(attached),
    })
}

/// Runs `process` (an OCI process spec) as exec `exec_id` in container `id`'s task and
/// returns its exit status (0 right after the start when detached).
pub async fn run_process(
    c: &Client,
    id: &str,
    exec_id: &str,
    process: &serde_json::Value,
    io: ExecIo,
) -> anyhow::Result<u32> {
    let mut w = wire(
        exec_id,
        io.stdin && !io.detach,
        io.tty,
        io.detach && io.log_uri.is_none(),
        io.log_uri,
    )?;
    let _raw = if io.tty && w.attached.is_some() {
        stdio::raw_terminal()?
    } else {
        None
    };
    let spec = prost_types::Any {
        type_url: labels::PROCESS_TYPE_URL.to_string(),
        value: serde_json::to_vec(process)?,
    };
    tasks::exec(c, id, exec_id, spec, w.stdio(io.tty))
        .await
        .map_err(|e| StartFailed(status(e).to_string()))?;
    let delete = || async {
        let _ = tasks::delete_process(c, id, exec_id).await;
    };
    if let Some(a) = w.attached.as_mut() {
        close_stdin_on_eof(c, id, exec_id, a);
    }
    if let Err(e) = tasks::start(c, id, exec_id).await {
        delete().await;
        return Err(StartFailed(status(e).to_string()).into());
    }
    if io.detach {
        return Ok(0);
    }
    let code = attend(c, id, exec_id, io.tty, w.attached.take()).await;
    delete().await;
    drop(w.fifos);
    code
}

/// Stays with a started process until it exits: its pty sized as our terminal, or our
/// signals forwarded to it; then its output copied to the end. Returns its exit status.
async fn attend(
    c: &Client,
    id: &str,
    exec_id: &str,
    tty: bool,
    attached: Option<Attached>,
) -> anyhow::Result<u32> {
    let _size = tty.then(|| follow_size(c, id, exec_id));
    let signals = (!tty).then(|| forward_signals(c, id, exec_id));
    let code = tasks::wait(c, id, exec_id).await;
    if let Some(s) = signals {
        s.abort();
    }
    if let Some(a) = attached {
        a.wait_output().await;
    }
    code
}

/// Creates and starts the task of container `ct` (ctr's `tasks start`): returns its exit
/// status once it exited and was deleted (0 right after the start when detached).
pub async fn run_task(
    c: &Client,
    ct: &Container,
    rootfs: Vec<Mount>,
    io: TaskIo,
) -> anyhow::Result<u32> {
    let id = ct.id.as_str();
    let mut w = wire(
        id,
        !io.detach,
        io.tty,
        io.null_io || (io.detach && io.log_uri.is_none()),
        io.log_uri,
    )?;
    let _raw = if io.tty && w.attached.is_some() {
        stdio::raw_terminal()?
    } else {
        None
    };
    let pid = tasks::create(c, id, rootfs, w.stdio(io.tty))
        .await
        .map_err(status)?;
    let delete = || async {
        let _ = tasks::delete(c, id).await;
    };
    if let Some(p) = &io.pid_file
        && let Err(e) = std::fs::write(p, pid.to_string())
    {
        let _ = tasks::kill(c, id, "", super::signal::SIGKILL, true).await;
        delete().await;
        anyhow::bail!("write pid file {}: {e}", p.display());
    }
    if let Some(a) = w.attached.as_mut() {
        close_stdin_on_eof(c, id, "", a);
    }
    if let Err(e) = tasks::start(c, id, "").await {
        delete().await;
        return Err(status(e));
    }
    if io.detach {
        return Ok(0);
    }
    let code = attend(c, id, "", io.tty, w.attached.take()).await;
    let deleted = tasks::delete(c, id).await.map_err(status);
    drop(w.fifos);
    let code = code?;
    deleted?;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_merge_replaces_keys() {
        let base = ["PATH=/bin".to_string(), "A=1".to_string()];
        let out = merge_env(&base, &["A=2".into(), "B=3".into()]);
        assert_eq!(out, ["PATH=/bin", "A=2", "B=3"]);
    }
}
