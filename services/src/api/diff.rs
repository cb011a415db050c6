//! `containerd.services.diff.v1.Diff`.

use super::Convert;
use crate::api::status::OrStatus;
use berth_proto::containerd::services::diff::v1 as pb;
use berth_proto::containerd::services::diff::v1::diff_server::Diff;
use tonic::{Request, Response, Status};

use super::snapshots::mount_from_wire;
use super::{Services, lease, namespace_required};
use crate::diff::{DiffRequest, Differ};
use crate::error::Error;
use crate::images::Descriptor;
use crate::labels;

pub struct DiffApi {
    differ: Differ,
}

impl DiffApi {
    pub fn new(s: &Services) -> DiffApi {
        DiffApi {
            differ: s.differ.clone(),
        }
    }
}

#[tonic::async_trait]
impl Diff for DiffApi {
    async fn apply(
        &self,
        req: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let r = req.into_inner();
        // Payloads configure stream processors (decryption); there are none to configure.
        let desc: Descriptor = r
            .diff
            .ok_or_else(|| Error::invalid("diff descriptor must be set"))
            .or_status()?
            .convert();
        let mounts = r.mounts.into_iter().map(mount_from_wire).collect();
        let applied = self.differ.apply(&ns, &desc, mounts).await.or_status()?;
        Ok(Response::new(pb::ApplyResponse {
            applied: Some(applied.convert()),
        }))
    }

    async fn diff(
        &self,
        req: Request<pb::DiffRequest>,
    ) -> Result<Response<pb::DiffResponse>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let lease = lease(req.metadata());
        let r = req.into_inner();
        labels::validate_all(&r.labels)
            .map_err(|e| e.context("info.Labels"))
            .or_status()?;
        let request = DiffRequest {
            left: r.left.into_iter().map(mount_from_wire).collect(),
            right: r.right.into_iter().map(mount_from_wire).collect(),
            media_type: r.media_type,
            reference: r.r#ref,
            labels: r.labels,
        };
        let desc = self.differ.diff(&ns, request, lease).await.or_status()?;
        Ok(Response::new(pb::DiffResponse {
            diff: Some(desc.convert()),
        }))
    }
}
