//! A pod's containers: CreateContainer, StartContainer, StopContainer, RemoveContainer,
//! ContainerStatus, ListContainers and ExecSync.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_oci::spec as oci;
use berth_proto::runtime::v1 as cri;
use serde_json::Value;

use super::sandbox::{cgroups_path, host_capabilities, namespace_options};
use super::*;
use crate::containers::Runtime;
use crate::snapshots::Create;
use crate::tasks::{CreateOptions, ExecOptions, ProcessStatus, Stdio};

const CONTAINER_CONFIG_TYPE: &str = "runtime.v1.ContainerConfig";
/// The Update annotation that has berth's shim reopen a container's CRI log files.
const REOPEN_LOG_ANNOTATION: &str = "io.berth.cri.reopen-log";
const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
const LINUX_RESOURCES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";
/// What an ExecSync keeps of each stream at most (the kubelet's own cap).
const EXEC_OUTPUT_CAP: u64 = 16 << 20;

/// The processes of a pod a new container's namespaces are found by: its pause, and
/// its running containers (PID namespace targets).
struct PodPids {
    pause: u32,
    running: Vec<(String, u32)>,
}

/// Where a container's task is.
struct Observed {
    state: cri::ContainerState,
    pid: u32,
    exit_code: i32,
    finished_at: i64,
}

