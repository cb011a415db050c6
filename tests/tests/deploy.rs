//! The scripts that build berth as deployed (deploy/).

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use berth_tests::ok;

const DEMO: &str = r#"
mod demo {
    #[inline(never)]
    pub fn cold(x: u64) -> u64 { x.wrapping_mul(3) ^ 7 }
    #[inline(never)]
    pub fn warm(x: u64) -> u64 { x.rotate_left(5).wrapping_add(1) }
    #[inline(never)]
    pub fn hot(x: u64) -> u64 { x.wrapping_add(11).wrapping_mul(13) }
}
fn main() {
    let a = std::hint::black_box(std::env::args().count() as u64);
    println!("{}", demo::cold(a) + demo::warm(a) + demo::hot(a));
}
"#;

/// Compiles DEMO with deploy/link-hot-first.sh as the linker, given the list `hot`.
/// Gives the addresses of demo::{cold, warm, hot} and their full symbol names.
fn link(dir: &Path, name: &str, hot: Option<&Path>) -> HashMap<&'static str, (u64, String)> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/link-hot-first.sh");
    let out = dir.join(name);
    let mut rustc = Command::new("rustc");
    rustc
        .args([
            "--edition",
            "2021",
            "-C",
            "opt-level=1",
            "-C",
            "codegen-units=1",
        ])
        .arg(format!("-Clinker={script}"))
        .arg(dir.join("demo.rs"))
        .arg("-o")
        .arg(&out);
    if let Some(list) = hot {
        rustc.arg(format!(
            "-Clink-arg=--berth-hot-list={}#0123",
            list.display()
        ));
    }
    ok(&rustc.output().expect("run rustc"), "rustc demo.rs");
    let run = Command::new(&out).output().expect("run the demo");
    assert_eq!(
        ok(&run, "the demo").trim(),
        "193",
        "the linked demo computes its sum"
    );
    let nm = ok(
        &Command::new("nm").arg(&out).output().expect("run nm"),
        "nm",
    );
    let mut found = HashMap::new();
    for line in nm.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 3 {
            continue;
        }
        for func in ["cold", "warm", "hot"] {
            if f[2].starts_with(&format!("_ZN4demo4demo{}{func}17h", func.len())) {
                let addr = u64::from_str_radix(f[0], 16).expect("nm address");
                found.insert(func, (addr, f[2].to_string()));
            }
        }
    }
    assert_eq!(
        found.len(),
        3,
        "demo's three functions in nm of {name}:\n{nm}"
    );
    found
}

#[test]
fn hot_functions_are_linked_first_and_in_the_listed_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("demo.rs"), DEMO).expect("write demo.rs");
    let plain = link(dir.path(), "plain", None);
    // The linker's own order, reversed: the last function listed under a hash this build
    // does not have (the code changed since the profile: every instance of the function
    // stands in), then the middle one exactly, then a name that is gone. The first is not
    // listed.
    let mut own: Vec<&str> = plain.keys().copied().collect();
    own.sort_by_key(|f| plain[f].0);
    let (first, middle, last) = (own[0], own[1], own[2]);
    let name = &plain[last].1;
    let stale = format!("{}17h0123456789abcdefE", &name[..name.len() - 20]);
    assert_ne!(&stale, name);
    let list = dir.path().join("demo.hot");
    let listed = format!(
        "{stale}\n{}\n_ZN4gone17h0000000000000000E\n",
        plain[middle].1
    );
    std::fs::write(&list, listed).expect("write the list");
    let ordered = link(dir.path(), "ordered", Some(&list));
    assert!(
        ordered[last].0 < ordered[middle].0 && ordered[middle].0 < ordered[first].0,
        "{last}, then {middle}, then the unlisted {first}: {ordered:?} (unordered: {plain:?})"
    );
    // Only the order changed.
    for func in ["cold", "warm", "hot"] {
        assert_eq!(plain[func].1, ordered[func].1);
    }
}
