//! The shim v2 binary contract: `start` (spawn the long-lived shim detached, print its
//! ttrpc address), `delete` (clean up after a shim that is gone), and serving.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, DeleteResponse, Error, ExitSignal, Flags, Shim, StartOpts};
use containerd_shim_protos::protobuf::MessageField;
use sha2::{Digest, Sha256};

use crate::events::{EventQueue, TtrpcSink};
use crate::process::SavedExit;
use crate::reaper::Reaper;
use crate::runc::{Runc, RuntimeConfig};
use crate::service::TaskService;

/// The runtime name containerd knows this shim by.
pub const RUNTIME_NAME: &str = "io.containerd.berth.v2";

/// Annotations that put several containers in one shim (a pod's sandbox and its containers).
const GROUP_ANNOTATIONS: [&str; 2] = [
    "io.kubernetes.cri.sandbox-id",
    "io.containerd.runc.v2.group",
];

/// Longest unix socket path the kernel takes.
const MAX_SOCKET_PATH: usize = 107;

pub struct BerthShim {
    exit: Arc<ExitSignal>,
    namespace: String,
    id: String,
    bundle: PathBuf,
    events: OnceLock<EventQueue>,
}

/// How long a shim that was told to shut down still tries to hand its last events over.
const DRAIN_AT_EXIT: Duration = Duration::from_secs(3);

/// The shim's configuration for the shim crate: we reap and set the subreaper ourselves.
pub fn config() -> Config {
    Config {
        no_reaper: true,
        no_sub_reaper: true,
        // Ours (crate::logger) never blocks on a log FIFO nobody reads.
        no_setup_logger: true,
        ..Config::default()
    }
}

fn other(e: impl std::fmt::Display) -> Error {
    Error::Other(e.to_string())
}

/// The `ShimCgroup` of the runc options the daemon wrote to `start`'s stdin (a protobuf
/// `Any`, as containerd 1.x writes it). Anything else there — nothing, containerd 2.x's
/// bootstrap parameters, a terminal — names no cgroup.
fn shim_cgroup() -> Option<String> {
    use containerd_shim_protos::protobuf::Message;
    use containerd_shim_protos::protobuf::well_known_types::any::Any;
    use containerd_shim_protos::shim::oci::Options;
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        return None;
    }
    let mut data = Vec::new();
    std::io::stdin().read_to_end(&mut data).ok()?;
    let any = Any::parse_from_bytes(&data).ok()?;
    if !any.type_url.ends_with("containerd.runc.v1.Options") {
        return None;
    }
    let opts = Options::parse_from_bytes(&any.value).ok()?;
    Some(opts.shim_cgroup).filter(|c| !c.is_empty())
}

/// The group this container's shim serves: the sandbox's id when an annotation names
/// one, else the container's own id.
fn grouping(bundle: &Path, id: &str) -> String {
    let spec = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok());
    spec.as_ref()
        .and_then(|s| s.get("annotations"))
        .and_then(|a| GROUP_ANNOTATIONS.iter().find_map(|k| a.get(*k)?.as_str()))
        .filter(|g| !g.is_empty())
        .unwrap_or(id)
        .to_string()
}

/// `unix://<dir of the daemon's socket>/s/<sha256(address/namespace/group)>`, the layout
/// containerd's shims use; under /run/berth/s when that path would be too long.
pub fn socket_address(daemon_address: &str, namespace: &str, group: &str) -> String {
    let key = Path::new(daemon_address).join(namespace).join(group);
    let hash = format!("{:x}", Sha256::digest(key.display().to_string().as_bytes()));
    let dir = Path::new(daemon_address)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("/run/berth"));
    let path = dir.join("s").join(&hash);
    if path.as_os_str().len() <= MAX_SOCKET_PATH {
        format!("unix://{}", path.display())
    } else {
        format!("unix:///run/berth/s/{hash}")
    }
}

