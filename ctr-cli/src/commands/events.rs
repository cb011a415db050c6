//! `berth events`: print events as they happen (all namespaces), optionally filtered.

use berth_proto::containerd::services::events::v1 as pb;
use berth_proto::containerd::services::events::v1::events_client::EventsClient;

use crate::client::{Client, status};
use crate::output::{self, Format};

pub async fn run(c: &Client, filters: Vec<String>, format: Format) -> anyhow::Result<()> {
    let mut api = EventsClient::new(c.channel.clone());
    let mut stream = api
        .subscribe(tonic::Request::new(pb::SubscribeRequest { filters }))
        .await
        .map_err(status)?
        .into_inner();
    while let Some(e) = stream.message().await.map_err(status)? {
        let event = e
            .event
            .as_ref()
            .map(output::any_json)
            .unwrap_or(serde_json::Value::Null);
        if format == Format::Json {
            println!(
                "{}",
                serde_json::json!({
                    "timestamp": output::rfc3339_nanos(e.timestamp.as_ref()),
                    "namespace": e.namespace,
                    "topic": e.topic,
                    "type": e.event.as_ref().map(|a| a.type_url.clone()),
                    "event": event,
                })
            );
        } else {
            println!(
                "{} {} {} {}",
                output::rfc3339_nanos(e.timestamp.as_ref()),
                e.namespace,
                e.topic,
                event
            );
        }
    }
    Ok(())
}
