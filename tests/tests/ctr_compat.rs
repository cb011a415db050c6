//! The real `ctr` (Debian's containerd package) against berthd.

use std::process::Command;
use std::time::Duration;

use berth_tests::{Background, Daemon, fails, ok, system_bin};

#[test]
fn version_prints_server_version_and_uuid() {
    let d = Daemon::start();
    let out = ok(&d.ctr(&["version"]), "ctr version");
    assert!(out.contains("Server:"), "{out}");
    assert!(
        out.contains(&format!("v{}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    let uuid_line = out
        .lines()
        .find(|l| l.trim_start().starts_with("UUID:"))
        .expect("UUID line");
    let uuid = uuid_line.split_whitespace().last().expect("uuid");
    assert_eq!(uuid.len(), 36, "{out}");
    // The UUID is created once and persists across restarts.
    let mut d = d;
    d.restart();
    let again = ok(&d.ctr(&["version"]), "ctr version after restart");
    assert!(
        again.contains(uuid),
        "uuid changed across restart:\n{out}\n{again}"
    );
}

#[test]
fn namespaces_round_trip() {
    let d = Daemon::start();
    ok(
        &d.ctr(&["namespaces", "create", "ns-a", "team=infra"]),
        "create",
    );
    ok(&d.ctr(&["namespaces", "create", "ns-b"]), "create");
    let ls = ok(&d.ctr(&["namespaces", "ls"]), "ls");
    let line = ls
        .lines()
        .find(|l| l.starts_with("ns-a"))
        .expect("ns-a listed");
    assert!(line.contains("team=infra"), "{ls}");
    assert!(ls.lines().any(|l| l.starts_with("ns-b")), "{ls}");
    ok(
        &d.ctr(&["namespaces", "label", "ns-b", "tier=gold"]),
        "label",
    );
    ok(&d.ctr(&["namespaces", "label", "ns-a", "team="]), "unlabel");
    let ls = ok(&d.ctr(&["namespaces", "ls"]), "ls");
    assert!(
        ls.lines()
            .any(|l| l.starts_with("ns-b") && l.contains("tier=gold")),
        "{ls}"
    );
    assert!(!ls.contains("team=infra"), "label not removed:\n{ls}");
    let q = ok(&d.ctr(&["namespaces", "ls", "-q"]), "ls -q");
    assert_eq!(q.lines().collect::<Vec<_>>(), ["ns-a", "ns-b"]);
    let rm = ok(&d.ctr(&["namespaces", "rm", "ns-a", "ns-b"]), "rm");
    assert_eq!(rm.lines().collect::<Vec<_>>(), ["ns-a", "ns-b"]);
    assert_eq!(ok(&d.ctr(&["namespaces", "ls", "-q"]), "ls").trim(), "");
    // Removing a namespace that does not exist is NotFound, which ctr reports quietly.
    let missing = d.ctr(&["namespaces", "rm", "never-was"]);
    assert!(
        missing.status.success(),
        "ctr treats NotFound on rm as done"
    );
}

#[test]
fn namespace_with_container_cannot_be_removed() {
    let d = Daemon::start();
    let rootfs = d.dir.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).expect("rootfs");
    ok(
        &d.ctr(&[
            "-n",
            "busy",
            "containers",
            "create",
            "--rootfs",
            rootfs.to_str().expect("utf8"),
            "c1",
            "sh",
        ]),
        "containers create",
    );
    let err = fails(
        &d.ctr(&["namespaces", "rm", "busy"]),
        "rm of a namespace holding a container",
    );
    assert!(
        err.contains(
            "namespace \"busy\" must be empty, but it still has containers: failed precondition"
        ),
        "{err}"
    );
    ok(
        &d.ctr(&["-n", "busy", "containers", "rm", "c1"]),
        "containers rm",
    );
    ok(
        &d.ctr(&["namespaces", "rm", "busy"]),
        "rm of the emptied namespace",
    );
}

#[test]
fn plugins_ls_lists_our_services() {
    let d = Daemon::start();
    let out = ok(&d.ctr(&["plugins", "ls"]), "plugins ls");
    for id in [
        "containers",
        "events",
        "introspection",
        "leases",
        "namespaces",
        "version",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with("io.containerd.grpc.v1")
                && l.split_whitespace().nth(1) == Some(id)),
            "grpc plugin {id} missing:\n{out}"
        );
    }
    assert!(
        out.lines()
            .all(|l| l.starts_with("TYPE") || l.trim_end().ends_with("ok")),
        "{out}"
    );
    let filtered = ok(
        &d.ctr(&["plugins", "ls", "type==io.containerd.lease.v1"]),
        "plugins ls filter",
    );
    assert_eq!(filtered.lines().count(), 2, "{filtered}");
    assert!(filtered.contains("manager"), "{filtered}");
}

