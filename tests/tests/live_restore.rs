//! Live restore: containers outlive a `kill -9` of berthd, the restarted berthd reconnects
//! to their shims, reports exits that happened while it was down, and cleans up after shims
//! that died (while it was down, or while it runs).

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use berth_proto::containerd::services::tasks::v1 as tpb;
use berth_proto::containerd::v1::types::Status;
use berth_tests::fixtures::import_busybox;
use berth_tests::{
    Background, Daemon, group_and_session, in_ns, is_alive, mounts_under, ok, parent_pid,
    system_bin, wait_dead,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const IMAGE: &str = "example.com/busybox:latest";

struct Env {
    d: Daemon,
    ns: &'static str,
    fifo: PathBuf,
    /// Containers to remove, and processes to kill, if the test fails half-way.
    ids: Vec<String>,
    pids: Vec<u32>,
    _work: tempfile::TempDir,
}

impl Env {
    fn start(ns: &'static str) -> Env {
        let d = Daemon::start();
        let work = tempfile::tempdir().expect("tempdir");
        let env = Env {
            d,
            ns,
            fifo: work.path().join("fifo"),
            ids: Vec::new(),
            pids: Vec::new(),
            _work: work,
        };
        import_busybox(env._work.path(), |a| env.ctr(a));
        env
    }

    fn ctr(&self, args: &[&str]) -> Output {
        let mut all = vec!["-n", self.ns];
        all.extend(args);
        self.d.ctr(&all)
    }

    /// `ctr ARGS` in this namespace, running in the background.
    fn ctr_background(&self, args: &[&str]) -> Background {
        let mut cmd = std::process::Command::new(system_bin("ctr"));
        cmd.arg("-a")
            .arg(&self.d.address)
            .args(["-n", self.ns])
            .args(args);
        Background::spawn(cmd)
    }

    /// `ctr run -d IMAGE id cmd...`; returns the task's pid and its shim's pid.
    fn run_detached(&mut self, id: &str, cmd: &[&str]) -> (u32, u32) {
        let fifo = self.fifo.display().to_string();
        let mut args = vec!["run", "-d", "--fifo-dir", &fifo, IMAGE, id];
        args.extend(cmd);
        self.ids.push(id.to_string());
        ok(&self.ctr(&args), &format!("run -d {id}"));
        self.wait_status(id, Some("RUNNING"));
        let pid = self.task_pid(id);
        let shim = parent_pid(pid).expect("shim of the task");
        self.pids.extend([pid, shim]);
        (pid, shim)
    }

    /// `ctr tasks ls` as (id, pid, status) rows.
    fn tasks(&self) -> Vec<(String, u32, String)> {
        let out = ok(&self.ctr(&["tasks", "ls"]), "tasks ls");
        out.lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((
                    f.first()?.to_string(),
                    f.get(1)?.parse().ok()?,
                    f.get(2)?.to_string(),
                ))
            })
            .collect()
    }

    fn task_pid(&self, id: &str) -> u32 {
        self.tasks()
            .into_iter()
            .find(|t| t.0 == id)
            .map(|t| t.1)
            .unwrap_or_else(|| panic!("task {id} is not listed"))
    }

    /// Waits until `tasks ls` shows `id` with `want` (None: not listed).
    fn wait_status(&self, id: &str, want: Option<&str>) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.tasks().into_iter().find(|t| t.0 == id).map(|t| t.2);
            if got.as_deref() == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "task {id}: {got:?}, want {want:?}\n{}",
                self.d.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn containers(&self) -> Vec<String> {
        ok(&self.ctr(&["containers", "ls", "-q"]), "containers ls")
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn bundles(&self) -> Vec<String> {
        std::fs::read_dir(self.d.state.join("tasks").join(self.ns))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The init process of `id` through the Tasks gRPC Get.
    fn get(&self, id: &str) -> berth_proto::containerd::v1::types::Process {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut c = tpb::tasks_client::TasksClient::new(self.d.channel().await);
            c.get(in_ns(
                self.ns,
                tpb::GetRequest {
                    container_id: id.to_string(),
                    exec_id: String::new(),
                },
            ))
            .await
            .expect("Tasks.Get")
            .into_inner()
            .process
            .expect("process")
        })
    }

    /// Everything the test started is removed; nothing is left under the daemon's dirs.
    fn assert_clean(&self) {
        assert!(
            self.bundles().is_empty(),
            "bundles left: {:?}",
            self.bundles()
        );
        let mounts = mounts_under(self.d.dir.path());
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    }
}

