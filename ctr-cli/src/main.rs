//! `berth`: the command-line client for berthd.

mod client;
mod commands;
mod oci;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::Client;
use crate::commands::{containers, content, events, images, leases, namespaces, plugins, version};
use crate::output::Format;

#[derive(Parser, Debug)]
#[command(
    name = "berth",
    version,
    about = "berth: run and manage containers with berthd"
)]
struct Cli {
    /// berthd's gRPC socket.
    #[arg(
        short,
        long,
        global = true,
        env = "BERTH_ADDRESS",
        default_value = "/run/berth/berth.sock"
    )]
    address: PathBuf,
    /// The namespace to work in.
    #[arg(
        short,
        long,
        global = true,
        env = "BERTH_NAMESPACE",
        default_value = "default"
    )]
    namespace: String,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value = "table")]
    format: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the client and daemon versions.
    Version,
    /// Manage namespaces.
    #[command(alias = "namespace", alias = "ns")]
    Namespaces {
        #[command(subcommand)]
        cmd: namespaces::Cmd,
    },
    /// Manage container records.
    #[command(alias = "container", alias = "c")]
    Containers {
        #[command(subcommand)]
        cmd: containers::Cmd,
    },
    /// Manage blobs in the content store.
    Content {
        #[command(subcommand)]
        cmd: content::Cmd,
    },
    /// List images (docker style).
    Images(images::LsArgs),
    /// Manage images.
    Image {
        #[command(subcommand)]
        cmd: images::Cmd,
    },
    /// Remove images.
    Rmi { names: Vec<String> },
    /// Manage leases.
    #[command(alias = "lease")]
    Leases {
        #[command(subcommand)]
        cmd: leases::Cmd,
    },
    /// Print events as they happen.
    #[command(alias = "event")]
    Events {
        /// Filters (containerd syntax), e.g. topic~="/containers/".
        filters: Vec<String>,
    },
    /// List the daemon's plugins.
    #[command(alias = "plugin")]
    Plugins {
        #[command(subcommand)]
        cmd: Option<PluginsCmd>,
    },
}

#[derive(Subcommand, Debug)]
enum PluginsCmd {
    /// List plugins, optionally filtered.
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
        /// Show requirements, exports and capabilities.
        #[arg(short, long)]
        detailed: bool,
        filters: Vec<String>,
    },
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let c = Client::connect(cli.address, cli.namespace).await?;
    match cli.command {
        Command::Version => version::run(&c, cli.format).await,
        Command::Namespaces { cmd } => namespaces::run(&c, cmd, cli.format).await,
        Command::Containers { cmd } => containers::run(&c, cmd, cli.format).await,
        Command::Leases { cmd } => leases::run(&c, cmd, cli.format).await,
        Command::Content { cmd } => content::run(&c, cmd, cli.format).await,
        Command::Images(args) => images::ls(&c, args, cli.format).await,
        Command::Image { cmd } => images::run(&c, cmd, cli.format).await,
        Command::Rmi { names } => {
            images::run(&c, images::Cmd::Rm { names, sync: false }, cli.format).await
        }
        Command::Events { filters } => events::run(&c, filters, cli.format).await,
        Command::Plugins { cmd } => {
            let (quiet, detailed, filters) = match cmd {
                Some(PluginsCmd::Ls {
                    quiet,
                    detailed,
                    filters,
                }) => (quiet, detailed, filters),
                None => (false, false, Vec::new()),
            };
            plugins::run(&c, quiet, detailed, filters, cli.format).await
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e:#}");
            ExitCode::FAILURE
        }
    }
}
