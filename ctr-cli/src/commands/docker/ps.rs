//! `berth ps`: the containers of the namespace with Docker's columns and humanized times.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use berth_proto::berth::services::networks::v1::Endpoint as NetEndpoint;
use berth_proto::containerd::services::containers::v1 as pb;
use berth_proto::containerd::v1::types::Process;
use clap::Args as ClapArgs;

use crate::client::containers::{docker_config, list_all, name_of, short_id, spec_of, started_at};
use crate::client::docker::{last_run, restarting};
use crate::client::tasks::{self, state_name};
use crate::client::{Client, networks, status};
use crate::exit::Exit;
use crate::output::{self, Format, human_duration, to_time};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Show every container (default: running ones).
    #[arg(short, long)]
    pub all: bool,
    /// Show the n last created containers (every state).
    #[arg(short = 'n', long)]
    pub last: Option<usize>,
    /// Show the latest created container (every state).
    #[arg(short, long)]
    pub latest: bool,
    /// Show each container's size: its writable layer (and with its image, "virtual").
    #[arg(short, long)]
    pub size: bool,
    /// Filters: status=, name=, id=, label=KEY[=VALUE], ancestor=IMAGE, exited=CODE.
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
    /// Only the ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Don't truncate ids and commands.
    #[arg(long)]
    pub no_trunc: bool,
}

/// `ps --filter`s: the values of one key are alternatives, the keys all apply.
#[derive(Default)]
struct PsFilters(std::collections::BTreeMap<String, Vec<String>>);

impl PsFilters {
    fn parse(args: &[String]) -> anyhow::Result<PsFilters> {
        let mut f = PsFilters::default();
        for a in args {
            let (k, v) = a.split_once('=').ok_or_else(|| {
                Exit::with(
                    125,
                    format!("bad format of filter (expected name=value): {a}"),
                )
            })?;
            if !["status", "name", "id", "label", "ancestor", "exited"].contains(&k) {
                return Err(Exit::with(
                    1,
                    format!("Error response from daemon: Invalid filter '{k}'"),
                ));
            }
            const STATES: [&str; 7] = [
                "created",
                "restarting",
                "running",
                "removing",
                "paused",
                "exited",
                "dead",
            ];
            if k == "status" && !STATES.contains(&v) {
                return Err(Exit::with(
                    1,
                    format!("Error response from daemon: Invalid filter 'status={v}'"),
                ));
            }
            f.0.entry(k.to_string()).or_default().push(v.to_string());
        }
        Ok(f)
    }

    /// A status filter looks at every container (an exit-code one does not), as Docker's.
    fn sees_stopped(&self) -> bool {
        self.0.contains_key("status")
    }

    fn matches(&self, ct: &pb::Container, t: Option<&Process>, state: &str) -> bool {
        self.0.iter().all(|(k, values)| {
            values.iter().any(|v| match k.as_str() {
                "status" => v == state,
                "name" => name_of(ct).contains(v.as_str()),
                "id" => ct.id.starts_with(v.as_str()),
                "label" => match v.split_once('=') {
                    Some((k, v)) => ct.labels.get(k).map(String::as_str) == Some(v),
                    None => ct.labels.contains_key(v),
                },
                "ancestor" => {
                    let image = image_of(ct);
                    let (have, want) = (crate::oci::familiar(&image), crate::oci::familiar(v));
                    have == want || have.strip_suffix(":latest") == Some(want) || image == *v
                }
                "exited" => {
                    state == "exited"
                        && t.is_some_and(|t| v.parse::<u32>().ok() == Some(t.exit_status))
                }
                _ => false,
            })
        })
    }
}

fn since(t: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(t).unwrap_or_default()
}

/// The STATUS column: "Up 3 minutes", "Up 2 hours (Paused)", "Exited (0) 2 seconds ago",
/// "Restarting (1) 2 seconds ago" (an exited container waiting out its restart back-off),
/// "Created".
pub fn status_text(
    t: Option<&Process>,
    started: Option<SystemTime>,
    restarting: bool,
    now: SystemTime,
) -> String {
    let up = || match started {
        Some(s) => format!("Up {}", human_duration(since(s, now))),
        None => "Up".to_string(),
    };
    match state_name(t) {
        "running" => up(),
        "paused" => format!("{} (Paused)", up()),
        "exited" => {
            let word = if restarting { "Restarting" } else { "Exited" };
            let t = t.cloned().unwrap_or_default();
            match to_time(t.exited_at.as_ref()) {
                Some(at) => format!(
                    "{word} ({}) {} ago",
                    t.exit_status,
                    human_duration(since(at, now))
                ),
                None => format!("{word} ({})", t.exit_status),
            }
        }
        _ => "Created".to_string(),
    }
}

