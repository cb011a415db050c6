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

/// A `label` command's update from `KEY=VALUE` arguments: the labels to set, and the field
/// paths (`labels.<KEY>`) of every key named, so that `KEY=` (or `KEY`) removes the label.
pub fn label_update(args: &[String]) -> (BTreeMap<String, String>, prost_types::FieldMask) {
    let labels = parse_labels(args);
    let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
    let set = labels.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    (set, prost_types::FieldMask { paths })
}

/// The first failure of [`remove_each`]: `what` names the object, `message` is the server's.
/// It displays as the message alone.
#[derive(Debug)]
pub struct RemoveFailed {
    pub what: String,
    pub message: String,
}

impl std::fmt::Display for RemoveFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RemoveFailed {}

/// The loop of the `rm` commands: `remove` each of `ids` in turn, going on after a failure.
/// A removed id is printed as `removed` words it; a failure is reported on stderr as
/// `berth: <what>: <message>`, `what` from `failed`. The first failure is returned once
/// every id was tried.
pub async fn remove_each<Fut>(
    ids: Vec<String>,
    mut remove: impl FnMut(String) -> Fut,
    removed: impl Fn(&str) -> String,
    failed: impl Fn(&str) -> String,
) -> Result<(), RemoveFailed>
where
    Fut: Future<Output = Result<(), tonic::Status>>,
{
    let mut first = None;
    for id in ids {
        match remove(id.clone()).await {
            Ok(()) => println!("{}", removed(&id)),
            Err(e) => {
                let what = failed(&id);
                eprintln!("berth: {what}: {}", e.message());
                first.get_or_insert(RemoveFailed {
                    what,
                    message: e.message().to_string(),
                });
            }
        }
    }
    first.map_or(Ok(()), Err)
}

/// A protobuf timestamp as a time (None when unset or not after 1970).
pub fn to_time(ts: Option<&prost_types::Timestamp>) -> Option<std::time::SystemTime> {
    let t = ts?;
    if t.seconds <= 0 {
        return None;
    }
    Some(
        UNIX_EPOCH
            + Duration::new(
                u64::try_from(t.seconds).unwrap_or(0),
                u32::try_from(t.nanos).unwrap_or(0),
            ),
    )
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

/// Docker's human durations, as go-units' `HumanDuration` ("Less than a second", "3 minutes",
/// "About an hour"; hours rounded).
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    let minutes = seconds / 60;
    let hours = (d.as_secs_f64() / 3600.0).round() as u64;
    if seconds < 1 {
        "Less than a second".into()
    } else if seconds == 1 {
        "1 second".into()
    } else if seconds < 60 {
        format!("{seconds} seconds")
    } else if minutes == 1 {
        "About a minute".into()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".into()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", seconds / 3600 / 24 / 365)
    }
}
/// "3 minutes ago" for an RFC 3339 time, or "N/A".
pub fn ago_rfc3339(text: &str) -> String {
    let parsed = humantime::parse_rfc3339_weak(text.trim_end_matches('Z'))
        .or_else(|_| humantime::parse_rfc3339(text));
    match parsed {
        Ok(t) => format!(
            "{} ago",
            human_duration(
                std::time::SystemTime::now()
                    .duration_since(t)
                    .unwrap_or_default()
            )
        ),
        Err(_) => "N/A".into(),
    }
}

/// "3 minutes ago" for a protobuf timestamp.
pub fn ago(ts: Option<&prost_types::Timestamp>) -> String {
    match ts {
        Some(t) if t.seconds > 0 => {
            let at = UNIX_EPOCH + Duration::new(u64::try_from(t.seconds).unwrap_or(0), 0);
            human_duration(
                std::time::SystemTime::now()
                    .duration_since(at)
                    .unwrap_or_default(),
            )
        }
        _ => "N/A".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_update_sets_and_removes() {
        let args = ["a=1", "b=", "c", "d=x=y"].map(String::from);
        let (set, mask) = label_update(&args);
        assert_eq!(
            set,
            BTreeMap::from([("a".into(), "1".into()), ("d".into(), "x=y".into())])
        );
        assert_eq!(mask.paths, ["labels.a", "labels.b", "labels.c", "labels.d"]);
    }
}
