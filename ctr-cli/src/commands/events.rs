//! `berth events`: what happens to containers and images in the namespace, as Docker's
//! `events` prints it (`TIME TYPE ACTION ID (ATTRIBUTES)`, `--format` over Docker's fields,
//! `-f container= event= image= label= type=`, `--since`/`--until`); with containerd
//! filters as arguments (`topic~="/tasks/"`), the raw containerd events of every namespace,
//! as ctr prints them.
//!
//! berthd keeps no history of events: `--since` a time past shows what happens from now on,
//! and `--until` ends the stream at that time.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use berth_proto::containerd::events as ev;
use berth_proto::containerd::services::events::v1 as pb;
use berth_proto::containerd::services::events::v1::events_client::EventsClient;
use berth_proto::containerd::services::images::v1 as images;
use prost::Message;
use serde_json::{Value, json};

use crate::client::{Client, containers, status};
use crate::output::{self, Format};

/// `events` as the user asked for it.
pub struct Args {
    /// containerd filters: the raw stream.
    pub topics: Vec<String>,
    /// Docker's `--filter`s.
    pub filters: Vec<String>,
    pub since: Option<String>,
    pub until: Option<String>,
}

pub async fn run(c: &Client, args: Args, format: Format) -> anyhow::Result<()> {
    if !args.topics.is_empty() {
        return raw(c, args.topics, format).await;
    }
    docker(c, args, &format).await
}

/// One event as Docker describes it.
#[derive(Debug, Clone, PartialEq)]
struct Event {
    kind: &'static str,
    action: &'static str,
    id: String,
    attributes: BTreeMap<String, String>,
    time: SystemTime,
}

impl Event {
    fn json(&self) -> Value {
        let nanos = self
            .time
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let mut v = json!({
            "Type": self.kind,
            "Action": self.action,
            "Actor": {"ID": self.id, "Attributes": self.attributes},
            "scope": "local",
            "time": nanos / 1_000_000_000,
            "timeNano": nanos,
        });
        // The fields older clients read.
        if self.kind == "container" {
            v["status"] = json!(self.action);
            v["id"] = json!(self.id);
            v["from"] = json!(self.attributes.get("image").cloned().unwrap_or_default());
        }
        v
    }

    /// Docker's line: `2024-01-02T03:04:05.000000000Z container start ID (k=v, k=v)`.
    fn line(&self) -> String {
        let attrs: Vec<String> = self
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "{} {} {} {} ({})",
            fixed_nanos(self.time),
            self.kind,
            self.action,
            self.id,
            attrs.join(", ")
        )
    }
}

