//! Unpack on `berth pull` and garbage collection, end to end: a real berthd, a local
//! registry, the overlayfs snapshotter, and the files on disk as the judge.
//!
//! - pulls unpack into chain-ID snapshots and label the config with the top one;
//! - `berth image rm --sync` removes the image's blobs and snapshot directories, not another
//!   image's; a lease holding them keeps them until it is deleted; a container record keeps
//!   its snapshot until it is deleted; two names of one image keep it until both go;
//! - bad layers (path escapes, a corrupt gzip stream, a wrong diff_id) fail the pull with a
//!   message naming the layer and leave no active snapshot and nothing outside the target.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_proto::containerd::services::containers::v1 as cpb;
use berth_proto::containerd::services::containers::v1::containers_client::ContainersClient;
use berth_proto::containerd::services::content::v1 as ctpb;
use berth_proto::containerd::services::content::v1::content_client::ContentClient;
use berth_tests::fixtures::{
    BuiltImage, MEDIA_TYPE_CONFIG, MEDIA_TYPE_INDEX, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR,
    MEDIA_TYPE_MANIFEST, Registry, busybox_image, multilayer_image, oci_arch, sha256_digest,
};
use berth_tests::{Daemon, container_record, fails, in_ns, ok};
use serde_json::json;

const SNAPSHOT_LABEL: &str = "containerd.io/gc.ref.snapshot.overlayfs";

/// The snapshot directories of the overlayfs snapshotter.
fn snapshot_dirs(d: &Daemon) -> BTreeSet<String> {
    let dir = d.root.join("snapshots/overlayfs/snapshots");
    match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
        Err(e) => panic!("read {}: {e}", dir.display()),
    }
}

