//! The real `ctr` moving images through berthd's Content and Images services: fetch from a
//! local registry, list, read, import, export, check and push.

use std::process::Command;

use berth_tests::fixtures::{Registry, busybox_image, multilayer_image, pack_layout};
use berth_tests::{Daemon, ok, system_bin};

fn tar_list(path: &std::path::Path) -> String {
    let out = Command::new("tar")
        .arg("tf")
        .arg(path)
        .output()
        .expect("tar");
    ok(&out, "tar tf")
}

#[test]
fn content_fetch_ls_get_import_export_check_push() {
    let work = tempfile::Builder::new()
        .prefix("berth-ctrimg-")
        .tempdir_in("/tmp")
        .expect("tmp");
    let busybox = busybox_image(&work.path().join("bb"), "1.35");
    let multi = multilayer_image(&work.path().join("ml"), "v1", 12);
    let registry = Registry::start();
    registry.push_layout(&busybox.layout, "lib/busybox:1.35");
    registry.push_layout(&multi.image.layout, "test/multi:v1");
    let d = Daemon::start();

    // content fetch of both images from the local registry.
    for r in ["lib/busybox:1.35", "test/multi:v1"] {
        ok(
            &d.ctr(&["content", "fetch", "--plain-http", &registry.reference(r)]),
            &format!("ctr content fetch {r}"),
        );
    }
    let ls = ok(&d.ctr(&["content", "ls"]), "content ls");
    for img in [&busybox, &multi.image] {
        for desc in std::iter::once(&img.manifest)
            .chain(std::iter::once(&img.config))
            .chain(img.layers.iter().map(|l| &l.descriptor))
        {
            assert!(
                ls.contains(&desc.digest),
                "{} missing from content ls:\n{ls}",
                desc.digest
            );
        }
    }
    // ctr's fetch labels the manifest with its children and the blobs with their source.
    let manifest_line = ls
        .lines()
        .find(|l| l.starts_with(&multi.image.manifest.digest))
        .expect("manifest");
    assert!(
        manifest_line.contains("containerd.io/gc.ref.content.config="),
        "{manifest_line}"
    );
    assert!(
        manifest_line.contains("containerd.io/distribution.source."),
        "{manifest_line}"
    );

    // content get returns the exact bytes.
    let got = d.ctr(&["content", "get", &busybox.config.digest]);
    assert!(got.status.success());
    assert_eq!(
        got.stdout,
        busybox.config_bytes(),
        "content get of the config"
    );
    let big = d.ctr(&["content", "get", &multi.image.layers[2].descriptor.digest]);
    assert!(big.status.success());
    assert_eq!(
        big.stdout.len() as u64,
        multi.image.layers[2].descriptor.size
    );
    assert_eq!(
        berth_tests::fixtures::sha256_digest(&big.stdout),
        multi.image.layers[2].descriptor.digest
    );

    // import --no-unpack of an OCI archive into a fresh namespace.
    let archive = work.path().join("multi.tar");
    pack_layout(&multi.image.layout, &archive);
    ok(
        &d.ctr(&[
            "-n",
            "imp",
            "images",
            "import",
            "--no-unpack",
            "--base-name",
            "example.com/multi",
            &archive.display().to_string(),
        ]),
        "ctr images import",
    );
    let images = ok(&d.ctr(&["-n", "imp", "images", "ls"]), "images ls");
    assert!(
        images.contains("example.com/multi:v1") && images.contains(&multi.image.manifest.digest),
        "{images}"
    );
    // images check: every blob is present (the unpack column needs snapshotters, which
    // arrive later, so only the content status is checked here).
    let check = d.ctr(&["-n", "imp", "images", "check"]);
    let text = String::from_utf8_lossy(&check.stdout);
    let n = 1 + multi.image.layers.len(); // the config and the layers
    assert!(
        text.contains(&format!("complete ({n}/{n})")),
        "images check:\n{text}"
    );

    // export, and the archive holds every blob.
    let exported = work.path().join("export.tar");
    ok(
        &d.ctr(&[
            "-n",
            "imp",
            "images",
            "export",
            &exported.display().to_string(),
            "example.com/multi:v1",
        ]),
        "ctr images export",
    );
    let listing = tar_list(&exported);
    assert!(
        listing.contains("index.json") && listing.contains("oci-layout"),
        "{listing}"
    );
    for l in &multi.image.layers {
        assert!(
            listing.contains(l.descriptor.hex()),
            "layer {} not exported:\n{listing}",
            l.descriptor.digest
        );
    }
    // ... and imports back into another namespace with identical digests.
    ok(
        &d.ctr(&[
            "-n",
            "back",
            "images",
            "import",
            "--no-unpack",
            &exported.display().to_string(),
        ]),
        "re-import",
    );
    let back = ok(&d.ctr(&["-n", "back", "images", "ls"]), "ls");
    assert!(back.contains(&multi.image.manifest.digest), "{back}");

    // push to a second repository; the registry then serves the same manifest digest.
    let target = registry.reference("copies/multi:v2");
    ok(
        &d.ctr(&[
            "-n",
            "imp",
            "images",
            "tag",
            "example.com/multi:v1",
            &target,
        ]),
        "tag",
    );
    ok(
        &d.ctr(&["-n", "imp", "images", "push", "--plain-http", &target]),
        "ctr images push",
    );
    let inspect = Command::new(system_bin("skopeo"))
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{target}"),
        ])
        .output()
        .expect("skopeo");
    let inspect = ok(&inspect, "skopeo inspect");
    let v: serde_json::Value = serde_json::from_str(&inspect).expect("json");
    assert_eq!(v["Digest"], multi.image.manifest.digest, "{inspect}");
    assert_eq!(
        v["Layers"].as_array().map(Vec::len),
        Some(multi.image.layers.len())
    );
}
