//! The content store's blobs: listing them (`content ls`, and `system df`'s measure).

use berth_proto::containerd::services::content::v1 as pb;
use berth_proto::containerd::services::content::v1::content_client::ContentClient;
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
