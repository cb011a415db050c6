//! Hostile-depth layers: berth's layer applier against GNU tar extracting the same tar into
//! the same filesystem (tmpfs), as a ratio. The shapes are the hardening probe's: many
//! files in one very deep directory, and a chain of directories as deep as PATH_MAX allows.
//! Before each entry's operations went through a handle on its parent, 10,000 files at
//! depth 1,000 took 5.3 s here and a 2,020-deep chain 1.25 s.
//! Timings are printed, never asserted.
//! Run: `cargo bench -p berth-tests --bench deep_layers`.

use std::process::Command;
use std::time::{Duration, Instant};

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h.set_size(size);
    h
}

/// A layer of `depth` nested directories `d/d/...` and `files` one-byte files in the last.
fn layer(depth: usize, files: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dir = String::new();
    for _ in 0..depth {
        dir.push_str("d/");
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, &dir, std::io::empty()).expect("dir");
    }
    for i in 0..files {
        let mut h = header(tar::EntryType::Regular, 0o644, 1);
        b.append_data(&mut h, format!("{dir}f{i}"), &b"x"[..])
            .expect("file");
    }
    b.into_inner().expect("tar")
}

fn best(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..runs).map(|_| f()).min().unwrap_or_default()
}

fn main() {
    let base = tempfile::tempdir_in("/dev/shm").expect("tmpfs dir");
    println!("shape                         berth      GNU tar   ratio");
    for (depth, files) in [(10, 10_000), (1_000, 10_000), (1_000, 0), (2_020, 0)] {
        let data = layer(depth, files);
        let tarball = base.path().join("layer.tar");
        std::fs::write(&tarball, &data).expect("write layer");
        let berth = best(3, || {
            let target = tempfile::tempdir_in(base.path()).expect("target");
            let start = Instant::now();
            berth_snapshotter::apply_layer(
                &data[..],
                berth_snapshotter::Compression::Auto,
                target.path(),
                &Default::default(),
            )
            .expect("apply");
            start.elapsed()
        });
        let gnu = best(3, || {
            let target = tempfile::tempdir_in(base.path()).expect("target");
            let start = Instant::now();
            let st = Command::new("tar")
                .arg("-xf")
                .arg(&tarball)
                .arg("-C")
                .arg(target.path())
                .status()
                .expect("run tar");
            let took = start.elapsed();
            assert!(st.success(), "tar -x failed");
            took
        });
        println!(
            "depth {depth:>5}, {files:>6} files  {:>8.1} ms  {:>8.1} ms  {:>5.2}",
            berth.as_secs_f64() * 1e3,
            gnu.as_secs_f64() * 1e3,
            berth.as_secs_f64() / gnu.as_secs_f64()
        );
    }
}
