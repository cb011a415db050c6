//! `containerd.services.leases.v1.Leases`.

use crate::api::status::OrStatus;
use berth_proto::containerd::services::leases::v1 as pb;
use berth_proto::containerd::services::leases::v1::leases_server::Leases;
use tonic::{Request, Response, Status};

use super::Convert;
use super::{Services, namespace_required, to_timestamp};
use crate::error::Error;
use crate::filters::Filter;
use crate::leases::{Lease, Resource};

impl Convert<pb::Lease> for Lease {
    fn convert(self) -> pb::Lease {
        let l = self;
        pb::Lease {
            id: l.id,
            created_at: Some(to_timestamp(l.created_at)),
            labels: l.labels,
        }
    }
}

fn resource(r: Option<pb::Resource>) -> Result<Resource, Error> {
    let r = r.ok_or_else(|| Error::invalid("resource must be set"))?;
    Ok(Resource {
        id: r.id,
        kind: r.r#type,
    })
}

/// A lease id for a client that sent none: unique enough and a valid identifier.
fn generate_id() -> String {
    let nanos = crate::metadata::now_nanos();
    let rand = uuid::Uuid::new_v4().simple().to_string();
    format!("{nanos}-{}", &rand[..8])
}

pub struct LeasesApi(pub Services);

#[tonic::async_trait]
impl Leases for LeasesApi {
    async fn create(
        &self,
        req: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::CreateResponse>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let req = req.into_inner();
        let id = if req.id.is_empty() {
            generate_id()
        } else {
            req.id
        };
        let lease = self
            .0
            .leases
            .create(&ns, id, req.labels)
            .await
            .or_status()?;
        Ok(Response::new(pb::CreateResponse {
            lease: Some(lease.convert()),
        }))
    }

    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let req = req.into_inner();
        // `sync`: answer once what the lease held is collected.
        self.0
            .leases
            .release(&ns, &req.id, req.sync)
            .await
            .or_status()?;
        Ok(Response::new(()))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let filter = Filter::parse_all(&req.into_inner().filters).or_status()?;
        let leases = self.0.leases.list(&ns, filter).await.or_status()?;
        Ok(Response::new(pb::ListResponse {
            leases: leases.into_iter().map(Convert::convert).collect(),
        }))
    }

    async fn add_resource(
        &self,
        req: Request<pb::AddResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let req = req.into_inner();
        self.0
            .leases
            .add_resource(&ns, &req.id, resource(req.resource).or_status()?)
            .await
            .or_status()?;
        Ok(Response::new(()))
    }

    async fn delete_resource(
        &self,
        req: Request<pb::DeleteResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let req = req.into_inner();
        self.0
            .leases
            .delete_resource(&ns, &req.id, resource(req.resource).or_status()?)
            .await
            .or_status()?;
        Ok(Response::new(()))
    }

    async fn list_resources(
        &self,
        req: Request<pb::ListResourcesRequest>,
    ) -> Result<Response<pb::ListResourcesResponse>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let resources = self
            .0
            .leases
            .list_resources(&ns, &req.into_inner().id)
            .await
            .or_status()?;
        Ok(Response::new(pb::ListResourcesResponse {
            resources: resources
                .into_iter()
                .map(|r| pb::Resource {
                    id: r.id,
                    r#type: r.kind,
                })
                .collect(),
        }))
    }
}
