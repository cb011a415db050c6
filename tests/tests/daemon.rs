//! berthd as a process: configuration, sockets, the root lock, signals.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::time::Duration;

use berth_proto::containerd::services::events::v1 as epb;
use berth_proto::containerd::services::events::v1::events_client::EventsClient;
use berth_tests::{Background, Daemon, bin, fails, ok, system_bin};

#[test]
fn config_default_is_the_deployed_config_and_parses() {
    let out = Command::new(bin("berthd"))
        .args(["config", "default"])
        .output()
        .expect("run");
    let text = ok(&out, "berthd config default");
    let deployed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/config.toml"
    ))
    .expect("deploy/config.toml");
    assert_eq!(
        text, deployed,
        "deploy/config.toml differs from `berthd config default`"
    );
    for key in [
        "root = \"/var/lib/berth\"",
        "state = \"/run/berth\"",
        "address = \"/run/berth/berth.sock\"",
        "[runtimes.\"io.containerd.runc.v2\"]",
        "config_path",
    ] {
        assert!(text.contains(key), "{key} missing from:\n{text}");
    }
}

#[test]
fn bad_config_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "root = 5\n").expect("write");
    let out = Command::new(bin("berthd"))
        .arg("--config")
        .arg(&cfg)
        .args(["config", "dump"])
        .output()
        .expect("run");
    let err = fails(&out, "berthd with a bad config");
    assert!(err.contains(&cfg.display().to_string()), "{err}");
    let missing = Command::new(bin("berthd"))
        .args(["--config", "/nonexistent/berth.toml", "config", "dump"])
        .output()
        .expect("run");
    let err = fails(&missing, "berthd with a missing config");
    assert!(err.contains("/nonexistent/berth.toml"), "{err}");
    let rel = Command::new(bin("berthd"))
        .args(["--root", "relative/dir", "config", "dump"])
        .output()
        .expect("run");
    let err = fails(&rel, "berthd with a relative root");
    assert!(err.contains("absolute"), "{err}");
}

#[test]
fn starts_without_any_config_file() {
    let dir = tempfile::Builder::new()
        .prefix("berth-test-")
        .tempdir_in("/tmp")
        .expect("tmp");
    let sock = dir.path().join("s.sock");
    let mut child = Command::new(bin("berthd"))
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg("--address")
        .arg(&sock)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("berthd did not start without a config file");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = Command::new(system_bin("ctr"))
        .arg("-a")
        .arg(&sock)
        .arg("version")
        .output()
        .expect("ctr");
    let _ = child.kill();
    let _ = child.wait();
    ok(&out, "ctr version");
}

#[test]
fn sockets_lock_and_clean_shutdown() {
    let mut d = Daemon::start();
    let meta = std::fs::metadata(&d.address).expect("socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660, "gRPC socket mode");
    let ttrpc = d.address.with_extension("sock.ttrpc");
    let tmeta = std::fs::metadata(&ttrpc).expect("ttrpc socket");
    assert!(tmeta.file_type().is_socket());
    assert_eq!(
        tmeta.permissions().mode() & 0o777,
        0o660,
        "ttrpc socket mode"
    );
    assert!(d.root.join("meta.redb").exists());

    // A second daemon on the same root refuses to start, and says why.
    let second = d.run_second();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "second berthd started");
    assert!(
        err.contains("another berthd") && err.contains(&d.root.display().to_string()),
        "{err}"
    );
    // The first one is unharmed.
    ok(&d.ctr(&["version"]), "ctr version");

    // SIGTERM with a streaming client attached: berthd still exits 0 promptly, sockets gone.
    let mut events = Command::new(system_bin("ctr"));
    events.arg("-a").arg(&d.address).arg("events");
    let _events = Background::spawn(events);
    std::thread::sleep(Duration::from_millis(300));
    let status = d.stop();
    assert!(
        status.success(),
        "berthd exit status {status}:\n{}",
        d.log_text()
    );
    assert!(!d.address.exists(), "gRPC socket left behind");
    assert!(!ttrpc.exists(), "ttrpc socket left behind");
    assert!(d.log_text().contains("berthd stopped"), "{}", d.log_text());
}

