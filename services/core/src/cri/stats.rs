//! Statistics: ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats,
//! from the cgroup metrics the shims report (v1, or v2 on a unified host) and the
//! containers' writable layers.

use berth_proto::runtime::v1 as cri;
use berth_proto::ttrpc::cgroups::metrics::Metrics as CgroupV1;
use berth_proto::ttrpc::cgroups_v2::metrics::Metrics as CgroupV2;
use berth_proto::ttrpc::protobuf::Message as _;

use super::*;

/// What the CRI reports of one task's cgroup.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    cpu_ns: u64,
    memory: u64,
    working_set: u64,
    rss: u64,
    page_faults: u64,
    major_page_faults: u64,
    processes: u64,
}

impl Usage {
    fn add(&mut self, o: Usage) {
        self.cpu_ns += o.cpu_ns;
        self.memory += o.memory;
        self.working_set += o.working_set;
        self.rss += o.rss;
        self.page_faults += o.page_faults;
        self.major_page_faults += o.major_page_faults;
        self.processes += o.processes;
    }

    fn cpu(&self, at: i64) -> cri::CpuUsage {
        cri::CpuUsage {
            timestamp: at,
            usage_core_nano_seconds: Some(cri::UInt64Value { value: self.cpu_ns }),
            ..Default::default()
        }
    }

    fn memory(&self, at: i64) -> cri::MemoryUsage {
        let v = |value| Some(cri::UInt64Value { value });
        cri::MemoryUsage {
            timestamp: at,
            working_set_bytes: v(self.working_set),
            usage_bytes: v(self.memory),
            rss_bytes: v(self.rss),
            page_faults: v(self.page_faults),
            major_page_faults: v(self.major_page_faults),
            ..Default::default()
        }
    }
}

/// The pod's interfaces' counters (loopback aside), read in its network namespace;
/// `eth0` is the default interface.
async fn network_usage(netns: &str, at: i64) -> Option<cri::NetworkUsage> {
    let netns = netns.to_string();
    let text = tokio::task::spawn_blocking(move || {
        super::sandbox::in_netns(&netns, || {
            std::fs::read_to_string("/proc/thread-self/net/dev")
        })
    })
    .await
    .ok()?
    .ok()?;
    let v = |value| Some(cri::UInt64Value { value });
    let interfaces: Vec<cri::NetworkInterfaceUsage> = text
        .lines()
        .skip(2)
        .filter_map(|l| {
            let (name, counters) = l.split_once(':')?;
            let name = name.trim();
            let n: Vec<u64> = counters
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            // rx: bytes packets errs drop fifo frame compressed multicast; then tx: bytes
            // packets errs ...
            (name != "lo" && n.len() >= 11).then(|| cri::NetworkInterfaceUsage {
                name: name.to_string(),
                rx_bytes: v(n[0]),
                rx_errors: v(n[2]),
                tx_bytes: v(n[8]),
                tx_errors: v(n[10]),
            })
        })
        .collect();
    Some(cri::NetworkUsage {
        timestamp: at,
        default_interface: interfaces.iter().find(|i| i.name == "eth0").cloned(),
        interfaces,
    })
}

/// A metric's `Any` decoded (cgroups v1 or v2).
fn usage_of(data: &AnyValue) -> Option<Usage> {
    let name = data.type_url.rsplit('/').next().unwrap_or(&data.type_url);
    match name {
        "io.containerd.cgroups.v1.Metrics" => {
            let m = CgroupV1::parse_from_bytes(&data.value).ok()?;
            let mem = m.memory.as_ref();
            let usage = mem.and_then(|m| m.usage.as_ref()).map_or(0, |u| u.usage);
            let inactive = mem.map_or(0, |m| m.total_inactive_file);
            Some(Usage {
                cpu_ns: m
                    .cpu
                    .as_ref()
                    .and_then(|c| c.usage.as_ref())
                    .map_or(0, |u| u.total),
                memory: usage,
                working_set: usage.saturating_sub(inactive),
                rss: mem.map_or(0, |m| m.total_rss),
                page_faults: mem.map_or(0, |m| m.total_pg_fault),
                major_page_faults: mem.map_or(0, |m| m.total_pg_maj_fault),
                processes: m.pids.as_ref().map_or(0, |p| p.current),
            })
        }
        "io.containerd.cgroups.v2.Metrics" => {
            let m = CgroupV2::parse_from_bytes(&data.value).ok()?;
            let mem = m.memory.as_ref();
            let usage = mem.map_or(0, |m| m.usage);
            Some(Usage {
                cpu_ns: m.cpu.as_ref().map_or(0, |c| c.usage_usec * 1000),
                memory: usage,
                working_set: usage.saturating_sub(mem.map_or(0, |m| m.inactive_file)),
                rss: mem.map_or(0, |m| m.anon),
                page_faults: mem.map_or(0, |m| m.pgfault),
                major_page_faults: mem.map_or(0, |m| m.pgmajfault),
                processes: m.pids.as_ref().map_or(0, |p| p.current),
            })
        }
        _ => None,
    }
}

