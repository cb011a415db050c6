//! Metadata benchmark, berthd against real containerd in the same run:
//! idle daemon RSS, and 1,000 `Containers.Create` + `Delete` pairs from one client.
//!
//! Run: `cargo build --workspace --release && cargo bench -p berth-tests --bench metadata`.
//! Timings are reported, never asserted.

use std::time::{Duration, Instant};

use berth_proto::containerd::services::containers::v1 as pb;
use berth_proto::containerd::services::containers::v1::containers_client::ContainersClient;
use berth_tests::{Containerd, Daemon, channel, in_ns, minimal_spec, rss_kib};

const PAIRS: usize = 1000;

async fn create_delete(address: &std::path::Path, ns: &str) -> Duration {
    let mut api = ContainersClient::new(channel(address).await);
    let spec = minimal_spec().into_bytes();
    let start = Instant::now();
    for i in 0..PAIRS {
        let id = format!("bench-{i}");
        api.create(in_ns(
            ns,
            pb::CreateContainerRequest {
                container: Some(pb::Container {
                    id: id.clone(),
                    runtime: Some(pb::container::Runtime {
                        name: "io.containerd.runc.v2".into(),
                        options: None,
                    }),
                    spec: Some(prost_types::Any {
                        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                        value: spec.clone(),
                    }),
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect("create");
        api.delete(in_ns(ns, pb::DeleteContainerRequest { id }))
            .await
            .expect("delete");
    }
    start.elapsed()
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let berthd = Daemon::start();
    let containerd = Containerd::start();
    std::thread::sleep(Duration::from_secs(2));
    let (b_rss, c_rss) = (rss_kib(berthd.pid()), rss_kib(containerd.pid()));
    println!(
        "idle RSS: berthd {} KiB, containerd {} KiB, ratio {:.2}",
        b_rss,
        c_rss,
        b_rss as f64 / c_rss as f64
    );
    let b = rt.block_on(create_delete(&berthd.address, "bench"));
    let c = rt.block_on(create_delete(&containerd.address, "bench"));
    println!(
        "{PAIRS} create+delete pairs: berthd {:.2}s ({:.2} ms/pair), containerd {:.2}s ({:.2} ms/pair), ratio {:.2}",
        b.as_secs_f64(),
        b.as_secs_f64() * 1000.0 / PAIRS as f64,
        c.as_secs_f64(),
        c.as_secs_f64() * 1000.0 / PAIRS as f64,
        b.as_secs_f64() / c.as_secs_f64()
    );
    println!(
        "RSS after the run: berthd {} KiB, containerd {} KiB",
        rss_kib(berthd.pid()),
        rss_kib(containerd.pid())
    );
}
