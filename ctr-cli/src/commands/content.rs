//! `berth content`: the blobs of the content store (ctr's `content` group).

use std::io::{Read, Write};

use anyhow::Context;
use berth_proto::containerd::services::content::v1 as pb;
use clap::Subcommand;

use crate::client::content::{api, list};
use crate::client::{Client, status};
use crate::output::{self, Format};

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// List blobs, optionally filtered (digest, size, labels.*).
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
        filters: Vec<String>,
    },
    /// Write a blob to stdout.
    Get { digest: String },
    /// Remove blobs from the namespace.
    #[command(alias = "remove", alias = "delete", alias = "del")]
    Rm { digests: Vec<String> },
    /// Set labels (KEY=VALUE; KEY= removes) on a blob.
    Label { digest: String, labels: Vec<String> },
    /// Store stdin as a blob under a writer ref, verified against the expected digest/size.
    Ingest {
        reference: String,
        #[arg(long)]
        expected_digest: Option<String>,
        #[arg(long, default_value_t = 0)]
        expected_size: i64,
    },
    /// Fetch an image's content from a registry without creating an image record.
    Fetch {
        reference: String,
        #[arg(long)]
        platform: Option<String>,
        #[arg(long)]
        all_platforms: bool,
        #[arg(long)]
        plain_http: bool,
    },
    /// List in-progress writes.
    Active { filters: Vec<String> },
}

pub async fn run(c: &Client, cmd: Cmd, format: Format) -> anyhow::Result<()> {
    match cmd {
        Cmd::Ls { quiet, filters } => ls(c, quiet, filters, format).await,
        Cmd::Get { digest } => get(c, digest).await,
        Cmd::Rm { digests } => rm(c, digests).await,
        Cmd::Label { digest, labels } => label(c, digest, &labels).await,
        Cmd::Ingest {
            reference,
            expected_digest,
            expected_size,
        } => ingest(c, reference, expected_digest, expected_size).await,
        Cmd::Fetch {
            reference,
            platform,
            all_platforms,
            plain_http,
        } => {
            crate::client::transfer::fetch(c, reference, platform, all_platforms, plain_http, false)
                .await
        }
        Cmd::Active { filters } => active(c, filters).await,
    }
}

async fn ls(c: &Client, quiet: bool, filters: Vec<String>, format: Format) -> anyhow::Result<()> {
    let infos = list(c, filters).await?;
    if quiet {
        for i in &infos {
            println!("{}", i.digest);
        }
    } else if format == Format::Json {
        output::json(&serde_json::Value::Array(
            infos
                .iter()
                .map(|i| {
                    serde_json::json!({
                        "digest": i.digest, "size": i.size, "labels": i.labels,
                        "created_at": output::rfc3339_nanos(i.created_at.as_ref()),
                    })
                })
                .collect(),
        ))?;
    } else {
        let rows: Vec<Vec<String>> = infos
            .iter()
            .map(|i| {
                vec![
                    i.digest.clone(),
                    crate::oci::human_size(i.size),
                    output::ago(i.created_at.as_ref()),
                    output::labels(&i.labels),
                ]
            })
            .collect();
        output::table(&["DIGEST", "SIZE", "AGE", "LABELS"], &rows)?;
    }
    Ok(())
}

/// `content get`: the blob streamed to stdout as it arrives.
async fn get(c: &Client, digest: String) -> anyhow::Result<()> {
    let mut stream = api(c)
        .read(c.req(pb::ReadContentRequest {
            digest,
            offset: 0,
            size: 0,
        }))
        .await
        .map_err(status)?
        .into_inner();
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = stream.message().await.map_err(status)? {
        out.write_all(&chunk.data)?;
    }
    out.flush()?;
    Ok(())
}

async fn rm(c: &Client, digests: Vec<String>) -> anyhow::Result<()> {
    let api = api(c);
    output::remove_each(
        digests,
        |digest| {
            let mut api = api.clone();
            async move {
                api.delete(c.req(pb::DeleteContentRequest { digest }))
                    .await
                    .map(drop)
            }
        },
        |digest| digest.to_string(),
        |digest| format!("unable to delete {digest}"),
    )
    .await?;
    Ok(())
}

async fn label(c: &Client, digest: String, labels: &[String]) -> anyhow::Result<()> {
    let (labels, mask) = output::label_update(labels);
    let info = api(c)
        .update(c.req(pb::UpdateRequest {
            info: Some(pb::Info {
                digest,
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

/// `content ingest`: stdin is read whole, then written under `reference` (stat, the data in
/// 1 MiB chunks, commit); the committed digest is printed.
async fn ingest(
    c: &Client,
    reference: String,
    expected_digest: Option<String>,
    expected_size: i64,
) -> anyhow::Result<()> {
    let mut data = Vec::new();
    std::io::stdin()
        .read_to_end(&mut data)
        .context("read stdin")?;
    let write = crate::client::content::Write {
        reference,
        expected: expected_digest.unwrap_or_default(),
        total: expected_size,
        ..Default::default()
    };
    if let Some(digest) = crate::client::content::write(c, write, data).await? {
        println!("{digest}");
    }
    Ok(())
}

async fn active(c: &Client, filters: Vec<String>) -> anyhow::Result<()> {
    let list = api(c)
        .list_statuses(c.req(pb::ListStatusesRequest { filters }))
        .await
        .map_err(status)?
        .into_inner()
        .statuses;
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.r#ref.clone(),
                format!("{}/{}", s.offset, s.total),
                output::ago(s.started_at.as_ref()),
            ]
        })
        .collect();
    output::table(&["REF", "SIZE", "AGE"], &rows)
}
