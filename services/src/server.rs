//! Start-up, serving and shutdown of berthd: the lock on the root, the metadata store, the
//! gRPC socket and the ttrpc socket next to it.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_proto::grpc::health::v1::health_server::HealthServer;
use tokio::net::UnixListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;

use crate::api::{self, Services};
use crate::collector::Collector;
use crate::config::Config;
use crate::content::ContentStore;
use crate::error::{Error, Result};
use crate::events::Exchange;
use crate::images::Images;
use crate::leases::Leases;
use crate::metadata::Store;
use crate::network::{NetworkDirs, Networks};
use crate::snapshots::{Snapshots, Snapshotters};

pub use crate::api::catalog::MAX_MESSAGE;

/// Streams a client may reset before they are accepted, at once, on one connection. The
/// socket is the daemon's own (root, or the group it is given): this bounds memory, it is
/// no defence against remote clients.
const MAX_PENDING_RESETS: usize = 1 << 20;
/// How long in-flight calls get to finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(10);

/// Holds `<root>/berthd.lock` for the daemon's lifetime: one daemon per root.
pub struct RootLock {
    _file: File,
    path: PathBuf,
}

impl RootLock {
    pub fn acquire(root: &Path) -> Result<RootLock> {
        let path = root.join("berthd.lock");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open lock file", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                return Err(Error::Unavailable(format!(
                    "another berthd{} is already running with root {} (lock {} is held)",
                    if holder.is_empty() {
                        String::new()
                    } else {
                        format!(" (pid {holder})")
                    },
                    root.display(),
                    path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
        }
        file.set_len(0)
            .map_err(|e| Error::io("truncate lock file", &path, e))?;
        writeln!(file, "{}", std::process::id())
            .map_err(|e| Error::io("write lock file", &path, e))?;
        Ok(RootLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Makes `path` (and missing parents) a directory with exactly `mode`, changing the mode
/// of one that exists already (a root or state left by an older berthd).
fn ensure_dir_mode(path: &Path, mode: u32) -> Result<()> {
    create_dir(path, mode)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("set directory mode", path, e))
}

/// Keeps what belongs to containers out of other users' reach (the class of containerd's
/// CVE-2021-41103): root and state are only traversable (0711, for the sockets); every
/// directory below them that leads to container data, images, snapshots, bundles, runc
/// state, shim sockets or archives in transfer is 0700. (The metadata database, whose specs
/// hold secrets, is made 0600 once opened.)
fn secure_layout(config: &Config) -> Result<()> {
    ensure_dir_mode(&config.root, 0o711)?;
    ensure_dir_mode(&config.state, 0o711)?;
    for dir in [
        config.root.join("content"),
        config.root.join("snapshots"),
        config.root.join("runtime"),
        config.state.join("tasks"),
        config.state.join("runc"),
        // Archives being imported or exported (private images) pass through here.
        config.state.join("transfer"),
    ] {
        ensure_dir_mode(&dir, 0o700)?;
    }
    // Shims bind their sockets under `s/` next to the daemon's socket.
    if let Some(dir) = config.grpc.address.parent() {
        create_dir(dir, 0o711)?;
        ensure_dir_mode(&dir.join("s"), 0o700)?;
    }
    Ok(())
}

fn create_dir(path: &Path, mode: u32) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|e| Error::io("create directory", path, e))
}

/// Binds a unix socket: creates its directory, replaces a stale socket file, refuses one
/// another process still serves, and sets mode 0660 and the configured owner.
pub async fn bind_socket(path: &Path, uid: u32, gid: u32) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        create_dir(dir, 0o711)?;
    }
    match tokio::fs::symlink_metadata(path).await {
        Ok(_) => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                return Err(Error::Unavailable(format!(
                    "socket {} is in use by another process",
                    path.display()
                )));
            }
            tokio::fs::remove_file(path)
                .await
                .map_err(|e| Error::io("remove stale socket", path, e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("stat socket", path, e)),
    }
    let listener = UnixListener::bind(path).map_err(|e| Error::io("bind socket", path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| Error::io("chmod socket", path, e))?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| Error::io("chown socket", path, e))?;
    Ok(listener)
}

