//! Restart with live containers: berthd + containerd-shim-berth-v2 against real containerd
//! 1.6 + containerd-shim-runc-v2 in the same run, both roots and states on tmpfs.
//!
//! Each daemon gets LIVE containers (`ctr run -d … sleep`), is killed with SIGKILL and
//! started again, ROUNDS times. Measured from the new process's spawn:
//! - until its socket answers a Version call (berthd serves before it has restored the
//!   tasks, holding the calls that depend on them; containerd restores first);
//! - until `Tasks.List` reports every container's task RUNNING (all shims reconnected).
//!
//! Figures are printed with berth/containerd ratios, never asserted.
//! Run: `cargo build --release --workspace && cargo bench -p berth-tests --bench restart`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use berth_proto::containerd::services::tasks::v1::ListTasksRequest;
use berth_proto::containerd::services::tasks::v1::tasks_client::TasksClient;
use berth_proto::containerd::services::version::v1::version_client::VersionClient;
use berth_tests::fixtures::{BUSYBOX_REF as IMAGE, import_busybox};
use berth_tests::{Containerd, Daemon, in_ns, ok, system_bin};

const NS: &str = "bench";
const LIVE: usize = 100;
const ROUNDS: usize = 3;

fn ctr(address: &Path, args: &[&str]) -> Output {
    Command::new(system_bin("ctr"))
        .arg("-a")
        .arg(address)
        .args(["-n", NS])
        .args(args)
        .output()
        .expect("run ctr")
}

/// Imports the busybox fixture and starts LIVE containers on the daemon at `address`.
fn prepare(address: &Path, work: &Path) {
    std::fs::create_dir_all(work).expect("work dir");
    import_busybox(work, |a| ctr(address, a));
    for i in 0..LIVE {
        let id = format!("live-{i}");
        ok(
            &ctr(address, &["run", "-d", IMAGE, &id, "sleep", "100000"]),
            "ctr run -d",
        );
    }
}

/// Polls until the socket answers Version, then until every task is RUNNING; returns both
/// times from `start`.
async fn wait_serving(address: &Path, start: Instant) -> (Duration, Duration) {
    let deadline = start + Duration::from_secs(60);
    let (channel, answered) = loop {
        assert!(
            Instant::now() < deadline,
            "{} never answered",
            address.display()
        );
        if std::os::unix::net::UnixStream::connect(address).is_ok() {
            let channel = berth_tests::channel(address).await;
            if VersionClient::new(channel.clone())
                .version(())
                .await
                .is_ok()
            {
                break (channel, start.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    loop {
        assert!(Instant::now() < deadline, "tasks never all running");
        let list = TasksClient::new(channel.clone())
            .list(in_ns(NS, ListTasksRequest::default()))
            .await;
        if let Ok(list) = list {
            // containerd.v1.types.Status RUNNING = 2.
            let running = list
                .into_inner()
                .tasks
                .iter()
                .filter(|t| t.status == 2)
                .count();
            if running == LIVE {
                return (answered, start.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn remove_all(address: &Path) {
    for i in 0..LIVE {
        let id = format!("live-{i}");
        let _ = ctr(address, &["tasks", "rm", "-f", &id]);
        let _ = ctr(address, &["containers", "rm", &id]);
    }
}

/// Prepares the daemon at `address`, then ROUNDS times: `crash` (kill -9 and spawn again)
/// and the two waits. Returns the times to a serving socket and to every task RUNNING.
fn measure(
    rt: &tokio::runtime::Runtime,
    address: &Path,
    work: &Path,
    mut crash: impl FnMut(),
) -> (Vec<Duration>, Vec<Duration>) {
    prepare(address, work);
    let (mut sock, mut all) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let start = Instant::now();
        crash();
        let (s, a) = rt.block_on(wait_serving(address, start));
        sock.push(s);
        all.push(a);
    }
    remove_all(address);
    (sock, all)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let work = tempfile::Builder::new()
        .prefix("berth-bench-")
        .tempdir_in("/dev/shm")
        .expect("tmpfs dir");

    let mut d = Daemon::start_in_as_deployed("/dev/shm");
    let address: PathBuf = d.address.clone();
    let berthd = measure(&rt, &address, &work.path().join("berthd"), || {
        d.crash_and_spawn()
    });
    drop(d);
    let mut c = Containerd::start_in("/dev/shm");
    let address = c.address.clone();
    let containerd = measure(&rt, &address, &work.path().join("containerd"), || {
        c.crash_and_spawn()
    });
    drop(c);
    let figures = [berthd, containerd];

    println!(
        "kill -9 and restart with {LIVE} live containers; median of {ROUNDS}; roots on /dev/shm"
    );
    let (b, k) = (&figures[0], &figures[1]);
    for (label, bi, ki) in [
        ("socket answers Version", &b.0, &k.0),
        ("every task RUNNING again", &b.1, &k.1),
    ] {
        let (bm, km) = (median(bi.clone()), median(ki.clone()));
        println!(
            "{label:<28} berthd {:>8.1} ms   containerd {:>8.1} ms   ratio {:.2}",
            ms(bm),
            ms(km),
            ms(bm) / ms(km)
        );
    }
}
