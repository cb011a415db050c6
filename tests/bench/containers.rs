//! Container benchmarks, berthd + containerd-shim-berth-v2 against real containerd 1.6 +
//! containerd-shim-runc-v2 in the same run, both driven by the real `ctr` with the same
//! busybox image, both roots and states on tmpfs:
//!
//! - daemon RSS fresh (started, nothing asked yet);
//! - latency of `ctr run --rm IMG <id> true` and of `ctr tasks exec … true` (median of RUNS,
//!   with min–max);
//! - idle shim RSS, and the shims' RSS and PSS in all with 20 idle containers, the daemon's
//!   RSS with them;
//! - 50 containers started with `ctr run -d`, one after the other and 8 at a time, then
//!   killed, their tasks and containers removed; the daemon's RSS after that cycle;
//! - 200 idle containers: the daemon's and the shims' RSS (and PSS) in all.
//!
//! Timings are printed with berth/containerd ratios and the targets, never asserted.
//! Run: `cargo build --release --workspace && deploy/build-lean.sh && cargo bench -p
//! berth-tests --bench containers`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_tests::fixtures::{busybox_image, pack_layout};
use berth_tests::{
    Containerd, Daemon, bin, evict_from_page_cache, ok, parent_pid, pss_kib, rss_kib, shim_dir,
    spread_ms, system_bin,
};

const IMAGE: &str = "example.com/busybox:latest";
const RUNS: usize = 15;
const IDLE: usize = 20;
const MANY: usize = 50;
const PARALLEL: usize = 8;
const HELD: usize = 200;

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

    fn remove(&self, id: &str) {
        ok(&self.ctr(&["tasks", "rm", "-f", id]), "tasks rm -f");
        ok(&self.ctr(&["containers", "rm", id]), "containers rm");
    }
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
    daemon_fresh_kib: u64,
    run_rm: (f64, f64, f64),
    exec: (f64, f64, f64),
    idle_shim_kib: u64,
    shims_rss_kib: u64,
    shims_pss_kib: u64,
    daemon_loaded_kib: u64,
    seq_start: Duration,
    seq_remove: Duration,
    par_start: Duration,
    par_remove: Duration,
    daemon_after_cycle_kib: u64,
    held_rss_kib: u64,
    held_pss_kib: u64,
    held_start: Duration,
}

/// The shims of `ids` (each task's parent).
fn shims_of(t: &Target, ids: &[String]) -> Vec<u32> {
    let out = ok(&t.ctr(&["tasks", "ls"]), "tasks ls");
    let pids: Vec<u32> = out
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let id = f.next()?;
            let pid = f.next()?.parse().ok()?;
            ids.iter().any(|i| i == id).then_some(pid)
        })
        .collect();
    assert_eq!(pids.len(), ids.len(), "{}: tasks ls:\n{out}", t.name);
    let mut shims: Vec<u32> = pids
        .into_iter()
        .map(|p| parent_pid(p).unwrap_or_else(|| panic!("no parent of {p}")))
        .collect();
    shims.sort();
    shims.dedup();
    shims
}

fn measure(t: &Target, fresh_kib: u64) -> Figures {
    let mut f = Figures {
        daemon_fresh_kib: fresh_kib,
        ..Figures::default()
    };
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
    f.run_rm = spread_ms(&runs);

    t.run_d("exec-host");
    let mut runs = Vec::new();
    for i in 0..=RUNS {
        let exec_id = format!("e{i}");
        let start = Instant::now();
        ok(
            &t.ctr(&["tasks", "exec", "--exec-id", &exec_id, "exec-host", "true"]),
            "tasks exec",
        );
        // The first exec warms the path; it is not counted.
        if i > 0 {
            runs.push(start.elapsed());
        }
    }
    f.exec = spread_ms(&runs);
    t.remove("exec-host");

    let idle: Vec<String> = (0..IDLE).map(|i| format!("idle{i}")).collect();
    start_all(t, &idle, 1);
    std::thread::sleep(Duration::from_secs(2));
    let shims = shims_of(t, &idle);
    f.idle_shim_kib = rss_kib(shims[0]);
    f.shims_rss_kib = shims.iter().map(|p| rss_kib(*p)).sum();
    f.shims_pss_kib = shims.iter().map(|p| pss_kib(*p)).sum();
    f.daemon_loaded_kib = rss_kib(t.pid);
    remove_all(t, &idle, 1);

    let many: Vec<String> = (0..MANY).map(|i| format!("seq{i}")).collect();
    f.seq_start = start_all(t, &many, 1);
    f.seq_remove = remove_all(t, &many, 1);
    let many: Vec<String> = (0..MANY).map(|i| format!("par{i}")).collect();
    f.par_start = start_all(t, &many, PARALLEL);
    f.par_remove = remove_all(t, &many, PARALLEL);
    std::thread::sleep(Duration::from_secs(1));
    f.daemon_after_cycle_kib = rss_kib(t.pid);

    let held: Vec<String> = (0..HELD).map(|i| format!("held{i}")).collect();
    f.held_start = start_all(t, &held, PARALLEL);
    std::thread::sleep(Duration::from_secs(2));
    let shims = shims_of(t, &held);
    f.held_rss_kib = rss_kib(t.pid) + shims.iter().map(|p| rss_kib(*p)).sum::<u64>();
    f.held_pss_kib = pss_kib(t.pid) + shims.iter().map(|p| pss_kib(*p)).sum::<u64>();
    remove_all(t, &held, PARALLEL);
    f
}

