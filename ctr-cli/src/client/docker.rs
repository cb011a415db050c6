//! The lifecycle of berth's docker-style containers, shared by `run`, `start`, `stop`,
//! `restart`, `rm` and `attach`: a task started with its output in the container's log
//! file (or on this terminal), stopped with the image's stop signal, removed with
//! everything the container had.

use std::time::Duration;

use berth_proto::containerd::services::containers::v1::Container;
use berth_proto::containerd::v1::types::{Process, Status as TaskStatus};

use super::containers::{self, log_path, name_of, short_id, stdin_path};
use super::process::{close_stdin_on_eof, follow_size};
use super::signal::{self, SIGKILL};
use super::stdio::{self, Attached, Fifos, Output};
use super::tasks::{self, Stdio, is_live};
use super::{Client, gone_ok, snapshots, status, supervisor};
use crate::exit::Exit;
use crate::labels;

/// Both output streams into the container's log file; stdin from its FIFO when it was
/// made with `-i` ([`labels::STDIN_PATH`]).
pub fn log_stdio(ct: &Container) -> Stdio {
    let uri = log_path(ct)
        .map(|p| format!("file://{}?format=cri", p.display()))
        .unwrap_or_default();
    Stdio {
        stdin: stdin_path(ct)
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        stdout: uri.clone(),
        stderr: uri,
        terminal: containers::has_terminal(ct),
    }
}

/// The container's last run, as berthd recorded it when it retired the exited task
/// ([`labels::EXIT_CODE`], [`labels::FINISHED_AT`]): a stopped task of pid 0, or None when
/// nothing was recorded (never started, or ran before berthd retired tasks).
pub fn last_run(ct: &Container) -> Option<Process> {
    let code = ct.labels.get(labels::EXIT_CODE)?.parse().ok()?;
    let finished = ct
        .labels
        .get(labels::FINISHED_AT)
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .map(prost_types::Timestamp::from);
    Some(Process {
        container_id: ct.id.clone(),
        status: TaskStatus::Stopped as i32,
        exit_status: code,
        exited_at: finished,
        ..Default::default()
    })
}

/// The container's task, or its last run when berthd retired the task after it exited.
pub async fn task_or_last_run(c: &Client, ct: &Container) -> anyhow::Result<Option<Process>> {
    Ok(tasks::find(c, &ct.id).await?.or_else(|| last_run(ct)))
}

/// Waits for the container's task to exit: its exit status. berthd retires an exited task
/// of a container at once, so a task gone by the time of the wait has its status recorded
/// on the container ([`last_run`]).
pub async fn wait_exit(c: &Client, id: &str) -> anyhow::Result<u32> {
    match tasks::wait_raw(c, id, "").await {
        Ok(code) => Ok(code),
        Err(e) if e.code() == tonic::Code::NotFound => {
            let ct = containers::get(c, id).await?;
            last_run(&ct)
                .map(|p| p.exit_status)
                .ok_or_else(|| status(e))
        }
        Err(e) => Err(status(e)),
    }
}

/// Docker's exit code for a process that could not be started: 127 when the command is
/// not found, 126 when it cannot be executed (`run`, `start` and `exec` alike).
pub fn start_failure_code(message: &str) -> Option<u8> {
    let m = message.to_ascii_lowercase();
    if m.contains("executable file not found")
        || m.contains("no such file or directory")
        || m.contains("not found in $path")
    {
        Some(127)
    } else if m.contains("permission denied") || m.contains("exec format error") {
        Some(126)
    } else {
        None
    }
}

/// Starts the container's task: tells berthd's supervisor a user starts it (clearing a
/// stop mark and the restart count), deletes the stopped task of an earlier run, creates a
/// new one wired as `io`, starts it and records the start time. A failure to start the process
/// is an [`Exit`] with Docker's code (126/127, else `fail_code`), the task then removed.
pub async fn start_task(
    c: &Client,
    ct: &Container,
    io: Stdio,
    fail_code: u8,
) -> anyhow::Result<u32> {
    // First, so that a restart the supervisor waits to make is called off.
    supervisor::mark_started(c, &ct.id).await?;
    if let Some(t) = tasks::find(c, &ct.id).await? {
        if is_live(&t) {
            anyhow::bail!("container {} is already running", name_of(ct));
        }
        // berthd may retire it meanwhile.
        gone_ok(tasks::delete(c, &ct.id).await)?;
    }
    let failed = |e: tonic::Status| {
        let m = e.message().to_string();
        let code = start_failure_code(&m).unwrap_or(fail_code);
        Exit::with(
            code,
            format!("failed to start container {}: {m}", name_of(ct)),
        )
    };
    tasks::create(c, &ct.id, Vec::new(), io)
        .await
        .map_err(failed)?;
    let now = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    match tasks::start(c, &ct.id, "").await {
        Ok(pid) => {
            // A new run: no OOM kill of an earlier one is told of it.
            containers::relabel(c, &ct.id, (labels::STARTED_AT, &now), &[labels::OOM_KILLED])
                .await?;
            Ok(pid)
        }
        Err(e) => {
            let _ = tasks::delete(c, &ct.id).await;
            Err(failed(e))
        }
    }
}

