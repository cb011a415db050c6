//! Networking benchmarks, `berth` against Docker's own dockerd (Debian's `docker.io`) in the
//! same run, both driven by their CLIs with the same busybox root filesystem:
//!
//! - `run --rm IMG true` on the host's network, on the default bridge (berth) and on a
//!   user-defined network (both): the time networking adds over `--network host`;
//! - `run -d -p HOST:80` on a user-defined network (the container removed untimed);
//! - `network create` (the network removed untimed).
//!
//! dockerd runs with its own data root, exec root, pidfile and socket, no default bridge and
//! no iptables rules of its own (published ports go through its userland proxy), so that it
//! touches nothing of the host's; without `dockerd` on the machine only berth's figures are
//! printed. Medians of RUNS; timings are printed, never asserted.
//! Run: `cargo build --workspace && cargo bench -p berth-tests --bench networking`.

use std::process::Output;
use std::time::{Duration, Instant};

use berth_tests::dockerd::Dockerd;
use berth_tests::fixtures::{BUSYBOX_REF, free_port};
use berth_tests::{Daemon, TestNetwork, ok};

const RUNS: usize = 15;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The median wall time of `f` over RUNS runs; `after` runs untimed after each.
fn time(mut f: impl FnMut(usize), mut after: impl FnMut(usize)) -> Duration {
    let mut all = Vec::new();
    for i in 0..RUNS {
        let t = Instant::now();
        f(i);
        all.push(t.elapsed());
        after(i);
    }
    median(all)
}

/// The median wall time of `f(mode)` for each of `modes`, over RUNS rounds of one run of
/// each in turn, after one untimed round.
fn interleaved(modes: &[&str], f: impl Fn(&str)) -> Vec<Duration> {
    modes.iter().for_each(|m| f(m));
    let mut all = vec![Vec::new(); modes.len()];
    for _ in 0..RUNS {
        for (i, m) in modes.iter().enumerate() {
            let t = Instant::now();
            f(m);
            all[i].push(t.elapsed());
        }
    }
    all.into_iter().map(median).collect()
}

/// The figures of one runtime: run on the host's network, on its bridge, on a user network,
/// run -d -p, network create.
struct Figures {
    host: Duration,
    bridge: Option<Duration>,
    user: Duration,
    publish: Duration,
    create: Duration,
}

fn measure(
    cli: &dyn Fn(&[&str]) -> Output,
    image: &str,
    net: &TestNetwork,
    bridge: bool,
) -> Figures {
    let run = |args: &[&str]| ok(&cli(args), &format!("{args:?}"));
    let bridge_opt = format!("com.docker.network.bridge.name={}", net.bridge);
    run(&[
        "network",
        "create",
        "--subnet",
        &net.subnet,
        "-o",
        &bridge_opt,
        "benchnet",
    ]);
    // Host, default bridge and user network runs take turns (after one untimed run of
    // each), so that the machine's drift falls on all three alike.
    let mut modes = vec!["host", "benchnet"];
    if bridge {
        modes.push("bridge");
    }
    let timed = interleaved(&modes, |mode| {
        drop(run(&["run", "--rm", "--network", mode, image, "true"]))
    });
    let (host, user) = (timed[0], timed[1]);
    let bridge = timed.get(2).copied();
    let ports: Vec<String> = (0..RUNS).map(|_| format!("{}:80", free_port())).collect();
    let publish = time(
        |i| {
            let name = format!("pub{i}");
            let args = [
                "run",
                "-d",
                "--name",
                &name,
                "--network",
                "benchnet",
                "-p",
                &ports[i],
            ];
            let mut all: Vec<&str> = args.to_vec();
            all.extend([image, "sleep", "600"]);
            drop(run(&all));
        },
        |i| drop(run(&["rm", "-f", &format!("pub{i}")])),
    );
    run(&["network", "rm", "benchnet"]);
    let second = TestNetwork::claim();
    let second_opt = format!("com.docker.network.bridge.name={}", second.bridge);
    let create = time(
        |_| {
            drop(run(&[
                "network",
                "create",
                "--subnet",
                &second.subnet,
                "-o",
                &second_opt,
                "made",
            ]))
        },
        |_| drop(run(&["network", "rm", "made"])),
    );
    Figures {
        host,
        bridge,
        user,
        publish,
        create,
    }
}

fn row(what: &str, b: Duration, d: Option<Duration>) {
    match d {
        Some(d) => println!(
            "{what:<44} {:>9.1} ms {:>9.1} ms {:>7.2}",
            ms(b),
            ms(d),
            ms(b) / ms(d)
        ),
        None => println!("{what:<44} {:>9.1} ms {:>12} {:>7}", ms(b), "-", "-"),
    }
}

fn main() {
    let (d, _work) = Daemon::with_busybox();
    let berth_net = TestNetwork::claim();
    let berth_cli = |args: &[&str]| d.berth(args);
    let b = measure(&berth_cli, BUSYBOX_REF, &berth_net, true);
    let dockerd = Dockerd::start_if_installed();
    let k = dockerd.as_ref().map(|dk| {
        let net = TestNetwork::claim();
        let cli = |args: &[&str]| dk.docker(args);
        measure(&cli, BUSYBOX_REF, &net, false)
    });
    if dockerd.is_none() {
        println!("dockerd (Debian's docker.io) is not installed: berth's figures only");
    }
    println!(
        "{:<44} {:>12} {:>12} {:>7}",
        &format!("median of {RUNS}"),
        "berth",
        "dockerd",
        "ratio"
    );
    row(
        "run --rm --network host true",
        b.host,
        k.as_ref().map(|k| k.host),
    );
    if let Some(bridge) = b.bridge {
        row("run --rm true (default bridge)", bridge, None);
    }
    row(
        "run --rm --network USER true",
        b.user,
        k.as_ref().map(|k| k.user),
    );
    row(
        "run -d -p PORT:80 --network USER",
        b.publish,
        k.as_ref().map(|k| k.publish),
    );
    row("network create", b.create, k.as_ref().map(|k| k.create));
    let added = |net: Duration| ms(net) - ms(b.host);
    println!(
        "networking added over --network host (berth): default bridge {:.1} ms, user network {:.1} ms (target: under 25 ms)",
        b.bridge.map(added).unwrap_or(0.0),
        added(b.user)
    );
    if let Some(k) = &k {
        println!(
            "networking added over --network host (dockerd): user network {:.1} ms",
            ms(k.user) - ms(k.host)
        );
    }
}
