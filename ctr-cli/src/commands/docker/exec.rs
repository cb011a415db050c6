//! `berth exec`: run a command in a running container, Docker style (the process runner
//! under it is [`crate::client::process`]).

use berth_proto::containerd::v1::types::Status as TaskStatus;
use clap::Args;

use crate::client::docker::start_failure_code;
use crate::client::process::{ExecIo, StartFailed, merge_env, process_of, run_process};
use crate::client::rootfs::resolve_user;
use crate::client::{Client, containers, tasks};
use crate::exit::{Exit, exit_with};

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

pub async fn run(c: &Client, a: ExecArgs) -> anyhow::Result<()> {
    let ct = containers::resolve(c, &a.container).await?;
    let task = tasks::get(c, &ct.id).await.ok();
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
    let mut process = process_of(&ct)?;
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
    process["env"] = serde_json::json!(merge_env(&base, &env));
    if let Some(w) = a.workdir.filter(|w| !w.is_empty()) {
        process["cwd"] = serde_json::Value::String(w);
    }
    if let Some(u) = a.user.as_deref().filter(|u| !u.is_empty()) {
        let root = std::path::PathBuf::from(format!("/proc/{pid}/root"));
        process["user"] = resolve_user(&root, u)?;
    }
    let exec_id = containers::new_id();
    let io = ExecIo {
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
