//! User-defined networks (`berth network create`): their records, one per name in a
//! namespace, and the rules Docker applies to them — names, subnets that overlap no other
//! network, a gateway and an address range inside the subnet, a bridge interface of their
//! own, no removal while a container is attached. The predefined networks (`bridge`,
//! `host`, `none`) have no record: they are answered from the daemon's configuration.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use prost::Message;
use redb::ReadableTable;
use sha2::{Digest, Sha256};

use super::subnet::{self, Subnet};
use super::{BridgeNetwork, Networks};
use crate::error::{Error, Result};
use crate::metadata::{self, DbContext, NETWORK_ATTACHMENTS, NETWORKS};

/// The option naming a network's bridge interface (Docker's).
pub const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";
/// The networks every daemon has without a record.
pub const PREDEFINED: [&str; 3] = ["bridge", "host", "none"];

/// A network as stored (user-defined) or as answered (predefined).
#[derive(Clone, PartialEq, Message)]
pub struct NetworkRecord {
    /// 64 hex digits.
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub name: String,
    /// `bridge`, `host` or `null` (as Docker names the drivers of its three).
    #[prost(string, tag = "3")]
    pub driver: String,
    /// IPv4 CIDR; empty for host and none.
    #[prost(string, tag = "4")]
    pub subnet: String,
    #[prost(string, tag = "5")]
    pub gateway: String,
    /// The part of the subnet addresses are given from (CIDR); empty: all of it.
    #[prost(string, tag = "6")]
    pub ip_range: String,
    #[prost(bool, tag = "7")]
    pub internal: bool,
    #[prost(btree_map = "string, string", tag = "8")]
    pub labels: BTreeMap<String, String>,
    #[prost(btree_map = "string, string", tag = "9")]
    pub options: BTreeMap<String, String>,
    /// The bridge interface on the host.
    #[prost(string, tag = "10")]
    pub bridge: String,
    #[prost(int64, tag = "11")]
    pub created_at: i64,
    /// Whether the subnet was given (only then may a container ask for an address).
    #[prost(bool, tag = "12")]
    pub subnet_given: bool,
}

/// What `network create` asks for.
#[derive(Debug, Clone, Default)]
pub struct NetworkSpec {
    pub name: String,
    /// Empty: bridge.
    pub driver: String,
    pub subnet: String,
    pub gateway: String,
    pub ip_range: String,
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
}

/// A container attached to a network, as `network inspect` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub container_id: String,
    pub ifname: String,
    /// CIDR.
    pub address: String,
    pub mac: String,
    pub aliases: Vec<String>,
    /// The ports published through this network, host ports chosen.
    pub ports: Vec<super::PortMapping>,
}

impl Endpoint {
    /// Container `container_id`'s endpoint as its attachment to one network records it.
    pub fn of(container_id: &str, n: &super::NetworkAttachment) -> Endpoint {
        Endpoint {
            container_id: container_id.to_string(),
            ifname: n.ifname.clone(),
            address: n.address.clone(),
            mac: n.mac.clone(),
            aliases: n.aliases.clone(),
            ports: super::ports::published(&n.runtime_config),
        }
    }
}

/// Docker's rule for network names.
fn validate_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 128;
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid network name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )))
    }
}

