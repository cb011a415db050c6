//! `berth plugins`: what the daemon runs, from Introspection.

use berth_proto::containerd::services::introspection::v1 as pb;
use berth_proto::containerd::services::introspection::v1::introspection_client::IntrospectionClient;

use crate::client::{Client, status};
use crate::output::{self, Format};

pub async fn run(
    c: &Client,
    quiet: bool,
    detailed: bool,
    filters: Vec<String>,
    format: Format,
) -> anyhow::Result<()> {
    let mut api = IntrospectionClient::new(c.channel.clone());
    let plugins = api
        .plugins(c.req(pb::PluginsRequest { filters }))
        .await
        .map_err(status)?
        .into_inner()
        .plugins;
    let platforms = |p: &pb::Plugin| {
        if p.platforms.is_empty() {
            "-".to_string()
        } else {
            p.platforms
                .iter()
                .map(|pl| format!("{}/{}", pl.os, pl.architecture))
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    let status_of = |p: &pb::Plugin| if p.init_err.is_some() { "error" } else { "ok" };
    if quiet {
        for p in &plugins {
            println!("{}.{}", p.r#type, p.id);
        }
    } else if format == Format::Json || detailed {
        output::json(&serde_json::Value::Array(
            plugins
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "type": p.r#type,
                        "id": p.id,
                        "requires": p.requires,
                        "platforms": platforms(p),
                        "exports": p.exports,
                        "capabilities": p.capabilities,
                        "status": status_of(p),
                        "error": p.init_err.as_ref().map(|e| e.message.clone()),
                    })
                })
                .collect(),
        ))?;
    } else {
        let rows: Vec<Vec<String>> = plugins
            .iter()
            .map(|p| {
                vec![
                    p.r#type.clone(),
                    p.id.clone(),
                    platforms(p),
                    status_of(p).to_string(),
                ]
            })
            .collect();
        output::table(&["TYPE", "ID", "PLATFORMS", "STATUS"], &rows)?;
    }
    Ok(())
}
