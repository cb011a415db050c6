//! `berth`: the command-line client for berthd.

mod client;
mod commands;
mod credentials;
mod oci;
mod output;
#[allow(dead_code)] // used by run, exec and tasks as they land
mod stdio;
mod transfer;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::Client;
use crate::commands::{
    containers, content, docker, events, images, leases, namespaces, plugins, registry, snapshots,
    system, tasks, version,
};
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
    /// Manage tasks (ctr style).
    #[command(alias = "task", alias = "t")]
    Tasks {
        #[command(subcommand)]
        cmd: tasks::Cmd,
    },
    /// Run a command in a running container.
    Exec(docker::exec::ExecArgs),
    /// Show the processes of a container.
    Top(docker::top::TopArgs),
    /// Show containers' resource usage.
    Stats(docker::stats::StatsArgs),
    /// Copy files and directories between a container and the host.
    Cp(docker::cp::CpArgs),
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
    /// Pull an image from a registry.
    Pull {
        reference: String,
        /// Platform to pull (os/arch[/variant]); default: this host's.
        #[arg(long)]
        platform: Option<String>,
        /// Pull every platform of a multi-platform image.
        #[arg(long)]
        all_platforms: bool,
        /// Use plain HTTP (also automatic for localhost and configured insecure hosts).
        #[arg(long)]
        plain_http: bool,
    },
    /// Push an image to a registry.
    Push {
        image: String,
        /// Push under another reference.
        target: Option<String>,
        #[arg(long)]
        plain_http: bool,
    },
    /// Save images to a tar archive (OCI layout with a Docker manifest.json).
    Save {
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long)]
        platform: Option<String>,
        images: Vec<String>,
    },
    /// Load images from a tar archive (OCI layout or `docker save` format).
    Load {
        #[arg(short, long)]
        input: PathBuf,
        /// Name for images the archive only tags.
        #[arg(long)]
        base_name: Option<String>,
    },
    /// Store credentials for a registry.
    Login {
        server: String,
        #[arg(short, long)]
        username: String,
        #[arg(short, long)]
        password: Option<String>,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove stored credentials for a registry.
    Logout { server: String },
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
    /// Manage snapshots.
    #[command(alias = "snapshot", alias = "snap")]
    Snapshots(snapshots::Args),
    /// System-wide information (disk usage).
    System {
        #[command(subcommand)]
        cmd: system::Cmd,
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
    // Credential commands never talk to the daemon.
    match &cli.command {
        Command::Login {
            server,
            username,
            password,
            password_stdin,
        } => {
            return registry::login(server, username.clone(), password.clone(), *password_stdin);
        }
        Command::Logout { server } => return registry::logout(server),
        _ => {}
    }
    let c = Client::connect(cli.address, cli.namespace).await?;
    match cli.command {
        Command::Version => version::run(&c, cli.format).await,
        Command::Namespaces { cmd } => namespaces::run(&c, cmd, cli.format).await,
        Command::Containers { cmd } => containers::run(&c, cmd, cli.format).await,
        Command::Leases { cmd } => leases::run(&c, cmd, cli.format).await,
        Command::Content { cmd } => content::run(&c, cmd, cli.format).await,
        Command::Tasks { cmd } => tasks::run(&c, cmd, cli.format).await,
        Command::Exec(args) => docker::exec::run(&c, args).await,
        Command::Top(args) => docker::top::run(&c, args).await,
        Command::Stats(args) => docker::stats::run(&c, args).await,
        Command::Cp(args) => docker::cp::run(&c, args).await,
        Command::Images(args) => images::ls(&c, args, cli.format).await,
        Command::Image { cmd } => images::run(&c, cmd, cli.format).await,
        Command::Pull {
            reference,
            platform,
            all_platforms,
            plain_http,
        } => registry::pull(&c, reference, platform, all_platforms, plain_http).await,
        Command::Push {
            image,
            target,
            plain_http,
        } => registry::push(&c, image, target, plain_http).await,
        Command::Save {
            output,
            platform,
            images,
        } => registry::save(&c, images, output, platform).await,
        Command::Load { input, base_name } => registry::load(&c, input, base_name).await,
        Command::Login { .. } | Command::Logout { .. } => Ok(()),
        Command::Rmi { names } => {
            images::run(&c, images::Cmd::Rm { names, sync: false }, cli.format).await
        }
        Command::Snapshots(args) => snapshots::run(&c, args, cli.format).await,
        Command::System { cmd } => system::run(&c, cmd, cli.format).await,
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
            // A process we waited for set the status: pass it on without a message.
            if let Some(tasks::Exit(code)) = e.downcast_ref::<tasks::Exit>() {
                return ExitCode::from(u8::try_from(*code & 0xff).unwrap_or(1));
            }
            eprintln!("berth: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Clap's own consistency checks over every subcommand (e.g. clashing short flags).
    #[test]
    fn command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
