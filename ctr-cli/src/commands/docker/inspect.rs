//! `berth inspect`: a JSON array shaped like Docker's container inspect output.

use std::time::SystemTime;

use berth_proto::containerd::services::containers::v1 as pb;
use berth_proto::containerd::v1::types::{Process, Status};
use serde_json::{Value, json};

use berth_oci::restart::RestartPolicy;

use crate::client::containers::{docker_config, log_path, name_of, resolve, spec_of, started_at};
use crate::client::docker::task_or_last_run;
use crate::client::tasks::state_name;
use crate::client::{Client, networks, supervisor};
use crate::exit::Exit;
use crate::labels;
use crate::output::{self, Format, to_time};

/// Docker's zero time.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn rfc3339(t: Option<SystemTime>) -> String {
    t.map(|t| humantime::format_rfc3339_nanos(t).to_string())
        .unwrap_or_else(|| ZERO_TIME.to_string())
}

/// The restart facts inspect shows: the supervisor's count and whether the container waits
/// out its restart back-off.
#[derive(Debug, Clone, Copy, Default)]
pub struct Restarts {
    pub count: u32,
    pub restarting: bool,
}

/// `HostConfig.RestartPolicy` from the container's policy label (`no` without one).
fn restart_policy(c: &pb::Container) -> Value {
    let policy: RestartPolicy = c
        .labels
        .get(labels::RESTART)
        .and_then(|p| p.parse().ok())
        .unwrap_or_default();
    json!({"Name": policy.name(), "MaximumRetryCount": policy.maximum_retry_count()})
}

