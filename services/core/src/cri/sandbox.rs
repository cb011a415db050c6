//! Pod sandboxes: RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus and
//! ListPodSandbox.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_oci::spec as oci;
use berth_proto::runtime::v1 as cri;
use serde_json::{Map, Value, json};

use super::*;
use crate::containers::Runtime;
use crate::network::cni::Attachment;
use crate::network::netns;
use crate::tasks::{CreateOptions, ProcessStatus};

const SANDBOX_CONFIG_TYPE: &str = "runtime.v1.PodSandboxConfig";
/// The CNI ADD result of a pod, kept for its DEL.
const CNI_RESULT: &str = "cni-result.json";
/// The pod's /dev/shm: a tmpfs under its directory, shared by its containers.
pub(super) const SHM: &str = "shm";

/// What a sandbox is, read back from its record.
pub(super) struct Sandbox {
    pub record: Container,
    pub config: cri::PodSandboxConfig,
    /// The pause process, when its task runs.
    pub pid: Option<u32>,
}

impl Sandbox {
    pub fn ready(&self) -> bool {
        self.pid.is_some()
    }

    pub fn netns(&self) -> Option<&str> {
        self.record.labels.get(NETNS_LABEL).map(String::as_str)
    }

    fn ip(&self) -> &str {
        self.record
            .labels
            .get(IP_LABEL)
            .map(String::as_str)
            .unwrap_or_default()
    }
}

/// The pod's namespace options (all POD when unset).
pub(super) fn namespace_options(config: &cri::PodSandboxConfig) -> cri::NamespaceOption {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default()
}

fn host_network(config: &cri::PodSandboxConfig) -> bool {
    namespace_options(config).network == cri::NamespaceMode::Node as i32
}

impl Cri {
    /// RunPodSandbox: the pod's files, network and pause task; its id. On a failure
    /// nothing stays (no record, netns, CNI attachment or task).
    pub async fn run_sandbox(
        &self,
        config: cri::PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String> {
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| Error::invalid("sandbox config must include metadata"))?;
        for (what, v) in [
            ("name", &meta.name),
            ("namespace", &meta.namespace),
            ("uid", &meta.uid),
        ] {
            if v.is_empty() {
                return Err(Error::invalid(format!(
                    "sandbox metadata.{what} must not be empty"
                )));
            }
        }
        let runtime = self.runtime_for(runtime_handler)?;
        let name = format!(
            "{}_{}_{}_{}",
            meta.name, meta.namespace, meta.uid, meta.attempt
        );
        let id = new_id();
        let _reserved = self.reserve("sandbox", &name, &id).await?;
        let dir = self.sandbox_dir(&id);
        let made = self.make_sandbox(&id, &name, &config, &runtime, &dir).await;
        if let Err(e) = made {
            tracing::warn!(namespace = NAMESPACE, id, error = %e, "RunPodSandbox failed; undoing it");
            self.teardown(&id, true).await;
            return Err(e);
        }
        tracing::info!(namespace = NAMESPACE, id, name, "pod sandbox running");
        Ok(id)
    }

    fn runtime_for(&self, handler: &str) -> Result<String> {
        if handler.is_empty() || handler == "runc" || handler == self.p().default_runtime {
            return Ok(self.p().default_runtime.clone());
        }
        Err(Error::not_found(format!(
            "no runtime for {handler:?} is configured (the runtimes table of berthd's config)"
        )))
    }