impl Drop for Env {
    /// After a failure, no container or shim outlives the test.
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = self.ctr(&["tasks", "rm", "-f", id]);
            let _ = self.ctr(&["containers", "rm", id]);
        }
        for pid in &self.pids {
            if is_alive(*pid) {
                let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
            }
        }
    }
}

fn signal(pid: u32, sig: Signal) {
    kill(Pid::from_raw(i32::try_from(pid).expect("pid")), sig).expect("signal");
}

#[test]
fn ten_containers_survive_kill9_of_berthd() {
    let mut env = Env::start("live-restore-ten");
    let mut started = Vec::new();
    for n in 0..9 {
        let id = format!("c{n}");
        let (pid, shim) = env.run_detached(&id, &["sleep", "1000"]);
        started.push((id, pid, shim));
    }
    // The tenth ends with a status only its real exit can give.
    let (pid9, shim9) = env.run_detached(
        "c9",
        &[
            "sh",
            "-c",
            "trap 'exit 42' TERM; while :; do sleep 0.1; done",
        ],
    );

    // Shims are in a process group and session of their own: a signal to berthd's group
    // (a terminal's ^C) does not reach them.
    let berthd = env.d.pid();
    let (d_group, d_session) = group_and_session(berthd).expect("berthd's group");
    for (_, _, shim) in &started {
        let (group, session) = group_and_session(*shim).expect("shim's group");
        assert_ne!(group, d_group, "shim {shim} is in berthd's process group");
        assert_ne!(session, d_session, "shim {shim} is in berthd's session");
    }

    env.d.kill9();
    for (id, pid, shim) in &started {
        assert!(is_alive(*pid), "task {id} died with berthd");
        assert!(is_alive(*shim), "shim of {id} died with berthd");
    }
    signal(pid9, Signal::SIGTERM);
    wait_dead(pid9, Duration::from_secs(10), "c9's process");
    env.d.restart();
    assert!(
        env.d.log_text().contains("task restored"),
        "{}",
        env.d.log_text()
    );

    let tasks = env.tasks();
    for (id, pid, _) in &started {
        let row = tasks.iter().find(|t| &t.0 == id);
        assert_eq!(
            row.map(|t| (t.1, t.2.as_str())),
            Some((*pid, "RUNNING")),
            "{tasks:?}"
        );
    }
    let p9 = env.get("c9");
    assert_eq!(p9.status, Status::Stopped as i32, "{p9:?}");
    assert_eq!(p9.exit_status, 42, "{p9:?}");
    env.wait_status("c9", Some("STOPPED"));

    for (id, _, _) in &started {
        ok(
            &env.ctr(&["tasks", "exec", "--exec-id", "e1", id, "true"]),
            &format!("exec into {id}"),
        );
        ok(&env.ctr(&["tasks", "kill", "-s", "SIGKILL", id]), "kill");
    }
    for (id, _, _) in &started {
        env.wait_status(id, Some("STOPPED"));
        ok(&env.ctr(&["tasks", "rm", id]), &format!("tasks rm {id}"));
        ok(&env.ctr(&["containers", "rm", id]), "containers rm");
    }
    ok(&env.ctr(&["tasks", "rm", "c9"]), "tasks rm c9");
    ok(&env.ctr(&["containers", "rm", "c9"]), "containers rm c9");

    for (id, pid, shim) in started.iter().chain([&("c9".to_string(), pid9, shim9)]) {
        wait_dead(*shim, Duration::from_secs(10), &format!("shim of {id}"));
        wait_dead(*pid, Duration::from_secs(10), &format!("task {id}"));
    }
    assert!(env.tasks().is_empty(), "{:?}", env.tasks());
    env.assert_clean();
}

