//! `berth`: the command-line client for berthd.

mod client;
mod commands;
mod credentials;
mod exit;
mod labels;
mod oci;
mod output;
mod template;

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
    about = "berth: run and manage containers with berthd",
    disable_help_flag = true
)]
struct Cli {
    /// berthd's gRPC socket (Docker's `-H`; `--address` as ctr spells it).
    #[arg(
        short = 'H',
        long = "host",
        visible_alias = "address",
        global = true,
        env = "BERTH_ADDRESS",
        default_value = "/run/berth/berth.sock"
    )]
    address: PathBuf,
    /// The namespace to work in.
    #[arg(
        long,
        global = true,
        env = "BERTH_NAMESPACE",
        default_value = "default"
    )]
    namespace: String,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value = "table")]
    format: Format,
    /// Print help (`-h` is left to the commands, as in Docker: `run -h` is the hostname).
    #[arg(long, global = true, action = clap::ArgAction::Help)]
    help: Option<bool>,
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
    /// Manage containers (Docker's management command: ls, inspect, rm, prune, run...).
    Container {
        #[command(subcommand)]
        cmd: ContainerCmd,
    },
    /// Manage container records (ctr style).
    #[command(alias = "c")]
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
    Rmi {
        /// Remove images containers use too.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Give an image another name (Docker's normalization: `zz` is `zz:latest`).
    Tag { source: String, target: String },
    /// Show the history of an image.
    History(images::HistoryArgs),
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
        /// Write to this file (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[arg(long)]
        platform: Option<String>,
        images: Vec<String>,
    },
    /// Load images from a tar archive (OCI layout or `docker save` format).
    Load {
        /// Read from this file (default: stdin).
        #[arg(short, long)]
        input: Option<PathBuf>,
        /// Name for images the archive only tags.
        #[arg(long)]
        base_name: Option<String>,
        /// Don't print what was loaded.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Make an image of a filesystem tarball (a file, or `-` for stdin).
    Import(client::image_import::ImportArgs),
    /// Build an image from a Dockerfile.
    Build(client::build::BuildArgs),
    /// Run a Compose project (compose.yaml): up, down, ps, logs, build, run...
    Compose(commands::compose::ComposeArgs),
    /// Log in to a registry: berthd checks the credentials, then they are stored.
    Login {
        /// The registry (host[:port]); Docker Hub when left out.
        server: Option<String>,
        /// Username (asked for on a terminal when left out).
        #[arg(short, long)]
        username: Option<String>,
        /// Password (asked for on a terminal when left out).
        #[arg(short, long)]
        password: Option<String>,
        /// Take the password from stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Search a registry's catalog: `search HOST[:PORT]/TERM`.
    Search {
        term: String,
        /// Show at most this many results.
        #[arg(long, default_value_t = 25)]
        limit: u32,
        /// Docker's flag (descriptions are never truncated here).
        #[arg(long)]
        no_trunc: bool,
    },
    /// Remove stored credentials for a registry.
    Logout { server: String },
    /// Manage leases.
    #[command(alias = "lease")]
    Leases {
        #[command(subcommand)]
        cmd: leases::Cmd,
    },
    /// Print events as they happen: Docker's container and image events of the
    /// namespace; with containerd filters, the raw containerd events of all namespaces.
    #[command(alias = "event")]
    Events {
        /// containerd filters, e.g. topic~="/containers/" (the raw stream).
        topics: Vec<String>,
        /// Docker's filters: container=, event=, image=, label=, type=.
        #[arg(short = 'f', long = "filter")]
        filter: Vec<String>,
        /// Only events from this time on (RFC 3339, Unix seconds or a duration back).
        #[arg(long)]
        since: Option<String>,
        /// Stop at this time.
        #[arg(long)]
        until: Option<String>,
    },
    /// Manage snapshots.
    #[command(alias = "snapshot", alias = "snap")]
    Snapshots(snapshots::Args),
    /// System-wide information (disk usage).
    System {
        #[command(subcommand)]
        cmd: system::Cmd,
    },
    /// Show what the daemon holds and runs on (Docker's info).
    Info,
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
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion { shell: clap_complete::Shell },
    /// Print the man page (roff): `berth man | man -l -`.
    #[command(hide = true)]
    Man,
    #[command(flatten)]
    Docker(DockerCmd),
}

/// The docker-style container verbs.
#[derive(Subcommand, Debug)]
enum DockerCmd {
    /// Make a new image of a container's changes.
    Commit(client::commit::CommitArgs),
    /// List the changes to a container's filesystem (A added, C changed, D deleted).
    Diff { container: String },
    /// Write a container's filesystem as a tar archive (to stdout without -o).
    Export {
        /// Write to this file.
        #[arg(short, long)]
        output: Option<PathBuf>,
        container: String,
    },
    /// Create a container from an image and run it.
    Run(Box<docker::run::RunArgs>),
    /// Create a container from an image (not started).
    Create(Box<docker::run::CreateArgs>),
    /// Start stopped or created containers.
    Start {
        /// Show the container's output until it exits.
        #[arg(short, long)]
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
    Attach {
        container: String,
        /// Do not attach stdin.
        #[arg(long)]
        no_stdin: bool,
        /// The key sequence that detaches (Docker's format).
        #[arg(long, default_value = crate::client::attach::DEFAULT_DETACH_KEYS)]
        detach_keys: String,
        /// Forward the signals berth gets to the container (without a terminal).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        sig_proxy: bool,
    },
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
        /// Memory limit (`512m`, `1g`).
        #[arg(short, long)]
        memory: Option<String>,
        /// CPUs (`1.5`).
        #[arg(long)]
        cpus: Option<String>,
        /// Process limit (-1: none).
        #[arg(long)]
        pids_limit: Option<i64>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
}

/// `berth container ...`: Docker's container verbs under its management command.
#[derive(Subcommand, Debug)]
enum ContainerCmd {
    /// List containers (`container ps` too).
    #[command(alias = "list")]
    Ls(docker::ps::Args),
    /// Remove every stopped container.
    Prune {
        /// Don't ask for confirmation.
        #[arg(short, long)]
        force: bool,
    },
    /// Run a command in a running container.
    Exec(docker::exec::ExecArgs),
    /// Show the processes of a container.
    Top(docker::top::TopArgs),
    /// Show containers' resource usage.
    Stats(docker::stats::StatsArgs),
    /// Copy files and directories between a container and the host.
    Cp(docker::cp::CpArgs),
    #[command(flatten)]
    Docker(DockerCmd),
}

async fn run_container(c: &Client, cmd: ContainerCmd, format: &Format) -> anyhow::Result<()> {
    match cmd {
        ContainerCmd::Ls(args) => docker::ps::run(c, args, format).await,
        ContainerCmd::Prune { force } => docker::lifecycle::prune(c, force).await,
        ContainerCmd::Exec(args) => docker::exec::run(c, args).await,
        ContainerCmd::Top(args) => docker::top::run(c, args).await,
        ContainerCmd::Stats(args) => docker::stats::run(c, args, format).await,
        ContainerCmd::Cp(args) => docker::cp::run(c, args).await,
        ContainerCmd::Docker(cmd) => run_docker(c, cmd, format).await,
    }
}

async fn run_docker(c: &Client, cmd: DockerCmd, format: &Format) -> anyhow::Result<()> {
    use docker::{inspect, lifecycle, logs, ps, run};
    match cmd {
        DockerCmd::Commit(args) => {
            println!("{}", client::commit::commit(c, args).await?);
            Ok(())
        }
        DockerCmd::Diff { container } => docker::filesystem::diff(c, &container).await,
        DockerCmd::Export { output, container } => {
            docker::filesystem::export(c, &container, output).await
        }
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
        DockerCmd::Ps(args) => ps::run(c, args, format).await,
        DockerCmd::Port {
            container,
            private_port,
        } => docker::port::run(c, &container, private_port.as_deref()).await,
        DockerCmd::Logs(args) => logs::run(c, args).await,
        DockerCmd::Attach {
            container,
            no_stdin,
            detach_keys,
            sig_proxy,
        } => lifecycle::attach(c, &container, !no_stdin, &detach_keys, sig_proxy).await,
        DockerCmd::Wait { containers } => lifecycle::wait(c, containers).await,
        DockerCmd::Pause { containers } => lifecycle::pause(c, containers, true).await,
        DockerCmd::Unpause { containers } => lifecycle::pause(c, containers, false).await,
        DockerCmd::Inspect { containers } => inspect::run(c, containers, format).await,
        DockerCmd::Rename {
            container,
            new_name,
        } => lifecycle::rename(c, &container, &new_name).await,
        DockerCmd::Update {
            restart,
            memory,
            cpus,
            pids_limit,
            containers,
        } => {
            let limits = lifecycle::Limits {
                memory,
                cpus,
                pids_limit,
            };
            lifecycle::update(c, containers, restart, limits).await
        }
    }
}

/// berth's global options before the verb keep their old short spellings (`berth -a SOCK
/// -n NS containers ls`): `-a` is `--address`, `-n` is `--namespace`. After the verb, short
/// flags are the command's own, as Docker's (`ps -a`, `ps -n 3`, `logs -n 2`, `run -h`).
fn docker_argv(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut out: Vec<std::ffi::OsString> = Vec::with_capacity(args.len());
    let mut iter = args.into_iter();
    if let Some(prog) = iter.next() {
        out.push(prog);
    }
    let mut skip_value = false;
    let mut verb_seen = false;
    let mut words: Vec<String> = Vec::new();
    for a in iter {
        let s = a.to_string_lossy().to_string();
        if verb_seen {
            // `inspect -f TEMPLATE` (Docker's short for --format, a global option here).
            let inspect = matches!(
                words
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .as_slice(),
                ["inspect", ..] | ["image" | "network" | "volume" | "container", "inspect", ..]
            );
            if !s.starts_with('-') && words.len() < 2 {
                words.push(s.clone());
            }
            if inspect && s == "-f" {
                out.push("--format".into());
            } else {
                out.push(a);
            }
            continue;
        }
        if skip_value {
            skip_value = false;
            out.push(a);
            continue;
        }
        match s.as_str() {
            "-a" => {
                out.push("--address".into());
                skip_value = true;
            }
            "-n" => {
                out.push("--namespace".into());
                skip_value = true;
            }
            "-H" | "--host" | "--address" | "--namespace" | "--format" => {
                out.push(a);
                skip_value = true;
            }
            _ => {
                verb_seen = !s.starts_with('-');
                if verb_seen {
                    words.push(s.clone());
                }
                out.push(a);
            }
        }
    }
    out
}

/// The command line as parsed: clap's derive with `-h` left to the commands (every
/// command's help flag is the global `--help` alone).
fn cli_command() -> clap::Command {
    fn long_help_only(cmd: clap::Command) -> clap::Command {
        let names: Vec<String> = cmd
            .get_subcommands()
            .map(|s| s.get_name().to_string())
            .collect();
        let mut cmd = cmd.disable_help_flag(true);
        for n in names {
            cmd = cmd.mut_subcommand(n, long_help_only);
        }
        cmd
    }
    use clap::CommandFactory;
    long_help_only(Cli::command())
}

/// Parses the command line. A usage error ends the CLI with 125, as Docker's own errors do
/// (help and version print and end it with 0).
fn parse_cli() -> Result<Cli, ExitCode> {
    use clap::FromArgMatches;
    let argv = docker_argv(std::env::args_os().collect());
    let parsed = cli_command()
        .try_get_matches_from(argv)
        .and_then(|m| Cli::from_arg_matches(&m));
    parsed.map_err(|e| {
        let _ = e.print();
        match e.kind() {
            clap::error::ErrorKind::DisplayHelp
            | clap::error::ErrorKind::DisplayVersion
            | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => ExitCode::SUCCESS,
            _ => ExitCode::from(125),
        }
    })
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
    // compose runs berth's own verbs as steps, with the same socket and namespace.
    if let Command::Compose(args) = cli.command {
        return commands::compose::run(cli.address, cli.namespace, args).await;
    }
    // Credential commands, completion and the man page never talk to the daemon.
    match &cli.command {
        Command::Completion { shell } => {
            clap_complete::generate(*shell, &mut cli_command(), "berth", &mut std::io::stdout());
            return Ok(());
        }
        Command::Man => {
            clap_mangen::Man::new(cli_command()).render(&mut std::io::stdout())?;
            return Ok(());
        }
        Command::Logout { server } => return registry::logout(server),
        _ => {}
    }
    let c = Client::connect(cli.address, cli.namespace).await?;
    match cli.command {
        Command::Version => version::run(&c, cli.format).await,
        Command::Namespaces { cmd } => namespaces::run(&c, cmd, cli.format).await,
        Command::Network { cmd } => commands::network::run(&c, cmd, &cli.format).await,
        Command::Containers { cmd } => containers::run(&c, cmd, cli.format).await,
        Command::Container { cmd } => run_container(&c, cmd, &cli.format).await,
        Command::Leases { cmd } => leases::run(&c, cmd, cli.format).await,
        Command::Content { cmd } => content::run(&c, cmd, cli.format).await,
        Command::Tasks { cmd } => tasks::run(&c, cmd, cli.format).await,
        Command::Exec(args) => docker::exec::run(&c, args).await,
        Command::Top(args) => docker::top::run(&c, args).await,
        Command::Stats(args) => docker::stats::run(&c, args, &cli.format).await,
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
        Command::Load {
            input,
            base_name,
            quiet,
        } => registry::load(&c, input, base_name, quiet).await,
        Command::Login {
            server,
            username,
            password,
            password_stdin,
        } => registry::login(&c, server, username, password, password_stdin).await,
        Command::Import(args) => docker::filesystem::import(&c, args).await,
        Command::Compose(_) => Ok(()),
        Command::Build(args) => {
            let id = client::build::build(&c, &args).await?;
            if args.quiet {
                println!("{id}");
            }
            Ok(())
        }
        Command::Search {
            term,
            limit,
            no_trunc: _,
        } => registry::search(&c, term, limit, &cli.format).await,
        Command::Logout { .. } | Command::Completion { .. } | Command::Man => Ok(()),
        Command::Rmi { force, names } => {
            let cmd = images::Cmd::Rm {
                names,
                force,
                sync: false,
            };
            images::run(&c, cmd, cli.format).await
        }
        Command::Tag { source, target } => {
            images::run(&c, images::Cmd::Tag { source, target }, cli.format).await
        }
        Command::History(a) => images::run(&c, images::Cmd::History(a), cli.format).await,
        Command::Snapshots(args) => snapshots::run(&c, args, cli.format).await,
        Command::System { cmd } => system::run(&c, cmd, cli.format).await,
        Command::Info => system::info(&c, &cli.format).await,
        Command::Volume { cmd } => volumes::run(&c, cmd, cli.format).await,
        Command::Docker(cmd) => run_docker(&c, cmd, &cli.format).await,
        Command::Events {
            topics,
            filter,
            since,
            until,
        } => {
            let args = events::Args {
                topics,
                filters: filter,
                since,
                until,
            };
            events::run(&c, args, cli.format).await
        }
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
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
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
    /// Clap's own consistency checks over every subcommand (e.g. clashing short flags).
    #[test]
    fn command_line_is_consistent() {
        super::cli_command().debug_assert();
    }

    fn argv(words: &[&str]) -> Vec<String> {
        super::docker_argv(words.iter().map(Into::into).collect())
            .into_iter()
            .map(|s| s.to_string_lossy().to_string())
            .collect()
    }

    #[test]
    fn old_global_shorts_before_the_verb_only() {
        assert_eq!(
            argv(&["berth", "-a", "/s", "-n", "ns", "ps", "-a", "-n", "2"]),
            [
                "berth",
                "--address",
                "/s",
                "--namespace",
                "ns",
                "ps",
                "-a",
                "-n",
                "2"
            ]
        );
        assert_eq!(
            argv(&["berth", "-H", "/s", "run", "-h", "x", "img", "ls", "-a"]),
            ["berth", "-H", "/s", "run", "-h", "x", "img", "ls", "-a"]
        );
        assert_eq!(
            argv(&["berth", "inspect", "-f", "{{.Id}}", "web"]),
            ["berth", "inspect", "--format", "{{.Id}}", "web"]
        );
        assert_eq!(
            argv(&["berth", "image", "inspect", "-f", "{{.Id}}", "bb"]),
            ["berth", "image", "inspect", "--format", "{{.Id}}", "bb"]
        );
        assert_eq!(
            argv(&["berth", "ps", "-f", "status=exited"]),
            ["berth", "ps", "-f", "status=exited"]
        );
    }

    fn parses(words: &[&str]) -> super::Cli {
        use clap::FromArgMatches;
        let m = super::cli_command()
            .try_get_matches_from(super::docker_argv(words.iter().map(Into::into).collect()))
            .unwrap_or_else(|e| panic!("{words:?}: {e}"));
        super::Cli::from_arg_matches(&m).expect("cli")
    }

    #[test]
    fn dockers_short_flags_are_the_commands() {
        let cli = parses(&["berth", "-H", "/tmp/s", "--namespace", "x", "ps", "-aq"]);
        assert_eq!(cli.address, std::path::PathBuf::from("/tmp/s"));
        assert_eq!(cli.namespace, "x");
        parses(&["berth", "images", "-qa"]);
        parses(&["berth", "logs", "-n", "2", "web"]);
        parses(&["berth", "start", "-a", "web"]);
        parses(&["berth", "--address", "/s", "ps"]);
        let help = super::cli_command().try_get_matches_from(["berth", "ps", "--help"]);
        assert_eq!(
            help.map(|_| ()).map_err(|e| e.kind()),
            Err(clap::error::ErrorKind::DisplayHelp)
        );
    }
}
