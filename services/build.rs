//! Records the git revision berthd is built from, for the Version service, and builds the
//! pod sandboxes' pause program (`pause/pause.rs`) as a static binary that berthd embeds.

fn main() {
    let rev = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=BERTH_REVISION={rev}");
    // Rebuild when HEAD moves (a commit or a checkout); the paths may not exist outside git.
    println!("cargo:rerun-if-changed=../.git/HEAD");
    println!("cargo:rerun-if-changed=../.git/refs/heads");
    build_pause();
}

/// `$OUT_DIR/berth-pause`: pause.rs compiled by the same rustc, statically linked (glibc's
/// static libc from libc6-dev), optimised for size, without unwinding. A failure stops the
/// build: berthd cannot run pods without it.
fn build_pause() {
    let out =
        std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("berth-pause");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let status = std::process::Command::new(rustc)
        .args([
            "--edition=2024",
            "--crate-name=berth_pause",
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
            "-C",
            "target-feature=+crt-static",
            "-C",
            "strip=symbols",
            "-o",
        ])
        .arg(&out)
        .arg("pause/pause.rs")
        .env("BERTH_PAUSE_VERSION", env!("CARGO_PKG_VERSION"))
        .status()
        .expect("run rustc for the pause program");
    assert!(
        status.success(),
        "building the pause program failed: {status}"
    );
    println!("cargo:rerun-if-changed=pause/pause.rs");
}