impl Cri {
    /// CreateContainer: the container's snapshot of its image and its spec in the pod's
    /// namespaces; its id.
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
    ) -> Result<String> {
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| Error::invalid("container config must include metadata"))?;
        if meta.name.is_empty() {
            return Err(Error::invalid("container metadata.name must not be empty"));
        }
        let image_ref = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let sb = self.sandbox(sandbox_id).await?;
        let Some(pause_pid) = sb.pid else {
            return Err(Error::precondition(format!(
                "sandbox container {:?} is not running",
                sb.record.id
            )));
        };
        let pod = sb.config.metadata.clone().unwrap_or_default();
        let name = format!(
            "{}_{}_{}_{}_{}",
            meta.name, pod.name, pod.namespace, pod.uid, meta.attempt
        );
        let image = self.resolve_image(&image_ref).await.map_err(|e| {
            e.context(&format!(
                "failed to get image {image_ref:?} of container {:?}",
                meta.name
            ))
        })?;
        let id = new_id();
        let _reserved = self.reserve("container", &name, &id).await?;
        let chain_id = berth_oci::image::chain_ids(&image::diff_ids(&image.config))
            .last()
            .cloned();
        let snapshotter = self.p().snapshotter.clone();
        let create = Create {
            snapshotter: snapshotter.clone(),
            key: id.clone(),
            parent: chain_id.unwrap_or_default(),
            labels: BTreeMap::new(),
            view: false,
        };
        let lease = self.creation_lease().await?;
        let created = async {
            let mounts = self
                .p()
                .snapshots
                .create(NAMESPACE, create, Some(&lease))
                .await
                .map_err(|e| {
                    e.context(&format!(
                        "prepare the root filesystem of container {}",
                        meta.name
                    ))
                })?;
            // The spec and the record; on a failure the new snapshot goes again.
            let made = async {
                let accounts = self.accounts_for(&config, &image, mounts).await?;
                let pids = PodPids {
                    pause: pause_pid,
                    running: self.running_pids(&sb.record.id).await,
                };
                let spec = self.container_spec(&id, &config, &sb, &pids, &image, &accounts)?;
                self.container_record(&id, name, &config, &sb, &image, spec)
            }
            .await;
            let created = match made {
                Ok(record) => self
                    .p()
                    .containers
                    .create(NAMESPACE, record)
                    .await
                    .map(drop),
                Err(e) => Err(e),
            };
            if let Err(e) = created {
                let _ = self
                    .p()
                    .snapshots
                    .remove(NAMESPACE, &snapshotter, &id, None)
                    .await;
                return Err(e);
            }
            Ok(())
        }
        .await;
        if let Err(e) = self.p().leases.delete(NAMESPACE, &lease).await {
            tracing::warn!(namespace = NAMESPACE, id, lease, error = %e, "delete a creation lease");
        }
        created?;
        tracing::info!(namespace = NAMESPACE, id, sandbox = %sb.record.id, "container created");
        self.publish(
            &id,
            &sb.record.id,
            cri::ContainerEventType::ContainerCreatedEvent,
        )
        .await;
        Ok(id)
    }

    /// The record of a new container: its labels (kind, pod, name, image reference, log),
    /// runtime, spec, snapshot and CRI config.
    fn container_record(
        &self,
        id: &str,
        name: String,
        config: &cri::ContainerConfig,
        sb: &super::sandbox::Sandbox,
        image: &image::Resolved,
        spec: Vec<u8>,
    ) -> Result<Container> {
        let mut labels: BTreeMap<String, String> = config.labels.clone().into_iter().collect();
        labels.insert(KIND_LABEL.into(), "container".into());
        labels.insert(SANDBOX_LABEL.into(), sb.record.id.clone());
        labels.insert(NAME_LABEL.into(), name);
        labels.insert(
            IMAGE_REF_LABEL.into(),
            config
                .image
                .as_ref()
                .map(|i| i.image.clone())
                .unwrap_or_default(),
        );
        if let Some(log) = log_path(&sb.config, config) {
            labels.insert(LOG_LABEL.into(), log.display().to_string());
        }
        Ok(Container {
            id: id.to_string(),
            labels,
            image: image
                .names
                .first()
                .cloned()
                .unwrap_or_else(|| image.id.clone()),
            runtime: Some(Runtime {
                name: sb.record.runtime_name().to_string(),
                options: None,
            }),
            spec: Some(AnyValue {
                type_url: SPEC_TYPE_URL.into(),
                value: spec,
            }),
            snapshotter: self.p().snapshotter.clone(),
            snapshot_key: id.to_string(),
            extensions: BTreeMap::from([(
                CONFIG_EXTENSION.to_string(),
                encode_config(config, CONTAINER_CONFIG_TYPE),
            )]),
            sandbox: sb.record.id.clone(),
            ..Default::default()
        })
    }

    /// The container's runtime spec: its image's config with the CRI config's overrides,
    /// in the pod's namespaces, with the pod's hosts, resolv.conf and hostname files.
    fn container_spec(
        &self,
        id: &str,
        config: &cri::ContainerConfig,
        sb: &super::sandbox::Sandbox,
        pids: &PodPids,
        image: &image::Resolved,
        accounts: &Accounts,
    ) -> Result<Vec<u8>> {
        let pause_pid = pids.pause;
        use oci::LinuxNamespaceType as Ns;
        let linux = config.linux.clone().unwrap_or_default();
        let sc = linux.security_context.clone().unwrap_or_default();
        let pod_sc = sb
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.clone())
            .unwrap_or_default();
        if sc.privileged && !pod_sc.privileged {
            return Err(Error::invalid(
                "no privileged container allowed in sandbox: the pod's security context is not privileged",
            ));
        }
        let img = &image.config["config"];
        let image_config = super::sandbox::image_config(&image.config);
        let user = user_of(&sc, img["User"].as_str().unwrap_or_default(), accounts)?;
        let target_pid = |target: &str| -> Result<u32> {
            pids.running
                .iter()
                .find(|(id, _)| id == target)
                .map(|(_, pid)| *pid)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "the PID namespace target {target:?} is not a running container of the pod"
                    ))
                })
        };
        let opts = namespace_options(&sb.config);
        let own = namespace_options_of(&sc).unwrap_or(opts.clone());
        let ns_path = |kind: &str| format!("/proc/{pause_pid}/ns/{kind}");
        let node = cri::NamespaceMode::Node as i32;
        let pod = cri::NamespaceMode::Pod as i32;
        let mut namespaces = vec![oci::Namespace {
            kind: Ns::Mount,
            path: None,
        }];
        let target = cri::NamespaceMode::Target as i32;
        match own.pid {
            p if p == node => {}
            p if p == pod => namespaces.push(oci::Namespace {
                kind: Ns::Pid,
                path: Some(ns_path("pid")),
            }),
            // TARGET: the PID namespace of another container of the pod.
            p if p == target => namespaces.push(oci::Namespace {
                kind: Ns::Pid,
                path: Some(format!("/proc/{}/ns/pid", target_pid(&own.target_id)?)),
            }),
            _ => namespaces.push(oci::Namespace {
                kind: Ns::Pid,
                path: None,
            }),
        }
        if opts.ipc != node {
            namespaces.push(oci::Namespace {
                kind: Ns::Ipc,
                path: Some(ns_path("ipc")),
            });
        }
        if let Some(netns) = sb.netns() {
            namespaces.push(oci::Namespace {
                kind: Ns::Uts,
                path: Some(ns_path("uts")),
            });
            namespaces.push(oci::Namespace {
                kind: Ns::Network,
                path: Some(netns.to_string()),
            });
        }
        let dir = self.sandbox_dir(&sb.record.id);
        let mut mounts: Vec<oci::Mount> = ["hostname", "hosts", "resolv.conf"]
            .iter()
            .filter(|f| {
                !config
                    .mounts
                    .iter()
                    .any(|m| m.container_path == format!("/etc/{f}"))
            })
            .map(|f| oci::Mount {
                destination: format!("/etc/{f}"),
                kind: "bind".into(),
                source: dir.join(f).display().to_string(),
                options: vec![
                    "rbind".into(),
                    "rprivate".into(),
                    if sc.readonly_rootfs { "ro" } else { "rw" }.into(),
                ],
            })
            .collect();
        // The pod's /dev/shm (its IPC namespace's), or the host's with the host's IPC.
        let shm = if opts.ipc == node {
            PathBuf::from("/dev/shm")
        } else {
            dir.join(super::sandbox::SHM)
        };
        if !config.mounts.iter().any(|m| m.container_path == "/dev/shm") {
            mounts.push(oci::Mount {
                destination: "/dev/shm".into(),
                kind: "bind".into(),
                source: shm.display().to_string(),
                options: vec!["rbind".into(), "rprivate".into(), "rw".into()],
            });
        }
        for m in &config.mounts {
            mounts.push(cri_mount(m)?);
        }
        let devices = config
            .devices
            .iter()
            .map(host_device)
            .collect::<Result<Vec<_>>>()?;
        let res = linux.resources.clone().unwrap_or_default();
        let positive = |v: i64| (v > 0).then_some(v);
        let caps = sc.capabilities.clone().unwrap_or_default();
        let pod_meta = sb.config.metadata.clone().unwrap_or_default();
        let meta = config.metadata.clone().unwrap_or_default();
        let c = oci::ContainerConfig {
            image: image_config,
            entrypoint: (!config.command.is_empty()).then(|| config.command.clone()),
            args: config.args.clone(),
            env: config
                .envs
                .iter()
                .map(|kv| format!("{}={}", kv.key, String::from_utf8_lossy(&kv.value)))
                .collect(),
            cwd: (!config.working_dir.is_empty()).then(|| config.working_dir.clone()),
            user,
            terminal: config.tty,
            hostname: sb.netns().map(|_| {
                std::fs::read_to_string(dir.join("hostname"))
                    .map(|h| h.trim().to_string())
                    .unwrap_or_default()
            }),
            readonly_rootfs: sc.readonly_rootfs,
            privileged: sc.privileged,
            no_new_privileges: sc.no_new_privs,
            cap_add: caps.add_capabilities,
            cap_drop: caps.drop_capabilities,
            host_capabilities: host_capabilities(),
            mounts,
            devices,
            namespaces: Some(namespaces),
            resources: oci::Resources {
                memory_limit: positive(res.memory_limit_in_bytes),
                cpu_shares: u64::try_from(res.cpu_shares).ok().filter(|v| *v > 0),
                cpu_quota: positive(res.cpu_quota),
                cpu_period: u64::try_from(res.cpu_period).ok().filter(|v| *v > 0),
                pids_limit: None,
            },
            annotations: BTreeMap::from([
                (SANDBOX_LABEL.to_string(), sb.record.id.clone()),
                (
                    CONTAINER_TYPE_ANNOTATION.to_string(),
                    "container".to_string(),
                ),
                (CONTAINER_NAME_ANNOTATION.to_string(), meta.name.clone()),
                (SANDBOX_NAME_ANNOTATION.to_string(), pod_meta.name.clone()),
                (
                    SANDBOX_NAMESPACE_ANNOTATION.to_string(),
                    pod_meta.namespace.clone(),
                ),
            ]),
            cgroups_path: cgroups_path(
                &sb.config.linux.clone().unwrap_or_default().cgroup_parent,
                id,
            ),
            masked_paths: (!sc.masked_paths.is_empty()).then(|| sc.masked_paths.clone()),
            readonly_paths: (!sc.readonly_paths.is_empty()).then(|| sc.readonly_paths.clone()),
            ..Default::default()
        };
        let spec = oci::build(&c).map_err(|e| Error::invalid(format!("container spec: {e}")))?;
        let mut value =
            oci::to_value(&spec).map_err(|e| Error::invalid(format!("container spec: {e}")))?;
        if let Some(profile) = super::seccomp::profile_for(&sc)? {
            value["linux"]["seccomp"] = profile;
        }
        extra_resources(&mut value, &res);
        serde_json::to_vec(&value).map_err(|e| Error::Internal(format!("encode spec: {e}")))
    }

    /// The running containers of sandbox `id` and their init pids (PID namespace targets).
    async fn running_pids(&self, sandbox: &str) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        for c in self.containers_of(sandbox).await.unwrap_or_default() {
            if let Ok(s) = self.p().tasks.state(NAMESPACE, &c.id, "").await
                && s.status == ProcessStatus::Running
            {
                out.push((c.id, s.pid));
            }
        }
        out
    }

    /// The FIFO a container with `stdin` reads its input from.
    pub(super) fn stdin_fifo(&self, sandbox: &str, id: &str) -> PathBuf {
        self.sandbox_dir(sandbox).join(format!("{id}.stdin"))
    }

    /// The containers of sandbox `id`.
    pub(super) async fn containers_of(&self, sandbox: &str) -> Result<Vec<Container>> {
        Ok(self
            .records("container")
            .await?
            .into_iter()
            .filter(|c| c.labels.get(SANDBOX_LABEL).is_some_and(|s| s == sandbox))
            .collect())
    }

    /// StartContainer: its task, its output into its CRI log.
    pub async fn start_container(&self, id: &str) -> Result<()> {
        let c = self.find("container", id).await?;
        let id = c.id.clone();
        let sandbox = c.labels.get(SANDBOX_LABEL).cloned().unwrap_or_default();
        let sb = self.sandbox(&sandbox).await?;
        if !sb.ready() {
            return Err(Error::precondition(format!(
                "sandbox container {sandbox:?} is not running"
            )));
        }
        let observed = self.observe(&c).await;
        if observed.state != cri::ContainerState::ContainerCreated {
            return Err(Error::precondition(format!(
                "container {id} is in {} state",
                state_word(observed.state)
            )));
        }
        let config: cri::ContainerConfig = decode_config(&c);
        // A container that keeps stdin open reads it from a FIFO that Attach writes to.
        let stdin = if config.stdin {
            let path = self.stdin_fifo(&sandbox, &id);
            let shown = path.display().to_string();
            blocking(move || match path.exists() {
                true => Ok(()),
                false => {
                    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                        .map_err(|e| Error::io("mkfifo", &path, e.into()))
                }
            })
            .await?;
            shown
        } else {
            String::new()
        };
        let stdio = match c.labels.get(LOG_LABEL) {
            Some(log) => {
                let log = PathBuf::from(log);
                if let Some(parent) = log.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(|e| Error::io("create log directory", parent, e))?;
                }
                let uri = format!(
                    "file://{}?format=cri&max-line={}",
                    log.display(),
                    self.p().config.max_container_log_line_size
                );
                Stdio {
                    stdin,
                    stdout: uri.clone(),
                    stderr: if config.tty { String::new() } else { uri },
                    terminal: config.tty,
                }
            }
            None => Stdio {
                stdin,
                terminal: config.tty,
                ..Default::default()
            },
        };
        let tasks = &self.p().tasks;
        tasks
            .create(
                NAMESPACE,
                &id,
                CreateOptions {
                    stdio,
                    ..Default::default()
                },
            )
            .await?;
        if let Err(e) = tasks.start(NAMESPACE, &id, "").await {
            let _ = tasks.delete(NAMESPACE, &id).await;
            return Err(e.context(&format!("failed to start container {id:?}")));
        }
        let mut started = c.clone();
        started
            .labels
            .insert(STARTED_LABEL.into(), now_nanos().to_string());
        self.p()
            .containers
            .update(NAMESPACE, started, vec![format!("labels.{STARTED_LABEL}")])
            .await?;
        tracing::info!(namespace = NAMESPACE, id, "container started");
        self.watch_exit(&c);
        self.publish(
            &id,
            &sandbox,
            cri::ContainerEventType::ContainerStartedEvent,
        )
        .await;
        Ok(())
    }

    /// StopContainer: its stop signal, then SIGKILL after `timeout` seconds. A container
    /// that is not running is no error.
    pub async fn stop_container(&self, id: &str, timeout: i64) -> Result<()> {
        let c = self.find("container", id).await?;
        self.stop_container_record(&c, timeout).await
    }

    pub(super) async fn stop_container_record(&self, c: &Container, timeout: i64) -> Result<()> {
        let tasks = &self.p().tasks;
        if self.observe(c).await.state != cri::ContainerState::ContainerRunning {
            return Ok(());
        }
        let id = c.id.as_str();
        if timeout > 0 {
            let config: cri::ContainerConfig = decode_config(c);
            let signal = match u32::try_from(config.stop_signal) {
                Ok(s) if s > 0 => s,
                _ => 15,
            };
            let _ = tasks.kill(NAMESPACE, id, "", signal, false).await;
            let waited = tokio::time::timeout(
                Duration::from_secs(timeout.unsigned_abs()),
                tasks.wait(NAMESPACE, id, ""),
            )
            .await;
            if waited.is_ok() {
                self.keep_exit(c).await;
                return Ok(());
            }
        }
        match tasks.kill(NAMESPACE, id, "", 9, true).await {
            Ok(()) | Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e.context(&format!("failed to stop container {id:?}"))),
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), tasks.wait(NAMESPACE, id, "")).await;
        self.keep_exit(c).await;
        Ok(())
    }

    /// The exit of a container's stopped task kept on its record.
    pub(super) async fn keep_exit(&self, c: &Container) {
        let Ok(s) = self.p().tasks.state(NAMESPACE, &c.id, "").await else {
            return;
        };
        if s.status != ProcessStatus::Stopped {
            return;
        }
        let mut rec = c.clone();
        rec.labels
            .insert(EXIT_LABEL.into(), s.exit_status.to_string());
        let finished = s
            .exited_at
            .map(|t| t.seconds * 1_000_000_000 + i64::from(t.nanos))
            .unwrap_or_else(now_nanos);
        rec.labels
            .insert(FINISHED_LABEL.into(), finished.to_string());
        let paths = vec![
            format!("labels.{EXIT_LABEL}"),
            format!("labels.{FINISHED_LABEL}"),
        ];
        if let Err(e) = self.p().containers.update(NAMESPACE, rec, paths).await {
            tracing::warn!(namespace = NAMESPACE, id = %c.id, error = %e, "keep a container's exit");
        }
    }

    /// RemoveContainer: killed if it runs, its task, snapshot and record gone. An unknown
    /// container is no error, as with containerd.
    pub async fn remove_container(&self, id: &str) -> Result<()> {
        match self.find("container", id).await {
            Ok(c) => self.remove_container_record(&c).await,
            Err(Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn remove_container_record(&self, c: &Container) -> Result<()> {
        self.stop_container_record(c, 0).await?;
        let id = c.id.as_str();
        match self.p().tasks.delete(NAMESPACE, id).await {
            Ok(_) | Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e.context(&format!("failed to remove container {id:?}"))),
        }
        match self
            .p()
            .snapshots
            .remove(NAMESPACE, &c.snapshotter, &c.snapshot_key, None)
            .await
        {
            Ok(()) | Err(Error::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(namespace = NAMESPACE, id, error = %e, "remove a container's snapshot")
            }
        }
        match self.p().containers.delete(NAMESPACE, id).await {
            Ok(()) | Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        tracing::info!(namespace = NAMESPACE, id, "container removed");
        let sandbox = c.labels.get(SANDBOX_LABEL).cloned().unwrap_or_default();
        self.publish(id, &sandbox, cri::ContainerEventType::ContainerDeletedEvent)
            .await;
        Ok(())
    }

    /// UpdateContainerResources: the running task's cgroup limits changed, and the new
    /// limits kept in the container's spec (a later start has them too).
    pub async fn update_container_resources(
        &self,
        id: &str,
        resources: cri::LinuxContainerResources,
    ) -> Result<()> {
        let c = self.find("container", id).await?;
        let mut spec: Value = c
            .spec
            .as_ref()
            .and_then(|s| serde_json::from_slice(&s.value).ok())
            .ok_or_else(|| Error::Internal(format!("container {} has no spec", c.id)))?;
        let r = &resources;
        let mut linux_resources = spec["linux"]["resources"].clone();
        if !linux_resources.is_object() {
            linux_resources = serde_json::json!({});
        }
        if r.memory_limit_in_bytes > 0 {
            linux_resources["memory"]["limit"] = r.memory_limit_in_bytes.into();
        }
        if r.memory_swap_limit_in_bytes > 0 {
            linux_resources["memory"]["swap"] = r.memory_swap_limit_in_bytes.into();
        }
        if r.cpu_shares > 0 {
            linux_resources["cpu"]["shares"] = r.cpu_shares.into();
        }
        if r.cpu_quota > 0 {
            linux_resources["cpu"]["quota"] = r.cpu_quota.into();
        }
        if r.cpu_period > 0 {
            linux_resources["cpu"]["period"] = r.cpu_period.into();
        }
        if !r.cpuset_cpus.is_empty() {
            linux_resources["cpu"]["cpus"] = r.cpuset_cpus.clone().into();
        }
        if !r.cpuset_mems.is_empty() {
            linux_resources["cpu"]["mems"] = r.cpuset_mems.clone().into();
        }
        if !r.unified.is_empty() {
            linux_resources["unified"] = serde_json::to_value(&r.unified)
                .map_err(|e| Error::invalid(format!("unified: {e}")))?;
        }
        if self.observe(&c).await.state == cri::ContainerState::ContainerRunning {
            let any = AnyValue {
                type_url: LINUX_RESOURCES_TYPE_URL.into(),
                value: serde_json::to_vec(&linux_resources)
                    .map_err(|e| Error::Internal(format!("encode resources: {e}")))?,
            };
            self.p()
                .tasks
                .update(NAMESPACE, &c.id, Some(any), Vec::new())
                .await
                .map_err(|e| {
                    e.context(&format!("failed to update resources of container {}", c.id))
                })?;
        }
        spec["linux"]["resources"] = linux_resources;
        let mut rec = c.clone();
        rec.spec = Some(AnyValue {
            type_url: SPEC_TYPE_URL.into(),
            value: serde_json::to_vec(&spec)
                .map_err(|e| Error::Internal(format!("encode spec: {e}")))?,
        });
        self.p()
            .containers
            .update(NAMESPACE, rec, vec!["spec".into()])
            .await?;
        Ok(())
    }

    /// ReopenContainerLog: the running container's log file opened again at its path
    /// (after the kubelet renamed it away), by the shim that writes it.
    pub async fn reopen_container_log(&self, id: &str) -> Result<()> {
        let c = self.find("container", id).await?;
        if self.observe(&c).await.state != cri::ContainerState::ContainerRunning {
            return Err(Error::precondition(format!(
                "container {} is not running",
                c.id
            )));
        }
        if !c.labels.contains_key(LOG_LABEL) {
            return Err(Error::precondition(format!(
                "container {} has no log path",
                c.id
            )));
        }
        self.p()
            .tasks
            .update(
                NAMESPACE,
                &c.id,
                None,
                [(REOPEN_LOG_ANNOTATION.to_string(), "1".to_string())],
            )
            .await
            .map_err(|e| e.context(&format!("failed to reopen the log of container {}", c.id)))
    }

    /// Where a container's task is (or was).
    async fn observe(&self, c: &Container) -> Observed {
        let label = |k: &str| c.labels.get(k).and_then(|v| v.parse::<i64>().ok());
        match self.p().tasks.state(NAMESPACE, &c.id, "").await {
            Ok(s) => {
                let state = match s.status {
                    ProcessStatus::Created => cri::ContainerState::ContainerCreated,
                    ProcessStatus::Running | ProcessStatus::Paused | ProcessStatus::Pausing => {
                        cri::ContainerState::ContainerRunning
                    }
                    ProcessStatus::Stopped => cri::ContainerState::ContainerExited,
                    ProcessStatus::Unknown => cri::ContainerState::ContainerUnknown,
                };
                Observed {
                    state,
                    pid: s.pid,
                    exit_code: i32::try_from(s.exit_status).unwrap_or(i32::MAX),
                    finished_at: s
                        .exited_at
                        .map(|t| t.seconds * 1_000_000_000 + i64::from(t.nanos))
                        .unwrap_or(0),
                }
            }
            // No task: never started, or its task is gone (kept exit, if any).
            Err(_) if label(STARTED_LABEL).is_some() => Observed {
                state: cri::ContainerState::ContainerExited,
                pid: 0,
                exit_code: label(EXIT_LABEL).map_or(255, |v| v as i32),
                finished_at: label(FINISHED_LABEL).unwrap_or(0),
            },
            Err(_) => Observed {
                state: cri::ContainerState::ContainerCreated,
                pid: 0,
                exit_code: 0,
                finished_at: 0,
            },
        }
    }

    /// ContainerStatus.
    pub async fn container_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<(cri::ContainerStatus, BTreeMap<String, String>)> {
        let c = self.find("container", id).await?;
        let config: cri::ContainerConfig = decode_config(&c);
        let o = self.observe(&c).await;
        // The image's id, and (as containerd's status gives it) its first repo digest as
        // the reference when it has one.
        let (image_id, image_ref) = match self.resolve_image(&c.image).await {
            Ok(r) => {
                let digest = Self::cri_image(&r).repo_digests.first().cloned();
                (r.id.clone(), digest.unwrap_or(r.id))
            }
            Err(_) => (String::new(), String::new()),
        };
        let exited = o.state == cri::ContainerState::ContainerExited;
        let reason = match (exited, o.exit_code) {
            (false, _) => "",
            (true, 0) => "Completed",
            (true, _) => "Error",
        };
        let status = cri::ContainerStatus {
            id: c.id.clone(),
            metadata: config.metadata.clone(),
            state: o.state as i32,
            created_at: c.created_at,
            started_at: c
                .labels
                .get(STARTED_LABEL)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            finished_at: if exited { o.finished_at } else { 0 },
            exit_code: if exited { o.exit_code } else { 0 },
            image: Some(cri::ImageSpec {
                image: c.labels.get(IMAGE_REF_LABEL).cloned().unwrap_or_default(),
                ..Default::default()
            }),
            image_ref,
            image_id,
            reason: reason.into(),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            mounts: config.mounts.clone(),
            log_path: c.labels.get(LOG_LABEL).cloned().unwrap_or_default(),
            ..Default::default()
        };
        let mut info = BTreeMap::new();
        if verbose {
            let spec: Value = c
                .spec
                .as_ref()
                .and_then(|s| serde_json::from_slice(&s.value).ok())
                .unwrap_or(Value::Null);
            let v = serde_json::json!({
                "sandboxID": c.labels.get(SANDBOX_LABEL),
                "pid": o.pid,
                "snapshotKey": c.snapshot_key,
                "snapshotter": c.snapshotter,
                "runtimeSpec": spec,
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok((status, info))
    }

    /// ListContainers.
    pub async fn list_containers(
        &self,
        filter: Option<cri::ContainerFilter>,
    ) -> Result<Vec<cri::Container>> {
        let f = filter.unwrap_or_default();
        let mut out = Vec::new();
        for c in self.records("container").await? {
            let sandbox = c.labels.get(SANDBOX_LABEL).cloned().unwrap_or_default();
            if (!f.id.is_empty() && !c.id.starts_with(&f.id))
                || (!f.pod_sandbox_id.is_empty() && !sandbox.starts_with(&f.pod_sandbox_id))
            {
                continue;
            }
            let config: cri::ContainerConfig = decode_config(&c);
            let o = self.observe(&c).await;
            if f.state.as_ref().is_some_and(|s| s.state != o.state as i32)
                || !selected(&config.labels, &f.label_selector)
            {
                continue;
            }
            let image_id = self
                .resolve_image(&c.image)
                .await
                .map(|r| r.id)
                .unwrap_or_default();
            out.push(cri::Container {
                id: c.id.clone(),
                pod_sandbox_id: sandbox,
                metadata: config.metadata.clone(),
                image: Some(cri::ImageSpec {
                    image: c.labels.get(IMAGE_REF_LABEL).cloned().unwrap_or_default(),
                    ..Default::default()
                }),
                image_ref: image_id.clone(),
                image_id,
                state: o.state as i32,
                created_at: c.created_at,
                labels: config.labels.clone(),
                annotations: config.annotations.clone(),
            });
        }
        Ok(out)
    }

    /// ExecSync: `cmd` run in the running container; its output and exit code. `timeout`
    /// seconds (0: none), after which the process is killed and the call fails with
    /// DeadlineExceeded.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: i64,
    ) -> Result<(Vec<u8>, Vec<u8>, i32)> {
        if cmd.is_empty() {
            return Err(Error::invalid("ExecSync: the command must not be empty"));
        }
        let c = self.find("container", id).await?;
        let id = c.id.clone();
        if self.observe(&c).await.state != cri::ContainerState::ContainerRunning {
            return Err(Error::precondition(format!(
                "container {id} is not running"
            )));
        }
        let process = exec_process(&c, &cmd, false)?;
        let exec_id = format!("exec-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        let dir = self.dir().join("exec").join(&exec_id);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Error::io("create exec directory", &dir, e))?;
        let result = self.exec_in(&id, &exec_id, &dir, process, timeout).await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        result
    }

    /// Creates and starts an exec of `process` (an OCI process) with `stdio`; nothing
    /// stays when it cannot start.
    pub(super) async fn start_exec(
        &self,
        id: &str,
        exec_id: &str,
        stdio: Stdio,
        process: &Value,
    ) -> Result<()> {
        let tasks = &self.p().tasks;
        let opts = ExecOptions {
            stdio,
            spec: Some(AnyValue {
                type_url: PROCESS_TYPE_URL.into(),
                value: serde_json::to_vec(process)
                    .map_err(|e| Error::Internal(format!("encode process: {e}")))?,
            }),
        };
        tasks.exec(NAMESPACE, id, exec_id, opts).await?;
        if let Err(e) = tasks.start(NAMESPACE, id, exec_id).await {
            let _ = tasks.delete_process(NAMESPACE, id, exec_id).await;
            return Err(e);
        }
        Ok(())
    }

    async fn exec_in(
        &self,
        id: &str,
        exec_id: &str,
        dir: &Path,
        process: Value,
        timeout: i64,
    ) -> Result<(Vec<u8>, Vec<u8>, i32)> {
        let tasks = &self.p().tasks;
        let (out, err) = (dir.join("stdout"), dir.join("stderr"));
        let stdio = Stdio {
            stdin: String::new(),
            stdout: format!("file://{}", out.display()),
            stderr: format!("file://{}", err.display()),
            terminal: false,
        };
        self.start_exec(id, exec_id, stdio, &process).await?;
        let waited = if timeout > 0 {
            tokio::time::timeout(
                Duration::from_secs(timeout.unsigned_abs()),
                tasks.wait(NAMESPACE, id, exec_id),
            )
            .await
            .ok()
        } else {
            Some(tasks.wait(NAMESPACE, id, exec_id).await)
        };
        let code = match waited {
            Some(Ok((code, _))) => code,
            Some(Err(e)) => {
                let _ = tasks.delete_process(NAMESPACE, id, exec_id).await;
                return Err(e);
            }
            None => {
                let _ = tasks.kill(NAMESPACE, id, exec_id, 9, false).await;
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    tasks.wait(NAMESPACE, id, exec_id),
                )
                .await;
                let _ = tasks.delete_process(NAMESPACE, id, exec_id).await;
                return Err(Error::DeadlineExceeded(format!(
                    "command {:?} in container {id}: timeout {timeout}s exceeded",
                    process["args"]
                )));
            }
        };
        let _ = tasks.delete_process(NAMESPACE, id, exec_id).await;
        let read = |p: PathBuf| {
            use std::io::Read as _;
            let mut buf = Vec::new();
            if let Ok(f) = std::fs::File::open(&p) {
                let _ = f.take(EXEC_OUTPUT_CAP).read_to_end(&mut buf);
            }
            buf
        };
        Ok((
            read(out),
            read(err),
            i32::try_from(code).unwrap_or(i32::MAX),
        ))
    }
}

/// The limits berth-oci's spec builder does not carry: cpusets, huge pages, cgroup v2
/// `unified` keys, swap, and the OOM score adjustment. A negative adjustment below the
/// daemon's own is clamped to it (this host cannot lower it without CAP_SYS_RESOURCE, as
/// containerd's `restrict_oom_score_adj`).
fn extra_resources(spec: &mut Value, r: &cri::LinuxContainerResources) {
    let res = &mut spec["linux"]["resources"];
    if !r.cpuset_cpus.is_empty() {
        res["cpu"]["cpus"] = r.cpuset_cpus.clone().into();
    }
    if !r.cpuset_mems.is_empty() {
        res["cpu"]["mems"] = r.cpuset_mems.clone().into();
    }
    if r.memory_swap_limit_in_bytes > 0 {
        res["memory"]["swap"] = r.memory_swap_limit_in_bytes.into();
    }
    if !r.hugepage_limits.is_empty() {
        res["hugepageLimits"] = r
            .hugepage_limits
            .iter()
            .map(|h| serde_json::json!({"pageSize": h.page_size, "limit": h.limit}))
            .collect();
    }
    if !r.unified.is_empty() {
        res["unified"] = serde_json::to_value(&r.unified).unwrap_or_default();
    }
    if r.oom_score_adj != 0 {
        let own = std::fs::read_to_string("/proc/self/oom_score_adj")
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(0);
        spec["process"]["oomScoreAdj"] = r.oom_score_adj.max(own).into();
    }
}

/// The OCI process of an exec of `cmd` in container `c`: its init's process (env, user,
/// working directory, capabilities) with these arguments.
pub(super) fn exec_process(c: &Container, cmd: &[String], tty: bool) -> Result<Value> {
    let spec: Value = c
        .spec
        .as_ref()
        .and_then(|s| serde_json::from_slice(&s.value).ok())
        .ok_or_else(|| Error::Internal(format!("container {} has no spec", c.id)))?;
    let mut process = spec["process"].clone();
    process["args"] = Value::from(cmd.to_vec());
    process["terminal"] = Value::Bool(tty);
    Ok(process)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_the_spec_builder_does_not_carry() {
        let mut spec = serde_json::json!({"linux": {"resources": {}}, "process": {}});
        let r = cri::LinuxContainerResources {
            cpuset_cpus: "0-1".into(),
            cpuset_mems: "0".into(),
            memory_swap_limit_in_bytes: 1 << 30,
            hugepage_limits: vec![cri::HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }],
            unified: [("memory.high".to_string(), "100M".to_string())].into(),
            oom_score_adj: 500,
            ..Default::default()
        };
        extra_resources(&mut spec, &r);
        let res = &spec["linux"]["resources"];
        assert_eq!(res["cpu"]["cpus"], "0-1");
        assert_eq!(res["cpu"]["mems"], "0");
        assert_eq!(res["memory"]["swap"], 1 << 30);
        assert_eq!(
            res["hugepageLimits"],
            serde_json::json!([{"pageSize": "2MB", "limit": 4 << 20}])
        );
        assert_eq!(res["unified"]["memory.high"], "100M");
        assert_eq!(spec["process"]["oomScoreAdj"], 500);
        // Below the daemon's own score it is clamped (this host cannot lower it).
        let own: i64 = std::fs::read_to_string("/proc/self/oom_score_adj")
            .expect("oom_score_adj")
            .trim()
            .parse()
            .expect("number");
        let mut spec = serde_json::json!({"linux": {"resources": {}}, "process": {}});
        let low = cri::LinuxContainerResources {
            oom_score_adj: -998,
            ..Default::default()
        };
        extra_resources(&mut spec, &low);
        assert_eq!(spec["process"]["oomScoreAdj"], (-998i64).max(own));
    }
}

/// The CRI's words for a state, in messages.
fn state_word(s: cri::ContainerState) -> &'static str {
    match s {
        cri::ContainerState::ContainerCreated => "CONTAINER_CREATED",
        cri::ContainerState::ContainerRunning => "CONTAINER_RUNNING",
        cri::ContainerState::ContainerExited => "CONTAINER_EXITED",
        cri::ContainerState::ContainerUnknown => "CONTAINER_UNKNOWN",
    }
}

/// The container's log file: the pod's log directory joined with its log path.
fn log_path(pod: &cri::PodSandboxConfig, c: &cri::ContainerConfig) -> Option<PathBuf> {
    if c.log_path.is_empty() {
        return None;
    }
    let p = Path::new(&c.log_path);
    if p.is_absolute() || pod.log_directory.is_empty() {
        return Some(p.to_path_buf());
    }
    Some(Path::new(&pod.log_directory).join(p))
}

/// The container's own namespace options, when it gives any.
fn namespace_options_of(sc: &cri::LinuxContainerSecurityContext) -> Option<cri::NamespaceOption> {
    sc.namespace_options.clone()
}

/// The image's /etc/passwd and /etc/group, read when a user or group is given by name.
#[derive(Debug, Default)]
pub(super) struct Accounts {
    passwd: String,
    group: String,
}

impl Accounts {
    /// (uid, gid) of user `name`.
    fn user(&self, name: &str) -> Option<(u32, u32)> {
        self.passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() > 3 && f[0] == name {
                Some((f[2].parse().ok()?, f[3].parse().ok()?))
            } else {
                None
            }
        })
    }

    fn group(&self, name: &str) -> Option<u32> {
        self.group.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() > 2 && f[0] == name {
                f[2].parse().ok()
            } else {
                None
            }
        })
    }
}