/// The inspect object of one container.
pub fn inspect_json(c: &pb::Container, task: Option<&Process>, restarts: Restarts) -> Value {
    let cfg = docker_config(c);
    let spec = spec_of(c);
    let exited_state = state_name(task);
    // Docker: a container waiting to be restarted is "restarting" and counts as running.
    let restarting = restarts.restarting && exited_state == "exited";
    let state = if restarting {
        "restarting"
    } else {
        exited_state
    };
    let running = state == "running" || state == "paused" || restarting;
    let exited = task.is_some_and(|t| t.status == Status::Stopped as i32);
    let (path, args) = if cfg["Path"].is_string() {
        (cfg["Path"].clone(), cfg["Args"].clone())
    } else {
        let a = spec["process"]["args"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (
            a.first().cloned().unwrap_or(Value::Null),
            Value::Array(a.get(1..).map(<[Value]>::to_vec).unwrap_or_default()),
        )
    };
    let mut config = if cfg["Config"].is_object() {
        cfg["Config"].clone()
    } else {
        json!({
            "Hostname": spec["hostname"],
            "Env": spec["process"]["env"],
            "Cmd": args,
            "Entrypoint": Value::Null,
            "WorkingDir": spec["process"]["cwd"],
            "User": "",
            "Image": c.image,
            "Tty": spec["process"]["terminal"],
            "OpenStdin": false,
        })
    };
    // The user's labels: berth's own bookkeeping (`berth/...`) is not shown.
    let user: std::collections::BTreeMap<&String, &String> = c
        .labels
        .iter()
        .filter(|(k, _)| !k.starts_with("berth/"))
        .collect();
    config["Labels"] = json!(user);
    let mut host = if cfg["HostConfig"].is_object() {
        cfg["HostConfig"].clone()
    } else {
        json!({})
    };
    host["LogConfig"] = json!({"Type": "cri-file", "Config": {}});
    // The limits as the spec has them now (`update` changes the spec).
    let res = &spec["linux"]["resources"];
    if let Some(m) = res["memory"]["limit"].as_i64() {
        host["Memory"] = json!(m);
    }
    if let (Some(q), Some(p)) = (res["cpu"]["quota"].as_i64(), res["cpu"]["period"].as_i64())
        && q > 0
        && p > 0
    {
        host["NanoCpus"] = json!(q * 1_000_000_000 / p);
    }
    if let Some(p) = res["pids"]["limit"].as_i64() {
        host["PidsLimit"] = json!(p);
    }
    host["RestartPolicy"] = restart_policy(c);
    json!({
        "Id": c.id,
        "Created": rfc3339(to_time(c.created_at.as_ref())),
        "Path": path,
        "Args": args,
        "State": {
            "Status": state,
            "Running": running,
            "Paused": state == "paused",
            "Restarting": restarting,
            "OOMKilled": c.labels.get(labels::OOM_KILLED).is_some_and(|v| v == "true"),
            "Dead": false,
            "Pid": if running && !restarting { task.map(|t| t.pid).unwrap_or(0) } else { 0 },
            "ExitCode": if exited { task.map(|t| t.exit_status).unwrap_or(0) } else { 0 },
            "Error": "",
            "StartedAt": rfc3339(started_at(c)),
            // A running container shows when its previous run ended, as Docker's.
            "FinishedAt": rfc3339(if exited {
                task.and_then(|t| to_time(t.exited_at.as_ref()))
            } else {
                c.labels.get(labels::FINISHED_AT).and_then(|t| humantime::parse_rfc3339(t).ok())
            }),
        },
        "Image": c.image,
        "LogPath": log_path(c).map(|p| p.display().to_string()).unwrap_or_default(),
        "Name": format!("/{}", name_of(c)),
        "RestartCount": restarts.count,
        "Driver": c.snapshotter,
        "Platform": "linux",
        "HostConfig": host,
        "Mounts": if cfg["Mounts"].is_array() { cfg["Mounts"].clone() } else { json!([]) },
        "Config": config,
        "NetworkSettings": {"Networks": {"host": {}}},
    })
}

/// Docker's `NetworkSettings` of a container: one entry per network it is on, with its
/// address there while it runs (asked of berthd's networks API).
async fn network_settings(c: &Client, ct: &pb::Container) -> Value {
    let mode = ct
        .labels
        .get(crate::labels::NETWORK)
        .map(String::as_str)
        .unwrap_or("host");
    let mut nets = serde_json::Map::new();
    let mut top = json!({
        "Bridge": "", "SandboxID": "", "HairpinMode": false, "Ports": {},
        "Gateway": "", "IPAddress": "", "IPPrefixLen": 0, "MacAddress": "",
    });
    for name in mode.split(',').filter(|n| !n.is_empty()) {
        if name.starts_with("container:") {
            continue;
        }
        let mut entry = json!({
            "IPAMConfig": Value::Null, "Links": Value::Null, "Aliases": Value::Null,
            "NetworkID": "", "EndpointID": "", "Gateway": "", "IPAddress": "",
            "IPPrefixLen": 0, "MacAddress": "", "DriverOpts": Value::Null,
        });
        if let Ok(n) = networks::get(c, name).await {
            entry["NetworkID"] = json!(n.id);
            if let Some(e) = n.endpoints.iter().find(|e| e.container_id == ct.id) {
                let (ip, prefix) = e.address.split_once('/').unwrap_or((&e.address, "0"));
                entry["EndpointID"] = json!(networks::endpoint_id(&ct.id, &n.id));
                entry["Gateway"] = json!(n.gateway);
                entry["IPAddress"] = json!(ip);
                entry["IPPrefixLen"] = json!(prefix.parse::<u32>().unwrap_or(0));
                entry["MacAddress"] = json!(e.mac_address);
                if name != "bridge" {
                    entry["Aliases"] = json!(e.aliases);
                }
                if name == "bridge" {
                    for k in ["Gateway", "IPAddress", "IPPrefixLen", "MacAddress"] {
                        top[k] = entry[k].clone();
                    }
                }
            }
            if let Some(ip) = ct.labels.get(crate::labels::IP).filter(|_| nets.is_empty()) {
                entry["IPAMConfig"] = json!({ "IPv4Address": ip });
            }
        }
        nets.insert(name.to_string(), entry);
    }
    top["Networks"] = Value::Object(nets);
    // Ports: {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}.
    let mut ports = serde_json::Map::new();
    for p in networks::ports_of(c, ct).await {
        let ip = if p.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            &p.host_ip
        };
        let key = format!("{}/{}", p.container_port, p.protocol);
        let entry = ports.entry(key).or_insert_with(|| json!([]));
        if let Some(list) = entry.as_array_mut() {
            list.push(json!({ "HostIp": ip, "HostPort": p.host_port.to_string() }));
        }
    }
    top["Ports"] = Value::Object(ports);
    top
}

