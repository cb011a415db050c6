//! berthd's Tasks service driven by the real `ctr`, with containerd-shim-berth-v2 as the
//! default runtime's shim.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_tests::fixtures::import_busybox;
use berth_tests::{Background, Daemon, fails, mounts_under, ok};

const IMAGE: &str = "example.com/busybox:latest";

struct Env {
    d: Daemon,
    fifo: PathBuf,
    _work: tempfile::TempDir,
}

impl Env {
    fn start() -> Env {
        Env::with(Daemon::start())
    }

    fn with(d: Daemon) -> Env {
        let work = tempfile::tempdir().expect("tempdir");
        import_busybox(work.path(), |a| d.ctr(a));
        Env {
            d,
            fifo: work.path().join("fifo"),
            _work: work,
        }
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.d.ctr(args)
    }

    fn run(&self, opts: &[&str], id: &str, cmd: &[&str]) -> Output {
        let fifo = self.fifo.display().to_string();
        let mut args = vec!["run", "--fifo-dir", &fifo];
        args.extend(opts);
        args.extend([IMAGE, id]);
        args.extend(cmd);
        self.ctr(&args)
    }

    fn task_row(&self, id: &str) -> Option<Vec<String>> {
        let out = ok(&self.ctr(&["tasks", "ls"]), "tasks ls");
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
            assert!(
                Instant::now() < deadline,
                "task {id}: {got:?}, want {want}\n{:?}",
                self.ctr(&["tasks", "ls"])
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Env {
    /// After a failure, no container or shim outlives the test.
    fn drop(&mut self) {
        for id in ["c1", "c2", "c3", "c4", "c5"] {
            let _ = self.ctr(&["tasks", "rm", "-f", id]);
            let _ = self.ctr(&["containers", "rm", id]);
        }
    }
}

fn shim_of(task_pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{task_pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("PPid")
}

fn wait_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "shim {pid} is still running");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A runtime for `ctr run --runc-binary`: a script named `name` in `dir` that notes each
/// of its command lines in `dir/calls`, then runs Debian's runc with them.
fn noting_runtime(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    berth_tests::noting_runc(&path, &dir.join("calls"));
    path
}

/// The runtime's commands so far (`runc create`, ...), without the global flags.
fn runtime_calls(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("calls")).unwrap_or_default();
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // --root R --log L --log-format json COMMAND ...
            let at = f.iter().position(|a| *a == "json").map_or(0, |i| i + 1);
            f.get(at).copied().unwrap_or_default().to_string()
        })
        .collect()
}

/// A temp dir with two empty directories for [`noting_runtime`]s: `runc` and `other`.
fn runtime_dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let work = tempfile::tempdir().expect("tempdir");
    let runc_dir = work.path().join("runc");
    let other_dir = work.path().join("other");
    for dir in [&runc_dir, &other_dir] {
        std::fs::create_dir(dir).expect("mkdir");
    }
    (work, runc_dir, other_dir)
}

/// `ctr run --rm` of `echo WORD` as container `id` with `runtime`; the runtime's commands
/// so far.
fn echo_with_runtime(env: &Env, runtime: &Path, id: &str, word: &str) -> Vec<String> {
    let binary = runtime.display().to_string();
    let out = ok(
        &env.run(&["--rm", "--runc-binary", &binary], id, &["echo", word]),
        "run echo",
    );
    assert_eq!(out.trim(), word);
    runtime_calls(runtime.parent().expect("the runtime's directory"))
}

