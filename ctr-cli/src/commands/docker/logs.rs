//! `berth logs`: a container's output from its log file (see [`crate::client::logs`] for
//! the format), the last lines only with `--tail`, those of a time span with `--since` /
//! `--until`, followed while it runs with `-f`.

use std::time::SystemTime;

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
    /// Only the lines since a time: RFC 3339, Unix seconds, or a duration back from now
    /// (`10m`, `1h30m`).
    #[arg(long)]
    pub since: Option<String>,
    /// Only the lines before a time (the same forms).
    #[arg(long)]
    pub until: Option<String>,
    pub container: String,
}

/// The lines of `data` whose time is in `[since, until)`; a line with no time is kept.
fn within(data: &[u8], since: Option<SystemTime>, until: Option<SystemTime>) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    for line in data.split_inclusive(|b| *b == b'\n') {
        let time = line
            .split(|b| *b == b' ')
            .next()
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok());
        let keep = time.is_none_or(|t| since.is_none_or(|s| t >= s) && until.is_none_or(|u| t < u));
        if keep {
            out.extend_from_slice(line);
        }
    }
    out
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
    let now = SystemTime::now();
    let since = args
        .since
        .as_deref()
        .map(|s| crate::output::parse_time("since", s, now))
        .transpose()?;
    let until = args
        .until
        .as_deref()
        .map(|s| crate::output::parse_time("until", s, now))
        .transpose()?;
    let filtered;
    let data_in = if since.is_some() || until.is_some() {
        filtered = within(&data, since, until);
        &filtered[..]
    } else {
        &data[..]
    };
    let shown = if args.tail == "all" || args.tail == "-1" {
        data_in
    } else {
        let n: usize = args
            .tail
            .parse()
            .map_err(|_| anyhow::anyhow!("invalid --tail {:?}: a number or \"all\"", args.tail))?;
        tail(data_in, n)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn times_as_docker_reads_them() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            crate::output::parse_time("since", "10m", now).unwrap(),
            now - Duration::from_secs(600)
        );
        assert_eq!(
            crate::output::parse_time("since", "999400", now).unwrap(),
            UNIX_EPOCH + Duration::from_secs(999_400)
        );
        assert_eq!(
            crate::output::parse_time("since", "1970-01-12T13:46:40Z", now).unwrap(),
            now
        );
        assert!(crate::output::parse_time("since", "soon", now).is_err());
    }

    #[test]
    fn lines_within_a_span() {
        let data = b"1970-01-01T00:00:10Z stdout F a\n1970-01-01T00:00:20Z stdout F b\nno time\n1970-01-01T00:00:30Z stdout F c\n";
        let at = |s| Some(UNIX_EPOCH + Duration::from_secs(s));
        let got = within(data, at(15), at(30));
        assert_eq!(
            String::from_utf8_lossy(&got),
            "1970-01-01T00:00:20Z stdout F b\nno time\n"
        );
    }
}
