//! What a fault, load and hostile-input probe broke, each reproduced.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::fixtures::{BUSYBOX_REF, import_busybox};
use berth_tests::{bin, clean_up_after, ok, system_bin};

/// berthd on temp paths with its stdout and stderr going where the test says.
struct Berthd {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Berthd {
    fn new() -> Berthd {
        Berthd {
            dir: tempfile::Builder::new()
                .prefix("berth-hard-")
                .tempdir_in("/tmp")
                .expect("tempdir"),
            child: None,
        }
    }

    fn address(&self) -> PathBuf {
        self.dir.path().join("state/berth.sock")
    }

    fn spawn(&mut self, stdout: Stdio, stderr: Stdio) {
        let shim_dir = bin("containerd-shim-berth-v2")
            .parent()
            .expect("bin dir")
            .to_path_buf();
        let path = std::env::var("PATH").unwrap_or_default();
        let child = Command::new(bin("berthd"))
            .arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--state")
            .arg(self.dir.path().join("state"))
            .arg("--address")
            .arg(self.address())
            .args(["--log-level", "debug"])
            .env("PATH", format!("{}:{path}", shim_dir.display()))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn berthd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("berthd exited during start-up: {status}");
            }
            if std::os::unix::net::UnixStream::connect(self.address()).is_ok()
                && self.ctr(&["version"]).status.success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "berthd did not serve within 20s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ctr(&self, args: &[&str]) -> std::process::Output {
        Command::new(system_bin("ctr"))
            .arg("--address")
            .arg(self.address())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    }

    /// SIGTERM; the exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "berthd did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Berthd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        clean_up_after(self.dir.path());
    }
}

fn dev_full() -> Stdio {
    Stdio::from(
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full"),
    )
}

/// The write end of a pipe whose reader is already gone (journald restarted).
fn widowed_pipe() -> Stdio {
    let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe().expect("pipe");
    drop(r);
    Stdio::from(w)
}

fn content_count(d: &Berthd, ns: &str) -> usize {
    ok(&d.ctr(&["-n", ns, "content", "ls", "-q"]), "content ls")
        .lines()
        .count()
}

