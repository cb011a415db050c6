//! Output helpers: aligned tables for people, JSON for scripts.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use clap::ValueEnum;
use tabwriter::TabWriter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Prints rows as tab-aligned columns under a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
    let mut tw = TabWriter::new(std::io::stdout()).padding(4);
    writeln!(tw, "{}", header.join("\t"))?;
    for row in rows {
        writeln!(tw, "{}", row.join("\t"))?;
    }
    tw.flush()?;
    Ok(())
}

pub fn json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `k=v,k2=v2`, or `-` when empty (as ctr prints labels).
pub fn labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".to_string();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses `KEY=VALUE` arguments; `KEY=` (or `KEY`) means "remove".
pub fn parse_labels(args: &[String]) -> BTreeMap<String, String> {
    args.iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (a.to_string(), String::new()),
        })
        .collect()
}

pub fn rfc3339(ts: Option<&prost_types::Timestamp>) -> String {
    match ts {
        Some(t) if t.seconds > 0 => {
            let t = UNIX_EPOCH
                + Duration::new(
                    u64::try_from(t.seconds).unwrap_or(0),
                    u32::try_from(t.nanos).unwrap_or(0),
                );
            humantime::format_rfc3339_seconds(t).to_string()
        }
        _ => "-".to_string(),
    }
}

pub fn rfc3339_nanos(ts: Option<&prost_types::Timestamp>) -> String {
    match ts {
        Some(t) => {
            let t = UNIX_EPOCH
                + Duration::new(
                    u64::try_from(t.seconds).unwrap_or(0),
                    u32::try_from(t.nanos).unwrap_or(0),
                );
            humantime::format_rfc3339_nanos(t).to_string()
        }
        None => "-".to_string(),
    }
}

/// An `Any` as JSON: decoded when its type is known (a runtime spec is JSON already, a
/// protobuf message is decoded by reflection), else its type and size.
pub fn any_json(a: &prost_types::Any) -> serde_json::Value {
    if (a.type_url.contains("opencontainers/runtime-spec") || a.type_url.ends_with("Spec"))
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&a.value)
    {
        return v;
    }
    if let Some(m) = berth_proto::descriptors::decode_any(&a.type_url, &a.value)
        && let Ok(v) = serde_json::to_value(&m)
    {
        return v;
    }
    serde_json::json!({ "type_url": a.type_url, "size": a.value.len() })
}
