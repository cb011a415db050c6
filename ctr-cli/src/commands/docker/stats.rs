//! `berth stats`: Docker's live resource table (CPU %, memory, network and block I/O, pids)
//! from the tasks' cgroup metrics. CPU % is the CPU time used between two samples about a
//! second apart over the wall time between them; `--no-stream` prints one such table.

use std::io::Write;
use std::time::{Duration, Instant};

use berth_proto::containerd::v1::types::Status as TaskStatus;
use clap::Args;
use tabwriter::TabWriter;

use crate::client::containers::{list_all, name_of, resolve, short_id};
use crate::client::{Client, status, tasks};

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Show all containers (default: the running ones). No -a: that is --address.
    #[arg(long)]
    pub all: bool,
    /// Print one table and exit.
    #[arg(long)]
    pub no_stream: bool,
    /// Show full container ids.
    #[arg(long)]
    pub no_trunc: bool,
    pub containers: Vec<String>,
}

/// One container's sample.
#[derive(Clone, Default)]
struct Sample {
    at: Option<Instant>,
    cpu_ns: u64,
    mem: u64,
    limit: u64,
    net: (u64, u64),
    blk: (u64, u64),
    pids: u64,
}

async fn sample(c: &Client, id: &str) -> Sample {
    match tasks::metrics(c, id).await {
        Ok((_, m)) => {
            let (mem, limit) = m.memory();
            Sample {
                at: Some(Instant::now()),
                cpu_ns: m.cpu_ns(),
                mem,
                limit,
                net: m.net_io(),
                blk: m.block_io(),
                pids: m.pids(),
            }
        }
        Err(_) => Sample::default(),
    }
}

