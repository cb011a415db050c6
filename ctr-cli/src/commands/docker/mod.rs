//! The docker-style verbs (`run`, `ps`, `logs`, `exec`, ...). A container made by
//! `berth run` / `berth create` is an ordinary containerd container (so `ctr` sees it too)
//! whose id is 64 hex digits and whose docker-level facts live in labels:
//!
//! - [`NAME_LABEL`]: its name, unique in the namespace (given with `--name`, or generated);
//! - [`LOG_LABEL`]: the file its output goes to in the CRI log format, written by the shim
//!   (`file://<path>?format=cri` for both stdout and stderr), read by `berth logs`.
//!
//! - [`STARTED_LABEL`]: when its task was last started (RFC 3339), for `ps`' "Up 3 minutes"
//!   and inspect's `State.StartedAt` (the task API reports no start time);
//! - [`AUTO_REMOVE_LABEL`] (`run --rm`): berthd itself removes the container (task, record,
//!   log file) when its task exits, so `run -d --rm` needs no client to stay around.
//!
//! The docker-level facts that `inspect` shows and `start`/`stop` need later (the image as
//! the user named it, Path/Args, Config, HostConfig, StopSignal) live in the record's
//! `extensions` map under [`DOCKER_EXT`]: an `Any` whose type URL is [`DOCKER_EXT_TYPE`]
//! and whose value is that JSON object ([`run::DockerConfig`]), written once at create.
//!
//! Everything else lives in the record itself (spec, image, snapshot = the container id
//! in overlayfs) or in its task: a container's task is kept after it exits (so `ps -a`
//! shows "Exited (N) … ago" from the task's exit status and time, also across berthd
//! restarts) and replaced by the next `start`; `rm` deletes task, record, snapshot and log.

pub mod cp;
pub mod exec;
pub mod stats;
pub mod top;

use berth_proto::containerd::services::containers::v1 as pb;
use berth_proto::containerd::services::containers::v1::containers_client::ContainersClient;

use berth_proto::containerd::services::tasks::v1 as tpb;
use berth_proto::containerd::services::tasks::v1::tasks_client::TasksClient;
use berth_proto::containerd::v1::types::Process;

use crate::client::{Client, status};

pub mod inspect;
pub mod lifecycle;
pub mod logs;
pub mod ps;
pub mod run;
pub mod spec;

/// The label holding a container's name.
pub const NAME_LABEL: &str = "berth/name";
/// The label holding the path of a container's log file (CRI log format).
pub const LOG_LABEL: &str = "berth/log-path";

/// The label holding when the container's task was last started (RFC 3339, nanoseconds).
pub const STARTED_LABEL: &str = "berth/started-at";
/// Set to "true" on containers that berthd removes when their task exits.
pub const AUTO_REMOVE_LABEL: &str = "berth/auto-remove";
/// The extension holding the container's docker-level config (see the module docs).
pub const DOCKER_EXT: &str = "berth/docker";
/// The type URL of [`DOCKER_EXT`]'s value (JSON).
pub const DOCKER_EXT_TYPE: &str = "types.berth.dev/docker/v1/Container";

/// An error that ends the CLI with a given exit code (a container's, or Docker's 125 /
/// 126 / 127); `message` (when not empty) is printed first.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl Exit {
    pub fn code(code: u32) -> anyhow::Error {
        anyhow::Error::new(Exit {
            code: u8::try_from(code).unwrap_or(255),
            message: String::new(),
        })
    }

    pub fn with(code: u8, message: impl std::fmt::Display) -> anyhow::Error {
        anyhow::Error::new(Exit {
            code,
            message: message.to_string(),
        })
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.message.is_empty() {
            write!(f, "exit status {}", self.code)
        } else {
            f.write_str(&self.message)
        }
    }
}

impl std::error::Error for Exit {}

pub fn containers(c: &Client) -> ContainersClient<tonic::transport::Channel> {
    ContainersClient::new(c.channel.clone())
}