/// A daemon that has taken its lock and opened its store, ready to serve.
pub struct Daemon {
    pub config: Config,
    pub services: Services,
    /// The collector, for its first collection once the previous run's tasks are restored.
    gc: Collector,
    lock: RootLock,
}

impl Daemon {
    /// Creates the directories, takes the root lock, opens the metadata store and builds
    /// the cores. The tasks a previous run left are restored by [`Daemon::serve`].
    pub async fn open(config: Config) -> Result<Daemon> {
        create_dir(&config.root, 0o711)?;
        create_dir(&config.state, 0o711)?;
        let lock = RootLock::acquire(&config.root)?;
        secure_layout(&config)?;
        let store = open_store(&config.root).await?;
        let server_uuid = server_uuid(&store).await?;
        let (services, gc) = build_services(&config, store, server_uuid).await?;
        // Pulls and imports do not outlive the process: what a killed run's left is kept
        // for a resumed pull as long as a failed pull's, then collected.
        let keep = config.content.ingest_expiry()?;
        for (namespace, id) in services.leases.expire_leftovers(keep).await? {
            tracing::info!(%namespace, lease = %id, keep = %humantime::format_duration(keep), "lease of a pull or import the previous run left: expires soon");
        }
        Ok(Daemon {
            config,
            services,
            gc,
            lock,
        })
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight calls finish
    /// (up to a bound), ends event subscriptions and removes the sockets.
    ///
    /// The gRPC socket is served at once; the calls that depend on the previous run's
    /// tasks are held (see [`crate::gate`]) while they are restored. The ttrpc socket, where
    /// shims forward the exits they kept while berthd was down, opens after the restore.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        // Listening from now on (a signal during the restore stops the daemon after it).
        let shutdown = tokio::spawn(shutdown);
        let grpc_path = self.config.grpc.address.clone();
        let ttrpc_path = self.config.ttrpc_address();
        let (uid, gid) = (self.config.grpc.uid, self.config.grpc.gid);
        let grpc_listener = bind_socket(&grpc_path, uid, gid).await?;
        // Bound now, accepted from after the restore: a shim's connection waits meanwhile.
        let ttrpc_listener = bind_socket(&ttrpc_path, uid, gid).await?;

        let s = self.services.clone();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (gate, opener) = crate::gate::Gate::closed(api::catalog::HELD_UNTIL_RESTORED);
        let mut grpc = self.spawn_grpc(grpc_listener, gate, &stop_rx);
        tracing::info!(
            address = %grpc_path.display(),
            root = %self.config.root.display(),
            state = %self.config.state.display(),
            lock = %self.lock.path().display(),
            "berthd is serving; the tasks of the previous run are being restored"
        );
        recover(&s, &self.gc).await;
        let background = self.spawn_background(&stop_rx);
        let mut ttrpc_server = berth_proto::ttrpc::ttrpc::r#async::Server::new()
            .add_listener(ttrpc_listener.into())
            .register_service(api::events::ttrpc_services(s.exchange.clone()));
        if let Err(e) = ttrpc_server.start().await {
            let _ = stop_tx.send(true);
            grpc.abort();
            remove_socket(&grpc_path);
            remove_socket(&ttrpc_path);
            return Err(Error::Internal(format!(
                "start ttrpc server on {}: {e}",
                ttrpc_path.display()
            )));
        }
        opener.open();
        tracing::info!(ttrpc = %ttrpc_path.display(), "tasks restored; every call is served");

        let early = tokio::select! {
            _ = shutdown => None,
            r = &mut grpc => Some(r),
        };
        let _ = stop_tx.send(true);
        let result = match early {
            Some(r) => {
                let _ = ttrpc_server.shutdown().await;
                Err(match r {
                    Ok(Ok(())) => Error::Internal("gRPC server stopped unexpectedly".into()),
                    Ok(Err(e)) => Error::Internal(format!("gRPC server: {e}")),
                    Err(e) => Error::Internal(format!("gRPC server task: {e}")),
                })
            }
            None => {
                tracing::info!("shutting down: no new connections, finishing calls in flight");
                s.exchange.close();
                drain(grpc).await;
                if let Err(e) = ttrpc_server.shutdown().await {
                    tracing::warn!(error = %e, "ttrpc shutdown");
                }
                for task in background {
                    let _ = task.await;
                }
                Ok(())
            }
        };
        remove_socket(&grpc_path);
        remove_socket(&ttrpc_path);
        if result.is_ok() {
            tracing::info!("berthd stopped");
        }
        result
    }

