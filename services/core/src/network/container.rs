//! How a container joins its networks: its labels say which (`berth/network`: `bridge`, a
//! user-defined network's name or id, several by commas, `none`, `container:<id>`; absent or
//! `host`: the host's network, nothing to do), with which address and aliases on the first
//! (`berth/ip`, `berth/network-aliases`) and which ports to publish (`berth/ports`); at task
//! create the daemon attaches it and runs it with a spec whose network namespace is the
//! attachment's and whose `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname` are berth's.
//! The labels are a contract with the `berth` CLI, which sets them (`run --network`, `--ip`,
//! `--network-alias`, `-p`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::subnet::Subnet;
use super::{Member, Networks, PortMapping, files};
use crate::error::{Error, Result};

/// The container label naming its networks: `bridge`, user-defined networks by commas,
/// `none`, `container:<id>` or `host`.
pub const NETWORK_LABEL: &str = "berth/network";
/// The container label listing its published ports: `[ip:]host:container/proto`, by commas.
pub const PORTS_LABEL: &str = "berth/ports";
/// The container label holding its name (set by the CLI; a name on user networks).
pub const NAME_LABEL: &str = "berth/name";
/// The address the container asks for on its first network; on network `N` (connected
/// with `network connect --ip`): the label `berth/ip.N`.
pub const IP_LABEL: &str = "berth/ip";
/// The container's aliases on its first network, by commas; on network `N` (connected with
/// `network connect --alias`): the label `berth/network-aliases.N`.
pub const ALIASES_LABEL: &str = "berth/network-aliases";

/// The container's name servers (`--dns`), by commas.
pub const DNS_LABEL: &str = "berth/dns";
/// The container's DNS search domains (`--dns-search`), by commas.
pub const DNS_SEARCH_LABEL: &str = "berth/dns-search";
/// The container's resolver options (`--dns-option`), by commas.
pub const DNS_OPTIONS_LABEL: &str = "berth/dns-options";
/// Extra `/etc/hosts` lines (`--add-host name:ip`; `host-gateway` is the network's
/// gateway), by commas.
pub const EXTRA_HOSTS_LABEL: &str = "berth/extra-hosts";
/// Links to containers on the default bridge (`--link`): `id:name:alias`, by commas.
pub const LINKS_LABEL: &str = "berth/links";

/// How a container is networked.
enum Mode {
    /// The host's network: nothing to do.
    Host,
    /// A namespace of its own on these networks (none: loopback only).
    Own(Vec<Member>),
    /// The namespace of another container.
    Container(String),
}

/// The container whose network namespace `labels` ask to share (`container:<id>`), if any.
pub fn container_network_of(labels: &BTreeMap<String, String>) -> Option<&str> {
    labels
        .get(NETWORK_LABEL)
        .and_then(|v| v.trim().strip_prefix("container:"))
}

