//! `berth start|stop|kill|restart|rm|wait|pause|unpause|rename|attach|update`.

use std::time::Duration;

use berth_proto::containerd::services::containers::v1 as pb;
use berth_proto::containerd::v1::types::Status;

use crate::client::attach::Ended;
use crate::client::containers::{self, check_name_free, list_all, log_path, name_of, resolve};
use crate::client::docker::{
    last_run, log_stdio, remove, run_attached, start_task, stop, wait_exit,
};
use crate::client::logs::{Follower, Printer, follow_until_exit};
use crate::client::signal::{kills_all, parse_signal};
use crate::client::tasks::{self, is_live};
use crate::client::{Client, status, supervisor};
use crate::exit::{Exit, exit_with};
use crate::labels;

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
        let code = if interactive && containers::stdin_path(&ct).is_some() {
            // Made with -i: its own stdin FIFO, attached as `attach` does (detach keys too).
            let follow = crate::client::attach::Options {
                stdin: true,
                detach_keys: crate::client::attach::parse_detach_keys(
                    crate::client::attach::DEFAULT_DETACH_KEYS,
                )?,
                sig_proxy: true,
            };
            let follower = crate::client::attach::follower(&ct);
            start_task(c, &ct, log_stdio(&ct), 1).await?;
            match crate::client::attach::attach(c, &ct, follower, follow).await? {
                Ended::Exited(code) => code,
                Ended::Detached => return Ok(()),
            }
        } else if interactive {
            run_attached(c, &ct, true).await?
        } else {
            let follower = Follower::at_end(&log_path(&ct).unwrap_or_default());
            start_task(c, &ct, log_stdio(&ct), 1).await?;
            follow_until_exit(c, &ct.id, follower, &mut Printer::new(false)).await?
        };
        return exit_with(code);
    }
    each(c, &names, |ct| async move {
        if tasks::find(c, &ct.id).await?.is_some_and(|t| is_live(&t)) {
            return Ok(());
        }
        start_task(c, &ct, log_stdio(&ct), 1).await.map(drop)
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
        start_task(c, &ct, log_stdio(&ct), 1).await.map(drop)
    })
    .await
}

pub async fn kill_cmd(c: &Client, names: Vec<String>, signal: String) -> anyhow::Result<()> {
    let sig = parse_signal(&signal)?;
    each(c, &names, |ct| async move {
        let live = tasks::find(c, &ct.id).await?.is_some_and(|t| is_live(&t));
        if !live {
            anyhow::bail!(
                "Cannot kill container: {}: Container {} is not running",
                name_of(&ct),
                ct.id
            );
        }
        // A user's kill, like a stop, is not fought by the restart policy.
        supervisor::mark_stopped(c, &ct.id).await?;
        tasks::kill(c, &ct.id, "", sig, kills_all("", sig))
            .await
            .map_err(status)
    })
    .await
}

/// `rm [-f] [-v]`: with `-v`, the anonymous volumes made for each container go too.
/// `container prune`: removes every container that is not running (created or exited, not
/// waiting to be restarted), with what its writable layer took, as Docker's.
pub async fn prune(c: &Client, force: bool) -> anyhow::Result<()> {
    let warning = "WARNING! This will remove all stopped containers.";
    if !force && !crate::output::confirm(warning)? {
        return Ok(());
    }
    let (deleted, reclaimed) = crate::client::docker::prune_stopped(c).await?;
    crate::output::deleted("Containers", &deleted);
    println!(
        "Total reclaimed space: {}",
        crate::output::human_size(u64::try_from(reclaimed).unwrap_or(0))
    );
    Ok(())
}

pub async fn rm(c: &Client, names: Vec<String>, force: bool, volumes: bool) -> anyhow::Result<()> {
    each(c, &names, |ct| async move {
        remove(c, &ct, force).await?;
        if volumes {
            crate::client::volumes::remove_anonymous(c, &ct).await?;
        }
        Ok(())
    })
    .await
}

