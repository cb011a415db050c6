//! `berth start|stop|kill|restart|rm|wait|pause|unpause|rename|attach`.

use std::time::Duration;

use berth_proto::containerd::services::containers::v1 as pb;
use berth_proto::containerd::services::tasks::v1 as tpb;
use berth_proto::containerd::v1::types::Status;

use super::run::{self, TaskIo, is_live, start_task};
use super::{docker_config, list_all, logs, name_of, resolve, task_of, tasks};
use crate::client::{Client, status};
use crate::exit::Exit;
use crate::labels;

/// Linux signal numbers by name (without `SIG`).
const SIGNALS: [(&str, u32); 31] = [
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
    ("SYS", 31),
];

/// `KILL`, `SIGKILL`, `sigkill` or `9` → 9.
pub fn parse_signal(s: &str) -> anyhow::Result<u32> {
    if let Ok(n) = s.parse::<u32>()
        && (1..=64).contains(&n)
    {
        return Ok(n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    SIGNALS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .ok_or_else(|| anyhow::anyhow!("invalid signal: {s}"))
}

pub async fn kill(c: &Client, id: &str, signal: u32) -> Result<(), tonic::Status> {
    tasks(c)
        .kill(c.req(tpb::KillRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
            signal,
            all: signal == 9,
        }))
        .await
        .map(drop)
}

async fn wait_exit(c: &Client, id: &str) -> anyhow::Result<u32> {
    Ok(tasks(c)
        .wait(c.req(tpb::WaitRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        }))
        .await
        .map_err(status)?
        .into_inner()
        .exit_status)
}

async fn resume(c: &Client, id: &str) {
    let _ = tasks(c)
        .resume(c.req(tpb::ResumeTaskRequest {
            container_id: id.to_string(),
        }))
        .await;
}

/// Sends `signal` and waits up to `timeout` for the task to exit; a paused task is thawed
/// so the signal lands. Returns the exit status, or None on timeout.
pub async fn kill_and_wait(
    c: &Client,
    id: &str,
    signal: u32,
    timeout: Duration,
) -> anyhow::Result<Option<u32>> {
    let paused = task_of(c, id)
        .await?
        .is_some_and(|t| t.status == Status::Paused as i32);
    match kill(c, id, signal).await {
        Ok(()) => {}
        // It exited meanwhile.
        Err(e)
            if e.code() == tonic::Code::NotFound || e.code() == tonic::Code::FailedPrecondition => {
        }
        Err(e) => return Err(status(e)),
    }
    if paused {
        resume(c, id).await;
    }
    match tokio::time::timeout(timeout, wait_exit(c, id)).await {
        Ok(r) => r.map(Some),
        Err(_) => Ok(None),
    }
}

/// Stops a container as Docker does: its stop signal (SIGTERM by default), then SIGKILL
/// after `timeout`.
pub async fn stop(c: &Client, ct: &pb::Container, timeout: Duration) -> anyhow::Result<()> {
    let Some(t) = task_of(c, &ct.id).await? else {
        return Ok(());
    };
    if !is_live(&t) {
        return Ok(());
    }
    let signal = docker_config(ct)["Config"]["StopSignal"]
        .as_str()
        .map(parse_signal)
        .transpose()?
        .unwrap_or(15);
    if kill_and_wait(c, &ct.id, signal, timeout).await?.is_none() {
        kill_and_wait(c, &ct.id, 9, Duration::from_secs(30))
            .await?
            .ok_or_else(|| anyhow::anyhow!("container {} did not stop after SIGKILL", ct.id))?;
    }
    Ok(())
}

/// Runs `f` for each container named, printing the name as given on success; an error is
/// printed and the next one is tried; fails at the end when any failed.
async fn each<F, Fut>(c: &Client, names: &[String], f: F) -> anyhow::Result<()>
where
    F: Fn(pb::Container) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut failed = false;
    for name in names {
        let r = match resolve(c, name).await {
            Ok(ct) => f(ct).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("berth: {e:#}");
                failed = true;
            }
        }
    }
    if failed {
        return Err(Exit::with(1, ""));
    }
    Ok(())
}