/// RFC 3339 with nine fraction digits, as Docker prints event times (humantime keeps all
/// nine: `...T03:04:05.000000005Z`).
fn fixed_nanos(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// Docker's `--filter`s of `events`: values of one key are alternatives, keys all apply.
#[derive(Debug, Default)]
struct Filters(HashMap<String, Vec<String>>);

impl Filters {
    fn parse(given: &[String]) -> anyhow::Result<Filters> {
        let mut f = Filters::default();
        for g in given {
            let Some((k, v)) = g.split_once('=') else {
                anyhow::bail!("bad format of filter (expected name=value)");
            };
            let k = k.to_ascii_lowercase();
            if !["container", "event", "image", "label", "type"].contains(&k.as_str()) {
                anyhow::bail!("invalid filter '{k}'");
            }
            f.0.entry(k).or_default().push(v.to_string());
        }
        Ok(f)
    }

    fn matches(&self, e: &Event) -> bool {
        self.0.iter().all(|(k, values)| {
            values.iter().any(|v| match k.as_str() {
                "type" => e.kind == v,
                "event" => e.action == v,
                "container" => {
                    e.kind == "container"
                        && (e.id.starts_with(v.as_str())
                            || e.attributes.get("name").is_some_and(|n| n == v))
                }
                "image" => {
                    e.attributes.get("image").is_some_and(|i| i == v)
                        || (e.kind == "image"
                            && (e.id == *v || e.attributes.get("name") == Some(v)))
                }
                "label" => match v.split_once('=') {
                    Some((lk, lv)) => e.attributes.get(lk).is_some_and(|x| x == lv),
                    None => e.attributes.contains_key(v.as_str()),
                },
                _ => false,
            })
        })
    }
}

/// What the CLI knows of a container for its events' attributes (kept after it is gone,
/// for its `destroy`).
#[derive(Default)]
struct Known(HashMap<String, BTreeMap<String, String>>);

impl Known {
    async fn attributes(&mut self, c: &Client, id: &str) -> BTreeMap<String, String> {
        if let Ok(ct) = containers::get(c, id).await {
            // Only berth's docker-style containers (named): ctr's and CRI's are not Docker's.
            if !ct.labels.contains_key(crate::labels::NAME) {
                return BTreeMap::new();
            }
            let mut a: BTreeMap<String, String> = ct
                .labels
                .iter()
                .filter(|(k, _)| !k.starts_with("berth/") && !k.starts_with("io.containerd."))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let image = containers::docker_config(&ct)["Image"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| ct.image.clone());
            a.insert("image".to_string(), image);
            a.insert("name".to_string(), containers::name_of(&ct));
            self.0.insert(id.to_string(), a.clone());
            return a;
        }
        self.0.get(id).cloned().unwrap_or_default()
    }
}

/// The Docker event of a containerd one; None for what Docker does not report.
async fn translate(
    c: &Client,
    known: &mut Known,
    envelope: &berth_proto::containerd::types::Envelope,
) -> Option<Event> {
    let any = envelope.event.as_ref()?;
    let time = envelope
        .timestamp
        .as_ref()
        .and_then(|t| SystemTime::try_from(*t).ok())
        .unwrap_or_else(SystemTime::now);
    let data = any.value.as_slice();
    let (action, id, extra): (&'static str, String, Vec<(&str, String)>) =
        match envelope.topic.as_str() {
            "/containers/create" => {
                let e = ev::ContainerCreate::decode(data).ok()?;
                ("create", e.id, vec![])
            }
            "/containers/delete" => {
                let e = ev::ContainerDelete::decode(data).ok()?;
                ("destroy", e.id, vec![])
            }
            "/tasks/start" => {
                let e = ev::TaskStart::decode(data).ok()?;
                ("start", e.container_id, vec![])
            }
            "/tasks/exit" => {
                let e = ev::TaskExit::decode(data).ok()?;
                let code = ("exitCode", e.exit_status.to_string());
                if e.id.is_empty() || e.id == e.container_id {
                    ("die", e.container_id, vec![code])
                } else {
                    ("exec_die", e.container_id, vec![code, ("execID", e.id)])
                }
            }
            "/tasks/oom" => ("oom", ev::TaskOom::decode(data).ok()?.container_id, vec![]),
            "/tasks/paused" => (
                "pause",
                ev::TaskPaused::decode(data).ok()?.container_id,
                vec![],
            ),
            "/tasks/resumed" => (
                "unpause",
                ev::TaskResumed::decode(data).ok()?.container_id,
                vec![],
            ),
            "/tasks/exec-added" => {
                let e = ev::TaskExecAdded::decode(data).ok()?;
                ("exec_create", e.container_id, vec![("execID", e.exec_id)])
            }
            "/tasks/exec-started" => {
                let e = ev::TaskExecStarted::decode(data).ok()?;
                ("exec_start", e.container_id, vec![("execID", e.exec_id)])
            }
            "/images/create" | "/images/update" | "/images/delete" => {
                let (action, name) = match envelope.topic.as_str() {
                    "/images/create" => ("tag", images::ImageCreate::decode(data).ok()?.name),
                    "/images/update" => ("tag", images::ImageUpdate::decode(data).ok()?.name),
                    _ => ("untag", images::ImageDelete::decode(data).ok()?.name),
                };
                let name = crate::oci::familiar(&name).to_string();
                let attributes = BTreeMap::from([("name".to_string(), name.clone())]);
                return Some(Event {
                    kind: "image",
                    action,
                    id: name,
                    attributes,
                    time,
                });
            }
            _ => return None,
        };
    let mut attributes = known.attributes(c, &id).await;
    if !attributes.contains_key("name") {
        return None;
    }
    for (k, v) in extra {
        attributes.insert(k.to_string(), v);
    }
    Some(Event {
        kind: "container",
        action,
        id,
        attributes,
        time,
    })
}

async fn docker(c: &Client, args: Args, format: &Format) -> anyhow::Result<()> {
    let filters = Filters::parse(&args.filters)?;
    let now = SystemTime::now();
    let since = args
        .since
        .as_deref()
        .map(|s| output::parse_time("since", s, now))
        .transpose()?;
    let until = args
        .until
        .as_deref()
        .map(|s| output::parse_time("until", s, now))
        .transpose()?;
    if until.is_some_and(|u| u <= now) {
        // Nothing is kept from before now.
        return Ok(());
    }
    let template = match format {
        Format::Template(t) | Format::TableTemplate(t) => Some(crate::template::Compiled::new(t)?),
        _ => None,
    };
    let mut api = EventsClient::new(c.channel.clone());
    let ns_filter = format!("namespace=={}", c.namespace);
    let mut stream = api
        .subscribe(tonic::Request::new(pb::SubscribeRequest {
            filters: vec![ns_filter],
        }))
        .await
        .map_err(status)?
        .into_inner();
    let mut known = Known::default();
    // Names of containers gone before their destroy was seen come from here.
    if let Ok(list) = containers::list_all(c).await {
        for ct in list {
            known.attributes(c, &ct.id).await;
        }
    }
    let deadline = async {
        match until {
            Some(u) => {
                let wait = u.duration_since(SystemTime::now()).unwrap_or_default();
                tokio::time::sleep(wait).await
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    loop {
        let envelope = tokio::select! {
            m = stream.message() => match m.map_err(status)? {
                Some(e) => e,
                None => return Ok(()),
            },
            () = &mut deadline => return Ok(()),
        };
        let Some(event) = translate(c, &mut known, &envelope).await else {
            continue;
        };
        if since.is_some_and(|s| event.time < s) || !filters.matches(&event) {
            continue;
        }
        let text = match (&template, format) {
            (Some(t), _) => t.render(&event.json())?,
            (None, Format::Json) => event.json().to_string(),
            _ => event.line(),
        };
        println!("{text}");
    }
}

/// The containerd events of every namespace, as ctr prints them.
async fn raw(c: &Client, filters: Vec<String>, format: Format) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &'static str, action: &'static str) -> Event {
        Event {
            kind,
            action,
            id: "f".repeat(64),
            attributes: BTreeMap::from([
                ("image".to_string(), "busybox".to_string()),
                ("name".to_string(), "web".to_string()),
                ("tier".to_string(), "front".to_string()),
            ]),
            time: UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 5),
        }
    }

    #[test]
    fn lines_as_docker_prints_them() {
        assert_eq!(
            event("container", "start").line(),
            format!(
                "2023-11-14T22:13:20.000000005Z container start {} (image=busybox, name=web, tier=front)",
                "f".repeat(64)
            )
        );
        let j = event("container", "die").json();
        assert_eq!(j["status"], "die");
        assert_eq!(j["from"], "busybox");
        assert_eq!(j["Actor"]["Attributes"]["name"], "web");
        assert_eq!(j["timeNano"], 1_700_000_000_000_000_005u64);
    }

    #[test]
    fn filters_as_docker_applies_them() {
        let f = |given: &[&str]| {
            Filters::parse(&given.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
        };
        let e = event("container", "start");
        assert!(f(&[]).matches(&e));
        assert!(f(&["event=start", "event=die"]).matches(&e));
        assert!(!f(&["event=die"]).matches(&e));
        assert!(f(&["container=web", "type=container"]).matches(&e));
        assert!(f(&["container=ffff"]).matches(&e));
        assert!(f(&["label=tier=front", "image=busybox"]).matches(&e));
        assert!(!f(&["label=tier=back"]).matches(&e));
        assert!(f(&["label=tier"]).matches(&e));
        assert!(Filters::parse(&["nope=1".to_string()]).is_err());
        assert!(Filters::parse(&["event".to_string()]).is_err());
    }
}
