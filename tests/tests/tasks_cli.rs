//! `berth tasks` (ctr style) and the docker-style `exec`, `top`, `stats` and `cp`, against
//! berthd, on containers started by the real `ctr` (a container id is a docker ref too).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_tests::fixtures::import_busybox;
use berth_tests::{Daemon, fails, ok};

const IMAGE: &str = "example.com/busybox:latest";

struct Env {
    d: Daemon,
    fifo: PathBuf,
    work: tempfile::TempDir,
}

impl Env {
    fn start() -> Env {
        let d = Daemon::start();
        let work = tempfile::tempdir().expect("tempdir");
        import_busybox(work.path(), |a| d.ctr(a));
        Env {
            d,
            fifo: work.path().join("fifo"),
            work,
        }
    }

    fn berth(&self, args: &[&str]) -> Output {
        self.d.berth(args)
    }

    fn run_d(&self, id: &str, cmd: &[&str]) {
        let fifo = self.fifo.display().to_string();
        let mut args = vec!["run", "-d", "--fifo-dir", &fifo, IMAGE, id];
        args.extend(cmd);
        ok(&self.d.ctr(&args), "ctr run -d");
        self.wait_status(id, "RUNNING");
    }

    /// `berth tasks ls`'s row of `id`, split on whitespace.
    fn task_row(&self, id: &str) -> Option<Vec<String>> {
        let out = ok(&self.berth(&["tasks", "ls"]), "berth tasks ls");
        out.lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .find(|f| f.first().map(String::as_str) == Some(id))
    }

