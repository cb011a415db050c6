//! `containerd.services.version.v1.Version`.

use berth_proto::containerd::services::version::v1 as pb;
use berth_proto::containerd::services::version::v1::version_server::Version;
use tonic::{Request, Response, Status};

/// berthd's version, as reported to clients.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The source revision berthd was built from (`unknown` outside a git checkout).
pub const REVISION: &str = env!("BERTH_REVISION");

pub struct VersionApi;

#[tonic::async_trait]
impl Version for VersionApi {
    async fn version(&self, _req: Request<()>) -> Result<Response<pb::VersionResponse>, Status> {
        Ok(Response::new(pb::VersionResponse {
            version: format!("v{VERSION}"),
            revision: REVISION.to_string(),
        }))
    }
}
