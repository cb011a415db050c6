//! The docker-style verbs (`run`, `ps`, `logs`, `exec`, ...). How berth keeps a docker-style
//! container in containerd's records (labels, the docker extension) is told in
//! [`crate::labels`].

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
use crate::labels;

pub mod inspect;
pub mod lifecycle;
pub mod logs;
pub mod ps;
pub mod run;
pub mod spec;

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

/// The docker-level config of a container ([`labels::DOCKER_EXT`]), or Null for a container made
/// otherwise (e.g. by `ctr`).
pub fn docker_config(c: &pb::Container) -> serde_json::Value {
    c.extensions
        .get(labels::DOCKER_EXT)
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
        .get(labels::NAME)
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
        .find(|c| c.labels.get(labels::NAME).is_some_and(|n| n == what))
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
            c.labels.insert(labels::NAME.into(), n.into());
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
