//! `containerd.services.images.v1.Images`.

use berth_proto::containerd::services::images::v1 as pb;
use berth_proto::containerd::services::images::v1::images_server::Images;
use berth_proto::containerd::types::Descriptor as WireDescriptor;
use tonic::{Request, Response, Status};

use super::{Services, namespace_required, publish, to_timestamp};
use crate::error::Error;
use crate::filters::Filter;
use crate::images::{Descriptor, Image};

impl From<WireDescriptor> for Descriptor {
    fn from(d: WireDescriptor) -> Self {
        Descriptor {
            media_type: d.media_type,
            digest: d.digest,
            size: d.size,
            annotations: d.annotations,
        }
    }
}

impl From<Descriptor> for WireDescriptor {
    fn from(d: Descriptor) -> Self {
        WireDescriptor {
            media_type: d.media_type,
            digest: d.digest,
            size: d.size,
            annotations: d.annotations,
        }
    }
}

impl From<pb::Image> for Image {
    fn from(i: pb::Image) -> Self {
        Image {
            name: i.name,
            labels: i.labels,
            target: i.target.map(Into::into),
            created_at: 0,
            updated_at: 0,
        }
    }
}

impl From<Image> for pb::Image {
    fn from(i: Image) -> Self {
        pb::Image {
            name: i.name,
            labels: i.labels,
            target: i.target.map(Into::into),
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
        let ns = namespace_required(req.metadata())?;
        let image = self.0.images.get(&ns, &req.into_inner().name).await?;
        Ok(Response::new(pb::GetImageResponse {
            image: Some(image.into()),
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        let ns = namespace_required(req.metadata())?;
        let filter = Filter::parse_all(&req.into_inner().filters)?;
        let images = self.0.images.list(&ns, filter).await?;
        Ok(Response::new(pb::ListImagesResponse {
            images: images.into_iter().map(Into::into).collect(),
        }))
    }

    async fn create(
        &self,
        req: Request<pb::CreateImageRequest>,
    ) -> Result<Response<pb::CreateImageResponse>, Status> {
        let ns = namespace_required(req.metadata())?;
        let image = req
            .into_inner()
            .image
            .ok_or_else(|| Error::invalid("image must be set"))?;
        let created = self.0.images.create(&ns, image.into()).await?;
        publish(
            &self.0.exchange,
            &ns,
            crate::events::topics::IMAGE_CREATE,
            &pb::ImageCreate {
                name: created.name.clone(),
                labels: created.labels.clone(),
            },
        );
        Ok(Response::new(pb::CreateImageResponse {
            image: Some(created.into()),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateImageRequest>,
    ) -> Result<Response<pb::UpdateImageResponse>, Status> {
        let ns = namespace_required(req.metadata())?;
        let req = req.into_inner();
        let image = req
            .image
            .ok_or_else(|| Error::invalid("image must be set"))?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let updated = self.0.images.update(&ns, image.into(), paths).await?;
        publish(
            &self.0.exchange,
            &ns,
            crate::events::topics::IMAGE_UPDATE,
            &pb::ImageUpdate {
                name: updated.name.clone(),
                labels: updated.labels.clone(),
            },
        );
        Ok(Response::new(pb::UpdateImageResponse {
            image: Some(updated.into()),
        }))
    }

    async fn delete(&self, req: Request<pb::DeleteImageRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_required(req.metadata())?;
        let req = req.into_inner();
        self.0
            .images
            .delete(&ns, &req.name, req.target.map(|t| t.digest))
            .await?;
        publish(
            &self.0.exchange,
            &ns,
            crate::events::topics::IMAGE_DELETE,
            &pb::ImageDelete { name: req.name },
        );
        // `sync`: answer once what the image held is collected.
        if req.sync {
            self.0.gc.collect().await?;
        } else {
            self.0.gc.schedule();
        }
        Ok(Response::new(()))
    }
}
