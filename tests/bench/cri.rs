//! CRI benchmarks, berthd against containerd 1.6's own CRI plugin in the same run, both
//! driven by the same tonic CRI client as a kubelet drives them, each with a CNI bridge of
//! its own (the real plugins) and the busybox image pulled from a loopback registry:
//!
//! - RunPodSandbox (berth: its built-in pause; containerd: its sandbox image, pulled
//!   before the runs);
//! - CreateContainer + StartContainer of a `sleep` in a ready pod;
//! - StopPodSandbox + RemovePodSandbox of that pod;
//! - the memory of 10 idle pods of one container each: the daemon and the shims, as RSS
//!   and as PSS (the shims' shared pages counted once);
//! - a pod's shim as the pod grows from one container to five: what each one adds.
//!
//! Medians of RUNS, with the spread (min–max); printed with berth/containerd ratios, never
//! asserted. Run: `cargo build --release --workspace && cargo bench -p berth-tests --bench cri`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_proto::runtime::v1 as cri;
use berth_proto::runtime::v1::image_service_client::ImageServiceClient;
use berth_proto::runtime::v1::runtime_service_client::RuntimeServiceClient;
use berth_tests::{
    Containerd, Daemon, TestNetwork, channel, cri_registry, pss_kib, rss_kib, spread_ms,
};
use tonic::transport::Channel;

const RUNS: usize = 10;
const IDLE_PODS: usize = 10;
const GROWN: usize = 5;

struct Side {
    name: &'static str,
    rt: RuntimeServiceClient<Channel>,
    img: ImageServiceClient<Channel>,
    /// The daemon's pid and the path its shims name on their command line.
    pid: u32,
    address: String,
    logs: std::path::PathBuf,
}

#[derive(Default)]
struct Figures {
    run_pod: Vec<Duration>,
    create_start: Vec<Duration>,
    stop_remove: Vec<Duration>,
    daemon_rss: u64,
    daemon_pss: u64,
    shims_rss: u64,
    shims_pss: u64,
    shims: usize,
    /// The RSS of a pod's shim with one container, and what each further one adds.
    pod_shim_one: u64,
    pod_shim_extra: u64,
}

fn pod(side: &Side, name: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "bench".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: side.logs.join(name).display().to_string(),
        labels: BTreeMap::from([("app".into(), "bench".into())]),
        ..Default::default()
    }
}

fn container(name: &str, image: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "100000".into()],
        log_path: format!("{name}.log"),
        ..Default::default()
    }
}