impl Cri {
    /// The cgroup usage of task `id`, when it runs.
    async fn usage(&self, id: &str) -> Result<Option<Usage>> {
        let filter = Filter::parse(&format!("id=={id}"))?;
        let metrics = self.p().tasks.metrics(NAMESPACE, &filter).await?;
        Ok(metrics
            .into_iter()
            .find(|m| m.id == id)
            .and_then(|m| m.data.as_ref().and_then(usage_of)))
    }

    async fn stats_of(&self, c: &Container) -> Result<cri::ContainerStats> {
        let config: cri::ContainerConfig = decode_config(c);
        let at = now_nanos();
        let usage = self.usage(&c.id).await?.unwrap_or_default();
        let layer = self
            .p()
            .snapshots
            .usage(NAMESPACE, &c.snapshotter, &c.snapshot_key)
            .await
            .ok();
        Ok(cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: c.id.clone(),
                metadata: config.metadata.clone(),
                labels: config.labels.clone(),
                annotations: config.annotations.clone(),
            }),
            cpu: Some(usage.cpu(at)),
            memory: Some(usage.memory(at)),
            writable_layer: layer.map(|u| cri::FilesystemUsage {
                timestamp: at,
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: self.p().snapshots_root.display().to_string(),
                }),
                used_bytes: Some(cri::UInt64Value {
                    value: u64::try_from(u.size).unwrap_or(0),
                }),
                inodes_used: Some(cri::UInt64Value {
                    value: u64::try_from(u.inodes).unwrap_or(0),
                }),
            }),
            ..Default::default()
        })
    }

    /// ContainerStats.
    pub async fn container_stats(&self, id: &str) -> Result<cri::ContainerStats> {
        let c = self.find("container", id).await?;
        self.stats_of(&c).await
    }

    /// ListContainerStats.
    pub async fn list_container_stats(
        &self,
        filter: Option<cri::ContainerStatsFilter>,
    ) -> Result<Vec<cri::ContainerStats>> {
        let f = filter.unwrap_or_default();
        let mut out = Vec::new();
        for c in self.records("container").await? {
            let sandbox = c.labels.get(SANDBOX_LABEL).cloned().unwrap_or_default();
            let config: cri::ContainerConfig = decode_config(&c);
            if (!f.id.is_empty() && !c.id.starts_with(&f.id))
                || (!f.pod_sandbox_id.is_empty() && !sandbox.starts_with(&f.pod_sandbox_id))
                || !selected(&config.labels, &f.label_selector)
            {
                continue;
            }
            out.push(self.stats_of(&c).await?);
        }
        Ok(out)
    }

    /// PodSandboxStats: the pod's containers, and their sum.
    pub async fn sandbox_stats(&self, id: &str) -> Result<cri::PodSandboxStats> {
        let sb = self.sandbox(id).await?;
        let at = now_nanos();
        let mut total = self.usage(&sb.record.id).await?.unwrap_or_default();
        let mut containers = Vec::new();
        for c in self.containers_of(&sb.record.id).await? {
            if let Some(u) = self.usage(&c.id).await? {
                total.add(u);
            }
            containers.push(self.stats_of(&c).await?);
        }
        Ok(cri::PodSandboxStats {
            attributes: Some(cri::PodSandboxAttributes {
                id: sb.record.id.clone(),
                metadata: sb.config.metadata.clone(),
                labels: sb.config.labels.clone(),
                annotations: sb.config.annotations.clone(),
            }),
            linux: Some(cri::LinuxPodSandboxStats {
                network: match sb.netns() {
                    Some(netns) => network_usage(netns, at).await,
                    None => None,
                },
                cpu: Some(total.cpu(at)),
                memory: Some(total.memory(at)),
                process: Some(cri::ProcessUsage {
                    timestamp: at,
                    process_count: Some(cri::UInt64Value {
                        value: total.processes,
                    }),
                }),
                containers,
                ..Default::default()
            }),
            windows: None,
        })
    }

    /// ListPodSandboxStats.
    pub async fn list_sandbox_stats(
        &self,
        filter: Option<cri::PodSandboxStatsFilter>,
    ) -> Result<Vec<cri::PodSandboxStats>> {
        let f = filter.unwrap_or_default();
        let mut out = Vec::new();
        for record in self.records("sandbox").await? {
            let config: cri::PodSandboxConfig = decode_config(&record);
            if (!f.id.is_empty() && !record.id.starts_with(&f.id))
                || !selected(&config.labels, &f.label_selector)
            {
                continue;
            }
            out.push(self.sandbox_stats(&record.id).await?);
        }
        Ok(out)
    }
}

