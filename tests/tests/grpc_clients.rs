//! gRPC stacks other than Go's and Rust's: Python `grpcio` (gRPC C-core, which sends the
//! unix socket's path as `:authority`) calls berthd over its unix socket, and the same
//! script runs against real containerd, the oracle.

use std::path::Path;
use std::process::Command;

use berth_tests::{Containerd, Daemon};

/// Runs tests/python/grpc_client.py against `socket`; panics with its output on failure.
fn python_client(socket: &Path, namespace: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/grpc_client.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(socket)
        .arg(namespace)
        .output()
        .expect("run python3 (installed with grpcio by .ci/run)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "python grpcio client against {} failed ({}):\n{text}",
        socket.display(),
        out.status
    );
    assert!(text.contains("all ok"), "{text}");
    text
}

#[test]
fn python_grpcio_client_over_the_unix_socket() {
    let d = Daemon::start();
    let text = python_client(&d.address, "pyclient");
    // The grpcio that CI installs is one that sends the socket path as :authority.
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("grpcio "))
        .expect("grpcio version line");
    let minor: u32 = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .expect("grpcio minor version");
    assert!(
        version.starts_with("1.") && minor >= 57,
        "grpcio {version} sends `localhost` as authority; the test needs >= 1.57 (pip install grpcio)"
    );
    assert!(
        d.log_text()
            .contains("client sends an authority that is not one"),
        "the repair of the :authority did not run:\n{}",
        d.log_text()
    );
    // The namespace the script made is there for ctr too.
    let ls = berth_tests::ok(&d.ctr(&["namespaces", "ls", "-q"]), "ctr namespaces ls");
    assert!(ls.lines().any(|l| l == "pyclient"), "{ls}");
}

#[test]
fn python_grpcio_client_against_containerd_too() {
    let c = Containerd::start();
    python_client(&c.address, "pyclient");
}
