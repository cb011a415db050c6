//! Cold pull benchmark, berthd against real containerd 1.6 in the same run: the multi-layer
//! fixture (~150 MB uncompressed, five layers) from a local registry.
//!
//! - berth: `berth pull` (the daemon fetches, verifies and stores; no unpack yet);
//! - containerd: `ctr content fetch` (the same work: content only), and `ctr images pull`
//!   (which also unpacks into overlayfs snapshots) for reference.
//!
//! Both daemons keep root and state on tmpfs (the disk here is noisy). Each run uses a new
//! namespace and a fresh daemon so nothing is cached. Timings are printed, never asserted.
//! Run: `cargo build --release --workspace && cargo bench -p berth-tests --bench pull`.

use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::fixtures::{Registry, multilayer_image};
use berth_tests::{Containerd, Daemon, bin, ok, system_bin};

const RUNS: usize = 3;

fn time(mut cmd: Command, what: &str) -> Duration {
    let start = Instant::now();
    let out = cmd.output().expect(what);
    let took = start.elapsed();
    ok(&out, what);
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let work = tempfile::Builder::new()
        .prefix("berth-bench-")
        .tempdir_in("/dev/shm")
        .expect("tmpfs dir");
    let image = multilayer_image(&work.path().join("layout"), "v1", 150);
    let registry = Registry::start();
    registry.push_layout(&image.image.layout, "bench/multi:v1");
    let reference = registry.reference("bench/multi:v1");
    let mb = image.image.total_blob_size() as f64 / 1e6;
    println!(
        "image: {} layers, {mb:.1} MB of blobs, {:.1} MB uncompressed",
        image.image.layers.len(),
        image.image.uncompressed_size() as f64 / 1e6
    );

    let (mut berth, mut fetch, mut pull) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..RUNS {
        let d = Daemon::start_in_as_deployed("/dev/shm");
        let mut cmd = Command::new(bin("berth"));
        cmd.arg("-a")
            .arg(&d.address)
            .args(["-n", &format!("b{run}"), "pull", &reference]);
        berth.push(time(cmd, "berth pull"));
        drop(d);

        let c = Containerd::start_in("/dev/shm");
        let mut cmd = Command::new(system_bin("ctr"));
        cmd.arg("-a").arg(&c.address).args([
            "-n",
            &format!("f{run}"),
            "content",
            "fetch",
            "--plain-http",
            &reference,
        ]);
        fetch.push(time(cmd, "ctr content fetch"));
        drop(c);

        let c = Containerd::start_in("/dev/shm");
        let mut cmd = Command::new(system_bin("ctr"));
        cmd.arg("-a").arg(&c.address).args([
            "-n",
            &format!("p{run}"),
            "images",
            "pull",
            "--plain-http",
            &reference,
        ]);
        pull.push(time(cmd, "ctr images pull"));
        drop(c);
    }
    let (b, f, p) = (median(berth), median(fetch), median(pull));
    println!("cold pull, median of {RUNS}:");
    println!(
        "  berth pull (content)          {:>7.3}s  {:>7.1} MB/s",
        b.as_secs_f64(),
        mb / b.as_secs_f64()
    );
    println!(
        "  ctr content fetch (content)   {:>7.3}s  {:>7.1} MB/s",
        f.as_secs_f64(),
        mb / f.as_secs_f64()
    );
    println!("  ctr images pull (+unpack)     {:>7.3}s", p.as_secs_f64());
    println!(
        "ratio berth/containerd (content only): {:.2}",
        b.as_secs_f64() / f.as_secs_f64()
    );
}