#[test]
fn the_shim_starts_and_removes_a_runc_container_itself() {
    let env = Env::start();
    let (_work, runc_dir, other_dir) = runtime_dirs();
    let runc = noting_runtime(&runc_dir, "runc");

    // Started without `runc start` (the init let go through runc's exec fifo) and removed
    // without `runc delete`.
    let calls = echo_with_runtime(&env, &runc, "c1", "hello");
    assert!(calls.contains(&"create".to_string()), "{calls:?}");
    assert!(!calls.contains(&"start".to_string()), "{calls:?}");
    assert!(!calls.contains(&"delete".to_string()), "{calls:?}");

    // runc sees the container running (the fifo is gone, as `runc start` leaves it), and
    // its own commands work on it.
    let binary = runc.display().to_string();
    ok(
        &env.run(
            &["-d", "--runc-binary", &binary],
            "c2",
            &["sh", "-c", "sleep 1000 & exec sleep 1001"],
        ),
        "run -d",
    );
    env.wait_status("c2", "RUNNING");
    let line = std::fs::read_to_string(runc_dir.join("calls")).expect("calls");
    let root = line
        .split_whitespace()
        .skip_while(|a| *a != "--root")
        .nth(1)
        .expect("--root in the runtime's command line")
        .to_string();
    let dir = Path::new(&root).join("c2");
    assert!(!dir.join("exec.fifo").exists());
    // The shim (of c2: the last create), named its bundle rather than started in it, moved
    // there itself (runc and the shim library's `address` file work there).
    let bundle = line
        .lines()
        .rfind(|l| l.contains(" create "))
        .and_then(|l| l.split_whitespace().skip_while(|a| *a != "--bundle").nth(1))
        .expect("--bundle in runc create's command line")
        .to_string();
    let pid: u32 = env
        .task_row("c2")
        .and_then(|r| r.get(1)?.parse().ok())
        .expect("pid of c2");
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/cwd", shim_of(pid))).expect("the shim's cwd"),
        Path::new(&bundle)
    );
    let runc_cmd = |args: &[&str]| {
        Command::new(berth_tests::system_bin("runc"))
            .arg("--root")
            .arg(&root)
            .args(args)
            .output()
            .expect("runc")
    };
    let state = ok(&runc_cmd(&["state", "c2"]), "runc state c2");
    assert!(state.contains("\"status\": \"running\""), "{state}");
    ok(
        &env.ctr(&["tasks", "exec", "--exec-id", "e1", "c2", "true"]),
        "exec",
    );
    // Its cgroups, as runc recorded them: removed with it, as `runc delete` removes them.
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).expect("state.json"))
            .expect("runc's state");
    let cgroups: Vec<String> = saved["cgroup_paths"]
        .as_object()
        .expect("cgroup_paths")
        .values()
        .filter_map(|p| p.as_str().map(String::from))
        .collect();
    assert!(!cgroups.is_empty());
    assert!(cgroups.iter().all(|p| Path::new(p).is_dir()), "{cgroups:?}");
    ok(&env.ctr(&["tasks", "kill", "-s", "SIGKILL", "c2"]), "kill");
    env.wait_status("c2", "STOPPED");
    ok(&env.ctr(&["tasks", "rm", "c2"]), "tasks rm");
    ok(&env.ctr(&["containers", "rm", "c2"]), "containers rm");
    let calls = runtime_calls(&runc_dir);
    assert!(!calls.contains(&"start".to_string()), "{calls:?}");
    assert!(!calls.contains(&"delete".to_string()), "{calls:?}");
    assert!(!dir.exists(), "runc's state directory {dir:?} is left");
    let left: Vec<&String> = cgroups.iter().filter(|p| Path::new(p).exists()).collect();
    assert!(left.is_empty(), "cgroups left: {left:?}");
    let list = ok(&runc_cmd(&["list", "-q"]), "runc list");
    assert!(!list.lines().any(|l| l == "c2"), "{list}");

    // Another runtime binary (a runc-compatible CLI of another name) gets `start` and
    // `delete`.
    let other = noting_runtime(&other_dir, "other-runtime");
    let calls = echo_with_runtime(&env, &other, "c3", "hi");
    assert!(calls.contains(&"start".to_string()), "{calls:?}");
    assert!(calls.contains(&"delete".to_string()), "{calls:?}");
}

/// What an exec'd process is, seen from inside: its user, groups, capabilities, no_new_privs
/// and seccomp, cgroups, which of the init's namespaces it shares, limits, environment,
/// directory, umask, oom score, session, open descriptors, and whether it can reopen its
/// stdout.
const PROBE: &str = r#"id
grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp)' /proc/self/status
cat /proc/self/cgroup
for n in ipc uts net pid mnt cgroup; do
  [ "$(readlink /proc/self/ns/$n)" = "$(readlink /proc/1/ns/$n)" ] && echo "same $n"
