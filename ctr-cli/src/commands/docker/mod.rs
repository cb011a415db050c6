//! The docker-style verbs (`run`, `ps`, `logs`, `exec`, ...). A container made by
//! `berth run` / `berth create` is an ordinary containerd container (so `ctr` sees it too)
//! whose id is 64 hex digits and whose docker-level facts live in labels:
//!
//! - [`NAME_LABEL`]: its name, unique in the namespace (given with `--name`, or generated);
//! - [`LOG_LABEL`]: the file its output goes to in the CRI log format, written by the shim
//!   (`file://<path>?format=cri` for both stdout and stderr), read by `berth logs`.
//!
//! Everything else lives in the record itself (spec, image, snapshot) or in its task.

pub mod cp;
pub mod exec;
pub mod stats;
pub mod top;

use berth_proto::containerd::services::containers::v1 as pb;
use berth_proto::containerd::services::containers::v1::containers_client::ContainersClient;

use crate::client::{Client, status};

/// The label holding a container's name.
pub const NAME_LABEL: &str = "berth/name";
/// The label holding the path of a container's log file (CRI log format).
pub const LOG_LABEL: &str = "berth/log-path";

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
    let list = ContainersClient::new(c.channel.clone())
        .list(c.req(pb::ListContainersRequest::default()))
        .await
        .map_err(status)?
        .into_inner()
        .containers;
    pick(list, what)
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
