//! Build benchmark (issue 15): a 10-step Dockerfile built by `berth build` and by Docker's
//! builder (Debian's `docker.io`, its own dockerd) in the same run, cold (`--no-cache`) and
//! with every step cached; medians of RUNS, printed with the ratio berth/docker (timings
//! are printed, never asserted). Without `dockerd` on the machine only berth's figures are
//! printed.
//! Run: `cargo build --workspace && cargo bench -p berth-tests --bench build`.

use std::process::Output;
use std::time::{Duration, Instant};

use berth_tests::dockerd::Dockerd;
use berth_tests::fixtures::BUSYBOX_REF;
use berth_tests::{Daemon, ok};

const RUNS: usize = 5;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The context: ten steps (metadata, COPY of 20 files, RUNs).
fn context(dir: &std::path::Path) {
    std::fs::create_dir_all(dir.join("files")).expect("mkdir");
    for i in 0..20 {
        std::fs::write(dir.join(format!("files/f{i}")), vec![b'x'; 50_000]).expect("write");
    }
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM {BUSYBOX_REF}\n\
             ARG V=1\n\
             ENV APP=/app\n\
             WORKDIR /app\n\
             COPY files/ ./files/\n\
             RUN echo one > one.txt\n\
             RUN echo two > two.txt\n\
             LABEL bench=build\n\
             EXPOSE 8080\n\
             CMD [\"ls\"]\n"
        ),
    )
    .expect("write");
}

/// (cold, cached) medians of `build` (a closure running the CLI's build with its flags).
fn measure(build: impl Fn(&[&str]) -> Output) -> (Duration, Duration) {
    let mut cold = Vec::new();
    let mut cached = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        ok(&build(&["--no-cache"]), "cold build");
        cold.push(t.elapsed());
        let t = Instant::now();
        ok(&build(&[]), "cached build");
        cached.push(t.elapsed());
    }
    (median(cold), median(cached))
}

fn main() {
    let (d, work) = Daemon::with_busybox();
    let ctx = work.path().join("ctx");
    context(&ctx);
    let ctx_arg = ctx.display().to_string();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a = vec!["build", "-q", "--network", "none", "-t", "bench:1"];
        a.extend_from_slice(extra);
        a.push(&ctx_arg);
        a.into_iter().map(str::to_string).collect()
    };
    let berth = measure(|extra| {
        let a = args(extra);
        d.berth(&a.iter().map(String::as_str).collect::<Vec<_>>())
    });
    println!(
        "build, 10 steps: berth cold {:.0} ms, cached {:.0} ms ({:.1}% of cold)",
        ms(berth.0),
        ms(berth.1),
        100.0 * berth.1.as_secs_f64() / berth.0.as_secs_f64()
    );
    let Some(docker) = Dockerd::start_if_installed() else {
        println!("build: no dockerd on this machine; berth's figures only");
        return;
    };
    let dk = measure(|extra| {
        let a = args(extra);
        docker.docker(&a.iter().map(String::as_str).collect::<Vec<_>>())
    });
    println!(
        "build, 10 steps: docker cold {:.0} ms, cached {:.0} ms",
        ms(dk.0),
        ms(dk.1)
    );
    println!(
        "build ratio berth/docker: cold {:.2}, cached {:.2}",
        berth.0.as_secs_f64() / dk.0.as_secs_f64(),
        berth.1.as_secs_f64() / dk.1.as_secs_f64()
    );
}
