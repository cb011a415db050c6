//! `berth content`: the blobs of the content store (ctr's `content` group).

use std::io::{Read, Write};

use anyhow::Context;
use berth_proto::containerd::services::content::v1 as pb;
use berth_proto::containerd::services::content::v1::content_client::ContentClient;
use clap::Subcommand;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

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
    let mut api = ContentClient::new(c.channel.clone());
    match cmd {
        Cmd::Ls { quiet, filters } => {
            let mut stream = api
                .list(c.req(pb::ListContentRequest { filters }))
                .await
                .map_err(status)?
                .into_inner();
            let mut infos = Vec::new();
            while let Some(batch) = stream.message().await.map_err(status)? {
                infos.extend(batch.info);
            }
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
        }
        Cmd::Get { digest } => {
            let mut stream = api
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
        }
        Cmd::Rm { digests } => {
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
        }
        Cmd::Label { digest, labels } => {
            let (labels, mask) = output::label_update(&labels);
            let info = api
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
        }
        Cmd::Ingest {
            reference,
            expected_digest,
            expected_size,
        } => {
            let mut data = Vec::new();
            std::io::stdin()
                .read_to_end(&mut data)
                .context("read stdin")?;
            let (tx, rx) = mpsc::channel(4);
            let expected = expected_digest.unwrap_or_default();
            let chunks: Vec<Vec<u8>> = data.chunks(1 << 20).map(<[u8]>::to_vec).collect();
            let total = if expected_size > 0 {
                expected_size
            } else {
                data.len() as i64
            };
            let reference2 = reference.clone();
            tokio::spawn(async move {
                let mut offset = 0i64;
                let first = pb::WriteContentRequest {
                    action: pb::WriteAction::Stat as i32,
                    r#ref: reference2.clone(),
                    total,
                    expected: expected.clone(),
                    ..Default::default()
                };
                if tx.send(first).await.is_err() {
                    return;
                }
                for chunk in chunks {
                    let n = chunk.len() as i64;
                    let msg = pb::WriteContentRequest {
                        action: pb::WriteAction::Write as i32,
                        r#ref: reference2.clone(),
                        offset,
                        data: chunk,
                        ..Default::default()
                    };
                    offset += n;
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
                let _ = tx
                    .send(pb::WriteContentRequest {
                        action: pb::WriteAction::Commit as i32,
                        r#ref: reference2,
                        total,
                        offset,
                        expected,
                        ..Default::default()
                    })
                    .await;
            });
            let mut resp = api
                .write(c.req(ReceiverStream::new(rx)))
                .await
                .map_err(status)?
                .into_inner();
            let mut last = None;
            while let Some(r) = resp.message().await.map_err(|e| {
                anyhow::anyhow!("failed commit on ref {reference:?}: {}", e.message())
            })? {
                last = Some(r);
            }
            if let Some(r) = last {
                println!("{}", r.digest);
            }
        }
        Cmd::Fetch {
            reference,
            platform,
            all_platforms,
            plain_http,
        } => {
            crate::client::transfer::fetch(
                c,
                reference,
                platform,
                all_platforms,
                plain_http,
                false,
            )
            .await?;
        }
        Cmd::Active { filters } => {
            let list = api
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
            output::table(&["REF", "SIZE", "AGE"], &rows)?;
        }
    }
    Ok(())
}
