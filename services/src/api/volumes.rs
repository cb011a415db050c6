//! `berth.services.volumes.v1.Volumes`: berth's own API for volumes. Conversion only; the
//! rules are the core's (`berth_core::volumes`).

use berth_proto::berth::services::volumes::v1 as pb;
use berth_proto::berth::services::volumes::v1::volumes_server::Volumes as VolumesService;
use tonic::{Request, Response, Status};

use super::{Convert, Services, namespace_required, to_timestamp};
use crate::api::status::OrStatus;
use crate::volumes::{CreateVolume, Volume, VolumeFilters};

impl Convert<pb::Volume> for Volume {
    fn convert(self) -> pb::Volume {
        pb::Volume {
            name: self.name,
            driver: self.driver,
            labels: self.labels,
            options: self.options,
            created_at: Some(to_timestamp(self.created_at)),
            mountpoint: self.mountpoint.display().to_string(),
            anonymous: self.anonymous,
            filled: self.filled,
            used_by: self.used_by,
            size: self
                .size
                .map_or(-1, |s| i64::try_from(s).unwrap_or(i64::MAX)),
        }
    }
}

pub struct VolumesApi(pub Services);

#[tonic::async_trait]
impl VolumesService for VolumesApi {
    async fn create(
        &self,
        req: Request<pb::CreateVolumeRequest>,
    ) -> Result<Response<pb::CreateVolumeResponse>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        let (volume, created) = self
            .0
            .volumes
            .create(
                &ns,
                CreateVolume {
                    name: Some(r.name),
                    driver: r.driver,
                    labels: r.labels,
                    options: r.options,
                    anonymous: r.anonymous,
                },
            )
            .await
            .or_status()?;
        Ok(Response::new(pb::CreateVolumeResponse {
            volume: Some(volume.convert()),
            created,
        }))
    }

    async fn get(
        &self,
        req: Request<pb::GetVolumeRequest>,
    ) -> Result<Response<pb::GetVolumeResponse>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let v = self
            .0
            .volumes
            .get(&ns, &req.into_inner().name)
            .await
            .or_status()?;
        Ok(Response::new(pb::GetVolumeResponse {
            volume: Some(v.convert()),
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListVolumesRequest>,
    ) -> Result<Response<pb::ListVolumesResponse>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        let filters = VolumeFilters::parse(&r.filters).or_status()?;
        let mut list = self.0.volumes.list(&ns, &filters).await.or_status()?;
        if r.with_sizes {
            list = self.0.volumes.measure(list).await.or_status()?;
        }
        Ok(Response::new(pb::ListVolumesResponse {
            volumes: list.into_iter().map(Convert::convert).collect(),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteVolumeRequest>,
    ) -> Result<Response<pb::DeleteVolumeResponse>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        self.0
            .volumes
            .delete(&ns, &r.name, r.force)
            .await
            .or_status()?;
        Ok(Response::new(pb::DeleteVolumeResponse {}))
    }

    async fn prune(
        &self,
        req: Request<pb::PruneVolumesRequest>,
    ) -> Result<Response<pb::PruneVolumesResponse>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        let filters = VolumeFilters::parse(&r.filters).or_status()?;
        let all = r.all || filters.all.unwrap_or(false);
        let pruned = self.0.volumes.prune(&ns, all, &filters).await.or_status()?;
        Ok(Response::new(pb::PruneVolumesResponse {
            deleted: pruned.deleted,
            reclaimed: pruned.reclaimed,
        }))
    }
}
