//! `berth top`: the processes of a container, as `ps` shows them (default `ps -ef`), as
//! Docker does: the task's pids from the daemon, the host's `ps` output filtered to them.

use std::io::Write;

use berth_proto::containerd::v1::types::Status as TaskStatus;
use clap::Args;
use tabwriter::TabWriter;

use crate::client::{Client, containers, tasks};

#[derive(Args, Debug)]
pub struct TopArgs {
    pub container: String,
    /// Options for ps (default: -ef).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

/// The `ps` output split into titles and the rows of `pids` (the last column, the
/// command, keeps its spaces).
fn filter_ps(out: &str, pids: &[u32]) -> anyhow::Result<(Vec<String>, Vec<Vec<String>>)> {
    let mut lines = out.lines();
    let titles: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let pid_col = titles
        .iter()
        .position(|t| t == "PID")
        .ok_or_else(|| anyhow::anyhow!("Couldn't find PID field in ps output"))?;
    let mut rows = Vec::new();
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        let mut fields: Vec<String> = Vec::new();
        let mut rest = line.trim_start();
        while fields.len() + 1 < titles.len() {
            let Some((f, r)) = rest.split_once(char::is_whitespace) else {
                break;
            };
            fields.push(f.to_string());
            rest = r.trim_start();
        }
        fields.push(rest.to_string());
        let pid: u32 = fields
            .get(pid_col)
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("unexpected pid in ps output: {line}"))?;
        if pids.contains(&pid) {
            rows.push(fields);
        }
    }
    Ok((titles, rows))
}

pub async fn run(c: &Client, a: TopArgs) -> anyhow::Result<()> {
    let ct = containers::resolve(c, &a.container).await?;
    let running = tasks::get(c, &ct.id)
        .await
        .ok()
        .is_some_and(|t| TaskStatus::try_from(t.status) == Ok(TaskStatus::Running));
    if !running {
        anyhow::bail!("Container {} is not running", ct.id);
    }
    let pids: Vec<u32> = tasks::list_pids(c, &ct.id)
        .await?
        .iter()
        .map(|p| p.pid)
        .collect();
    let args = if a.ps_args.is_empty() {
        vec!["-ef".to_string()]
    } else {
        a.ps_args
    };
    let out = tokio::process::Command::new("ps")
        .args(&args)
        .output()
        .await
        .map_err(|e| anyhow::anyhow!("run ps: {e}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "ps: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let (titles, rows) = filter_ps(&String::from_utf8_lossy(&out.stdout), &pids)?;
    let mut tw = TabWriter::new(std::io::stdout()).minwidth(20).padding(3);
    writeln!(tw, "{}", titles.join("\t"))?;
    for r in rows {
        writeln!(tw, "{}", r.join("\t"))?;
    }
    tw.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_rows_of_the_pids_and_whole_commands() {
        let out = "UID          PID    PPID  C STIME TTY          TIME CMD\n\
                   root           1       0  0 10:00 ?        00:00:01 /sbin/init splash\n\
                   root        4242    4200  0 10:01 ?        00:00:00 sleep 1000\n";
        let (titles, rows) = filter_ps(out, &[4242]).unwrap();
        assert_eq!(titles.len(), 8);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0][1], "4242");
        assert_eq!(rows[0][7], "sleep 1000");
        assert!(filter_ps("A B\n1 2\n", &[1]).is_err());
    }
}
