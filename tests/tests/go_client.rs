//! berthd and containerd-shim-berth-v2 driven through containerd's own Go client library
//! (Debian's golang-github-containerd-containerd-dev, containerd 1.6): the program in
//! `tests/goclient/` runs a list of named checks and prints `PASS name` / `FAIL name: why`.
//!
//! The same program also runs against the real containerd with our shim as the runtime
//! `io.containerd.berth.v2`: containerd is the oracle for what the client expects.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use berth_tests::fixtures::import_busybox;
use berth_tests::{Containerd, Daemon, bin, go_build, ok, system_bin};

const IMAGE: &str = "example.com/busybox:latest";
const NAMESPACE: &str = "gotest";

/// The Go program, built once per test process.
fn goclient() -> PathBuf {
    go_build("goclient")
}

/// The helper binaries the checks expect in `-bindir`: `containerd-shim-berthalt-v2` and
/// `containerd-shim-berth-v2` (our shim under other names / for containerd's PATH) and
/// `runc-wrapper`, which logs its arguments to `runc-wrapper.log` next to it and runs runc.
fn bin_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("berth-gobin-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let shim = bin("containerd-shim-berth-v2");
    symlink(&shim, dir.path().join("containerd-shim-berthalt-v2")).expect("symlink berthalt");
    symlink(&shim, dir.path().join("containerd-shim-berth-v2")).expect("symlink berth");
    berth_tests::noting_runc(
        &dir.path().join("runc-wrapper"),
        &dir.path().join("runc-wrapper.log"),
    );
    dir
}

/// Runs the Go checks against `address` and fails with their whole output when one fails.
fn run_goclient(address: &Path, runtime: &str, daemon: &str, bindir: &Path, log: &Path) {
    let mut cmd = Command::new(goclient());
    cmd.arg("-address")
        .arg(address)
        .args([
            "-namespace",
            NAMESPACE,
            "-image",
            IMAGE,
            "-runtime",
            runtime,
        ])
        .args(["-daemon", daemon])
        .arg("-bindir")
        .arg(bindir)
        .stdin(Stdio::null());
    if let Ok(filter) = std::env::var("GOCLIENT_RUN") {
        cmd.args(["-run", &filter]);
    }
    let out: Output = cmd.output().expect("run goclient");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("goclient against {daemon} ({runtime}):\n{stdout}\n{stderr}");
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        out.status.success() && summary.ends_with(" 0 failed"),
        "goclient against {daemon} with {runtime} failed ({}):\n{stdout}\n--- notes ---\n{stderr}\n--- daemon log (tail) ---\n{}",
        out.status,
        log_tail(log, 80)
    );
}

fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn go_client_against_berthd() {
    let go = goclient();
    assert!(go.exists());
    let bindir = bin_dir();
    let d = Daemon::start_with_path(bindir.path());
    let work = tempfile::tempdir().expect("tempdir");
    import_busybox(work.path(), |a| {
        let mut args = vec!["-n", NAMESPACE];
        args.extend_from_slice(a);
        d.ctr(&args)
    });
    run_goclient(
        &d.address,
        "io.containerd.berth.v2",
        "berthd",
        bindir.path(),
        &d.log,
    );
}

#[test]
fn go_client_against_containerd() {
    let go = goclient();
    assert!(go.exists());
    let bindir = bin_dir();
    let ctd = Containerd::start_with_path("/tmp", Some(bindir.path()));
    let work = tempfile::tempdir().expect("tempdir");
    import_busybox(work.path(), |a| {
        Command::new(system_bin("ctr"))
            .arg("--address")
            .arg(&ctd.address)
            .args(["-n", NAMESPACE])
            .args(a)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    });
    // The image is there for the checks.
    let listed = Command::new(system_bin("ctr"))
        .arg("--address")
        .arg(&ctd.address)
        .args(["-n", NAMESPACE, "images", "ls", "-q"])
        .output()
        .expect("run ctr");
    assert!(ok(&listed, "ctr images ls").contains(IMAGE));
    run_goclient(
        &ctd.address,
        "io.containerd.berth.v2",
        "containerd",
        bindir.path(),
        &ctd.log,
    );
}
