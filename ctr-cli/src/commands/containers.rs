//! `berth containers`: create, ls, info, label, rm (the container records, not tasks).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use berth_proto::containerd::services::containers::v1 as pb;
use clap::Subcommand;

use crate::client::containers::api;
use crate::client::{Client, status};
use crate::labels;
use crate::output::{self, Format};

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create a container record from an OCI runtime spec (JSON file, or - for stdin).
    Create {
        id: String,
        /// The OCI runtime spec (config.json) to store.
        #[arg(long)]
        spec: PathBuf,
        /// Runtime name.
        #[arg(long, default_value = labels::RUNC_RUNTIME)]
        runtime: String,
        /// Image reference to record.
        #[arg(long, default_value = "")]
        image: String,
        /// Snapshotter and snapshot key of the rootfs.
        #[arg(long, default_value = "")]
        snapshotter: String,
        #[arg(long, default_value = "")]
        snapshot_key: String,
        /// Labels, KEY=VALUE (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// List containers, optionally filtered (containerd filter syntax).
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
        filters: Vec<String>,
    },
    /// Show a container's record as JSON.
    Info {
        id: String,
        /// Print only the spec.
        #[arg(long)]
        spec: bool,
    },
    /// Set labels (KEY=VALUE; KEY= removes) on a container.
    Label { id: String, labels: Vec<String> },
    /// Delete container records.
    #[command(alias = "remove", alias = "delete", alias = "del")]
    Rm { ids: Vec<String> },
}

fn info_json(c: &pb::Container) -> serde_json::Value {
    let ext: BTreeMap<&String, serde_json::Value> = c
        .extensions
        .iter()
        .map(|(k, v)| (k, output::any_json(v)))
        .collect();
    serde_json::json!({
        "ID": c.id,
        "Labels": c.labels,
        "Image": c.image,
        "Runtime": {
            "Name": c.runtime.as_ref().map(|r| r.name.clone()).unwrap_or_default(),
            "Options": c.runtime.as_ref().and_then(|r| r.options.as_ref()).map(output::any_json),
        },
        "SnapshotKey": c.snapshot_key,
        "Snapshotter": c.snapshotter,
        "CreatedAt": output::rfc3339_nanos(c.created_at.as_ref()),
        "UpdatedAt": output::rfc3339_nanos(c.updated_at.as_ref()),
        "Extensions": ext,
        "SandboxID": c.sandbox,
        "Spec": c.spec.as_ref().map(output::any_json),
    })
}

pub async fn run(c: &Client, cmd: Cmd, format: Format) -> anyhow::Result<()> {
    match cmd {
        Cmd::Create {
            id,
            spec,
            runtime,
            image,
            snapshotter,
            snapshot_key,
            labels,
        } => {
            let spec = read_spec(&spec)?;
            let container = pb::Container {
                id,
                labels: output::parse_labels(&labels),
                image,
                runtime: Some(pb::container::Runtime {
                    name: runtime,
                    options: None,
                }),
                spec: Some(prost_types::Any {
                    type_url: labels::SPEC_TYPE_URL.to_string(),
                    value: spec,
                }),
                snapshotter,
                snapshot_key,
                ..Default::default()
            };
            create(c, container).await
        }
        Cmd::Ls { quiet, filters } => ls(c, quiet, filters, format).await,
        Cmd::Info { id, spec } => info(c, id, spec).await,
        Cmd::Label { id, labels } => label(c, id, &labels).await,
        Cmd::Rm { ids } => rm(c, ids).await,
    }
}

/// The spec file's bytes (stdin for `-`), checked to be JSON.
fn read_spec(spec: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = if spec.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)
            .context("read spec from stdin")?;
        b
    } else {
        std::fs::read(spec).with_context(|| format!("read spec {}", spec.display()))?
    };
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .with_context(|| format!("spec {} is not valid JSON", spec.display()))?;
    Ok(bytes)
}

async fn create(c: &Client, container: pb::Container) -> anyhow::Result<()> {
    let created = api(c)
        .create(c.req(pb::CreateContainerRequest {
            container: Some(container),
        }))
        .await
        .map_err(status)?
        .into_inner();
    if let Some(c) = created.container {
        println!("{}", c.id);
    }
    Ok(())
}

async fn ls(c: &Client, quiet: bool, filters: Vec<String>, format: Format) -> anyhow::Result<()> {
    let list = api(c)
        .list(c.req(pb::ListContainersRequest { filters }))
        .await
        .map_err(status)?
        .into_inner()
        .containers;
    if quiet {
        for ct in &list {
            println!("{}", ct.id);
        }
    } else if format == Format::Json {
        output::json(&serde_json::Value::Array(
            list.iter().map(info_json).collect(),
        ))?;
    } else {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|ct| {
                vec![
                    ct.id.clone(),
                    if ct.image.is_empty() {
                        "-".into()
                    } else {
                        ct.image.clone()
                    },
                    ct.runtime
                        .as_ref()
                        .map(|r| r.name.clone())
                        .unwrap_or_default(),
                ]
            })
            .collect();
        output::table(&["CONTAINER", "IMAGE", "RUNTIME"], &rows)?;
    }
    Ok(())
}

/// `containers info`: the record as JSON (only its spec with `--spec`).
async fn info(c: &Client, id: String, spec: bool) -> anyhow::Result<()> {
    let ct = api(c)
        .get(c.req(pb::GetContainerRequest { id }))
        .await
        .map_err(status)?
        .into_inner()
        .container
        .unwrap_or_default();
    if spec {
        output::json(&ct.spec.as_ref().map(output::any_json).unwrap_or_default())
    } else {
        output::json(&info_json(&ct))
    }
}

async fn label(c: &Client, id: String, labels: &[String]) -> anyhow::Result<()> {
    let (labels, mask) = output::label_update(labels);
    let ct = api(c)
        .update(c.req(pb::UpdateContainerRequest {
            container: Some(pb::Container {
                id,
                labels,
                ..Default::default()
            }),
            update_mask: Some(mask),
        }))
        .await
        .map_err(status)?
        .into_inner()
        .container
        .unwrap_or_default();
    println!("{}", output::labels(&ct.labels));
    Ok(())
}

async fn rm(c: &Client, ids: Vec<String>) -> anyhow::Result<()> {
    let api = api(c);
    output::remove_each(
        ids,
        |id| {
            let mut api = api.clone();
            async move {
                api.delete(c.req(pb::DeleteContainerRequest { id }))
                    .await
                    .map(drop)
            }
        },
        |id| id.to_string(),
        |id| format!("failed to delete container {id:?}"),
    )
    .await?;
    Ok(())
}
