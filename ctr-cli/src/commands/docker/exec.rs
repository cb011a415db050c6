//! `berth exec`: run a command in a running container, Docker style; and the process
//! runner under it and under `berth tasks exec|start`: FIFOs (or a terminal) wired to our
//! stdio, signals forwarded, the exit status waited for and handed back.

use berth_proto::containerd::services::containers::v1 as cpb;
use berth_proto::containerd::services::tasks::v1 as pb;
use berth_proto::containerd::v1::types::Status as TaskStatus;
use clap::Args;

use crate::client::stdio;
use crate::client::{Client, status};
use crate::commands::tasks;
use crate::exit::{Exit, exit_with};
use crate::labels;

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Keep stdin open (attach it to the command).
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    pub tty: bool,
    /// Run the command in the background.
    #[arg(short, long)]
    pub detach: bool,
    /// Set environment variables (KEY=VALUE, or KEY to pass ours).
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// User: name|uid[:group|gid].
    #[arg(short, long)]
    pub user: Option<String>,
    pub container: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

/// How an exec's stdio is wired.
pub struct Io {
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

fn owned(c: &Client) -> Client {
    Client {
        channel: c.channel.clone(),
        namespace: c.namespace.clone(),
    }
}

/// Forwards the signals a user sends us (^C...) to the process.
fn forward_signals(c: &Client, id: &str, exec_id: &str) -> tokio::task::JoinHandle<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (c, id, exec_id) = (owned(c), id.to_string(), exec_id.to_string());
    tokio::spawn(async move {
        let kinds = [
            (SignalKind::interrupt(), nix::sys::signal::Signal::SIGINT),
            (SignalKind::terminate(), nix::sys::signal::Signal::SIGTERM),
            (SignalKind::hangup(), nix::sys::signal::Signal::SIGHUP),
            (SignalKind::quit(), nix::sys::signal::Signal::SIGQUIT),
            (
                SignalKind::user_defined1(),
                nix::sys::signal::Signal::SIGUSR1,
            ),
            (
                SignalKind::user_defined2(),
                nix::sys::signal::Signal::SIGUSR2,
            ),
        ];
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        for (kind, sig) in kinds {
            let Ok(mut s) = signal(kind) else { continue };
            let tx = tx.clone();
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    if tx.send(sig).await.is_err() {
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
fn follow_size(c: &Client, id: &str, exec_id: &str) -> stdio::ResizeWatcher {
    let resize = move |c: &Client, id: String, exec_id: String, (w, h): (u16, u16)| {
        let mut api = tasks::tasks(c);
        let req = c.req(pb::ResizePtyRequest {
            container_id: id,
            exec_id,
            width: u32::from(w),
            height: u32::from(h),
        });
        tokio::spawn(async move {
            let _ = api.resize_pty(req).await;
        });
    };
    if let Some(size) = stdio::terminal_size() {
        resize(c, id.to_string(), exec_id.to_string(), size);
    }
    let (c, id, exec_id) = (owned(c), id.to_string(), exec_id.to_string());
    stdio::on_resize(move |w, h| resize(&c, id.clone(), exec_id.clone(), (w, h)))
}

/// Closes the process's stdin once ours reached its end.
fn close_stdin_on_eof(c: &Client, id: &str, exec_id: &str, attached: &mut stdio::Attached) {
    let Some(eof) = attached.take_stdin_eof() else {
        return;
    };
    let (c, id, exec_id) = (owned(c), id.to_string(), exec_id.to_string());
    tokio::spawn(async move {
        if eof.await.is_ok() {
            let _ = tasks::tasks(&c)
                .close_io(c.req(pb::CloseIoRequest {
                    container_id: id,
                    exec_id,
                    stdin: true,
                }))
                .await;
        }
    });
}

/// Our stdio for a process: the FIFOs and their copies, or nothing (null IO or a log URI).
struct Wired {
    uris: (String, String, String),
    fifos: Option<stdio::Fifos>,
    attached: Option<stdio::Attached>,
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
    let fifos = stdio::Fifos::new(name, stdin, tty)?;
    let attached = stdio::Attached::start(&fifos)?;
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
    io: Io,
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
    let (stdin, stdout, stderr) = w.uris.clone();
    tasks::tasks(c)
        .exec(c.req(pb::ExecProcessRequest {
            container_id: id.to_string(),
            stdin,
            stdout,
            stderr,
            terminal: io.tty,
            spec: Some(prost_types::Any {
                type_url: labels::PROCESS_TYPE_URL.to_string(),
                value: serde_json::to_vec(process)?,
            }),
            exec_id: exec_id.to_string(),
        }))
        .await
        .map_err(|e| StartFailed(status(e).to_string()))?;
    let delete = || async {
        let _ = tasks::tasks(c)
            .delete_process(c.req(pb::DeleteProcessRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await;
    };
    if let Some(a) = w.attached.as_mut() {
        close_stdin_on_eof(c, id, exec_id, a);
    }
    if let Err(e) = tasks::tasks(c)
        .start(c.req(pb::StartRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
        }))
        .await
    {
        delete().await;
        return Err(StartFailed(status(e).to_string()).into());
    }
    if io.detach {
        return Ok(0);
    }
    let _size = io.tty.then(|| follow_size(c, id, exec_id));
    let signals = (!io.tty).then(|| forward_signals(c, id, exec_id));
    let code = tasks::wait(c, id, exec_id).await;
    if let Some(s) = signals {
        s.abort();
    }
    if let Some(a) = w.attached.take() {
        a.wait_output().await;
    }
    delete().await;
    drop(w.fifos);
    code
}

/// Creates and starts the task of container `ct` (ctr's `tasks start`): returns its exit
/// status once it exited and was deleted (0 right after the start when detached).
pub async fn run_task(
    c: &Client,
    ct: &cpb::Container,
    rootfs: Vec<berth_proto::containerd::types::Mount>,
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
    let (stdin, stdout, stderr) = w.uris.clone();
    let created = tasks::tasks(c)
        .create(c.req(pb::CreateTaskRequest {
            container_id: id.to_string(),
            rootfs,
            stdin,
            stdout,
            stderr,
            terminal: io.tty,
            ..Default::default()
        }))
        .await
        .map_err(status)?
        .into_inner();
    let delete = || async {
        let _ = tasks::tasks(c)
            .delete(c.req(pb::DeleteTaskRequest {
                container_id: id.to_string(),
            }))
            .await;
    };
    if let Some(p) = &io.pid_file
        && let Err(e) = std::fs::write(p, created.pid.to_string())
    {
        let _ = tasks::kill(c, id, "", nix::sys::signal::Signal::SIGKILL, true).await;
        delete().await;
        anyhow::bail!("write pid file {}: {e}", p.display());
    }
    if let Some(a) = w.attached.as_mut() {
        close_stdin_on_eof(c, id, "", a);
    }
    if let Err(e) = tasks::tasks(c)
        .start(c.req(pb::StartRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        }))
        .await
    {
        delete().await;
        return Err(status(e));
    }
    if io.detach {
        return Ok(0);
    }
    let _size = io.tty.then(|| follow_size(c, id, ""));
    let signals = (!io.tty).then(|| forward_signals(c, id, ""));
    let code = tasks::wait(c, id, "").await;
    if let Some(s) = signals {
        s.abort();
    }
    if let Some(a) = w.attached.take() {
        a.wait_output().await;
    }
    let deleted = tasks::tasks(c)
        .delete(c.req(pb::DeleteTaskRequest {
            container_id: id.to_string(),
        }))
        .await
        .map_err(status);
    drop(w.fifos);
    let code = code?;
    deleted?;
    Ok(code)
}

/// Docker's exit status for a process that could not start: 127 when the command does not
/// exist, 126 when it cannot be run.
fn start_failure_code(message: &str) -> Option<u8> {
    if message.contains("executable file not found")
        || message.contains("no such file or directory")
    {
        Some(127)
    } else if message.contains("permission denied") {
        Some(126)
    } else {
        None
    }
}

pub async fn run(c: &Client, a: ExecArgs) -> anyhow::Result<()> {
    let ct = super::resolve(c, &a.container).await?;
    let task = tasks::get_task(c, &ct.id).await.ok();
    match task.as_ref().map(|t| TaskStatus::try_from(t.status)) {
        Some(Ok(TaskStatus::Running)) => {}
        Some(Ok(TaskStatus::Paused | TaskStatus::Pausing)) => {
            anyhow::bail!(
                "Container {} is paused, unpause the container before exec",
                ct.id
            )
        }
        _ => anyhow::bail!("Container {} is not running", ct.id),
    }
    let pid = task.map_or(0, |t| t.pid);
    let mut process = tasks::container_process(&ct)?;
    process["args"] = serde_json::json!(a.cmd);
    process["terminal"] = serde_json::Value::Bool(a.tty);
    let base: Vec<String> = process
        .get("env")
        .and_then(|e| serde_json::from_value(e.clone()).ok())
        .unwrap_or_default();
    let mut env = a.env.clone();
    if a.tty && !base.iter().chain(&env).any(|e| e.starts_with("TERM=")) {
        env.insert(0, "TERM=xterm".into());
    }
    process["env"] = serde_json::json!(tasks::merge_env(&base, &env));
    if let Some(w) = a.workdir.filter(|w| !w.is_empty()) {
        process["cwd"] = serde_json::Value::String(w);
    }
    if let Some(u) = a.user.as_deref().filter(|u| !u.is_empty()) {
        let root = std::path::PathBuf::from(format!("/proc/{pid}/root"));
        process["user"] = tasks::resolve_user(&root, u)?;
    }
    let exec_id = super::new_id();
    let io = Io {
        stdin: a.interactive,
        tty: a.tty,
        detach: a.detach,
        log_uri: None,
    };
    match run_process(c, &ct.id, &exec_id, &process, io).await {
        Ok(code) => exit_with(code),
        Err(e) => match e.downcast_ref::<StartFailed>() {
            Some(StartFailed(msg)) => match start_failure_code(msg) {
                Some(code) => Err(Exit::with(code, format!("OCI runtime exec failed: {msg}"))),
                None => Err(e),
            },
            None => Err(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_codes_for_commands_that_cannot_start() {
        assert_eq!(
            start_failure_code("exec: \"nope\": executable file not found in $PATH"),
            Some(127)
        );
        assert_eq!(
            start_failure_code("exec: /etc: permission denied"),
            Some(126)
        );
        assert_eq!(start_failure_code("something else"), None);
    }
}