impl PortMapping {
    /// Parses one `[ip:][host:]container[/proto]`; a host port left out or 0 is chosen by
    /// berthd when the container starts.
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
        // The host port: empty or 0 is "any".
        let host_port = |s: &str| -> Result<u16> {
            if s.is_empty() || s == "0" {
                Ok(0)
            } else {
                port(s)
            }
        };
        match parts.as_slice() {
            [container, host, ip] => {
                let ip = ip.trim_matches(|c| c == '[' || c == ']');
                if ip.parse::<std::net::IpAddr>().is_err() {
                    return Err(bad("the host address is not an IP address"));
                }
                Ok(PortMapping {
                    host_port: host_port(host)?,
                    container_port: port(container)?,
                    protocol,
                    host_ip: ip.to_string(),
                })
            }
            [container, host] => Ok(PortMapping {
                host_port: host_port(host)?,
                container_port: port(container)?,
                protocol,
                host_ip: String::new(),
            }),
            [container] => Ok(PortMapping {
                host_port: 0,
                container_port: port(container)?,
                protocol,
                host_ip: String::new(),
            }),
            _ => Err(bad("want [ip:][hostPort:]containerPort[/protocol]")),
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
        let networks = match self.mode(namespace, id, labels).await? {
            Mode::Host => return Ok(None),
            Mode::Own(members) => members,
            Mode::Container(other) => {
                return self.share(namespace, id, &other, spec).await.map(Some);
            }
        };
        let ports = match labels.get(PORTS_LABEL) {
            Some(p) if !networks.is_empty() => PortMapping::parse_list(p)?,
            _ => Vec::new(),
        };
        let mut spec: Value = serde_json::from_slice(spec)
            .map_err(|e| Error::invalid(format!("runtime spec of container {id}: {e}")))?;
        let (rec, adds) = self
            .attach_in_background(namespace, id, &networks, &ports)
            .await?;
        let patched = self
            .files_and_spec(namespace, id, labels, &rec, &mut spec)
            .await;
        match patched.and_then(|settings| {
            serde_json::to_vec(&spec)
                .map(|bytes| (bytes, settings))
                .map_err(|e| Error::Internal(format!("encode spec: {e}")))
        }) {
            Ok((bytes, mut settings)) => {
                // The addresses are known once the ADDs are done: /etc/hosts gets them
                // then, in place (the runtime may have bind-mounted it already).
                let dir = self.files_dir(namespace, id);
                adds.run(move |rec| {
                    settings.addresses = rec.networks.iter().map(|n| n.address.clone()).collect();
                    files::rewrite_hosts(&dir, &settings)
                });
                Ok(Some(bytes))
            }
            Err(e) => {
                if let Err(undo) = self.leave(namespace, id).await {
                    tracing::warn!(%namespace, %id, error = %undo, "take down a network after a failed join");
                }
                Err(e)
            }
        }
    }

