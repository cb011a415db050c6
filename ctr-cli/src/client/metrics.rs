//! A task's cgroup metrics (v1 or v2, as the shim reports them), decoded: ctr's METRIC /
//! VALUE rows, Go-style JSON, and the figures `berth stats` shows.

use berth_proto::ttrpc::cgroups::metrics::Metrics as CgroupV1;
use berth_proto::ttrpc::cgroups_v2::metrics::Metrics as CgroupV2;
use berth_proto::ttrpc::protobuf::reflect::{ReflectFieldRef, ReflectValueRef};
use berth_proto::ttrpc::protobuf::{Message as _, MessageDyn};

use crate::labels;

/// The decoded cgroup metrics of a task.
#[derive(Debug)]
pub enum Metrics {
    V1(Box<CgroupV1>),
    V2(Box<CgroupV2>),
}

impl Metrics {
    /// Decodes a metric's `Any` (`io.containerd.cgroups.v1.Metrics` or `...v2.Metrics`).
    pub fn decode(any: &prost_types::Any) -> anyhow::Result<Metrics> {
        let name = any.type_url.rsplit('/').next().unwrap_or(&any.type_url);
        match name {
            labels::CGROUPS_V1_METRICS => Ok(Metrics::V1(Box::new(
                CgroupV1::parse_from_bytes(&any.value)
                    .map_err(|e| anyhow::anyhow!("decode {name}: {e}"))?,
            ))),
            labels::CGROUPS_V2_METRICS => Ok(Metrics::V2(Box::new(
                CgroupV2::parse_from_bytes(&any.value)
                    .map_err(|e| anyhow::anyhow!("decode {name}: {e}"))?,
            ))),
            _ => anyhow::bail!(
                "cannot convert metric data to cgroups.Metrics or windows.Statistics ({})",
                any.type_url
            ),
        }
    }

    /// The metrics as Go's encoding/json prints containerd's types: proto field names,
    /// zero values left out.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Metrics::V1(m) => message_json(m.as_ref()),
            Metrics::V2(m) => message_json(m.as_ref()),
        }
    }

    /// ctr's METRIC/VALUE rows.
    pub fn rows(&self) -> Vec<(String, String)> {
        let mut rows = Vec::new();
        let mut row = |k: &str, v: String| rows.push((k.to_string(), v));
        match self {
            Metrics::V1(m) => {
                if let Some(mem) = m.memory.as_ref() {
                    let usage = mem.usage.as_ref();
                    row(
                        "memory.usage_in_bytes",
                        usage.map_or(0, |u| u.usage).to_string(),
                    );
                    row(
                        "memory.limit_in_bytes",
                        usage.map_or(0, |u| u.limit).to_string(),
                    );
                    row("memory.stat.cache", mem.total_cache.to_string());
                }
                if let Some(cpu) = m.cpu.as_ref() {
                    let usage = cpu.usage.as_ref();
                    row("cpuacct.usage", usage.map_or(0, |u| u.total).to_string());
                    let per: Vec<String> = usage
                        .map(|u| u.per_cpu.iter().map(u64::to_string).collect())
                        .unwrap_or_default();
                    row("cpuacct.usage_percpu", format!("[{}]", per.join(" ")));
                }
                if let Some(p) = m.pids.as_ref() {
                    row("pids.current", p.current.to_string());
                    row("pids.limit", p.limit.to_string());
                }
            }
            Metrics::V2(m) => {
                if let Some(p) = m.pids.as_ref() {
                    row("pids.current", p.current.to_string());
                    row("pids.limit", p.limit.to_string());
                }
                if let Some(cpu) = m.cpu.as_ref() {
                    row("cpu.usage_usec", cpu.usage_usec.to_string());
                    row("cpu.user_usec", cpu.user_usec.to_string());
                    row("cpu.system_usec", cpu.system_usec.to_string());
                    row("cpu.nr_periods", cpu.nr_periods.to_string());
                    row("cpu.nr_throttled", cpu.nr_throttled.to_string());
                    row("cpu.throttled_usec", cpu.throttled_usec.to_string());
                }
                if let Some(mem) = m.memory.as_ref() {
                    row("memory.usage", mem.usage.to_string());
                    row("memory.usage_limit", mem.usage_limit.to_string());
                    row("memory.swap_usage", mem.swap_usage.to_string());
                    row("memory.swap_limit", mem.swap_limit.to_string());
                }
            }
        }
        rows
    }

    /// CPU time used so far, in nanoseconds.
    pub fn cpu_ns(&self) -> u64 {
        match self {
            Metrics::V1(m) => m
                .cpu
                .as_ref()
                .and_then(|c| c.usage.as_ref())
                .map_or(0, |u| u.total),
            Metrics::V2(m) => m
                .cpu
                .as_ref()
                .map_or(0, |c| c.usage_usec.saturating_mul(1000)),
        }
    }

    /// Memory in use as Docker counts it (usage less inactive page cache) and the limit.
    pub fn memory(&self) -> (u64, u64) {
        match self {
            Metrics::V1(m) => m.memory.as_ref().map_or((0, 0), |mem| {
                let usage = mem.usage.as_ref().map_or(0, |u| u.usage);
                let limit = mem.usage.as_ref().map_or(0, |u| u.limit);
                (usage.saturating_sub(mem.total_inactive_file), limit)
            }),
            Metrics::V2(m) => m.memory.as_ref().map_or((0, 0), |mem| {
                (mem.usage.saturating_sub(mem.inactive_file), mem.usage_limit)
            }),
        }
    }

    /// Bytes read and written by block devices.
    pub fn block_io(&self) -> (u64, u64) {
        match self {
            Metrics::V1(m) => m.blkio.as_ref().map_or((0, 0), |b| {
                b.io_service_bytes_recursive
                    .iter()
                    .fold((0, 0), |(r, w), e| {
                        match e.op.to_ascii_lowercase().as_str() {
                            "read" => (r + e.value, w),
                            "write" => (r, w + e.value),
                            _ => (r, w),
                        }
                    })
            }),
            Metrics::V2(m) => m.io.as_ref().map_or((0, 0), |io| {
                io.usage
                    .iter()
                    .fold((0, 0), |(r, w), e| (r + e.rbytes, w + e.wbytes))
            }),
        }
    }

    /// Bytes received and sent over the network.
    pub fn net_io(&self) -> (u64, u64) {
        let sum = |it: &mut dyn Iterator<Item = (u64, u64)>| {
            it.fold((0, 0), |(r, t), (a, b)| (r + a, t + b))
        };
        match self {
            Metrics::V1(m) => sum(&mut m.network.iter().map(|n| (n.rx_bytes, n.tx_bytes))),
            Metrics::V2(m) => sum(&mut m.network.iter().map(|n| (n.rx_bytes, n.tx_bytes))),
        }
    }

    pub fn pids(&self) -> u64 {
        match self {
            Metrics::V1(m) => m.pids.as_ref().map_or(0, |p| p.current),
            Metrics::V2(m) => m.pids.as_ref().map_or(0, |p| p.current),
        }
    }
}