/// The metrics ListPodSandboxMetrics gives (cAdvisor's names): name, help, counter?
const METRICS: [(&str, &str, bool); 6] = [
    (
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        true,
    ),
    (
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        false,
    ),
    (
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        false,
    ),
    ("container_memory_rss", "Size of RSS in bytes.", false),
    (
        "container_memory_failures_total",
        "Cumulative count of memory allocation failures.",
        true,
    ),
    (
        "container_processes",
        "Number of processes running inside the container.",
        false,
    ),
];

impl Usage {
    /// The usage as [`METRICS`], for the container `name` (empty for the pod).
    fn metrics(&self, at: i64, name: &str, pod: &cri::PodSandboxMetadata) -> Vec<cri::Metric> {
        let values = [
            self.cpu_ns / 1_000_000_000,
            self.memory,
            self.working_set,
            self.rss,
            self.page_faults,
            self.processes,
        ];
        METRICS
            .iter()
            .zip(values)
            .map(|((metric, _, counter), value)| cri::Metric {
                name: metric.to_string(),
                timestamp: at,
                metric_type: if *counter {
                    cri::MetricType::Counter as i32
                } else {
                    cri::MetricType::Gauge as i32
                },
                label_values: vec![name.to_string(), pod.name.clone(), pod.namespace.clone()],
                value: Some(cri::UInt64Value { value }),
            })
            .collect()
    }
}

impl Cri {
    /// ListMetricDescriptors.
    pub fn metric_descriptors(&self) -> Vec<cri::MetricDescriptor> {
        METRICS
            .iter()
            .map(|(name, help, _)| cri::MetricDescriptor {
                name: name.to_string(),
                help: help.to_string(),
                label_keys: vec!["container".into(), "pod".into(), "namespace".into()],
            })
            .collect()
    }

    /// ListPodSandboxMetrics: every ready pod's metrics and its containers'.
    pub async fn pod_metrics(&self) -> Result<Vec<cri::PodSandboxMetrics>> {
        let mut out = Vec::new();
        for record in self.records("sandbox").await? {
            let sb = self.sandbox_of(record).await;
            if !sb.ready() {
                continue;
            }
            let at = now_nanos();
            let pod = sb.config.metadata.clone().unwrap_or_default();
            let mut total = self.usage(&sb.record.id).await?.unwrap_or_default();
            let mut container_metrics = Vec::new();
            for c in self.containers_of(&sb.record.id).await? {
                let Some(u) = self.usage(&c.id).await? else {
                    continue;
                };
                total.add(u);
                let config: cri::ContainerConfig = decode_config(&c);
                let name = config.metadata.map(|m| m.name).unwrap_or_default();
                container_metrics.push(cri::ContainerMetrics {
                    container_id: c.id.clone(),
                    metrics: u.metrics(at, &name, &pod),
                });
            }
            out.push(cri::PodSandboxMetrics {
                pod_sandbox_id: sb.record.id.clone(),
                metrics: total.metrics(at, "", &pod),
                container_metrics,
            });
        }
        Ok(out)
    }
}
