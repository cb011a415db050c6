//! The CRI domain: Kubernetes' pod sandboxes and their containers (`runtime.v1`), on the
//! core's containers, images, snapshots, tasks and CNI. The CRI front door calls it and
//! converts nothing but errors; the CRI's own messages are its domain types, as they are
//! containerd's CRI plugin's. None of the services it uses may use it.
//!
//! - Everything lives in the containerd namespace [`NAMESPACE`] (`k8s.io`), so `ctr -n
//!   k8s.io` sees the pods' containers, tasks and images, as with containerd.
//! - A sandbox is a container record (label [`KIND_LABEL`] = `sandbox`) whose task runs
//!   berth's own pause ([`Cri::pause`]: a static binary berthd ships, bind-mounted into an
//!   empty root, so a pod needs no image); its containers are container records (kind
//!   `container`) that join its namespaces. Sandbox and containers carry the annotation
//!   `io.kubernetes.cri.sandbox-id`, so one shim runs the whole pod.
//! - The records keep what the CRI asked for (the config, encoded, as an extension) and
//!   what was decided (pod IP, netns path, log path, as labels): a berthd restart finds
//!   every pod again, and the tasks (restored with the shims) are the live state.
//! - A pod's network: a network namespace bind-mounted under `<state>/cri/netns`, set up
//!   by the real CNI plugins from the first configuration in `cri.cni_conf_dir`, torn down
//!   at StopPodSandbox.

mod container;
mod image;
mod sandbox;
mod seccomp;
mod spdy;
mod stats;
mod stream;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_proto::runtime::v1 as cri;
use prost::Message;

use crate::config::CriConfig;
use crate::containers::{Container, Containers};
use crate::content::ContentStore;
use crate::error::{Error, Result};
use crate::filters::Filter;
use crate::images::Images;
use crate::network::cni::{Cni, NetworkList};
use crate::snapshots::Snapshots;
use crate::tasks::Tasks;
use crate::transfer::Transfers;
use crate::types::AnyValue;

pub use image::ImageFs;

/// The containerd namespace of everything the CRI makes.
pub const NAMESPACE: &str = "k8s.io";
/// `sandbox` or `container` (containerd's CRI label).
pub const KIND_LABEL: &str = "io.cri-containerd.kind";
/// A container's sandbox.
pub const SANDBOX_LABEL: &str = "io.kubernetes.cri.sandbox-id";
/// The name reserved by a sandbox or container (`name_namespace_uid_attempt`).
const NAME_LABEL: &str = "berth.cri/name";
/// A sandbox's pod IP and network namespace.
const IP_LABEL: &str = "berth.cri/ip";
const NETNS_LABEL: &str = "berth.cri/netns";
/// A container's log file and the image reference it was created from.
const LOG_LABEL: &str = "berth.cri/log-path";
const IMAGE_REF_LABEL: &str = "berth.cri/image";
/// When a container's task started (Unix nanoseconds), and the exit it left (kept once
/// seen: the task may be gone after a restart).
const STARTED_LABEL: &str = "berth.cri/started-at";
const EXIT_LABEL: &str = "berth.cri/exit-code";
const FINISHED_LABEL: &str = "berth.cri/finished-at";
/// The extension holding the CRI config (PodSandboxConfig or ContainerConfig).
const CONFIG_EXTENSION: &str = "berth.cri/config";
/// The OCI spec's type URL in container records.
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// The annotations that tell the shim (and tools) what a container is in its pod.
const CONTAINER_TYPE_ANNOTATION: &str = "io.kubernetes.cri.container-type";
const CONTAINER_NAME_ANNOTATION: &str = "io.kubernetes.cri.container-name";
const SANDBOX_NAME_ANNOTATION: &str = "io.kubernetes.cri.sandbox-name";
const SANDBOX_NAMESPACE_ANNOTATION: &str = "io.kubernetes.cri.sandbox-namespace";
/// Where the pause program is inside a sandbox.
const PAUSE_PATH: &str = "/pause";

