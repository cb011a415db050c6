//! Restart policies (`--restart`), enforced by berthd's supervisor with no client running:
//! on-failure's limit, exit 0, `always` across a crash of berthd during which the
//! container died, `unless-stopped` remembering a user's stop across a berthd restart while
//! `always` comes back, a stop never fought, and `berth update --restart`. Each test runs
//! its own berthd.

use std::process::Output;
use std::time::{Duration, Instant};

use berth_tests::{Daemon, fails, is_alive, ok, shim_processes, wait_dead};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

const IMAGE: &str = "example.com/busybox:latest";

struct Env {
    d: Daemon,
    _work: tempfile::TempDir,
}

impl Env {
    fn start() -> Env {
        let (d, work) = Daemon::with_busybox();
        Env { d, _work: work }
    }

    fn berth(&self, args: &[&str]) -> Output {
        self.d.berth(args)
    }

    fn ok(&self, args: &[&str]) -> String {
        ok(&self.berth(args), &format!("berth {args:?}"))
    }

    /// `berth run -d --name NAME --restart POLICY IMAGE cmd...`.
    fn run(&self, name: &str, policy: &str, cmd: &[&str]) {
        let mut args = vec!["run", "-d", "--name", name, "--restart", policy, IMAGE];
        args.extend(cmd);
        self.ok(&args);
    }

    fn inspect(&self, name: &str) -> Value {
        let v: Value = serde_json::from_str(&self.ok(&["inspect", name])).expect("inspect JSON");
        v[0].clone()
    }

