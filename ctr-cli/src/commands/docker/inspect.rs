//! `berth inspect`: a JSON array shaped like Docker's container inspect output.

use std::time::SystemTime;

use berth_proto::containerd::services::containers::v1 as pb;
use berth_proto::containerd::v1::types::{Process, Status};
use serde_json::{Value, json};

use crate::client::Client;
use crate::client::containers::{docker_config, log_path, name_of, resolve, spec_of, started_at};
use crate::client::tasks::{self, state_name};
use crate::exit::Exit;
use crate::output::{self, to_time};

/// Docker's zero time.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn rfc3339(t: Option<SystemTime>) -> String {
    t.map(|t| humantime::format_rfc3339_nanos(t).to_string())
        .unwrap_or_else(|| ZERO_TIME.to_string())
}

/// The inspect object of one container.
pub fn inspect_json(c: &pb::Container, task: Option<&Process>) -> Value {
    let cfg = docker_config(c);
    let spec = spec_of(c);
    let state = state_name(task);
    let running = state == "running" || state == "paused";
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
    config["Labels"] = json!(c.labels);
    let mut host = if cfg["HostConfig"].is_object() {
        cfg["HostConfig"].clone()
    } else {
        json!({})
    };
    host["LogConfig"] = json!({"Type": "cri-file", "Config": {}});
    json!({
        "Id": c.id,
        "Created": rfc3339(to_time(c.created_at.as_ref())),
        "Path": path,
        "Args": args,
        "State": {
            "Status": state,
            "Running": running,
            "Paused": state == "paused",
            "Restarting": false,
            "OOMKilled": false,
            "Dead": false,
            "Pid": if running { task.map(|t| t.pid).unwrap_or(0) } else { 0 },
            "ExitCode": if exited { task.map(|t| t.exit_status).unwrap_or(0) } else { 0 },
            "Error": "",
            "StartedAt": rfc3339(started_at(c)),
            "FinishedAt": rfc3339(if exited { task.and_then(|t| to_time(t.exited_at.as_ref())) } else { None }),
        },
        "Image": c.image,
        "LogPath": log_path(c).map(|p| p.display().to_string()).unwrap_or_default(),
        "Name": format!("/{}", name_of(c)),
        "RestartCount": 0,
        "Driver": c.snapshotter,
        "Platform": "linux",
        "HostConfig": host,
        "Mounts": if cfg["Mounts"].is_array() { cfg["Mounts"].clone() } else { json!([]) },
        "Config": config,
        "NetworkSettings": {"Networks": {"host": {}}},
    })
}

pub async fn run(c: &Client, names: Vec<String>) -> anyhow::Result<()> {
    let mut out = Vec::new();
    let mut failed = false;
    for name in &names {
        match resolve(c, name).await {
            Ok(ct) => {
                let t = tasks::find(c, &ct.id).await?;
                out.push(inspect_json(&ct, t.as_ref()));
            }
            Err(e) => {
                eprintln!("berth: {e:#}");
                failed = true;
            }
        }
    }
    output::json(&Value::Array(out))?;
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
        let v = inspect_json(&c, Some(&t));
        assert_eq!(v["Name"], "/web");
        assert_eq!(v["State"]["Pid"], 42);
        assert_eq!(v["State"]["Running"], true);
        assert_eq!(v["State"]["FinishedAt"], ZERO_TIME);
        assert_eq!(v["Path"], "httpd");
        assert_eq!(v["Config"]["Hostname"], "h");
        assert_eq!(v["Config"]["Labels"]["berth/name"], "web");
        assert_eq!(v["HostConfig"]["Memory"], 5);
        let v = inspect_json(&c, None);
        assert_eq!(v["State"]["Status"], "created");
        assert_eq!(v["State"]["Pid"], 0);
    }
}
