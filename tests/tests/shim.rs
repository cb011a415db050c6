//! containerd-shim-berth-v2 driven by the real containerd 1.6 and the real `ctr`
//! (`--runtime io.containerd.berth.v2`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_tests::fixtures::import_busybox;
use berth_tests::{Background, Containerd, bin, fails, ok, rss_kib, system_bin};

const IMAGE: &str = "example.com/busybox:latest";
const RUNTIME: &str = "io.containerd.berth.v2";

struct Env {
    ctd: Containerd,
    fifo: PathBuf,
    _work: tempfile::TempDir,
}

impl Drop for Env {
    /// After a failure, no container, shim or runc state outlives the test (the shim's
    /// runc root is shared by every containerd run on this machine).
    fn drop(&mut self) {
        let Ok(out) = self.ctr_cmd(&["containers", "ls", "-q"]).output() else {
            return;
        };
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = self.ctr(&["tasks", "rm", "-f", id]);
            let _ = self.ctr(&["containers", "rm", id]);
        }
    }
}

impl Env {
    fn start() -> Env {
        let shim = bin("containerd-shim-berth-v2");
        let ctd = Containerd::start_with_path("/tmp", shim.parent());
        let work = tempfile::tempdir().expect("tempdir");
        let env = Env {
            ctd,
            fifo: work.path().join("fifo"),
            _work: work,
        };
        import_busybox(env._work.path(), |a| env.ctr(a));
        env
    }

    fn ctr_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(system_bin("ctr"));
        cmd.arg("-a").arg(&self.ctd.address).args(args);
        cmd
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_cmd(args).output().expect("run ctr")
    }

    /// `ctr run` with our runtime and the test's FIFO dir; `args` go before the image.
    fn run(&self, opts: &[&str], id: &str, cmd: &[&str]) -> Output {
        let fifo = self.fifo.display().to_string();
        let mut args = vec!["run", "--runtime", RUNTIME, "--fifo-dir", &fifo];
        args.extend(opts);
        args.extend([IMAGE, id]);
        args.extend(cmd);
        self.ctr(&args)
    }

    /// The STATUS column of `ctr tasks ls` for `id`.
    fn task_status(&self, id: &str) -> Option<String> {
        let out = ok(&self.ctr(&["tasks", "ls"]), "tasks ls");
        out.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.first() == Some(&id))
            .and_then(|f| f.get(2).map(|s| s.to_string()))
    }

    fn task_pid(&self, id: &str) -> u32 {
        let out = ok(&self.ctr(&["tasks", "ls"]), "tasks ls");
        out.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.first() == Some(&id))
            .and_then(|f| f.get(1)?.parse().ok())
            .unwrap_or_else(|| panic!("no task {id} in:\n{out}"))
    }

    fn wait_status(&self, id: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.task_status(id);
            if got.as_deref() == Some(want) {
                return;
            }
            assert!(Instant::now() < deadline, "task {id}: {got:?}, want {want}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills, deletes and removes a detached container.
    fn remove(&self, id: &str) {
        let _ = self.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
        self.wait_status(id, "STOPPED");
        ok(&self.ctr(&["tasks", "rm", id]), "tasks rm");
        ok(&self.ctr(&["containers", "rm", id]), "containers rm");
    }
}

/// The shim serving a task: the parent of its init process (the shim is its subreaper).
fn shim_of(task_pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{task_pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("PPid")
}

fn exe_name(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
}

fn wait_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "shim {pid} is still running");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ctr_drives_the_berth_shim() {
    let env = Env::start();

    let out = ok(&env.run(&["--rm"], "c1", &["echo", "hello"]), "run echo");
    assert_eq!(out.trim(), "hello");

    let out = env.run(&["--rm"], "c2", &["sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");

    // A command missing in the image: runc's error reaches the client.
    let err = fails(
        &env.run(&["--rm"], "c0", &["/no/such/binary"]),
        "run missing binary",
    );
    assert!(err.contains("no such file or directory"), "{err}");
    let _ = env.ctr(&["containers", "rm", "c0"]);

    ok(&env.run(&["-d"], "c3", &["sleep", "1000"]), "run -d");
    env.wait_status("c3", "RUNNING");
    let pid = env.task_pid("c3");
    let shim = shim_of(pid);
    assert_eq!(exe_name(shim), "containerd-shim-berth-v2");

    let out = ok(
        &env.ctr(&["tasks", "exec", "--exec-id", "e1", "c3", "ls", "/"]),
        "exec ls",
    );
    assert!(out.lines().any(|l| l == "bin"), "{out}");
    let out = env.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "e2",
        "c3",
        "sh",
        "-c",
        "exit 5",
    ]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");

    let out = ok(&env.ctr(&["tasks", "ps", "c3"]), "tasks ps");
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().next() == Some(&pid.to_string())),
        "{out}"
    );

    ok(&env.ctr(&["tasks", "pause", "c3"]), "pause");
    env.wait_status("c3", "PAUSED");
    let err = fails(&env.ctr(&["tasks", "pause", "c3"]), "pause twice");
    assert!(
        err.contains("cannot pause container c3 in state paused"),
        "{err}"
    );
    ok(&env.ctr(&["tasks", "resume", "c3"]), "resume");
    env.wait_status("c3", "RUNNING");

    let err = fails(&env.ctr(&["tasks", "rm", "c3"]), "rm of a running task");
    assert!(err.contains("running"), "{err}");

    env.remove("c3");
    wait_gone(shim);
}