/// The CRI runtime's version, as Version reports it.
pub const RUNTIME_NAME: &str = "berth";
pub const RUNTIME_API_VERSION: &str = "v1";

/// What the CRI domain is made of.
pub struct CriParts {
    pub config: CriConfig,
    pub containers: Containers,
    pub images: Images,
    pub content: ContentStore,
    pub snapshots: Snapshots,
    /// Leases hold a new container's snapshot until its record does.
    pub leases: crate::leases::Leases,
    pub tasks: Tasks,
    pub transfers: Transfers,
    /// The CNI plugins' directories.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// The daemon's state directory (`<state>/cri` is the CRI's).
    pub state: PathBuf,
    /// The pause program on the host.
    pub pause: PathBuf,
    /// The runtime of pods that name none.
    pub default_runtime: String,
    /// The snapshotter of containers' root filesystems, and its directory.
    pub snapshotter: String,
    pub snapshots_root: PathBuf,
}

/// The CRI domain. Cheap to clone.
#[derive(Clone)]
pub struct Cri {
    inner: Arc<Inner>,
}

struct Inner {
    parts: CriParts,
    cni: Cni,
    /// The containers' lifecycle events (GetContainerEvents).
    events: tokio::sync::broadcast::Sender<cri::ContainerEventResponse>,
    /// The streaming server's address and the URLs it has handed out.
    streams: stream::Streams,
    /// Held only while a name is checked against the records and the reservations.
    naming: tokio::sync::Mutex<()>,
    /// The names of sandboxes and containers being made (name → id), until their records
    /// hold them: the slow part of a creation runs without any lock.
    reserved: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl Cri {
    pub fn new(parts: CriParts) -> Cri {
        let cni = Cni::new(parts.cni_bin_dirs.clone());
        let (events, _) = tokio::sync::broadcast::channel(256);
        Cri {
            inner: Arc::new(Inner {
                parts,
                cni,
                events,
                streams: stream::Streams::default(),
                naming: tokio::sync::Mutex::new(()),
                reserved: std::sync::Mutex::default(),
            }),
        }
    }

    fn p(&self) -> &CriParts {
        &self.inner.parts
    }

    /// `<state>/cri`.
    fn dir(&self) -> PathBuf {
        self.p().state.join("cri")
    }

    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.dir().join("sandboxes").join(id)
    }

    fn netns_dir(&self) -> PathBuf {
        self.dir().join("netns")
    }