/// A fresh 64-hex-digit id.
fn new_id() -> String {
    let seed = format!("{}{}", uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    hex::encode(Sha256::digest(seed.as_bytes()))
}

/// The stable id of a predefined network of a daemon (its bridge name tells daemons apart).
fn predefined_id(name: &str, bridge: &str) -> String {
    hex::encode(Sha256::digest(
        format!("berth-network/{bridge}/{name}").as_bytes(),
    ))
}

impl NetworkRecord {
    /// The bridge network the record describes, as attachments use it.
    pub fn bridge_network(&self) -> Result<BridgeNetwork> {
        let gateway =
            match self.gateway.as_str() {
                "" => None,
                g => Some(g.parse::<Ipv4Addr>().map_err(|_| {
                    Error::invalid(format!("gateway {g:?} of network {}", self.name))
                })?),
            };
        Ok(BridgeNetwork {
            name: format!("berth-{}", &self.id[..self.id.len().min(12)]),
            bridge: self.bridge.clone(),
            subnet: self.subnet.clone(),
            gateway,
            internal: self.internal,
            ip_range: (!self.ip_range.is_empty()).then(|| self.ip_range.clone()),
            dns: true,
        })
    }
}

impl Networks {
    /// The predefined networks' records.
    fn predefined(&self) -> Vec<NetworkRecord> {
        let d = &self.default;
        let bridge_opts: BTreeMap<String, String> = [
            (BRIDGE_NAME_OPTION.to_string(), d.bridge.clone()),
            (
                "com.docker.network.bridge.default_bridge".to_string(),
                "true".to_string(),
            ),
        ]
        .into();
        let record = |name: &str, driver: &str| NetworkRecord {
            id: predefined_id(name, &d.bridge),
            name: name.to_string(),
            driver: driver.to_string(),
            ..Default::default()
        };
        vec![
            NetworkRecord {
                subnet: d.subnet.clone(),
                gateway: d.gateway.map(|g| g.to_string()).unwrap_or_default(),
                bridge: d.bridge.clone(),
                options: bridge_opts,
                ..record("bridge", "bridge")
            },
            record("host", "host"),
            record("none", "null"),
        ]
    }

    async fn records(&self, namespace: &str) -> Result<Vec<NetworkRecord>> {
        let ns = namespace.to_string();
        self.store
            .view(move |txn| {
                let t = txn.open_table(NETWORKS).ctx("open networks")?;
                let mut out = Vec::new();
                for item in t.range((ns.as_str(), "")..).ctx("scan networks")? {
                    let (k, v) = item.ctx("read network")?;
                    let (kns, name) = k.value();
                    if kns != ns {
                        break;
                    }
                    out.push(metadata::decode("network", name, v.value())?);
                }
                Ok(out)
            })
            .await
    }

    /// Every network of `namespace`: the predefined ones first, then the user's by name.
    pub async fn list_networks(&self, namespace: &str) -> Result<Vec<NetworkRecord>> {
        let mut all = self.predefined();
        all.extend(self.records(namespace).await?);
        Ok(all)
    }

    /// The network `key` names: its name, its id, or a prefix of one id only (as Docker).
    pub async fn network(&self, namespace: &str, key: &str) -> Result<NetworkRecord> {
        let all = self.list_networks(namespace).await?;
        if let Some(n) = all.iter().find(|n| n.name == key || n.id == key) {
            return Ok(n.clone());
        }
        let by_prefix: Vec<&NetworkRecord> = if key.is_empty() {
            Vec::new()
        } else {
            all.iter().filter(|n| n.id.starts_with(key)).collect()
        };
        match by_prefix.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::not_found(format!("network {key}"))),
            _ => Err(Error::invalid(format!(
                "network {key} is ambiguous ({} matches found based on ID prefix)",
                by_prefix.len()
            ))),
        }
    }

    /// Creates a user-defined bridge network.
    pub async fn create_network(
        &self,
        namespace: &str,
        spec: NetworkSpec,
    ) -> Result<NetworkRecord> {
        validate_name(&spec.name)?;
        match spec.driver.as_str() {
            "" | "bridge" => {}
            other => {
                return Err(Error::not_found(format!("plugin {other:?}")));
            }
        }
        let all = self.list_networks(namespace).await?;
        if all.iter().any(|n| n.name == spec.name) {
            return Err(Error::already_exists(format!(
                "network with name {}",
                spec.name
            )));
        }
        let everywhere = self.all_user_networks().await?;
        let id = new_id();
        let bridge = match spec.options.get(BRIDGE_NAME_OPTION) {
            Some(b) => {
                if b.is_empty() || b.len() > 15 || b.contains(['/', ' ', ':']) {
                    return Err(Error::invalid(format!(
                        "bridge name {b:?} of network {}: 1 to 15 characters, no '/', ':' or space",
                        spec.name
                    )));
                }
                b.clone()
            }
            None => format!("br-{}", &id[..12]),
        };
        if bridge == self.default.bridge || everywhere.iter().any(|n| n.bridge == bridge) {
            return Err(Error::already_exists(format!(
                "bridge {bridge} (of another network)"
            )));
        }
        let mut used: Vec<Subnet> = everywhere
            .iter()
            .filter_map(|n| Subnet::parse(&n.subnet).ok())
            .collect();
        used.extend(Subnet::parse(&self.default.subnet).ok());
        let subnet = if spec.subnet.is_empty() {
            used.extend(subnet::host_networks(&bridge));
            subnet::choose("", &used).map_err(|_| {
                Error::Unavailable(format!(
                    "network {}: could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network",
                    spec.name
                ))
            })?
        } else {
            let s = Subnet::parse(&spec.subnet)?;
            if used.iter().any(|u| u.overlaps(&s)) {
                return Err(Error::invalid(
                    "Pool overlaps with other one on this address space",
                ));
            }
            s
        };
        let gateway = match spec.gateway.as_str() {
            "" => subnet.first_host(),
            g => {
                let ip: Ipv4Addr = g.parse().map_err(|_| {
                    Error::invalid(format!(
                        "gateway {g:?} of network {}: not an IPv4 address",
                        spec.name
                    ))
                })?;
                if !subnet.contains(ip) {
                    return Err(Error::invalid(format!(
                        "no matching subnet for gateway {g}"
                    )));
                }
                ip
            }
        };
        if !spec.ip_range.is_empty() {
            let range = Subnet::parse(&spec.ip_range)?;
            if !subnet.covers(&range) {
                return Err(Error::invalid(format!(
                    "no matching subnet for range {}",
                    spec.ip_range
                )));
            }
        }
        let rec = NetworkRecord {
            id,
            name: spec.name,
            driver: "bridge".to_string(),
            subnet: subnet.to_string(),
            gateway: gateway.to_string(),
            ip_range: spec.ip_range,
            internal: spec.internal,
            labels: spec.labels,
            options: spec.options,
            bridge,
            created_at: metadata::now_nanos(),
            subnet_given: !spec.subnet.is_empty(),
        };
        let (ns, stored) = (namespace.to_string(), rec.clone());
        self.store
            .update(move |txn| {
                let mut t = txn.open_table(NETWORKS).ctx("open networks")?;
                if t.get((ns.as_str(), stored.name.as_str()))
                    .ctx("read network")?
                    .is_some()
                {
                    return Err(Error::already_exists(format!(
                        "network with name {}",
                        stored.name
                    )));
                }
                t.insert(
                    (ns.as_str(), stored.name.as_str()),
                    stored.encode_to_vec().as_slice(),
                )
                .ctx("write network")?;
                Ok(())
            })
            .await?;
        if let Err(e) = self.isolate(&rec).await {
            let (ns, name) = (namespace.to_string(), rec.name.clone());
            let undone = self
                .store
                .update(move |txn| {
                    let mut t = txn.open_table(NETWORKS).ctx("open networks")?;
                    t.remove((ns.as_str(), name.as_str()))
                        .ctx("delete network")?;
                    Ok(())
                })
                .await;
            if let Err(undo) = undone {
                tracing::warn!(namespace, network = %rec.name, error = %undo, "forget a network whose isolation failed");
            }
            return Err(e);
        }
        tracing::info!(namespace, network = %rec.name, id = %rec.id, subnet = %rec.subnet, "network created");
        Ok(rec)
    }

    /// Puts the standing rules of network `rec` in place: its isolation from the other
    /// berth networks (the default bridge among them), forwarding and masquerading.
    pub(super) async fn isolate(&self, rec: &NetworkRecord) -> Result<()> {
        self.ensure_rules(&self.default).await?;
        self.ensure_rules(&rec.bridge_network()?).await
    }

    /// Every user-defined network of every namespace (bridges and subnets are the host's).
    pub(super) async fn all_user_networks(&self) -> Result<Vec<NetworkRecord>> {
        self.store
            .view(|txn| {
                let t = txn.open_table(NETWORKS).ctx("open networks")?;
                let mut out = Vec::new();
                for item in t.iter().ctx("scan networks")? {
                    let (k, v) = item.ctx("read network")?;
                    out.push(metadata::decode("network", k.value().1, v.value())?);
                }
                Ok(out)
            })
            .await
    }

    /// The containers attached to network `rec` right now.
    pub async fn endpoints(&self, namespace: &str, rec: &NetworkRecord) -> Result<Vec<Endpoint>> {
        let cni_name = if rec.name == "bridge" {
            self.default.name.clone()
        } else {
            rec.bridge_network()?.name
        };
        let ns = namespace.to_string();
        let attachments = self
            .store
            .view(move |txn| {
                let t = txn
                    .open_table(NETWORK_ATTACHMENTS)
                    .ctx("open network_attachments")?;
                let mut out = Vec::new();
                for item in t
                    .range((ns.as_str(), "")..)
                    .ctx("scan network_attachments")?
                {
                    let (k, v) = item.ctx("read attachment")?;
                    let (kns, id) = k.value();
                    if kns != ns {
                        break;
                    }
                    let a: super::AttachmentRecord =
                        metadata::decode("network attachment", id, v.value())?;
                    out.push((id.to_string(), a));
                }
                Ok(out)
            })
            .await?;
        let mut out = Vec::new();
        for (id, a) in attachments {
            for n in a.networks.iter().filter(|n| n.network == cni_name) {
                out.push(Endpoint::of(&id, n));
            }
        }
        Ok(out)
    }

    /// Removes user-defined network `key`: refused for the predefined ones and while a
    /// container is attached; its bridge, address leases and name server go with it.
    pub async fn remove_network(&self, namespace: &str, key: &str) -> Result<NetworkRecord> {
        let rec = self.network(namespace, key).await?;
        if PREDEFINED.contains(&rec.name.as_str()) {
            return Err(Error::precondition(format!(
                "{} is a pre-defined network and cannot be removed",
                rec.name
            )));
        }
        let attached = self.endpoints(namespace, &rec).await?;
        if !attached.is_empty() {
            return Err(Error::precondition(format!(
                "error while removing network: network {} id {} has active endpoints",
                rec.name, rec.id
            )));
        }
        let (ns, name) = (namespace.to_string(), rec.name.clone());
        self.store
            .update(move |txn| {
                let mut t = txn.open_table(NETWORKS).ctx("open networks")?;
                t.remove((ns.as_str(), name.as_str()))
                    .ctx("delete network")?;
                Ok(())
            })
            .await?;
        let net = rec.bridge_network()?;
        self.dns.stop(&net.name);
        let ipam = self.dirs.ipam_dir.join(&net.name);
        self.forget_rules(&net).await?;
        let bridge = net.bridge.clone();
        super::blocking(move || {
            super::netns::delete_link(&bridge)?;
            match std::fs::remove_dir_all(&ipam) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io("remove address leases", ipam, e)),
            }
        })
        .await?;
        tracing::info!(namespace, network = %rec.name, id = %rec.id, "network removed");
        Ok(rec)
    }

    /// Removes every user-defined network of `namespace` no container is attached to and
    /// that `filters` select (Docker's `network prune` filters: `label=k[=v]`,
    /// `label!=k[=v]`, `until=<duration|time>`). Returns the names.
    pub async fn prune_networks(&self, namespace: &str, filters: &[String]) -> Result<Vec<String>> {
        let select = PruneFilter::parse(filters, metadata::now_nanos())?;
        let mut removed = Vec::new();
        for rec in self.records(namespace).await? {
            if !select.matches(&rec) || !self.endpoints(namespace, &rec).await?.is_empty() {
                continue;
            }
            self.remove_network(namespace, &rec.id).await?;
            removed.push(rec.name);
        }
        Ok(removed)
    }
}

