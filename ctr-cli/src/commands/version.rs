//! `berth version`: the client's and the daemon's versions.

use berth_proto::containerd::services::introspection::v1::introspection_client::IntrospectionClient;
use berth_proto::containerd::services::version::v1::version_client::VersionClient;

use crate::client::{Client, status};
use crate::output::{self, Format};

pub async fn run(c: &Client, format: Format) -> anyhow::Result<()> {
    let v = VersionClient::new(c.channel.clone())
        .version(c.req(()))
        .await
        .map_err(status)?
        .into_inner();
    let server = IntrospectionClient::new(c.channel.clone())
        .server(c.req(()))
        .await
        .map_err(status)?
        .into_inner();
    if format == Format::Json {
        return output::json(&serde_json::json!({
            "client": {"version": env!("CARGO_PKG_VERSION")},
            "server": {"version": v.version, "revision": v.revision, "uuid": server.uuid, "pid": server.pid},
        }));
    }
    println!("Client:");
    println!("  Version:  v{}", env!("CARGO_PKG_VERSION"));
    println!();
    println!("Server:");
    println!("  Version:  {}", v.version);
    println!("  Revision: {}", v.revision);
    println!("  UUID: {}", server.uuid);
    Ok(())
}