    /// How the container's labels ask it to be networked, with its networks looked up.
    async fn mode(
        &self,
        namespace: &str,
        id: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Mode> {
        let value = labels.get(NETWORK_LABEL).map(String::as_str).unwrap_or("");
        let names: Vec<&str> = value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let special = |n: &str| n == "host" || n == "none" || n.starts_with("container:");
        match names.as_slice() {
            [] | ["host"] => return Ok(Mode::Host),
            ["none"] => return Ok(Mode::Own(Vec::new())),
            [one] if one.starts_with("container:") => {
                let other = &one["container:".len()..];
                return Ok(Mode::Container(other.to_string()));
            }
            many if many.iter().any(|n| special(n)) => {
                return Err(Error::invalid(format!(
                    "container {id} cannot be connected to networks {value:?}: host, none and container: exclude any other network"
                )));
            }
            _ => {}
        }
        let ip = match labels
            .get(IP_LABEL)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            Some(text) => Some(text.parse::<Ipv4Addr>().map_err(|_| {
                Error::invalid(format!("invalid IPv4 address {text:?} (of container {id})"))
            })?),
            None => None,
        };
        let aliases = crate::labels::list(labels, ALIASES_LABEL);
        let mut members = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let first = i == 0;
            if *name == "bridge" {
                if first && ip.is_some() {
                    return Err(Error::invalid(
                        "user specified IP address is supported on user defined networks only",
                    ));
                }
                if first && !aliases.is_empty() {
                    return Err(Error::invalid(
                        "network-scoped alias is supported only for containers in user defined networks",
                    ));
                }
                members.push(Member::from(self.default.clone()));
                continue;
            }
            let rec = self.network(namespace, name).await?;
            let network = rec.bridge_network()?;
            let ip = if first {
                ip
            } else {
                // Given at `network connect --ip`: kept in `berth/ip.<network>`.
                match labels.get(&format!("{IP_LABEL}.{}", rec.name)) {
                    Some(text) if !text.is_empty() => {
                        Some(text.parse::<Ipv4Addr>().map_err(|_| {
                            Error::invalid(format!(
                                "invalid IPv4 address {text:?} (of container {id})"
                            ))
                        })?)
                    }
                    _ => None,
                }
            };
            if let Some(ip) = ip {
                check_ip(&rec, ip)?;
            }
            let name = labels.get(NAME_LABEL).map(String::as_str).unwrap_or("");
            let mut extra = crate::labels::list(labels, &format!("{ALIASES_LABEL}.{}", rec.name));
            if first {
                extra.extend(aliases.iter().cloned());
            }
            members.push(Member {
                network,
                ip,
                aliases: names_on_network(id, name, &extra),
            });
        }
        Ok(Mode::Own(members))
    }

    /// Connects running container `id` (named `name`) to network `key` with address `ip`
    /// (empty: any) and `aliases`; see [`Networks::connect`]. None: not running.
    pub async fn connect_to(
        &self,
        namespace: &str,
        id: &str,
        key: &str,
        ip: &str,
        aliases: &[String],
        name: &str,
    ) -> Result<Option<super::NetworkAttachment>> {
        let rec = self.network(namespace, key).await?;
        let member = match rec.name.as_str() {
            "host" | "none" => {
                return Err(Error::precondition(format!(
                    "container {id} cannot be connected to or disconnected from the {} network",
                    rec.name
                )));
            }
            "bridge" => {
                if !ip.is_empty() || !aliases.is_empty() {
                    return Err(Error::invalid(
                        "user specified IP address and aliases are supported on user defined networks only",
                    ));
                }
                Member::from(self.default.clone())
            }
            _ => {
                let ip = match ip {
                    "" => None,
                    text => {
                        let ip = text.parse::<Ipv4Addr>().map_err(|_| {
                            Error::invalid(format!("invalid IPv4 address {text:?}"))
                        })?;
                        check_ip(&rec, ip)?;
                        Some(ip)
                    }
                };
                Member {
                    network: rec.bridge_network()?,
                    ip,
                    aliases: names_on_network(id, name, aliases),
                }
            }
        };
        let attached = self.connect(namespace, id, &member).await;
        attached.map_err(|e| match e {
            Error::FailedPrecondition(_) if e.to_string().contains("already exists") => {
                Error::precondition(format!(
                    "endpoint with name {name} already exists in network {}",
                    rec.name
                ))
            }
            e => e,
        })
    }

    /// Disconnects container `id` from network `key`; false: it was not attached to it.
    pub async fn disconnect_from(&self, namespace: &str, id: &str, key: &str) -> Result<bool> {
        let rec = self.network(namespace, key).await?;
        let cni_name = match rec.name.as_str() {
            "host" | "none" => {
                return Err(Error::precondition(format!(
                    "container {id} cannot be connected to or disconnected from the {} network",
                    rec.name
                )));
            }
            "bridge" => self.default.name.clone(),
            _ => rec.bridge_network()?.name,
        };
        self.disconnect(namespace, id, &cni_name).await
    }

    /// The spec of container `id` sharing the network namespace (and the `/etc` files) of
    /// container `other`, which must have a namespace of its own.
    async fn share(&self, namespace: &str, id: &str, other: &str, spec: &[u8]) -> Result<Vec<u8>> {
        let rec = self.get(namespace, other).await?.ok_or_else(|| {
            Error::precondition(format!(
                "cannot join network of a non running container: {other} (for container {id})"
            ))
        })?;
        let mut spec: Value = serde_json::from_slice(spec)
            .map_err(|e| Error::invalid(format!("runtime spec of container {id}: {e}")))?;
        set_network_namespace(&mut spec, &rec.netns)?;
        let files = files::ManagedFiles {
            dir: self.files_dir(namespace, other),
        };
        add_mounts(&mut spec, id, &files)?;
        serde_json::to_vec(&spec).map_err(|e| Error::Internal(format!("encode spec: {e}")))
    }

    /// Writes the container's `/etc` files and points the spec at them and at the network
    /// namespace. A file the spec already mounts something over (a user's `-v`) is left to
    /// that mount.
    async fn files_and_spec(
        &self,
        namespace: &str,
        id: &str,
        labels: &BTreeMap<String, String>,
        rec: &super::AttachmentRecord,
        spec: &mut Value,
    ) -> Result<files::Settings> {
        let text = |k: &str| {
            spec.get(k)
                .and_then(Value::as_str)
                .filter(|h| !h.is_empty())
                .map(str::to_string)
        };
        let list = |k: &str| crate::labels::list(labels, k);
        let gateway = rec.networks.first().map(|n| n.gateway.clone());
        let mut extra_hosts = Vec::new();
        for entry in list(EXTRA_HOSTS_LABEL) {
            let (name, ip) = entry.split_once(':').ok_or_else(|| {
                Error::invalid(format!(
                    "bad format for add-host: {entry:?} (of container {id})"
                ))
            })?;
            let ip = match (ip, &gateway) {
                ("host-gateway", Some(gw)) if !gw.is_empty() => gw.clone(),
                _ => ip.to_string(),
            };
            extra_hosts.push((ip, name.to_string()));
        }
        for entry in list(LINKS_LABEL) {
            // `id:name:alias` of a container on the default bridge.
            let mut parts = entry.splitn(3, ':');
            let (other, name, alias) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            let address = self
                .get(namespace, other)
                .await?
                .and_then(|r| r.networks.first().map(|n| n.address.clone()))
                .filter(|a| !a.is_empty())
                .ok_or_else(|| {
                    Error::precondition(format!(
                        "cannot link to a non running container: {name} (for container {id})"
                    ))
                })?;
            let short: String = other.chars().take(12).collect();
            extra_hosts.push((address, format!("{alias} {short} {name}")));
        }
        let settings = files::Settings {
            hostname: text("hostname").unwrap_or_else(|| id.chars().take(12).collect()),
            domainname: text("domainname").unwrap_or_default(),
            addresses: rec.networks.iter().map(|n| n.address.clone()).collect(),
            // On a user-defined network, names are asked of berthd's name server there.
            nameserver: rec
                .networks
                .first()
                .filter(|n| n.dns)
                .map(|n| n.gateway.clone()),
            dns: list(DNS_LABEL),
            dns_search: list(DNS_SEARCH_LABEL),
            dns_options: list(DNS_OPTIONS_LABEL),
            extra_hosts,
        };
        let dir = self.files_dir(namespace, id);
        let kept = settings.clone();
        let written = tokio::task::spawn_blocking(move || files::write(&dir, &settings))
            .await
            .map_err(|e| Error::Internal(format!("network files task: {e}")))??;
        set_network_namespace(spec, &rec.netns)?;
        add_mounts(spec, id, &written)?;
        Ok(kept)
    }

    /// Takes container `id`'s network down (if it has one) and removes its `/etc` files.
    pub async fn leave(&self, namespace: &str, id: &str) -> Result<()> {
        // ADDs still running finish first (their failure took the network down already).
        let _ = self.ready(namespace, id).await;
        self.forget_pending(namespace, id);
        self.detach(namespace, id).await?;
        let dir = self.files_dir(namespace, id);
        tokio::task::spawn_blocking(move || files::remove(&dir))
            .await
            .map_err(|e| Error::Internal(format!("network files task: {e}")))?
    }
}

