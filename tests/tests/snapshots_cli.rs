//! The `berth` CLI over snapshots: pull unpacks, `snapshots ls|tree|info|usage|prepare|
//! commit|view|mounts|diff|label|rm`, `image mount|unmount`, `system df`, `image prune`.

use std::process::Command;

use berth_tests::fixtures::{Registry, busybox_image, multilayer_image};
use berth_tests::{Daemon, fails, ok};

fn is_mountpoint(dir: &std::path::Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let d = dir.to_string_lossy().to_string();
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(d.as_str()))
}

#[test]
fn snapshots_image_mount_df_and_prune() {
    let work = tempfile::Builder::new()
        .prefix("berth-snapcli-")
        .tempdir_in("/var/tmp")
        .expect("tmp");
    let busybox = busybox_image(&work.path().join("bb"), "1.36");
    let multi = multilayer_image(&work.path().join("ml"), "v2", 4);
    let registry = Registry::start();
    registry.push_layout(&busybox.layout, "lib/busybox:1.36");
    registry.push_layout(&multi.image.layout, "test/multi:v2");
    let d = Daemon::start();
    let bb_ref = registry.reference("lib/busybox:1.36");
    let ml_ref = registry.reference("test/multi:v2");
    for r in [&bb_ref, &ml_ref] {
        ok(
            &d.berth(&["pull", "--plain-http", r]),
            &format!("berth pull {r}"),
        );
    }

    // Every layer of both images is a committed snapshot named by its chain ID.
    let ls = ok(&d.berth(&["snapshots", "ls"]), "snapshots ls");
    for img in [&busybox, &multi.image] {
        for chain in img.chain_ids() {
            let line = ls
                .lines()
                .find(|l| l.starts_with(&chain))
                .unwrap_or_else(|| panic!("{chain} missing from snapshots ls:\n{ls}"));
            assert!(line.ends_with("Committed"), "{line}");
        }
    }
    let chains = multi.image.chain_ids();
    let top = chains.last().expect("layers").clone();
    let tree = ok(&d.berth(&["snapshots", "tree"]), "snapshots tree");
    let depth = |name: &str| {
        tree.lines()
            .find(|l| l.trim_start().trim_start_matches("\\_ ") == name)
            .map(|l| l.len() - l.trim_start().len())
            .unwrap_or_else(|| panic!("{name} missing from tree:\n{tree}"))
    };
    assert_eq!(depth(&chains[0]), 0);
    assert_eq!(depth(&top), 2 * (chains.len() - 1), "{tree}");
    let info = ok(&d.berth(&["snapshots", "info", &top]), "snapshots info");
    let info: serde_json::Value = serde_json::from_str(&info).expect("info json");
    assert_eq!(info["Kind"], "Committed");
    assert_eq!(info["Parent"], chains[chains.len() - 2].as_str());
    let usage = ok(
        &d.berth(&["snapshots", "usage", "-b", &chains[2]]),
        "snapshots usage",
    );
    let bytes: i64 = usage
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("usage output:\n{usage}"));
    assert!(
        bytes >= (multi.big_file_size as i64),
        "layer 3 holds the big file: {bytes} bytes"
    );

    // image mount shows the merged filesystem; unmount releases the snapshot and lease.
    let mnt = work.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    ok(
        &d.berth(&["image", "mount", &ml_ref, mnt.to_str().expect("utf8")]),
        "image mount",
    );
    assert!(is_mountpoint(&mnt));
    let verified = multi.image.rootfs.verify(&mnt);
    assert!(
        std::fs::write(mnt.join("x"), "y").is_err(),
        "a read-only mount"
    );
    ok(
        &d.berth(&["image", "unmount", mnt.to_str().expect("utf8")]),
        "image unmount",
    );
    if let Err(e) = verified {
        panic!("mounted image differs:\n{e}");
    }
    assert!(!is_mountpoint(&mnt));
    let ls = ok(&d.berth(&["snapshots", "ls"]), "snapshots ls");
    assert!(!ls.contains(mnt.to_str().expect("utf8")), "{ls}");
    let leases = ok(&d.berth(&["leases", "ls"]), "leases ls");
    assert!(!leases.contains(mnt.to_str().expect("utf8")), "{leases}");

    // The low-level verbs.
    ok(
        &d.berth(&["snapshots", "prepare", "work1", &top]),
        "prepare",
    );
    let mounts = ok(
        &d.berth(&["snapshots", "mounts", "/target", "work1"]),
        "mounts",
    );
    assert!(
        mounts.starts_with("mount -t overlay overlay /target -o "),
        "{mounts}"
    );
    assert!(mounts.contains("upperdir="), "{mounts}");
    let rw = work.path().join("rw");
    std::fs::create_dir(&rw).expect("mkdir");
    ok(
        &d.berth(&[
            "snapshots",
            "prepare",
            "work2",
            &top,
            "--target",
            rw.to_str().expect("utf8"),
        ]),
        "prepare --target",
    );
    std::fs::write(rw.join("added.txt"), "new file\n").expect("write into the snapshot");
    std::fs::remove_file(rw.join("etc/motd")).expect("delete a lower file");
    let st = Command::new("umount").arg(&rw).status().expect("umount");
    assert!(st.success());
    let layer = work.path().join("diff.tar");
    ok(
        &d.berth(&[
            "snapshots",
            "diff",
            "--media-type",
            "application/vnd.oci.image.layer.v1.tar",
            "-o",
            layer.to_str().expect("utf8"),
            "work2",
        ]),
        "snapshots diff",
    );
    let listing = Command::new("tar")
        .arg("tf")
        .arg(&layer)
        .output()
        .expect("tar");
    let listing = ok(&listing, "tar tf");
    assert!(listing.lines().any(|l| l == "added.txt"), "{listing}");
    assert!(listing.lines().any(|l| l == "etc/.wh.motd"), "{listing}");
    ok(
        &d.berth(&["snapshots", "commit", "mine", "work2"]),
        "commit",
    );
    ok(&d.berth(&["snapshots", "view", "view1", "mine"]), "view");
    ok(
        &d.berth(&["snapshots", "label", "mine", "team=storage"]),
        "label",
    );
    let info = ok(&d.berth(&["snapshots", "info", "mine"]), "info");
    assert!(info.contains("\"team\": \"storage\""), "{info}");
    let err = fails(&d.berth(&["snapshots", "rm", "mine"]), "rm of a parent");
    assert!(err.contains("child"), "{err}");
    let err = fails(
        &d.berth(&["snapshots", "prepare", "work1", &top]),
        "duplicate",
    );
    assert!(err.contains("already exists"), "{err}");
    let err = fails(
        &d.berth(&["snapshots", "prepare", "x", "sha256:nope"]),
        "bad parent",
    );
    assert!(err.contains("not found"), "{err}");
    ok(
        &d.berth(&["snapshots", "rm", "view1", "mine", "work1"]),
        "rm",
    );

    // system df sees two images and their snapshots; prune -a frees them.
    let df = ok(&d.berth(&["system", "df"]), "system df");
    let images_row = df.lines().find(|l| l.starts_with("Images")).expect("row");
    assert!(images_row.split_whitespace().nth(1) == Some("2"), "{df}");
    let snaps_row = df
        .lines()
        .find(|l| l.starts_with("Snapshots"))
        .expect("row");
    let total: usize = snaps_row
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("count");
    assert_eq!(total, busybox.chain_ids().len() + chains.len(), "{df}");
    let pruned = ok(
        &d.berth(&["image", "prune", "--all", "-f"]),
        "image prune --all",
    );
    assert!(pruned.contains(&format!("untagged: {ml_ref}")), "{pruned}");
    assert!(pruned.contains("Total reclaimed space: "), "{pruned}");
    assert!(!pruned.contains("Total reclaimed space: 0B"), "{pruned}");
    let ls = ok(&d.berth(&["snapshots", "ls"]), "snapshots ls");
    assert_eq!(ls.lines().count(), 1, "only the header is left:\n{ls}");
    let blobs = std::fs::read_dir(d.root.join("content/blobs/sha256"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0, "every blob is collected");
}
