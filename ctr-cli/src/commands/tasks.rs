//! `berth tasks`: the ctr-style task commands (ls, ps, kill, exec, pause, resume, metrics,
//! rm, start), with ctr 1.6's flags and output, plus the task helpers the docker-style verbs
//! share (task lookup, signals, metrics decoding, running a process to its exit).

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use berth_proto::containerd::services::containers::v1 as cpb;
use berth_proto::containerd::services::snapshots::v1 as spb;
use berth_proto::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::containerd::services::tasks::v1 as pb;
use berth_proto::containerd::services::tasks::v1::tasks_client::TasksClient;
use berth_proto::containerd::v1::types::{Process, Status as TaskStatus};
use berth_proto::ttrpc::cgroups::metrics::Metrics as CgroupV1;
use berth_proto::ttrpc::cgroups_v2::metrics::Metrics as CgroupV2;
use berth_proto::ttrpc::protobuf::reflect::{ReflectFieldRef, ReflectValueRef};
use berth_proto::ttrpc::protobuf::{Message as _, MessageDyn};
use clap::{Args, Subcommand};
use nix::sys::signal::Signal;
use tabwriter::TabWriter;

use crate::client::{Client, status};
use crate::exit::exit_with;
use crate::labels;
use crate::output::{self, Format};

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// List tasks.
    #[command(alias = "list")]
    Ls {
        /// Print only the task id.
        #[arg(short, long)]
        quiet: bool,
    },
    /// List the processes of a container's task.
    Ps { container: String },
    /// Signal a container's task (default: the image's stop signal, else SIGTERM).
    Kill {
        /// Signal to send (name, with or without SIG, or number).
        #[arg(short, long)]
        signal: Option<String>,
        /// Signal this exec process instead of the task.
        #[arg(long)]
        exec_id: Option<String>,
        /// Signal every process inside the container (ctr's -a is our --address).
        #[arg(long)]
        all: bool,
        container: String,
    },
    /// Run an additional process in a running container.
    Exec(ExecArgs),
    /// Pause a running container.
    Pause { container: String },
    /// Resume a paused container.
    Resume { container: String },
    /// One data point of a task's cgroup metrics (--format table or json).
    #[command(alias = "metric")]
    Metrics { container: String },
    /// Delete stopped tasks (or one exec process with --exec-id).
    #[command(alias = "delete", alias = "del", alias = "remove")]
    Rm {
        /// Kill the task (SIGKILL, all processes) first.
        #[arg(short, long)]
        force: bool,
        /// Delete this exec process instead of the task.
        #[arg(long)]
        exec_id: Option<String>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Create and start the task of an existing container, attached unless -d.
    Start {
        /// Return once the task has started.
        #[arg(short, long)]
        detach: bool,
        /// Send all IO to /dev/null.
        #[arg(long)]
        null_io: bool,
        /// Log URI for the task's output (file://, binary://).
        #[arg(long)]
        log_uri: Option<String>,
        /// Write the task's pid to this file.
        #[arg(long)]
        pid_file: Option<std::path::PathBuf>,
        container: String,
    },
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Working directory of the new process.
    #[arg(long)]
    pub cwd: Option<String>,
    /// Allocate a TTY.
    #[arg(short, long)]
    pub tty: bool,
    /// Return once the process has started.
    #[arg(short, long)]
    pub detach: bool,
    /// The exec id of the new process (unique within the task).
    #[arg(long, required = true)]
    pub exec_id: String,
    /// User (name or uid, optionally :group or :gid), resolved in the container.
    #[arg(long)]
    pub user: Option<String>,
    /// Environment variables, KEY=VALUE (repeatable).
    #[arg(long)]
    pub env: Vec<String>,
    /// Log URI for the process's output instead of this terminal.
    #[arg(long)]
    pub log_uri: Option<String>,
    pub container: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub fn tasks(c: &Client) -> TasksClient<tonic::transport::Channel> {
    TasksClient::new(c.channel.clone())
}

/// The task of container `id`, with ctr's message when it has none.
pub async fn get_task(c: &Client, id: &str) -> anyhow::Result<Process> {
    match tasks(c)
        .get(c.req(pb::GetRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        }))
        .await
    {
        Ok(r) => r
            .into_inner()
            .process
            .ok_or_else(|| anyhow::anyhow!("no running task found: task {id} not found")),
        Err(e) if e.code() == tonic::Code::NotFound => {
            anyhow::bail!("no running task found: task {id} not found: not found")
        }
        Err(e) => Err(status(e)),
    }
}