#[test]
fn run_with_a_terminal_echoes_input() {
    let env = Env::start();
    let fifo = env.fifo.display().to_string();
    let line = format!(
        "{} -a {} run -t --rm --runtime {RUNTIME} --fifo-dir {fifo} {IMAGE} t1 sh",
        system_bin("ctr").display(),
        env.ctd.address.display()
    );
    let mut child = Command::new(system_bin("script"))
        .args(["-qfec", &line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn script");
    let mut stdin = child.stdin.take().expect("stdin");
    std::thread::sleep(Duration::from_secs(1));
    stdin.write_all(b"echo typed-$((40+2))\n").expect("type");
    std::thread::sleep(Duration::from_millis(500));
    stdin.write_all(b"exit 7\n").expect("type exit");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("try_wait").is_none() {
        assert!(Instant::now() < deadline, "ctr run -t did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(stdin);
    let out = child.wait_with_output().expect("script output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("typed-42"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn idle_shim_memory_next_to_runc_v2() {
    let env = Env::start();
    ok(&env.run(&["-d"], "ours", &["sleep", "1000"]), "run -d ours");
    let fifo = env.fifo.display().to_string();
    let out = env.ctr(&[
        "run",
        "-d",
        "--runtime",
        "io.containerd.runc.v2",
        "--fifo-dir",
        &fifo,
        IMAGE,
        "theirs",
        "sleep",
        "1000",
    ]);
    ok(&out, "run -d with containerd-shim-runc-v2");
    env.wait_status("ours", "RUNNING");
    env.wait_status("theirs", "RUNNING");
    std::thread::sleep(Duration::from_secs(1));
    let ours = shim_of(env.task_pid("ours"));
    let theirs = shim_of(env.task_pid("theirs"));
    let (a, b) = (rss_kib(ours), rss_kib(theirs));
    println!(
        "idle shim RSS: containerd-shim-berth-v2 {a} KiB, containerd-shim-runc-v2 {b} KiB ({:.2}x)",
        a as f64 / b as f64
    );
    env.remove("ours");
    env.remove("theirs");
    wait_gone(ours);
    wait_gone(theirs);
}

/// The METRIC/VALUE rows of `ctr tasks metrics`.
fn metric(table: &str, name: &str) -> Option<String> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
        .and_then(|f| f.get(1).map(|v| v.to_string()))
}

#[test]
fn metrics_from_the_container_cgroup() {
    let env = Env::start();
    ok(&env.run(&["-d"], "m1", &["sleep", "1000"]), "run -d");
    env.wait_status("m1", "RUNNING");
    let table = ok(&env.ctr(&["tasks", "metrics", "m1"]), "tasks metrics");
    println!("{table}");
    assert!(table.contains("METRIC"), "{table}");
    let usage: u64 = metric(&table, "memory.usage_in_bytes")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no memory usage in:\n{table}"));
    assert!(usage > 0, "{table}");
    let pids: u64 = metric(&table, "pids.current")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no pids in:\n{table}"));
    assert!(pids >= 1, "{table}");
    assert!(metric(&table, "cpuacct.usage").is_some(), "{table}");
    // The JSON form carries the rest (memory.stat fields, per-CPU usage).
    let json = ok(
        &env.ctr(&["tasks", "metrics", "--format", "json", "m1"]),
        "tasks metrics --format json",
    );
    let v: serde_json::Value = serde_json::from_str(&json).expect("metrics json");
    assert!(
        v["memory"]["usage"]["usage"].as_u64().unwrap_or(0) > 0,
        "{json}"
    );
    assert!(v["memory"]["pg_fault"].as_u64().unwrap_or(0) > 0, "{json}");
    assert!(v["cpu"]["usage"]["per_cpu"].is_array(), "{json}");
    assert!(v["blkio"].is_object(), "{json}");
    env.remove("m1");
}

#[test]
fn oom_kill_is_published() {
    let env = Env::start();
    let mut cmd = env.ctr_cmd(&["events"]);
    cmd.stdin(Stdio::null());
    let events = Background::spawn(cmd);
    std::thread::sleep(Duration::from_millis(300));
    // The shell accumulates 64 MB in a variable under an 8 MiB limit (and no swap).
    let out = env.run(
        &["--rm", "--memory-limit", "8388608"],
        "oom1",
        &[
            "sh",
            "-c",
            "x=$(head -c 64000000 /dev/zero | tr '\\0' a); echo ${#x}",
        ],
    );
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    let text = events.wait_for(&["/tasks/oom", "/tasks/exit"], Duration::from_secs(10));
    let oom = text
        .lines()
        .find(|l| l.contains("/tasks/oom"))
        .unwrap_or_default();
    assert!(oom.contains("oom1"), "{text}");
}

/// A timestamp shaped like Go's RFC3339Nano in UTC: `2006-01-02T15:04:05.999999999Z`.
fn is_rfc3339(ts: &str) -> bool {
    let b = ts.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    let Some(rest) = ts.get(19..) else {
        return false;
    };
    digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && (rest == "Z"
            || rest
                .strip_prefix('.')
                .and_then(|f| f.strip_suffix('Z'))
                .is_some_and(|f| {
                    !f.is_empty() && f.len() <= 9 && f.bytes().all(|c| c.is_ascii_digit())
                }))
}

#[test]
fn cri_log_uri_writes_cri_records() {
    let env = Env::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("logs/c.log");
    let uri = format!("file://{}?format=cri", log.display());
    let fifo = env.fifo.display().to_string();
    let out = env.ctr(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--fifo-dir",
        &fifo,
        "--log-uri",
        &uri,
        IMAGE,
        "cri1",
        "sh",
        "-c",
        "echo line; echo line >&2; echo line; printf tail",
    ]);
    ok(&out, "run -d --log-uri ...?format=cri");
    env.wait_status("cri1", "STOPPED");
    let text = std::fs::read_to_string(&log).expect("read the CRI log");
    let records: Vec<Vec<&str>> = text.lines().map(|l| l.splitn(4, ' ').collect()).collect();
    assert_eq!(records.len(), 4, "{text}");
    assert!(records.iter().all(|r| is_rfc3339(r[0])), "{text}");
    // Each stream keeps its own order; the two interleave as the shim reads them.
    let stream = |name: &str| -> Vec<Vec<&str>> {
        records
            .iter()
            .filter(|r| r[1] == name)
            .map(|r| r[2..].to_vec())
            .collect()
    };
    assert_eq!(
        stream("stdout"),
        [vec!["F", "line"], vec!["F", "line"], vec!["P", "tail"]],
        "{text}"
    );
    assert_eq!(stream("stderr"), [vec!["F", "line"]], "{text}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&log).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
    ok(&env.ctr(&["tasks", "rm", "cri1"]), "tasks rm");
    ok(&env.ctr(&["containers", "rm", "cri1"]), "containers rm");
}

/// `ctr events` in the background, subscribed (it subscribes asynchronously: namespaces are
/// created until it has seen one).
fn subscribed_events(env: &Env) -> Background {
    let mut cmd = env.ctr_cmd(&["events"]);
    cmd.stdin(Stdio::null());
    let events = Background::spawn(cmd);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    while !events.text().contains("/namespaces/create") {
        assert!(
            Instant::now() < deadline,
            "ctr events saw nothing:\n{}",
            events.text()
        );
        ok(
            &env.ctr(&["namespaces", "create", &format!("warmup{n}")]),
            "namespaces create",
        );
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    events
}

/// Waits (bounded) until one line of `events` contains every needle.
fn wait_for_line(events: &Background, needles: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !events
        .text()
        .lines()
        .any(|l| needles.iter().all(|n| l.contains(n)))
    {
        assert!(
            Instant::now() < deadline,
            "no event with {needles:?}:\n{}",
            events.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `/tasks/...` events `ctr events` printed, in order: (topic, event as JSON).
fn task_events(text: &str) -> Vec<(String, serde_json::Value)> {
    text.lines()
        .filter_map(|line| {
            let topic = line.split_whitespace().find(|w| w.starts_with("/tasks/"))?;
            let event = serde_json::from_str(line.get(line.find('{')?..)?).ok()?;
            Some((topic.to_string(), event))
        })
        .collect()
}

/// The topics of the events about container `id` (and, with `exec`, about that exec only:
/// its events and its exit), in order.
fn topics_of(events: &[(String, serde_json::Value)], id: &str, exec: Option<&str>) -> Vec<String> {
    events
        .iter()
        .filter(|(_, e)| e["container_id"] == id)
        .filter(|(_, e)| exec.is_none_or(|x| e["exec_id"] == x || e["id"] == x))
        .map(|(topic, _)| topic.clone())
        .collect()
}

#[test]
fn exits_are_published_after_their_starts() {
    let env = Env::start();
    let events = subscribed_events(&env);
    // `true` exits at once, often before runc start returns: its exit must still come
    // after its start, every time.
    let ids: Vec<String> = (0..30)
        .map(|i| format!("order{}-{i}", std::process::id()))
        .collect();
    for id in &ids {
        ok(&env.run(&["--rm"], id, &["true"]), "run --rm true");
    }
    let last = format!("\"container_id\":\"{}\"", ids[ids.len() - 1]);
    wait_for_line(&events, &["/tasks/delete", &last]);
    let all = task_events(&events.text());
    for id in &ids {
        assert_eq!(
            topics_of(&all, id, None),
            [
                "/tasks/create",
                "/tasks/start",
                "/tasks/exit",
                "/tasks/delete"
            ],
            "events of {id}:\n{}",
            events.text()
        );
    }
}

#[test]
fn exec_exits_are_published_after_exec_started_and_before_the_init_exit() {
    let env = Env::start();
    let events = subscribed_events(&env);
    let id = format!("execorder{}", std::process::id());
    ok(&env.run(&["-d"], &id, &["sleep", "1000"]), "run -d");
    env.wait_status(&id, "RUNNING");
    let fifo = env.fifo.display().to_string();
    let quick: Vec<String> = (0..20).map(|i| format!("quick{i}")).collect();
    for exec in &quick {
        let args = ["tasks", "exec", "--fifo-dir", &fifo, "--exec-id", exec];
        ok(&env.ctr(&[&args[..], &[&id, "true"]].concat()), "exec true");
    }
    let slow: Vec<String> = (0..3).map(|i| format!("slow{i}")).collect();
    for exec in &slow {
        let args = [
            "tasks",
            "exec",
            "-d",
            "--fifo-dir",
            &fifo,
            "--exec-id",
            exec,
        ];
        ok(
            &env.ctr(&[&args[..], &[&id, "sleep", "1000"]].concat()),
            "exec -d sleep",
        );
    }
    // The init's end kills the execs (its PID namespace goes): their exits come first.
    ok(
        &env.ctr(&["tasks", "kill", "-s", "SIGKILL", &id]),
        "tasks kill",
    );
    let init_exit = format!("\"id\":\"{id}\"");
    wait_for_line(&events, &["/tasks/exit", &init_exit]);
    let all = task_events(&events.text());
    for exec in &quick {
        assert_eq!(
            topics_of(&all, &id, Some(exec)),
            ["/tasks/exec-added", "/tasks/exec-started", "/tasks/exit"],
            "events of exec {exec}:\n{}",
            events.text()
        );
    }
    let exits: Vec<&str> = all
        .iter()
        .filter(|(topic, e)| topic == "/tasks/exit" && e["container_id"] == id.as_str())
        .filter_map(|(_, e)| e["id"].as_str())
        .filter(|x| !x.starts_with("quick"))
        .collect();
    let (init, execs) = exits.split_last().expect("no exits");
    let mut execs = execs.to_vec();
    execs.sort_unstable();
    assert_eq!(
        (*init, execs),
        (id.as_str(), slow.iter().map(String::as_str).collect()),
        "exits, the init's last:\n{}",
        events.text()
    );
    ok(&env.ctr(&["tasks", "rm", &id]), "tasks rm");
    ok(&env.ctr(&["containers", "rm", &id]), "containers rm");
}