/// Stops a container as Docker does: its stop signal (SIGTERM by default), then SIGKILL
/// after `timeout`. berthd's supervisor is told first, so that the restart policy does not
/// fight the stop (also when the container is waiting out a restart back-off).
pub async fn stop(c: &Client, ct: &Container, timeout: Duration) -> anyhow::Result<()> {
    supervisor::mark_stopped(c, &ct.id).await?;
    let Some(t) = tasks::find(c, &ct.id).await? else {
        return Ok(());
    };
    if !is_live(&t) {
        return Ok(());
    }
    let sig = signal::docker_stop_signal(&containers::docker_config(ct))?;
    let stopped = async {
        if tasks::kill_and_wait(c, &ct.id, "", sig, Some(timeout))
            .await?
            .is_none()
        {
            tasks::kill_and_wait(c, &ct.id, "", SIGKILL, Some(Duration::from_secs(30)))
                .await?
                .ok_or_else(|| anyhow::anyhow!("container {} did not stop after SIGKILL", ct.id))?;
        }
        anyhow::Ok(())
    };
    match stopped.await {
        Ok(()) => Ok(()),
        // It exited on its own meanwhile, and berthd retired its task: stopped all the same.
        Err(e) => match tasks::find(c, &ct.id).await? {
            Some(t) if is_live(&t) => Err(e),
            Some(_) | None => Ok(()),
        },
    }
}

/// Whether berthd's supervisor waits to restart `ct` (asked only of containers with a
/// restart policy).
pub async fn restarting(c: &Client, ct: &Container) -> anyhow::Result<bool> {
    if ct.labels.get(labels::RESTART).is_none_or(|p| p == "no") {
        return Ok(false);
    }
    Ok(supervisor::get(c, &ct.id)
        .await?
        .is_some_and(|s| s.restarting))
}

/// Removes a container: its task (killed first when `force`; a live one is refused
/// otherwise), its record, its snapshot and its log file.
pub async fn remove(c: &Client, ct: &Container, force: bool) -> anyhow::Result<()> {
    let running = |t: &Process| is_live(t) || tasks::status_of(t) == TaskStatus::Created;
    let refuse = || {
        anyhow::anyhow!(
            "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
            ct.id
        )
    };
    if !force && tasks::find(c, &ct.id).await?.is_some_and(|t| running(&t)) {
        return Err(refuse());
    }
    if !force && restarting(c, ct).await? {
        anyhow::bail!(
            "You cannot remove a restarting container {}. Stop the container before attempting removal or force remove",
            ct.id
        );
    }
    // The container goes: its restart policy must not start it again meanwhile (nor a
    // restart waiting out its back-off). The supervisor may have restarted it just before
    // the mark, so its task is looked at again after.
    supervisor::mark_stopped(c, &ct.id).await?;
    if let Some(t) = tasks::find(c, &ct.id).await? {
        if running(&t) {
            if !force {
                return Err(refuse());
            }
            tasks::kill_and_wait(c, &ct.id, "", SIGKILL, Some(Duration::from_secs(10))).await?;
        }
        gone_ok(tasks::delete(c, &ct.id).await)?;
    }
    gone_ok(containers::delete(c, &ct.id).await)?;
    if !ct.snapshot_key.is_empty() {
        gone_ok(snapshots::remove(c, &ct.snapshotter, &ct.snapshot_key).await)?;
    }
    for file in [log_path(ct), stdin_path(ct)].into_iter().flatten() {
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow::anyhow!("remove {}: {e}", file.display())),
        }
    }
    Ok(())
}

/// Starts the container with its stdio on this terminal (`-i`, `-t`) through FIFOs: the
/// terminal in raw mode and resized with ours when the container has one, our stdin
/// forwarded (and closed at its end) with `-i`. Returns the container's exit status.
pub async fn run_attached(c: &Client, ct: &Container, stdin: bool) -> anyhow::Result<u32> {
    run_attached_to(c, ct, stdin, Output::Inherit).await
}

/// Like [`run_attached`], the output sent to `out`.
pub async fn run_attached_to(
    c: &Client,
    ct: &Container,
    stdin: bool,
    out: Output,
) -> anyhow::Result<u32> {
    let tty = containers::has_terminal(ct);
    let fifos = Fifos::new(short_id(&ct.id), stdin, tty)?;
    let mut attached = Attached::start_to(&fifos, out)?;
    let (i, o, e) = fifos.uris();
    let raw = if tty && stdin {
        stdio::raw_terminal()?
    } else {
        None
    };
    let io = Stdio {
        stdin: i,
        stdout: o,
        stderr: e,
        terminal: tty,
    };
    start_task(c, ct, io, 125).await?;
    let _watcher = tty.then(|| follow_size(c, &ct.id, ""));
    close_stdin_on_eof(c, &ct.id, "", &mut attached);
    let code = wait_exit(c, &ct.id).await?;
    let _ = tokio::time::timeout(Duration::from_secs(2), attached.wait_output()).await;
    drop(raw);
    Ok(code)
}

/// Removes every container that is not running (nor waiting to be restarted); returns
/// their ids and what their writable layers took.
pub async fn prune_stopped(c: &Client) -> anyhow::Result<(Vec<String>, i64)> {
    let usage = crate::client::usage::measure(c).await?;
    let mut deleted = Vec::new();
    let mut reclaimed = 0;
    for ct in containers::list_all(c).await? {
        let live = tasks::find(c, &ct.id).await?.is_some_and(|t| is_live(&t));
        if live || crate::client::docker::restarting(c, &ct).await? {
            continue;
        }
        let size = usage.snapshot_size(&ct.snapshot_key);
        match remove(c, &ct, false).await {
            Ok(()) => {
                reclaimed += size;
                deleted.push(ct.id.clone());
            }
            // Started meanwhile: it stays, as it would with Docker.
            Err(e) => eprintln!("berth: {e:#}"),
        }
    }
    Ok((deleted, reclaimed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_of_failed_starts() {
        assert_eq!(
            start_failure_code(
                "runc create failed: unable to start container process: exec: \"nope\": executable file not found in $PATH"
            ),
            Some(127)
        );
        assert_eq!(
            start_failure_code("exec: \"/etc\": permission denied"),
            Some(126)
        );
        assert_eq!(start_failure_code("cgroup: something"), None);
    }
}
