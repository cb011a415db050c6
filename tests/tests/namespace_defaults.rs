//! A namespace's labels as containerd's clients use them: Namespaces.Update creates a
//! namespace that does not exist (ctr's `namespaces label`, the Go client's SetLabel), and
//! `containerd.io/defaults/snapshotter` decides where berthd unpacks and runs when a
//! request names no snapshotter.

use berth_tests::fixtures::{busybox_image, pack_layout};
use berth_tests::{Containerd, Daemon, ok};

#[test]
fn update_of_a_missing_namespace_creates_it_as_containerd_does() {
    let d = Daemon::start();
    let c = Containerd::start();
    for (what, ctr) in [
        (
            "berthd",
            Box::new(|a: &[&str]| d.ctr(a)) as Box<dyn Fn(&[&str]) -> _>,
        ),
        (
            "containerd",
            Box::new(|a: &[&str]| {
                std::process::Command::new(berth_tests::system_bin("ctr"))
                    .arg("--address")
                    .arg(&c.address)
                    .args(a)
                    .output()
                    .expect("ctr")
            }),
        ),
    ] {
        ok(&ctr(&["namespaces", "label", "fresh-ns", "team=a"]), what);
        let ls = ok(&ctr(&["namespaces", "ls"]), what);
        let row = ls
            .lines()
            .find(|l| l.starts_with("fresh-ns"))
            .unwrap_or_default();
        assert!(row.contains("team=a"), "{what}: {ls}");
        ok(&ctr(&["namespaces", "rm", "fresh-ns"]), what);
    }
    // Bad names are still refused.
    berth_tests::fails(
        &d.ctr(&["namespaces", "label", "bad..name", "a=b"]),
        "bad name",
    );
}

#[test]
fn the_namespace_default_snapshotter_is_used_when_none_is_named() {
    let d = Daemon::start();
    let work = tempfile::tempdir().expect("tempdir");
    let img = busybox_image(&work.path().join("layout"), "latest");
    let archive = work.path().join("busybox.tar");
    pack_layout(&img.layout, &archive);
    ok(
        &d.ctr(&[
            "namespaces",
            "create",
            "natns",
            "containerd.io/defaults/snapshotter=native",
        ]),
        "create labelled namespace",
    );
    ok(
        &d.berth(&[
            "-n",
            "natns",
            "load",
            "--base-name",
            "example.com/busybox",
            "-i",
            &archive.display().to_string(),
        ]),
        "berth load",
    );
    let native = ok(
        &d.ctr(&["-n", "natns", "snapshots", "--snapshotter", "native", "ls"]),
        "native snapshots",
    );
    assert!(
        native.lines().count() > 1,
        "nothing unpacked on native:\n{native}"
    );
    let overlay = ok(
        &d.ctr(&[
            "-n",
            "natns",
            "snapshots",
            "--snapshotter",
            "overlayfs",
            "ls",
        ]),
        "overlay snapshots",
    );
    assert_eq!(
        overlay.lines().count(),
        1,
        "unpacked on overlayfs too:\n{overlay}"
    );

    let images = ok(&d.berth(&["-n", "natns", "images"]), "berth images");
    let image = images
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .expect("an image")
        .to_string();
    let out = ok(
        &d.berth(&["-n", "natns", "run", "--rm", &image, "echo", "on-native"]),
        "berth run",
    );
    assert!(out.contains("on-native"), "{out}");
    let id = ok(
        &d.berth(&["-n", "natns", "create", "--name", "kept", &image, "true"]),
        "berth create",
    );
    let id = id.trim();
    let info = ok(
        &d.ctr(&["-n", "natns", "containers", "info", id]),
        "ctr c info",
    );
    let id_info: serde_json::Value = serde_json::from_str(&info).expect("info json");
    assert_eq!(id_info["Snapshotter"], "native", "{info}");
    ok(&d.berth(&["-n", "natns", "rm", "kept"]), "berth rm");
}