#[async_trait]
impl Shim for BerthShim {
    type T = TaskService;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        if args.action.is_empty() {
            crate::logger::init(args.debug);
            // Serving: leave the caller's session, so its end does not reach us, and
            // adopt the container processes runc leaves behind.
            let _ = nix::unistd::setsid();
            if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
                log::error!("cannot become a child subreaper: {e}");
            }
        }
        let bundle = if args.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            // containerd starts a shim in its bundle; berthd names it instead (see
            // `start_shim`), and the shim moves there itself: runc runs there, and the
            // shim library reads and writes `address` there.
            if let Err(e) = std::env::set_current_dir(&args.bundle) {
                log::warn!("cannot work in bundle {}: {e}", args.bundle);
            }
            PathBuf::from(&args.bundle)
        };
        BerthShim {
            exit: Arc::new(ExitSignal::default()),
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            bundle,
            events: OnceLock::new(),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> Result<String, Error> {
        let group = grouping(&self.bundle, &opts.id);
        let address = socket_address(&opts.address, &opts.namespace, &group);
        // The sockets' directory is for the daemon alone (a shim answers whoever connects).
        if let Some(dir) = Path::new(address.trim_start_matches("unix://")).parent()
            && !dir.exists()
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(other)?;
        }
        let exe = std::env::current_exe().map_err(other)?;
        let mut cmd = Command::new(exe);
        cmd.args([
            "-namespace",
            &opts.namespace,
            "-id",
            &opts.id,
            "-address",
            &opts.address,
        ])
        .args(["-socket", &address])
        // Named, not set as its working directory: with a working directory to set, Rust's
        // standard library spawns through fork instead of posix_spawn (a vfork) when the C
        // library is linked statically, as in the deployed shim.
        .arg("-bundle")
        .arg(&self.bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        if opts.debug {
            cmd.arg("-debug");
        }
        let mut child = cmd.spawn().map_err(other)?;
        if let Some(cgroup) = shim_cgroup() {
            // Before it serves: every process the shim starts lands there too.
            if let Err(e) = crate::cgroups::join(child.id(), &cgroup) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(other(format!("failed to join cgroup {cgroup}: {e}")));
            }
        }
        // The shim closes its stdout once it serves (or found its group's shim serving).
        let mut out = Vec::new();
        if let Some(mut stdout) = child.stdout.take() {
            let _ = stdout.read_to_end(&mut out);
        }
        if let Ok(Some(status)) = child.try_wait()
            && !status.success()
        {
            return Err(other(format!(
                "shim for {} exited at start: {status}",
                opts.id
            )));
        }
        crate::runc::write_atomic(&self.bundle.join("address"), address.as_bytes())
            .map_err(other)?;
        Ok(address)
    }

    async fn delete_shim(&mut self) -> Result<DeleteResponse, Error> {
        let reaper = Reaper::start().map_err(other)?;
        let config = RuntimeConfig::load(&self.bundle)
            .unwrap_or_else(|| RuntimeConfig::new("", "", false, &self.namespace));
        let runc = Runc::new(config, &self.bundle, reaper);
        if let Err(e) = runc.delete(&self.id, true).await {
            log::warn!("delete {}: {e}", self.id);
        }
        let rootfs = self.bundle.join("rootfs");
        if rootfs.exists() {
            crate::service::unmount(&rootfs).await;
        }
        // The shim saved the init's real exit when it saw it; without that, the container
        // was killed along with its shim (runc's SIGKILL: 137).
        let exit = SavedExit::load(&self.bundle).unwrap_or(SavedExit {
            pid: 0,
            status: 137,
            exited_at: SystemTime::now(),
        });
        Ok(DeleteResponse {
            pid: exit.pid,
            exit_status: exit.status,
            exited_at: MessageField::some(exit.exited_at.into()),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
        if let Some(events) = self.events.get()
            && !events.drained(DRAIN_AT_EXIT).await
        {
            log::warn!(
                "shim of {} exits with {} events the daemon did not take",
                self.id,
                events.pending()
            );
        }
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        // The shim crate's publisher drops events after a few failures; ours keeps them
        // until the daemon takes them.
        let events = EventQueue::start(&self.namespace, TtrpcSink::new(&publisher.address));
        drop(publisher);
        let _ = self.events.set(events.clone());
        match TaskService::new(&self.namespace, events, self.exit.clone()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("start the task service: {e}");
                std::process::exit(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_next_to_daemon() {
        let a = socket_address("/run/containerd/containerd.sock", "default", "c1");
        assert!(a.starts_with("unix:///run/containerd/s/"), "{a}");
        assert_eq!(a.len(), "unix:///run/containerd/s/".len() + 64);
        let long = format!("/{}/d.sock", "x".repeat(80));
        assert!(socket_address(&long, "default", "c1").starts_with("unix:///run/berth/s/"));
    }

    #[test]
    fn grouping_from_annotations() {
        let dir = std::env::temp_dir().join(format!("berth-shim-group-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        assert_eq!(grouping(&dir, "c1"), "c1");
        std::fs::write(
            dir.join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1"}}"#,
        )
        .expect("write");
        assert_eq!(grouping(&dir, "c1"), "pod1");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
