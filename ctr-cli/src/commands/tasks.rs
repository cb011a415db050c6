//! `berth tasks`: the ctr-style task commands (ls, ps, kill, exec, pause, resume, metrics,
//! rm, start), with ctr 1.6's flags and output.

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use berth_proto::containerd::v1::types::Status as TaskStatus;
use clap::{Args, Subcommand};
use tabwriter::TabWriter;

use crate::client::process::{self, ExecIo, ExecOverrides, TaskIo, process_of};
use crate::client::signal::{SIGKILL, label_stop_signal, parse_signal};
use crate::client::tasks::{self, status_name};
use crate::client::{Client, containers, snapshots, status};
use crate::exit::exit_with;
use crate::output::{self, Format};

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// List tasks.
    #[command(alias = "list")]
    Ls {
        /// Print only the task id.
        #[arg(short, long)]
        quiet: bool,
    },
    /// List the processes of a container's task.
    Ps { container: String },
    /// Signal a container's task (default: the image's stop signal, else SIGTERM).
    Kill {
        /// Signal to send (name, with or without SIG, or number).
        #[arg(short, long)]
        signal: Option<String>,
        /// Signal this exec process instead of the task.
        #[arg(long)]
        exec_id: Option<String>,
        /// Signal every process inside the container (ctr's -a is our --address).
        #[arg(long)]
        all: bool,
        container: String,
    },
    /// Run an additional process in a running container.
    Exec(ExecArgs),
    /// Pause a running container.
    Pause { container: String },
    /// Resume a paused container.
    Resume { container: String },
    /// One data point of a task's cgroup metrics (--format table or json).
    #[command(alias = "metric")]
    Metrics { container: String },
    /// Delete stopped tasks (or one exec process with --exec-id).
    #[command(alias = "delete", alias = "del", alias = "remove")]
    Rm {
        /// Kill the task (SIGKILL, all processes) first.
        #[arg(short, long)]
        force: bool,
        /// Delete this exec process instead of the task.
        #[arg(long)]
        exec_id: Option<String>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Create and start the task of an existing container, attached unless -d.
    Start {
        /// Return once the task has started.
        #[arg(short, long)]
        detach: bool,
        /// Send all IO to /dev/null.
        #[arg(long)]
        null_io: bool,
        /// Log URI for the task's output (file://, binary://).
        #[arg(long)]
        log_uri: Option<String>,
        /// Write the task's pid to this file.
        #[arg(long)]
        pid_file: Option<std::path::PathBuf>,
        container: String,
    },
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Working directory of the new process.
    #[arg(long)]
    pub cwd: Option<String>,
    /// Allocate a TTY.
    #[arg(short, long)]
    pub tty: bool,
    /// Return once the process has started.
    #[arg(short, long)]
    pub detach: bool,
    /// The exec id of the new process (unique within the task).
    #[arg(long, required = true)]
    pub exec_id: String,
    /// User (name or uid, optionally :group or :gid), resolved in the container.
    #[arg(long)]
    pub user: Option<String>,
    /// Environment variables, KEY=VALUE (repeatable).
    #[arg(long)]
    pub env: Vec<String>,
    /// Log URI for the process's output instead of this terminal.
    #[arg(long)]
    pub log_uri: Option<String>,
    pub container: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// A time as Go prints a `time.Time` in UTC (`2006-01-02 15:04:05.999999999 +0000 UTC`).
fn go_time(ts: Option<&prost_types::Timestamp>) -> String {
    let Some(t) = ts else {
        return "0001-01-01 00:00:00 +0000 UTC".into();
    };
    let at = UNIX_EPOCH
        + Duration::new(
            u64::try_from(t.seconds).unwrap_or(0),
            u32::try_from(t.nanos).unwrap_or(0),
        );
    // humantime: 2006-01-02T15:04:05.123456789Z
    let text = humantime::format_rfc3339_nanos(at).to_string();
    let text = text.trim_end_matches('Z');
    let (date, time) = text.split_once('T').unwrap_or((text, ""));
    let time = match time.split_once('.') {
        Some((hms, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                hms.to_string()
            } else {
                format!("{hms}.{frac}")
            }
        }
        None => time.to_string(),
    };
    format!("{date} {time} +0000 UTC")
}

/// Prints lines of tab-separated cells as Go's tabwriter(minwidth, 8, padding 4) does.
fn print_tabbed(minwidth: usize, lines: &[String]) -> anyhow::Result<()> {
    let mut tw = TabWriter::new(std::io::stdout())
        .minwidth(minwidth)
        .padding(4);
    for l in lines {
        writeln!(tw, "{l}")?;
    }
    tw.flush()?;
    Ok(())
}

/// The exec id a `ProcessInfo` carries (runc shims send `containerd.runc.v1.ProcessDetails`).
#[derive(Clone, PartialEq, prost::Message)]
struct ProcessDetails {
    #[prost(string, tag = "1")]
    exec_id: String,
}

fn process_info(info: Option<&prost_types::Any>) -> String {
    let Some(a) = info else {
        return "-".into();
    };
    if a.type_url.ends_with("ProcessDetails")
        && let Ok(d) = <ProcessDetails as prost::Message>::decode(a.value.as_slice())
    {
        return format!(
            "&ProcessDetails{{ExecID:{},XXX_unrecognized:[],}}",
            d.exec_id
        );
    }
    a.type_url.clone()
}

pub async fn run(c: &Client, cmd: Cmd, format: Format) -> anyhow::Result<()> {
    match cmd {
        Cmd::Ls { quiet } => ls(c, quiet, format).await,
        Cmd::Ps { container } => ps(c, &container, format).await,
        Cmd::Kill {
            signal,
            exec_id,
            all,
            container,
        } => kill(c, &container, signal, exec_id.unwrap_or_default(), all).await,
        Cmd::Pause { container } => {
            containers::get(c, &container).await?;
            tasks::get(c, &container).await?;
            tasks::pause(c, &container).await.map_err(status)
        }
        Cmd::Resume { container } => {
            containers::get(c, &container).await?;
            tasks::get(c, &container).await?;
            tasks::resume(c, &container).await.map_err(status)
        }
        Cmd::Metrics { container } => metrics(c, &container, format).await,
        Cmd::Rm {
            force,
            exec_id,
            containers: ids,
        } => match exec_id {
            Some(exec_id) => rm_exec(c, &ids, &exec_id, force).await,
            None => rm(c, ids, force).await,
        },
        Cmd::Exec(args) => exec_cmd(c, args).await,
        Cmd::Start {
            detach,
            null_io,
            log_uri,
            pid_file,
            container,
        } => start_cmd(c, &container, detach, null_io, log_uri, pid_file).await,
    }
}

async fn ls(c: &Client, quiet: bool, format: Format) -> anyhow::Result<()> {
    let list = tasks::list(c).await.map_err(status)?;
    if quiet {
        for t in &list {
            println!("{}", t.id);
        }
    } else if format == Format::Json {
        output::json(&serde_json::Value::Array(
            list.iter()
                .map(|t| {
                    serde_json::json!({
                        "ID": t.id, "Pid": t.pid, "Status": status_name(t),
                    })
                })
                .collect(),
        ))?;
    } else {
        let mut lines = vec!["TASK\tPID\tSTATUS\t".to_string()];
        lines.extend(
            list.iter()
                .map(|t| format!("{}\t{}\t{}", t.id, t.pid, status_name(t))),
        );
        print_tabbed(4, &lines)?;
    }
    Ok(())
}

async fn ps(c: &Client, container: &str, format: Format) -> anyhow::Result<()> {
    containers::get(c, container).await?;
    tasks::get(c, container).await?;
    let procs = tasks::list_pids(c, container).await?;
    if format == Format::Json {
        output::json(&serde_json::Value::Array(
            procs
                .iter()
                .map(|p| serde_json::json!({"Pid": p.pid, "Info": p.info.as_ref().map(output::any_json)}))
                .collect(),
        ))?;
    } else {
        let mut lines = vec!["PID\tINFO".to_string()];
        lines.extend(
            procs
                .iter()
                .map(|p| format!("{}\t{}", p.pid, process_info(p.info.as_ref()))),
        );
        print_tabbed(1, &lines)?;
    }
    Ok(())
}

async fn kill(
    c: &Client,
    container: &str,
    signal: Option<String>,
    exec_id: String,
    all: bool,
) -> anyhow::Result<()> {
    if all && !exec_id.is_empty() {
        anyhow::bail!("specify an exec-id or all; not both");
    }
    let ct = containers::get(c, container).await?;
    let sig = match signal {
        Some(s) if !s.is_empty() => parse_signal(&s)?,
        _ => label_stop_signal(&ct)?,
    };
    tasks::get(c, container).await?;
    tasks::kill(c, container, &exec_id, sig, all)
        .await
        .map_err(status)
}

async fn metrics(c: &Client, container: &str, format: Format) -> anyhow::Result<()> {
    containers::get(c, container).await?;
    tasks::get(c, container).await?;
    let (ts, m) = tasks::metrics(c, container).await?;
    if format == Format::Json {
        output::json(&m.to_json())?;
    } else {
        let mut lines = vec![
            "ID\tTIMESTAMP\t".to_string(),
            format!("{container}\t{}\t", go_time(ts.as_ref())),
            String::new(),
            "METRIC\tVALUE\t".to_string(),
        ];
        lines.extend(m.rows().into_iter().map(|(k, v)| format!("{k}\t{v}\t")));
        print_tabbed(1, &lines)?;
    }
    Ok(())
}

/// `tasks rm --exec-id`: deletes one exec process of the first container named (killed
/// first with `force`), ending with its exit status.
async fn rm_exec(c: &Client, ids: &[String], exec_id: &str, force: bool) -> anyhow::Result<()> {
    let id = ids.first().cloned().unwrap_or_default();
    containers::get(c, &id).await?;
    tasks::get(c, &id).await?;
    if force {
        tasks::kill_and_wait(c, &id, exec_id, SIGKILL, None).await?;
    }
    let code = tasks::delete_process(c, &id, exec_id)
        .await
        .map_err(status)?;
    exit_with(code)
}

/// `tasks rm`: deletes each container's task, warning of a non-zero exit status as ctr
/// does; fails with the first error after trying them all.
async fn rm(c: &Client, ids: Vec<String>, force: bool) -> anyhow::Result<()> {
    let mut first = None;
    for id in ids {
        let r = match containers::get(c, &id).await {
            Ok(_) => delete_task(c, &id, force).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(0) => {}
            Ok(code) => {
                eprintln!("berth: warning: task {id} exit with non-zero exit code {code}")
            }
            Err(e) => {
                eprintln!("berth: unable to delete {id}: {e:#}");
                first.get_or_insert(e);
            }
        }
    }
    match first {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// ctr's `Task.Delete`: the task must be stopped (or created with no process), then it is
/// deleted; returns its exit status. With `force` every process of the task is killed and
/// waited for first (ctr's `WithProcessKill`).
async fn delete_task(c: &Client, id: &str, force: bool) -> anyhow::Result<u32> {
    let t = tasks::get(c, id).await?;
    if force {
        tasks::kill_and_wait(c, id, "", SIGKILL, None).await?;
    } else {
        match tasks::status_of(&t) {
            TaskStatus::Stopped | TaskStatus::Unknown => {}
            TaskStatus::Created if t.pid == 0 => {}
            other => anyhow::bail!(
                "task must be stopped before deletion: {}: failed precondition",
                other.as_str_name().to_ascii_lowercase()
            ),
        }
    }
    tasks::delete(c, id).await.map_err(status)
}

async fn exec_cmd(c: &Client, a: ExecArgs) -> anyhow::Result<()> {
    let ct = containers::get(c, &a.container).await?;
    let task = tasks::get(c, &a.container).await?;
    let process = process::exec_process(
        &ct,
        task.pid,
        ExecOverrides {
            args: &a.args,
            tty: a.tty,
            env: &a.env,
            cwd: a.cwd,
            user: a.user.as_deref(),
            default_term: false,
        },
    )?;
    let io = ExecIo {
        stdin: true,
        tty: a.tty,
        detach: a.detach,
        log_uri: a.log_uri,
    };
    let code = process::run_process(c, &a.container, &a.exec_id, &process, io).await?;
    exit_with(code)
}

async fn start_cmd(
    c: &Client,
    id: &str,
    detach: bool,
    null_io: bool,
    log_uri: Option<String>,
    pid_file: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let ct = containers::get(c, id).await?;
    let process = process_of(&ct)?;
    let tty = process
        .get("terminal")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    if tty && null_io {
        anyhow::bail!("tty and null-io cannot be used together");
    }
    let rootfs = snapshots::rootfs_mounts(c, &ct).await?;
    let io = TaskIo {
        tty,
        null_io,
        detach,
        log_uri,
        pid_file,
    };
    let code = process::run_task(c, &ct, rootfs, io).await?;
    exit_with(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_time_format() {
        let ts = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 120_000_000,
        };
        assert_eq!(go_time(Some(&ts)), "2023-11-14 22:13:20.12 +0000 UTC");
        let ts = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        };
        assert_eq!(go_time(Some(&ts)), "2023-11-14 22:13:20 +0000 UTC");
    }
}