/// An address asked for on user-defined network `rec`: Docker's rules.
fn check_ip(rec: &super::NetworkRecord, ip: Ipv4Addr) -> Result<()> {
    if !rec.subnet_given {
        return Err(Error::invalid(
            "user specified IP address is supported only when connecting to networks with user configured subnets",
        ));
    }
    let range = if rec.ip_range.is_empty() {
        &rec.subnet
    } else {
        &rec.ip_range
    };
    if !Subnet::parse(range).is_ok_and(|s| s.contains(ip)) {
        return Err(Error::invalid(format!(
            "Invalid address {ip}: It does not belong to any of this network's subnets"
        )));
    }
    Ok(())
}

/// The names a container answers to on a user-defined network: its name, its short id,
/// its aliases there.
fn names_on_network(id: &str, name: &str, aliases: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    if !name.is_empty() {
        names.push(name.to_string());
    }
    names.push(id.chars().take(12).collect());
    names.extend(aliases.iter().cloned());
    names
}

/// Mounts berth's `/etc` files into the spec; a file the spec already mounts something over
/// (a user's `-v`) is left to that mount.
fn add_mounts(spec: &mut Value, id: &str, written: &files::ManagedFiles) -> Result<()> {
    let mounts = spec
        .as_object_mut()
        .ok_or_else(|| Error::invalid(format!("runtime spec of container {id} is not an object")))?
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
        let p = PortMapping::parse("80").expect("any host port");
        assert_eq!((p.host_port, p.container_port), (0, 80));
        let p = PortMapping::parse("127.0.0.1::53/udp").expect("any host port on an address");
        assert_eq!((p.host_port, p.host_ip.as_str()), (0, "127.0.0.1"));
        for bad in ["x:80", "0", "8080:80/sctp", "1:2:3:4", "70000:80", "1:0"] {
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