pub async fn start(
    c: &Client,
    names: Vec<String>,
    attach: bool,
    interactive: bool,
) -> anyhow::Result<()> {
    if attach || interactive {
        let [name] = names.as_slice() else {
            anyhow::bail!("you cannot start and attach multiple containers at once");
        };
        let ct = resolve(c, name).await?;
        let code = if interactive {
            run_attached(c, &ct, true).await?
        } else {
            let follower = logs::Follower::at_end(&logs::log_path(&ct).unwrap_or_default());
            start_task(c, &ct, TaskIo::log(&ct), 1).await?;
            logs::follow_until_exit(c, &ct.id, follower, &mut logs::Printer::new(false)).await?
        };
        return match code {
            0 => Ok(()),
            code => Err(Exit::code(code)),
        };
    }
    each(c, &names, |ct| async move {
        if task_of(c, &ct.id).await?.is_some_and(|t| is_live(&t)) {
            return Ok(());
        }
        start_task(c, &ct, TaskIo::log(&ct), 1).await.map(drop)
    })
    .await
}

pub async fn stop_cmd(c: &Client, names: Vec<String>, time: u64) -> anyhow::Result<()> {
    each(c, &names, |ct| async move {
        stop(c, &ct, Duration::from_secs(time)).await
    })
    .await
}

pub async fn restart(c: &Client, names: Vec<String>, time: u64) -> anyhow::Result<()> {
    each(c, &names, |ct| async move {
        stop(c, &ct, Duration::from_secs(time)).await?;
        start_task(c, &ct, TaskIo::log(&ct), 1).await.map(drop)
    })
    .await
}

pub async fn kill_cmd(c: &Client, names: Vec<String>, signal: String) -> anyhow::Result<()> {
    let sig = parse_signal(&signal)?;
    each(c, &names, |ct| async move {
        let live = task_of(c, &ct.id).await?.is_some_and(|t| is_live(&t));
        if !live {
            anyhow::bail!(
                "Cannot kill container: {}: Container {} is not running",
                name_of(&ct),
                ct.id
            );
        }
        kill(c, &ct.id, sig).await.map_err(status)
    })
    .await
}

pub async fn rm(c: &Client, names: Vec<String>, force: bool) -> anyhow::Result<()> {
    each(
        c,
        &names,
        |ct| async move { run::remove(c, &ct, force).await },
    )
    .await
}

pub async fn pause(c: &Client, names: Vec<String>, pause: bool) -> anyhow::Result<()> {
    each(c, &names, |ct| async move {
        let t = task_of(c, &ct.id).await?;
        let running = t
            .as_ref()
            .is_some_and(|t| t.status == Status::Running as i32);
        let paused = t
            .as_ref()
            .is_some_and(|t| t.status == Status::Paused as i32);
        let id = ct.id.clone();
        if pause {
            if paused {
                anyhow::bail!("Container {id} is already paused");
            }
            if !running {
                anyhow::bail!("Container {id} is not running");
            }
            tasks(c)
                .pause(c.req(tpb::PauseTaskRequest { container_id: id }))
                .await
                .map_err(status)?;
        } else {
            if !paused {
                anyhow::bail!("Container {id} is not paused");
            }
            tasks(c)
                .resume(c.req(tpb::ResumeTaskRequest { container_id: id }))
                .await
                .map_err(status)?;
        }
        Ok(())
    })
    .await
}

/// `berth wait`: prints each container's exit code once it has exited (a container not
/// started yet is waited for until it is).
pub async fn wait(c: &Client, names: Vec<String>) -> anyhow::Result<()> {
    let mut failed = false;
    for name in &names {
        let r = async {
            let ct = resolve(c, name).await?;
            while task_of(c, &ct.id).await?.is_none() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            wait_exit(c, &ct.id).await
        }
        .await;
        match r {
            Ok(code) => println!("{code}"),
            Err(e) => {
                eprintln!("berth: {e:#}");
                failed = true;
            }
        }
    }
    if failed {
        return Err(Exit::with(1, ""));
    }
    Ok(())
}