done
cat /proc/self/limits
env | sort
pwd
umask
cat /proc/self/oom_score_adj
read -r p c s pp pg sid rest < /proc/self/stat
[ "$sid" = "$$" ] && echo "session leader"
ls /proc/self/fd | wc -l
echo reopened > /dev/stdout
"#;

#[test]
fn the_shim_execs_into_a_runc_container_itself() {
    let env = Env::start();
    let (_work, runc_dir, other_dir) = runtime_dirs();
    // c1's execs are started by the shim, c2's (a runtime of another name) by runc exec:
    // the oracle.
    let runc = noting_runtime(&runc_dir, "runc");
    let other = noting_runtime(&other_dir, "other-runtime");
    for (id, runtime) in [("c1", &runc), ("c2", &other)] {
        let binary = runtime.display().to_string();
        ok(
            &env.run(&["-d", "--runc-binary", &binary], id, &["sleep", "1000"]),
            "run -d",
        );
        env.wait_status(id, "RUNNING");
    }
    let exec = |id: &str, exec_id: &str, opts: &[&str], cmd: &[&str]| {
        let mut args = vec!["tasks", "exec", "--exec-id", exec_id];
        args.extend(opts);
        args.push(id);
        args.extend(cmd);
        env.ctr(&args)
    };
    let probe = |id: &str, exec_id: &str, opts: &[&str]| {
        let out = ok(&exec(id, exec_id, opts, &["sh", "-c", PROBE]), "exec probe");
        out.replace(id, "ID")
    };
    for (n, opts) in [
        &[][..],
        &["--user", "1000:1000", "--cwd", "/tmp"],
        &["--user", "65534"],
    ]
    .iter()
    .enumerate()
    {
        let exec_id = format!("probe{n}");
        let (direct, through_runc) = (probe("c1", &exec_id, opts), probe("c2", &exec_id, opts));
        assert_eq!(direct, through_runc, "{opts:?}");
        // (Another user may not read the init's namespaces.)
        for line in ["same ipc", "same uts", "same net", "same pid", "same mnt"] {
            assert!(n > 0 || direct.contains(line), "{line}: {direct}");
        }
        assert!(direct.contains("session leader"), "{direct}");
        assert!(direct.contains("reopened"), "{direct}");
        assert!(direct.contains("HOME=/"), "{direct}");
    }
    let direct = probe("c1", "probe9", &["--user", "1000:1000"]);
    assert!(direct.contains("uid=1000 gid=1000"), "{direct}");
    assert!(direct.contains("CapEff:\t0000000000000000"), "{direct}");

    // Input, output and the exit status.
    let mut child = Command::new(berth_tests::system_bin("ctr"))
        .args(["-a", &env.d.address.display().to_string()])
        .args([
            "tasks",
            "exec",
            "--exec-id",
            "cat",
            "c1",
            "sh",
            "-c",
            "cat; exit 7",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("ctr tasks exec");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"through stdin\n").expect("write stdin");
    drop(stdin);
    let out = child.wait_with_output().expect("ctr tasks exec");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through stdin\n");
    assert_eq!(out.status.code(), Some(7), "{out:?}");

    // What cannot start fails in runc's words, both ways.
    for (n, (opts, cmd, words)) in [
        (
            &[][..],
            "no-such-command",
            "executable file not found in $PATH",
        ),
        (&[], "/no/such/binary", "no such file or directory"),
        (&[], "/etc/passwd", "permission denied"),
        (&["--cwd", "/no/such/dir"], "true", "chdir to cwd"),
    ]
    .into_iter()
    .enumerate()
    {
        for id in ["c1", "c2"] {
            let err = fails(&exec(id, &format!("bad{n}"), opts, &[cmd]), "a bad exec");
            assert!(err.contains(words), "{id} {cmd}: {err}");
        }
    }

    // c1's runtime was never asked to exec; c2's was, every time.
    let calls = runtime_calls(&runc_dir);
    assert!(!calls.contains(&"exec".to_string()), "{calls:?}");
    let calls = runtime_calls(&other_dir);
    assert_eq!(
        calls.iter().filter(|c| *c == "exec").count(),
        7,
        "{calls:?}"
    );
    // Nothing of the execs is left: no process but the init in c1, no zombie of the shim.
    let ps = ok(&env.ctr(&["tasks", "ps", "c1"]), "tasks ps");
    assert_eq!(ps.lines().count(), 2, "{ps}");
    let pid: u32 = env
        .task_row("c1")
        .and_then(|r| r.get(1)?.parse().ok())
        .expect("pid of c1");
    let shim = shim_of(pid);
    let mut children = String::new();
    for task in std::fs::read_dir(format!("/proc/{shim}/task")).expect("the shim's threads") {
        let path = task.expect("a thread").path().join("children");
        children.push_str(&std::fs::read_to_string(path).unwrap_or_default());
    }
    assert_eq!(
        children.split_whitespace().collect::<Vec<_>>(),
        [pid.to_string()],
        "the shim's children"
    );
}

#[test]
fn ctr_runs_containers_through_berthd() {
    let env = Env::start();

    // The shim publishes /tasks/* through berthd's ttrpc Forward, once each.
    let mut cmd = std::process::Command::new(berth_tests::system_bin("ctr"));
    cmd.arg("-a").arg(&env.d.address).arg("events");
    let events = Background::spawn(cmd);
    std::thread::sleep(Duration::from_millis(300));

    let out = ok(&env.run(&["--rm"], "c1", &["echo", "hello"]), "run echo");
    assert_eq!(out.trim(), "hello");
    let text = events.wait_for(
        &[
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(text.matches("/tasks/start").count(), 1, "{text}");

    let out = env.run(&["--rm"], "c2", &["sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");

    ok(&env.run(&["-d"], "c3", &["sleep", "1000"]), "run -d");
    env.wait_status("c3", "RUNNING");
    let pid: u32 = env
        .task_row("c3")
        .and_then(|r| r.get(1)?.parse().ok())
        .expect("pid of c3");
    let shim = shim_of(pid);

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

    // Metrics are the shim's Stats: ctr decodes the cgroup v1 metrics into its table.
    let out = ok(&env.ctr(&["tasks", "metrics", "c3"]), "tasks metrics");
    let usage: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("memory.usage_in_bytes"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no memory usage in:\n{out}"));
    assert!(usage > 0, "{out}");
    assert!(out.lines().any(|l| l.starts_with("pids.current")), "{out}");

    let out = ok(&env.ctr(&["tasks", "ps", "c3"]), "tasks ps");
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().next() == Some(&pid.to_string())),
        "{out}"
    );

    ok(&env.ctr(&["tasks", "pause", "c3"]), "pause");
    env.wait_status("c3", "PAUSED");
    ok(&env.ctr(&["tasks", "resume", "c3"]), "resume");
    env.wait_status("c3", "RUNNING");

    let err = fails(&env.ctr(&["tasks", "checkpoint", "c3"]), "checkpoint");
    assert!(err.contains("does not checkpoint"), "{err}");

    ok(&env.ctr(&["tasks", "kill", "-s", "SIGKILL", "c3"]), "kill");
    env.wait_status("c3", "STOPPED");
    ok(&env.ctr(&["tasks", "rm", "c3"]), "tasks rm");
    ok(&env.ctr(&["containers", "rm", "c3"]), "containers rm");
    wait_gone(shim);

    // A shim that dies: Delete cleans up through `shim delete` (container and rootfs gone).
    ok(&env.run(&["-d"], "c5", &["sleep", "1000"]), "run -d c5");
    env.wait_status("c5", "RUNNING");
    let pid5: u32 = env
        .task_row("c5")
        .and_then(|r| r.get(1)?.parse().ok())
        .expect("pid of c5");
    let shim5 = shim_of(pid5);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(shim5).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill shim");
    wait_gone(shim5);
    // berthd notices on the next call, cleans up and the task is gone, as with containerd.
    let err = fails(
        &env.ctr(&["tasks", "rm", "c5"]),
        "tasks rm after the shim died",
    );
    assert!(err.contains("no running task found"), "{err}");
    assert!(env.task_row("c5").is_none());
    wait_gone(pid5);
    events.wait_for(&["c5"], Duration::from_secs(5));
    let text = events.text();
    assert!(
        text.lines()
            .any(|l| l.contains("/tasks/exit") && l.contains("\"c5\"")),
        "{text}"
    );
    ok(&env.ctr(&["containers", "rm", "c5"]), "containers rm c5");

    // A runtime whose shim is not installed: containerd's error, nothing left behind.
    let err = fails(
        &env.run(
            &["--rm", "--runtime", "io.example.nope.v1"],
            "c4",
            &["true"],
        ),
        "run with an unknown runtime",
    );
    assert!(err.contains("io.example.nope.v1"), "{err}");
    assert!(
        err.contains("binary not installed \"containerd-shim-nope-v1\""),
        "{err}"
    );
    let _ = env.ctr(&["containers", "rm", "c4"]);

    let tasks_dir = env.d.state.join("tasks").join("default");
    let left: Vec<_> = std::fs::read_dir(&tasks_dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "bundles left: {left:?}");
    let mounts = mounts_under(env.d.dir.path());
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
}

/// berthd drives containerd's own shim when the runtimes table says so.
#[test]
fn berthd_drives_containerd_shim_runc_v2() {
    let mut env = Env::with(Daemon::start_with_config(
        "[runtimes.\"io.containerd.runc.v2\"]\nshim = \"containerd-shim-runc-v2\"\nruntime = \"runc\"\n",
    ));
    let out = ok(&env.run(&["--rm"], "c1", &["echo", "hello"]), "run echo");
    assert_eq!(out.trim(), "hello");
    let out = env.run(&["--rm"], "c2", &["sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");

    ok(&env.run(&["-d"], "c3", &["sleep", "1000"]), "run -d");
    env.wait_status("c3", "RUNNING");
    let pid: u32 = env
        .task_row("c3")
        .and_then(|r| r.get(1)?.parse().ok())
        .expect("pid of c3");
    let shim = shim_of(pid);
    let exe = std::fs::read_link(format!("/proc/{shim}/exe")).expect("shim exe");
    assert!(
        exe.display()
            .to_string()
            .ends_with("containerd-shim-runc-v2"),
        "{}",
        exe.display()
    );
    // Live restore with containerd's shim: berthd dies, comes back and finds it again.
    env.d.kill9();
    env.d.restart();
    env.wait_status("c3", "RUNNING");
    assert_eq!(shim_of(pid), shim);
    let out = ok(
        &env.ctr(&["tasks", "exec", "--exec-id", "e1", "c3", "ls", "/"]),
        "exec ls",
    );
    assert!(out.lines().any(|l| l == "bin"), "{out}");
    ok(&env.ctr(&["tasks", "kill", "-s", "SIGKILL", "c3"]), "kill");
    env.wait_status("c3", "STOPPED");
    ok(&env.ctr(&["tasks", "rm", "c3"]), "tasks rm");
    ok(&env.ctr(&["containers", "rm", "c3"]), "containers rm");
    wait_gone(shim);
    let mounts = mounts_under(env.d.dir.path());
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
}

/// `ctr run -t` against berthd, under a pty (`script`): what is typed is echoed and run.
#[test]
fn run_with_a_terminal_echoes_input() {
    let env = Env::start();
    let line = format!(
        "{} -a {} run -t --rm --fifo-dir {} {IMAGE} c1 sh",
        berth_tests::system_bin("ctr").display(),
        env.d.address.display(),
        env.fifo.display()
    );
    let mut child = Command::new(berth_tests::system_bin("script"))
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
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ctr run -t did not end");
        }
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
    assert_eq!(out.status.code(), Some(7), "{text}");
    assert!(env.task_row("c1").is_none());
}

/// The harness's safety net: a test that fails before removing its container leaves no
/// shim, container process or mount behind once its daemon is dropped.
#[test]
fn a_dropped_daemon_leaves_no_shim_or_mount() {
    let env = Env::start();
    ok(&env.run(&["-d"], "leak1", &["sleep", "1000"]), "run -d");
    env.wait_status("leak1", "RUNNING");
    let pid: u32 = env
        .task_row("leak1")
        .and_then(|r| r.get(1)?.parse().ok())
        .expect("pid of leak1");
    let shim = shim_of(pid);
    let dir = env.d.dir.path().to_path_buf();
    assert!(!mounts_under(&dir).is_empty(), "the rootfs is mounted");
    drop(env);
    wait_gone(shim);
    wait_gone(pid);
    assert!(mounts_under(&dir).is_empty(), "{:?}", mounts_under(&dir));
}

/// Puts container `id` in pod `sandbox` the way the CRI does: the
/// `io.kubernetes.cri.sandbox-id` annotation in its spec.
fn annotate_sandbox(d: &Daemon, id: &str, sandbox: &str) {
    use berth_proto::containerd::services::containers::v1 as cpb;
    use cpb::containers_client::ContainersClient;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut ct = ContainersClient::new(d.channel().await);
        let got = ct
            .get(berth_tests::in_ns(
                "default",
                cpb::GetContainerRequest { id: id.into() },
            ))
            .await
            .expect("get container")
            .into_inner();
        let mut container = got.container.expect("container");
        let spec = container.spec.as_mut().expect("spec");
        let mut json: serde_json::Value = serde_json::from_slice(&spec.value).expect("spec json");
        json["annotations"]["io.kubernetes.cri.sandbox-id"] = sandbox.into();
        spec.value = serde_json::to_vec(&json).expect("encode spec");
        ct.update(berth_tests::in_ns(
            "default",
            cpb::UpdateContainerRequest {
                container: Some(container),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["spec".into()],
                }),
            },
        ))
        .await
        .expect("update container");
    });
}