#[test]
fn containers_create_ls_info_label_rm() {
    let d = Daemon::start();
    let rootfs = d.dir.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).expect("rootfs");
    let r = rootfs.to_str().expect("utf8");
    ok(
        &d.ctr(&[
            "containers",
            "create",
            "--rootfs",
            "--label",
            "app=web",
            r,
            "web",
            "echo",
            "hi",
        ]),
        "create web",
    );
    ok(
        &d.ctr(&["containers", "create", "--rootfs", r, "db", "sh"]),
        "create db",
    );
    let ls = ok(&d.ctr(&["containers", "ls"]), "ls");
    assert!(
        ls.lines().next().expect("header").starts_with("CONTAINER"),
        "{ls}"
    );
    assert!(
        ls.lines()
            .any(|l| l.starts_with("web ") && l.contains("io.containerd.runc.v2")),
        "{ls}"
    );
    let filtered = ok(
        &d.ctr(&["containers", "ls", "-q", "labels.app==web"]),
        "ls filter",
    );
    assert_eq!(filtered.trim(), "web");
    let info = ok(&d.ctr(&["containers", "info", "web"]), "info");
    let v: serde_json::Value = serde_json::from_str(&info).expect("info is JSON");
    assert_eq!(v["ID"], "web");
    assert_eq!(v["Labels"]["app"], "web");
    assert_eq!(v["Runtime"]["Name"], "io.containerd.runc.v2");
    assert_eq!(
        v["Spec"]["process"]["args"],
        serde_json::json!(["echo", "hi"])
    );
    ok(
        &d.ctr(&["containers", "label", "web", "tier=front"]),
        "label",
    );
    let info = ok(&d.ctr(&["containers", "info", "web"]), "info");
    let v: serde_json::Value = serde_json::from_str(&info).expect("json");
    assert_eq!(v["Labels"]["tier"], "front");
    assert_eq!(v["Labels"]["app"], "web");
    assert_ne!(v["CreatedAt"], v["UpdatedAt"]);
    let dup = fails(
        &d.ctr(&["containers", "create", "--rootfs", r, "web", "sh"]),
        "duplicate create",
    );
    assert!(dup.contains("container \"web\": already exists"), "{dup}");
    ok(&d.ctr(&["containers", "rm", "web", "db"]), "rm");
    assert_eq!(ok(&d.ctr(&["containers", "ls", "-q"]), "ls").trim(), "");
    let missing = fails(
        &d.ctr(&["containers", "info", "web"]),
        "info of a removed container",
    );
    assert!(missing.contains("not found"), "{missing}");
}

#[test]
fn leases_create_ls_rm() {
    let d = Daemon::start();
    let id = ok(&d.ctr(&["leases", "create", "purpose=test"]), "create");
    let id = id.trim();
    assert!(!id.is_empty());
    ok(
        &d.ctr(&["leases", "create", "--expires", "0", "--id", "named-lease"]),
        "create named",
    );
    let ls = ok(&d.ctr(&["leases", "ls"]), "ls");
    let line = ls
        .lines()
        .find(|l| l.starts_with(id))
        .expect("lease listed");
    assert!(line.contains("purpose=test"), "{ls}");
    assert!(line.contains("containerd.io/gc.expire="), "{ls}");
    assert!(ls.lines().any(|l| l.starts_with("named-lease")), "{ls}");
    let q = ok(
        &d.ctr(&["leases", "ls", "-q", "id==named-lease"]),
        "ls filtered",
    );
    assert_eq!(q.trim(), "named-lease");
    ok(&d.ctr(&["leases", "rm", id, "named-lease"]), "rm");
    assert_eq!(ok(&d.ctr(&["leases", "ls", "-q"]), "ls").trim(), "");
}