/// A rust-protobuf message as JSON by reflection: proto field names, zero values omitted
/// (what Go's json tags `name,omitempty` give for containerd's cgroups types).
fn message_json(m: &dyn MessageDyn) -> serde_json::Value {
    let mut obj = serde_json::Map::new();
    for f in m.descriptor_dyn().fields() {
        let v = match f.get_reflect(m) {
            ReflectFieldRef::Optional(o) => o.value().and_then(|v| value_json(&v)),
            ReflectFieldRef::Repeated(r) => {
                let items: Vec<serde_json::Value> = r
                    .into_iter()
                    .map(|v| value_json(&v).unwrap_or(serde_json::Value::from(0)))
                    .collect();
                (!items.is_empty()).then_some(serde_json::Value::Array(items))
            }
            ReflectFieldRef::Map(_) => None,
        };
        if let Some(v) = v {
            obj.insert(f.name().to_string(), v);
        }
    }
    serde_json::Value::Object(obj)
}

fn value_json(v: &ReflectValueRef<'_>) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    match v {
        ReflectValueRef::U32(n) => (*n != 0).then(|| J::from(*n)),
        ReflectValueRef::U64(n) => (*n != 0).then(|| J::from(*n)),
        ReflectValueRef::I32(n) => (*n != 0).then(|| J::from(*n)),
        ReflectValueRef::I64(n) => (*n != 0).then(|| J::from(*n)),
        ReflectValueRef::F32(n) => (*n != 0.0).then(|| J::from(*n)),
        ReflectValueRef::F64(n) => (*n != 0.0).then(|| J::from(*n)),
        ReflectValueRef::Bool(b) => b.then_some(J::Bool(true)),
        ReflectValueRef::String(s) => (!s.is_empty()).then(|| J::from(*s)),
        ReflectValueRef::Bytes(b) => (!b.is_empty()).then(|| J::from(b.to_vec())),
        ReflectValueRef::Enum(_, n) => (*n != 0).then(|| J::from(*n)),
        ReflectValueRef::Message(m) => Some(message_json(&**m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_rows_and_json() {
        let mut m = CgroupV1::new();
        let mut mem = berth_proto::ttrpc::cgroups::metrics::MemoryStat::new();
        let mut usage = berth_proto::ttrpc::cgroups::metrics::MemoryEntry::new();
        usage.usage = 4096;
        usage.limit = 1 << 20;
        mem.usage = Some(usage).into();
        mem.total_cache = 7;
        m.memory = Some(mem).into();
        let mut pids = berth_proto::ttrpc::cgroups::metrics::PidsStat::new();
        pids.current = 1;
        m.pids = Some(pids).into();
        let any = prost_types::Any {
            type_url: labels::CGROUPS_V1_METRICS.into(),
            value: m.write_to_bytes().unwrap(),
        };
        let d = Metrics::decode(&any).unwrap();
        let rows = d.rows();
        assert_eq!(rows[0], ("memory.usage_in_bytes".into(), "4096".into()));
        assert_eq!(rows[2], ("memory.stat.cache".into(), "7".into()));
        assert_eq!(rows[3], ("pids.current".into(), "1".into()));
        let j = d.to_json();
        assert_eq!(j["memory"]["usage"]["usage"], 4096);
        assert_eq!(j["pids"]["current"], 1);
        assert!(j["pids"].get("limit").is_none());
    }
}