    /// The pod network's CNI configuration: the first `*.conflist` (or single-plugin
    /// `*.conf`) in the configured directory, by name.
    pub fn network_config(&self) -> Result<NetworkList> {
        let dir = &self.p().config.cni_conf_dir;
        let not_ready = || {
            Error::precondition(format!(
                "cni config load failed: no network config found in {}: cni plugin not initialized",
                dir.display()
            ))
        };
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|_| not_ready())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                )
            })
            .collect();
        names.sort();
        let path = names.first().ok_or_else(not_ready)?;
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::io("read CNI config", path, e))?;
        let text = if path.extension().and_then(|e| e.to_str()) == Some("conflist") {
            text
        } else {
            single_plugin_list(&text)?
        };
        NetworkList::parse(&text).map_err(|e| e.context(&format!("CNI config {}", path.display())))
    }

    /// [`Cri::network_config`] on the blocking pool.
    async fn load_network(&self) -> Result<NetworkList> {
        let cri = self.clone();
        blocking(move || cri.network_config()).await
    }

    /// The runtime's conditions: RuntimeReady always, NetworkReady when a CNI
    /// configuration loads (with the reason when not).
    pub async fn conditions(&self) -> Vec<cri::RuntimeCondition> {
        let network = self.load_network().await;
        vec![
            cri::RuntimeCondition {
                r#type: "RuntimeReady".into(),
                status: true,
                ..Default::default()
            },
            cri::RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: network.is_ok(),
                reason: if network.is_ok() {
                    String::new()
                } else {
                    "NetworkPluginNotReady".into()
                },
                message: network
                    .err()
                    .map(|e| format!("Network plugin returns error: {e}"))
                    .unwrap_or_default(),
            },
        ]
    }

    /// Status's verbose info: the CRI config in effect.
    pub fn info(&self) -> BTreeMap<String, String> {
        let c = &self.p().config;
        let config = serde_json::json!({
            "sandboxImage": c.sandbox_image,
            "cniConfDir": c.cni_conf_dir,
            "cniBinDirs": self.p().cni_bin_dirs,
            "streamServerAddress": c.stream_address,
            "streamServerPort": c.stream_port.to_string(),
            "maxContainerLogLineSize": c.max_container_log_line_size,
            "defaultRuntimeName": self.p().default_runtime,
            "snapshotter": self.p().snapshotter,
            "pause": self.p().pause,
        });
        BTreeMap::from([("config".to_string(), config.to_string())])
    }

    /// The containers' lifecycle events from now on (GetContainerEvents): created,
    /// started, stopped (also when a container exits by itself) and deleted.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<cri::ContainerEventResponse> {
        self.inner.events.subscribe()
    }

    /// Tells the event's subscribers, with the pod's status and its containers'.
    async fn publish(&self, container: &str, sandbox: &str, kind: cri::ContainerEventType) {
        if self.inner.events.receiver_count() == 0 {
            return;
        }
        let pod_sandbox_status = self
            .sandbox_status(sandbox, false)
            .await
            .ok()
            .map(|(s, _)| s);
        let mut containers_statuses = Vec::new();
        if let Ok(all) = self.containers_of(sandbox).await {
            for c in all {
                if let Ok((s, _)) = self.container_status(&c.id, false).await {
                    containers_statuses.push(s);
                }
            }
        }
        let _ = self.inner.events.send(cri::ContainerEventResponse {
            container_id: container.to_string(),
            container_event_type: kind as i32,
            created_at: now_nanos(),
            pod_sandbox_status,
            containers_statuses,
        });
    }

    /// Watches every running container of every pod for its exit (at start-up: the
    /// watchers of a previous berthd are gone).
    pub async fn watch_all(&self) {
        let all = match self.records("container").await {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the pods' containers");
                return;
            }
        };
        // Every container started and not seen to exit: a task that is gone ends its
        // watcher at once.
        for c in all {
            if c.labels.contains_key(STARTED_LABEL) && !c.labels.contains_key(EXIT_LABEL) {
                self.watch_exit(&c);
            }
        }
    }

    /// When the container's task exits: its exit kept, CONTAINER_STOPPED_EVENT told.
    fn watch_exit(&self, c: &Container) {
        let (cri, c) = (self.clone(), c.clone());
        tokio::spawn(async move {
            if let Err(e) = cri.p().tasks.wait(NAMESPACE, &c.id, "").await {
                tracing::debug!(namespace = NAMESPACE, id = %c.id, error = %e, "not watching a container's exit");
                return;
            }
            cri.keep_exit(&c).await;
            let sandbox = c.labels.get(SANDBOX_LABEL).cloned().unwrap_or_default();
            cri.publish(
                &c.id,
                &sandbox,
                cri::ContainerEventType::ContainerStoppedEvent,
            )
            .await;
        });
    }

    /// The records of `kind` (`sandbox` or `container`).
    async fn records(&self, kind: &str) -> Result<Vec<Container>> {
        let filter = Filter::parse(&format!("labels.\"{KIND_LABEL}\"=={kind}"))?;
        self.p().containers.list(NAMESPACE, filter).await
    }

    /// The record of `kind` whose id is `id` or starts with it (a unique prefix, as
    /// containerd's truncated ids).
    async fn find(&self, kind: &str, id: &str) -> Result<Container> {
        if id.is_empty() {
            return Err(Error::invalid(format!("{kind} id must not be empty")));
        }
        let all = self.records(kind).await?;
        if let Some(c) = all.iter().find(|c| c.id == id) {
            return Ok(c.clone());
        }
        let mut matching = all.into_iter().filter(|c| c.id.starts_with(id));
        match (matching.next(), matching.next()) {
            (Some(c), None) => Ok(c),
            (Some(_), Some(_)) => Err(Error::invalid(format!(
                "{kind} id {id:?} is ambiguous: give more of it"
            ))),
            _ => Err(Error::not_found(format!(
                "an error occurred when try to find {kind} {id:?}"
            ))),
        }
    }

    /// Reserves `name` for the new record `id` of `kind`: containerd's "name is reserved"
    /// rule, against the records and the creations under way. The reservation ends with
    /// the guard (by then the record holds the name, or the creation failed).
    async fn reserve(&self, kind: &str, name: &str, id: &str) -> Result<Reservation> {
        let _naming = self.inner.naming.lock().await;
        let holder = self
            .records(kind)
            .await?
            .into_iter()
            .find(|c| c.labels.get(NAME_LABEL).is_some_and(|n| n == name))
            .map(|c| c.id);
        let mut reserved = self
            .inner
            .reserved
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(holder) = holder.or_else(|| reserved.get(name).cloned()) {
            return Err(Error::already_exists(format!(
                "failed to reserve {kind} name {name:?}: name {name:?} is reserved for {holder:?}"
            )));
        }
        reserved.insert(name.to_string(), id.to_string());
        Ok(Reservation {
            cri: self.clone(),
            name: name.to_string(),
        })
    }
}

