//! `berth volume`: Docker's volume commands over berthd's volumes API (create, ls,
//! inspect, rm, prune), with Docker's output.

use std::collections::BTreeMap;
use std::io::Write;

use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::Client;
use crate::client::volumes::{self, Volume, daemon_error};
use crate::exit::Exit;
use crate::output::{Format, confirm, human_size};

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create a volume (a random name when none is given).
    Create {
        name: Option<String>,
        /// The volume driver (only `local`).
        #[arg(short = 'd', long, default_value = "local")]
        driver: String,
        /// Set metadata on the volume (key=value).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Driver options (key=value).
        #[arg(short = 'o', long = "opt")]
        opts: Vec<String>,
    },
    /// List volumes (`--format json`: one JSON object a line, as Docker's).
    #[command(alias = "list")]
    Ls {
        /// Only the names.
        #[arg(short, long)]
        quiet: bool,
        /// Filters: dangling=true|false, driver=, label=KEY[=VALUE], name=.
        #[arg(short, long = "filter")]
        filter: Vec<String>,
    },
    /// Show volumes as JSON (Docker's format).
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes (refused while a container uses them).
    #[command(alias = "remove")]
    Rm {
        /// A missing volume is no error.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove unused anonymous volumes (every unused volume with --all).
    Prune {
        /// Every unused volume, not only anonymous ones.
        #[arg(short, long)]
        all: bool,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
        /// Filters: label=, label!=, all=.
        #[arg(long = "filter")]
        filter: Vec<String>,
    },
}

/// `k=v` arguments as a map (`k` alone: empty value).
fn key_values(args: &[String]) -> BTreeMap<String, String> {
    args.iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (a.to_string(), String::new()),
        })
        .collect()
}

/// Docker's `volume inspect` object of `v`.
pub fn inspect_json(v: &Volume) -> Value {
    let created = v
        .created_at
        .as_ref()
        .and_then(|t| crate::output::to_time(Some(t)))
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_default();
    // Docker shows an empty map as null.
    let map = |m: &BTreeMap<String, String>| {
        if m.is_empty() { Value::Null } else { json!(m) }
    };
    json!({
        "CreatedAt": created,
        "Driver": v.driver,
        "Labels": map(&v.labels),
        "Mountpoint": v.mountpoint,
        "Name": v.name,
        "Options": map(&v.options),
        "Scope": "local",
    })
}

/// JSON indented by four spaces, as Docker prints inspect output.
fn print_json(value: &Value) -> anyhow::Result<()> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    serde::Serialize::serialize(value, &mut ser)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out)?;
    writeln!(stdout)?;
    Ok(())
}

/// `volume ls --format json`'s line for `v`, with Docker's fields.
fn ls_json(v: &Volume) -> Value {
    let labels: Vec<String> = v.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    json!({
        "Availability": "N/A",
        "Driver": v.driver,
        "Group": "N/A",
        "Labels": labels.join(","),
        "Links": "N/A",
        "Mountpoint": v.mountpoint,
        "Name": v.name,
        "Scope": "local",
        "Size": "N/A",
        "Status": "N/A",
    })
}

pub async fn run(c: &Client, cmd: Cmd, format: Format) -> anyhow::Result<()> {
    match cmd {
        Cmd::Create {
            name,
            driver,
            labels,
            opts,
        } => {
            let v = volumes::create(
                c,
                name.as_deref().unwrap_or_default(),
                &driver,
                key_values(&labels),
                key_values(&opts),
                false,
            )
            .await
            .map_err(daemon_error)?;
            println!("{}", v.name);
            Ok(())
        }
        Cmd::Ls { quiet, filter } => {
            let list = volumes::list(c, filter).await.map_err(daemon_error)?;
            if quiet {
                for v in &list {
                    println!("{}", v.name);
                }
                return Ok(());
            }
            if format == Format::Json {
                for v in &list {
                    println!("{}", ls_json(v));
                }
                return Ok(());
            }
            // Docker's tabwriter: cells at least 10 wide, padding included.
            let mut tw = tabwriter::TabWriter::new(std::io::stdout())
                .minwidth(7)
                .padding(3);
            writeln!(tw, "DRIVER\tVOLUME NAME")?;
            for v in &list {
                writeln!(tw, "{}\t{}", v.driver, v.name)?;
            }
            tw.flush()?;
            Ok(())
        }
        Cmd::Inspect { names } => {
            let mut out = Vec::new();
            let mut failed = false;
            for n in &names {
                match volumes::get(c, n).await {
                    Ok(v) => out.push(inspect_json(&v)),
                    Err(e) => {
                        eprintln!("{}", daemon_error(e));
                        failed = true;
                    }
                }
            }
            match &format {
                Format::Template(_) | Format::TableTemplate(_) => {
                    crate::output::inspected(&format, out)?
                }
                _ => print_json(&Value::Array(out))?,
            }
            if failed {
                return Err(Exit::with(1, ""));
            }
            Ok(())
        }
        Cmd::Rm { force, names } => {
            let mut failed = false;
            for n in &names {
                match volumes::delete(c, n, force).await {
                    Ok(()) => println!("{n}"),
                    Err(e) => {
                        eprintln!("{}", daemon_error(e));
                        failed = true;
                    }
                }
            }
            if failed {
                return Err(Exit::with(1, ""));
            }
            Ok(())
        }
        Cmd::Prune { all, force, filter } => {
            let warning = if all {
                "WARNING! This will remove all local volumes not used by at least one container."
            } else {
                "WARNING! This will remove anonymous local volumes not used by at least one container."
            };
            if !force && !confirm(warning)? {
                return Ok(());
            }
            let (deleted, reclaimed) =
                volumes::prune(c, filter, all).await.map_err(daemon_error)?;
            if !deleted.is_empty() {
                println!("Deleted Volumes:");
                for n in &deleted {
                    println!("{n}");
                }
                println!();
            }
            println!("Total reclaimed space: {}", human_size(reclaimed));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_docker_prints_them() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(5), "5B");
        assert_eq!(human_size(1234), "1.234kB");
        assert_eq!(human_size(12_345), "12.35kB");
        assert_eq!(human_size(1_000_000), "1MB");
    }

    #[test]
    fn inspect_has_dockers_fields() {
        let v = Volume {
            name: "data".into(),
            driver: "local".into(),
            mountpoint: "/var/lib/berth/volumes/default/data/_data".into(),
            created_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            ..Default::default()
        };
        let j = inspect_json(&v);
        assert_eq!(j["CreatedAt"], "2023-11-14T22:13:20Z");
        assert_eq!(j["Scope"], "local");
        assert_eq!(j["Labels"], Value::Null);
        let keys: Vec<&String> = j.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "CreatedAt",
                "Driver",
                "Labels",
                "Mountpoint",
                "Name",
                "Options",
                "Scope"
            ]
        );
    }
}
