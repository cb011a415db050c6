//! Image records: look one up, list them (the image commands, and `system df`'s measure).

use berth_proto::containerd::services::images::v1 as pb;
use berth_proto::containerd::services::images::v1::images_client::ImagesClient;
use tonic::transport::Channel;

use super::{Client, status};

pub fn api(c: &Client) -> ImagesClient<Channel> {
    ImagesClient::new(c.channel.clone())
}

/// The image record `name`.
pub async fn get(c: &Client, name: &str) -> anyhow::Result<pb::Image> {
    Ok(api(c)
        .get(c.req(pb::GetImageRequest {
            name: name.to_string(),
        }))
        .await
        .map_err(status)?
        .into_inner()
        .image
        .unwrap_or_default())
}

/// Every image of the namespace matching `filters`.
pub async fn list(c: &Client, filters: Vec<String>) -> anyhow::Result<Vec<pb::Image>> {
    Ok(api(c)
        .list(c.req(pb::ListImagesRequest { filters }))
        .await
        .map_err(status)?
        .into_inner()
        .images)
}