#[test]
fn lease_expires_by_label() {
    let d = Daemon::start();
    ok(
        &d.ctr(&["leases", "create", "--expires", "1s", "--id", "short"]),
        "create",
    );
    ok(
        &d.ctr(&["leases", "create", "--expires", "1h", "--id", "long"]),
        "create",
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let q = ok(&d.ctr(&["leases", "ls", "-q"]), "ls");
        if !q.contains("short") {
            assert!(q.contains("long"), "{q}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "lease did not expire:\n{q}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ctr_events_sees_the_other_commands() {
    let d = Daemon::start();
    let mut cmd = Command::new(system_bin("ctr"));
    cmd.arg("--address").arg(&d.address).arg("events");
    let events = Background::spawn(cmd);
    // ctr subscribes asynchronously: publish until it has clearly seen a first event.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    while !events.text().contains("/namespaces/create") {
        assert!(
            std::time::Instant::now() < deadline,
            "ctr events saw nothing:\n{}",
            events.text()
        );
        ok(
            &d.ctr(&["namespaces", "create", &format!("warmup{n}")]),
            "create",
        );
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let rootfs = d.dir.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).expect("rootfs");
    ok(
        &d.ctr(&["namespaces", "create", "evns", "k=v"]),
        "ns create",
    );
    ok(&d.ctr(&["namespaces", "label", "evns", "k=w"]), "ns label");
    ok(
        &d.ctr(&[
            "-n",
            "evns",
            "containers",
            "create",
            "--rootfs",
            rootfs.to_str().expect("utf8"),
            "evc",
            "sh",
        ]),
        "container create",
    );
    ok(
        &d.ctr(&["-n", "evns", "containers", "label", "evc", "x=y"]),
        "container label",
    );
    ok(
        &d.ctr(&["-n", "evns", "containers", "rm", "evc"]),
        "container rm",
    );
    ok(&d.ctr(&["namespaces", "rm", "evns"]), "ns rm");
    let text = events.wait_for(
        &[
            "evns /namespaces/create {\"name\":\"evns\",\"labels\":{\"k\":\"v\"}}",
            "evns /namespaces/update",
            "evns /containers/create {\"id\":\"evc\"",
            "evns /containers/update {\"id\":\"evc\"",
            "evns /containers/delete {\"id\":\"evc\"}",
            "evns /namespaces/delete {\"name\":\"evns\"}",
        ],
        Duration::from_secs(15),
    );
    let order: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" evns /"))
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    assert_eq!(
        order,
        [
            "/namespaces/create",
            "/namespaces/update",
            "/containers/create",
            "/containers/update",
            "/containers/delete",
            "/namespaces/delete"
        ],
        "{text}"
    );

    // Images and content publish their own events from the core: an import (the real ctr
    // creates the image record), an image removal, a blob ingested then removed. The
    // removal collects synchronously: `ctr content ingest` holds no lease, so a collection
    // still pending from the removal could take the new blob before `content rm` does
    // (which then finds nothing to delete, and publishes nothing).
    let work = tempfile::tempdir().expect("tempdir");
    berth_tests::fixtures::import_busybox(work.path(), |a| d.ctr(a));
    ok(
        &d.ctr(&["images", "rm", "--sync", "example.com/busybox:latest"]),
        "images rm",
    );
    let blob = b"an event blob\n";
    let digest = berth_tests::fixtures::sha256_digest(blob);
    let mut ingest = Command::new(system_bin("ctr"))
        .arg("--address")
        .arg(&d.address)
        .args(["content", "ingest", "evblob"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("ctr content ingest");
    std::io::Write::write_all(&mut ingest.stdin.take().expect("stdin"), blob).expect("write");
    assert!(ingest.wait().expect("wait").success(), "ctr content ingest");
    ok(&d.ctr(&["content", "rm", &digest]), "content rm");
    events.wait_for(
        &[
            "default /images/create {\"name\":\"example.com/busybox:latest\"",
            "default /images/delete {\"name\":\"example.com/busybox:latest\"",
            &format!("default /content/delete {{\"digest\":\"{digest}\"}}"),
        ],
        Duration::from_secs(15),
    );
}

#[test]
fn ctr_events_filter() {
    let d = Daemon::start();
    let mut cmd = Command::new(system_bin("ctr"));
    cmd.arg("--address")
        .arg(&d.address)
        .arg("events")
        .arg("topic==\"/namespaces/delete\"");
    let events = Background::spawn(cmd);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    while !events.text().contains("/namespaces/delete") {
        assert!(
            std::time::Instant::now() < deadline,
            "no event:\n{}",
            events.text()
        );
        let name = format!("f{n}");
        ok(&d.ctr(&["namespaces", "create", &name]), "create");
        ok(&d.ctr(&["namespaces", "rm", &name]), "rm");
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !events.text().contains("/namespaces/create"),
        "filter let through:\n{}",
        events.text()
    );
}