fn blob(d: &Daemon, digest: &str) -> PathBuf {
    d.root
        .join("content/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn blobs_of(img: &BuiltImage) -> Vec<String> {
    std::iter::once(img.manifest.digest.clone())
        .chain(std::iter::once(img.config.digest.clone()))
        .chain(img.layers.iter().map(|l| l.descriptor.digest.clone()))
        .collect()
}

async fn content_labels(d: &Daemon, digest: &str) -> BTreeMap<String, String> {
    let mut c = ContentClient::new(d.channel().await);
    c.info(in_ns(
        "default",
        ctpb::InfoRequest {
            digest: digest.to_string(),
        },
    ))
    .await
    .expect("content info")
    .into_inner()
    .info
    .expect("info")
    .labels
}

/// Waits (bounded) until `f` holds.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every snapshot record of the daemon's database (read after the daemon stopped):
/// (namespace, snapshotter, key) → (directory id, kind).
fn snapshot_records(root: &Path) -> BTreeMap<(String, String, String), (u64, i32)> {
    use redb::{ReadableDatabase, ReadableTable};
    let db = redb::Database::open(root.join("meta.redb")).expect("open meta.redb");
    let txn = db.begin_read().expect("read txn");
    let t = txn
        .open_table(berth_snapshotter::metastore::SNAPSHOTS)
        .expect("snapshots table");
    let mut out = BTreeMap::new();
    for item in t.iter().expect("iter") {
        let (k, v) = item.expect("row");
        let (ns, ss, key) = k.value();
        let rec = berth_snapshotter::metastore::decode(key, v.value()).expect("record");
        out.insert(
            (ns.to_string(), ss.to_string(), key.to_string()),
            (rec.id, rec.kind),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_unpacks_and_collection_follows_references() {
    let work = tempfile::Builder::new()
        .prefix("berth-gc-")
        .tempdir_in("/tmp")
        .expect("tmp");
    let bb = busybox_image(&work.path().join("bb"), "1.35");
    let multi = multilayer_image(&work.path().join("ml"), "v1", 4);
    let ml = &multi.image;
    let reg = Registry::start();
    reg.push_layout(&bb.layout, "lib/busybox:1.35");
    reg.push_layout(&ml.layout, "test/multi:v1");
    let bb_ref = reg.reference("lib/busybox:1.35");
    let ml_ref = reg.reference("test/multi:v1");
    let mut d = Daemon::start();

    // Unpack on pull: one snapshot directory per layer, the config labelled with the top.
    let out = d.berth(&["pull", &bb_ref]);
    ok(&out, "berth pull busybox");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unpacking"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bb_dirs = snapshot_dirs(&d);
    assert_eq!(bb_dirs.len(), bb.layers.len(), "{bb_dirs:?}");
    ok(&d.berth(&["pull", &ml_ref]), "berth pull multi");
    let all = snapshot_dirs(&d);
    let shared_chain = ml
        .chain_ids()
        .iter()
        .zip(bb.chain_ids())
        .take_while(|(a, b)| **a == *b)
        .count();
    let ml_dirs: BTreeSet<String> = all.difference(&bb_dirs).cloned().collect();
    assert_eq!(ml_dirs.len(), ml.layers.len() - shared_chain, "{all:?}");
    for (img, top) in [(&bb, bb.chain_ids()), (ml, ml.chain_ids())] {
        let labels = content_labels(&d, &img.config.digest).await;
        assert_eq!(
            labels.get(SNAPSHOT_LABEL),
            top.last(),
            "config {} labels {labels:?}",
            img.config.digest
        );
    }
    // Pulling again unpacks nothing new.
    ok(&d.berth(&["pull", &ml_ref]), "second pull");
    assert_eq!(snapshot_dirs(&d), all);

    let bb_blobs: BTreeSet<String> = blobs_of(&bb).into_iter().collect();
    let ml_only: Vec<String> = blobs_of(ml)
        .into_iter()
        .filter(|b| !bb_blobs.contains(b))
        .collect();
    // After each pull: the directories the multi-layer image added.
    let pull_ml = |d: &Daemon| {
        ok(&d.berth(&["pull", &ml_ref]), "pull again");
        let dirs: BTreeSet<String> = snapshot_dirs(d).difference(&bb_dirs).cloned().collect();
        assert_eq!(dirs.len(), ml_dirs.len(), "{dirs:?}");
        dirs
    };
    let assert_ml_present = |d: &Daemon, dirs: &BTreeSet<String>, what: &str| {
        for b in &ml_only {
            assert!(blob(d, b).exists(), "{what}: blob {b} missing");
        }
        let now = snapshot_dirs(d);
        assert!(now.is_superset(dirs), "{what}: {now:?} lacks {dirs:?}");
    };
    let assert_ml_gone = |d: &Daemon, what: &str| {
        for b in &ml_only {
            assert!(!blob(d, b).exists(), "{what}: blob {b} still on disk");
        }
        for b in &bb_blobs {
            assert!(blob(d, b).exists(), "{what}: busybox blob {b} removed");
        }
        assert_eq!(snapshot_dirs(d), bb_dirs, "{what}");
    };

    // 1. Removing the image (sync) removes what only it held.
    ok(&d.berth(&["image", "rm", "--sync", &ml_ref]), "image rm");
    assert_ml_gone(&d, "after image rm --sync");

    // 2. A lease holding the image's content and snapshots keeps them across the removal.
    let dirs = pull_ml(&d);
    let lease = ok(&d.berth(&["leases", "create"]), "lease create");
    let lease = lease.trim();
    for b in blobs_of(ml) {
        ok(
            &d.berth(&["leases", "add-resource", lease, "content", &b]),
            "add content",
        );
    }
    for c in ml.chain_ids() {
        ok(
            &d.berth(&["leases", "add-resource", lease, "snapshots/overlayfs", &c]),
            "add snapshot",
        );
    }
    ok(&d.berth(&["image", "rm", "--sync", &ml_ref]), "image rm");
    assert_ml_present(&d, &dirs, "image removed, lease held");
    ok(&d.berth(&["leases", "rm", "--sync", lease]), "lease rm");
    assert_ml_gone(&d, "after leases rm --sync");

    // 3. Two names of one image: everything stays until both are gone.
    let dirs = pull_ml(&d);
    ok(
        &d.berth(&["image", "tag", &ml_ref, "example.com/alias:1"]),
        "tag",
    );
    ok(
        &d.berth(&["image", "rm", "--sync", &ml_ref]),
        "rm first name",
    );
    assert_ml_present(&d, &dirs, "one name left");
    ok(
        &d.berth(&["image", "rm", "--sync", "example.com/alias:1"]),
        "rm second name",
    );
    assert_ml_gone(&d, "both names removed");

    // 4. A container record keeps its snapshot (and its parents) until it is deleted.
    let mut containers = ContainersClient::new(d.channel().await);
    let bb_top = bb.chain_ids().last().cloned().expect("chain");
    let mut record = container_record("holder");
    record.snapshotter = "overlayfs".into();
    record.snapshot_key = bb_top.clone();
    containers
        .create(in_ns(
            "default",
            cpb::CreateContainerRequest {
                container: Some(record),
            },
        ))
        .await
        .expect("create container");
    ok(&d.berth(&["image", "rm", "--sync", &bb_ref]), "rm busybox");
    assert_eq!(snapshot_dirs(&d), bb_dirs, "the container's snapshot went");
    for b in &bb_blobs {
        assert!(
            !blob(&d, b).exists(),
            "busybox blob {b} kept without an image"
        );
    }
    containers
        .delete(in_ns(
            "default",
            cpb::DeleteContainerRequest {
                id: "holder".into(),
            },
        ))
        .await
        .expect("delete container");
    eventually("the container's snapshot is collected", || {
        snapshot_dirs(&d).is_empty()
    });

    // 5. The unpacked multi-layer image is right, and no active snapshot is left over.
    ok(&d.berth(&["pull", &ml_ref]), "pull again");
    let status = d.stop();
    assert!(status.success(), "berthd exit {status}");
    let records = snapshot_records(&d.root);
    for ((ns, ss, key), (_, kind)) in &records {
        assert_eq!(*kind, 3, "{ns}/{ss}/{key} is not committed");
        assert!(!key.starts_with("extract-"), "active snapshot {key} left");
    }
    let lowers: Vec<String> = ml
        .chain_ids()
        .iter()
        .rev()
        .map(|c| {
            let (id, _) = records
                .get(&("default".to_string(), "overlayfs".to_string(), c.clone()))
                .unwrap_or_else(|| panic!("no snapshot {c}: {records:?}"));
            d.root
                .join(format!("snapshots/overlayfs/snapshots/{id}/fs"))
                .display()
                .to_string()
        })
        .collect();
    let target = work.path().join("rootfs");
    std::fs::create_dir(&target).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("ro,lowerdir={}", lowers.join(":")))
        .arg(&target)
        .output()
        .expect("mount");
    ok(&mounted, "mount the unpacked layers");
    let verified = ml.rootfs.verify(&target);
    let umount = Command::new("umount")
        .arg(&target)
        .output()
        .expect("umount");
    ok(&umount, "umount");
    if let Err(e) = verified {
        panic!("unpacked rootfs differs from the image: {e}");
    }
}

// ---------------------------------------------------------------------------------------
// Bad layers

enum Raw<'a> {
    File(&'a [u8]),
    Dir,
    Symlink(&'a str),
}

/// A tar stream of entries whose names are written as given (no checks, `..` allowed).
fn raw_tar(entries: &[(&str, Raw<'_>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind) in entries {
        let mut h = tar::Header::new_old();
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_mtime(1_704_067_200);
        h.set_uid(0);
        h.set_gid(0);
        let data: &[u8] = match kind {
            Raw::File(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                data
            }
            Raw::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                &[]
            }
            Raw::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
                &[]
            }
        };
        h.set_cksum();
        b.append(&h, data).expect("append");
    }
    b.into_inner().expect("finish tar")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn write_blob(layout: &Path, data: &[u8]) -> (String, u64) {
    let digest = sha256_digest(data);
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).expect("blobs dir");
    std::fs::write(dir.join(digest.trim_start_matches("sha256:")), data).expect("blob");
    (digest, data.len() as u64)
}

/// An OCI layout with one image of the given layer blobs (media type each) and the config's
/// diff_ids as given — no consistency checks. Returns the layer digests.
fn raw_image(
    layout: &Path,
    tag: &str,
    layers: &[(Vec<u8>, &str)],
    diff_ids: &[String],
) -> Vec<String> {
    let mut descs = Vec::new();
    let mut digests = Vec::new();
    for (data, mt) in layers {
        let (digest, size) = write_blob(layout, data);
        descs.push(json!({"mediaType": mt, "digest": digest, "size": size}));
        digests.push(digest);
    }
    let config = json!({
        "architecture": oci_arch(),
        "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (cd, cs) = write_blob(layout, &serde_json::to_vec(&config).expect("json"));
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": {"mediaType": MEDIA_TYPE_CONFIG, "digest": cd, "size": cs},
        "layers": descs,
    });
    let (md, ms) = write_blob(layout, &serde_json::to_vec(&manifest).expect("json"));
    let index = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_INDEX,
        "manifests": [{
            "mediaType": MEDIA_TYPE_MANIFEST, "digest": md, "size": ms,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).expect("json"),
    )
    .expect("index.json");
    digests
}

/// Every path under `dir` whose file name is `name`.
fn find_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_name() == name {
                out.push(p.clone());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    out
}

#[test]
fn bad_layers_fail_the_pull_and_leave_nothing_behind() {
    let work = tempfile::Builder::new()
        .prefix("berth-gc-bad-")
        .tempdir_in("/tmp")
        .expect("tmp");
    let pid = std::process::id();
    let reg = Registry::start();
    let mut d = Daemon::start();
    let sha = |data: &[u8]| sha256_digest(data);

    // The outside places an escape would write to.
    let escape_name = format!("berth-gc-escape-{pid}");
    let escape2_name = format!("berth-gc-escape2-{pid}");
    let abs_dir = work.path().join("outside");
    std::fs::create_dir(&abs_dir).expect("outside dir");
    let up = "../".repeat(20);

    struct Case {
        name: &'static str,
        layers: Vec<(Vec<u8>, &'static str)>,
        diff_ids: Vec<String>,
        /// Text the error must contain (besides the failing layer's digest).
        expect: &'static str,
        /// Index of the layer that must be named.
        bad: usize,
    }
    let good = raw_tar(&[("etc", Raw::Dir), ("etc/hostname", Raw::File(b"good\n"))]);
    let dotdot = raw_tar(&[
        ("etc", Raw::Dir),
        (&format!("{up}tmp/{escape_name}"), Raw::File(b"escaped\n")),
    ]);
    let rel_link = raw_tar(&[
        ("up", Raw::Symlink(&format!("{up}tmp"))),
        (&format!("up/{escape2_name}"), Raw::File(b"escaped\n")),
    ]);
    let abs_target = abs_dir.display().to_string();
    let abs_link = raw_tar(&[
        ("abs", Raw::Symlink(&abs_target)),
        ("abs/pwned", Raw::File(b"escaped\n")),
    ]);
    let corrupt = {
        let big: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let tar = raw_tar(&[("data.bin", Raw::File(&big))]);
        let mut gz = gzip(&tar);
        let mid = gz.len() / 2;
        for b in &mut gz[mid..mid + 64] {
            *b ^= 0x5a;
        }
        (gz, sha(&tar))
    };
    let cases = vec![
        Case {
            name: "dotdot",
            layers: vec![(gzip(&dotdot), MEDIA_TYPE_LAYER_GZIP)],
            diff_ids: vec![sha(&dotdot)],
            expect: "escapes the target directory",
            bad: 0,
        },
        Case {
            name: "rel-symlink",
            layers: vec![(rel_link.clone(), MEDIA_TYPE_LAYER_TAR)],
            diff_ids: vec![sha(&rel_link)],
            expect: "escapes the target directory",
            bad: 0,
        },
        Case {
            name: "corrupt-gzip",
            layers: vec![(corrupt.0.clone(), MEDIA_TYPE_LAYER_GZIP)],
            diff_ids: vec![corrupt.1.clone()],
            expect: "gzip",
            bad: 0,
        },
        Case {
            name: "wrong-diff-id",
            layers: vec![
                (gzip(&good), MEDIA_TYPE_LAYER_GZIP),
                (good.clone(), MEDIA_TYPE_LAYER_TAR),
            ],
            diff_ids: vec![sha(&good), sha(b"not the layer")],
            expect: "rootfs.diff_ids[1]",
            bad: 1,
        },
    ];
    for case in &cases {
        let layout = work.path().join(case.name);
        let layers = raw_image(&layout, "v1", &case.layers, &case.diff_ids);
        let repo = format!("bad/{}:v1", case.name);
        reg.push_layout(&layout, &repo);
        let r = reg.reference(&repo);
        let err = fails(&d.berth(&["pull", &r]), &format!("pull of {}", case.name));
        assert!(
            err.contains(&layers[case.bad]),
            "{}: error does not name layer {}: {err}",
            case.name,
            layers[case.bad]
        );
        assert!(err.contains(case.expect), "{}: {err}", case.name);
        // No image record.
        let images = ok(
            &d.berth(&["images", "--format", "{{.Repository}}:{{.Tag}}"]),
            "images",
        );
        assert!(
            !images.contains(&r),
            "{}: image recorded: {images}",
            case.name
        );
    }
    // Only the good lower layer of the diff_id case may stay (committed, valid).
    let dirs = snapshot_dirs(&d);
    assert!(dirs.len() <= 1, "snapshot directories left: {dirs:?}");

    // An absolute symlink is followed inside the target, never out of it.
    let layout = work.path().join("abs-symlink");
    raw_image(
        &layout,
        "v1",
        &[(abs_link.clone(), MEDIA_TYPE_LAYER_TAR)],
        &[sha(&abs_link)],
    );
    reg.push_layout(&layout, "bad/abs-symlink:v1");
    let out = d.berth(&["pull", &reg.reference("bad/abs-symlink:v1")]);
    eprintln!(
        "absolute symlink layer: pull {} {}",
        if out.status.success() {
            "succeeded"
        } else {
            "failed"
        },
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or_default()
    );
    if out.status.success() {
        let inside = find_named(&d.root.join("snapshots"), "pwned");
        assert_eq!(inside.len(), 1, "{inside:?}");
        assert!(
            inside[0].starts_with(d.root.join("snapshots/overlayfs/snapshots")),
            "{inside:?}"
        );
    }

    // Nothing was written outside.
    for name in [&escape_name, &escape2_name] {
        assert!(
            !Path::new("/tmp").join(name).exists(),
            "/tmp/{name} was written by a layer"
        );
        assert!(
            find_named(&d.root, name).is_empty(),
            "{name} written somewhere under the root"
        );
    }
    assert_eq!(
        std::fs::read_dir(&abs_dir).expect("outside").count(),
        0,
        "a layer wrote through an absolute symlink"
    );

    // No active snapshot is left in the metadata.
    let status = d.stop();
    assert!(status.success(), "berthd exit {status}");
    for ((ns, ss, key), (_, kind)) in snapshot_records(&d.root) {
        assert!(
            !key.starts_with("extract-") && kind == 3,
            "{ns}/{ss}/{key} (kind {kind}) left after failed pulls"
        );
    }
}
