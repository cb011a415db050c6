//! The same flows through our `berth` CLI.

use std::process::Command;
use std::time::Duration;

use berth_tests::{Background, Daemon, bin, fails, minimal_spec, ok};

#[test]
fn version_and_plugins() {
    let d = Daemon::start();
    let out = ok(&d.berth(&["version"]), "berth version");
    assert!(
        out.contains("Server:") && out.contains(&format!("v{}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&d.berth(&["--format", "json", "version"]), "json"))
            .expect("json");
    assert_eq!(json["server"]["uuid"].as_str().map(str::len), Some(36));
    let plugins = ok(&d.berth(&["plugins", "ls"]), "plugins");
    assert!(plugins.starts_with("TYPE"), "{plugins}");
    assert!(
        plugins.contains("io.containerd.grpc.v1") && plugins.contains("namespaces"),
        "{plugins}"
    );
    let q = ok(
        &d.berth(&["plugins", "ls", "-q", "id==leases"]),
        "plugins -q",
    );
    assert_eq!(q.trim(), "io.containerd.grpc.v1.leases");
}

#[test]
fn namespaces_flow() {
    let d = Daemon::start();
    ok(&d.berth(&["namespaces", "create", "one", "a=b"]), "create");
    ok(&d.berth(&["ns", "create", "two"]), "create");
    let ls = ok(&d.berth(&["namespaces", "ls"]), "ls");
    assert!(
        ls.lines()
            .any(|l| l.starts_with("one") && l.contains("a=b")),
        "{ls}"
    );
    assert_eq!(
        ok(&d.berth(&["namespace", "label", "two", "x=y"]), "label").trim(),
        "x=y"
    );
    assert_eq!(
        ok(&d.berth(&["namespaces", "label", "one", "a="]), "unlabel").trim(),
        "-"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&d.berth(&["--format", "json", "ns", "ls"]), "json"))
            .expect("json");
    assert_eq!(json[1]["name"], "two");
    assert_eq!(json[1]["labels"]["x"], "y");
    let dup = fails(&d.berth(&["namespaces", "create", "one"]), "duplicate");
    assert!(dup.contains("namespace \"one\": already exists"), "{dup}");
    let bad = fails(
        &d.berth(&["namespaces", "create", "Not Valid"]),
        "invalid name",
    );
    assert!(bad.contains("must match"), "{bad}");
    ok(&d.berth(&["namespaces", "rm", "one", "two"]), "rm");
    assert_eq!(ok(&d.berth(&["namespaces", "ls", "-q"]), "ls").trim(), "");
    let missing = fails(&d.berth(&["namespaces", "rm", "one"]), "rm missing");
    assert!(
        missing.contains("namespace \"one\": not found"),
        "{missing}"
    );
}

#[test]
fn containers_flow_and_namespace_env() {
    let d = Daemon::start();
    let spec = d.dir.path().join("config.json");
    std::fs::write(&spec, minimal_spec()).expect("spec");
    let s = spec.to_str().expect("utf8");
    ok(
        &d.berth(&[
            "-n",
            "apps",
            "containers",
            "create",
            "--spec",
            s,
            "--label",
            "app=web",
            "web",
        ]),
        "create",
    );
    ok(
        &d.berth(&[
            "-n", "apps", "c", "create", "--spec", s, "--image", "busybox", "db",
        ]),
        "create",
    );
    let ls = ok(&d.berth(&["-n", "apps", "containers", "ls"]), "ls");
    assert!(ls.starts_with("CONTAINER"), "{ls}");
    assert!(
        ls.lines()
            .any(|l| l.starts_with("db") && l.contains("busybox")),
        "{ls}"
    );
    // BERTH_NAMESPACE selects the namespace too.
    let out = Command::new(bin("berth"))
        .arg("-a")
        .arg(&d.address)
        .args(["containers", "ls", "-q", "labels.app==web"])
        .env("BERTH_NAMESPACE", "apps")
        .output()
        .expect("run");
    assert_eq!(ok(&out, "ls with env").trim(), "web");
    let info: serde_json::Value = serde_json::from_str(&ok(
        &d.berth(&["-n", "apps", "containers", "info", "web"]),
        "info",
    ))
    .expect("json");
    assert_eq!(info["ID"], "web");
    assert_eq!(info["Spec"]["process"]["args"][0], "/bin/sh");
    assert_eq!(
        ok(
            &d.berth(&["-n", "apps", "containers", "label", "web", "tier=1"]),
            "label"
        )
        .trim(),
        "app=web,tier=1"
    );
    // Nothing in the default namespace.
    assert_eq!(
        ok(&d.berth(&["containers", "ls", "-q"]), "ls default").trim(),
        ""
    );
    let held = fails(&d.berth(&["namespaces", "rm", "apps"]), "rm busy namespace");
    assert!(
        held.contains("must be empty, but it still has containers"),
        "{held}"
    );
    ok(
        &d.berth(&["-n", "apps", "containers", "rm", "web", "db"]),
        "rm",
    );
    let missing = fails(
        &d.berth(&["-n", "apps", "containers", "rm", "web"]),
        "rm missing",
    );
    assert!(missing.contains("not found"), "{missing}");
    let badspec = d.dir.path().join("bad.json");
    std::fs::write(&badspec, "{not json").expect("write");
    let err = fails(
        &d.berth(&[
            "containers",
            "create",
            "--spec",
            badspec.to_str().expect("utf8"),
            "x",
        ]),
        "bad spec",
    );
    assert!(err.contains("not valid JSON"), "{err}");
}

#[test]
fn leases_flow() {
    let d = Daemon::start();
    let id = ok(
        &d.berth(&["leases", "create", "--label", "who=me"]),
        "create",
    );
    ok(
        &d.berth(&["leases", "create", "-x", "0s", "mine"]),
        "create named",
    );
    let ls = ok(&d.berth(&["leases", "ls"]), "ls");
    assert!(
        ls.lines().any(|l| l.starts_with(id.trim())
            && l.contains("who=me")
            && l.contains("containerd.io/gc.expire")),
        "{ls}"
    );
    let digest = format!("sha256:{}", "a".repeat(64));
    ok(
        &d.berth(&["leases", "add-resource", "mine", "content", &digest]),
        "add resource",
    );
    let res = ok(&d.berth(&["leases", "resources", "mine"]), "resources");
    assert!(res.contains(&digest), "{res}");
    ok(
        &d.berth(&["leases", "delete-resource", "mine", "content", &digest]),
        "delete resource",
    );
    ok(&d.berth(&["leases", "rm", id.trim(), "mine"]), "rm");
    assert_eq!(ok(&d.berth(&["leases", "ls", "-q"]), "ls").trim(), "");
}

#[test]
fn events_stream() {
    let d = Daemon::start();
    let mut cmd = Command::new(bin("berth"));
    cmd.arg("-a")
        .arg(&d.address)
        .args(["events", "topic~=\"^/namespaces/\""]);
    let events = Background::spawn(cmd);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    while !events.text().contains("/namespaces/create") {
        assert!(
            std::time::Instant::now() < deadline,
            "berth events saw nothing:\n{}",
            events.text()
        );
        ok(&d.berth(&["ns", "create", &format!("w{n}")]), "create");
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    ok(&d.berth(&["ns", "create", "seen", "k=v"]), "create");
    let spec = d.dir.path().join("config.json");
    std::fs::write(&spec, minimal_spec()).expect("spec");
    ok(
        &d.berth(&[
            "-n",
            "seen",
            "c",
            "create",
            "--spec",
            spec.to_str().expect("utf8"),
            "c",
        ]),
        "container",
    );
    ok(&d.berth(&["-n", "seen", "c", "rm", "c"]), "container rm");
    ok(&d.berth(&["ns", "rm", "seen"]), "rm");
    let text = events.wait_for(
        &[
            "seen /namespaces/create {\"labels\":{\"k\":\"v\"},\"name\":\"seen\"}",
            "seen /namespaces/delete",
        ],
        Duration::from_secs(15),
    );
    assert!(
        !text.contains("/containers/"),
        "filter let container events through:\n{text}"
    );
}