/// The container record `id` (ctr's LoadContainer).
pub async fn get_container(c: &Client, id: &str) -> anyhow::Result<cpb::Container> {
    use berth_proto::containerd::services::containers::v1::containers_client::ContainersClient;
    if id.is_empty() {
        anyhow::bail!("container id must be provided");
    }
    Ok(ContainersClient::new(c.channel.clone())
        .get(c.req(cpb::GetContainerRequest { id: id.to_string() }))
        .await
        .map_err(status)?
        .into_inner()
        .container
        .unwrap_or_default())
}

/// A task status as ctr prints it (`RUNNING`, `STOPPED`...).
pub fn status_name(p: &Process) -> &'static str {
    TaskStatus::try_from(p.status)
        .unwrap_or(TaskStatus::Unknown)
        .as_str_name()
}

/// Parses a signal as ctr does: `SIGKILL`, `KILL`, `kill` or `9`.
pub fn parse_signal(s: &str) -> anyhow::Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| anyhow::anyhow!("invalid signal: {s}"));
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map_err(|_| anyhow::anyhow!("invalid signal: {s}"))
}

/// The signal that stops container `ct`: its image's stop signal, else SIGTERM.
pub fn stop_signal(ct: &cpb::Container) -> anyhow::Result<Signal> {
    match ct.labels.get(labels::STOP_SIGNAL) {
        Some(s) if !s.is_empty() => parse_signal(s),
        _ => Ok(Signal::SIGTERM),
    }
}

pub async fn kill(
    c: &Client,
    id: &str,
    exec_id: &str,
    signal: Signal,
    all: bool,
) -> Result<(), tonic::Status> {
    tasks(c)
        .kill(c.req(pb::KillRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            signal: u32::try_from(signal as i32).unwrap_or(15),
            all,
        }))
        .await
        .map(drop)
}

/// Waits for a process (the task itself for an empty `exec_id`) to exit: its exit status.
pub async fn wait(c: &Client, id: &str, exec_id: &str) -> anyhow::Result<u32> {
    Ok(tasks(c)
        .wait(c.req(pb::WaitRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
        }))
        .await
        .map_err(status)?
        .into_inner()
        .exit_status)
}

/// ctr's `WithProcessKill`: SIGKILL every process of the task and wait until it stopped.
async fn kill_and_wait(c: &Client, id: &str, exec_id: &str) -> anyhow::Result<()> {
    let waiter = wait(c, id, exec_id);
    let killer = async {
        match kill(c, id, exec_id, Signal::SIGKILL, exec_id.is_empty()).await {
            Ok(()) => Ok(true),
            // Already gone, or not started: nothing to wait for beyond Wait itself.
            Err(e) if e.code() == tonic::Code::NotFound => Ok(true),
            Err(e) if e.code() == tonic::Code::FailedPrecondition => Ok(false),
            Err(e) => Err(status(e)),
        }
    };
    tokio::pin!(waiter);
    tokio::select! {
        killed = killer => {
            if killed? {
                waiter.await?;
            }
        }
        done = &mut waiter => { done?; }
    }
    Ok(())
}