pub fn tasks(c: &Client) -> TasksClient<tonic::transport::Channel> {
    TasksClient::new(c.channel.clone())
}

/// The container's task (its init process), or None when it has none.
pub async fn task_of(c: &Client, id: &str) -> anyhow::Result<Option<Process>> {
    match tasks(c)
        .get(c.req(tpb::GetRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        }))
        .await
    {
        Ok(r) => Ok(r.into_inner().process),
        Err(e) if e.code() == tonic::Code::NotFound => Ok(None),
        Err(e) => Err(status(e)),
    }
}

/// Every container of the namespace.
pub async fn list_all(c: &Client) -> anyhow::Result<Vec<pb::Container>> {
    Ok(containers(c)
        .list(c.req(pb::ListContainersRequest::default()))
        .await
        .map_err(status)?
        .into_inner()
        .containers)
}

/// The docker-level config of a container ([`DOCKER_EXT`]), or Null for a container made
/// otherwise (e.g. by `ctr`).
pub fn docker_config(c: &pb::Container) -> serde_json::Value {
    c.extensions
        .get(DOCKER_EXT)
        .and_then(|a| serde_json::from_slice(&a.value).ok())
        .unwrap_or_default()
}

/// A container's OCI spec as JSON (Null when it has none or it is not JSON).
pub fn spec_of(c: &pb::Container) -> serde_json::Value {
    c.spec
        .as_ref()
        .and_then(|a| serde_json::from_slice(&a.value).ok())
        .unwrap_or_default()
}

/// A new container id: 64 hex digits, as Docker's.
pub fn new_id() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The 12-digit form of an id that `ps` shows.
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// A container's name (its label), or its short id when it has none.
pub fn name_of(c: &pb::Container) -> String {
    c.labels
        .get(NAME_LABEL)
        .cloned()
        .unwrap_or_else(|| short_id(&c.id).to_string())
}

/// Finds the container that `what` names, as Docker does: the exact id, else the exact
/// name, else the one container whose id starts with `what`.
pub async fn resolve(c: &Client, what: &str) -> anyhow::Result<pb::Container> {
    if what.is_empty() {
        anyhow::bail!("no container name or id given");
    }
    pick(list_all(c).await?, what)
}

fn pick(list: Vec<pb::Container>, what: &str) -> anyhow::Result<pb::Container> {
    if let Some(c) = list.iter().find(|c| c.id == what) {
        return Ok(c.clone());
    }
    if let Some(c) = list
        .iter()
        .find(|c| c.labels.get(NAME_LABEL).is_some_and(|n| n == what))
    {
        return Ok(c.clone());
    }
    let mut by_prefix = list.into_iter().filter(|c| c.id.starts_with(what));
    match (by_prefix.next(), by_prefix.next()) {
        (Some(c), None) => Ok(c),
        (Some(_), Some(_)) => {
            anyhow::bail!("multiple containers found with provided prefix: {what}")
        }
        _ => anyhow::bail!("No such container: {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, name: Option<&str>) -> pb::Container {
        let mut c = pb::Container {
            id: id.to_string(),
            ..Default::default()
        };
        if let Some(n) = name {
            c.labels.insert(NAME_LABEL.into(), n.into());
        }
        c
    }

    #[test]
    fn resolves_id_then_name_then_unique_prefix() {
        let list = vec![
            container("abc123", Some("web")),
            container("abd456", Some("abc123x")),
            container("web", None),
        ];
        assert_eq!(pick(list.clone(), "web").unwrap().id, "web");
        assert_eq!(pick(list.clone(), "abc123x").unwrap().id, "abd456");
        assert_eq!(pick(list.clone(), "abc").unwrap().id, "abc123");
        let e = pick(list.clone(), "ab").unwrap_err().to_string();
        assert!(e.contains("multiple containers"), "{e}");
        let e = pick(list, "zzz").unwrap_err().to_string();
        assert_eq!(e, "No such container: zzz");
        assert_eq!(new_id().len(), 64);
        assert_eq!(short_id(&"a".repeat(64)), "a".repeat(12));
    }
}