fn row(what: &str, unit: &str, b: f64, c: f64, target: &str) {
    println!(
        "{what:<48} berth {b:>9.1} {unit:<3} containerd {c:>9.1} {unit:<3} ratio {:.2}{target}",
        b / c
    );
}

fn spread_row(what: &str, b: (f64, f64, f64), c: (f64, f64, f64), target: &str) {
    println!(
        "{what:<48} berth {:>7.1} ms ({:.1}-{:.1})  containerd {:>7.1} ms ({:.1}-{:.1})  ratio {:.2}{target}",
        b.0,
        b.1,
        b.2,
        c.0,
        c.1,
        c.2,
        b.0 / c.0
    );
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    let work = tempfile::Builder::new()
        .prefix("berth-bench-")
        .tempdir_in("/dev/shm")
        .expect("tmpfs dir");
    let img = busybox_image(&work.path().join("layout"), "latest");
    let archive = work.path().join("busybox.tar");
    pack_layout(&img.layout, &archive);

    // Every program starts cold, as after a reboot (see evict_from_page_cache).
    evict_from_page_cache(&bin("berthd"));
    evict_from_page_cache(&shim_dir().join("containerd-shim-berth-v2"));
    evict_from_page_cache(&system_bin("containerd"));
    evict_from_page_cache(&system_bin("containerd-shim-runc-v2"));
    evict_from_page_cache(&system_bin("runc"));

    let d = Daemon::start_in_as_deployed("/dev/shm");
    let berth = Target {
        name: "berthd",
        address: d.address.clone(),
        pid: d.pid(),
    };
    let fresh = rss_kib(berth.pid);
    berth.import(&archive);
    let b = measure(&berth, fresh);
    drop(d);

    let c = Containerd::start_in("/dev/shm");
    let ctd = Target {
        name: "containerd",
        address: c.address.clone(),
        pid: c.pid(),
    };
    let fresh = rss_kib(ctd.pid);
    ctd.import(&archive);
    let k = measure(&ctd, fresh);
    drop(c);

    println!("ctr 1.6 against each daemon; busybox image; roots on /dev/shm");
    spread_row(
        &format!("ctr run --rm IMG <id> true (median of {RUNS})"),
        b.run_rm,
        k.run_rm,
        "  (target <= 0.60)",
    );
    spread_row(
        &format!("ctr tasks exec <id> true (median of {RUNS})"),
        b.exec,
        k.exec,
        "  (target <= 0.60)",
    );
    row(
        "daemon RSS, fresh",
        "MiB",
        mib(b.daemon_fresh_kib),
        mib(k.daemon_fresh_kib),
        "  (target berth <= 12 MiB)",
    );
    row(
        "idle shim RSS",
        "MiB",
        mib(b.idle_shim_kib),
        mib(k.idle_shim_kib),
        "  (target berth <= 2.5 MiB)",
    );
    row(
        &format!("{IDLE} idle shims, RSS in all"),
        "MiB",
        mib(b.shims_rss_kib),
        mib(k.shims_rss_kib),
        "",
    );
    row(
        &format!("{IDLE} idle shims, PSS in all"),
        "MiB",
        mib(b.shims_pss_kib),
        mib(k.shims_pss_kib),
        "  (target berth <= 8 MiB)",
    );
    row(
        &format!("daemon RSS, {IDLE} idle containers"),
        "MiB",
        mib(b.daemon_loaded_kib),
        mib(k.daemon_loaded_kib),
        "",
    );
    row(
        &format!("{MANY} containers started one at a time"),
        "ms",
        ms(b.seq_start),
        ms(k.seq_start),
        "",
    );
    row(
        &format!("{MANY} containers killed and removed one at a time"),
        "ms",
        ms(b.seq_remove),
        ms(k.seq_remove),
        "",
    );
    row(
        &format!("{MANY} containers started {PARALLEL} at a time"),
        "ms",
        ms(b.par_start),
        ms(k.par_start),
        "  (target <= 0.60)",
    );
    row(
        &format!("{MANY} containers removed {PARALLEL} at a time"),
        "ms",
        ms(b.par_remove),
        ms(k.par_remove),
        "",
    );
    row(
        &format!("daemon RSS after the {MANY}-container cycles"),
        "MiB",
        mib(b.daemon_after_cycle_kib),
        mib(k.daemon_after_cycle_kib),
        "  (target berth <= 16 MiB)",
    );
    row(
        &format!("{HELD} containers started {PARALLEL} at a time"),
        "ms",
        ms(b.held_start),
        ms(k.held_start),
        "",
    );
    row(
        &format!("{HELD} idle containers: daemon + shims RSS"),
        "MiB",
        mib(b.held_rss_kib),
        mib(k.held_rss_kib),
        "  (target berth < 600 MiB)",
    );
    row(
        &format!("{HELD} idle containers: daemon + shims PSS"),
        "MiB",
        mib(b.held_pss_kib),
        mib(k.held_pss_kib),
        "",
    );
}
