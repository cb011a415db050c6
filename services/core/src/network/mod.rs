//! The network domain: a container's (or a pod's) network namespace and its attachments to
//! CNI networks, shared by CRI pods and `berth run`.
//!
//! [`Networks::attach`] records the attachment *before* it makes anything, then makes the
//! namespace, brings up its loopback and ADDs each network (recording each result), so that
//! whatever a crash interrupts is known and [`Networks::detach`] (or [`Networks::sweep`] at
//! start-up) can remove the namespace and DEL it: no netns, veth, iptables rule or IPAM
//! lease is left behind. The plugins are the real ones ([`cni`]); the namespaces outlive
//! processes ([`netns`]). Masquerading, forwarding and isolation are rules of each network,
//! not of each container ([`rules`]).
//!
//! A container joins its networks at task create and leaves them when its task exits or
//! is deleted ([`Networks::join`], [`Networks::leave`], driven by its labels). The ADDs
//! run while the shim starts and the runtime creates the container; its start waits for
//! them ([`Networks::ready`]). User-defined networks
//! are records of their own ([`records`]); on them containers find each other by name
//! through berthd's name server ([`dns`]). Still to come (issue 12): CRI pod sandboxes.

pub mod cni;
mod container;
pub mod dns;
pub mod files;
pub mod netns;
pub mod ports;
mod records;
mod rules;
pub mod subnet;

pub use container::{
    ALIASES_LABEL, IP_LABEL, NAME_LABEL, NETWORK_LABEL, PORTS_LABEL, container_network_of,
};
pub use records::{BRIDGE_NAME_OPTION, Endpoint, NetworkRecord, NetworkSpec, PREDEFINED};

use std::net::Ipv4Addr;
use std::path::PathBuf;

use prost::Message;
use redb::ReadableTable;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::config::NetworkConfig;
use crate::error::{Error, Result};
use crate::metadata::{self, DbContext, NETWORK_ATTACHMENTS, Store};
use cni::{Attachment, Cni, NetworkList};

/// A bridge network: its own bridge interface and subnet, host-local addresses, NAT to the
/// outside (unless internal) and port mappings.
#[derive(Debug, Clone, PartialEq)]
pub struct BridgeNetwork {
    pub name: String,
    /// The bridge interface on the host.
    pub bridge: String,
    /// IPv4 CIDR (`172.30.0.0/16`).
    pub subnet: String,
    /// The bridge's address; the subnet's first address when None.
    pub gateway: Option<Ipv4Addr>,
    /// No route to the outside (no masquerade, no default route).
    pub internal: bool,
    /// The part of the subnet addresses are given from (CIDR); None: all of it.
    pub ip_range: Option<String>,
    /// Whether berthd's name server answers for the network's containers (user-defined
    /// networks; the default bridge has none, as Docker's).
    pub dns: bool,
}

/// A container's membership of one network: the network, the address it asks for, the
/// names it answers to there.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub network: BridgeNetwork,
    pub ip: Option<Ipv4Addr>,
    pub aliases: Vec<String>,
}

impl From<BridgeNetwork> for Member {
    fn from(network: BridgeNetwork) -> Member {
        Member {
            network,
            ip: None,
            aliases: Vec::new(),
        }
    }
}

