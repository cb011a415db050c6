//! Cold pull + unpack benchmark, berthd against real containerd 1.6 in the same run: the
//! multi-layer fixture (five layers, ~150 MB uncompressed) from a local registry.
//!
//! - berth: `berth pull` (fetch, verify, store, unpack into overlayfs snapshots); the unpack
//!   part is timed by berthd itself (its `unpacked ... duration_ms=` log line);
//! - containerd: `ctr images pull` (which unpacks into overlayfs snapshots too);
//! - the same `ctr images pull` against berthd (the client-side figure the issue compares);
//! - the physical yardstick: GNU tar gunzipping and untarring the same layer blobs, bottom
//!   first, into one new directory on the same tmpfs.
//!
//! One daemon each, root and state on tmpfs (the disk here is noisy), rounds interleaved.
//! Every round is cold: the image is removed with `--sync` (a garbage collection), and the
//! round checks that no blob and no snapshot is left on disk before the next pull.
//! Timings are printed, never asserted.
//! Run: `cargo build --release --workspace && cargo bench -p berth-tests --bench unpack`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::fixtures::{Compression, Registry, multilayer_image};
use berth_tests::{Containerd, Daemon, bin, ok, spread_ms, system_bin};

const ROUNDS: usize = 5;

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

/// "median s (min-max)".
fn spread(v: &[Duration]) -> String {
    let (median, min, max) = spread_ms(v);
    format!(
        "{:>7.3}s ({:.3}-{:.3})",
        median / 1000.0,
        min / 1000.0,
        max / 1000.0
    )
}

/// `program -a address -n bench args…`.
fn client(program: PathBuf, address: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.arg("-a").arg(address).args(["-n", "bench"]).args(args);
    cmd
}

/// CPU time (user + system) a live process has used so far, from `/proc/PID/stat`.
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // After the command's name in parentheses: state is the 1st field, utime the 12th.
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .expect("stat format")
        .1
        .split(' ')
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// CPU time (user + system) of this process's waited-for children so far.
fn children_cpu() -> Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(usage.user_time()) + tv(usage.system_time())
}

/// Checks that a round left no blob and no snapshot behind.
fn assert_cold(blobs: &Path, snapshots: &Path, what: &str) {
    let (b, s) = (count(blobs), count(snapshots));
    assert!(
        b == 0 && s == 0,
        "{what} not cold: {b} blobs, {s} snapshots left"
    );
}

/// Entries of a directory (0 when it does not exist).
fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|e| e.count()).unwrap_or(0)
}

/// The duration of berthd's last unpack, from its log.
fn last_unpack(log: &str) -> Duration {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(" unpacked") && l.contains("duration_ms="))
        .expect("no `unpacked` line in berthd's log");
    let ms: u64 = line
        .split("duration_ms=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .expect("duration_ms value");
    Duration::from_millis(ms)
}