/// Whether `user` (`user[:group]`) names someone rather than numbering them.
fn has_names(user: &str) -> bool {
    user.split(':')
        .any(|p| !p.is_empty() && p.parse::<u32>().is_err())
}

impl Cri {
    /// The image's accounts, read from the container's new snapshot when names need them.
    async fn accounts_for(
        &self,
        config: &cri::ContainerConfig,
        image: &image::Resolved,
        mounts: Vec<berth_snapshotter::Mount>,
    ) -> Result<Accounts> {
        let sc = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.clone())
            .unwrap_or_default();
        let image_user = image.config["config"]["User"].as_str().unwrap_or_default();
        let needed =
            !sc.run_as_username.is_empty() || (sc.run_as_user.is_none() && has_names(image_user));
        if !needed {
            return Ok(Accounts::default());
        }
        tokio::task::spawn_blocking(move || {
            berth_snapshotter::mount::with_temp_mount(&mounts, |root| {
                let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_default();
                Ok(Accounts {
                    passwd: read("etc/passwd"),
                    group: read("etc/group"),
                })
            })
            .map_err(Error::from)
        })
        .await
        .map_err(|e| Error::Internal(format!("read the image's accounts: {e}")))?
    }
}

/// The process's credentials: the security context's (a uid, or a user name of the
/// image's), else the image's USER (numbers or names).
fn user_of(
    sc: &cri::LinuxContainerSecurityContext,
    image_user: &str,
    accounts: &Accounts,
) -> Result<oci::User> {
    let (image_uid, image_gid) = match image_user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (image_user, None),
    };
    let by_name = |name: &str| {
        accounts.user(name).ok_or_else(|| {
            Error::invalid(format!(
                "failed to find user {name:?} in the image's /etc/passwd"
            ))
        })
    };
    let (uid, mut gid) = match (&sc.run_as_user, sc.run_as_username.as_str()) {
        (Some(u), _) => {
            let uid = u32::try_from(u.value)
                .map_err(|_| Error::invalid(format!("run_as_user {} is not a uid", u.value)))?;
            (uid, 0)
        }
        (None, name) if !name.is_empty() => by_name(name)?,
        (None, _) if image_uid.is_empty() => (0, 0),
        (None, _) => match image_uid.parse::<u32>() {
            Ok(uid) => (uid, 0),
            Err(_) => by_name(image_uid)?,
        },
    };
    let from_image = sc.run_as_user.is_none() && sc.run_as_username.is_empty();
    if let Some(g) = image_gid.filter(|_| from_image) {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => accounts.group(g).ok_or_else(|| {
                Error::invalid(format!(
                    "failed to find group {g:?} in the image's /etc/group"
                ))
            })?,
        };
    }
    if let Some(g) = &sc.run_as_group {
        gid = u32::try_from(g.value)
            .map_err(|_| Error::invalid(format!("run_as_group {} is not a gid", g.value)))?;
    }
    Ok(oci::User {
        uid,
        gid,
        additional_gids: sc
            .supplemental_groups
            .iter()
            .filter_map(|g| u32::try_from(*g).ok())
            .collect(),
    })
}