/// The Tasks Start call on an existing task (`ctr tasks start` would create one first).
fn start_over_grpc(d: &Daemon, id: &str) -> Result<u32, tonic::Status> {
    use berth_proto::containerd::services::tasks::v1 as tpb;
    use tpb::tasks_client::TasksClient;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut tasks = TasksClient::new(d.channel().await);
        let req = tpb::StartRequest {
            container_id: id.into(),
            exec_id: String::new(),
        };
        let resp = tasks.start(berth_tests::in_ns("default", req)).await?;
        Ok(resp.into_inner().pid)
    })
}

#[test]
fn a_pod_is_served_by_one_shim_across_restarts() {
    let mut env = Env::start();
    for id in ["c4", "c5"] {
        ok(
            &env.ctr(&["containers", "create", IMAGE, id, "sleep", "1000"]),
            "create",
        );
        annotate_sandbox(&env.d, id, "c4");
        ok(&env.ctr(&["tasks", "start", "-d", id]), "start -d");
        env.wait_status(id, "RUNNING");
    }
    let pid = |env: &Env, id: &str| -> u32 {
        env.task_row(id)
            .and_then(|r| r.get(1)?.parse().ok())
            .expect("task pid")
    };
    let shim = shim_of(pid(&env, "c4"));
    assert_eq!(shim_of(pid(&env, "c5")), shim, "one shim serves the pod");

    // The sandbox's task goes first; the shim it was started for serves c5 on, also after
    // a restart of berthd (which ends the shims that serve no task it knows).
    ok(&env.ctr(&["tasks", "kill", "-s", "KILL", "c4"]), "kill c4");
    env.wait_status("c4", "STOPPED");
    ok(&env.ctr(&["tasks", "rm", "c4"]), "rm c4");
    env.d.restart();
    env.wait_status("c5", "RUNNING");
    assert!(
        Path::new(&format!("/proc/{shim}")).exists(),
        "the pod's shim was ended"
    );
    assert_eq!(shim_of(pid(&env, "c5")), shim);

    // The daemon's rules: a stopped task does not start again.
    ok(&env.ctr(&["tasks", "kill", "-s", "KILL", "c5"]), "kill c5");
    env.wait_status("c5", "STOPPED");
    let err = start_over_grpc(&env.d, "c5").expect_err("start of a stopped task");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message()
            .contains("cannot start container c5 in state stopped"),
        "{err:?}"
    );
    ok(&env.ctr(&["tasks", "rm", "c5"]), "rm c5");
    wait_gone(shim);
}
