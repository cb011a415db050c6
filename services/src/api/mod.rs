//! The gRPC adapters: one module per containerd service. Each converts the request's wire
//! types to core types, calls one core method, and converts the answer back; the core
//! validates, publishes the events and asks for collections. Errors become statuses only
//! through `status::status`.

pub mod catalog;
pub mod containers;
pub mod content;
pub mod cri;
pub mod diff;
pub mod events;
pub mod health;
pub mod images;
pub mod introspection;
pub mod leases;
pub mod namespaces;
pub mod networks;
pub mod registry;
pub mod snapshots;
pub mod status;
pub mod streaming;
pub mod supervisor;
pub mod tasks;
pub mod transfer;
pub mod version;
pub mod volumes;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost_reflect::{DynamicMessage, ReflectMessage, Value};
use tonic::metadata::MetadataMap;

use crate::error::{Error, Result};
pub use crate::events::event_any;
use crate::events::{EventFields, Exchange};
use crate::identifiers;
use crate::types::AnyValue;

/// The gRPC metadata key that carries the namespace.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";
/// The gRPC metadata key that carries the lease.
pub const LEASE_HEADER: &str = "containerd-lease";

fn header(md: &MetadataMap, key: &str) -> Option<String> {
    md.get(key)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .filter(|s| !s.is_empty())
}

/// The request's namespace. Missing is FailedPrecondition ("namespace is required"), an
/// invalid name InvalidArgument, exactly as containerd's `NamespaceRequired`.
pub fn namespace_required(md: &MetadataMap) -> Result<String> {
    let ns =
        header(md, NAMESPACE_HEADER).ok_or_else(|| Error::precondition("namespace is required"))?;
    identifiers::validate(&ns).map_err(|e| e.context("namespace validation"))?;
    Ok(ns)
}

/// The lease the request runs under, if any.
pub fn lease(md: &MetadataMap) -> Option<String> {
    header(md, LEASE_HEADER)
}

pub fn to_timestamp(nanos: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: nanos.div_euclid(1_000_000_000),
        nanos: i32::try_from(nanos.rem_euclid(1_000_000_000)).unwrap_or(0),
    }
}

pub fn system_time_to_timestamp(t: SystemTime) -> prost_types::Timestamp {
    t.into()
}

pub fn timestamp_to_system_time(t: &prost_types::Timestamp) -> SystemTime {
    let secs = u64::try_from(t.seconds).unwrap_or(0);
    let nanos = u32::try_from(t.nanos).unwrap_or(0);
    UNIX_EPOCH + Duration::new(secs, nanos)
}

pub fn any_from_wire(a: prost_types::Any) -> AnyValue {
    AnyValue {
        type_url: a.type_url,
        value: a.value,
    }
}

pub fn any_to_wire(a: AnyValue) -> prost_types::Any {
    prost_types::Any {
        type_url: a.type_url,
        value: a.value,
    }
}

/// Resolves `event.*` filter fields by decoding the payload with the compiled descriptors.
pub struct ReflectFields;

impl EventFields for ReflectFields {
    fn field(&self, event: &AnyValue, path: &[String]) -> Option<String> {
        let msg = berth_proto::descriptors::decode_any(&event.type_url, &event.value)?;
        message_field(&msg, path)
    }
}

fn message_field(msg: &DynamicMessage, path: &[String]) -> Option<String> {
    let (first, rest) = path.split_first()?;
    let fd = msg.descriptor().get_field_by_name(first)?;
    if !msg.has_field(&fd) && !fd.is_map() {
        return None;
    }
    let value = msg.get_field(&fd);
    value_field(&value, rest)
}

fn value_field(value: &Value, rest: &[String]) -> Option<String> {
    match value {
        Value::Message(m) => message_field(m, rest),
        Value::Map(map) => {
            if rest.is_empty() {
                return None;
            }
            let key = rest.join(".");
            map.iter().find_map(|(k, v)| match (k.as_str(), v) {
                (Some(k), Value::String(s)) if k == key => Some(s.clone()),
                _ => None,
            })
        }
        _ if !rest.is_empty() => None,
        Value::String(s) => (!s.is_empty()).then(|| s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::I32(v) | Value::EnumNumber(v) => Some(v.to_string()),
        Value::I64(v) => Some(v.to_string()),
        Value::U32(v) => Some(v.to_string()),
        Value::U64(v) => Some(v.to_string()),
        Value::F32(v) => Some(v.to_string()),
        Value::F64(v) => Some(v.to_string()),
        Value::Bytes(_) | Value::List(_) => None,
    }
}

/// Everything the adapters share: the cores and the event exchange.
#[derive(Clone)]
pub struct Services {
    pub store: crate::metadata::Store,
    pub exchange: Exchange,
    pub namespaces: crate::namespaces::Namespaces,
    pub containers: crate::containers::Containers,
    pub content: crate::content::ContentStore,
    /// Diff.Apply and Diff; told of the layers committed through the content service.
    pub differ: crate::diff::Differ,
    pub images: crate::images::Images,
    pub streams: crate::streams::Streams,
    pub transfers: crate::transfer::Transfers,
    pub leases: crate::leases::Leases,
    /// What Introspection reports: set once, when the catalog of services is built.
    pub plugins: std::sync::Arc<std::sync::OnceLock<Vec<crate::plugins::PluginInfo>>>,
    pub server_uuid: String,
    pub snapshotters: crate::snapshots::Snapshotters,
    pub snapshots: crate::snapshots::Snapshots,
    pub networks: crate::network::Networks,
    pub tasks: crate::tasks::Tasks,
    /// Restart policies (berth's own API).
    pub supervisor: crate::supervisor::Supervisor,
    pub volumes: crate::volumes::Volumes,
    /// Kubernetes' CRI (None when `cri.enable` is off).
    pub cri: Option<crate::cri::Cri>,
}

/// A conversion between a core type and its wire message, in either direction. (`From`
/// cannot be written here: both types belong to other crates.)
pub trait Convert<T> {
    fn convert(self) -> T;
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::containerd::events::ContainerCreate;
    use berth_proto::containerd::events::container_create::Runtime;

    #[test]
    fn event_fields_by_reflection() {
        let ev = ContainerCreate {
            id: "web".into(),
            image: "busybox".into(),
            runtime: Some(Runtime {
                name: "io.containerd.runc.v2".into(),
                options: None,
            }),
        };
        let any = event_any(&ev);
        assert_eq!(any.type_url, "containerd.events.ContainerCreate");
        let f = |p: &[&str]| {
            ReflectFields.field(&any, &p.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(f(&["id"]).as_deref(), Some("web"));
        assert_eq!(
            f(&["runtime", "name"]).as_deref(),
            Some("io.containerd.runc.v2")
        );
        assert_eq!(f(&["nope"]), None);
    }

    #[test]
    fn timestamps() {
        let ts = to_timestamp(1_500_000_000_123_456_789);
        assert_eq!(ts.seconds, 1_500_000_000);
        assert_eq!(ts.nanos, 123_456_789);
        let back = timestamp_to_system_time(&ts);
        assert_eq!(
            back.duration_since(UNIX_EPOCH)
                .expect("after epoch")
                .as_nanos(),
            1_500_000_000_123_456_789
        );
    }
}