#[test]
fn stale_socket_after_a_crash_is_replaced() {
    let mut d = Daemon::start();
    d.kill9();
    assert!(d.address.exists(), "kill -9 leaves the socket file");
    d.restart();
    ok(&d.ctr(&["version"]), "ctr version after restart");
}

#[tokio::test]
async fn ttrpc_forward_reaches_grpc_subscribers() {
    use berth_proto::ttrpc::protobuf::MessageField;
    use berth_proto::ttrpc::protobuf::well_known_types::{any::Any, timestamp::Timestamp};
    use berth_proto::ttrpc::shim::event::Envelope;
    use berth_proto::ttrpc::ttrpc::context;

    let d = Daemon::start();
    let mut sub = EventsClient::new(d.channel().await)
        .subscribe(epb::SubscribeRequest {
            filters: vec!["namespace==shimns".into()],
        })
        .await
        .expect("subscribe")
        .into_inner();

    let addr = format!("unix://{}.ttrpc", d.address.display());
    let client = berth_proto::ttrpc::shim_async::Client::connect(&addr)
        .await
        .expect("ttrpc connect");
    let events = berth_proto::ttrpc::shim_async::EventsClient::new(client);
    let exit = berth_proto::containerd::events::TaskExit {
        container_id: "c1".into(),
        id: "c1".into(),
        pid: 42,
        exit_status: 3,
        exited_at: None,
    };
    let mut env = Envelope::new();
    env.timestamp = MessageField::some(Timestamp {
        seconds: 1_700_000_000,
        nanos: 5,
        ..Default::default()
    });
    env.namespace = "shimns".into();
    env.topic = "/tasks/exit".into();
    env.event = MessageField::some(Any {
        type_url: "containerd.events.TaskExit".into(),
        value: prost::Message::encode_to_vec(&exit),
        ..Default::default()
    });
    let mut req = berth_proto::ttrpc::api::ForwardRequest::new();
    req.envelope = MessageField::some(env.clone());
    events
        .forward(context::with_timeout(5_000_000_000), &req)
        .await
        .expect("forward");

    let got = tokio::time::timeout(Duration::from_secs(10), sub.message())
        .await
        .expect("event in time")
        .expect("stream")
        .expect("event");
    assert_eq!(got.topic, "/tasks/exit");
    assert_eq!(got.namespace, "shimns");
    assert_eq!(
        got.timestamp.expect("ts").seconds,
        1_700_000_000,
        "forward must keep the shim's timestamp"
    );
    let any = got.event.expect("payload");
    let decoded: berth_proto::containerd::events::TaskExit =
        prost::Message::decode(any.value.as_slice()).expect("decode");
    assert_eq!(decoded.exit_status, 3);

    // A bad envelope is refused with InvalidArgument.
    let mut bad = env;
    bad.topic = "no-slash".into();
    let mut req = berth_proto::ttrpc::api::ForwardRequest::new();
    req.envelope = MessageField::some(bad);
    let err = events
        .forward(context::with_timeout(5_000_000_000), &req)
        .await
        .expect_err("bad topic");
    assert!(err.to_string().contains("must start with '/'"), "{err}");
}

/// `--log-level debug` is berth's own debug, as containerd's is: berthd's debug lines
/// (an event published) are there, the HTTP/2 stack's frames are not; a directive that
/// names the HTTP/2 crate brings them back.
#[test]
fn debug_level_leaves_the_wire_frames_out() {
    let d = Daemon::start();
    ok(&d.ctr(&["namespaces", "create", "loglevel"]), "ns create");
    let log = d.log_text();
    assert!(
        log.contains("DEBUG") && log.contains("/namespaces/create"),
        "berthd's own debug lines are missing:\n{log}"
    );
    assert!(
        !log.contains("h2::"),
        "HTTP/2 frames logged at a bare debug level:\n{log}"
    );

    let framed = Daemon::start_with(&["--log-level", "debug,h2=debug"]);
    ok(&framed.ctr(&["namespaces", "ls"]), "ns ls");
    assert!(
        framed.log_text().contains("h2::"),
        "the h2=debug directive did not reach the HTTP/2 stack:\n{}",
        framed.log_text()
    );
}
