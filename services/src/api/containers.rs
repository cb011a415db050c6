//! `containerd.services.containers.v1.Containers`.

use crate::api::status::{IntoStatus, OrStatus};
use std::pin::Pin;

use berth_proto::containerd::services::containers::v1 as pb;
use berth_proto::containerd::services::containers::v1::containers_server::Containers;
use futures::Stream;
use tonic::{Request, Response, Status};

use super::Convert;
use super::{Services, any_from_wire, any_to_wire, namespace_required, to_timestamp};
use crate::containers::{Container, Runtime};
use crate::error::Error;
use crate::filters::Filter;

impl Convert<Container> for pb::Container {
    fn convert(self) -> Container {
        let c = self;
        Container {
            id: c.id,
            labels: c.labels,
            image: c.image,
            runtime: c.runtime.map(|r| Runtime {
                name: r.name,
                options: r.options.map(any_from_wire),
            }),
            spec: c.spec.map(any_from_wire),
            snapshotter: c.snapshotter,
            snapshot_key: c.snapshot_key,
            created_at: 0,
            updated_at: 0,
            extensions: c
                .extensions
                .into_iter()
                .map(|(k, v)| (k, any_from_wire(v)))
                .collect(),
            sandbox: c.sandbox,
        }
    }
}

impl Convert<pb::Container> for Container {
    fn convert(self) -> pb::Container {
        let c = self;
        pb::Container {
            id: c.id,
            labels: c.labels,
            image: c.image,
            runtime: c.runtime.map(|r| pb::container::Runtime {
                name: r.name,
                options: r.options.map(any_to_wire),
            }),
            spec: c.spec.map(any_to_wire),
            snapshotter: c.snapshotter,
            snapshot_key: c.snapshot_key,
            created_at: Some(to_timestamp(c.created_at)),
            updated_at: Some(to_timestamp(c.updated_at)),
            extensions: c
                .extensions
                .into_iter()
                .map(|(k, v)| (k, any_to_wire(v)))
                .collect(),
            sandbox: c.sandbox,
        }
    }
}

pub struct ContainersApi(pub Services);

type ListStream = Pin<Box<dyn Stream<Item = Result<pb::ListContainerMessage, Status>> + Send>>;

impl ContainersApi {
    async fn list_all(
        &self,
        req: Request<pb::ListContainersRequest>,
    ) -> Result<Vec<Container>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let filter = Filter::parse_all(&req.into_inner().filters).or_status()?;
        self.0.containers.list(&ns, filter).await.or_status()
    }
}

#[tonic::async_trait]
impl Containers for ContainersApi {
    async fn get(
        &self,
        req: Request<pb::GetContainerRequest>,
    ) -> Result<Response<pb::GetContainerResponse>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let id = req.into_inner().id;
        if id.is_empty() {
            return Err(Error::invalid("container id must be set").into_status());
        }
        let c = self.0.containers.get(&ns, &id).await.or_status()?;
        Ok(Response::new(pb::GetContainerResponse {
            container: Some(c.convert()),
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListContainersRequest>,
    ) -> Result<Response<pb::ListContainersResponse>, Status> {
        let list = self.list_all(req).await?;
        Ok(Response::new(pb::ListContainersResponse {
            containers: list.into_iter().map(Convert::convert).collect(),
        }))
    }

    type ListStreamStream = ListStream;

    async fn list_stream(
        &self,
        req: Request<pb::ListContainersRequest>,
    ) -> Result<Response<ListStream>, Status> {
        let list = self.list_all(req).await?;
        let items = list.into_iter().map(|c| {
            Ok(pb::ListContainerMessage {
                container: Some(c.convert()),
            })
        });
        Ok(Response::new(Box::pin(futures::stream::iter(items))))
    }

    async fn create(
        &self,
        req: Request<pb::CreateContainerRequest>,
    ) -> Result<Response<pb::CreateContainerResponse>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let c = req
            .into_inner()
            .container
            .ok_or_else(|| Error::invalid("container must be set"))
            .or_status()?;
        let created = self
            .0
            .containers
            .create(&ns, c.convert())
            .await
            .or_status()?;
        Ok(Response::new(pb::CreateContainerResponse {
            container: Some(created.convert()),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateContainerRequest>,
    ) -> Result<Response<pb::UpdateContainerResponse>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let req = req.into_inner();
        let c = req
            .container
            .ok_or_else(|| Error::invalid("container must be set"))
            .or_status()?;
        if c.id.is_empty() {
            return Err(Error::invalid("Container.ID required").into_status());
        }
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let updated = self
            .0
            .containers
            .update(&ns, c.convert(), paths)
            .await
            .or_status()?;
        Ok(Response::new(pb::UpdateContainerResponse {
            container: Some(updated.convert()),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteContainerRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let id = req.into_inner().id;
        self.0.containers.delete(&ns, &id).await.or_status()?;
        Ok(Response::new(()))
    }
}
