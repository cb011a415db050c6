//! `containerd.services.namespaces.v1.Namespaces`.

use crate::api::status::OrStatus;
use berth_proto::containerd::services::namespaces::v1 as pb;
use berth_proto::containerd::services::namespaces::v1::namespaces_server::Namespaces;
use tonic::{Request, Response, Status};

use super::{Convert, Services};
use crate::error::Error;
use crate::namespaces::Namespace;

impl Convert<pb::Namespace> for Namespace {
    fn convert(self) -> pb::Namespace {
        let n = self;
        pb::Namespace {
            name: n.name,
            labels: n.labels,
        }
    }
}

pub struct NamespacesApi(pub Services);

#[tonic::async_trait]
impl Namespaces for NamespacesApi {
    async fn get(
        &self,
        req: Request<pb::GetNamespaceRequest>,
    ) -> Result<Response<pb::GetNamespaceResponse>, Status> {
        let ns = self
            .0
            .namespaces
            .get(&req.into_inner().name)
            .await
            .or_status()?;
        Ok(Response::new(pb::GetNamespaceResponse {
            namespace: Some(ns.convert()),
        }))
    }

    async fn list(
        &self,
        _req: Request<pb::ListNamespacesRequest>,
    ) -> Result<Response<pb::ListNamespacesResponse>, Status> {
        let list = self.0.namespaces.list().await.or_status()?;
        Ok(Response::new(pb::ListNamespacesResponse {
            namespaces: list.into_iter().map(Convert::convert).collect(),
        }))
    }

    async fn create(
        &self,
        req: Request<pb::CreateNamespaceRequest>,
    ) -> Result<Response<pb::CreateNamespaceResponse>, Status> {
        let n = req
            .into_inner()
            .namespace
            .ok_or_else(|| Error::invalid("namespace must be set"))
            .or_status()?;
        let ns = self
            .0
            .namespaces
            .create(Namespace {
                name: n.name,
                labels: n.labels,
            })
            .await
            .or_status()?;
        Ok(Response::new(pb::CreateNamespaceResponse {
            namespace: Some(ns.convert()),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateNamespaceRequest>,
    ) -> Result<Response<pb::UpdateNamespaceResponse>, Status> {
        let req = req.into_inner();
        let n = req
            .namespace
            .ok_or_else(|| Error::invalid("namespace must be set"))
            .or_status()?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let ns = self
            .0
            .namespaces
            .update_fields(&n.name, n.labels, &paths)
            .await
            .or_status()?;
        Ok(Response::new(pb::UpdateNamespaceResponse {
            namespace: Some(ns.convert()),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteNamespaceRequest>,
    ) -> Result<Response<()>, Status> {
        let name = req.into_inner().name;
        self.0.namespaces.delete(&name).await.or_status()?;
        Ok(Response::new(()))
    }
}
