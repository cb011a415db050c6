//! The docker-style verbs of `berth` against a real berthd with containerd-shim-berth-v2
//! and runc: run (foreground, detached, flags, errors), ps, logs, stop, kill, rm, inspect,
//! rename, pause, wait.

use std::io::{Read, Write};
use std::process::Output;
use std::time::{Duration, Instant};

use berth_tests::fixtures::{free_port, import_busybox};
use berth_tests::{Daemon, fails, ok};

const IMAGE: &str = "example.com/busybox:latest";

struct Env {
    d: Daemon,
    _work: tempfile::TempDir,
}

impl Env {
    fn start() -> Env {
        let d = Daemon::start();
        let work = tempfile::tempdir().expect("tempdir");
        import_busybox(work.path(), |a| d.ctr(a));
        Env { d, _work: work }
    }

    fn berth(&self, args: &[&str]) -> Output {
        self.d.berth(args)
    }

    fn ok(&self, args: &[&str]) -> String {
        ok(&self.berth(args), &format!("berth {args:?}"))
    }

    /// `berth run --rm IMAGE <args>`'s stdout (must succeed).
    fn run(&self, opts: &[&str], cmd: &[&str]) -> String {
        let mut args = vec!["run", "--rm"];
        args.extend(opts);
        args.push(IMAGE);
        args.extend(cmd);
        self.ok(&args)
    }

    fn ps_row(&self, all: bool, name: &str) -> Option<String> {
        let args: &[&str] = if all { &["ps", "-a"] } else { &["ps"] };
        self.ok(args)
            .lines()
            .find(|l| l.split_whitespace().last() == Some(name))
            .map(str::to_string)
    }