/// ctr's `Task.Delete`: the task must be stopped (or created with no process), then it is
/// deleted; returns its exit status.
pub async fn delete_task(c: &Client, id: &str, force: bool) -> anyhow::Result<u32> {
    let t = get_task(c, id).await?;
    if force {
        kill_and_wait(c, id, "").await?;
    } else {
        let st = TaskStatus::try_from(t.status).unwrap_or(TaskStatus::Unknown);
        match st {
            TaskStatus::Stopped | TaskStatus::Unknown => {}
            TaskStatus::Created if t.pid == 0 => {}
            other => anyhow::bail!(
                "task must be stopped before deletion: {}: failed precondition",
                other.as_str_name().to_ascii_lowercase()
            ),
        }
    }
    Ok(tasks(c)
        .delete(c.req(pb::DeleteTaskRequest {
            container_id: id.to_string(),
        }))
        .await
        .map_err(status)?
        .into_inner()
        .exit_status)
}

/// The rootfs mounts of a container's snapshot, for a task Create (as containerd's client
/// passes them; none when the container has no snapshot).
pub async fn rootfs_mounts(
    c: &Client,
    ct: &cpb::Container,
) -> anyhow::Result<Vec<berth_proto::containerd::types::Mount>> {
    if ct.snapshot_key.is_empty() {
        return Ok(Vec::new());
    }
    Ok(SnapshotsClient::new(c.channel.clone())
        .mounts(c.req(spb::MountsRequest {
            snapshotter: ct.snapshotter.clone(),
            key: ct.snapshot_key.clone(),
        }))
        .await
        .map_err(status)?
        .into_inner()
        .mounts)
}

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

/// One data point of container `id`'s metrics: its time and decoded data.
pub async fn metrics(
    c: &Client,
    id: &str,
) -> anyhow::Result<(Option<prost_types::Timestamp>, Metrics)> {
    let list = tasks(c)
        .metrics(c.req(pb::MetricsRequest {
            filters: vec![format!("id=={id}")],
        }))
        .await
        .map_err(status)?
        .into_inner()
        .metrics;
    let m = list
        .into_iter()
        .find(|m| m.id == id)
        .ok_or_else(|| anyhow::anyhow!("no metrics received for task {id}"))?;
    let data = m
        .data
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("task {id}: metrics carry no data"))?;
    Ok((m.timestamp, Metrics::decode(data)?))
}

/// A time as Go prints a `time.Time` in UTC (`2006-01-02 15:04:05.999999999 +0000 UTC`).
fn go_time(ts: Option<&prost_types::Timestamp>) -> String {
    let Some(t) = ts else {
        return "0001-01-01 00:00:00 +0000 UTC".into();
    };
    let at = UNIX_EPOCH
        + Duration::new(
            u64::try_from(t.seconds).unwrap_or(0),
            u32::try_from(t.nanos).unwrap_or(0),
        );
    // humantime: 2006-01-02T15:04:05.123456789Z
    let text = humantime::format_rfc3339_nanos(at).to_string();
    let text = text.trim_end_matches('Z');
    let (date, time) = text.split_once('T').unwrap_or((text, ""));
    let time = match time.split_once('.') {
        Some((hms, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                hms.to_string()
            } else {
                format!("{hms}.{frac}")
            }
        }
        None => time.to_string(),
    };
    format!("{date} {time} +0000 UTC")
}

/// Prints lines of tab-separated cells as Go's tabwriter(minwidth, 8, padding 4) does.
fn print_tabbed(minwidth: usize, lines: &[String]) -> anyhow::Result<()> {
    let mut tw = TabWriter::new(std::io::stdout())
        .minwidth(minwidth)
        .padding(4);
    for l in lines {
        writeln!(tw, "{l}")?;
    }
    tw.flush()?;
    Ok(())
}

/// The exec id a `ProcessInfo` carries (runc shims send `containerd.runc.v1.ProcessDetails`).
#[derive(Clone, PartialEq, prost::Message)]
struct ProcessDetails {
    #[prost(string, tag = "1")]
    exec_id: String,
}