    async fn make_sandbox(
        &self,
        id: &str,
        name: &str,
        config: &cri::PodSandboxConfig,
        runtime: &str,
        dir: &Path,
    ) -> Result<()> {
        let hostname = if config.hostname.is_empty() {
            host_hostname()
        } else {
            config.hostname.clone()
        };
        // The pod's directory, files, /dev/shm and network namespace, on the blocking pool.
        let netns_path = {
            let (dir, config, hostname) = (dir.to_path_buf(), config.clone(), hostname.clone());
            let (netns_dir, id) = (self.netns_dir(), id.to_string());
            blocking(move || {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| Error::io("create sandbox directory", &dir, e))?;
                write_pod_files(&dir, &config, &hostname)?;
                if namespace_options(&config).ipc != cri::NamespaceMode::Node as i32 {
                    mount_shm(&dir.join(SHM))?;
                }
                match host_network(&config) {
                    true => Ok(None),
                    false => netns::create(&netns_dir, &id).map(Some),
                }
            })
            .await?
        };
        let mut labels: BTreeMap<String, String> = config.labels.clone().into_iter().collect();
        labels.insert(KIND_LABEL.into(), "sandbox".into());
        labels.insert(NAME_LABEL.into(), name.into());
        if let Some(path) = &netns_path {
            labels.insert(NETNS_LABEL.into(), path.display().to_string());
        }
        // The init process: berth's pause, or the configured sandbox image's (pulled when
        // it is not here), on a snapshot of its own.
        let sandbox_image = self.p().config.sandbox_image.clone();
        let (image, snapshot) = if sandbox_image.is_empty() {
            (None, String::new())
        } else {
            let image = match self.resolve_image(&sandbox_image).await {
                Ok(r) => r,
                Err(Error::NotFound(_)) => {
                    self.pull_image(&sandbox_image, None).await?;
                    self.resolve_image(&sandbox_image).await?
                }
                Err(e) => return Err(e),
            };
            let parent = berth_oci::image::chain_ids(&super::image::diff_ids(&image.config))
                .last()
                .cloned()
                .unwrap_or_default();
            let create = crate::snapshots::Create {
                snapshotter: self.p().snapshotter.clone(),
                key: id.to_string(),
                parent,
                ..Default::default()
            };
            self.p()
                .snapshots
                .create(NAMESPACE, create, None)
                .await
                .map_err(|e| e.context(&format!("prepare the sandbox image {sandbox_image}")))?;
            (Some(image), id.to_string())
        };
        let spec = self.pause_spec(id, config, &hostname, netns_path.as_deref(), image.as_ref())?;
        let record = Container {
            id: id.to_string(),
            labels,
            image: image
                .as_ref()
                .and_then(|i| i.names.first().cloned())
                .unwrap_or_else(|| "berth/pause".into()),
            snapshotter: if snapshot.is_empty() {
                String::new()
            } else {
                self.p().snapshotter.clone()
            },
            snapshot_key: snapshot,
            runtime: Some(Runtime {
                name: runtime.to_string(),
                options: None,
            }),
            spec: Some(AnyValue {
                type_url: SPEC_TYPE_URL.into(),
                value: spec,
            }),
            extensions: BTreeMap::from([(
                CONFIG_EXTENSION.to_string(),
                encode_config(config, SANDBOX_CONFIG_TYPE),
            )]),
            sandbox: id.to_string(),
            ..Default::default()
        };
        // The network is set up while the pause starts: the pause only holds the
        // namespace, which exists already, and the pod's containers come after this call.
        let network = async {
            match &netns_path {
                Some(path) => self.network_up(id, config, path, dir).await.map(Some),
                None => Ok(None),
            }
        };
        let pause = async {
            self.p()
                .containers
                .create(NAMESPACE, record.clone())
                .await?;
            self.p()
                .tasks
                .create(NAMESPACE, id, CreateOptions::default())
                .await?;
            self.p().tasks.start(NAMESPACE, id, "").await
        };
        let (ip, started) = tokio::join!(network, pause);
        started?;
        if let Some(ip) = ip? {
            let mut record = record;
            record.labels.insert(IP_LABEL.into(), ip);
            let paths = vec![format!("labels.{IP_LABEL}")];
            self.p().containers.update(NAMESPACE, record, paths).await?;
        }
        Ok(())
    }

    /// CNI ADD of the pod into `netns`: its IP. The result is kept for the DEL.
    async fn network_up(
        &self,
        id: &str,
        config: &cri::PodSandboxConfig,
        netns: &Path,
        dir: &Path,
    ) -> Result<String> {
        let net = self.load_network().await?;
        let a = attachment(id, config, netns);
        // The pod's loopback interface up, as containerd does with the loopback plugin,
        // at the same time as the pod's network.
        let lo = NetworkList::parse(
            r#"{"cniVersion":"0.3.1","name":"cni-loopback","plugins":[{"type":"loopback"}]}"#,
        )?;
        let lo_attachment = Attachment {
            ifname: "lo".into(),
            ..a.clone()
        };
        let (added, lo_added) = tokio::join!(
            self.inner.cni.add(&net, &a),
            self.inner.cni.add(&lo, &lo_attachment)
        );
        let added = added.map_err(|e| match e {
            Error::Cni { .. } => {
                Error::Internal(format!("failed to setup network for sandbox {id:?}: {e}"))
            }
            e => e.context(&format!("failed to setup network for sandbox {id:?}")),
        })?;
        let (path, raw) = (dir.join(CNI_RESULT), added.raw.to_string());
        blocking(move || write_file(&path, &raw)).await?;
        lo_added
            .map_err(|e| e.context(&format!("failed to set up the loopback of sandbox {id:?}")))?;
        added.address_of("eth0").ok_or_else(|| {
            Error::Internal(format!(
                "the CNI network {:?} gave sandbox {id} no address",
                net.name
            ))
        })
    }

    /// CNI DEL of the pod (when it has a network) and its namespace removed.
    async fn network_down(&self, id: &str, config: &cri::PodSandboxConfig, netns: &str) {
        let path = PathBuf::from(netns);
        let dir = self.sandbox_dir(id);
        let added: Option<Value> = tokio::fs::read(dir.join(CNI_RESULT))
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Ok(net) = self.load_network().await {
            let a = attachment(id, config, &path);
            if let Err(e) = self.inner.cni.del(&net, &a, added.as_ref()).await {
                tracing::warn!(namespace = NAMESPACE, id, error = %e, "CNI DEL of a pod");
            }
        }
        let _ = tokio::fs::remove_file(dir.join(CNI_RESULT)).await;
        let removed = blocking(move || match netns::exists(&path) {
            true => netns::remove(&path),
            false => Ok(()),
        })
        .await;
        if let Err(e) = removed {
            tracing::warn!(namespace = NAMESPACE, id, error = %e, "remove a pod's network namespace");
        }
    }

    /// The pause's runtime spec: the pod's new namespaces (or the host's), its hostname,
    /// sysctls and cgroup parent, the pause bind-mounted into an empty read-only root.
    fn pause_spec(
        &self,
        id: &str,
        config: &cri::PodSandboxConfig,
        hostname: &str,
        netns: Option<&Path>,
        image: Option<&super::image::Resolved>,
    ) -> Result<Vec<u8>> {
        use oci::LinuxNamespaceType as Ns;
        let opts = namespace_options(config);
        let node = cri::NamespaceMode::Node as i32;
        let mut namespaces = vec![oci::Namespace {
            kind: Ns::Mount,
            path: None,
        }];
        if opts.pid != node {
            namespaces.push(oci::Namespace {
                kind: Ns::Pid,
                path: None,
            });
        }
        if opts.ipc != node {
            namespaces.push(oci::Namespace {
                kind: Ns::Ipc,
                path: None,
            });
        }
        if let Some(path) = netns {
            namespaces.push(oci::Namespace {
                kind: Ns::Uts,
                path: None,
            });
            namespaces.push(oci::Namespace {
                kind: Ns::Network,
                path: Some(path.display().to_string()),
            });
        }
        let linux = config.linux.clone().unwrap_or_default();
        let meta = config.metadata.clone().unwrap_or_default();
        let c = oci::ContainerConfig {
            image: match image {
                Some(i) => image_config(&i.config),
                None => oci::ImageConfig {
                    entrypoint: vec![PAUSE_PATH.into()],
                    ..Default::default()
                },
            },
            hostname: netns.map(|_| hostname.to_string()),
            readonly_rootfs: true,
            mounts: match image {
                Some(_) => Vec::new(),
                None => vec![oci::Mount {
                    destination: PAUSE_PATH.into(),
                    kind: "bind".into(),
                    source: self.p().pause.display().to_string(),
                    options: vec!["rbind".into(), "ro".into()],
                }],
            },
            namespaces: Some(namespaces),
            sysctls: linux.sysctls.clone().into_iter().collect(),
            cgroups_path: cgroups_path(&linux.cgroup_parent, id),
            annotations: BTreeMap::from([
                (SANDBOX_LABEL.to_string(), id.to_string()),
                (CONTAINER_TYPE_ANNOTATION.to_string(), "sandbox".to_string()),
                (SANDBOX_NAME_ANNOTATION.to_string(), meta.name.clone()),
                (
                    SANDBOX_NAMESPACE_ANNOTATION.to_string(),
                    meta.namespace.clone(),
                ),
            ]),
            host_capabilities: host_capabilities(),
            ..Default::default()
        };
        let spec = oci::build(&c).map_err(|e| Error::invalid(format!("pause spec: {e}")))?;
        let value = oci::to_value(&spec).map_err(|e| Error::invalid(format!("pause spec: {e}")))?;
        serde_json::to_vec(&value).map_err(|e| Error::Internal(format!("encode spec: {e}")))
    }

    /// A sandbox by id (or unique prefix), with its pause's state.
    pub(super) async fn sandbox(&self, id: &str) -> Result<Sandbox> {
        let record = self.find("sandbox", id).await?;
        Ok(self.sandbox_of(record).await)
    }

    pub(super) async fn sandbox_of(&self, record: Container) -> Sandbox {
        let config = decode_config(&record);
        let pid = match self.p().tasks.state(NAMESPACE, &record.id, "").await {
            Ok(s) if matches!(s.status, ProcessStatus::Running | ProcessStatus::Paused) => {
                Some(s.pid)
            }
            _ => None,
        };
        Sandbox {
            record,
            config,
            pid,
        }
    }

    /// StopPodSandbox: its containers killed, the pause stopped, the network torn down.
    /// Stopping a stopped sandbox is no error.
    pub async fn stop_sandbox(&self, id: &str) -> Result<()> {
        let sb = self.sandbox(id).await?;
        let id = sb.record.id.clone();
        for c in self.containers_of(&id).await? {
            self.stop_container_record(&c, 0).await?;
        }
        self.stop_pause(&id).await;
        if let Some(netns) = sb.netns() {
            self.network_down(&id, &sb.config, netns).await;
        }
        tracing::info!(namespace = NAMESPACE, id, "pod sandbox stopped");
        Ok(())
    }

    /// The pause killed and its task deleted (the pod's shim exits with its last task).
    async fn stop_pause(&self, id: &str) {
        let tasks = &self.p().tasks;
        if tasks.get(NAMESPACE, id).is_err() {
            return;
        }
        let _ = tasks.kill(NAMESPACE, id, "", 9, true).await;
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tasks.wait(NAMESPACE, id, ""),
        )
        .await;
        if let Err(e) = tasks.delete(NAMESPACE, id).await {
            tracing::warn!(namespace = NAMESPACE, id, error = %e, "delete a pause task");
        }
    }

    /// RemovePodSandbox: stopped if need be, its containers removed, then itself. An
    /// unknown sandbox is no error (it may be gone already), as with containerd.
    pub async fn remove_sandbox(&self, id: &str) -> Result<()> {
        let sb = match self.sandbox(id).await {
            Ok(sb) => sb,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let id = sb.record.id.clone();
        if sb.ready() || sb.netns().is_some_and(|n| Path::new(n).exists()) {
            self.stop_sandbox(&id).await?;
        }
        for c in self.containers_of(&id).await? {
            self.remove_container_record(&c).await?;
        }
        self.teardown(&id, false).await;
        tracing::info!(namespace = NAMESPACE, id, "pod sandbox removed");
        Ok(())
    }

    /// Whatever of sandbox `id` exists goes: task, network, record, directory.
    async fn teardown(&self, id: &str, network: bool) {
        self.stop_pause(id).await;
        if network
            && let Ok(record) = self.p().containers.get(NAMESPACE, id).await
            && let Some(netns) = record.labels.get(NETNS_LABEL)
        {
            let config: cri::PodSandboxConfig = decode_config(&record);
            self.network_down(id, &config, netns).await;
        } else if network {
            // Failed before the record was written: the netns (and attachment) by its path.
            let path = self.netns_dir().join(id);
            let _ = blocking(move || match path.exists() {
                true => netns::remove(&path),
                false => Ok(()),
            })
            .await;
        }
        match self.p().containers.delete(NAMESPACE, id).await {
            Ok(()) | Err(Error::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(namespace = NAMESPACE, id, error = %e, "delete a sandbox record")
            }
        }
        // The sandbox image's snapshot, when it has one (named by the sandbox's id).
        if !self.p().config.sandbox_image.is_empty() {
            match self
                .p()
                .snapshots
                .remove(NAMESPACE, &self.p().snapshotter, id, None)
                .await
            {
                Ok(()) | Err(Error::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(namespace = NAMESPACE, id, error = %e, "remove a sandbox's snapshot")
                }
            }
        }
        let dir = self.sandbox_dir(id);
        let removed = blocking(move || {
            unmount_shm(&dir.join(SHM));
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(Error::io("remove", &dir, e))
                }
                _ => Ok(()),
            }
        })
        .await;
        if let Err(e) = removed {
            tracing::warn!(namespace = NAMESPACE, id, error = %e, "remove a sandbox directory");
        }
    }

    /// PodSandboxStatus.
    pub async fn sandbox_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<(cri::PodSandboxStatus, BTreeMap<String, String>)> {
        let sb = self.sandbox(id).await?;
        let status = cri::PodSandboxStatus {
            id: sb.record.id.clone(),
            metadata: sb.config.metadata.clone(),
            state: sandbox_state(&sb) as i32,
            created_at: sb.record.created_at,
            network: Some(cri::PodSandboxNetworkStatus {
                ip: sb.ip().to_string(),
                additional_ips: Vec::new(),
            }),
            linux: Some(cri::LinuxPodSandboxStatus {
                namespaces: Some(cri::Namespace {
                    options: Some(namespace_options(&sb.config)),
                }),
            }),
            labels: sb.config.labels.clone(),
            annotations: sb.config.annotations.clone(),
            runtime_handler: String::new(),
        };
        let mut info = BTreeMap::new();
        if verbose {
            let v = json!({
                "pid": sb.pid.unwrap_or(0),
                "netNamespacePath": sb.netns().unwrap_or_default(),
                "runtimeHandler": sb.record.runtime.as_ref().map(|r| r.name.clone()).unwrap_or_default(),
                "sandboxDirectory": self.sandbox_dir(&sb.record.id),
                "image": if self.p().config.sandbox_image.is_empty() {
                    "berth built-in pause".to_string()
                } else {
                    sb.record.image.clone()
                },
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok((status, info))
    }

    /// ListPodSandbox.
    pub async fn list_sandboxes(
        &self,
        filter: Option<cri::PodSandboxFilter>,
    ) -> Result<Vec<cri::PodSandbox>> {
        let f = filter.unwrap_or_default();
        let mut out = Vec::new();
        for record in self.records("sandbox").await? {
            if !f.id.is_empty() && !record.id.starts_with(&f.id) {
                continue;
            }
            let sb = self.sandbox_of(record).await;
            let state = sandbox_state(&sb) as i32;
            if f.state.as_ref().is_some_and(|s| s.state != state)
                || !selected(&sb.config.labels, &f.label_selector)
            {
                continue;
            }
            out.push(cri::PodSandbox {
                id: sb.record.id.clone(),
                metadata: sb.config.metadata.clone(),
                state,
                created_at: sb.record.created_at,
                labels: sb.config.labels.clone(),
                annotations: sb.config.annotations.clone(),
                runtime_handler: String::new(),
            });
        }
        Ok(out)
    }
}

fn sandbox_state(sb: &Sandbox) -> cri::PodSandboxState {
    if sb.ready() {
        cri::PodSandboxState::SandboxReady
    } else {
        cri::PodSandboxState::SandboxNotready
    }
}

/// The CNI attachment of a pod: Kubernetes' CNI_ARGS, its port mappings and DNS for the
/// plugins that ask (portmap).
fn attachment(id: &str, config: &cri::PodSandboxConfig, netns: &Path) -> Attachment {
    let meta = config.metadata.clone().unwrap_or_default();
    let mut runtime_config = Map::new();
    let ports: Vec<Value> = config
        .port_mappings
        .iter()
        .filter(|p| p.host_port > 0)
        .map(|p| {
            json!({
                "hostPort": p.host_port,
                "containerPort": p.container_port,
                "protocol": match cri::Protocol::try_from(p.protocol) {
                    Ok(cri::Protocol::Udp) => "udp",
                    Ok(cri::Protocol::Sctp) => "sctp",
                    _ => "tcp",
                },
                "hostIP": p.host_ip,
            })
        })
        .collect();
    if !ports.is_empty() {
        runtime_config.insert("portMappings".into(), Value::Array(ports));
    }
    if let Some(dns) = &config.dns_config {
        runtime_config.insert(
            "dns".into(),
            json!({"servers": dns.servers, "searches": dns.searches, "options": dns.options}),
        );
    }
    Attachment {
        container_id: id.to_string(),
        netns: netns.to_path_buf(),
        ifname: "eth0".into(),
        args: vec![
            ("IgnoreUnknown".into(), "1".into()),
            ("K8S_POD_NAMESPACE".into(), meta.namespace),
            ("K8S_POD_NAME".into(), meta.name),
            ("K8S_POD_INFRA_CONTAINER_ID".into(), id.to_string()),
            ("K8S_POD_UID".into(), meta.uid),
        ],
        runtime_config,
    }
}

/// The run configuration of an image's config (`config` in its JSON).
pub(super) fn image_config(config: &Value) -> oci::ImageConfig {
    let c = &config["config"];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    oci::ImageConfig {
        entrypoint: strings(&c["Entrypoint"]),
        cmd: strings(&c["Cmd"]),
        env: strings(&c["Env"]),
        working_dir: c["WorkingDir"].as_str().unwrap_or_default().to_string(),
    }
}

/// /etc/hostname, /etc/hosts and /etc/resolv.conf of the pod, shared by its containers.
fn write_pod_files(dir: &Path, config: &cri::PodSandboxConfig, hostname: &str) -> Result<()> {
    write_file(&dir.join("hostname"), &format!("{hostname}\n"))?;
    let hosts = if host_network(config) {
        std::fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n"
            .to_string()
    };
    write_file(&dir.join("hosts"), &hosts)?;
    let resolv = match &config.dns_config {
        Some(dns) if !dns.servers.is_empty() || !dns.searches.is_empty() => {
            let mut text = String::new();
            if !dns.searches.is_empty() {
                text.push_str(&format!("search {}\n", dns.searches.join(" ")));
            }
            for s in &dns.servers {
                text.push_str(&format!("nameserver {s}\n"));
            }
            if !dns.options.is_empty() {
                text.push_str(&format!("options {}\n", dns.options.join(" ")));
            }
            text
        }
        _ => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    };
    write_file(&dir.join("resolv.conf"), &resolv)
}

/// Runs `f` inside the pod's network namespace at `netns` (blocking), on a thread that
/// ends with it: see [`netns::run_in`].
pub(super) fn in_netns<T: Send>(
    netns: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    netns::run_in(Path::new(netns), f)
}

/// Mounts the pod's /dev/shm (64 MiB, as Docker's and containerd's default).
fn mount_shm(path: &Path) -> Result<()> {
    use nix::mount::{MsFlags, mount};
    std::fs::create_dir_all(path).map_err(|e| Error::io("create", path, e))?;
    mount(
        Some("shm"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )
    .map_err(|e| Error::io("mount the pod's shm on", path, e.into()))
}

/// Unmounts the pod's /dev/shm, if it is mounted.
fn unmount_shm(path: &Path) {
    use nix::mount::{MntFlags, umount2};
    if path.exists()
        && let Err(e) = umount2(path, MntFlags::MNT_DETACH)
        && e != nix::errno::Errno::EINVAL
    {
        tracing::warn!(path = %path.display(), error = %e, "unmount a pod's shm");
    }
}

/// The cgroup of a pod's container: under the pod's cgroup parent (cgroupfs style).
pub(super) fn cgroups_path(parent: &str, id: &str) -> Option<String> {
    (!parent.is_empty()).then(|| format!("{}/{id}", parent.trim_end_matches('/')))
}

fn host_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Every capability this host can grant (the bounding set of berthd).
pub(super) fn host_capabilities() -> Vec<oci::Capability> {
    oci::bounding_set(&std::fs::read_to_string("/proc/self/status").unwrap_or_default())
}
