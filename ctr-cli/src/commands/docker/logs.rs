//! `berth logs`: a container's output from its log file (see [`crate::client::logs`] for
//! the format), the last lines only with `--tail`, followed while it runs with `-f`.

use berth_proto::containerd::v1::types::Status;
use clap::Args as ClapArgs;

use crate::client::logs::{Follower, Printer, follow_until_exit, tail};
use crate::client::{Client, containers, tasks};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Follow the output until the container stops.
    #[arg(short, long)]
    pub follow: bool,
    /// Show each line's timestamp.
    #[arg(short, long)]
    pub timestamps: bool,
    /// Show only the last N lines ("all" for every line).
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    pub container: String,
}

pub async fn run(c: &Client, args: Args) -> anyhow::Result<()> {
    let ct = containers::resolve(c, &args.container).await?;
    let path = containers::log_path(&ct)
        .ok_or_else(|| anyhow::anyhow!("container {} has no log file", args.container))?;
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(anyhow::anyhow!("read log {}: {e}", path.display())),
    };
    let shown = if args.tail == "all" || args.tail == "-1" {
        &data[..]
    } else {
        let n: usize = args
            .tail
            .parse()
            .map_err(|_| anyhow::anyhow!("invalid --tail {:?}: a number or \"all\"", args.tail))?;
        tail(&data, n)
    };
    let mut printer = Printer::new(args.timestamps);
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    printer.print(shown, &mut out, &mut err);
    if !args.follow {
        return Ok(());
    }
    let running = tasks::find(c, &ct.id)
        .await?
        .is_some_and(|t| matches!(tasks::status_of(&t), Status::Running | Status::Paused));
    if running {
        let follower = Follower::new(&path, data.len() as u64);
        follow_until_exit(c, &ct.id, follower, &mut printer).await?;
    }
    Ok(())
}