    fn status(&self, name: &str) -> String {
        self.inspect(name)["State"]["Status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits (up to 60 s) until `check` holds for the container's inspect object.
    fn wait_until(&self, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.inspect(name);
            if check(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {name} to be {what}: {v:#}\n{}",
                self.d.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_running(&self, name: &str) -> Value {
        self.wait_until(name, "running", |v| {
            v["State"]["Status"] == "running" && v["State"]["Pid"].as_u64().unwrap_or(0) > 0
        })
    }

    fn wait_exited(&self, name: &str) -> Value {
        self.wait_until(name, "exited", |v| v["State"]["Status"] == "exited")
    }

    fn pid(&self, name: &str) -> u32 {
        self.inspect(name)["State"]["Pid"].as_u64().unwrap_or(0) as u32
    }

    fn log_lines(&self, name: &str, line: &str) -> usize {
        self.ok(&["logs", name])
            .lines()
            .filter(|l| *l == line)
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

#[test]
fn on_failure_restarts_exactly_its_limit() {
    let env = Env::start();
    env.run("flaky", "on-failure:3", &["sh", "-c", "echo run; exit 1"]);
    let v = env.wait_until("flaky", "exited after 3 restarts", |v| {
        v["State"]["Status"] == "exited" && v["RestartCount"] == 3
    });
    assert_eq!(v["State"]["ExitCode"], 1, "{v:#}");
    assert_eq!(v["State"]["Restarting"], false, "{v:#}");
    assert_eq!(
        v["HostConfig"]["RestartPolicy"],
        serde_json::json!({"Name": "on-failure", "MaximumRetryCount": 3})
    );
    // No fourth restart comes: the next back-off would be 800 ms.
    std::thread::sleep(Duration::from_secs(2));
    let v = env.inspect("flaky");
    assert_eq!(v["RestartCount"], 3, "{v:#}");
    assert_eq!(v["State"]["Status"], "exited", "{v:#}");
    // The first run and three restarts, all in the same log.
    assert_eq!(env.log_lines("flaky", "run"), 4);
    let ps = env.ok(&["ps", "-a"]);
    let row = ps.lines().find(|l| l.ends_with("flaky")).expect("ps row");
    assert!(row.contains("Exited (1)"), "{row}");
}

#[test]
fn on_failure_leaves_a_success_alone() {
    let env = Env::start();
    env.run("done", "on-failure", &["sh", "-c", "echo run; exit 0"]);
    let v = env.wait_exited("done");
    assert_eq!(v["State"]["ExitCode"], 0, "{v:#}");
    std::thread::sleep(Duration::from_secs(1));
    let v = env.inspect("done");
    assert_eq!(v["State"]["Status"], "exited", "{v:#}");
    assert_eq!(v["RestartCount"], 0, "{v:#}");
    assert_eq!(env.log_lines("done", "run"), 1);
}

#[test]
fn a_crash_loop_backs_off_and_goes_with_rm() {
    let env = Env::start();
    env.run("crashy", "always", &["sh", "-c", "echo run; exit 1"]);
    // Four restarts in, the back-off is 1.6 s: the container waits most of its time.
    let v = env.wait_until("crashy", "waiting after its fourth restart", |v| {
        v["RestartCount"].as_u64().is_some_and(|n| n >= 4) && v["State"]["Restarting"] == true
    });
    assert_eq!(v["State"]["Status"], "restarting", "{v:#}");
    let ps = env.ok(&["ps"]);
    let row = ps.lines().find(|l| l.ends_with("crashy")).expect("ps row");
    assert!(row.contains("Restarting (1)"), "{row}");
    assert_eq!(
        v["HostConfig"]["RestartPolicy"],
        serde_json::json!({"Name": "always", "MaximumRetryCount": 0})
    );
    // Not removed without -f (Docker refuses a restarting or a running container)...
    let err = fails(
        &env.berth(&["rm", "crashy"]),
        "rm of a crash-looping container",
    );
    assert!(
        err.contains("You cannot remove a restarting container"),
        "{err}"
    );
    // ...and removed with it while it crashes and waits out its back-offs: nothing comes
    // back.
    env.ok(&["rm", "-f", "crashy"]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(env.ok(&["ps", "-a", "-q"]), "");
    let address = env.d.address.display().to_string();
    let shims: Vec<_> = shim_processes()
        .into_iter()
        .filter(|(_, args)| args.iter().any(|a| a.contains(&address)))
        .collect();
    assert!(shims.is_empty(), "shims left: {shims:?}");
    let log = env.d.log_text();
    assert!(
        !log.contains("restart failed"),
        "a restart raced the removal:\n{log}"
    );
}

#[test]
fn always_comes_back_after_berthd_crashed_and_the_container_died() {
    let mut env = Env::start();
    env.run(
        "keeper",
        "always",
        &["sh", "-c", "echo run; exec sleep 1000"],
    );
    let first = env.wait_running("keeper")["State"]["Pid"]
        .as_u64()
        .unwrap_or(0) as u32;
    // A crash while berthd runs is restarted (after 100 ms).
    kill(Pid::from_raw(first as i32), Signal::SIGKILL).expect("kill the container's process");
    let v = env.wait_until("keeper", "restarted", |v| {
        v["State"]["Status"] == "running"
            && v["State"]["Pid"]
                .as_u64()
                .is_some_and(|p| p > 0 && p != u64::from(first))
    });
    assert_eq!(v["RestartCount"], 1, "{v:#}");
    let pid = env.pid("keeper");
    assert!(is_alive(pid));

    // berthd dies; while it is down the container's process is killed too.
    env.d.kill9();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill the container's process");
    wait_dead(pid, Duration::from_secs(10), "the container's process");
    env.d.restart();

    let v = env.wait_until("keeper", "running again", |v| {
        v["State"]["Status"] == "running"
            && v["State"]["Pid"]
                .as_u64()
                .is_some_and(|p| p > 0 && p != u64::from(pid))
    });
    let new_pid = v["State"]["Pid"].as_u64().unwrap_or(0) as u32;
    assert!(is_alive(new_pid), "the restarted process runs");
    // It is really the container: an exec sees its process, and its output is logged.
    let ps = env.ok(&["exec", "keeper", "ps"]);
    assert!(ps.contains("sleep 1000"), "{ps}");
    assert_eq!(env.log_lines("keeper", "run"), 3);
    // Started afresh by the new berthd, as Docker's daemon does: the count starts over.
    assert_eq!(v["RestartCount"], 0, "{v:#}");

    // While berthd runs, a crash of the container is restarted too.
    kill(Pid::from_raw(new_pid as i32), Signal::SIGKILL).expect("kill the container's process");
    let v = env.wait_until("keeper", "restarted", |v| {
        v["State"]["Status"] == "running"
            && v["State"]["Pid"]
                .as_u64()
                .is_some_and(|p| p > 0 && p != u64::from(new_pid))
    });
    assert_eq!(v["RestartCount"], 1, "{v:#}");
    assert_eq!(env.log_lines("keeper", "run"), 4);
}

#[test]
fn unless_stopped_comes_back_when_its_task_vanished_with_berthd_down() {
    let mut env = Env::start();
    env.run(
        "lost",
        "unless-stopped",
        &["sh", "-c", "echo run; exec sleep 1000"],
    );
    env.wait_running("lost");
    let pid = env.pid("lost");
    let shim = berth_tests::parent_pid(pid).expect("the container's shim");

    // berthd dies, then the shim and the container's process: nothing of the task is left
    // for the next berthd to reconnect to.
    env.d.kill9();
    for p in [shim, pid] {
        kill(Pid::from_raw(p as i32), Signal::SIGKILL).expect("kill");
    }
    wait_dead(pid, Duration::from_secs(10), "the container's process");
    wait_dead(shim, Duration::from_secs(10), "the shim");
    env.d.restart();

    let v = env.wait_until("lost", "running again", |v| {
        v["State"]["Status"] == "running"
            && v["State"]["Pid"]
                .as_u64()
                .is_some_and(|p| p > 0 && p != u64::from(pid))
    });
    assert!(is_alive(v["State"]["Pid"].as_u64().unwrap_or(0) as u32));
    // Its output still goes to its log file.
    assert_eq!(env.log_lines("lost", "run"), 2);
}

#[test]
fn a_stop_is_not_fought_and_unless_stopped_remembers_it() {
    let mut env = Env::start();
    env.run("until", "unless-stopped", &["sleep", "1000"]);
    env.run("ever", "always", &["sleep", "1000"]);
    env.wait_running("until");
    env.wait_running("ever");
    let ever_pid = env.pid("ever");

    // busybox sleep ignores SIGTERM: the stop ends with SIGKILL after a second.
    env.ok(&["stop", "-t", "1", "until", "ever"]);
    env.wait_exited("until");
    env.wait_exited("ever");
    // The stop holds: no restart comes (the first back-off would be 100 ms).
    std::thread::sleep(Duration::from_secs(2));
    for name in ["until", "ever"] {
        let v = env.inspect(name);
        assert_eq!(v["State"]["Status"], "exited", "{name}: {v:#}");
        assert_eq!(v["RestartCount"], 0, "{name}: {v:#}");
    }
    assert!(!is_alive(ever_pid));

    // berthd restarts: `always` runs again, `unless-stopped` remembers the stop.
    env.d.restart();
    env.wait_running("ever");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(env.status("until"), "exited");
    assert_eq!(env.status("ever"), "running");
    assert!(is_alive(env.pid("ever")));

    // A kill is a user's stop too; a start clears it, and the policy holds again.
    env.ok(&["kill", "ever"]);
    env.wait_exited("ever");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(env.status("ever"), "exited");
    env.ok(&["start", "until"]);
    let pid = env.wait_running("until")["State"]["Pid"]
        .as_u64()
        .unwrap_or(0) as u32;
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill the container's process");
    let v = env.wait_until("until", "restarted", |v| {
        v["State"]["Status"] == "running"
            && v["State"]["Pid"]
                .as_u64()
                .is_some_and(|p| p > 0 && p != u64::from(pid))
    });
    assert_eq!(v["RestartCount"], 1, "{v:#}");
}

#[test]
fn update_changes_the_policy_and_flags_are_checked() {
    let env = Env::start();
    env.run("job", "no", &["sh", "-c", "echo run; exit 2"]);
    let v = env.wait_exited("job");
    assert_eq!(
        v["HostConfig"]["RestartPolicy"],
        serde_json::json!({"Name": "no", "MaximumRetryCount": 0})
    );
    assert_eq!(
        env.ok(&["update", "--restart", "on-failure:2", "job"]),
        "job\n"
    );
    assert_eq!(
        env.inspect("job")["HostConfig"]["RestartPolicy"],
        serde_json::json!({"Name": "on-failure", "MaximumRetryCount": 2})
    );
    env.ok(&["start", "job"]);
    let v = env.wait_until("job", "exited after 2 restarts", |v| {
        v["State"]["Status"] == "exited" && v["RestartCount"] == 2
    });
    assert_eq!(v["State"]["ExitCode"], 2, "{v:#}");
    // The first run, the start, and two restarts.
    assert_eq!(env.log_lines("job", "run"), 4);

    // Docker's refusals.
    let err = fails(&env.berth(&["update", "job"]), "update without flags");
    assert!(
        err.contains("you must provide one or more flags when using this command"),
        "{err}"
    );
    let err = fails(
        &env.berth(&["update", "--restart", "sometimes", "job"]),
        "update",
    );
    assert!(
        err.contains("Error response from daemon: invalid restart policy 'sometimes'"),
        "{err}"
    );
    let out = env.berth(&["run", "-d", "--restart", "always", "--rm", IMAGE, "true"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("conflicting options: cannot specify both --restart and --rm"),
        "{out:?}"
    );
    let out = env.berth(&["create", "--restart", "always:3", IMAGE, "true"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "Error response from daemon: maximum retry count cannot be used with restart policy 'always'"
        ),
        "{out:?}"
    );
    let out = env.berth(&["run", "-d", "--restart", "on-failure:x", IMAGE, "true"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("invalid restart policy format: maximum retry count must be an integer"),
        "{out:?}"
    );
    // Nothing was created by the refused commands.
    let all = env.ok(&["ps", "-a", "-q"]);
    assert_eq!(all.lines().count(), 1, "{all}");
}
