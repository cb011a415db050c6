//! `berth exec`: run a command in a running container, Docker style (the process runner
//! under it is [`crate::client::process`]).

use berth_proto::containerd::v1::types::Status as TaskStatus;
use clap::Args;

use crate::client::docker::start_failure_code;
use crate::client::process::{ExecIo, ExecOverrides, StartFailed, exec_process, run_process};
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
    let process = exec_process(
        &ct,
        pid,
        ExecOverrides {
            args: &a.cmd,
            tty: a.tty,
            env: &a.env,
            cwd: a.workdir,
            user: a.user.as_deref(),
            default_term: true,
        },
    )?;
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
