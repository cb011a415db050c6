//! The plugin list berthd reports through Introspection: what it really runs, built
//! explicitly at start-up (no registry), named `(type, id)` as containerd names its plugins.

use std::collections::BTreeMap;

use crate::filters::Adaptor;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    pub kind: String,
    pub id: String,
    pub requires: Vec<String>,
    pub exports: BTreeMap<String, String>,
    pub capabilities: Vec<String>,
}

impl PluginInfo {
    pub fn new(kind: &str, id: &str) -> Self {
        PluginInfo {
            kind: kind.to_string(),
            id: id.to_string(),
            requires: Vec::new(),
            exports: BTreeMap::new(),
            capabilities: Vec::new(),
        }
    }

    pub fn requires(mut self, kinds: &[&str]) -> Self {
        self.requires = kinds.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn export(mut self, key: &str, value: impl Into<String>) -> Self {
        self.exports.insert(key.to_string(), value.into());
        self
    }
}

impl Adaptor for PluginInfo {
    fn field(&self, path: &[String]) -> Option<String> {
        let present = |s: &str| (!s.is_empty()).then(|| s.to_string());
        match path.first().map(String::as_str)? {
            "type" => present(&self.kind),
            "id" => present(&self.id),
            _ => None,
        }
    }
}

pub const CONTENT: &str = "io.containerd.content.v1";
pub const EVENT: &str = "io.containerd.event.v1";
pub const METADATA: &str = "io.containerd.metadata.v1";
pub const LEASE: &str = "io.containerd.lease.v1";
pub const GRPC: &str = "io.containerd.grpc.v1";
pub const TTRPC: &str = "io.containerd.ttrpc.v1";
pub const SNAPSHOTTER: &str = "io.containerd.snapshotter.v1";
pub const DIFFER: &str = "io.containerd.differ.v1";
pub const SERVICE: &str = "io.containerd.service.v1";
pub const RUNTIME: &str = "io.containerd.runtime.v2";
/// berth's own gRPC services (networks, volumes...), which containerd does not have.
pub const BERTH_SERVICE: &str = "io.berth.service.v1";

/// The plugins of this daemon: the core's, given where its metadata lives, the runtime's
/// directories (`runtime_root` for files kept with a task, e.g. logs; `bundles` for task
/// bundles) and which snapshotters loaded (one that failed to open is not reported, as
/// containerd skips it); then the gRPC services `grpc` (from the catalog that also builds
/// the router).
pub fn daemon_plugins<'a>(
    root: &std::path::Path,
    runtime_root: &std::path::Path,
    bundles: &std::path::Path,
    snapshotters: impl IntoIterator<Item = &'a str>,
    grpc: Vec<PluginInfo>,
) -> Vec<PluginInfo> {
    let snapshotters: Vec<PluginInfo> = snapshotters
        .into_iter()
        .map(|name| {
            PluginInfo::new(SNAPSHOTTER, name).export(
                "root",
                root.join("snapshots").join(name).display().to_string(),
            )
        })
        .collect();
    let mut plugins = vec![
        PluginInfo::new(EVENT, "exchange"),
        PluginInfo::new(CONTENT, "content")
            .export("root", root.join("content").display().to_string()),
        PluginInfo::new(METADATA, "redb")
            .requires(&[CONTENT])
            .export("root", root.display().to_string()),
        PluginInfo::new(LEASE, "manager").requires(&[METADATA]),
        PluginInfo::new(TTRPC, "events").requires(&[EVENT]),
        PluginInfo::new(RUNTIME, "task")
            .requires(&[EVENT, METADATA])
            .export("root", runtime_root.display().to_string())
            .export("state", bundles.display().to_string()),
        PluginInfo::new(SERVICE, "tasks-service").requires(&[RUNTIME, METADATA]),
    ];
    if !snapshotters.is_empty() {
        plugins.extend(snapshotters);
        plugins.extend([
            PluginInfo::new(DIFFER, "walking").requires(&[METADATA]),
            PluginInfo::new(SERVICE, "snapshots-service").requires(&[METADATA, EVENT]),
            PluginInfo::new(SERVICE, "diff-service").requires(&[DIFFER]),
        ]);
    }
    plugins.extend(grpc);
    plugins
}
