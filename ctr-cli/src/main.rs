//! `berth`: the command-line client for berthd.

mod client;
mod commands;
mod credentials;
mod exit;
mod labels;
mod oci;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::Client;
use crate::commands::{
    containers, content, docker, events, images, leases, namespaces, plugins, registry, snapshots,
    system, tasks, version, volumes,
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
    /// Manage networks (Docker's network commands).
    Network {
        #[command(subcommand)]
        cmd: commands::network::Cmd,
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
    /// Manage volumes.
    #[command(alias = "volumes")]
    Volume {
        #[command(subcommand)]
        cmd: volumes::Cmd,
    },
    /// List the daemon's plugins.
    #[command(alias = "plugin")]
    Plugins {
        #[command(subcommand)]
        cmd: Option<PluginsCmd>,
    },
    #[command(flatten)]
    Docker(DockerCmd),
}

/// The docker-style container verbs.
#[derive(Subcommand, Debug)]
enum DockerCmd {
    /// Create a container from an image and run it.
    Run(Box<docker::run::RunArgs>),
    /// Create a container from an image (not started).
    Create(Box<docker::run::CreateArgs>),
    /// Start stopped or created containers.
    Start {
        /// Show the container's output until it exits (`-a` works too).
        #[arg(long)]
        attach: bool,
        /// Attach stdin and the terminal (`-i`).
        #[arg(short, long)]
        interactive: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop containers: the stop signal (SIGTERM), then SIGKILL after the timeout.
    Stop {
        /// Seconds to wait before SIGKILL.
        #[arg(short, long, default_value_t = 10)]
        time: u64,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop and start containers again.
    Restart {
        #[arg(short, long, default_value_t = 10)]
        time: u64,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Send a signal to containers.
    Kill {
        #[arg(short, long, default_value = "KILL")]
        signal: String,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers.
    Rm {
        /// Kill a running container first.
        #[arg(short, long)]
        force: bool,
        /// Remove the anonymous volumes made for the containers too.
        #[arg(short, long)]
        volumes: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// List containers.
    Ps(docker::ps::Args),
    /// Show a container's output.
    Logs(docker::logs::Args),
    /// Show a running container's output until it exits.
    Attach { container: String },
    /// Wait for containers to exit and print their exit codes.
    Wait {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Pause containers.
    Pause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Resume paused containers.
    Unpause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Show containers as JSON (Docker's inspect format).
    Inspect {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Rename a container.
    Rename { container: String, new_name: String },
    /// List a container's published ports (or the host address of one: PORT[/PROTO]).
    Port {
        container: String,
        private_port: Option<String>,
    },
    /// Change containers' configuration: their restart policy (resource limits: not yet).
    Update {
        /// Restart policy to apply when a container exits (no, always, on-failure[:N],
        /// unless-stopped).
        #[arg(long)]
        restart: Option<String>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
}

async fn run_docker(c: &Client, cmd: DockerCmd) -> anyhow::Result<()> {
    use docker::{inspect, lifecycle, logs, ps, run};
    match cmd {
        DockerCmd::Run(args) => run::run(c, *args).await,
        DockerCmd::Create(args) => run::create_cmd(c, *args).await,
        DockerCmd::Start {
            attach,
            interactive,
            containers,
        } => lifecycle::start(c, containers, attach, interactive).await,
        DockerCmd::Stop { time, containers } => lifecycle::stop_cmd(c, containers, time).await,
        DockerCmd::Restart { time, containers } => lifecycle::restart(c, containers, time).await,
        DockerCmd::Kill { signal, containers } => lifecycle::kill_cmd(c, containers, signal).await,
        DockerCmd::Rm {
            force,
            volumes,
            containers,
        } => lifecycle::rm(c, containers, force, volumes).await,
        DockerCmd::Ps(args) => ps::run(c, args).await,
        DockerCmd::Port {
            container,
            private_port,
        } => docker::port::run(c, &container, private_port.as_deref()).await,
        DockerCmd::Logs(args) => logs::run(c, args).await,
        DockerCmd::Attach { container } => lifecycle::attach(c, &container).await,
        DockerCmd::Wait { containers } => lifecycle::wait(c, containers).await,
        DockerCmd::Pause { containers } => lifecycle::pause(c, containers, true).await,
        DockerCmd::Unpause { containers } => lifecycle::pause(c, containers, false).await,
        DockerCmd::Inspect { containers } => inspect::run(c, containers).await,
        DockerCmd::Rename {
            container,
            new_name,
        } => lifecycle::rename(c, &container, &new_name).await,
        DockerCmd::Update {
            restart,
            containers,
        } => lifecycle::update(c, containers, restart).await,
    }
}

/// Docker's short flags that clash with our global `-a` (address) and `-n` (namespace):
/// after `ps`, `-a` means `--all`; after `start`, `-a` means `--attach`; after `logs`,
/// `-n` means `--tail`. Only the words after the verb are rewritten (`berth -a SOCK ps -a`
/// still works), up to a `--`.
fn docker_argv(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut out: Vec<std::ffi::OsString> = Vec::with_capacity(args.len());
    let mut iter = args.into_iter();
    if let Some(prog) = iter.next() {
        out.push(prog);
    }
    let mut verb: Option<String> = None;
    let mut skip_value = false;
    let mut done = false;
    for a in iter {
        let s = a.to_string_lossy().to_string();
        if done {
            out.push(a);
            continue;
        }
        if verb.is_none() {
            if skip_value {
                skip_value = false;
            } else if ["-a", "--address", "-n", "--namespace", "--format"].contains(&s.as_str()) {
                skip_value = true;
            } else if !s.starts_with('-') {
                verb = Some(s.clone());
            }
            out.push(a);
            continue;
        }
        if s == "--" {
            done = true;
            out.push(a);
            continue;
        }
        let long = |c: char| -> Option<&'static str> {
            match (verb.as_deref(), c) {
                (Some("ps"), 'a') => Some("--all"),
                (Some("start"), 'a') => Some("--attach"),
                (Some("logs"), 'n') => Some("--tail"),
                (Some("volume" | "volumes"), 'a') => Some("--all"),
                _ => None,
            }
        };
        let shorts = s
            .strip_prefix('-')
            .filter(|r| !r.starts_with('-') && !r.is_empty());
        match shorts {
            Some(r)
                if r.chars().all(|c| c.is_ascii_alphabetic())
                    && r.chars().any(|c| long(c).is_some()) =>
            {
                let rest: String = r.chars().filter(|c| long(*c).is_none()).collect();
                for c in r.chars().filter_map(long) {
                    out.push(c.into());
                }
                if !rest.is_empty() {
                    out.push(format!("-{rest}").into());
                }
            }
            _ => out.push(a),
        }
        // `run`/`create`: everything after the image belongs to the container's command.
        if matches!(verb.as_deref(), Some("run") | Some("create" | "exec")) {
            done = true;
        }
    }
    out
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
        Command::Network { cmd } => commands::network::run(&c, cmd).await,
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
        Command::Volume { cmd } => volumes::run(&c, cmd, cli.format).await,
        Command::Docker(cmd) => run_docker(&c, cmd).await,
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

/// Restores the default action of SIGPIPE, which Rust's runtime sets to "ignore": output
/// into a pipe whose reader went away (`berth images | head -1`) ends the CLI quietly, as
/// it ends `docker` and other command-line tools, instead of a panic in `println!`.
#[allow(unsafe_code)]
fn default_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: called first thing in main, before any other thread exists; SIG_DFL installs
    // no handler code.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

fn main() -> ExitCode {
    default_sigpipe();
    let cli = Cli::parse_from(docker_argv(std::env::args_os().collect()));
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
            if let Some(exit) = e.downcast_ref::<exit::Exit>() {
                if !exit.message.is_empty() {
                    eprintln!("berth: {}", exit.message);
                }
                return ExitCode::from(exit.code);
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

    fn argv(words: &[&str]) -> Vec<String> {
        super::docker_argv(words.iter().map(Into::into).collect())
            .into_iter()
            .map(|s| s.to_string_lossy().to_string())
            .collect()
    }

    #[test]
    fn docker_short_flags_are_rewritten_after_the_verb() {
        assert_eq!(
            argv(&["berth", "-a", "/s", "ps", "-aq"]),
            ["berth", "-a", "/s", "ps", "--all", "-q"]
        );
        assert_eq!(
            argv(&["berth", "start", "-a", "web"]),
            ["berth", "start", "--attach", "web"]
        );
        assert_eq!(
            argv(&["berth", "logs", "-n", "2", "web"]),
            ["berth", "logs", "--tail", "2", "web"]
        );
        assert_eq!(
            argv(&["berth", "run", "--rm", "img", "ls", "-a"]),
            ["berth", "run", "--rm", "img", "ls", "-a"]
        );
        assert_eq!(
            argv(&["berth", "-n", "ns", "images"]),
            ["berth", "-n", "ns", "images"]
        );
    }
}
