//! `berthd`: the berth daemon.

use std::path::PathBuf;

use anyhow::Context;
use berth_services::config::{Config, LogFormat, Overrides};
use berth_services::server::Daemon;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "berthd",
    version,
    about = "berth container runtime daemon (containerd-compatible)"
)]
struct Cli {
    /// Config file (default /etc/berth/config.toml; the embedded defaults apply if it is absent).
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    /// Persistent state directory.
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Runtime state directory.
    #[arg(long, global = true)]
    state: Option<PathBuf>,
    /// gRPC socket path (ttrpc is served on <address>.ttrpc).
    #[arg(short, long, global = true)]
    address: Option<PathBuf>,
    /// Log level: trace, debug, info, warn, error.
    #[arg(short, long, global = true)]
    log_level: Option<String>,
    /// Log format.
    #[arg(long, global = true, value_enum)]
    log_format: Option<Format>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        what: ConfigCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print the embedded default configuration.
    Default,
    /// Print the configuration berthd would run with (defaults, file, flags).
    Dump,
}

/// Writes `text` to stdout; a reader that went away (`berthd config default | head`) is
/// not an error.
fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(config.log.filter())
        .with_context(|| format!("log level {:?}", config.log.level))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // A log that cannot be written (a full disk, a reader that went away) loses lines; it
    // never takes the daemon down: no write error is reported back to the stream that failed.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let overrides = Overrides {
        root: cli.root.clone(),
        state: cli.state.clone(),
        address: cli.address.clone(),
        log_level: cli.log_level.clone(),
        log_format: cli.log_format.map(|f| match f {
            Format::Text => LogFormat::Text,
            Format::Json => LogFormat::Json,
        }),
    };
    match cli.command {
        Some(Command::Config {
            what: ConfigCommand::Default,
        }) => {
            print_out(&Config::default().to_toml()?)?;
            return Ok(());
        }
        Some(Command::Config {
            what: ConfigCommand::Dump,
        }) => {
            let config = Config::load(cli.config.as_deref(), &overrides)?;
            print_out(&config.to_toml()?)?;
            return Ok(());
        }
        None => {}
    }
    let config = Config::load(cli.config.as_deref(), &overrides)?;
    init_logging(&config)?;
    berth_services::memory::limit_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .max_blocking_threads(64)
        .thread_name("berthd")
        .build()
        .context("start tokio runtime")?;
    runtime.block_on(async move {
        let daemon = Daemon::open(config).await?;
        daemon
            .serve(berth_services::server::shutdown_signal("berthd"))
            .await?;
        anyhow::Ok(())
    })
}