fn process_info(info: Option<&prost_types::Any>) -> String {
    let Some(a) = info else {
        return "-".into();
    };
    if a.type_url.ends_with("ProcessDetails")
        && let Ok(d) = <ProcessDetails as prost::Message>::decode(a.value.as_slice())
    {
        return format!(
            "&ProcessDetails{{ExecID:{},XXX_unrecognized:[],}}",
            d.exec_id
        );
    }
    a.type_url.clone()
}

pub async fn run(c: &Client, cmd: Cmd, format: Format) -> anyhow::Result<()> {
    match cmd {
        Cmd::Ls { quiet } => {
            let list = tasks(c)
                .list(c.req(pb::ListTasksRequest::default()))
                .await
                .map_err(status)?
                .into_inner()
                .tasks;
            if quiet {
                for t in &list {
                    println!("{}", t.id);
                }
            } else if format == Format::Json {
                output::json(&serde_json::Value::Array(
                    list.iter()
                        .map(|t| {
                            serde_json::json!({
                                "ID": t.id, "Pid": t.pid, "Status": status_name(t),
                            })
                        })
                        .collect(),
                ))?;
            } else {
                let mut lines = vec!["TASK\tPID\tSTATUS\t".to_string()];
                lines.extend(
                    list.iter()
                        .map(|t| format!("{}\t{}\t{}", t.id, t.pid, status_name(t))),
                );
                print_tabbed(4, &lines)?;
            }
        }
        Cmd::Ps { container } => {
            get_container(c, &container).await?;
            get_task(c, &container).await?;
            let procs = tasks(c)
                .list_pids(c.req(pb::ListPidsRequest {
                    container_id: container,
                }))
                .await
                .map_err(status)?
                .into_inner()
                .processes;
            if format == Format::Json {
                output::json(&serde_json::Value::Array(
                    procs
                        .iter()
                        .map(|p| serde_json::json!({"Pid": p.pid, "Info": p.info.as_ref().map(output::any_json)}))
                        .collect(),
                ))?;
            } else {
                let mut lines = vec!["PID\tINFO".to_string()];
                lines.extend(
                    procs
                        .iter()
                        .map(|p| format!("{}\t{}", p.pid, process_info(p.info.as_ref()))),
                );
                print_tabbed(1, &lines)?;
            }
        }
        Cmd::Kill {
            signal,
            exec_id,
            all,
            container,
        } => {
            let exec_id = exec_id.unwrap_or_default();
            if all && !exec_id.is_empty() {
                anyhow::bail!("specify an exec-id or all; not both");
            }
            let ct = get_container(c, &container).await?;
            let sig = match signal {
                Some(s) if !s.is_empty() => parse_signal(&s)?,
                _ => stop_signal(&ct)?,
            };
            get_task(c, &container).await?;
            kill(c, &container, &exec_id, sig, all)
                .await
                .map_err(status)?;
        }
        Cmd::Pause { container } => {
            get_container(c, &container).await?;
            get_task(c, &container).await?;
            tasks(c)
                .pause(c.req(pb::PauseTaskRequest {
                    container_id: container,
                }))
                .await
                .map_err(status)?;
        }
        Cmd::Resume { container } => {
            get_container(c, &container).await?;
            get_task(c, &container).await?;
            tasks(c)
                .resume(c.req(pb::ResumeTaskRequest {
                    container_id: container,
                }))
                .await
                .map_err(status)?;
        }
        Cmd::Metrics { container } => {
            get_container(c, &container).await?;
            get_task(c, &container).await?;
            let (ts, m) = metrics(c, &container).await?;
            if format == Format::Json {
                output::json(&m.to_json())?;
            } else {
                let mut lines = vec![
                    "ID\tTIMESTAMP\t".to_string(),
                    format!("{container}\t{}\t", go_time(ts.as_ref())),
                    String::new(),
                    "METRIC\tVALUE\t".to_string(),
                ];
                lines.extend(m.rows().into_iter().map(|(k, v)| format!("{k}\t{v}\t")));
                print_tabbed(1, &lines)?;
            }
        }
        Cmd::Rm {
            force,
            exec_id,
            containers,
        } => match exec_id {
            Some(exec_id) => {
                let id = containers.first().cloned().unwrap_or_default();
                get_container(c, &id).await?;
                get_task(c, &id).await?;
                if force {
                    kill_and_wait(c, &id, &exec_id).await?;
                }
                let code = tasks(c)
                    .delete_process(c.req(pb::DeleteProcessRequest {
                        container_id: id,
                        exec_id,
                    }))
                    .await
                    .map_err(status)?
                    .into_inner()
                    .exit_status;
                exit_with(code)?;
            }
            None => {
                let mut first = None;
                for id in containers {
                    let r = match get_container(c, &id).await {
                        Ok(_) => delete_task(c, &id, force).await,
                        Err(e) => Err(e),
                    };
                    match r {
                        Ok(0) => {}
                        Ok(code) => {
                            eprintln!(
                                "berth: warning: task {id} exit with non-zero exit code {code}"
                            )
                        }
                        Err(e) => {
                            eprintln!("berth: unable to delete {id}: {e:#}");
                            first.get_or_insert(e);
                        }
                    }
                }
                if let Some(e) = first {
                    return Err(e);
                }
            }
        },
        Cmd::Exec(args) => exec_cmd(c, args).await?,
        Cmd::Start {
            detach,
            null_io,
            log_uri,
            pid_file,
            container,
        } => start_cmd(c, &container, detach, null_io, log_uri, pid_file).await?,
    }
    Ok(())
}

