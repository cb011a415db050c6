//! How a container joins its network: its labels say which (`berth/network`: `bridge` or
//! `none`; absent or `host`: the host's network, nothing to do) and which ports to publish
//! (`berth/ports`); at task create the daemon attaches it and runs it with a spec whose
//! network namespace is the attachment's and whose `/etc/hosts`, `/etc/resolv.conf` and
//! `/etc/hostname` are berth's. The labels are a contract with the `berth` CLI, which sets
//! them (`run --network`, `-p`).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Networks, PortMapping, files};
use crate::error::{Error, Result};

/// The container label naming its network mode: `bridge`, `none` or `host`.
pub const NETWORK_LABEL: &str = "berth/network";
/// The container label listing its published ports: `[ip:]host:container/proto`, by commas.
pub const PORTS_LABEL: &str = "berth/ports";

impl PortMapping {
    /// Parses one `[ip:]host:container[/proto]`.
    pub fn parse(text: &str) -> Result<PortMapping> {
        let bad = |why: &str| Error::invalid(format!("published port {text:?}: {why}"));
        let (spec, protocol) = match text.rsplit_once('/') {
            Some((s, p)) => (s, p.to_ascii_lowercase()),
            None => (text, "tcp".to_string()),
        };
        if protocol != "tcp" && protocol != "udp" {
            return Err(bad("the protocol must be tcp or udp"));
        }
        let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
        let port = |s: &str| -> Result<u16> {
            s.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("a port must be a number from 1 to 65535"))
        };
        match parts.as_slice() {
            [container, host, ip] => {
                let ip = ip.trim_matches(|c| c == '[' || c == ']');
                if ip.parse::<std::net::IpAddr>().is_err() {
                    return Err(bad("the host address is not an IP address"));
                }
                Ok(PortMapping {
                    host_port: port(host)?,
                    container_port: port(container)?,
                    protocol,
                    host_ip: ip.to_string(),
                })
            }
            [container, host] => Ok(PortMapping {
                host_port: port(host)?,
                container_port: port(container)?,
                protocol,
                host_ip: String::new(),
            }),
            _ => Err(bad("want [ip:]hostPort:containerPort[/protocol]")),
        }
    }

    /// Parses the [`PORTS_LABEL`] value.
    pub fn parse_list(text: &str) -> Result<Vec<PortMapping>> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(PortMapping::parse)
            .collect()
    }
}

impl std::fmt::Display for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.host_ip.is_empty() {
            write!(f, "{}:", self.host_ip)?;
        }
        write!(
            f,
            "{}:{}/{}",
            self.host_port, self.container_port, self.protocol
        )
    }
}