/// The host's memory (MemTotal), the limit shown for containers without one.
fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Go's `%.<prec>g` for the magnitudes sizes have.
fn fmt_g(v: f64, prec: usize) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let exp = v.abs().log10().floor() as i64;
    let prec_i = i64::try_from(prec).unwrap_or(4);
    if exp < -4 || exp >= prec_i {
        let s = format!("{:.*e}", prec.saturating_sub(1), v);
        let (mant, e) = s.split_once('e').unwrap_or((&s, "0"));
        let mant = if mant.contains('.') {
            mant.trim_end_matches('0').trim_end_matches('.')
        } else {
            mant
        };
        let e: i64 = e.parse().unwrap_or(0);
        return format!("{mant}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    }
    let decimals = usize::try_from(prec_i - 1 - exp).unwrap_or(0);
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn custom_size(size: u64, base: f64, units: &[&str], prec: usize) -> String {
    let mut v = size as f64;
    let mut i = 0;
    while v >= base && i + 1 < units.len() {
        v /= base;
        i += 1;
    }
    format!("{}{}", fmt_g(v, prec), units[i])
}

/// Docker's `units.BytesSize`: binary units, 4 significant digits ("1.5MiB").
fn bytes_size(size: u64) -> String {
    custom_size(
        size,
        1024.0,
        &["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"],
        4,
    )
}

/// Docker's `units.HumanSizeWithPrecision(size, 3)`: decimal units ("1.2kB").
fn human_size(size: u64) -> String {
    custom_size(size, 1000.0, &["B", "kB", "MB", "GB", "TB", "PB", "EB"], 3)
}

struct Target {
    id: String,
    name: String,
}

fn row(t: &Target, prev: &Sample, cur: &Sample, host_mem: u64, no_trunc: bool) -> Vec<String> {
    let cpu = match (prev.at, cur.at) {
        (Some(a), Some(b)) if b > a && cur.cpu_ns >= prev.cpu_ns => {
            (cur.cpu_ns - prev.cpu_ns) as f64 / (b - a).as_nanos() as f64 * 100.0
        }
        _ => 0.0,
    };
    let limit = if cur.limit == 0 || (host_mem > 0 && cur.limit > host_mem) {
        host_mem
    } else {
        cur.limit
    };
    let mem_pct = if limit > 0 {
        cur.mem as f64 / limit as f64 * 100.0
    } else {
        0.0
    };
    vec![
        if no_trunc {
            t.id.clone()
        } else {
            short_id(&t.id).to_string()
        },
        t.name.clone(),
        format!("{cpu:.2}%"),
        format!("{} / {}", bytes_size(cur.mem), bytes_size(limit)),
        format!("{mem_pct:.2}%"),
        format!("{} / {}", human_size(cur.net.0), human_size(cur.net.1)),
        format!("{} / {}", human_size(cur.blk.0), human_size(cur.blk.1)),
        cur.pids.to_string(),
    ]
}

fn print(rows: &[Vec<String>], clear: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if clear {
        write!(out, "\x1b[2J\x1b[H")?;
    }
    let mut tw = TabWriter::new(out).minwidth(10).padding(3);
    writeln!(
        tw,
        "CONTAINER ID\tNAME\tCPU %\tMEM USAGE / LIMIT\tMEM %\tNET I/O\tBLOCK I/O\tPIDS"
    )?;
    for r in rows {
        writeln!(tw, "{}", r.join("\t"))?;
    }
    tw.flush()?;
    Ok(())
}

async fn targets(c: &Client, a: &StatsArgs) -> anyhow::Result<Vec<Target>> {
    if !a.containers.is_empty() {
        let mut out = Vec::new();
        for r in &a.containers {
            let ct = resolve(c, r).await?;
            out.push(Target {
                name: name_of(&ct),
                id: ct.id,
            });
        }
        return Ok(out);
    }
    let list = list_all(c).await?;
    let running: Vec<String> = tasks::list(c)
        .await
        .map_err(status)?
        .into_iter()
        .filter(|t| TaskStatus::try_from(t.status) == Ok(TaskStatus::Running))
        .map(|t| t.id)
        .collect();
    Ok(list
        .into_iter()
        .filter(|ct| a.all || running.contains(&ct.id))
        .map(|ct| Target {
            name: name_of(&ct),
            id: ct.id,
        })
        .collect())
}

async fn sample_all(c: &Client, ts: &[Target]) -> Vec<Sample> {
    futures::future::join_all(ts.iter().map(|t| sample(c, &t.id))).await
}

/// A row as Docker's `--format` sees it (its field names).
fn row_json(t: &Target, r: &[String]) -> serde_json::Value {
    let at = |i: usize| r.get(i).cloned().unwrap_or_default();
    serde_json::json!({
        "ID": at(0), "Container": at(0), "Name": t.name, "CPUPerc": at(2),
        "MemUsage": at(3), "MemPerc": at(4), "NetIO": at(5), "BlockIO": at(6), "PIDs": at(7),
    })
}

/// The table's columns for a `table` template's headers.
const COLUMNS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Container", "CONTAINER"),
    ("Name", "NAME"),
    ("CPUPerc", "CPU %"),
    ("MemUsage", "MEM USAGE / LIMIT"),
    ("MemPerc", "MEM %"),
    ("NetIO", "NET I/O"),
    ("BlockIO", "BLOCK I/O"),
    ("PIDs", "PIDS"),
];

pub async fn run(c: &Client, a: StatsArgs, format: &crate::output::Format) -> anyhow::Result<()> {
    let host_mem = host_memory();
    let mut ts = targets(c, &a).await?;
    let mut prev = sample_all(c, &ts).await;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cur = sample_all(c, &ts).await;
        let rows: Vec<Vec<String>> = ts
            .iter()
            .zip(prev.iter().zip(&cur))
            .map(|(t, (p, s))| row(t, p, s, host_mem, a.no_trunc))
            .collect();
        if *format == crate::output::Format::Table {
            print(&rows, !a.no_stream)?;
        } else {
            if !a.no_stream {
                print!("\x1b[2J\x1b[H");
            }
            let items: Vec<serde_json::Value> =
                ts.iter().zip(&rows).map(|(t, r)| row_json(t, r)).collect();
            crate::output::docker_list(format, &[], COLUMNS, &items)?;
        }
        if a.no_stream {
            return Ok(());
        }
        if a.containers.is_empty() {
            // Containers come and go: follow the running set.
            let now = targets(c, &a).await?;
            let old: Vec<(String, Sample)> = ts.iter().map(|t| t.id.clone()).zip(cur).collect();
            prev = now
                .iter()
                .map(|t| {
                    old.iter()
                        .find(|(id, _)| *id == t.id)
                        .map(|(_, s)| s.clone())
                        .unwrap_or_default()
                })
                .collect();
            ts = now;
        } else {
            prev = cur;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_like_docker_units() {
        assert_eq!(bytes_size(0), "0B");
        assert_eq!(bytes_size(512), "512B");
        assert_eq!(bytes_size(1536), "1.5KiB");
        assert_eq!(bytes_size(1_258_291), "1.2MiB");
        assert_eq!(bytes_size(16_000_000_000), "14.9GiB");
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(1234), "1.23kB");
        assert_eq!(human_size(45_600_000), "45.6MB");
        assert_eq!(fmt_g(12346.0, 4), "1.235e+04");
    }
}
