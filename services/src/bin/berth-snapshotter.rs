//! `berth-snapshotter`: one berth snapshotter served as a containerd proxy plugin.
//!
//! containerd's config:
//!
//! ```toml
//! [proxy_plugins.berth]
//!   type = "snapshot"
//!   address = "/run/berth-snapshotter.sock"
//! ```
//!
//! It serves only `containerd.services.snapshots.v1.Snapshots` on a unix socket, with its
//! own metadata in `<root>/meta.redb` and the snapshots under `<root>/<snapshotter>`.
//! containerd keeps leases, events and garbage collection itself; a request without a
//! namespace header is in the `default` namespace.

use std::path::{Path, PathBuf};

use anyhow::Context;
use berth_proto::containerd::services::snapshots::v1::snapshots_server::SnapshotsServer;
use berth_services::api::snapshots::SnapshotsApi;
use berth_services::metadata::Store;
use berth_services::server::{MAX_MESSAGE, bind_socket};
use berth_services::snapshots::Snapshotters;
use clap::{Parser, ValueEnum};
use tokio_stream::wrappers::UnixListenerStream;
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "berth-snapshotter",
    version,
    about = "berth's snapshotter as a containerd proxy plugin (snapshots gRPC service)"
)]
struct Cli {
    /// Directory for the metadata (meta.redb) and the snapshots (<root>/<snapshotter>).
    #[arg(long, default_value = "/var/lib/berth-snapshotter")]
    root: PathBuf,
    /// Unix socket to serve on (mode 0660; a stale socket is replaced).
    #[arg(long, default_value = "/run/berth-snapshotter/berth-snapshotter.sock")]
    address: PathBuf,
    /// The snapshotter to serve.
    #[arg(long, value_enum, default_value_t = Kind::Overlayfs)]
    snapshotter: Kind,
    /// Log level: trace, debug, info, warn, error.
    #[arg(long, default_value = "info")]
    log_level: String,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    Overlayfs,
    Native,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Overlayfs => "overlayfs",
            Kind::Native => "native",
        }
    }
}

fn create_root(root: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(root)
        .with_context(|| format!("create {}", root.display()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    create_root(&cli.root)?;
    let name = cli.snapshotter.name();
    let db_path = cli.root.join("meta.redb");
    let root = cli.root.clone();
    let (store, snapshotters) = tokio::task::spawn_blocking(move || {
        let store = Store::open(&db_path)?;
        let snapshotters = Snapshotters::open_one(name, &store, &root.join(name))?;
        Ok::<_, berth_services::error::Error>((store, snapshotters))
    })
    .await
    .context("open task")?
    .with_context(|| format!("open snapshotter {name} in {}", cli.root.display()))?;

    let listener = bind_socket(
        &cli.address,
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    )
    .await
    .with_context(|| format!("listen on {}", cli.address.display()))?;
    tracing::info!(
        snapshotter = name,
        root = %cli.root.display(),
        address = %cli.address.display(),
        "berth-snapshotter is serving"
    );
    let result = tonic::transport::Server::builder()
        .add_service(
            SnapshotsServer::new(SnapshotsApi::proxy(snapshotters, store))
                .max_decoding_message_size(MAX_MESSAGE),
        )
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(listener),
            berth_services::server::shutdown_signal("berth-snapshotter"),
        )
        .await;
    if let Err(e) = std::fs::remove_file(&cli.address)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(address = %cli.address.display(), error = %e, "remove socket");
    }
    result.context("serve")?;
    tracing::info!("berth-snapshotter stopped");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_new(&cli.log_level)
        .with_context(|| format!("log level {:?}", cli.log_level))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .thread_name("berth-snapshotter")
        .build()
        .context("start tokio runtime")?;
    runtime.block_on(run(cli))
}
