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

/// The image `name` names as Docker reads a name: as given, else normalized (`busybox` is
/// `docker.io/library/busybox:latest`, `host:5000/repo` is `host:5000/repo:latest`).
pub async fn find(c: &Client, name: &str) -> anyhow::Result<pb::Image> {
    match get(c, name).await {
        Ok(img) => Ok(img),
        Err(e) => {
            let normalized = crate::commands::docker::run::normalize(name);
            if normalized == name {
                return Err(e);
            }
            get(c, &normalized).await.map_err(|_| e)
        }
    }
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