    /// The daemon's own work beside serving, until `stop`: lease expiry, giving memory
    /// back and removing auto-remove
    /// containers (subscribed before the ttrpc server takes the exits shims kept while
    /// berthd was down).
    fn spawn_background(
        &self,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let s = &self.services;
        let expiry = tokio::spawn(s.leases.clone().run_expiry(stop.clone()));
        let give_back = tokio::spawn(crate::memory::run(stop.clone()));
        let autoremove = crate::autoremove::AutoRemover {
            exchange: s.exchange.clone(),
            tasks: s.tasks.clone(),
            containers: s.containers.clone(),
            volumes: Some(s.volumes.clone()),
            runtime_root: self.config.root.join("runtime"),
        }
        .spawn(stop.clone());
        // Restart policies: exits from now on, and what the previous run left stopped.
        let supervisor = s.supervisor.clone().spawn(stop.clone());
        vec![expiry, give_back, autoremove, supervisor]
    }

    /// Starts the gRPC server on `listener`: the service catalog (which also fills the
    /// Introspection plugin list) and Health, behind `gate`, until `stop`.
    fn spawn_grpc(
        &self,
        listener: UnixListener,
        gate: crate::gate::Gate,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<std::result::Result<(), tonic::transport::Error>> {
        let s = &self.services;
        let catalog = crate::api::catalog::containerd_services(s);
        let _ = s.plugins.set(crate::plugins::daemon_plugins(
            &self.config.root,
            &self.config.root.join("runtime"),
            s.tasks.bundles_dir(),
            s.snapshotters.names(),
            catalog.plugins,
        ));
        let health = api::health::HealthApi::new(
            stop.clone(),
            catalog.names.iter().map(|s| s.to_string()).collect(),
        );
        let mut routes = catalog.routes;
        routes.add_service(HealthServer::new(health));
        let router = tonic::transport::Server::builder()
            // Clients that open many short streams and cancel some before they are taken
            // (ctr pulling thousands of layers) are served as grpc-go serves them: the
            // HTTP/2 stack's default of 20 such streams would close the connection.
            .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_RESETS))
            .layer(gate)
            .add_routes(routes.routes());
        // gRPC C-core clients send the socket path as :authority: repaired per connection.
        let incoming = UnixListenerStream::new(listener)
            .map(|conn| conn.map(crate::authority::AuthorityFix::new));
        let mut stop = stop.clone();
        tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|v| *v).await;
        }))
    }
}

/// Waits for the gRPC server to finish the calls in flight, for at most [`DRAIN`].
async fn drain(
    mut grpc: tokio::task::JoinHandle<std::result::Result<(), tonic::transport::Error>>,
) {
    match tokio::time::timeout(DRAIN, &mut grpc).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "gRPC server ended with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "gRPC server task failed"),
        Err(_) => {
            tracing::warn!(
                seconds = DRAIN.as_secs(),
                "calls still running after the drain period; exiting"
            );
            grpc.abort();
        }
    }
}

/// Opens the metadata store `<root>/meta.redb`, readable by root only.
async fn open_store(root: &Path) -> Result<Store> {
    let db = root.join("meta.redb");
    let path = db.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&path))
        .await
        .map_err(|e| Error::Internal(format!("open metadata: {e}")))??;
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io("set file mode", &db, e))?;
    Ok(store)
}

/// The daemon's UUID (Introspection's), made on the first start and kept in the store.
async fn server_uuid(store: &Store) -> Result<String> {
    let uuid_store = store.clone();
    let uuid = tokio::task::spawn_blocking(move || {
        uuid_store.meta_get_or_init("server.uuid", || {
            uuid::Uuid::new_v4().to_string().into_bytes()
        })
    })
    .await
    .map_err(|e| Error::Internal(format!("read server uuid: {e}")))??;
    String::from_utf8(uuid).map_err(|e| Error::Corrupt {
        what: "meta",
        key: "server.uuid".into(),
        message: e.to_string(),
    })
}