/// A host device node made in the container (and allowed by its device cgroup).
fn host_device(d: &cri::Device) -> Result<oci::Device> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(&d.host_path)
        .map_err(|e| Error::invalid(format!("device {:?}: {e}", d.host_path)))?;
    let kind = if meta.file_type().is_char_device() {
        oci::LinuxDeviceType::C
    } else if meta.file_type().is_block_device() {
        oci::LinuxDeviceType::B
    } else {
        return Err(Error::invalid(format!(
            "device {:?} is not a device node",
            d.host_path
        )));
    };
    let rdev = meta.rdev();
    let permissions = if d.permissions.is_empty() {
        "rwm".to_string()
    } else if d.permissions.chars().all(|c| "rwm".contains(c)) {
        d.permissions.clone()
    } else {
        return Err(Error::invalid(format!(
            "device {:?}: permissions {:?} are not a subset of rwm",
            d.host_path, d.permissions
        )));
    };
    Ok(oci::Device {
        path: if d.container_path.is_empty() {
            d.host_path.clone()
        } else {
            d.container_path.clone()
        },
        kind,
        major: i64::try_from(nix::sys::stat::major(rdev)).unwrap_or(0),
        minor: i64::try_from(nix::sys::stat::minor(rdev)).unwrap_or(0),
        file_mode: Some(meta.mode() & 0o777),
        uid: Some(0),
        gid: Some(0),
        access: permissions,
    })
}

/// A CRI mount as a bind mount with its propagation.
fn cri_mount(m: &cri::Mount) -> Result<oci::Mount> {
    if m.container_path.is_empty() || m.host_path.is_empty() {
        return Err(Error::invalid(format!(
            "mount {:?} -> {:?}: both paths are needed",
            m.host_path, m.container_path
        )));
    }
    if !Path::new(&m.host_path).exists() {
        return Err(Error::invalid(format!(
            "failed to mount {:?}: the host path does not exist",
            m.host_path
        )));
    }
    let propagation = match cri::MountPropagation::try_from(m.propagation) {
        Ok(cri::MountPropagation::PropagationBidirectional) => "rshared",
        Ok(cri::MountPropagation::PropagationHostToContainer) => "rslave",
        _ => "rprivate",
    };
    Ok(oci::Mount {
        destination: m.container_path.clone(),
        kind: "bind".into(),
        source: m.host_path.clone(),
        options: vec![
            "rbind".into(),
            propagation.into(),
            if m.readonly { "ro" } else { "rw" }.into(),
        ],
    })
}