    fn wait_for(&self, what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn snapshot_count(&self) -> usize {
        ok(&self.d.ctr(&["snapshots", "ls"]), "ctr snapshots ls")
            .lines()
            .count()
    }
}

impl Drop for Env {
    /// No container or shim outlives the test.
    fn drop(&mut self) {
        let out = self.berth(&["ps", "-a", "-q", "--no-trunc"]);
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = self.berth(&["rm", "-f", id]);
        }
    }
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

#[test]
fn foreground_run_output_exit_codes_and_flags() {
    let env = Env::start();
    assert_eq!(env.run(&[], &["echo", "hello"]), "hello\n");

    let out = env.berth(&[
        "run",
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(code(&out), Some(3), "{out:?}");
    // stdout and stderr stay apart: the shim tags each line in the CRI log.
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(stdout, "out\n", "{out:?}");
    assert_eq!(stderr, "err\n", "{out:?}");

    // The image's config: PATH, cwd /, root.
    let env_out = env.run(&["-e", "FOO=bar", "-e", "PATH=/usr/bin:/bin"], &["env"]);
    assert!(env_out.lines().any(|l| l == "FOO=bar"), "{env_out}");
    assert!(
        env_out.lines().any(|l| l == "PATH=/usr/bin:/bin"),
        "{env_out}"
    );
    assert!(
        env_out.lines().any(|l| l.starts_with("HOSTNAME=")),
        "{env_out}"
    );
    let file = env._work.path().join("env.list");
    std::fs::write(&file, "# comment\nFROM_FILE=1\n").unwrap();
    let env_out = env.run(&["--env-file", &file.display().to_string()], &["env"]);
    assert!(env_out.lines().any(|l| l == "FROM_FILE=1"), "{env_out}");
    assert_eq!(env.run(&[], &["pwd"]), "/\n");
    assert_eq!(env.run(&["-w", "/tmp"], &["pwd"]), "/tmp\n");
    assert_eq!(env.run(&[], &["id", "-u"]), "0\n");
    assert_eq!(
        env.run(&["-u", "www-data"], &["id"]).trim(),
        "uid=33(www-data) gid=33(www-data) groups=33(www-data)"
    );
    assert_eq!(env.run(&["-u", "1234:5"], &["id", "-u"]), "1234\n");
    assert_eq!(
        env.run(&["--entrypoint", "echo"], &["via", "entrypoint"]),
        "via entrypoint\n"
    );
    assert_eq!(env.run(&["--hostname", "box"], &["hostname"]), "box\n");
    let ro = env.berth(&["run", "--rm", "--read-only", IMAGE, "touch", "/x"]);
    assert_eq!(code(&ro), Some(1), "{ro:?}");
    assert!(
        format!(
            "{}{}",
            String::from_utf8_lossy(&ro.stdout),
            String::from_utf8_lossy(&ro.stderr)
        )
        .contains("Read-only file system"),
        "{ro:?}"
    );
    assert_eq!(env.run(&[], &["sh", "-c", "touch /x && echo rw"]), "rw\n");
    assert_eq!(
        env.run(
            &["-m", "64m"],
            &["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
        ),
        "67108864\n"
    );
    assert_eq!(
        env.run(
            &["--pids-limit", "20"],
            &["cat", "/sys/fs/cgroup/pids/pids.max"]
        ),
        "20\n"
    );
    assert_eq!(
        env.run(
            &["--cpus", "0.5"],
            &["cat", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"]
        ),
        "50000\n"
    );
    let caps = env.run(
        &["--cap-drop", "ALL"],
        &["grep", "CapEff", "/proc/self/status"],
    );
    assert!(caps.contains("0000000000000000"), "{caps}");
    let init = env.run(&["--init"], &["cat", "/proc/1/cmdline"]);
    assert!(init.starts_with("/sbin/docker-init"), "{init:?}");

    // A command that is not there: 127, nothing left behind with --rm.
    let before = env.snapshot_count();
    let out = env.berth(&["run", "--rm", IMAGE, "no-such-command"]);
    assert_eq!(code(&out), Some(127), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no-such-command"),
        "{out:?}"
    );
    // A missing image: 125, a clear message, nothing created.
    let out = env.berth(&["run", "--rm", "example.com/nope:latest", "true"]);
    assert_eq!(code(&out), Some(125), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unable to find image"),
        "{out:?}"
    );
    let out = env.berth(&["run", "-d", "--name", "ghost", "example.com/nope:latest"]);
    assert_eq!(code(&out), Some(125), "{out:?}");
    assert_eq!(ok(&env.d.ctr(&["containers", "ls", "-q"]), "ls").trim(), "");
    assert_eq!(env.ok(&["ps", "-a", "-q"]).trim(), "");
    env.wait_for("snapshots to be removed", || env.snapshot_count() == before);
}

#[test]
fn detached_container_lifecycle() {
    let env = Env::start();
    // Published from the container's own network (the default bridge) to the host.
    let port = free_port();
    let publish = format!("{port}:80");
    let script = "echo started; exec httpd -f -p 80";
    let id = env.ok(&[
        "run", "-d", "--name", "web", "-p", &publish, IMAGE, "sh", "-c", script,
    ]);
    let id = id.trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    env.wait_for("the log line", || {
        env.ok(&["logs", "web"]).contains("started")
    });
    env.wait_for("httpd", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut s| {
            let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            buf.starts_with("HTTP/1")
        })
    });

    // exec into it; cp a page in (httpd serves it) and a file out.
    let ps = env.ok(&["exec", "web", "ps"]);
    assert!(ps.contains("httpd -f -p"), "{ps}");
    let page = env._work.path().join("hello.html");
    std::fs::write(&page, "hello from cp\n").expect("page");
    env.ok(&["cp", &page.display().to_string(), "web:/hello.html"]);
    let got = env.ok(&[
        "exec",
        "web",
        "wget",
        "-qO-",
        "http://127.0.0.1:80/hello.html",
    ]);
    assert_eq!(got, "hello from cp\n");
    let out_file = env._work.path().join("passwd.out");
    env.ok(&["cp", "web:/etc/passwd", &out_file.display().to_string()]);
    assert!(
        std::fs::read_to_string(&out_file)
            .expect("copied out")
            .starts_with("root:")
    );

    let row = env.ps_row(false, "web").expect("web in ps");
    assert!(row.starts_with(&id[..12]), "{row}");
    assert!(row.contains(" Up "), "{row}");
    assert!(row.contains(IMAGE), "{row}");
    assert!(row.contains("\"sh -c 'echo started…\""), "{row}");
    assert_eq!(env.ok(&["ps", "-q"]).trim(), &id[..12]);
    assert_eq!(env.ok(&["ps", "-q", "--no-trunc"]).trim(), id);
    // By unique prefix, by name, by id.
    assert!(env.ok(&["logs", &id[..6]]).contains("started"));
    let stamped = env.ok(&["logs", "-t", "--tail", "1", &id]);
    assert!(stamped.trim_end().ends_with("started"), "{stamped}");

    let v: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", "web"])).unwrap();
    let c = &v[0];
    assert_eq!(c["Id"], id.as_str());
    assert_eq!(c["Name"], "/web");
    assert_eq!(c["State"]["Status"], "running");
    assert_eq!(c["State"]["Running"], true);
    assert!(c["State"]["Pid"].as_u64().unwrap() > 0, "{c}");
    assert_eq!(c["Path"], "sh");
    assert_eq!(c["Args"][1], script);
    assert_eq!(c["Config"]["Image"], IMAGE);
    assert_eq!(c["Config"]["Hostname"], &id[..12]);
    assert!(c["Config"]["Env"].to_string().contains("PATH="), "{c}");
    assert!(
        c["State"]["StartedAt"].as_str().unwrap().starts_with("20"),
        "{c}"
    );

    // Names are unique; a running container is not removed without -f.
    let err = fails(
        &env.berth(&["run", "-d", "--name", "web", IMAGE, "true"]),
        "dup",
    );
    assert!(
        err.contains(&format!(
            "Conflict. The container name \"/web\" is already in use by container \"{id}\""
        )),
        "{err}"
    );
    let err = fails(&env.berth(&["rm", "web"]), "rm running");
    assert!(
        err.contains("You cannot remove a running container"),
        "{err}"
    );

    env.ok(&["pause", "web"]);
    assert!(env.ps_row(false, "web").unwrap().contains("(Paused)"));
    env.ok(&["unpause", "web"]);

    env.ok(&["rename", "web", "site"]);
    assert!(env.ps_row(false, "site").is_some());
    assert!(fails(&env.berth(&["logs", "web"]), "old name").contains("No such container: web"));

    let t0 = Instant::now();
    assert_eq!(env.ok(&["stop", "-t", "2", "site"]).trim(), "site");
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    assert!(env.ps_row(false, "site").is_none());
    let row = env.ps_row(true, "site").expect("site in ps -a");
    assert!(row.contains("Exited ("), "{row}");
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", "site"])).unwrap();
    assert_eq!(v[0]["State"]["Status"], "exited");
    assert_eq!(v[0]["State"]["Pid"], 0);
    assert!(
        v[0]["State"]["FinishedAt"]
            .as_str()
            .unwrap()
            .starts_with("20")
    );
    let log = v[0]["LogPath"].as_str().unwrap().to_string();
    assert!(std::path::Path::new(&log).exists(), "{log}");

    // start again: a new task, the log goes on.
    env.ok(&["start", "site"]);
    env.wait_for("second start", || {
        env.ok(&["logs", "site"]).matches("started").count() == 2
    });
    assert!(env.ps_row(false, "site").unwrap().contains(" Up "));
    assert_eq!(env.ok(&["rm", "-f", "site"]).trim(), "site");
    assert!(env.ps_row(true, "site").is_none());
    assert!(!std::path::Path::new(&log).exists(), "{log}");

    // kill, wait, create + start -a.
    let id = env.ok(&["run", "-d", IMAGE, "sleep", "60"]);
    let id = id.trim();
    env.ok(&["kill", "-s", "KILL", id]);
    assert_eq!(env.ok(&["wait", id]).trim(), "137");
    let row = env.ps_row(true, &serde_json::from_str::<serde_json::Value>(&env.ok(&["inspect", id])).unwrap()[0]["Name"].as_str().unwrap()[1..]).unwrap();
    assert!(row.contains("Exited (137)"), "{row}");
    let err = fails(&env.berth(&["kill", id]), "kill exited");
    assert!(err.contains("is not running"), "{err}");

    let id = env.ok(&[
        "create",
        "--name",
        "later",
        IMAGE,
        "sh",
        "-c",
        "echo once; exit 4",
    ]);
    assert!(env.ps_row(true, "later").unwrap().contains("Created"));
    let out = env.berth(&["start", "-a", "later"]);
    assert_eq!(code(&out), Some(4), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "once\n");
    assert_eq!(env.ok(&["wait", id.trim()]).trim(), "4");
    assert!(
        fails(&env.berth(&["stop", "nope"]), "stop missing").contains("No such container: nope")
    );
}

#[test]
fn interactive_terminal_run() {
    let env = Env::start();
    // `script` gives berth a pty as stdin/stdout; what we type goes through it.
    let cmd = format!(
        "{} --address {} run -it --rm {IMAGE} sh",
        berth_tests::bin("berth").display(),
        env.d.address.display()
    );
    let mut child = std::process::Command::new(berth_tests::system_bin("script"))
        .args(["-qefc", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn script");
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    stdin.write_all(b"echo h''i; exit 5\n").unwrap();
    let out = child.wait_with_output().expect("script");
    drop(stdin);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.trim() == "hi"), "{out:?}");
    assert_eq!(code(&out), Some(5), "{out:?}");
    assert_eq!(env.ok(&["ps", "-a", "-q"]).trim(), "");

    // -i without a terminal: stdin is forwarded and closed at its end.
    let mut child = std::process::Command::new(berth_tests::bin("berth"))
        .arg("--address")
        .arg(&env.d.address)
        .args(["run", "-i", "--rm", IMAGE, "sh", "-c", "cat; exit 2"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn berth");
    child.stdin.take().unwrap().write_all(b"piped\n").unwrap();
    let out = child.wait_with_output().expect("berth -i");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "piped\n");
    assert_eq!(code(&out), Some(2), "{out:?}");
}

/// A foreground `berth run` passes ^C (SIGINT) and SIGTERM on to the container, as
/// Docker's sig-proxy does; the container decides how to exit.
#[test]
fn foreground_run_forwards_signals() {
    let env = Env::start();
    let mut child = std::process::Command::new(berth_tests::bin("berth"))
        .arg("--address")
        .arg(&env.d.address)
        .args([
            "run",
            "--rm",
            IMAGE,
            "sh",
            "-c",
            "trap 'echo got INT; exit 9' INT; echo ready; while :; do sleep 0.1; done",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn berth run");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("ready") {
        let n = stdout.read(&mut buf).expect("read");
        assert!(
            n > 0,
            "berth run ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    stdout.read_to_end(&mut seen).expect("read the rest");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(9), "{}", String::from_utf8_lossy(&seen));
    assert!(String::from_utf8_lossy(&seen).contains("got INT"));
    assert_eq!(env.ok(&["ps", "-a", "-q"]).trim(), "", "--rm removed it");
}

/// `run -d --rm`: berthd removes the container (record, task, snapshot, log file) when it
/// exits, with no client around.
#[test]
fn detached_rm_is_removed_by_the_daemon() {
    let env = Env::start();
    let snapshots_before = env.snapshot_count();
    let id = env
        .ok(&[
            "run",
            "-d",
            "--rm",
            "--name",
            "auto",
            IMAGE,
            "sh",
            "-c",
            "sleep 1; echo bye",
        ])
        .trim()
        .to_string();
    let inspect: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", "auto"])).expect("inspect JSON");
    let log = inspect[0]["LogPath"].as_str().expect("LogPath").to_string();
    assert!(std::path::Path::new(&log).exists(), "{log}");
    assert_eq!(inspect[0]["HostConfig"]["AutoRemove"], true);
    env.wait_for("the daemon to remove it", || {
        !env.ok(&["ps", "-a", "-q", "--no-trunc"]).contains(&id)
    });
    env.wait_for("its log file to go", || {
        !std::path::Path::new(&log).exists()
    });
    let tasks = ok(&env.d.ctr(&["tasks", "ls"]), "ctr tasks ls");
    assert!(!tasks.contains(&id), "{tasks}");
    env.wait_for("its snapshot to be collected", || {
        env.snapshot_count() == snapshots_before
    });
}