impl BridgeNetwork {
    /// The CNI configuration list of the network: bridge with host-local addresses, then
    /// portmap (only when the container publishes ports: it costs an exec and iptables
    /// calls at each ADD and DEL). No iptables rule is made per container otherwise: the
    /// network's masquerading and forwarding rules stand while it exists (rules.rs).
    pub fn conflist(&self, ipam_dir: &std::path::Path, publishes: bool) -> NetworkList {
        let mut range = json!({ "subnet": self.subnet });
        if let Some(gw) = self.gateway {
            range["gateway"] = json!(gw.to_string());
        }
        if let Some(r) = self
            .ip_range
            .as_deref()
            .and_then(|r| subnet::Subnet::parse(r).ok())
        {
            range["rangeStart"] = json!(r.first_host().to_string());
            range["rangeEnd"] = json!(r.last_host().to_string());
        }
        let mut ipam = json!({
            "type": "host-local",
            "ranges": [[range]],
            "dataDir": ipam_dir,
        });
        if !self.internal {
            ipam["routes"] = json!([{ "dst": "0.0.0.0/0" }]);
        }
        let mut plugins = vec![json!({
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            // Masquerading and forwarding are the network's standing rules (rules.rs).
            "ipMasq": false,
            "hairpinMode": true,
            "capabilities": { "ips": true },
            "ipam": ipam,
        })];
        if publishes {
            plugins.push(json!({
                "type": "portmap",
                "capabilities": { "portMappings": true },
                "snat": true,
            }));
        }
        NetworkList {
            cni_version: "1.0.0".into(),
            name: self.name.clone(),
            plugins: plugins
                .into_iter()
                .filter_map(|p| match p {
                    Value::Object(m) => Some(m),
                    _ => None,
                })
                .collect(),
        }
    }
}

/// A published port, as CNI's portmap plugin takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The host address to listen on; all when empty.
    pub host_ip: String,
}

/// The record of one container's network namespace and what is attached to it.
#[derive(Clone, PartialEq, Message)]
pub struct AttachmentRecord {
    /// The network namespace's path.
    #[prost(string, tag = "1")]
    pub netns: String,
    #[prost(message, repeated, tag = "2")]
    pub networks: Vec<NetworkAttachment>,
    #[prost(int64, tag = "3")]
    pub created_at: i64,
}

/// One network attached to a container.
#[derive(Clone, PartialEq, Message)]
pub struct NetworkAttachment {
    #[prost(string, tag = "1")]
    pub network: String,
    /// The interface inside the namespace.
    #[prost(string, tag = "2")]
    pub ifname: String,
    /// The network's configuration list as it was used (JSON), for the DEL.
    #[prost(string, tag = "3")]
    pub conflist: String,
    /// The ADD's result (JSON); empty while the ADD has not finished.
    #[prost(string, tag = "4")]
    pub result: String,
    /// The container's address on the network.
    #[prost(string, tag = "5")]
    pub address: String,
    /// The runtime configuration given (published ports, the address asked for), JSON,
    /// for the DEL.
    #[prost(string, tag = "6")]
    pub runtime_config: String,
    /// The names the container answers to on the network (its name, short id, aliases).
    #[prost(string, repeated, tag = "7")]
    pub aliases: Vec<String>,
    /// The interface's MAC address.
    #[prost(string, tag = "8")]
    pub mac: String,
    /// Whether berthd's name server serves the network.
    #[prost(bool, tag = "9")]
    pub dns: bool,
    /// The network's gateway (its name server's address).
    #[prost(string, tag = "10")]
    pub gateway: String,
}

/// Where the network domain keeps its things.
#[derive(Debug, Clone)]
pub struct NetworkDirs {
    /// Where the CNI plugin binaries are.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// Where network namespaces are mounted.
    pub netns_dir: PathBuf,
    /// host-local's address leases.
    pub ipam_dir: PathBuf,
    /// The containers' managed `/etc` files, a directory each.
    pub files_dir: PathBuf,
}

