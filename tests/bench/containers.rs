//! Container benchmarks, berthd + containerd-shim-berth-v2 against real containerd 1.6 +
//! containerd-shim-runc-v2 in the same run, both driven by the real `ctr` with the same
//! busybox image, both roots and states on tmpfs:
//!
//! - latency of `ctr run --rm IMG <id> true` (median of RUNS);
//! - idle shim RSS (one `sleep` container each);
//! - daemon RSS with 20 idle containers (and the shims' RSS per container);
//! - 50 containers started with `ctr run -d`, one after the other and 8 at a time, then
//!   killed, their tasks and containers removed.
//!
//! Timings are printed with berth/containerd ratios, never asserted.
//! Run: `cargo build --release --workspace && cargo bench -p berth-tests --bench containers`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_tests::fixtures::{busybox_image, pack_layout};
use berth_tests::{Containerd, Daemon, ok, rss_kib, system_bin};

const IMAGE: &str = "example.com/busybox:latest";
const RUNS: usize = 15;
const IDLE: usize = 20;
const MANY: usize = 50;
const PARALLEL: usize = 8;

/// One daemon under test, as `ctr` reaches it.
struct Target {
    name: &'static str,
    address: PathBuf,
    pid: u32,
}

impl Target {
    fn ctr(&self, args: &[&str]) -> Output {
        Command::new(system_bin("ctr"))
            .arg("-a")
            .arg(&self.address)
            .args(["-n", "bench"])
            .args(args)
            .output()
            .expect("run ctr")
    }

    fn import(&self, archive: &Path) {
        ok(
            &self.ctr(&[
                "images",
                "import",
                "--base-name",
                "example.com/busybox",
                &archive.display().to_string(),
            ]),
            "ctr images import",
        );
    }

    fn run_d(&self, id: &str) {
        ok(
            &self.ctr(&["run", "-d", IMAGE, id, "sleep", "100000"]),
            "run -d",
        );
    }

    fn task_pid(&self, id: &str) -> u32 {
        let out = ok(&self.ctr(&["tasks", "ls"]), "tasks ls");
        out.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.first() == Some(&id))
            .and_then(|f| f.get(1)?.parse().ok())
            .unwrap_or_else(|| panic!("{}: no task {id}:\n{out}", self.name))
    }

    fn remove(&self, id: &str) {
        ok(&self.ctr(&["tasks", "rm", "-f", id]), "tasks rm -f");
        ok(&self.ctr(&["containers", "rm", id]), "containers rm");
    }
}

fn parent_of(pid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PPid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no parent of {pid}"))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Starts `ids` with up to `parallel` `ctr run -d` at once; returns the wall time.
fn start_all(t: &Target, ids: &[String], parallel: usize) -> Duration {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(id) = ids.get(i) else { break };
                    t.run_d(id);
                }
            });
        }
    });
    start.elapsed()
}

fn remove_all(t: &Target, ids: &[String], parallel: usize) -> Duration {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(id) = ids.get(i) else { break };
                    t.remove(id);
                }
            });
        }
    });
    start.elapsed()
}

#[derive(Default)]
struct Figures {
    run_rm: Duration,
    idle_shim_kib: u64,
    daemon_idle_kib: u64,
    daemon_loaded_kib: u64,
    shims_per_container_kib: u64,
    seq_start: Duration,
    seq_remove: Duration,
    par_start: Duration,
    par_remove: Duration,
}

fn measure(t: &Target) -> Figures {
    let mut f = Figures::default();
    // Warm up once (first snapshot, first shim binary load).
    ok(
        &t.ctr(&["run", "--rm", IMAGE, "warm", "true"]),
        "warm-up run",
    );

    let mut runs = Vec::new();
    for i in 0..RUNS {
        let id = format!("rm{i}");
        let start = Instant::now();
        ok(&t.ctr(&["run", "--rm", IMAGE, &id, "true"]), "run --rm");
        runs.push(start.elapsed());
    }
    f.run_rm = median(runs);

    f.daemon_idle_kib = rss_kib(t.pid);
    let idle: Vec<String> = (0..IDLE).map(|i| format!("idle{i}")).collect();
    start_all(t, &idle, 1);
    std::thread::sleep(Duration::from_secs(2));
    let shims: Vec<u32> = idle.iter().map(|id| parent_of(t.task_pid(id))).collect();
    f.idle_shim_kib = rss_kib(shims[0]);
    f.shims_per_container_kib = shims.iter().map(|p| rss_kib(*p)).sum::<u64>() / IDLE as u64;
    f.daemon_loaded_kib = rss_kib(t.pid);
    remove_all(t, &idle, 1);

    let many: Vec<String> = (0..MANY).map(|i| format!("seq{i}")).collect();
    f.seq_start = start_all(t, &many, 1);
    f.seq_remove = remove_all(t, &many, 1);
    let many: Vec<String> = (0..MANY).map(|i| format!("par{i}")).collect();
    f.par_start = start_all(t, &many, PARALLEL);
    f.par_remove = remove_all(t, &many, PARALLEL);
    f
}

fn row(what: &str, unit: &str, b: f64, c: f64) {
    println!(
        "{what:<48} berth {b:>9.1} {unit:<3} containerd {c:>9.1} {unit:<3} ratio {:.2}",
        b / c
    );
}

fn main() {
    let work = tempfile::Builder::new()
        .prefix("berth-bench-")
        .tempdir_in("/dev/shm")
        .expect("tmpfs dir");
    let img = busybox_image(&work.path().join("layout"), "latest");
    let archive = work.path().join("busybox.tar");
    pack_layout(&img.layout, &archive);

    let d = Daemon::start_in("/dev/shm");
    let berth = Target {
        name: "berthd",
        address: d.address.clone(),
        pid: d.pid(),
    };
    berth.import(&archive);
    let b = measure(&berth);
    drop(d);

    let c = Containerd::start_in("/dev/shm");
    let ctd = Target {
        name: "containerd",
        address: c.address.clone(),
        pid: c.pid(),
    };
    ctd.import(&archive);
    let k = measure(&ctd);
    drop(c);

    println!("ctr 1.6 against each daemon; busybox image; roots on /dev/shm");
    row(
        &format!("ctr run --rm IMG <id> true (median of {RUNS})"),
        "ms",
        ms(b.run_rm),
        ms(k.run_rm),
    );
    row(
        "idle shim RSS",
        "KiB",
        b.idle_shim_kib as f64,
        k.idle_shim_kib as f64,
    );
    row(
        "daemon RSS, no containers",
        "KiB",
        b.daemon_idle_kib as f64,
        k.daemon_idle_kib as f64,
    );
    row(
        &format!("daemon RSS, {IDLE} idle containers"),
        "KiB",
        b.daemon_loaded_kib as f64,
        k.daemon_loaded_kib as f64,
    );
    row(
        &format!("shim RSS per container ({IDLE} idle)"),
        "KiB",
        b.shims_per_container_kib as f64,
        k.shims_per_container_kib as f64,
    );
    row(
        &format!("{MANY} containers started one at a time"),
        "ms",
        ms(b.seq_start),
        ms(k.seq_start),
    );
    row(
        &format!("{MANY} containers killed and removed one at a time"),
        "ms",
        ms(b.seq_remove),
        ms(k.seq_remove),
    );
    row(
        &format!("{MANY} containers started {PARALLEL} at a time"),
        "ms",
        ms(b.par_start),
        ms(k.par_start),
    );
    row(
        &format!("{MANY} containers removed {PARALLEL} at a time"),
        "ms",
        ms(b.par_remove),
        ms(k.par_remove),
    );
}
