//! Property test of the layer applier against hostile layers: tars built from random
//! entries (names with `..` and absolute paths, symlinks and hard links to anywhere,
//! whiteouts, devices), then randomly corrupted. Bounded (a fixed number of cases). Whatever
//! the layer, applying it must not panic, must write nothing outside the target, and must
//! not grow beyond what the layer carries.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use berth_snapshotter::{ApplyOptions, Compression, apply_layer};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
    Hardlink(String),
    Fifo,
}

fn name() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        Just("..".to_string()),
        Just(".".to_string()),
        Just("".to_string()),
        Just(".wh..wh..opq".to_string()),
        "\\.wh\\.[a-c]{1,2}",
        "[a-c]{1,3}",
    ];
    (any::<bool>(), proptest::collection::vec(part, 1..5))
        .prop_map(|(abs, parts)| format!("{}{}", if abs { "/" } else { "" }, parts.join("/")))
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Kind::File),
        Just(Kind::Dir),
        prop_oneof![name(), Just("/".to_string()), Just("../../..".to_string())]
            .prop_map(Kind::Symlink),
        name().prop_map(Kind::Hardlink),
        Just(Kind::Fifo),
    ]
}

/// A tar of `entries`, written with raw names (the tar crate would refuse `..`).
fn tar_of(entries: &[(String, Kind)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind) in entries {
        let mut h = tar::Header::new_gnu();
        let raw = path.as_bytes();
        let n = raw.len().min(99);
        h.as_gnu_mut().expect("gnu").name[..n].copy_from_slice(&raw[..n]);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        let mut data: &[u8] = &[];
        match kind {
            Kind::File(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                data = d;
            }
            Kind::Dir => h.set_entry_type(tar::EntryType::Directory),
            Kind::Symlink(t) | Kind::Hardlink(t) => {
                h.set_entry_type(if matches!(kind, Kind::Symlink(_)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                let t = t.as_bytes();
                let n = t.len().min(99);
                h.as_gnu_mut().expect("gnu").linkname[..n].copy_from_slice(&t[..n]);
            }
            Kind::Fifo => h.set_entry_type(tar::EntryType::Fifo),
        }
        if !matches!(kind, Kind::File(_)) {
            h.set_size(0);
        }
        h.set_cksum();
        b.append(&h, data).expect("append");
    }
    b.into_inner().expect("tar")
}

/// Every path below `dir` (not following symlinks), and the bytes of regular files by
/// inode (hard links count once).
fn walk(dir: &Path, paths: &mut Vec<String>, inodes: &mut HashSet<u64>, bytes: &mut u64) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        paths.push(p.display().to_string());
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            walk(&p, paths, inodes, bytes);
        } else if m.is_file() && inodes.insert(m.ino()) {
            *bytes += m.len();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn hostile_layers_stay_inside_and_bounded(
        entries in proptest::collection::vec((name(), kind()), 1..12),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        overlay in any::<bool>(),
    ) {
        let mut layer = tar_of(&entries);
        for (at, byte) in flips {
            let i = at.index(layer.len());
            layer[i] = byte;
        }
        let base = tempfile::tempdir_in("/var/tmp").expect("tempdir");
        let root = base.path().join("root");
        let outside = base.path().join("outside");
        fs::create_dir_all(&root).expect("root");
        fs::create_dir_all(&outside).expect("outside");
        fs::write(outside.join("sentinel"), b"untouched").expect("sentinel");

        let opts = ApplyOptions { overlay_whiteouts: overlay, ..Default::default() };
        let _ = apply_layer(layer.as_slice(), Compression::Uncompressed, &root, &opts);

        let mut top: Vec<String> = fs::read_dir(base.path())
            .expect("base")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        top.sort();
        prop_assert_eq!(top, vec!["outside".to_string(), "root".to_string()]);
        let mut out = Vec::new();
        walk(&outside, &mut out, &mut HashSet::new(), &mut 0);
        prop_assert_eq!(out, vec![outside.join("sentinel").display().to_string()]);
        prop_assert_eq!(fs::read(outside.join("sentinel")).expect("sentinel"), b"untouched");

        let (mut paths, mut inodes, mut bytes) = (Vec::new(), HashSet::new(), 0u64);
        walk(&root, &mut paths, &mut inodes, &mut bytes);
        prop_assert!(
            bytes <= layer.len() as u64,
            "{bytes} bytes written from a {}-byte layer",
            layer.len()
        );
    }
}