/// The network domain's service. Cheap to clone.
#[derive(Clone)]
pub struct Networks {
    store: Store,
    cni: Cni,
    dirs: NetworkDirs,
    /// The default bridge network (`bridge`).
    default: BridgeNetwork,
    dns: dns::Dns,
    /// Held from the choice of a container's host ports until its record holds them.
    port_claims: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Per bridge, whether this run of berthd has put its standing rules in place (the
    /// cell is held while they are being put in place: other bridges do not wait).
    ruled: std::sync::Arc<
        std::sync::Mutex<
            std::collections::HashMap<String, std::sync::Arc<tokio::sync::OnceCell<()>>>,
        >,
    >,
    /// The attachments whose ADDs run in the background, by (namespace, container).
    pending: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<(String, String), Pending>>>,
}

/// How long a detach waits for the kernel to take a gone namespace's veth pairs away.
const VETH_GONE_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// The host ends of the veth pairs of an attachment, from its ADD results: the interfaces
/// outside the container but its networks' bridges.
fn host_veths(rec: &AttachmentRecord) -> Vec<String> {
    let mut out = Vec::new();
    for n in &rec.networks {
        let Ok(result) = serde_json::from_str::<Value>(&n.result) else {
            continue;
        };
        let bridge = NetworkList::parse(&n.conflist)
            .ok()
            .and_then(|l| {
                l.plugins
                    .first()?
                    .get("bridge")?
                    .as_str()
                    .map(str::to_string)
            })
            .unwrap_or_default();
        for i in result["interfaces"].as_array().into_iter().flatten() {
            let name = i["name"].as_str().unwrap_or_default();
            let inside = i["sandbox"].as_str().is_some_and(|s| !s.is_empty());
            if !name.is_empty() && !inside && name != bridge {
                out.push(name.to_string());
            }
        }
    }
    out
}

/// What [`Networks::ready`] waits on: none while the ADDs run, then their outcome.
type Pending = tokio::sync::watch::Receiver<Option<std::result::Result<(), std::sync::Arc<Error>>>>;

fn pending_key(namespace: &str, id: &str) -> (String, String) {
    (namespace.to_string(), id.to_string())
}

/// An error once more, for a second caller (a CNI failure keeps its words and class).
fn again(e: &Error) -> Error {
    match e {
        Error::Cni {
            plugin,
            command,
            network,
            container,
            message,
        } => Error::Cni {
            plugin: plugin.clone(),
            command,
            network: network.clone(),
            container: container.clone(),
            message: message.clone(),
        },
        Error::NotFound(m) => Error::NotFound(m.clone()),
        Error::InvalidArgument(m) => Error::InvalidArgument(m.clone()),
        Error::FailedPrecondition(m) => Error::FailedPrecondition(m.clone()),
        Error::Unavailable(m) => Error::Unavailable(m.clone()),
        other => Error::Internal(other.to_string()),
    }
}

/// The ADDs of an attachment made by [`Networks::attach_in_background`], to be run.
pub(super) struct Background {
    networks: Networks,
    namespace: String,
    id: String,
    rec: AttachmentRecord,
    done: tokio::sync::watch::Sender<Option<std::result::Result<(), std::sync::Arc<Error>>>>,
}

impl Background {
    /// Runs the ADDs in a task of their own, then `then` with the record.
    pub(super) fn run(self, then: impl FnOnce(&AttachmentRecord) -> Result<()> + Send + 'static) {
        tokio::spawn(async move {
            let Background {
                networks,
                namespace,
                id,
                mut rec,
                done,
            } = self;
            let mut up = networks.bring_up(&namespace, &id, &mut rec).await;
            if up.is_ok() {
                up = blocking(move || then(&rec)).await;
            }
            // A failure takes nothing down here: the runtime may be creating the container
            // in the namespace right now. The attachment goes when the container leaves.
            if let Err(e) = &up {
                tracing::warn!(%namespace, %id, error = %e, "network of a container");
            }
            let _ = done.send(Some(up.map_err(std::sync::Arc::new)));
        });
    }
}

/// The default bridge network as berthd's config describes it: its subnet the configured
/// one, or the first of the default pools that overlaps no network the host routes to.
pub fn default_bridge(config: &NetworkConfig) -> Result<BridgeNetwork> {
    let subnet = subnet::choose(&config.subnet, &subnet::host_networks(&config.bridge))?;
    Ok(BridgeNetwork {
        name: "bridge".to_string(),
        bridge: config.bridge.clone(),
        subnet: subnet.to_string(),
        gateway: Some(subnet.first_host()),
        internal: false,
        ip_range: None,
        dns: false,
    })
}

/// The loopback "network" every namespace gets first.
fn loopback() -> NetworkList {
    let mut lo = Map::new();
    lo.insert("type".into(), Value::String("loopback".into()));
    NetworkList {
        cni_version: "1.0.0".into(),
        name: "berth-loopback".into(),
        plugins: vec![lo],
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("network task: {e}")))?
}

