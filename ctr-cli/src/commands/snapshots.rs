//! `berth snapshots ls|info|tree|usage|prepare|view|commit|mounts|diff|rm|label`: the
//! snapshotter's copy-on-write filesystems, as `ctr snapshots` shows them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use berth_proto::containerd::services::snapshots::v1 as pb;
use berth_proto::containerd::types::Mount;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::snapshots::{
    Create, api, create, list, mount_local, mounts, remove, stat, usage,
};
use crate::client::{Client, layers, status};
use crate::labels;
use crate::oci::human_size;
use crate::output::{self, Format};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The snapshotter to use (berthd's default when empty).
    #[arg(long, global = true, env = "BERTH_SNAPSHOTTER", default_value = "")]
    pub snapshotter: String,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// List snapshots.
    #[command(alias = "list")]
    Ls {
        /// Filters (containerd syntax: kind==committed, parent==..., labels.k==v).
        filters: Vec<String>,
    },
    /// Show one snapshot as JSON.
    Info { key: String },
    /// Show the snapshots as a tree of parents and children.
    Tree,
    /// Show disk usage of snapshots (all when no key is given).
    Usage {
        keys: Vec<String>,
        /// Print bytes instead of human sizes.
        #[arg(short = 'b')]
        bytes: bool,
    },
    /// Create an active (writable) snapshot.
    Prepare {
        key: String,
        parent: Option<String>,
        /// Mount it onto this directory (the printed mounts otherwise).
        #[arg(long)]
        target: Option<PathBuf>,
        /// Print the mounts as mount(8) commands.
        #[arg(long)]
        mounts: bool,
        /// Labels (key=value).
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Create a read-only view of a committed snapshot.
    View {
        key: String,
        parent: Option<String>,
        #[arg(long)]
        target: Option<PathBuf>,
        #[arg(long)]
        mounts: bool,
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Commit an active snapshot under a name.
    Commit {
        name: String,
        key: String,
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Print the mounts of an active snapshot or a view as mount(8) commands for TARGET.
    Mounts { target: String, key: String },
    /// Write the changes of snapshot A against B (default: A's parent) as a layer tar.
    Diff {
        a: String,
        b: Option<String>,
        /// Layer media type (gzip-compressed OCI layer by default).
        #[arg(long, default_value = "application/vnd.oci.image.layer.v1.tar+gzip")]
        media_type: String,
        /// Write the layer here instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Keep the layer in the content store (a gc.root label) and print its digest.
        #[arg(long)]
        keep: bool,
    },
    /// Remove snapshots.
    #[command(alias = "remove", alias = "delete")]
    Rm { keys: Vec<String> },
    /// Set or clear labels (key=value, key= to clear).
    Label { key: String, labels: Vec<String> },
}

fn kind_name(kind: i32) -> &'static str {
    match pb::Kind::try_from(kind).unwrap_or(pb::Kind::Unknown) {
        pb::Kind::View => "View",
        pb::Kind::Active => "Active",
        pb::Kind::Committed => "Committed",
        pb::Kind::Unknown => "Unknown",
    }
}

fn info_json(i: &pb::Info) -> Value {
    json!({
        "Kind": kind_name(i.kind),
        "Name": i.name,
        "Parent": if i.parent.is_empty() { Value::Null } else { json!(i.parent) },
        "Labels": i.labels,
        "Created": output::rfc3339_nanos(i.created_at.as_ref()),
        "Updated": output::rfc3339_nanos(i.updated_at.as_ref()),
    })
}

/// A mount as the `mount(8)` command that performs it.
pub fn mount_command(m: &Mount, target: &str) -> String {
    let mut s = format!("mount -t {} {} {}", m.r#type, m.source, target);
    if !m.options.is_empty() {
        s.push_str(" -o ");
        s.push_str(&m.options.join(","));
    }
    s
}

/// Labels of a snapshot made by hand: a garbage-collection root, so it stays until
/// `snapshots rm` (containerd collects unreferenced snapshots made without a lease).
fn kept_labels(args: &[String]) -> BTreeMap<String, String> {
    let mut labels = output::parse_labels(args);
    labels
        .entry(labels::GC_ROOT.to_string())
        .or_insert_with(|| humantime::format_rfc3339(std::time::SystemTime::now()).to_string());
    labels
}

fn show_mounts(mounts: &[Mount], target: &str) {
    for m in mounts {
        println!("{}", mount_command(m, target));
    }
}

pub async fn run(c: &Client, args: Args, format: Format) -> anyhow::Result<()> {
    let sn = args.snapshotter;
    match args.cmd {
        Cmd::Ls { filters } => ls(c, &sn, filters, format).await,
        Cmd::Info { key } => output::json(&info_json(&stat(c, &sn, &key).await?)),
        Cmd::Tree => {
            let infos = list(c, &sn, Vec::new()).await?;
            print!("{}", tree(&infos));
            Ok(())
        }
        Cmd::Usage { keys, bytes } => show_usage(c, &sn, keys, bytes, format).await,
        Cmd::Prepare {
            key,
            parent,
            target,
            mounts,
            labels,
        } => {
            let m = create_kept(c, &sn, Create::Active, &key, parent, &labels).await?;
            finish_create(&m, &key, target, mounts).await
        }
        Cmd::View {
            key,
            parent,
            target,
            mounts,
            labels,
        } => {
            let m = create_kept(c, &sn, Create::View, &key, parent, &labels).await?;
            finish_create(&m, &key, target, mounts).await
        }
        Cmd::Commit { name, key, labels } => commit(c, sn, name, key, &labels).await,
        Cmd::Mounts { target, key } => {
            show_mounts(&mounts(c, &sn, &key).await?, &target);
            Ok(())
        }
        Cmd::Diff {
            a,
            b,
            media_type,
            output,
            keep,
        } => {
            let job = DiffJob {
                a,
                b,
                media_type,
                output,
                keep,
            };
            diff(c, &sn, job).await
        }
        Cmd::Rm { keys } => rm(c, &sn, keys).await,
        Cmd::Label { key, labels } => label(c, sn, key, &labels).await,
    }
}

async fn ls(c: &Client, sn: &str, filters: Vec<String>, format: Format) -> anyhow::Result<()> {
    let infos = list(c, sn, filters).await?;
    if format == Format::Json {
        return output::json(&Value::Array(infos.iter().map(info_json).collect()));
    }
    let rows: Vec<Vec<String>> = infos
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                i.parent.clone(),
                kind_name(i.kind).to_string(),
            ]
        })
        .collect();
    output::table(&["KEY", "PARENT", "KIND"], &rows)
}