/// Opens the configured snapshotters (on the blocking pool: they open directories).
async fn open_snapshotters(config: &Config, store: &Store) -> Result<Snapshotters> {
    let (store, root) = (store.clone(), config.root.clone());
    let default = config.default_snapshotter.clone();
    tokio::task::spawn_blocking(move || Snapshotters::open(&root, &store, &default))
        .await
        .map_err(|e| Error::Internal(format!("open snapshotters: {e}")))
}

/// The cores, wired to each other, the event exchange and the garbage collector (returned
/// too, for its first collection after [`recover`]). Nothing of a previous run's tasks is
/// taken up yet.
async fn build_services(
    config: &Config,
    store: Store,
    server_uuid: String,
) -> Result<(Services, Collector)> {
    let exchange = Exchange::new();
    // The domains get the collector's handle first; it runs once what it sweeps is open.
    let (gc, gc_requests) = crate::collector::channel();
    let expiry = config.content.ingest_expiry()?;
    let content = ContentStore::open(&config.root, store.clone(), expiry, exchange.clone(), &gc)?;
    let images = Images::new(store.clone(), exchange.clone(), gc.clone());
    let leases = Leases::new(store.clone(), gc.clone());
    let staged = crate::staged::Staged::open(&config.root.join("staged"), content.clone());
    let differ = crate::diff::Differ::new(content.clone(), leases.clone()).with_staged(staged);
    let snapshotters = open_snapshotters(config, &store).await?;
    crate::gc::spawn(
        gc_requests,
        store.clone(),
        content.clone(),
        snapshotters.clone(),
    );
    let containers =
        crate::containers::Containers::new(store.clone(), exchange.clone(), gc.clone());
    let runtimes = crate::runtime::RuntimeManager::new(
        config.runtimes.clone(),
        &config.default_runtime,
        &config.grpc.address,
        &config.ttrpc_address(),
    );
    let networks = open_networks(config, &store)?;
    let volumes =
        crate::volumes::Volumes::open(store.clone(), exchange.clone(), config.root.join("volumes"))
            .await?;
    let tasks = crate::tasks::Tasks::new(
        runtimes,
        containers.clone(),
        snapshotters.clone(),
        &config.state,
        exchange.clone(),
        networks.clone(),
    )
    .with_volumes(volumes.clone());
    let snapshots = Snapshots::daemon(
        snapshotters.clone(),
        store.clone(),
        leases.clone(),
        exchange.clone(),
        gc.clone(),
    );
    let transfers = crate::transfer::Transfers {
        content: content.clone(),
        images: images.clone(),
        leases: leases.clone(),
        snapshotters: snapshotters.clone(),
        archives: crate::archive::Archives::new(content.clone(), images.clone()),
        registry_hosts: crate::registry::Hosts {
            dir: config.registry.config_path.clone(),
            mirrors: config.registry.mirrors.clone(),
            insecure: config.registry.insecure_registries.clone(),
        },
        state: config.state.clone(),
    };
    let cri = if config.cri.enable {
        let cri = open_cri(
            config,
            &leases,
            &containers,
            &images,
            &content,
            &snapshots,
            &tasks,
            &transfers,
        )
        .await?;
        if let Err(e) = cri.start_streaming().await {
            tracing::warn!(error = %e, "no CRI streaming server: Exec and PortForward will fail");
        }
        Some(cri)
    } else {
        None
    };
    let namespaces = crate::namespaces::Namespaces::new(store.clone(), exchange.clone());
    let supervisor = crate::supervisor::Supervisor::new(
        store.clone(),
        exchange.clone(),
        namespaces.clone(),
        containers.clone(),
        tasks.clone(),
    );
    let services = Services {
        namespaces,
        supervisor,
        exchange,
        containers,
        content,
        differ,
        images,
        streams: crate::streams::Streams::default(),
        transfers,
        leases,
        plugins: Arc::new(std::sync::OnceLock::new()),
        server_uuid,
        snapshotters,
        snapshots,
        networks,
        store,
        tasks,
        volumes,
        cri,
    };
    Ok((services, gc))
}