/// Docker's prune filters over networks.
#[derive(Debug, Default)]
struct PruneFilter {
    /// `(key, value)`: the label must be there (with the value, when given).
    labels: Vec<(String, Option<String>)>,
    /// The label must not be there (with the value, when given).
    not_labels: Vec<(String, Option<String>)>,
    /// Only networks created before (nanoseconds).
    until: Option<i64>,
}

impl PruneFilter {
    fn parse(filters: &[String], now: i64) -> Result<PruneFilter> {
        let mut f = PruneFilter::default();
        let label = |v: &str| match v.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (v.to_string(), None),
        };
        for text in filters {
            if let Some(v) = text.strip_prefix("label!=") {
                f.not_labels.push(label(v));
            } else if let Some(v) = text.strip_prefix("label=") {
                f.labels.push(label(v));
            } else if let Some(v) = text.strip_prefix("until=") {
                f.until = Some(until(v, now)?);
            } else {
                return Err(Error::invalid(format!(
                    "invalid filter {:?}",
                    text.split('=').next().unwrap_or(text)
                )));
            }
        }
        Ok(f)
    }

    fn matches(&self, rec: &NetworkRecord) -> bool {
        let has = |(k, v): &(String, Option<String>)| match (rec.labels.get(k), v) {
            (Some(_), None) => true,
            (Some(have), Some(want)) => have == want,
            (None, _) => false,
        };
        self.labels.iter().all(has)
            && !self.not_labels.iter().any(has)
            && self.until.is_none_or(|t| rec.created_at < t)
    }
}