/// The restarted berthd serves its socket before the previous run's tasks are restored:
/// while one shim cannot answer (stopped), Version and the image store answer, and a task
/// call is held until the restore is done, then sees every task.
#[test]
fn socket_serves_while_tasks_are_restored() {
    let mut env = Env::start("live-restore-gate");
    let (pid1, _) = env.run_detached("g1", &["sleep", "1000"]);
    let (pid2, shim2) = env.run_detached("g2", &["sleep", "1000"]);

    // g2's shim cannot answer the restore's probe until it is continued.
    signal(shim2, Signal::SIGSTOP);
    env.d.crash_and_spawn();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !env.ctr(&["version"]).status.success() {
        assert!(Instant::now() < deadline, "{}", env.d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut held = env.ctr_background(&["tasks", "ls"]);
    let images = ok(
        &env.ctr(&["images", "ls", "-q"]),
        "images ls during restore",
    );
    assert!(images.contains(IMAGE), "{images}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        held.try_wait().is_none(),
        "tasks ls answered before the restore was done: {}",
        held.text()
    );
    let log = env.d.log_text();
    assert_eq!(
        log.matches(berth_tests::READY).count(),
        1,
        "the restart's restore finished with g2's shim stopped:\n{log}"
    );

    signal(shim2, Signal::SIGCONT);
    let (status, text) = held.wait(Duration::from_secs(30));
    assert!(status.success(), "tasks ls: {status}: {text}");
    for (id, pid) in [("g1", pid1), ("g2", pid2)] {
        assert!(
            text.lines().any(|l| l.starts_with(id)
                && l.contains(&pid.to_string())
                && l.contains("RUNNING")),
            "{id} not listed RUNNING once held:\n{text}"
        );
    }
    for id in ["g1", "g2"] {
        ok(&env.ctr(&["tasks", "kill", "-s", "SIGKILL", id]), "kill");
        env.wait_status(id, Some("STOPPED"));
        ok(&env.ctr(&["tasks", "rm", id]), "tasks rm");
        ok(&env.ctr(&["containers", "rm", id]), "containers rm");
    }
    env.assert_clean();
}

#[test]
fn dead_shims_are_cleaned_up() {
    let mut env = Env::start("live-restore-dead");
    let (pid1, shim1) = env.run_detached("a1", &["sleep", "1000"]);
    let (pid2, shim2) = env.run_detached("a2", &["sleep", "1000"]);

    // While berthd runs: the watcher notices the dead shim without any call.
    let events = env.ctr_background(&["events"]);
    std::thread::sleep(Duration::from_millis(300));
    signal(shim2, Signal::SIGKILL);
    let text = events.wait_for(&["/tasks/exit", "/tasks/delete"], Duration::from_secs(10));
    assert!(
        text.lines()
            .any(|l| l.contains("/tasks/exit") && l.contains("\"a2\"")),
        "{text}"
    );
    env.wait_status("a2", None);
    wait_dead(
        pid2,
        Duration::from_secs(10),
        "a2's process after shim delete",
    );
    assert!(env.containers().contains(&"a2".to_string()));
    assert_eq!(env.bundles(), vec!["a1".to_string()]);

    // While berthd is down: the restarted berthd runs `shim delete` for it.
    env.d.kill9();
    signal(shim1, Signal::SIGKILL);
    wait_dead(shim1, Duration::from_secs(10), "a1's shim");
    env.d.restart();
    assert!(env.tasks().is_empty(), "{:?}", env.tasks());
    wait_dead(
        pid1,
        Duration::from_secs(10),
        "a1's process after shim delete",
    );
    let containers = env.containers();
    assert!(
        containers.contains(&"a1".to_string()) && containers.contains(&"a2".to_string()),
        "{containers:?}"
    );

    // A shim that dies after its container exited: `shim delete` reports the real exit
    // status the shim saved (init.exit), not a made-up 137.
    let events = env.ctr_background(&["events"]);
    let (pid3, shim3) = env.run_detached(
        "a3",
        &[
            "sh",
            "-c",
            "trap 'exit 7' TERM; while :; do sleep 0.1; done",
        ],
    );
    signal(pid3, Signal::SIGTERM);
    env.wait_status("a3", Some("STOPPED"));
    signal(shim3, Signal::SIGKILL);
    env.wait_status("a3", None);
    let text = events.wait_for(&["/tasks/delete"], Duration::from_secs(10));
    let exits: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("/tasks/exit") && l.contains("\"a3\""))
        .collect();
    assert_eq!(
        exits.len(),
        2,
        "the shim's exit, then berthd's after shim delete:\n{text}"
    );
    assert!(
        exits.iter().all(|l| l.contains("\"exit_status\":7")),
        "{text}"
    );

    env.assert_clean();
    for id in ["a1", "a2", "a3"] {
        ok(&env.ctr(&["containers", "rm", id]), "containers rm");
    }
}

/// A SIGTERM restart (`systemctl restart`) leaves the containers running; a bundle left
/// half-made by a crash during Create is removed at start-up; List filters, Metrics and the
/// runtime plugin's exports.
#[test]
fn graceful_restart_filters_and_half_made_bundles() {
    let mut env = Env::start("live-restore-term");
    let (pid1, shim1) = env.run_detached("b1", &["sleep", "1000"]);
    let (pid2, _) = env.run_detached("b2", &["sleep", "1000"]);
    ok(
        &env.ctr(&["tasks", "kill", "-s", "SIGKILL", "b2"]),
        "kill b2",
    );
    env.wait_status("b2", Some("STOPPED"));
    wait_dead(pid2, Duration::from_secs(10), "b2's process");

    // What berthd leaves when it dies during Create: a bundle without a shim address.
    let half = env.d.state.join("tasks").join(env.ns).join("half");
    std::fs::create_dir_all(half.join("rootfs")).expect("half-made bundle");
    std::fs::write(half.join("config.json"), berth_tests::minimal_spec()).expect("config");

    env.d.restart();
    assert!(
        is_alive(pid1) && is_alive(shim1),
        "b1 did not survive SIGTERM"
    );
    assert!(!half.exists(), "the half-made bundle is still there");
    env.wait_status("b1", Some("RUNNING"));
    env.wait_status("b2", Some("STOPPED"));
    ok(
        &env.ctr(&["tasks", "exec", "--exec-id", "e1", "b1", "true"]),
        "exec after restart",
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let ch = env.d.channel().await;
        let mut c = tpb::tasks_client::TasksClient::new(ch.clone());
        let list = |filter: &str| {
            let mut c = c.clone();
            let req = in_ns(
                env.ns,
                tpb::ListTasksRequest {
                    filter: filter.to_string(),
                },
            );
            async move {
                let mut ids: Vec<String> = c
                    .list(req)
                    .await
                    .expect("List")
                    .into_inner()
                    .tasks
                    .into_iter()
                    .map(|t| t.id)
                    .collect();
                ids.sort();
                ids
            }
        };
        assert_eq!(list("").await, ["b1", "b2"]);
        assert_eq!(list("status==running").await, ["b1"]);
        assert_eq!(list("status==stopped").await, ["b2"]);
        assert_eq!(list("id==b2").await, ["b2"]);
        assert_eq!(list("container_id==b1").await, ["b1"]);
        assert_eq!(
            list("runtime==io.containerd.runc.v2,status==running").await,
            ["b1"]
        );
        assert!(list("runtime==io.example.none").await.is_empty());
        let bad = c
            .list(in_ns(
                env.ns,
                tpb::ListTasksRequest {
                    filter: "status==".into(),
                },
            ))
            .await
            .expect_err("a bad filter");
        assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");

        // Metrics of a missing task: none (the client then finds the task NotFound).
        let m = c
            .metrics(in_ns(
                env.ns,
                tpb::MetricsRequest {
                    filters: vec!["id==nope".into()],
                },
            ))
            .await
            .expect("Metrics")
            .into_inner();
        assert!(m.metrics.is_empty(), "{m:?}");
        let err = c
            .get(in_ns(
                env.ns,
                tpb::GetRequest {
                    container_id: "nope".into(),
                    exec_id: String::new(),
                },
            ))
            .await
            .expect_err("Get of a missing task");
        assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

        use berth_proto::containerd::services::introspection::v1 as ipb;
        let mut i = ipb::introspection_client::IntrospectionClient::new(ch);
        let plugins = i
            .plugins(ipb::PluginsRequest {
                filters: vec!["type==io.containerd.runtime.v2,id==task".into()],
            })
            .await
            .expect("Plugins")
            .into_inner()
            .plugins;
        assert_eq!(plugins.len(), 1, "{plugins:?}");
        let exports = &plugins[0].exports;
        let root = env.d.root.join("runtime");
        assert_eq!(exports.get("root"), Some(&root.display().to_string()));
        assert!(root.is_dir());
        assert_eq!(
            exports.get("state"),
            Some(&env.d.state.join("tasks").display().to_string())
        );
    });
    let out = env.ctr(&["tasks", "metrics", "nope"]);
    assert!(!out.status.success());

    for id in ["b1", "b2"] {
        let _ = env.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
        env.wait_status(id, Some("STOPPED"));
        ok(&env.ctr(&["tasks", "rm", id]), "tasks rm");
        ok(&env.ctr(&["containers", "rm", id]), "containers rm");
    }
    wait_dead(shim1, Duration::from_secs(10), "b1's shim");
    env.assert_clean();
}