/// How many Applies so far used a layer berthd unpacked ahead (its debug log line).
fn applied_ahead(log: &str) -> usize {
    log.matches("applied from the layer unpacked ahead").count()
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
    let uncompressed = image.image.uncompressed_size() as f64 / 1e6;
    println!(
        "image: {} layers, {:.1} MB of blobs, {uncompressed:.1} MB uncompressed",
        image.image.layers.len(),
        image.image.total_blob_size() as f64 / 1e6,
    );

    let berth = Daemon::start_in("/dev/shm");
    let berth_cmd = |args: &[&str]| client(bin("berth"), &berth.address, args);
    let ctd = Containerd::start_in("/dev/shm");
    let ctd_root = ctd.dir.path().join("root");
    let ctr_cmd = |args: &[&str]| client(system_bin("ctr"), &ctd.address, args);

    let tar_into = work.path().join("tar");
    let ctr_berth_cmd = |args: &[&str]| client(system_bin("ctr"), &berth.address, args);
    let berth_blobs = berth.root.join("content/blobs/sha256");
    let berth_snaps = berth.root.join("snapshots/overlayfs/snapshots");

    let (mut b_total, mut b_unpack, mut c_total) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cb_total, mut tar_total) = (Vec::new(), Vec::new());
    // Per round: the layers of ctr's pull that berthd had unpacked ahead of their Apply.
    let mut ahead = Vec::new();
    // Per round, the CPU time of ctr's pull against berthd: berthd's, ctr's, the registry's.
    let (mut cpu_berthd, mut cpu_ctr, mut cpu_registry) = (Vec::new(), Vec::new(), Vec::new());
    let registry_pid = registry.pid().expect("the registry runs");
    for round in 0..ROUNDS {
        // GNU tar: every layer, bottom first, into one directory.
        std::fs::create_dir_all(&tar_into).expect("tar dir");
        let start = Instant::now();
        for layer in &image.image.layers {
            let mut tar = Command::new("tar");
            // A layer may put a file where a lower layer had a directory.
            tar.args(["-x", "--recursive-unlink"]);
            if layer.compression == Compression::Gzip {
                tar.arg("-z");
            }
            tar.arg("-f")
                .arg(image.image.blob_path(&layer.descriptor.digest))
                .arg("-C")
                .arg(&tar_into);
            ok(&tar.output().expect("run tar"), "tar -x");
        }
        tar_total.push(start.elapsed());
        std::fs::remove_dir_all(&tar_into).expect("remove the tar dir");

        // ctr against berthd
        let ahead_before = applied_ahead(&berth.log_text());
        let cpu_before = (cpu_of(berth.pid()), children_cpu(), cpu_of(registry_pid));
        cb_total.push(time(
            ctr_berth_cmd(&["images", "pull", "--plain-http", &reference]),
            "ctr images pull (berthd)",
        ));
        cpu_berthd.push(cpu_of(berth.pid()) - cpu_before.0);
        cpu_ctr.push(children_cpu() - cpu_before.1);
        cpu_registry.push(cpu_of(registry_pid) - cpu_before.2);
        ahead.push(applied_ahead(&berth.log_text()) - ahead_before);
        time(
            ctr_berth_cmd(&["images", "rm", "--sync", &reference]),
            "ctr images rm (berthd)",
        );
        assert_cold(
            &berth_blobs,
            &berth_snaps,
            &format!("berth round {round} (ctr)"),
        );

        // berth
        b_total.push(time(berth_cmd(&["pull", &reference]), "berth pull"));
        b_unpack.push(last_unpack(&berth.log_text()));
        time(
            berth_cmd(&["image", "rm", "--sync", &reference]),
            "berth image rm",
        );
        assert_cold(&berth_blobs, &berth_snaps, &format!("berth round {round}"));

        // containerd
        c_total.push(time(
            ctr_cmd(&["images", "pull", "--plain-http", &reference]),
            "ctr images pull",
        ));
        time(
            ctr_cmd(&["images", "rm", "--sync", &reference]),
            "ctr images rm",
        );
        assert_cold(
            &ctd_root.join("io.containerd.content.v1.content/blobs/sha256"),
            &ctd_root.join("io.containerd.snapshotter.v1.overlayfs/snapshots"),
            &format!("containerd round {round}"),
        );
        println!(
            "round {round}: berth pull {:.3}s (unpack {:.3}s); ctr pull: berthd {:.3}s ({} of {} layers unpacked ahead; CPU: berthd {:.2}s, ctr {:.2}s, registry {:.2}s), containerd {:.3}s; tar {:.3}s",
            b_total[round].as_secs_f64(),
            b_unpack[round].as_secs_f64(),
            cb_total[round].as_secs_f64(),
            ahead[round],
            image.image.layers.len(),
            cpu_berthd[round].as_secs_f64(),
            cpu_ctr[round].as_secs_f64(),
            cpu_registry[round].as_secs_f64(),
            c_total[round].as_secs_f64(),
            tar_total[round].as_secs_f64()
        );
    }
    let (b, u, c) = (
        median(b_total.clone()),
        median(b_unpack),
        median(c_total.clone()),
    );
    let (cb, tar) = (median(cb_total.clone()), median(tar_total.clone()));
    println!("cold pull + unpack, median of {ROUNDS} (min-max):");
    println!("  berth pull                  {}", spread(&b_total));
    println!(
        "    of which unpack           {:>7.3}s  {:>7.1} MB/s uncompressed",
        u.as_secs_f64(),
        uncompressed / u.as_secs_f64()
    );
    println!("  ctr images pull, berthd     {}", spread(&cb_total));
    println!(
        "    CPU: berthd {:.2}s, ctr {:.2}s, the registry {:.2}s (medians)",
        median(cpu_berthd).as_secs_f64(),
        median(cpu_ctr).as_secs_f64(),
        median(cpu_registry).as_secs_f64()
    );
    println!("  ctr images pull, containerd {}", spread(&c_total));
    println!("  GNU tar -xzf of the layers  {}", spread(&tar_total));
    println!(
        "ratio ctr images pull berthd/containerd: {:.2}  (target <= 0.40)",
        cb.as_secs_f64() / c.as_secs_f64()
    );
    println!(
        "ratio berth pull/containerd's ctr images pull: {:.2}",
        b.as_secs_f64() / c.as_secs_f64()
    );
    println!(
        "ratio berth pull/GNU tar: {:.2}  (target <= 1.30)",
        b.as_secs_f64() / tar.as_secs_f64()
    );
}