/// Item 3: a log that cannot be written never takes berthd down, nor any part of it.
#[test]
fn berthd_survives_a_log_it_cannot_write() {
    for (what, make) in [
        ("/dev/full", dev_full as fn() -> Stdio),
        ("a pipe without a reader", widowed_pipe),
    ] {
        let mut d = Berthd::new();
        d.spawn(make(), make());
        let work = tempfile::tempdir().expect("tempdir");
        import_busybox(work.path(), |a| {
            let mut args = vec!["-n", "logs"];
            args.extend_from_slice(a);
            d.ctr(&args)
        });
        // Requests that log errors are answered with the error, not a reset.
        let missing = d.ctr(&["-n", "logs", "containers", "info", "nosuch"]);
        assert!(!missing.status.success());
        assert!(
            String::from_utf8_lossy(&missing.stderr).contains("not found"),
            "{what}: {}",
            String::from_utf8_lossy(&missing.stderr)
        );
        // A live task, kept across a restart with the same broken log.
        let fifo = work.path().join("fifo");
        let fifo = fifo.display().to_string();
        ok(
            &d.ctr(&[
                "-n",
                "logs",
                "run",
                "-d",
                "--fifo-dir",
                &fifo,
                BUSYBOX_REF,
                "live",
                "sleep",
                "300",
            ]),
            "ctr run -d",
        );
        let status = d.stop();
        assert!(
            status.success(),
            "{what}: SIGTERM ended berthd with {status}"
        );
        d.spawn(make(), make());
        let tasks = ok(&d.ctr(&["-n", "logs", "tasks", "ls"]), "tasks ls");
        assert!(
            tasks
                .lines()
                .any(|l| l.starts_with("live") && l.contains("RUNNING")),
            "{what}: {tasks}"
        );
        ok(
            &d.ctr(&["-n", "logs", "tasks", "kill", "-s", "KILL", "live"]),
            "kill",
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ok(&d.ctr(&["-n", "logs", "tasks", "ls"]), "tasks ls").contains("STOPPED") {
            assert!(Instant::now() < deadline, "{what}: task did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        ok(&d.ctr(&["-n", "logs", "tasks", "rm", "live"]), "tasks rm");
        ok(
            &d.ctr(&["-n", "logs", "containers", "rm", "live"]),
            "containers rm",
        );
        // The garbage collector still runs: the image's blobs go with it.
        assert!(content_count(&d, "logs") > 0);
        ok(
            &d.ctr(&["-n", "logs", "images", "rm", "--sync", BUSYBOX_REF]),
            "images rm --sync",
        );
        assert_eq!(content_count(&d, "logs"), 0, "{what}: blobs not collected");
        assert!(d.alive(), "{what}: berthd died");
        let status = d.stop();
        assert!(
            status.success(),
            "{what}: SIGTERM ended berthd with {status}"
        );
    }
}

/// Item 3 (CLI): `berth … | head` ends quietly when the reader goes away.
#[test]
fn cli_output_into_a_closed_pipe_is_no_panic() {
    let mut d = Berthd::new();
    d.spawn(Stdio::null(), Stdio::null());
    for i in 0..200 {
        ok(
            &d.ctr(&["namespaces", "create", &format!("ns{i}")]),
            "create",
        );
    }
    let out = Command::new(bin("berth"))
        .arg("--address")
        .arg(d.address())
        .args(["namespaces", "ls"])
        .stdout(widowed_pipe())
        .stderr(Stdio::piped())
        .output()
        .expect("run berth");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert!(
        out.status.success() || out.status.signal() == Some(13),
        "berth ended with {} on a closed pipe: {stderr}",
        out.status
    );
    // berthd's own printing too.
    let out = Command::new(bin("berthd"))
        .args(["config", "default"])
        .stdout(widowed_pipe())
        .stderr(Stdio::piped())
        .output()
        .expect("run berthd config default");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("panicked"),
        "{} {stderr}",
        out.status
    );
}

/// A real unprivileged user, made for one test and removed after it.
struct User(String);

impl User {
    fn create() -> User {
        let name = format!("berthu{}", std::process::id() % 100_000);
        let _ = Command::new("userdel").arg(&name).output();
        ok(
            &Command::new("useradd")
                .args(["--no-create-home", "--shell", "/bin/sh", &name])
                .output()
                .expect("useradd"),
            "useradd",
        );
        User(name)
    }

    /// Runs `sh -c script` as this user; whether it succeeded.
    fn can(&self, script: &str) -> bool {
        Command::new("runuser")
            .args(["-u", &self.0, "--", "sh", "-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("runuser")
            .success()
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.0).output();
    }
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Item 1: an unprivileged local user reaches no container's data (containerd's
/// CVE-2021-41103 class): no ids, no config.json, no rootfs, no snapshots, no metadata.
#[test]
fn unprivileged_users_reach_no_container_data() {
    let mut d = berth_tests::Daemon::start();
    let work = tempfile::tempdir().expect("tempdir");
    import_busybox(work.path(), |a| d.ctr(a));
    let fifo = work.path().join("fifo").display().to_string();
    ok(
        &d.ctr(&[
            "run",
            "-d",
            "--fifo-dir",
            &fifo,
            "--env",
            "SECRET_TOKEN=hunter2",
            BUSYBOX_REF,
            "sec",
            "sleep",
            "300",
        ]),
        "ctr run -d",
    );
    let user = User::create();
    let bundle = d.state.join("tasks/default/sec");
    let rootfs = bundle.join("rootfs");
    assert!(rootfs.join("tmp").is_dir(), "the rootfs is mounted");
    let p = |p: &std::path::Path| p.display().to_string();
    // The root and the state stay traversable (sockets); nothing below them is open.
    assert!(user.can(&format!("test -x {}", p(&d.state))));
    for (what, script) in [
        ("list task ids", format!("ls {}", p(&d.state.join("tasks")))),
        (
            "list the namespace's tasks",
            format!("ls {}", p(&d.state.join("tasks/default"))),
        ),
        (
            "read config.json",
            format!("cat {}", p(&bundle.join("config.json"))),
        ),
        (
            "write into the rootfs",
            format!("touch {}", p(&rootfs.join("tmp/pwned"))),
        ),
        ("list the rootfs", format!("ls {}", p(&rootfs))),
        (
            "list snapshots",
            format!("ls {}", p(&d.root.join("snapshots/overlayfs/snapshots"))),
        ),
        (
            "list content",
            format!("ls {}", p(&d.root.join("content/blobs/sha256"))),
        ),
        (
            "read the metadata",
            format!("cat {}", p(&d.root.join("meta.redb"))),
        ),
        (
            "list runc state",
            format!("ls {}", p(&d.state.join("runc"))),
        ),
        ("list shim sockets", format!("ls {}", p(&d.state.join("s")))),
        (
            "list transfer files",
            format!("ls {}", p(&d.state.join("transfer"))),
        ),
        ("read the root", format!("ls {}", p(&d.root))),
    ] {
        assert!(
            !user.can(&script),
            "an unprivileged user can {what}: {script}"
        );
    }
    assert_eq!(mode(&d.state.join("tasks")), 0o700);
    assert_eq!(mode(&d.root.join("meta.redb")), 0o600);

    // A root or state left open by an older berthd is closed at the next start.
    use std::os::unix::fs::PermissionsExt;
    for dir in [d.state.join("tasks"), d.root.join("snapshots")] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    d.restart();
    assert_eq!(mode(&d.state.join("tasks")), 0o700);
    assert_eq!(mode(&d.root.join("snapshots")), 0o700);
    let tasks = ok(&d.ctr(&["tasks", "ls"]), "tasks ls");
    assert!(tasks.contains("RUNNING"), "{tasks}");
    ok(&d.ctr(&["tasks", "kill", "-s", "KILL", "sec"]), "kill");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok(&d.ctr(&["tasks", "ls"]), "tasks ls").contains("STOPPED") {
        assert!(Instant::now() < deadline, "task did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    ok(&d.ctr(&["tasks", "rm", "sec"]), "tasks rm");
    ok(&d.ctr(&["containers", "rm", "sec"]), "containers rm");
}

/// Item 7: many short streams that the client resets before berthd took them (as a pull of
/// thousands of layers through ctr does) do not make berthd drop the connection. Spoken
/// as raw HTTP/2 frames: a burst of HEADERS + RST_STREAM pairs, then one real call.
#[test]
fn streams_reset_early_do_not_close_the_connection() {
    use std::io::{Read, Write};
    let d = berth_tests::Daemon::start();
    let mut sock = std::os::unix::net::UnixStream::connect(&d.address).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }
    // HPACK "literal without indexing, new name", no Huffman: enough for a request.
    fn headers(path: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ] {
            out.push(0);
            out.push(n.len() as u8);
            out.extend_from_slice(n.as_bytes());
            out.push(v.len() as u8);
            out.extend_from_slice(v.as_bytes());
        }
        out
    }
    const HEADERS: u8 = 1;
    const RST_STREAM: u8 = 3;
    const GOAWAY: u8 = 7;
    const END_HEADERS: u8 = 4;
    const END_STREAM: u8 = 1;
    let path = "/containerd.services.version.v1.Version/Version";
    let mut burst = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    burst.extend(frame(4, 0, 0, &[]));
    let mut stream = 1u32;
    for _ in 0..500 {
        burst.extend(frame(HEADERS, END_HEADERS, stream, &headers(path)));
        burst.extend(frame(RST_STREAM, 0, stream, &8u32.to_be_bytes())); // CANCEL
        stream += 2;
    }
    // Then one real call: an empty Version request.
    burst.extend(frame(HEADERS, END_HEADERS, stream, &headers(path)));
    burst.extend(frame(0, END_STREAM, stream, &[0, 0, 0, 0, 0]));
    sock.write_all(&burst).expect("send");

    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no answer to the call");
        let n = sock.read(&mut buf).unwrap_or(0);
        assert!(n > 0, "berthd closed the connection:\n{}", d.log_text());
        got.extend_from_slice(&buf[..n]);
        // Walk the frames: GOAWAY fails, a HEADERS answer on the last stream passes.
        let mut rest = got.as_slice();
        let mut answered = false;
        while rest.len() >= 9 {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            if rest.len() < 9 + len {
                break;
            }
            let id = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff;
            assert_ne!(rest[3], GOAWAY, "berthd sent GOAWAY:\n{}", d.log_text());
            if rest[3] == HEADERS && id == stream {
                answered = true;
            }
            rest = &rest[9 + len..];
        }
        if answered {
            break;
        }
    }
}

/// Item 9: a spec without `linux.namespaces` puts runc's mounts in the host's mount
/// namespace; deleting the task unmounts them all, and a bundle left with mounts in it
/// never wedges the container id.
#[test]
fn a_container_without_namespaces_leaves_no_mounts_and_no_wedged_id() {
    let d = berth_tests::Daemon::start();
    let work = tempfile::tempdir().expect("tempdir");
    import_busybox(work.path(), |a| d.ctr(a));
    ok(
        &d.ctr(&["containers", "create", BUSYBOX_REF, "nons", "sleep", "300"]),
        "ctr containers create",
    );
    // The same container without linux.namespaces (ctr cannot say that; the API can).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        use berth_proto::containerd::services::containers::v1 as cpb;
        use berth_proto::containerd::services::containers::v1::containers_client::ContainersClient;
        let mut api = ContainersClient::new(d.channel().await);
        let mut c = api
            .get(berth_tests::in_ns(
                "default",
                cpb::GetContainerRequest { id: "nons".into() },
            ))
            .await
            .expect("get")
            .into_inner()
            .container
            .expect("container");
        let spec = c.spec.as_mut().expect("spec");
        let mut json: serde_json::Value = serde_json::from_slice(&spec.value).expect("spec json");
        let linux = json["linux"].as_object_mut().expect("linux");
        // runc needs a mount namespace to mask paths: those go too.
        for key in ["namespaces", "maskedPaths", "readonlyPaths"] {
            linux.remove(key);
        }
        spec.value = json.to_string().into_bytes();
        api.update(berth_tests::in_ns(
            "default",
            cpb::UpdateContainerRequest {
                container: Some(c),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["spec".into()],
                }),
            },
        ))
        .await
        .expect("update spec");
    });
    let fifo = work.path().join("fifo").display().to_string();
    let bundle = d.state.join("tasks/default/nons");

    let stop = |id: &str| {
        ok(&d.ctr(&["tasks", "kill", "-s", "KILL", id]), "kill");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ok(&d.ctr(&["tasks", "ls"]), "tasks ls").contains("STOPPED") {
            assert!(Instant::now() < deadline, "task did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        ok(&d.ctr(&["tasks", "rm", id]), "tasks rm");
    };
    ok(
        &d.ctr(&["tasks", "start", "-d", "--fifo-dir", &fifo, "nons"]),
        "start a task without namespaces",
    );
    assert!(
        berth_tests::mounts_under(&bundle).len() > 1,
        "runc's mounts are in the host namespace: {:?}",
        berth_tests::mounts_under(&bundle)
    );
    stop("nons");
    assert_eq!(berth_tests::mounts_under(&bundle), Vec::<String>::new());
    assert!(!bundle.exists(), "bundle {} left", bundle.display());

    // A leftover bundle with mounts in it (what a crash at the wrong moment leaves): the
    // next task of that id is created all the same, and the leftover is gone.
    let dev = bundle.join("rootfs/dev");
    std::fs::create_dir_all(&dev).expect("mkdir");
    ok(
        &Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&dev)
            .output()
            .expect("mount"),
        "mount tmpfs",
    );
    ok(
        &d.ctr(&["tasks", "start", "-d", "--fifo-dir", &fifo, "nons"]),
        "task start again",
    );
    stop("nons");
    assert_eq!(berth_tests::mounts_under(&bundle), Vec::<String>::new());
    ok(&d.ctr(&["containers", "rm", "nons"]), "containers rm");
}