/// An exec's environment: `KEY=VALUE` pairs in `env` replace same-key entries of `base`,
/// a bare `KEY` takes our own environment's value (as docker exec -e does).
pub fn merge_env(base: &[String], env: &[String]) -> Vec<String> {
    let mut out: Vec<String> = base.to_vec();
    for e in env {
        let entry = match e.split_once('=') {
            Some(_) => e.clone(),
            None => match std::env::var(e) {
                Ok(v) => format!("{e}={v}"),
                Err(_) => continue,
            },
        };
        let key = entry.split('=').next().unwrap_or_default().to_string();
        out.retain(|x| x.split('=').next() != Some(key.as_str()));
        out.push(entry);
    }
    out
}

/// The user of a process spec for `user` (`name|uid[:group|gid]`), names looked up in the
/// container's /etc/passwd and /etc/group under `root` (the task's /proc/<pid>/root).
pub fn resolve_user(root: &std::path::Path, user: &str) -> anyhow::Result<serde_json::Value> {
    let read = |p: &str| -> String {
        crate::commands::docker::cp::resolve_in_root(root, std::path::Path::new(p))
            .and_then(std::fs::read_to_string)
            .unwrap_or_default()
    };
    let passwd = read("/etc/passwd");
    let group = read("/etc/group");
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    let pw = entries
        .iter()
        .find(|f| f[0] == u)
        .or_else(|| entries.iter().find(|f| f[2] == u));
    let (uid, mut gid, name) = match (pw, u.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse::<u32>().unwrap_or(0),
            f[3].parse::<u32>().unwrap_or(0),
            Some(f[0].to_string()),
        ),
        (None, Ok(uid)) => (uid, 0, None),
        (None, Err(_)) => {
            anyhow::bail!("unable to find user {u}: no matching entries in passwd file")
        }
    };
    let groups: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect();
    if let Some(g) = g {
        gid = match groups.iter().find(|f| f[0] == g) {
            Some(f) => f[2].parse().unwrap_or(0),
            None => g.parse().map_err(|_| {
                anyhow::anyhow!("unable to find group {g}: no matching entries in group file")
            })?,
        };
    }
    let mut additional: Vec<u32> = Vec::new();
    if let (Some(name), None) = (name, g) {
        for f in &groups {
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                let id = f[2].parse().unwrap_or(0);
                if id != gid && !additional.contains(&id) {
                    additional.push(id);
                }
            }
        }
    }
    let mut v = serde_json::json!({ "uid": uid, "gid": gid });
    if !additional.is_empty() {
        v["additionalGids"] = serde_json::json!(additional);
    }
    Ok(v)
}