impl Networks {
    pub fn new(store: Store, dirs: NetworkDirs, default: BridgeNetwork) -> Networks {
        Networks {
            store,
            cni: Cni::new(dirs.cni_bin_dirs.clone()),
            dirs,
            default,
            dns: dns::Dns::default(),
            port_claims: Default::default(),
            ruled: Default::default(),
            pending: Default::default(),
        }
    }

    /// Puts the standing iptables rules of `net` in place, once in this run of berthd.
    async fn ensure_rules(&self, net: &BridgeNetwork) -> Result<()> {
        let cell = self
            .ruled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(net.bridge.clone())
            .or_default()
            .clone();
        let (bridge, subnet, internal) = (net.bridge.clone(), net.subnet.clone(), net.internal);
        cell.get_or_try_init(|| blocking(move || rules::add(&bridge, &subnet, internal)))
            .await
            .map(drop)
    }

    /// Takes the standing iptables rules of `net` away (the network is being removed).
    async fn forget_rules(&self, net: &BridgeNetwork) -> Result<()> {
        self.ruled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&net.bridge);
        let (bridge, subnet, internal) = (net.bridge.clone(), net.subnet.clone(), net.internal);
        blocking(move || rules::remove(&bridge, &subnet, internal)).await
    }

    /// The default bridge network.
    pub fn default_network(&self) -> &BridgeNetwork {
        &self.default
    }

    /// The directory of container `id`'s managed `/etc` files.
    fn files_dir(&self, namespace: &str, id: &str) -> PathBuf {
        self.dirs.files_dir.join(Self::netns_name(namespace, id))
    }

    /// The name of the network namespace of container `id` in `namespace`: fixed length,
    /// whatever the lengths of the two.
    fn netns_name(namespace: &str, id: &str) -> String {
        let h = Sha256::digest(format!("{namespace}/{id}").as_bytes());
        format!("berth-{}", hex::encode(&h[..8]))
    }

    /// The attachment of container `id`, if it has one.
    pub async fn get(&self, namespace: &str, id: &str) -> Result<Option<AttachmentRecord>> {
        let (ns, id) = (namespace.to_string(), id.to_string());
        self.store
            .view(move |txn| {
                let t = txn
                    .open_table(NETWORK_ATTACHMENTS)
                    .ctx("open network_attachments")?;
                match t.get((ns.as_str(), id.as_str())).ctx("read attachment")? {
                    Some(v) => metadata::decode("network attachment", &id, v.value()).map(Some),
                    None => Ok(None),
                }
            })
            .await
    }

    async fn put(
        &self,
        namespace: &str,
        id: &str,
        rec: AttachmentRecord,
        create: bool,
    ) -> Result<()> {
        let (ns, id) = (namespace.to_string(), id.to_string());
        self.store
            .update(move |txn| {
                let mut t = txn
                    .open_table(NETWORK_ATTACHMENTS)
                    .ctx("open network_attachments")?;
                if create
                    && t.get((ns.as_str(), id.as_str()))
                        .ctx("read attachment")?
                        .is_some()
                {
                    return Err(Error::already_exists(format!(
                        "network attachment of container {id:?} in namespace {ns:?}"
                    )));
                }
                t.insert((ns.as_str(), id.as_str()), rec.encode_to_vec().as_slice())
                    .ctx("write attachment")?;
                Ok(())
            })
            .await
    }

    async fn forget(&self, namespace: &str, id: &str) -> Result<()> {
        let (ns, id) = (namespace.to_string(), id.to_string());
        self.store
            .update(move |txn| {
                let mut t = txn
                    .open_table(NETWORK_ATTACHMENTS)
                    .ctx("open network_attachments")?;
                t.remove((ns.as_str(), id.as_str()))
                    .ctx("delete attachment")?;
                Ok(())
            })
            .await
    }

    /// Gives container `id` a network namespace attached to `networks` (interfaces `eth0`,
    /// `eth1`... in that order; none: only loopback), with `ports` published on the first.
    /// On failure, what was made is taken down again. Returns the record.
    pub async fn attach(
        &self,
        namespace: &str,
        id: &str,
        networks: &[Member],
        ports: &[PortMapping],
    ) -> Result<AttachmentRecord> {
        let mut rec = self.prepare(namespace, id, networks, ports).await?;
        let up = self.bring_up(namespace, id, &mut rec).await;
        self.undo_on_error(namespace, id, up).await.map(|()| rec)
    }

    /// The first half of [`Self::attach`]: the record (host ports claimed) and the empty
    /// namespace; the ADDs are [`Self::bring_up`]'s.
    async fn prepare(
        &self,
        namespace: &str,
        id: &str,
        networks: &[Member],
        ports: &[PortMapping],
    ) -> Result<AttachmentRecord> {
        let netns = self.dirs.netns_dir.join(Self::netns_name(namespace, id));
        for member in networks {
            self.ensure_rules(&member.network).await?;
        }
        // Only a container that publishes ports waits for the others' port claims.
        let publishes = !ports.is_empty() && !networks.is_empty();
        let claims = if publishes {
            Some(self.port_claims.lock().await)
        } else {
            None
        };
        let ports = if !publishes {
            Vec::new()
        } else {
            let taken = self.ports_in_use((namespace, id)).await?;
            let (wanted, cid) = (ports.to_vec(), id.to_string());
            blocking(move || ports::claim(&cid, &wanted, &taken)).await?
        };
        let mut rec = AttachmentRecord {
            netns: netns.display().to_string(),
            networks: Vec::new(),
            created_at: metadata::now_nanos(),
        };
        for (i, member) in networks.iter().enumerate() {
            let ports = if i == 0 { &ports[..] } else { &[] };
            rec.networks
                .push(self.new_attachment(member, &format!("eth{i}"), ports)?);
        }
        // Known before anything exists: a crash from here on leaves a record to clean up.
        self.put(namespace, id, rec.clone(), true).await?;
        drop(claims);
        let dir = self.dirs.netns_dir.clone();
        let name = Self::netns_name(namespace, id);
        let made = blocking(move || netns::create(&dir, &name)).await;
        self.undo_on_error(namespace, id, made.map(drop))
            .await
            .map(|()| rec)
    }

    /// `result`, with container `id`'s attachment taken down when it is an error.
    async fn undo_on_error(&self, namespace: &str, id: &str, result: Result<()>) -> Result<()> {
        if result.is_err()
            && let Err(undo) = self.detach(namespace, id).await
        {
            tracing::warn!(%namespace, %id, error = %undo, "take down a failed network attachment");
        }
        result
    }

    /// [`Self::attach`] with the ADDs left to run in the background, while the container's
    /// shim starts and its runtime creates it (`runc create` only needs the namespace to
    /// exist): the network costs a run nearly nothing. Once they succeed, `then` runs (on the
    /// blocking pool) with the record, holding the addresses; [`Self::ready`] waits for all
    /// of it, and the container's start waits there. On a failure `ready` answers the error
    /// until the container leaves ([`Self::leave`] takes the attachment down).
    pub(super) async fn attach_in_background(
        &self,
        namespace: &str,
        id: &str,
        networks: &[Member],
        ports: &[PortMapping],
    ) -> Result<(AttachmentRecord, Background)> {
        let rec = self.prepare(namespace, id, networks, ports).await?;
        let (done, rx) = tokio::sync::watch::channel(None);
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pending_key(namespace, id), rx);
        let started = Background {
            networks: self.clone(),
            namespace: namespace.to_string(),
            id: id.to_string(),
            rec: rec.clone(),
            done,
        };
        Ok((rec, started))
    }

    /// Waits until container `id`'s network is up, if it is coming up in the background
    /// ([`Self::attach_in_background`]); its error if it could not be brought up.
    pub async fn ready(&self, namespace: &str, id: &str) -> Result<()> {
        let key = pending_key(namespace, id);
        let rx = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        let Some(mut rx) = rx else {
            return Ok(());
        };
        let began = std::time::Instant::now();
        let outcome = rx.wait_for(Option::is_some).await.map(|v| v.clone());
        tracing::debug!(
            %namespace,
            %id,
            ms = began.elapsed().as_secs_f64() * 1000.0,
            "waited for the network"
        );
        match outcome {
            Ok(Some(Ok(()))) => {
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
                Ok(())
            }
            Ok(Some(Err(e))) => Err(again(&e)),
            // The work was dropped unfinished (berthd is shutting down).
            Ok(None) | Err(_) => Err(Error::Unavailable(format!(
                "the network of container {id} in namespace {namespace} was not brought up"
            ))),
        }
    }

    /// Forgets a failed background attachment of container `id` (it is leaving).
    fn forget_pending(&self, namespace: &str, id: &str) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pending_key(namespace, id));
    }

    /// The ADDs of the record's loopback and networks, in its namespace (made already).
    async fn bring_up(&self, namespace: &str, id: &str, rec: &mut AttachmentRecord) -> Result<()> {
        let base = Attachment {
            container_id: id.to_string(),
            netns: PathBuf::from(&rec.netns),
            ifname: "lo".into(),
            ..Default::default()
        };
        // Loopback and the interfaces are apart: their ADDs run side by side.
        let lo_list = loopback();
        let lo = self.cni.add(&lo_list, &base);
        let interfaces = async {
            for i in 0..rec.networks.len() {
                self.add_network(namespace, id, rec, i).await?;
            }
            Ok::<_, Error>(())
        };
        let (lo, interfaces) = tokio::join!(lo, interfaces);
        lo?;
        interfaces
    }

    /// The ADD of network `i` of the record, its result recorded.
    async fn add_network(
        &self,
        namespace: &str,
        id: &str,
        rec: &mut AttachmentRecord,
        i: usize,
    ) -> Result<()> {
        let n = &rec.networks[i];
        let list = NetworkList::parse(&n.conflist)?;
        let a = Attachment {
            container_id: id.to_string(),
            netns: PathBuf::from(&rec.netns),
            ifname: n.ifname.clone(),
            runtime_config: runtime_config(&n.runtime_config),
            ..Default::default()
        };
        let added = self.cni.add(&list, &a).await?;
        let n = &mut rec.networks[i];
        n.address = added.address_of(&n.ifname).unwrap_or_default();
        n.mac = added
            .interfaces
            .iter()
            .find(|i| i.name == n.ifname && !i.sandbox.is_empty())
            .map(|i| i.mac.clone())
            .unwrap_or_default();
        n.result = added.raw.to_string();
        self.put(namespace, id, rec.clone(), false).await?;
        self.serve_names(&rec.networks[i]).await;
        Ok(())
    }

    /// The DEL of one network of a container's namespace.
    async fn del_network(&self, id: &str, netns: &str, n: &NetworkAttachment) -> Result<()> {
        let list = NetworkList::parse(&n.conflist)?;
        let a = Attachment {
            container_id: id.to_string(),
            netns: PathBuf::from(netns),
            ifname: n.ifname.clone(),
            runtime_config: runtime_config(&n.runtime_config),
            ..Default::default()
        };
        let added: Option<Value> = serde_json::from_str(&n.result).ok();
        self.cni.del(&list, &a, added.as_ref()).await
    }

    /// Connects the running container `id` (its namespace made at its start) to one more
    /// network, as the next interface. None: the container has no namespace of its own now
    /// (not running, or on the host's network); nothing to do until it starts.
    pub async fn connect(
        &self,
        namespace: &str,
        id: &str,
        member: &Member,
    ) -> Result<Option<NetworkAttachment>> {
        self.ready(namespace, id).await?;
        let Some(mut rec) = self.get(namespace, id).await? else {
            return Ok(None);
        };
        if rec
            .networks
            .iter()
            .any(|n| n.network == member.network.name)
        {
            return Err(Error::precondition(format!(
                "endpoint of container {id} already exists in network {}",
                member.network.name
            )));
        }
        let next = (0..)
            .map(|i| format!("eth{i}"))
            .find(|name| !rec.networks.iter().any(|n| &n.ifname == name))
            .unwrap_or_default();
        self.ensure_rules(&member.network).await?;
        rec.networks.push(self.new_attachment(member, &next, &[])?);
        let i = rec.networks.len() - 1;
        // Known before the ADD, as at attach.
        self.put(namespace, id, rec.clone(), false).await?;
        if let Err(e) = self.add_network(namespace, id, &mut rec, i).await {
            let n = rec.networks.remove(i);
            if let Err(undo) = self.del_network(id, &rec.netns, &n).await {
                tracing::warn!(%namespace, %id, error = %undo, "take down a failed connect");
            }
            self.put(namespace, id, rec, false).await?;
            return Err(e);
        }
        Ok(rec.networks.get(i).cloned())
    }

    /// Disconnects container `id` from the network whose CNI name is `network`, if it is
    /// attached to it now. Returns whether it was.
    pub async fn disconnect(&self, namespace: &str, id: &str, network: &str) -> Result<bool> {
        // A failed start took its network down already; the record says what is left.
        let _ = self.ready(namespace, id).await;
        let Some(mut rec) = self.get(namespace, id).await? else {
            return Ok(false);
        };
        let Some(i) = rec.networks.iter().position(|n| n.network == network) else {
            return Ok(false);
        };
        self.del_network(id, &rec.netns, &rec.networks[i]).await?;
        rec.networks.remove(i);
        self.put(namespace, id, rec, false).await?;
        Ok(true)
    }

    /// The attachment record of `member` as interface `ifname`, before its ADD.
    fn new_attachment(
        &self,
        member: &Member,
        ifname: &str,
        ports: &[PortMapping],
    ) -> Result<NetworkAttachment> {
        let net = &member.network;
        let conflist = net.conflist(&self.dirs.ipam_dir, !ports.is_empty());
        let mut runtime = Map::new();
        if !ports.is_empty() {
            runtime.insert("portMappings".into(), Value::Array(port_mappings(ports)));
        }
        if let Some(ip) = member.ip {
            runtime.insert("ips".into(), json!([ip.to_string()]));
        }
        Ok(NetworkAttachment {
            network: net.name.clone(),
            ifname: ifname.to_string(),
            conflist: serde_json::to_string(&conflist)
                .map_err(|e| Error::Internal(format!("encode conflist: {e}")))?,
            runtime_config: if runtime.is_empty() {
                String::new()
            } else {
                Value::Object(runtime).to_string()
            },
            aliases: member.aliases.clone(),
            dns: net.dns,
            gateway: net
                .gateway
                .or_else(|| {
                    subnet::Subnet::parse(&net.subnet)
                        .ok()
                        .map(|s| s.first_host())
                })
                .map(|g| g.to_string())
                .unwrap_or_default(),
            ..Default::default()
        })
    }

    /// Starts the name server of the network of `n` if berthd serves names there.
    async fn serve_names(&self, n: &NetworkAttachment) {
        if !n.dns {
            return;
        }
        let Ok(gateway) = n.gateway.parse::<Ipv4Addr>() else {
            return;
        };
        if let Err(e) = self
            .dns
            .ensure(&self.store, &n.network, &n.network, gateway)
            .await
        {
            tracing::warn!(network = %n.network, error = %e, "name server");
        }
    }

    /// Starts the name servers of the user-defined networks whose bridges are up (at
    /// start-up: their containers kept running while berthd was away), and, in the
    /// background, restores the standing rules of every user-defined network (a reboot
    /// flushed them); the default bridge's come with its first container.
    pub async fn serve_all_names(&self) -> Result<()> {
        let all = self.all_user_networks().await?;
        let me = self.clone();
        let restore = all.clone();
        tokio::spawn(async move {
            for rec in restore {
                if let Err(e) = me.isolate(&rec).await {
                    tracing::warn!(network = %rec.name, error = %e, "network rules");
                }
            }
        });
        for rec in all {
            let net = rec.bridge_network()?;
            if !std::path::Path::new("/sys/class/net")
                .join(&net.bridge)
                .exists()
            {
                continue;
            }
            if let Some(gw) = net.gateway
                && let Err(e) = self.dns.ensure(&self.store, &net.name, &net.name, gw).await
            {
                tracing::debug!(network = %rec.name, error = %e, "name server not started");
            }
        }
        Ok(())
    }

    /// Takes container `id`'s networks down: the namespace, then the DEL of each network
    /// (in reverse order), then the record. When a DEL fails the record stays, so that a later detach
    /// or sweep tries again. No attachment is no error.
    pub async fn detach(&self, namespace: &str, id: &str) -> Result<()> {
        let Some(rec) = self.get(namespace, id).await? else {
            return Ok(());
        };
        // The namespace goes first: the kernel takes its interfaces (the veth pairs) away
        // with it once no process holds it, off this path; the DELs then release what lives
        // outside it (addresses, port mappings), as CNI has plugins do for a namespace that
        // is gone. (A DEL inside the namespace would delete each veth in line: three times
        // slower.)
        let netns = PathBuf::from(&rec.netns);
        blocking(move || netns::remove(&netns)).await?;
        let mut first: Option<Error> = None;
        for n in rec.networks.iter().rev() {
            if let Err(e) = self.del_network(id, &rec.netns, n).await {
                first.get_or_insert(e);
            }
        }
        if let Some(e) = first {
            return Err(e);
        }
        // Gone when this returns, as when a DEL deletes them itself.
        let veths = host_veths(&rec);
        let left = blocking(move || Ok(netns::wait_links_gone(&veths, VETH_GONE_WITHIN))).await?;
        if !left.is_empty() {
            tracing::warn!(%namespace, %id, ?left, "interfaces still there after the namespace went");
        }
        self.forget(namespace, id).await
    }

    /// Detaches every attachment whose container `keep` does not name (after a crash: the
    /// containers whose tasks are gone). Returns how many were taken down.
    pub async fn sweep(&self, keep: impl Fn(&str, &str) -> bool) -> Result<usize> {
        let all: Vec<(String, String)> = self
            .store
            .view(|txn| {
                let t = txn
                    .open_table(NETWORK_ATTACHMENTS)
                    .ctx("open network_attachments")?;
                let mut out = Vec::new();
                for item in t.iter().ctx("scan network_attachments")? {
                    let (k, _) = item.ctx("read attachment")?;
                    let (ns, id) = k.value();
                    out.push((ns.to_string(), id.to_string()));
                }
                Ok(out)
            })
            .await?;
        let mut n = 0;
        for (ns, id) in all.into_iter().filter(|(ns, id)| !keep(ns, id)) {
            match self.leave(&ns, &id).await {
                Ok(()) => n += 1,
                Err(e) => tracing::warn!(namespace = %ns, %id, error = %e, "network sweep"),
            }
        }
        Ok(n)
    }
}

fn port_mappings(ports: &[PortMapping]) -> Vec<Value> {
    ports
        .iter()
        .map(|p| {
            let mut m = json!({
                "hostPort": p.host_port,
                "containerPort": p.container_port,
                "protocol": p.protocol,
            });
            if !p.host_ip.is_empty() {
                m["hostIP"] = json!(p.host_ip);
            }
            m
        })
        .collect()
}

fn runtime_config(text: &str) -> Map<String, Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests;