/// The command a container runs, as one string.
pub fn command_line(c: &pb::Container) -> String {
    let cfg = docker_config(c);
    let mut parts: Vec<String> = Vec::new();
    if let Some(p) = cfg["Path"].as_str() {
        parts.push(p.to_string());
        parts.extend(
            cfg["Args"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_string)),
        );
    } else {
        parts.extend(
            spec_of(c)["process"]["args"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_string)),
        );
    }
    // Docker quotes the arguments holding a space.
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i > 0 && p.contains(' ') {
                format!("'{p}'")
            } else {
                p.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Docker's `Ellipsis`: at most `max` characters, the last one "…" when cut.
pub fn ellipsis(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The image as the user named it, else the record's.
pub fn image_of(c: &pb::Container) -> String {
    docker_config(c)["Image"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| c.image.clone())
}

/// The task of each container of `list` by its id, or its last run when berthd retired the
/// exited task.
pub async fn tasks_by_container(
    c: &Client,
    list: &[pb::Container],
) -> anyhow::Result<HashMap<String, Process>> {
    let mut tasks: HashMap<String, Process> = tasks::list(c)
        .await
        .map_err(status)?
        .into_iter()
        .filter(|t| t.id.is_empty() || t.id == t.container_id)
        .map(|t| (t.container_id.clone(), t))
        .collect();
    for ct in list {
        if !tasks.contains_key(&ct.id)
            && let Some(last) = last_run(ct)
        {
            tasks.insert(ct.id.clone(), last);
        }
    }
    Ok(tasks)
}

/// The PORTS column: the container's published ports, as Docker writes them.
fn ports_text(endpoints: Option<&Vec<NetEndpoint>>) -> String {
    let mut ports: Vec<_> = endpoints
        .into_iter()
        .flatten()
        .flat_map(|e| e.ports.iter())
        .collect();
    ports.sort_by_key(|p| (p.container_port, p.protocol.clone(), p.host_port));
    ports
        .into_iter()
        .map(crate::client::ports::display)
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn run(c: &Client, args: Args, format: &Format) -> anyhow::Result<()> {
    let mut list = list_all(c).await?;
    let tasks = tasks_by_container(c, &list).await?;
    list.sort_by_key(|ct| {
        std::cmp::Reverse(
            ct.created_at
                .as_ref()
                .map(|t| (t.seconds, t.nanos))
                .unwrap_or_default(),
        )
    });
    let filters = PsFilters::parse(&args.filter)?;
    // `-n N` / `-l`: the N last created, whatever their state (the list is newest first).
    let limit = if args.latest { Some(1) } else { args.last };
    // A status filter looks at every container, as Docker's.
    let all = args.all || limit.is_some() || filters.sees_stopped();
    if let Some(n) = limit {
        list.truncate(n);
    }
    let now = SystemTime::now();
    let endpoints = if args.quiet {
        Default::default()
    } else {
        networks::endpoints_by_container(c, list.iter().flat_map(networks::networks_of)).await
    };
    let usage = if args.size && !args.quiet {
        Some(crate::client::usage::measure(c).await?)
    } else {
        None
    };
    let mut items = Vec::new();
    for ct in &list {
        let t = tasks.get(&ct.id);
        let state = state_name(t);
        // Docker counts a container waiting to be restarted as running.
        let restarting = state == "exited" && restarting(c, ct).await?;
        if !all && state != "running" && state != "paused" && !restarting {
            continue;
        }
        let shown_state = if restarting { "restarting" } else { state };
        if !filters.matches(ct, t, shown_state) {
            continue;
        }
        let id = if args.no_trunc {
            ct.id.clone()
        } else {
            short_id(&ct.id).to_string()
        };
        if args.quiet {
            println!("{id}");
            continue;
        }
        let cmd = command_line(ct);
        let cmd = if args.no_trunc {
            cmd
        } else {
            ellipsis(&cmd, 20)
        };
        let created = to_time(ct.created_at.as_ref());
        let networks = networks::networks_of(ct);
        let labels: Vec<String> = ct.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        items.push(serde_json::json!({
            "ID": id,
            "Image": image_of(ct),
            "Command": format!("{cmd:?}"),
            "CreatedAt": created.map(output::go_time).unwrap_or_default(),
            "RunningFor": created
                .map(|t| format!("{} ago", human_duration(since(t, now))))
                .unwrap_or_default(),
            "Status": status_text(t, started_at(ct), restarting, now),
            "State": shown_state,
            "Ports": ports_text(endpoints.get(&ct.id)),
            "Names": name_of(ct),
            "Labels": labels.join(","),
            "Networks": networks.join(","),
            "Platform": null,
            "Mounts": "",
            "LocalVolumes": "0",
            "Size": usage.as_ref().map(|u| {
                let rw = u.snapshot_size(&ct.snapshot_key);
                let virt: i64 = u.chain(&ct.snapshot_key).iter().map(|k| u.snapshot_size(k)).sum();
                format!("{} (virtual {})", crate::oci::human_size(rw), crate::oci::human_size(virt))
            }).unwrap_or_default(),
        }));
    }
    if !args.quiet {
        let mut columns = vec![
            ("ID", "CONTAINER ID"),
            ("Image", "IMAGE"),
            ("Command", "COMMAND"),
            ("RunningFor", "CREATED"),
            ("Status", "STATUS"),
            ("Ports", "PORTS"),
            ("Names", "NAMES"),
        ];
        if args.size {
            columns.push(("Size", "SIZE"));
        }
        output::docker_list(
            format,
            &columns,
            &[
                ("CreatedAt", "CREATED AT"),
                ("State", "STATE"),
                ("Labels", "LABELS"),
                ("Networks", "NETWORKS"),
                ("Mounts", "MOUNTS"),
                ("LocalVolumes", "LOCAL VOLUMES"),
                ("Size", "SIZE"),
            ],
            &items,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::containerd::v1::types::Status;
    use std::time::UNIX_EPOCH;

    #[test]
    fn durations_read_like_docker() {
        let s = Duration::from_secs;
        assert_eq!(
            human_duration(Duration::from_millis(300)),
            "Less than a second"
        );
        assert_eq!(human_duration(s(1)), "1 second");
        assert_eq!(human_duration(s(42)), "42 seconds");
        assert_eq!(human_duration(s(90)), "About a minute");
        assert_eq!(human_duration(s(3 * 60 + 5)), "3 minutes");
        assert_eq!(human_duration(s(3600)), "About an hour");
        assert_eq!(human_duration(s(5 * 3600)), "5 hours");
        assert_eq!(human_duration(s(3 * 86400)), "3 days");
        assert_eq!(human_duration(s(20 * 86400)), "2 weeks");
        assert_eq!(human_duration(s(90 * 86400)), "3 months");
        assert_eq!(human_duration(s(800 * 86400)), "2 years");
    }

    #[test]
    fn statuses() {
        let now = SystemTime::now();
        let ago = |secs| now - Duration::from_secs(secs);
        let ts = |t: SystemTime| {
            let d = t.duration_since(UNIX_EPOCH).unwrap();
            prost_types::Timestamp {
                seconds: d.as_secs() as i64,
                nanos: d.subsec_nanos() as i32,
            }
        };
        assert_eq!(status_text(None, None, false, now), "Created");
        let mut p = Process {
            status: Status::Running as i32,
            ..Default::default()
        };
        assert_eq!(
            status_text(Some(&p), Some(ago(180)), false, now),
            "Up 3 minutes"
        );
        p.status = Status::Paused as i32;
        assert_eq!(
            status_text(Some(&p), Some(ago(5)), false, now),
            "Up 5 seconds (Paused)"
        );
        p.status = Status::Stopped as i32;
        p.exit_status = 3;
        p.exited_at = Some(ts(ago(2)));
        assert_eq!(
            status_text(Some(&p), Some(ago(9)), false, now),
            "Exited (3) 2 seconds ago"
        );
        assert_eq!(
            status_text(Some(&p), Some(ago(9)), true, now),
            "Restarting (3) 2 seconds ago"
        );
        assert_eq!(
            ellipsis("sh -c 'echo started; exec httpd'", 20),
            "sh -c 'echo started…"
        );
        assert_eq!(ellipsis("sh", 20), "sh");
    }
}