impl Networks {
    /// Attaches container `id` as its `labels` ask, if they ask for a network of its own,
    /// and returns the runtime spec to run it with (`spec` with the attachment's network
    /// namespace and berth's `/etc` files); None: the container runs on the host's network,
    /// with `spec` as it is.
    pub async fn join(
        &self,
        namespace: &str,
        id: &str,
        labels: &BTreeMap<String, String>,
        spec: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        let networks = match labels.get(NETWORK_LABEL).map(String::as_str) {
            None | Some("" | "host") => return Ok(None),
            Some("bridge") => vec![self.default.clone()],
            Some("none") => Vec::new(),
            Some(other) => {
                return Err(Error::not_found(format!(
                    "network {other} (of container {id})"
                )));
            }
        };
        let ports = match labels.get(PORTS_LABEL) {
            Some(p) if !networks.is_empty() => PortMapping::parse_list(p)?,
            _ => Vec::new(),
        };
        let mut spec: Value = serde_json::from_slice(spec)
            .map_err(|e| Error::invalid(format!("runtime spec of container {id}: {e}")))?;
        let rec = self.attach(namespace, id, &networks, &ports).await?;
        let patched = self.files_and_spec(namespace, id, &rec, &mut spec).await;
        match patched.and_then(|()| {
            serde_json::to_vec(&spec).map_err(|e| Error::Internal(format!("encode spec: {e}")))
        }) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) => {
                if let Err(undo) = self.leave(namespace, id).await {
                    tracing::warn!(%namespace, %id, error = %undo, "take down a network after a failed join");
                }
                Err(e)
            }
        }
    }

    /// Writes the container's `/etc` files and points the spec at them and at the network
    /// namespace. A file the spec already mounts something over (a user's `-v`) is left to
    /// that mount.
    async fn files_and_spec(
        &self,
        namespace: &str,
        id: &str,
        rec: &super::AttachmentRecord,
        spec: &mut Value,
    ) -> Result<()> {
        let hostname = spec
            .get("hostname")
            .and_then(Value::as_str)
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| id.chars().take(12).collect());
        let addresses: Vec<String> = rec.networks.iter().map(|n| n.address.clone()).collect();
        let dir = self.files_dir(namespace, id);
        let written =
            tokio::task::spawn_blocking(move || files::write(&dir, &hostname, &addresses))
                .await
                .map_err(|e| Error::Internal(format!("network files task: {e}")))??;
        set_network_namespace(spec, &rec.netns)?;
        let mounts = spec
            .as_object_mut()
            .ok_or_else(|| {
                Error::invalid(format!("runtime spec of container {id} is not an object"))
            })?
            .entry("mounts")
            .or_insert_with(|| json!([]));
        let list = mounts
            .as_array_mut()
            .ok_or_else(|| Error::invalid(format!("mounts of container {id} are not a list")))?;
        for (dest, source) in written.mounts() {
            if list
                .iter()
                .any(|m| m.get("destination").and_then(Value::as_str) == Some(dest))
            {
                continue;
            }
            list.push(json!({
                "destination": dest,
                "type": "bind",
                "source": source,
                "options": ["rbind", "rprivate"],
            }));
        }
        Ok(())
    }

    /// Takes container `id`'s network down (if it has one) and removes its `/etc` files.
    pub async fn leave(&self, namespace: &str, id: &str) -> Result<()> {
        self.detach(namespace, id).await?;
        let dir = self.files_dir(namespace, id);
        tokio::task::spawn_blocking(move || files::remove(&dir))
            .await
            .map_err(|e| Error::Internal(format!("network files task: {e}")))?
    }
}

/// Sets the path of the spec's network namespace (adding the namespace if it has none).
fn set_network_namespace(spec: &mut Value, path: &str) -> Result<()> {
    let linux = spec
        .as_object_mut()
        .ok_or_else(|| Error::invalid("runtime spec is not an object"))?
        .entry("linux")
        .or_insert_with(|| json!({}));
    let namespaces = linux
        .as_object_mut()
        .ok_or_else(|| Error::invalid("runtime spec's linux is not an object"))?
        .entry("namespaces")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .ok_or_else(|| Error::invalid("runtime spec's namespaces are not a list"))?;
    let entry = json!({ "type": "network", "path": path });
    match namespaces
        .iter_mut()
        .find(|n| n.get("type").and_then(Value::as_str) == Some("network"))
    {
        Some(n) => *n = entry,
        None => namespaces.push(entry),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_ports_parse_as_docker_writes_them() {
        let p = PortMapping::parse("8080:80").expect("parse");
        assert_eq!(
            (
                p.host_port,
                p.container_port,
                p.protocol.as_str(),
                p.host_ip.as_str()
            ),
            (8080, 80, "tcp", "")
        );
        let p = PortMapping::parse("127.0.0.1:5353:53/UDP").expect("parse");
        assert_eq!(p.to_string(), "127.0.0.1:5353:53/udp");
        for bad in ["80", "x:80", "0:80", "8080:80/sctp", "1:2:3:4", "70000:80"] {
            assert!(PortMapping::parse(bad).is_err(), "{bad}");
        }
        let list = PortMapping::parse_list("1:2, 3:4/udp").expect("list");
        assert_eq!(list.len(), 2);
    }

    #[test]
    fn the_network_namespace_is_set_or_added() {
        let mut spec = json!({"linux": {"namespaces": [{"type": "pid"}, {"type": "network"}]}});
        set_network_namespace(&mut spec, "/run/x").expect("set");
        assert_eq!(spec["linux"]["namespaces"][1]["path"], "/run/x");
        let mut spec = json!({});
        set_network_namespace(&mut spec, "/run/y").expect("add");
        assert_eq!(spec["linux"]["namespaces"][0]["type"], "network");
    }
}