pub async fn run(c: &Client, names: Vec<String>, format: &Format) -> anyhow::Result<()> {
    let mut out = Vec::new();
    let mut failed = false;
    for name in &names {
        match resolve(c, name).await {
            Ok(ct) => {
                let t = task_or_last_run(c, &ct).await?;
                let restarts = supervisor::get(c, &ct.id)
                    .await?
                    .map(|s| Restarts {
                        count: s.restart_count,
                        restarting: s.restarting,
                    })
                    .unwrap_or_default();
                let mut v = inspect_json(&ct, t.as_ref(), restarts);
                v["NetworkSettings"] = network_settings(c, &ct).await;
                out.push(v);
            }
            // Not a container: an image of that name, as Docker's inspect looks for both.
            Err(e) => match crate::client::images::image_json(c, name).await {
                Ok(v) => out.push(v),
                Err(_) => {
                    // Neither a container nor an image: Docker's words.
                    if format!("{e:#}").contains("No such container") {
                        eprintln!("Error: No such object: {name}");
                    } else {
                        eprintln!("berth: {e:#}");
                    }
                    failed = true;
                }
            },
        }
    }
    output::inspected(format, out)?;
    if failed {
        return Err(Exit::with(1, ""));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_of_a_running_container() {
        let mut c = pb::Container {
            id: "ab".repeat(32),
            image: "docker.io/library/busybox:latest".into(),
            ..Default::default()
        };
        c.labels.insert(crate::labels::NAME.into(), "web".into());
        c.extensions.insert(
            crate::labels::DOCKER_EXT.into(),
            prost_types::Any {
                type_url: crate::labels::DOCKER_EXT_TYPE.into(),
                value: serde_json::to_vec(&json!({
                    "Path": "httpd", "Args": ["-f"], "Image": "busybox",
                    "Config": {"Cmd": ["httpd", "-f"], "Hostname": "h"},
                    "HostConfig": {"Memory": 5},
                }))
                .unwrap(),
            },
        );
        let t = Process {
            pid: 42,
            status: Status::Running as i32,
            ..Default::default()
        };
        let v = inspect_json(&c, Some(&t), Restarts::default());
        assert_eq!(v["Name"], "/web");
        assert_eq!(v["State"]["Pid"], 42);
        assert_eq!(v["State"]["Running"], true);
        assert_eq!(v["State"]["FinishedAt"], ZERO_TIME);
        assert_eq!(v["Path"], "httpd");
        assert_eq!(v["Config"]["Hostname"], "h");
        // berth's own labels are not the user's.
        assert!(v["Config"]["Labels"].get("berth/name").is_none());
        assert_eq!(v["HostConfig"]["Memory"], 5);
        assert_eq!(v["RestartCount"], 0);
        assert_eq!(v["HostConfig"]["RestartPolicy"]["Name"], "no");
        let v = inspect_json(&c, None, Restarts::default());
        assert_eq!(v["State"]["Status"], "created");
        c.labels
            .insert(crate::labels::RESTART.into(), "on-failure:3".into());
        let stopped = Process {
            status: Status::Stopped as i32,
            exit_status: 1,
            ..Default::default()
        };
        let restarts = Restarts {
            count: 2,
            restarting: true,
        };
        let v = inspect_json(&c, Some(&stopped), restarts);
        assert_eq!(v["RestartCount"], 2);
        assert_eq!(v["State"]["Status"], "restarting");
        assert_eq!(v["State"]["Restarting"], true);
        assert_eq!(v["State"]["ExitCode"], 1);
        assert_eq!(
            v["HostConfig"]["RestartPolicy"],
            json!({"Name": "on-failure", "MaximumRetryCount": 3})
        );
        assert_eq!(v["State"]["Pid"], 0);
    }
}