impl Side {
    async fn run_pod(&mut self, config: &cri::PodSandboxConfig) -> String {
        self.rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("{}: RunPodSandbox: {e}", self.name))
            .into_inner()
            .pod_sandbox_id
    }

    async fn create_start(&mut self, sandbox: &str, config: &cri::PodSandboxConfig, image: &str) {
        self.create_start_named(sandbox, config, image, "sleeper")
            .await
    }

    async fn create_start_named(
        &mut self,
        sandbox: &str,
        config: &cri::PodSandboxConfig,
        image: &str,
        name: &str,
    ) {
        let id = self
            .rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox.into(),
                config: Some(container(name, image)),
                sandbox_config: Some(config.clone()),
            })
            .await
            .unwrap_or_else(|e| panic!("{}: CreateContainer: {e}", self.name))
            .into_inner()
            .container_id;
        self.rt
            .start_container(cri::StartContainerRequest { container_id: id })
            .await
            .unwrap_or_else(|e| panic!("{}: StartContainer: {e}", self.name));
    }

    async fn stop_remove(&mut self, sandbox: &str) {
        let id = sandbox.to_string();
        self.rt
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("{}: StopPodSandbox: {e}", self.name));
        self.rt
            .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
            .await
            .unwrap_or_else(|e| panic!("{}: RemovePodSandbox: {e}", self.name));
    }

    /// The shim processes of this daemon: those whose command line names its address.
    fn shims(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains("containerd-shim") && cmdline.contains(&self.address) {
                pids.push(pid);
            }
        }
        pids
    }

    async fn measure(&mut self, image: &str) -> Figures {
        let mut f = Figures::default();
        // Warm up once (first CNI call, first shim binary load, first snapshot).
        let config = pod(self, "warm");
        let id = self.run_pod(&config).await;
        self.create_start(&id, &config, image).await;
        self.stop_remove(&id).await;
        for i in 0..RUNS {
            let config = pod(self, &format!("run{i}"));
            let t = Instant::now();
            let id = self.run_pod(&config).await;
            f.run_pod.push(t.elapsed());
            let t = Instant::now();
            self.create_start(&id, &config, image).await;
            f.create_start.push(t.elapsed());
            let t = Instant::now();
            self.stop_remove(&id).await;
            f.stop_remove.push(t.elapsed());
        }
        let mut idle = Vec::new();
        for i in 0..IDLE_PODS {
            let config = pod(self, &format!("idle{i}"));
            let id = self.run_pod(&config).await;
            self.create_start(&id, &config, image).await;
            idle.push(id);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        f.daemon_rss = rss_kib(self.pid);
        f.daemon_pss = pss_kib(self.pid);
        let shims = self.shims();
        f.shims = shims.len();
        f.shims_rss = shims.iter().map(|p| rss_kib(*p)).sum();
        f.shims_pss = shims.iter().map(|p| pss_kib(*p)).sum();
        for id in idle {
            self.stop_remove(&id).await;
        }
        // One pod's shim as its containers grow from one to GROWN.
        let config = pod(self, "grow");
        let id = self.run_pod(&config).await;
        self.create_start(&id, &config, image).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let one: u64 = self.shims().iter().map(|p| rss_kib(*p)).sum();
        for n in 1..GROWN {
            self.create_start_named(&id, &config, image, &format!("more{n}"))
                .await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let grown: u64 = self.shims().iter().map(|p| rss_kib(*p)).sum();
        f.pod_shim_one = one;
        f.pod_shim_extra = grown.saturating_sub(one) / (GROWN as u64 - 1);
        self.stop_remove(&id).await;
        f
    }
}

fn time_row(what: &str, b: &[Duration], c: &[Duration], target: &str) {
    let (bm, blo, bhi) = spread_ms(b);
    let (cm, clo, chi) = spread_ms(c);
    println!(
        "{what:<34} berth {bm:>7.1} ms ({blo:.1}-{bhi:.1})  containerd {cm:>7.1} ms ({clo:.1}-{chi:.1})  ratio {:.2}{target}",
        bm / cm
    );
}

fn mem_row(what: &str, b: u64, c: u64, target: &str) {
    println!(
        "{what:<34} berth {:>7.1} MiB  containerd {:>7.1} MiB  ratio {:.2}{target}",
        b as f64 / 1024.0,
        c as f64 / 1024.0,
        b as f64 / c as f64
    );
}

async fn connect(address: &Path) -> (RuntimeServiceClient<Channel>, ImageServiceClient<Channel>) {
    let ch = channel(address).await;
    (
        RuntimeServiceClient::new(ch.clone()),
        ImageServiceClient::new(ch),
    )
}

#[tokio::main]
async fn main() {
    let work = tempfile::Builder::new()
        .prefix("berth-bench-cri-")
        .tempdir_in("/tmp")
        .expect("tmp");
    let w = work.path().to_path_buf();
    let (_reg, image, _) = cri_registry(&w);
    let host = image.split('/').next().expect("host").to_string();
    let (berth_net, ctd_net) = (TestNetwork::claim(), TestNetwork::claim());

    let d = Daemon::start_with_config(&format!(
        "[cri]\ncni_conf_dir = \"{}\"\n",
        berth_net.cni_conf_dir(&w.join("b")).display()
    ));
    let ctd = Containerd::start_cri(&host, &ctd_net.cni_conf_dir(&w.join("c")));
    let mut sides = Vec::new();
    for (name, address, pid) in [
        ("berth", d.address.clone(), d.pid()),
        ("containerd", ctd.address.clone(), ctd.pid()),
    ] {
        let (rt, img) = connect(&address).await;
        let logs = w.join(format!("logs-{name}"));
        sides.push(Side {
            name,
            rt,
            img,
            pid,
            address: address.display().to_string(),
            logs,
        });
    }
    let mut figures = Vec::new();
    for side in sides.iter_mut() {
        for reference in [image.clone(), format!("{host}/pause:3.6")] {
            side.img
                .pull_image(cri::PullImageRequest {
                    image: Some(cri::ImageSpec {
                        image: reference.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| panic!("{}: PullImage {reference}: {e}", side.name));
        }
        figures.push(side.measure(&image).await);
    }
    drop(d);
    drop(ctd);
    let (b, c) = (&figures[0], &figures[1]);
    println!(
        "a tonic CRI client against berthd and containerd 1.6's CRI plugin; CNI bridge each; \
         medians of {RUNS} (min-max)"
    );
    time_row(
        "RunPodSandbox",
        &b.run_pod,
        &c.run_pod,
        "  (target <= 0.60)",
    );
    time_row(
        "CreateContainer+StartContainer",
        &b.create_start,
        &c.create_start,
        "",
    );
    time_row(
        "StopPodSandbox+RemovePodSandbox",
        &b.stop_remove,
        &c.stop_remove,
        "",
    );
    mem_row(
        &format!("{IDLE_PODS} idle pods: daemon RSS"),
        b.daemon_rss,
        c.daemon_rss,
        "",
    );
    mem_row(
        &format!("{IDLE_PODS} idle pods: shims RSS ({}/{})", b.shims, c.shims),
        b.shims_rss,
        c.shims_rss,
        "",
    );
    mem_row(
        &format!("{IDLE_PODS} idle pods: daemon + shims RSS"),
        b.daemon_rss + b.shims_rss,
        c.daemon_rss + c.shims_rss,
        "  (target <= 0.35)",
    );
    mem_row(
        "a pod's shim RSS, one container",
        b.pod_shim_one,
        c.pod_shim_one,
        "",
    );
    println!(
        "{:<34} berth {:>7} KiB  containerd {:>7} KiB",
        format!("each further container (to {GROWN})"),
        b.pod_shim_extra,
        c.pod_shim_extra
    );
    mem_row(
        &format!("{IDLE_PODS} idle pods: daemon + shims PSS"),
        b.daemon_pss + b.shims_pss,
        c.daemon_pss + c.shims_pss,
        "",
    );
}