pub async fn rename(c: &Client, old: &str, new: &str) -> anyhow::Result<()> {
    let ct = resolve(c, old).await?;
    let new = new.trim_start_matches('/');
    if name_of(&ct) == new && ct.labels.contains_key(labels::NAME) {
        anyhow::bail!("Renaming a container with the same name as its current name");
    }
    let list = list_all(c).await?;
    run::check_name_free(&list, new, &ct.id)?;
    run::set_label(c, &ct.id, labels::NAME, new).await
}

/// `berth attach`: shows the container's output from now on until it exits, and ends
/// with its exit code.
pub async fn attach(c: &Client, name: &str) -> anyhow::Result<()> {
    let ct = resolve(c, name).await?;
    if !task_of(c, &ct.id).await?.is_some_and(|t| is_live(&t)) {
        anyhow::bail!("You cannot attach to a stopped container, start it first");
    }
    let follower = logs::Follower::at_end(&logs::log_path(&ct).unwrap_or_default());
    let code = logs::follow_until_exit(c, &ct.id, follower, &mut logs::Printer::new(false)).await?;
    match code {
        0 => Ok(()),
        code => Err(Exit::code(code)),
    }
}

/// Starts the container with its stdio on this terminal (`-i`, `-t`) through FIFOs: the
/// terminal in raw mode and resized with ours when the container has one, our stdin
/// forwarded (and closed at its end) with `-i`. Returns the container's exit status.
pub async fn run_attached(c: &Client, ct: &pb::Container, stdin: bool) -> anyhow::Result<u32> {
    let tty = super::spec_of(ct)["process"]["terminal"].as_bool() == Some(true);
    let fifos = crate::client::stdio::Fifos::new(super::short_id(&ct.id), stdin, tty)?;
    let mut attached = crate::client::stdio::Attached::start(&fifos)?;
    let (i, o, e) = fifos.uris();
    let raw = if tty && stdin {
        crate::client::stdio::raw_terminal()?
    } else {
        None
    };
    let io = TaskIo {
        stdin: i,
        stdout: o,
        stderr: e,
        terminal: tty,
    };
    start_task(c, ct, io, 125).await?;
    let resize = |channel: tonic::transport::Channel, ns: String, id: String, w: u16, h: u16| async move {
        let c = Client {
            channel,
            namespace: ns,
        };
        let _ = tasks(&c)
            .resize_pty(c.req(tpb::ResizePtyRequest {
                container_id: id,
                exec_id: String::new(),
                width: u32::from(w),
                height: u32::from(h),
            }))
            .await;
    };
    let _watcher = if tty {
        if let Some((w, h)) = crate::client::stdio::terminal_size() {
            resize(c.channel.clone(), c.namespace.clone(), ct.id.clone(), w, h).await;
        }
        let (channel, ns, id) = (c.channel.clone(), c.namespace.clone(), ct.id.clone());
        Some(crate::client::stdio::on_resize(move |w, h| {
            tokio::spawn(resize(channel.clone(), ns.clone(), id.clone(), w, h));
        }))
    } else {
        None
    };
    if let Some(eof) = attached.take_stdin_eof() {
        let (channel, ns, id) = (c.channel.clone(), c.namespace.clone(), ct.id.clone());
        tokio::spawn(async move {
            if eof.await.is_ok() {
                let c = Client {
                    channel,
                    namespace: ns,
                };
                let _ = tasks(&c)
                    .close_io(c.req(tpb::CloseIoRequest {
                        container_id: id,
                        exec_id: String::new(),
                        stdin: true,
                    }))
                    .await;
            }
        });
    }
    let code = wait_exit(c, &ct.id).await?;
    let _ = tokio::time::timeout(Duration::from_secs(2), attached.wait_output()).await;
    drop(raw);
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("sigterm").unwrap(), 15);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), 10);
        assert_eq!(parse_signal("2").unwrap(), 2);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("0").is_err());
    }
}