pub async fn pause(c: &Client, names: Vec<String>, pause: bool) -> anyhow::Result<()> {
    each(c, &names, |ct| async move {
        let t = tasks::find(c, &ct.id).await?;
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
            tasks::pause(c, &id).await.map_err(status)?;
        } else {
            if !paused {
                anyhow::bail!("Container {id} is not paused");
            }
            tasks::resume(c, &id).await.map_err(status)?;
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
            let mut ct = resolve(c, name).await?;
            // A container that ran and exited has its last run's status; one only created
            // is waited for until it ran.
            loop {
                if tasks::find(c, &ct.id).await?.is_some() {
                    break wait_exit(c, &ct.id).await;
                }
                if let Some(last) = last_run(&ct) {
                    break Ok(last.exit_status);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                ct = containers::get(c, &ct.id).await?;
            }
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
    check_name_free(&list, new, &ct.id)?;
    containers::set_label(c, &ct.id, labels::NAME, new).await
}

/// `berth attach`: the container's output from now on, our stdin into it (made with
/// `-i`), until it exits (its exit code) or the detach keys are typed (0: it runs on).
pub async fn attach(
    c: &Client,
    name: &str,
    stdin: bool,
    detach_keys: &str,
    sig_proxy: bool,
) -> anyhow::Result<()> {
    let detach_keys = crate::client::attach::parse_detach_keys(detach_keys)?;
    let ct = resolve(c, name).await?;
    if !tasks::find(c, &ct.id).await?.is_some_and(|t| is_live(&t)) {
        anyhow::bail!("You cannot attach to a stopped container, start it first");
    }
    let opts = crate::client::attach::Options {
        stdin,
        detach_keys,
        sig_proxy,
    };
    let follower = crate::client::attach::follower(&ct);
    match crate::client::attach::attach(c, &ct, follower, opts).await? {
        Ended::Exited(code) => exit_with(code),
        Ended::Detached => {
            eprintln!("read escape sequence");
            Ok(())
        }
    }
}

/// `berth update --restart POLICY CONTAINER...`: berthd's supervisor validates the policy
/// (Docker's words) and applies it from the next exit on.
/// `update`'s resource flags, as given.
#[derive(Debug, Default)]
pub struct Limits {
    pub memory: Option<String>,
    pub cpus: Option<String>,
    pub pids_limit: Option<i64>,
}

impl Limits {
    /// The OCI `LinuxResources` the flags ask for; None when they ask nothing.
    fn resources(&self) -> anyhow::Result<Option<serde_json::Value>> {
        use crate::client::spec::{CPU_PERIOD, parse_cpus, parse_memory};
        let mut r = serde_json::Map::new();
        if let Some(m) = &self.memory {
            let limit = parse_memory(m).map_err(|e| anyhow::anyhow!("{e}"))?;
            r.insert("memory".into(), serde_json::json!({ "limit": limit }));
        }
        if let Some(c) = &self.cpus {
            let cpus = parse_cpus(c).map_err(|e| anyhow::anyhow!("{e}"))?;
            r.insert(
                "cpu".into(),
                serde_json::json!({
                    "quota": (cpus * CPU_PERIOD as f64).round() as i64,
                    "period": CPU_PERIOD,
                }),
            );
        }
        if let Some(p) = self.pids_limit {
            r.insert("pids".into(), serde_json::json!({ "limit": p }));
        }
        Ok((!r.is_empty()).then_some(serde_json::Value::Object(r)))
    }
}

/// `update`: a container's restart policy and resource limits. The limits go into its spec
/// (the next start has them) and, while it runs, to its task at once.
pub async fn update(
    c: &Client,
    names: Vec<String>,
    restart: Option<String>,
    limits: Limits,
) -> anyhow::Result<()> {
    let resources = limits.resources()?;
    if restart.is_none() && resources.is_none() {
        anyhow::bail!("you must provide one or more flags when using this command");
    }
    // The format is the CLI's to check (Docker's words), before any container is touched;
    // the policy itself is checked here with the daemon's rule too, for Docker's message
    // (the daemon refuses it all the same).
    let parsed = restart
        .as_deref()
        .map(|p| p.parse::<berth_oci::restart::RestartPolicy>());
    if let Some(Err(e)) = &parsed
        && e.is_format()
    {
        anyhow::bail!("{e}");
    }
    let (restart, parsed, resources) = (&restart, &parsed, &resources);
    each(c, &names, |ct| async move {
        let failed = |m: &str| {
            anyhow::anyhow!(
                "Error response from daemon: Cannot update container {}: {m}",
                ct.id
            )
        };
        if let Some(r) = resources {
            let mut spec = containers::spec_of(&ct);
            let current = &mut spec["linux"]["resources"];
            if !current.is_object() {
                *current = serde_json::json!({});
            }
            for (k, v) in r.as_object().into_iter().flatten() {
                let slot = &mut current[k.as_str()];
                if !slot.is_object() {
                    *slot = serde_json::json!({});
                }
                for (field, value) in v.as_object().into_iter().flatten() {
                    slot[field.as_str()] = value.clone();
                }
            }
            containers::set_spec(c, &ct, &spec).await?;
            if tasks::find(c, &ct.id).await?.is_some_and(|t| is_live(&t)) {
                tasks::update_resources(c, &ct.id, r)
                    .await
                    .map_err(|e| failed(e.message()))?;
            }
        }
        if let Some(policy) = restart {
            if let Some(Err(e)) = parsed {
                anyhow::bail!("Error response from daemon: {e}");
            }
            supervisor::set_policy(c, &ct.id, policy)
                .await
                .map_err(|e| failed(e.message()))?;
        }
        Ok(())
    })
    .await
}
