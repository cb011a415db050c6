//! Output helpers: aligned tables for people, JSON for scripts.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::time::{Duration, UNIX_EPOCH};

use tabwriter::TabWriter;

/// `--format`: `table` (the default), `json`, a Go template, or `table` and a template (a
/// header line, columns aligned), as Docker takes it. The ctr-style commands know the
/// first two; Docker's verbs all four.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Template(String),
    TableTemplate(String),
}

impl std::str::FromStr for Format {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Format, Self::Err> {
        Ok(match s.trim() {
            "" | "table" => Format::Table,
            "json" => Format::Json,
            t => match t.strip_prefix("table ") {
                Some(rest) => Format::TableTemplate(rest.to_string()),
                None => Format::Template(s.to_string()),
            },
        })
    }
}

/// Columns as Docker's formatter aligns them (Go's tabwriter: cells at least 10 wide with
/// their padding of 3; this tabwriter counts its minimum without the padding).
fn docker_tabwriter() -> TabWriter<std::io::Stdout> {
    TabWriter::new(std::io::stdout()).minwidth(7).padding(3)
}

/// A list template's `\t` and `\n` as the tab and newline they stand for (as Docker's).
fn escapes(t: &str) -> String {
    t.replace("\\t", "\t").replace("\\n", "\n")
}

/// Prints a Docker list (`ps`, `images`): one JSON object per item with Docker's field
/// names; `columns` are the default table's (field, header) pairs, and, with `headers`, name
/// the headers of a `table` template's fields.
pub fn docker_list(
    format: &Format,
    columns: &[(&str, &str)],
    headers: &[(&str, &str)],
    items: &[serde_json::Value],
) -> anyhow::Result<()> {
    let field = |v: &serde_json::Value, k: &str| match &v[k] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    match format {
        Format::Table => {
            let mut tw = docker_tabwriter();
            let header: Vec<&str> = columns.iter().map(|(_, h)| *h).collect();
            writeln!(tw, "{}", header.join("\t"))?;
            for v in items {
                let row: Vec<String> = columns.iter().map(|(k, _)| field(v, k)).collect();
                writeln!(tw, "{}", row.join("\t"))?;
            }
            tw.flush()?;
            Ok(())
        }
        Format::Json => {
            for v in items {
                println!("{v}");
            }
            Ok(())
        }
        Format::Template(t) => {
            let t = crate::template::Compiled::new(&escapes(t))?;
            for v in items {
                println!("{}", t.render(v)?);
            }
            Ok(())
        }
        Format::TableTemplate(t) => {
            // The header: the template run on the fields' header names.
            let names: serde_json::Map<String, serde_json::Value> = headers
                .iter()
                .chain(columns)
                .map(|(k, h)| (k.to_string(), serde_json::Value::String(h.to_string())))
                .collect();
            let t = crate::template::Compiled::new(&escapes(t))?;
            let mut tw = docker_tabwriter();
            writeln!(tw, "{}", t.render(&serde_json::Value::Object(names))?)?;
            for v in items {
                writeln!(tw, "{}", t.render(v)?)?;
            }
            tw.flush()?;
            Ok(())
        }
    }
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
    remove_each_telling(
        ids,
        |id| {
            let line = removed(&id);
            let f = remove(id);
            async move { f.await.map(|()| vec![line]) }
        },
        failed,
    )
    .await
}

/// [`remove_each`], where each removal tells the lines that say what it removed.
pub async fn remove_each_telling<Fut>(
    ids: Vec<String>,
    mut remove: impl FnMut(String) -> Fut,
    failed: impl Fn(&str) -> String,
) -> Result<(), RemoveFailed>
where
    Fut: Future<Output = Result<Vec<String>, tonic::Status>>,
{
    let mut first = None;
    for id in ids {
        match remove(id.clone()).await {
            Ok(lines) => {
                for line in lines {
                    println!("{line}");
                }
            }
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

/// Docker's `units.HumanSize`: decimal units, four significant digits.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    // %.4g: four significant digits, trailing zeros dropped.
    let digits = if v >= 1000.0 {
        0
    } else if v >= 100.0 {
        1
    } else if v >= 10.0 {
        2
    } else {
        3
    };
    let text = format!("{v:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{}", UNITS[i])
}

/// Asks `warning` and whether to go on; true for y or yes (Docker's prompt).
pub fn confirm(warning: &str) -> anyhow::Result<bool> {
    print!("{warning}\nAre you sure you want to continue? [y/N] ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// A prune's `Deleted KIND:` section (nothing when nothing went), as Docker prints it.
pub fn deleted(kind: &str, names: &[String]) {
    if names.is_empty() {
        return;
    }
    println!("Deleted {kind}:");
    for n in names {
        println!("{n}");
    }
    println!();
}

/// A time as Docker's lists print it (`2006-01-02 15:04:05 +0000 UTC`).
pub fn go_time(t: std::time::SystemTime) -> String {
    let text = humantime::format_rfc3339_seconds(t).to_string();
    let text = text.trim_end_matches('Z');
    let (date, time) = text.split_once('T').unwrap_or((text, ""));
    format!("{date} {time} +0000 UTC")
}

/// Prints what an `inspect` found: a JSON array (the default), or the template run on each
/// object, a line each (`-f`, as Docker's).
pub fn inspected(format: &Format, objects: Vec<serde_json::Value>) -> anyhow::Result<()> {
    match format {
        Format::Template(t) | Format::TableTemplate(t) => {
            let t = crate::template::Compiled::new(t)?;
            for v in &objects {
                println!("{}", t.render(v)?);
            }
            Ok(())
        }
        Format::Table | Format::Json => json(&serde_json::Value::Array(objects)),
    }
}

/// A `--since`/`--until` value as Docker reads it.
pub fn parse_time(
    flag: &str,
    s: &str,
    now: std::time::SystemTime,
) -> anyhow::Result<std::time::SystemTime> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    if let Ok(secs) = s.parse::<f64>()
        && secs >= 0.0
    {
        return Ok(std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(secs));
    }
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(now.checked_sub(d).unwrap_or(std::time::UNIX_EPOCH));
    }
    anyhow::bail!(
        "invalid value for \"{flag}\": failed to parse value as time or duration: \"{s}\""
    )
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