/// The process spec of container `ct` (its spec's `process`), as JSON.
pub fn container_process(ct: &cpb::Container) -> anyhow::Result<serde_json::Value> {
    let spec = ct
        .spec
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("container {} has no spec", ct.id))?;
    let v: serde_json::Value = serde_json::from_slice(&spec.value)
        .map_err(|e| anyhow::anyhow!("container {}: spec is not valid JSON: {e}", ct.id))?;
    Ok(v.get("process")
        .cloned()
        .unwrap_or_else(|| serde_json::json!({"cwd": "/", "user": {"uid": 0, "gid": 0}})))
}

async fn exec_cmd(c: &Client, a: ExecArgs) -> anyhow::Result<()> {
    let ct = get_container(c, &a.container).await?;
    let task = get_task(c, &a.container).await?;
    let mut process = container_process(&ct)?;
    if let Some(user) = a.user.as_deref().filter(|u| !u.is_empty()) {
        let root = std::path::PathBuf::from(format!("/proc/{}/root", task.pid));
        process["user"] = resolve_user(&root, user)?;
    }
    process["terminal"] = serde_json::Value::Bool(a.tty);
    process["args"] = serde_json::json!(a.args);
    if let Some(cwd) = a.cwd.filter(|c| !c.is_empty()) {
        process["cwd"] = serde_json::Value::String(cwd);
    }
    if !a.env.is_empty() {
        let base: Vec<String> = process
            .get("env")
            .and_then(|e| serde_json::from_value(e.clone()).ok())
            .unwrap_or_default();
        process["env"] = serde_json::json!(merge_env(&base, &a.env));
    }
    let code = crate::commands::docker::exec::run_process(
        c,
        &a.container,
        &a.exec_id,
        &process,
        crate::commands::docker::exec::Io {
            stdin: true,
            tty: a.tty,
            detach: a.detach,
            log_uri: a.log_uri,
        },
    )
    .await?;
    exit_with(code)
}

async fn start_cmd(
    c: &Client,
    id: &str,
    detach: bool,
    null_io: bool,
    log_uri: Option<String>,
    pid_file: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let ct = get_container(c, id).await?;
    let process = container_process(&ct)?;
    let tty = process
        .get("terminal")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    if tty && null_io {
        anyhow::bail!("tty and null-io cannot be used together");
    }
    let rootfs = rootfs_mounts(c, &ct).await?;
    let code = crate::commands::docker::exec::run_task(
        c,
        &ct,
        rootfs,
        crate::commands::docker::exec::TaskIo {
            tty,
            null_io,
            detach,
            log_uri,
            pid_file,
        },
    )
    .await?;
    exit_with(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_signals_like_ctr() {
        assert_eq!(parse_signal("SIGKILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("kill").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert!(parse_signal("SIGNOPE").is_err());
    }

    #[test]
    fn go_time_format() {
        let ts = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 120_000_000,
        };
        assert_eq!(go_time(Some(&ts)), "2023-11-14 22:13:20.12 +0000 UTC");
        let ts = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        };
        assert_eq!(go_time(Some(&ts)), "2023-11-14 22:13:20 +0000 UTC");
    }

    #[test]
    fn env_merge_replaces_keys() {
        let base = ["PATH=/bin".to_string(), "A=1".to_string()];
        let out = merge_env(&base, &["A=2".into(), "B=3".into()]);
        assert_eq!(out, ["PATH=/bin", "A=2", "B=3"]);
    }

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