/// `snapshots usage`: the size and inodes of each key (every snapshot when none is given).
async fn show_usage(
    c: &Client,
    sn: &str,
    keys: Vec<String>,
    bytes: bool,
    format: Format,
) -> anyhow::Result<()> {
    let keys = if keys.is_empty() {
        list(c, sn, Vec::new())
            .await?
            .into_iter()
            .map(|i| i.name)
            .collect()
    } else {
        keys
    };
    let mut rows = Vec::new();
    let mut json_rows = Vec::new();
    for key in keys {
        let u = usage(c, sn, &key).await?;
        json_rows.push(json!({"key": key, "size": u.size, "inodes": u.inodes}));
        let size = if bytes {
            u.size.to_string()
        } else {
            human_size(u.size)
        };
        rows.push(vec![key, size, u.inodes.to_string()]);
    }
    if format == Format::Json {
        return output::json(&Value::Array(json_rows));
    }
    output::table(&["KEY", "SIZE", "INODES"], &rows)
}

/// `snapshots prepare` / `view`: the snapshot, made a garbage-collection root.
async fn create_kept(
    c: &Client,
    sn: &str,
    kind: Create,
    key: &str,
    parent: Option<String>,
    labels: &[String],
) -> anyhow::Result<Vec<Mount>> {
    create(c, sn, kind, key, parent, kept_labels(labels), None)
        .await
        .map_err(status)
}

async fn finish_create(
    mounts: &[Mount],
    key: &str,
    target: Option<PathBuf>,
    print: bool,
) -> anyhow::Result<()> {
    if let Some(target) = target {
        mount_local(mounts, target.clone())
            .await
            .with_context(|| format!("mount snapshot {key} on {}", target.display()))?;
        println!("{}", target.display());
    } else if print {
        show_mounts(mounts, "/tmp/mnt");
    }
    Ok(())
}

async fn commit(
    c: &Client,
    sn: String,
    name: String,
    key: String,
    labels: &[String],
) -> anyhow::Result<()> {
    api(c)
        .commit(c.req(pb::CommitSnapshotRequest {
            snapshotter: sn,
            name,
            key,
            labels: output::parse_labels(labels),
            parent: String::new(),
        }))
        .await
        .map_err(status)?;
    Ok(())
}

async fn rm(c: &Client, sn: &str, keys: Vec<String>) -> anyhow::Result<()> {
    output::remove_each(
        keys,
        |key| async move { remove(c, sn, &key).await },
        |key| key.to_string(),
        |key| format!("unable to remove snapshot {key}"),
    )
    .await?;
    Ok(())
}

async fn label(c: &Client, sn: String, key: String, labels: &[String]) -> anyhow::Result<()> {
    let (labels, mask) = output::label_update(labels);
    let info = api(c)
        .update(c.req(pb::UpdateSnapshotRequest {
            snapshotter: sn,
            info: Some(pb::Info {
                name: key,
                labels,
                ..Default::default()
            }),
            update_mask: Some(mask),
        }))
        .await
        .map_err(status)?
        .into_inner()
        .info
        .unwrap_or_default();
    println!("{}", output::labels(&info.labels));
    Ok(())
}