/// Docker's `until`: a duration before `now` (`24h`, `10m`), a Unix time or an RFC 3339 time.
fn until(text: &str, now: i64) -> Result<i64> {
    if let Ok(d) = humantime::parse_duration(text) {
        let nanos = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        return Ok(now.saturating_sub(nanos));
    }
    if let Ok(secs) = text.parse::<f64>() {
        return Ok((secs * 1e9) as i64);
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        let since = t
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| Error::invalid(format!("until {text:?}: before 1970")))?;
        return Ok(i64::try_from(since.as_nanos()).unwrap_or(i64::MAX));
    }
    Err(Error::invalid(format!(
        "invalid filter 'until={text}': want a duration (24h) or a time"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_filters_select_by_label_and_age() {
        let now = 100_000_000_000_000;
        let rec = NetworkRecord {
            labels: [("team".to_string(), "a".to_string())].into(),
            created_at: now - 7_200_000_000_000,
            ..Default::default()
        };
        let pick = |f: &[&str]| {
            let f: Vec<String> = f.iter().map(|s| s.to_string()).collect();
            PruneFilter::parse(&f, now).expect("parse").matches(&rec)
        };
        assert!(pick(&[]));
        assert!(pick(&["label=team"]));
        assert!(pick(&["label=team=a"]));
        assert!(!pick(&["label=team=b"]));
        assert!(!pick(&["label!=team"]));
        assert!(pick(&["label!=team=b"]));
        assert!(pick(&["until=1h"]));
        assert!(!pick(&["until=3h"]));
        assert!(PruneFilter::parse(&["dangling=true".to_string()], now).is_err());
    }

    #[test]
    fn names_follow_dockers_rule() {
        for ok in ["a", "my-net", "net_1.x", "0net"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "a b", "a/b", "a:b"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_are_64_hex_digits_and_differ() {
        let (a, b) = (new_id(), new_id());
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