/// What a previous run left, taken up again: its tasks reconnected to their shims or
/// cleaned up after, the networks of the tasks that are gone taken down, the name servers
/// of those that live on started, the pods' containers watched again. Then a collection,
/// for whatever a crash left unreferenced.
async fn recover(s: &Services, gc: &Collector) {
    s.tasks.restore().await;
    let tasks = &s.tasks;
    let live = |ns: &str, id: &str| tasks.get(ns, id).is_ok();
    match s.networks.sweep(live).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            attachments = n,
            "took down the networks of tasks that are gone"
        ),
        Err(e) => tracing::warn!(error = %e, "network sweep at start-up"),
    }
    // The containers that kept running on user-defined networks still ask their names.
    if let Err(e) = s.networks.serve_all_names().await {
        tracing::warn!(error = %e, "name servers at start-up");
    }
    if let Some(cri) = &s.cri {
        let watching = cri.clone();
        tokio::spawn(async move { watching.watch_all().await });
    }
    gc.schedule();
}

/// The pods' pause program, built with berthd (see build.rs).
const PAUSE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/berth-pause"));

/// The CRI domain over the cores, its pause written to `<state>/cri/pause` (each start:
/// the state directory does not outlive a reboot, and a new berthd may bring a new pause).
#[allow(clippy::too_many_arguments)]
async fn open_cri(
    config: &Config,
    leases: &Leases,
    containers: &crate::containers::Containers,
    images: &Images,
    content: &ContentStore,
    snapshots: &Snapshots,
    tasks: &crate::tasks::Tasks,
    transfers: &crate::transfer::Transfers,
) -> Result<crate::cri::Cri> {
    let dir = config.state.join("cri");
    let pause = dir.join("pause");
    {
        let (dir, pause) = (dir.clone(), pause.clone());
        tokio::task::spawn_blocking(move || -> Result<()> {
            use std::os::unix::fs::PermissionsExt;
            ensure_dir_mode(&dir, 0o711)?;
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt;
            let tmp = dir.join(".pause.tmp");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o755)
                .open(&tmp)
                .map_err(|e| Error::io("create", &tmp, e))?;
            f.write_all(PAUSE)
                .map_err(|e| Error::io("write", &tmp, e))?;
            f.set_permissions(std::fs::Permissions::from_mode(0o755))
                .map_err(|e| Error::io("chmod", &tmp, e))?;
            f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
            std::fs::rename(&tmp, &pause).map_err(|e| Error::io("rename", &pause, e))
        })
        .await
        .map_err(|e| Error::Internal(format!("write the pause program: {e}")))??;
    }
    let snapshots_root = config
        .root
        .join("snapshots")
        .join(&config.default_snapshotter);
    let cri = &config.cri;
    Ok(crate::cri::Cri::new(crate::cri::CriParts {
        config: cri.clone(),
        containers: containers.clone(),
        images: images.clone(),
        content: content.clone(),
        snapshots: snapshots.clone(),
        leases: leases.clone(),
        tasks: tasks.clone(),
        transfers: transfers.clone(),
        cni_bin_dirs: if cri.cni_bin_dirs.is_empty() {
            config.network.cni_bin_dirs.clone()
        } else {
            cri.cni_bin_dirs.clone()
        },
        state: config.state.clone(),
        pause,
        default_runtime: if cri.default_runtime.is_empty() {
            config.default_runtime.clone()
        } else {
            cri.default_runtime.clone()
        },
        snapshotter: config.default_snapshotter.clone(),
        snapshots_root: if snapshots_root.exists() {
            snapshots_root
        } else {
            config.root.join("snapshots")
        },
    }))
}

/// The network domain: CNI plugins from the config, namespaces and address leases under the
/// state directory (they end with a reboot, as the containers do).
fn open_networks(config: &Config, store: &Store) -> Result<Networks> {
    let default = crate::network::default_bridge(&config.network)?;
    tracing::debug!(bridge = %default.bridge, subnet = %default.subnet, "default bridge network");
    let dirs = NetworkDirs {
        cni_bin_dirs: config.network.cni_bin_dirs.clone(),
        netns_dir: config.state.join("netns"),
        ipam_dir: config.state.join("network").join("ipam"),
        files_dir: config.state.join("network").join("containers"),
    };
    Ok(Networks::new(store.clone(), dirs, default))
}

/// Completes at SIGTERM or SIGINT: the shutdown of a daemon binary (`what`).
pub async fn shutdown_signal(what: &str) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            tracing::error!("cannot install signal handlers; stop {what} with SIGKILL");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "signal received"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "signal received"),
    }
}

fn remove_socket(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "remove socket");
    }
}
