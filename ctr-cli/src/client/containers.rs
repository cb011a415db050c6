//! Container records: look up (as ctr does, and as Docker does by id, name or prefix),
//! list, label, delete; and the docker-level facts berth keeps on them (see
//! [`crate::labels`]).

use std::path::PathBuf;
use std::time::SystemTime;

use berth_proto::containerd::services::containers::v1 as pb;
use berth_proto::containerd::services::containers::v1::containers_client::ContainersClient;
use tonic::transport::Channel;

use super::{Client, status};
use crate::labels;

pub fn api(c: &Client) -> ContainersClient<Channel> {
    ContainersClient::new(c.channel.clone())
}

/// The container record `id` (ctr's LoadContainer).
pub async fn get(c: &Client, id: &str) -> anyhow::Result<pb::Container> {
    if id.is_empty() {
        anyhow::bail!("container id must be provided");
    }
    Ok(api(c)
        .get(c.req(pb::GetContainerRequest { id: id.to_string() }))
        .await
        .map_err(status)?
        .into_inner()
        .container
        .unwrap_or_default())
}

/// Every container of the namespace.
pub async fn list_all(c: &Client) -> anyhow::Result<Vec<pb::Container>> {
    Ok(api(c)
        .list(c.req(pb::ListContainersRequest::default()))
        .await
        .map_err(status)?
        .into_inner()
        .containers)
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

/// Sets one label of a container record.
pub async fn set_label(c: &Client, id: &str, key: &str, value: &str) -> anyhow::Result<()> {
    relabel(c, id, (key, value), &[]).await
}

/// Sets label `key` of container `id` to `value` and removes the labels `clear`, in one
/// update.
pub async fn relabel(
    c: &Client,
    id: &str,
    (key, value): (&str, &str),
    clear: &[&str],
) -> anyhow::Result<()> {
    let mut paths = vec![format!("labels.{key}")];
    paths.extend(clear.iter().map(|k| format!("labels.{k}")));
    api(c)
        .update(c.req(pb::UpdateContainerRequest {
            container: Some(pb::Container {
                id: id.to_string(),
                labels: [(key.to_string(), value.to_string())].into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths }),
        }))
        .await
        .map_err(status)?;
    Ok(())
}

/// Deletes a container record.
pub async fn delete(c: &Client, id: &str) -> Result<(), tonic::Status> {
    api(c)
        .delete(c.req(pb::DeleteContainerRequest { id: id.to_string() }))
        .await
        .map(drop)
}

/// Refuses a name another container of the namespace has, with Docker's message.
pub fn check_name_free(list: &[pb::Container], name: &str, except: &str) -> anyhow::Result<()> {
    if let Some(other) = list
        .iter()
        .find(|c| c.id != except && c.labels.get(labels::NAME).is_some_and(|n| n == name))
    {
        anyhow::bail!(
            "Conflict. The container name \"/{name}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
            other.id
        );
    }
    Ok(())
}

/// The docker-level config of a container ([`labels::DOCKER_EXT`]), or Null for a
/// container made otherwise (e.g. by `ctr`).
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

/// Replaces container `id`'s OCI spec (its type URL kept).
pub async fn set_spec(
    c: &Client,
    ct: &pb::Container,
    spec: &serde_json::Value,
) -> anyhow::Result<()> {
    let mut any = ct.spec.clone().unwrap_or_default();
    any.value = serde_json::to_vec(spec)?;
    api(c)
        .update(c.req(pb::UpdateContainerRequest {
            container: Some(pb::Container {
                id: ct.id.clone(),
                spec: Some(any),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["spec".into()],
            }),
        }))
        .await
        .map_err(status)?;
    Ok(())
}

/// Whether the container's process has a terminal.
pub fn has_terminal(c: &pb::Container) -> bool {
    spec_of(c)["process"]["terminal"].as_bool() == Some(true)
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

/// The log file of a container (its [`labels::LOG_PATH`]).
pub fn log_path(c: &pb::Container) -> Option<PathBuf> {
    c.labels.get(labels::LOG_PATH).map(PathBuf::from)
}

/// The FIFO the container's stdin is read from (made with `-i`).
pub fn stdin_path(c: &pb::Container) -> Option<PathBuf> {
    c.labels.get(labels::STDIN_PATH).map(PathBuf::from)
}

/// When the container's task was last started (its [`labels::STARTED_AT`]).
pub fn started_at(c: &pb::Container) -> Option<SystemTime> {
    c.labels
        .get(labels::STARTED_AT)
        .and_then(|s| humantime::parse_rfc3339(s).ok())
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

    #[test]
    fn names_are_unique() {
        let list = vec![container("x", Some("web"))];
        let e = check_name_free(&list, "web", "").unwrap_err().to_string();
        assert!(
            e.starts_with(
                "Conflict. The container name \"/web\" is already in use by container \"x\""
            ),
            "{e}"
        );
        assert!(check_name_free(&list, "web", "x").is_ok());
        assert!(check_name_free(&list, "db", "").is_ok());
    }
}
