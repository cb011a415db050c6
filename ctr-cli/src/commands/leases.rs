//! `berth leases`: create, ls, rm, and the resources a lease holds.

use std::time::{Duration, SystemTime};

use berth_proto::containerd::services::leases::v1 as pb;
use clap::Subcommand;

use crate::client::leases::api;
use crate::client::{Client, status};
use crate::labels;
use crate::output::{self, Format};

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create a lease (a random id unless one is given); prints its id.
    Create {
        id: Option<String>,
        /// Expire the lease after this long (e.g. 30s, 24h); 0 for never.
        #[arg(short = 'x', long, value_parser = humantime::parse_duration, default_value = "24h")]
        expires: Duration,
        /// Labels, KEY=VALUE (repeatable).
        #[arg(short, long = "label")]
        labels: Vec<String>,
    },
    /// List leases, optionally filtered.
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
        filters: Vec<String>,
    },
    /// Delete leases.
    #[command(alias = "remove", alias = "delete")]
    Rm {
        ids: Vec<String>,
        /// Wait for the resources the lease held to be collected.
        #[arg(long)]
        sync: bool,
    },
    /// List the resources a lease holds.
    Resources { id: String },
    /// Add a resource (TYPE is content, ingests, images or snapshots/<snapshotter>).
    AddResource {
        id: String,
        r#type: String,
        resource: String,
    },
    /// Remove a resource from a lease.
    DeleteResource {
        id: String,
        r#type: String,
        resource: String,
    },
}

pub async fn run(c: &Client, cmd: Cmd, format: Format) -> anyhow::Result<()> {
    match cmd {
        Cmd::Create {
            id,
            expires,
            labels,
        } => create(c, id, expires, &labels).await,
        Cmd::Ls { quiet, filters } => ls(c, quiet, filters, format).await,
        Cmd::Rm { ids, sync } => rm(c, ids, sync).await,
        Cmd::Resources { id } => resources(c, id, format).await,
        Cmd::AddResource {
            id,
            r#type,
            resource,
        } => {
            api(c)
                .add_resource(c.req(pb::AddResourceRequest {
                    id,
                    resource: Some(pb::Resource {
                        id: resource,
                        r#type,
                    }),
                }))
                .await
                .map_err(status)?;
            Ok(())
        }
        Cmd::DeleteResource {
            id,
            r#type,
            resource,
        } => {
            api(c)
                .delete_resource(c.req(pb::DeleteResourceRequest {
                    id,
                    resource: Some(pb::Resource {
                        id: resource,
                        r#type,
                    }),
                }))
                .await
                .map_err(status)?;
            Ok(())
        }
    }
}

/// `leases create`: the lease, expiring after `expires` (never for 0); prints its id.
async fn create(
    c: &Client,
    id: Option<String>,
    expires: Duration,
    labels: &[String],
) -> anyhow::Result<()> {
    let mut labels = output::parse_labels(labels);
    if !expires.is_zero() {
        let at = SystemTime::now() + expires;
        labels.insert(
            labels::GC_EXPIRE.into(),
            humantime::format_rfc3339_seconds(at).to_string(),
        );
    }
    let lease = api(c)
        .create(c.req(pb::CreateRequest {
            id: id.unwrap_or_default(),
            labels,
        }))
        .await
        .map_err(status)?
        .into_inner()
        .lease
        .unwrap_or_default();
    println!("{}", lease.id);
    Ok(())
}

async fn ls(c: &Client, quiet: bool, filters: Vec<String>, format: Format) -> anyhow::Result<()> {
    let list = api(c)
        .list(c.req(pb::ListRequest { filters }))
        .await
        .map_err(status)?
        .into_inner()
        .leases;
    if quiet {
        for l in &list {
            println!("{}", l.id);
        }
    } else if format == Format::Json {
        output::json(&serde_json::Value::Array(
            list.iter()
                .map(|l| {
                    serde_json::json!({
                        "id": l.id,
                        "created_at": output::rfc3339_nanos(l.created_at.as_ref()),
                        "labels": l.labels,
                    })
                })
                .collect(),
        ))?;
    } else {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|l| {
                vec![
                    l.id.clone(),
                    output::rfc3339(l.created_at.as_ref()),
                    output::labels(&l.labels),
                ]
            })
            .collect();
        output::table(&["ID", "CREATED AT", "LABELS"], &rows)?;
    }
    Ok(())
}

async fn rm(c: &Client, ids: Vec<String>, sync: bool) -> anyhow::Result<()> {
    let api = api(c);
    output::remove_each(
        ids,
        |id| {
            let mut api = api.clone();
            async move {
                api.delete(c.req(pb::DeleteRequest { id, sync }))
                    .await
                    .map(drop)
            }
        },
        |id| id.to_string(),
        |id| format!("unable to delete lease {id}"),
    )
    .await?;
    Ok(())
}

async fn resources(c: &Client, id: String, format: Format) -> anyhow::Result<()> {
    let list = api(c)
        .list_resources(c.req(pb::ListResourcesRequest { id }))
        .await
        .map_err(status)?
        .into_inner()
        .resources;
    if format == Format::Json {
        output::json(&serde_json::Value::Array(
            list.iter()
                .map(|r| serde_json::json!({"type": r.r#type, "id": r.id}))
                .collect(),
        ))
    } else {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|r| vec![r.r#type.clone(), r.id.clone()])
            .collect();
        output::table(&["TYPE", "ID"], &rows)
    }
}
