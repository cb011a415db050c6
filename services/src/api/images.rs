//! `containerd.services.images.v1.Images`.

use crate::api::status::OrStatus;
use berth_proto::containerd::services::images::v1 as pb;
use berth_proto::containerd::services::images::v1::images_server::Images;
use berth_proto::containerd::types::Descriptor as WireDescriptor;
use tonic::{Request, Response, Status};

use super::Convert;
use super::{Services, namespace_required, to_timestamp};
use crate::error::Error;
use crate::filters::Filter;
use crate::images::{Descriptor, Image};

impl Convert<Descriptor> for WireDescriptor {
    fn convert(self) -> Descriptor {
        let d = self;
        Descriptor {
            media_type: d.media_type,
            digest: d.digest,
            size: d.size,
            annotations: d.annotations,
        }
    }
}

impl Convert<WireDescriptor> for Descriptor {
    fn convert(self) -> WireDescriptor {
        let d = self;
        WireDescriptor {
            media_type: d.media_type,
            digest: d.digest,
            size: d.size,
            annotations: d.annotations,
        }
    }
}

impl Convert<Image> for pb::Image {
    fn convert(self) -> Image {
        let i = self;
        Image {
            name: i.name,
            labels: i.labels,
            target: i.target.map(Convert::convert),
            created_at: 0,
            updated_at: 0,
        }
    }
}

impl Convert<pb::Image> for Image {
    fn convert(self) -> pb::Image {
        let i = self;
        pb::Image {
            name: i.name,
            labels: i.labels,
            target: i.target.map(Convert::convert),
            created_at: Some(to_timestamp(i.created_at)),
            updated_at: Some(to_timestamp(i.updated_at)),
        }
    }
}

pub struct ImagesApi(pub Services);

#[tonic::async_trait]
impl Images for ImagesApi {
    async fn get(
        &self,
        req: Request<pb::GetImageRequest>,
    ) -> Result<Response<pb::GetImageResponse>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let image = self
            .0
            .images
            .get(&ns, &req.into_inner().name)
            .await
            .or_status()?;
        Ok(Response::new(pb::GetImageResponse {
            image: Some(image.convert()),
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let filter = Filter::parse_all(&req.into_inner().filters).or_status()?;
        let images = self.0.images.list(&ns, filter).await.or_status()?;
        Ok(Response::new(pb::ListImagesResponse {
            images: images.into_iter().map(Convert::convert).collect(),
        }))
    }

    async fn create(
        &self,
        req: Request<pb::CreateImageRequest>,
    ) -> Result<Response<pb::CreateImageResponse>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let image = req
            .into_inner()
            .image
            .ok_or_else(|| Error::invalid("image must be set"))
            .or_status()?;
        let created = self
            .0
            .images
            .create(&ns, image.convert())
            .await
            .or_status()?;
        Ok(Response::new(pb::CreateImageResponse {
            image: Some(created.convert()),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateImageRequest>,
    ) -> Result<Response<pb::UpdateImageResponse>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let req = req.into_inner();
        let image = req
            .image
            .ok_or_else(|| Error::invalid("image must be set"))
            .or_status()?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let updated = self
            .0
            .images
            .update(&ns, image.convert(), paths)
            .await
            .or_status()?;
        Ok(Response::new(pb::UpdateImageResponse {
            image: Some(updated.convert()),
        }))
    }

    async fn delete(&self, req: Request<pb::DeleteImageRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let req = req.into_inner();
        let target = req.target.map(|t| t.digest);
        self.0
            .images
            .delete(&ns, &req.name, target, req.sync)
            .await
            .or_status()?;
        Ok(Response::new(()))
    }
}