    fn wait_status(&self, id: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.task_row(id).and_then(|r| r.get(2).cloned());
            if got.as_deref() == Some(want) {
                return;
            }
            assert!(Instant::now() < deadline, "task {id}: {got:?}, want {want}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pid(&self, id: &str) -> u32 {
        self.task_row(id)
            .and_then(|r| r.get(1)?.parse().ok())
            .expect("task pid")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for id in ["c1", "c2", "c3", "c4"] {
            let _ = self.d.ctr(&["tasks", "rm", "-f", id]);
            let _ = self.d.ctr(&["containers", "rm", id]);
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn tasks_exec_top_stats_cp() {
    let env = Env::start();
    env.run_d("c1", &["sleep", "1000"]);
    let pid = env.pid("c1");

    // ls: ctr's columns; the same rows as ctr's own listing.
    let out = ok(&env.berth(&["tasks", "ls"]), "tasks ls");
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["TASK", "PID", "STATUS"]);
    let ctr_out = ok(&env.d.ctr(&["tasks", "ls"]), "ctr tasks ls");
    let words = |s: &str| -> Vec<Vec<String>> {
        s.lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect()
    };
    assert_eq!(words(&out), words(&ctr_out));
    let q = ok(&env.berth(&["tasks", "ls", "-q"]), "tasks ls -q");
    assert_eq!(q.trim(), "c1");

    let out = ok(&env.berth(&["tasks", "ps", "c1"]), "tasks ps");
    assert!(out.starts_with("PID"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().next() == Some(&pid.to_string())),
        "{out}"
    );

    // tasks exec: output, and the exit status becomes ours.
    let out = ok(
        &env.berth(&["tasks", "exec", "--exec-id", "e1", "c1", "echo", "hi", "-n"]),
        "tasks exec echo",
    );
    assert_eq!(out.trim(), "hi -n");
    let out = env.berth(&[
        "tasks",
        "exec",
        "--exec-id",
        "e2",
        "c1",
        "sh",
        "-c",
        "exit 5",
    ]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let out = ok(
        &env.berth(&[
            "tasks",
            "exec",
            "--exec-id",
            "e3",
            "--cwd",
            "/etc",
            "--user",
            "daemon",
            "c1",
            "sh",
            "-c",
            "pwd; id -u",
        ]),
        "tasks exec --cwd --user",
    );
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["/etc", "1"]);

    // docker exec: -e, -w, -u are what the command sees; its exit status is ours.
    let out = ok(
        &env.berth(&[
            "exec",
            "-e",
            "FOO=bar",
            "-w",
            "/tmp",
            "-u",
            "www-data:daemon",
            "c1",
            "sh",
            "-c",
            "echo $FOO; pwd; id -u; id -g",
        ]),
        "exec -e -w -u",
    );
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["bar", "/tmp", "33", "1"]
    );
    let out = env.berth(&["exec", "c1", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let out = env.berth(&["exec", "c1", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out));
    // -i: our stdin goes to the command, and its end closes the command's stdin (CloseIO,
    // which may arrive before the exec has started).
    let mut child = Command::new(berth_tests::bin("berth"))
        .args(["--address", &env.d.address.display().to_string()])
        .args(["exec", "-i", "c1", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn berth exec -i");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"piped\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "piped\n");
    assert_eq!(out.status.code(), Some(0));
    // The same with the real ctr: `cat` ends at our end of input.
    let mut child = Command::new(berth_tests::system_bin("ctr"))
        .args(["-a", &env.d.address.display().to_string()])
        .args(["tasks", "exec", "--exec-id", "cat1", "c1", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn ctr tasks exec");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"via ctr\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "via ctr\n");

    // top: ps -ef rows of the container's processes only.
    let out = ok(&env.berth(&["top", "c1"]), "top");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("UID"), "{out}");
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[1].contains("sleep 1000"), "{out}");
    assert!(lines[1].contains(&pid.to_string()), "{out}");

    // metrics: ctr's table and JSON; stats: Docker's row, memory in use.
    let out = ok(&env.berth(&["tasks", "metrics", "c1"]), "tasks metrics");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[1].starts_with("c1"),
        "{out}"
    );
    assert!(out.contains("METRIC"), "{out}");
    assert!(
        out.contains("memory.usage_in_bytes") || out.contains("memory.usage"),
        "{out}"
    );
    assert!(out.contains("pids.current"), "{out}");
    let j = ok(
        &env.berth(&["tasks", "metrics", "--format", "json", "c1"]),
        "metrics json",
    );
    let v: serde_json::Value = serde_json::from_str(&j).expect("metrics json");
    assert!(v.get("memory").is_some(), "{j}");
    assert_eq!(v["pids"]["current"], 1, "{j}");
    let out = ok(&env.berth(&["stats", "--no-stream", "c1"]), "stats");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("CONTAINER ID"), "{out}");
    assert!(lines[1].starts_with("c1"), "{out}");
    let usage = lines[1].split_whitespace().nth(3).unwrap_or_default();
    assert!(!usage.starts_with("0B"), "{out}");
    assert_eq!(lines[1].split_whitespace().last(), Some("1"), "{out}");

    // cp: a file in and out, a directory out.
    let local = env.work.path().join("cp");
    std::fs::create_dir_all(&local).unwrap();
    let f = local.join("note.txt");
    std::fs::write(&f, "copied in\n").unwrap();
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    ok(
        &env.berth(&["cp", &f.display().to_string(), "c1:/tmp/"]),
        "cp in",
    );
    let out = ok(
        &env.berth(&["exec", "c1", "stat", "-c", "%a %u", "/tmp/note.txt"]),
        "stat",
    );
    assert_eq!(out.trim(), "640 0");
    let back = local.join("back.txt");
    ok(
        &env.berth(&["cp", "c1:/tmp/note.txt", &back.display().to_string()]),
        "cp out",
    );
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "copied in\n");
    ok(
        &env.berth(&["cp", "c1:/etc", &local.display().to_string()]),
        "cp dir out",
    );
    assert!(
        std::fs::read_to_string(local.join("etc/passwd"))
            .unwrap()
            .contains("www-data")
    );
    // A link out of the root resolves inside the container.
    ok(
        &env.berth(&["exec", "c1", "ln", "-s", "/../../../etc", "/tmp/up"]),
        "ln",
    );
    let esc = local.join("esc");
    ok(
        &env.berth(&["cp", "c1:/tmp/up/group", &esc.display().to_string()]),
        "cp through a link",
    );
    // The container's own /etc/group (the host's is longer).
    assert_eq!(
        std::fs::read_to_string(&esc).unwrap(),
        "root:x:0:\ndaemon:x:1:\nwww-data:x:33:\nnogroup:x:65534:\n"
    );

    // pause / resume.
    ok(&env.berth(&["tasks", "pause", "c1"]), "pause");
    env.wait_status("c1", "PAUSED");
    let err = fails(&env.berth(&["exec", "c1", "true"]), "exec while paused");
    assert!(err.contains("is paused"), "{err}");
    ok(&env.berth(&["tasks", "resume", "c1"]), "resume");
    env.wait_status("c1", "RUNNING");

    // rm of a running task needs -f; kill stops it.
    let err = fails(&env.berth(&["tasks", "rm", "c1"]), "rm running");
    assert!(err.contains("must be stopped"), "{err}");
    ok(&env.berth(&["tasks", "kill", "-s", "KILL", "c1"]), "kill");
    env.wait_status("c1", "STOPPED");
    let out = env.berth(&["exec", "c1", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("Container c1 is not running"),
        "{}",
        text(&out)
    );
    ok(&env.berth(&["tasks", "rm", "c1"]), "tasks rm");
    assert!(env.task_row("c1").is_none());

    // cp with no task: through the container's snapshot.
    let back2 = local.join("back2.txt");
    ok(
        &env.berth(&["cp", "c1:/tmp/note.txt", &back2.display().to_string()]),
        "cp from a stopped container",
    );
    assert_eq!(std::fs::read_to_string(&back2).unwrap(), "copied in\n");
    ok(
        &env.berth(&["cp", &f.display().to_string(), "c1:/note2"]),
        "cp into a stopped container",
    );

    // tasks start: attached (the output and exit status are ours), and detached.
    ok(
        &env.d.ctr(&[
            "containers",
            "create",
            IMAGE,
            "c2",
            "--",
            "sh",
            "-c",
            "echo started; exit 3",
        ]),
        "ctr containers create",
    );
    let out = env.berth(&["tasks", "start", "c2"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "started\n");
    assert!(
        env.task_row("c2").is_none(),
        "attached start deletes the task"
    );
    ok(&env.berth(&["tasks", "start", "-d", "c1"]), "start -d");
    env.wait_status("c1", "RUNNING");
    let out = ok(&env.berth(&["exec", "c1", "cat", "/note2"]), "cat /note2");
    assert_eq!(out, "copied in\n");
    ok(&env.berth(&["tasks", "rm", "-f", "c1"]), "rm -f");
    assert!(env.task_row("c1").is_none());
}

/// `berth exec -it` under a pty (`script`): typed input reaches the shell, its output and
/// exit status come back.
#[test]
fn exec_it_under_a_pty() {
    let env = Env::start();
    env.run_d("c3", &["sleep", "1000"]);
    let cmd = format!(
        "{} --address {} exec -it c3 sh",
        berth_tests::bin("berth").display(),
        env.d.address.display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn script");
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    std::io::Write::write_all(&mut stdin, b"echo hi; exit 4\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("berth exec -it did not end");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l.trim_end_matches('\r') == "hi"),
        "{stdout}"
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
}