impl Cri {
    /// A lease that holds what a creation makes until its record does, so that a
    /// collection started meanwhile (by another removal) cannot take it; it expires by
    /// itself if berthd dies first. The caller deletes it.
    async fn creation_lease(&self) -> Result<String> {
        self.p()
            .leases
            .create_temporary(
                NAMESPACE,
                crate::leases::CRI_CREATE_LEASE_PREFIX,
                std::time::Duration::from_secs(600),
            )
            .await
    }
}

/// A name reserved while its sandbox or container is made.
struct Reservation {
    cri: Cri,
    name: String,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.cri
            .inner
            .reserved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.name);
    }
}

/// A new sandbox or container id: 64 hex digits, as containerd's.
fn new_id() -> String {
    crate::identifiers::random_id()
}

/// A config kept on a record.
fn encode_config(m: &impl Message, type_url: &str) -> AnyValue {
    AnyValue {
        type_url: type_url.to_string(),
        value: m.encode_to_vec(),
    }
}

fn decode_config<M: Message + Default>(c: &Container) -> M {
    c.extensions
        .get(CONFIG_EXTENSION)
        .and_then(|a| M::decode(a.value.as_slice()).ok())
        .unwrap_or_default()
}

use crate::metadata::now_nanos;

/// Whether `labels` has every pair of `selector`.
fn selected(labels: &BTreeMap<String, String>, selector: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A single plugin's `.conf` made a list of one.
fn single_plugin_list(text: &str) -> Result<String> {
    let conf: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::invalid(format!("CNI network configuration: {e}")))?;
    let list = serde_json::json!({
        "cniVersion": conf["cniVersion"].clone(),
        "name": conf["name"].clone(),
        "plugins": [conf],
    });
    Ok(list.to_string())
}

/// Runs `f` on the blocking pool (file system work, mounts, namespaces).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("blocking task: {e}")))?
}

/// Writes `text` to `path` (a pod's hosts, resolv.conf, hostname, its CNI result): temp,
/// fsync, rename, so that a crash leaves the old file or the new one.
fn write_file(path: &Path, text: &str) -> Result<()> {
    crate::runtime::write_file_atomic(path, text.as_bytes())
}