/// What `snapshots diff` was asked for.
struct DiffJob {
    /// The upper side.
    a: String,
    /// The lower side (A's parent when not given).
    b: Option<String>,
    media_type: String,
    output: Option<PathBuf>,
    keep: bool,
}

/// `snapshots diff`: views of both sides, the Diff service writes the layer into the
/// content store under a short lease, and the layer is copied out.
async fn diff(c: &Client, sn: &str, job: DiffJob) -> anyhow::Result<()> {
    let info_a = stat(c, sn, &job.a).await?;
    let lease = c
        .create_lease(None, std::time::Duration::from_secs(3600), &[])
        .await?;
    let result = diff_leased(c, sn, job, &info_a, &lease).await;
    if let Err(e) = c.delete_lease(&lease).await {
        eprintln!("berth: delete lease {lease}: {e:#}");
    }
    result
}

/// The steps of `snapshots diff` under its lease. The temporary views are removed once the
/// layer is written (on a failure the lease's end takes them).
async fn diff_leased(
    c: &Client,
    sn: &str,
    job: DiffJob,
    info_a: &pb::Info,
    lease: &str,
) -> anyhow::Result<()> {
    let lower_key = job.b.unwrap_or_else(|| info_a.parent.clone());
    let tmp = format!("diff-{}", uuid::Uuid::new_v4().simple());
    let mut views = Vec::new();
    let upper = if kind_name(info_a.kind) == "Active" {
        mounts(c, sn, &job.a).await?
    } else {
        let key = format!("{tmp}-upper");
        views.push(key.clone());
        layers::temp_view(c, sn, &key, job.a, lease).await?
    };
    let lower = if lower_key.is_empty() {
        Vec::new()
    } else {
        let key = format!("{tmp}-lower");
        views.push(key.clone());
        layers::temp_view(c, sn, &key, lower_key, lease).await?
    };
    let labels = if job.keep {
        kept_labels(&[])
    } else {
        BTreeMap::new()
    };
    let desc = layers::write_layer(c, lower, upper, job.media_type, labels, lease).await?;
    for key in views {
        let _ = remove(c, sn, &key).await;
    }
    if job.keep {
        println!("{} {} {}", desc.digest, desc.size, desc.media_type);
        return Ok(());
    }
    copy_out(c, &desc.digest, job.output).await
}

/// The layer `digest` written to `out`, or to stdout.
async fn copy_out(c: &Client, digest: &str, out: Option<PathBuf>) -> anyhow::Result<()> {
    let data = crate::oci::read_blob(c, digest).await?;
    match out {
        Some(path) => {
            std::fs::write(&path, &data).with_context(|| format!("write {}", path.display()))?
        }
        None => std::io::stdout().lock().write_all(&data)?,
    }
    Ok(())
}

/// The snapshots as a forest: each root, then its children indented under it.
pub fn tree(infos: &[pb::Info]) -> String {
    let mut children: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let names: std::collections::BTreeSet<&str> = infos.iter().map(|i| i.name.as_str()).collect();
    let mut roots = Vec::new();
    for i in infos {
        if i.parent.is_empty() || !names.contains(i.parent.as_str()) {
            roots.push(i.name.as_str());
        } else {
            children.entry(i.parent.as_str()).or_default().push(&i.name);
        }
    }
    let mut out = String::new();
    fn walk(name: &str, depth: usize, children: &BTreeMap<&str, Vec<&str>>, out: &mut String) {
        out.push_str(&"  ".repeat(depth));
        out.push_str(&format!("\\_ {name}\n"));
        for c in children.get(name).into_iter().flatten() {
            walk(c, depth + 1, children, out);
        }
    }
    for r in roots {
        walk(r, 0, &children, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, parent: &str) -> pb::Info {
        pb::Info {
            name: name.into(),
            parent: parent.into(),
            ..Default::default()
        }
    }

    #[test]
    fn tree_indents_children_under_parents() {
        let t = tree(&[
            info("a", ""),
            info("b", "a"),
            info("c", "b"),
            info("d", "a"),
        ]);
        assert_eq!(t, "\\_ a\n  \\_ b\n    \\_ c\n  \\_ d\n");
    }

    #[test]
    fn mount_commands() {
        let m = Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![
                "workdir=/w".into(),
                "upperdir=/u".into(),
                "lowerdir=/l".into(),
            ],
        };
        assert_eq!(
            mount_command(&m, "/mnt"),
            "mount -t overlay overlay /mnt -o workdir=/w,upperdir=/u,lowerdir=/l"
        );
    }
}
