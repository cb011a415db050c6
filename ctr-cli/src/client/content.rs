//! The content store's blobs: listing them (`content ls`, and `system df`'s measure) and
//! writing them (`content ingest`, and the images `commit` makes).

use std::collections::BTreeMap;

use berth_proto::containerd::services::content::v1 as pb;
use berth_proto::containerd::services::content::v1::content_client::ContentClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::{Client, status};

pub fn api(c: &Client) -> ContentClient<Channel> {
    ContentClient::new(c.channel.clone())
}

/// Every blob of the namespace matching `filters`.
pub async fn list(c: &Client, filters: Vec<String>) -> anyhow::Result<Vec<pb::Info>> {
    let mut stream = api(c)
        .list(c.req(pb::ListContentRequest { filters }))
        .await
        .map_err(status)?
        .into_inner();
    let mut out = Vec::new();
    while let Some(batch) = stream.message().await.map_err(status)? {
        out.extend(batch.info);
    }
    Ok(out)
}

/// One write session.
#[derive(Debug, Default, Clone)]
pub struct Write {
    /// The ingest's reference.
    pub reference: String,
    /// The digest the data must have ("" for any).
    pub expected: String,
    /// The size the data must have (0: its own length).
    pub total: i64,
    /// Labels of the committed blob (garbage-collection references...).
    pub labels: BTreeMap<String, String>,
    /// The lease it is written under.
    pub lease: Option<String>,
}

/// Writes `data` (stat, the data in 1 MiB chunks, commit); the committed digest, when the
/// server reported one.
pub async fn write(c: &Client, w: Write, data: Vec<u8>) -> anyhow::Result<Option<String>> {
    let (tx, rx) = mpsc::channel(4);
    let total = if w.total > 0 {
        w.total
    } else {
        data.len() as i64
    };
    let chunks: Vec<Vec<u8>> = data.chunks(1 << 20).map(<[u8]>::to_vec).collect();
    let reference = w.reference.clone();
    tokio::spawn(send_writes(tx, w.clone(), total, chunks));
    let mut resp = api(c)
        .write(c.maybe_leased(ReceiverStream::new(rx), w.lease.as_deref()))
        .await
        .map_err(status)?
        .into_inner();
    let mut last = None;
    while let Some(r) = resp
        .message()
        .await
        .map_err(|e| anyhow::anyhow!("failed commit on ref {reference:?}: {}", e.message()))?
    {
        last = Some(r);
    }
    Ok(last.map(|r| r.digest))
}

/// The requests of one write session: a stat, each chunk at its offset, the commit. Stops
/// when the server has gone away.
async fn send_writes(
    tx: mpsc::Sender<pb::WriteContentRequest>,
    w: Write,
    total: i64,
    chunks: Vec<Vec<u8>>,
) {
    let mut offset = 0i64;
    let first = pb::WriteContentRequest {
        action: pb::WriteAction::Stat as i32,
        r#ref: w.reference.clone(),
        total,
        expected: w.expected.clone(),
        ..Default::default()
    };
    if tx.send(first).await.is_err() {
        return;
    }
    for chunk in chunks {
        let n = chunk.len() as i64;
        let msg = pb::WriteContentRequest {
            action: pb::WriteAction::Write as i32,
            r#ref: w.reference.clone(),
            offset,
            data: chunk.into(),
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
            r#ref: w.reference,
            total,
            offset,
            expected: w.expected,
            labels: w.labels,
            ..Default::default()
        })
        .await;
}