/// Shim processes with `-id id` in their command line.
fn shim_pids(id: &str) -> Vec<u32> {
    berth_tests::shim_processes()
        .into_iter()
        .filter(|(_, args)| args.windows(2).any(|w| w[0] == "-id" && w[1] == id))
        .map(|(pid, _)| pid as u32)
        .collect()
}

/// Item 6: a shim whose daemon died before it read the shim's log FIFO (kill -9 during
/// `ctr run -d`) neither hangs in open(2) forever nor lingers: its `start` returns, and the
/// daemon's next start ends the shim, which serves no task.
#[test]
fn a_shim_left_by_a_crash_is_ended_at_restart() {
    let mut d = berth_tests::Daemon::start();
    let bundle = tempfile::tempdir().expect("bundle");
    let id = format!("orphan{}", std::process::id());
    std::fs::write(bundle.path().join("config.json"), "{}").expect("config");
    // The log FIFO as berthd makes it, but nobody reads it: berthd is "gone".
    nix::unistd::mkfifo(
        &bundle.path().join("log"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("mkfifo");
    let mut start = Command::new(bin("containerd-shim-berth-v2"))
        .args(["-namespace", "default", "-id", &id, "-address"])
        .arg(&d.address)
        .args(["-publish-binary", "/bin/true", "start"])
        .current_dir(bundle.path())
        .env("TTRPC_ADDRESS", d.state.join("berth.sock.ttrpc"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("shim start");
    let deadline = Instant::now() + Duration::from_secs(15);
    while start.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = start.kill();
            for pid in shim_pids(&id) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            panic!("shim start hangs on a log FIFO nobody reads");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!shim_pids(&id).is_empty(), "the shim serves");
    d.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !shim_pids(&id).is_empty() {
        assert!(
            Instant::now() < deadline,
            "berthd's restart left the orphan shim running:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Item 2: a full disk fails the writes that meet it with RESOURCE_EXHAUSTED, and once
/// space is freed the next writes work again (the database is reopened by itself).
#[test]
fn metadata_writes_recover_after_the_disk_was_full() {
    use berth_proto::containerd::services::namespaces::v1 as npb;
    use berth_proto::containerd::services::namespaces::v1::namespaces_client::NamespacesClient;
    use std::io::Write;

    let disk = berth_tests::SmallDisk::mount("48m");
    let d = berth_tests::Daemon::start_in(disk.base());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut api = NamespacesClient::new(d.channel().await);
        let create = |i: usize| npb::CreateNamespaceRequest {
            namespace: Some(npb::Namespace {
                name: format!("ns{i}"),
                labels: (0..8)
                    .map(|k| (format!("k{k}"), "v".repeat(4000)))
                    .collect(),
            }),
        };
        // Fill the disk with a plain file, leaving the database no room to grow.
        let filler = disk.path().join("filler");
        {
            let mut f = std::fs::File::create(&filler).expect("filler");
            let block = vec![0u8; 1 << 20];
            while f.write_all(&block).is_ok() {}
            let _ = f.sync_all();
        }
        let mut refused = None;
        for i in 0..2000 {
            if let Err(status) = api.create(create(i)).await {
                refused = Some(status);
                break;
            }
        }
        let status = refused.expect("a write on a full disk failed");
        assert_eq!(
            status.code(),
            tonic::Code::ResourceExhausted,
            "{}",
            status.message()
        );
        // Space again: writes work without a restart.
        std::fs::remove_file(&filler).expect("free the space");
        api.create(create(100_000)).await.unwrap_or_else(|s| {
            panic!(
                "write after freeing space: {}\n{}",
                s.message(),
                d.log_text()
            )
        });
        let listed = api
            .list(npb::ListNamespacesRequest::default())
            .await
            .expect("list")
            .into_inner()
            .namespaces;
        assert!(listed.iter().any(|n| n.name == "ns100000"));
        assert!(
            d.log_text()
                .contains("reopening the metadata database after an I/O error"),
            "the failed commit did not poison the database, so this test tested nothing:\n{}",
            d.log_text()
        );
    });
    drop(d);
}
