//! Bad input to `berth run` / `exec` / `stop` (and `ctr run`) against berthd: each is a
//! clear error with Docker's exit code, and nothing is left behind — no container record,
//! task, bundle, mount, cgroup or shim process.

use std::path::Path;
use std::process::Output;

use berth_tests::fixtures::import_busybox;
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

    fn id_of(&self, name: &str) -> String {
        let out = ok(&self.berth(&["inspect", name]), &format!("inspect {name}"));
        let v: serde_json::Value = serde_json::from_str(&out).expect("inspect JSON");
        v[0]["Id"].as_str().expect("Id").to_string()
    }

    /// Nothing of container `id` is left: record, task, bundle, mounts, cgroups, shim.
    fn assert_nothing_left(&self, id: &str) {
        let all = ok(&self.berth(&["ps", "-a", "-q", "--no-trunc"]), "ps -a");
        assert!(!all.contains(id), "container {id} still listed:\n{all}");
        let tasks = ok(&self.d.ctr(&["tasks", "ls"]), "ctr tasks ls");
        assert!(!tasks.contains(id), "task {id} left:\n{tasks}");
        let bundle = self.d.state.join("tasks").join("default").join(id);
        assert!(!bundle.exists(), "bundle {} left", bundle.display());
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        assert!(
            !mounts.lines().any(|l| l.contains(id)),
            "mount of {id} left"
        );
        for cgroup in cgroups_of("default", id) {
            assert!(!cgroup.exists(), "cgroup {} left", cgroup.display());
        }
        // A shim exits right after it answered Shutdown: give it a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !shims_of(id).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(shims_of(id), Vec::<u32>::new(), "shim of {id} left");
        let active = ok(&self.d.ctr(&["snapshots", "ls"]), "ctr snapshots ls");
        assert!(!active.contains(id), "snapshot {id} left:\n{active}");
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let all = self.berth(&["ps", "-a", "-q", "--no-trunc"]);
        for id in String::from_utf8_lossy(&all.stdout).split_whitespace() {
            let _ = self.berth(&["rm", "-f", id]);
        }
    }
}

/// Where the container's cgroups would be in every hierarchy (cgroupsPath `/<ns>/<id>`).
fn cgroups_of(ns: &str, id: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join(ns).join(id))
                .collect()
        })
        .unwrap_or_default()
}

/// Pids of shim processes started for task `id`.
fn shims_of(id: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_shim = args
            .first()
            .is_some_and(|a| a.ends_with(b"containerd-shim-berth-v2"));
        if is_shim
            && args
                .windows(2)
                .any(|w| w[0] == b"-id" && w[1] == id.as_bytes())
        {
            pids.push(pid);
        }
    }
    pids
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn bad_input_is_a_clear_error_and_leaves_nothing() {
    let env = Env::start();
    assert!(Path::new("/sys/fs/cgroup").exists());

    // The checks below see a live container's traces (so their absence means something).
    ok(
        &env.berth(&["run", "-d", "--name", "live", IMAGE, "sleep", "100"]),
        "run -d",
    );
    let id = env.id_of("live");
    assert!(
        cgroups_of("default", &id).iter().any(|c| c.exists()),
        "no cgroup found for a running container"
    );
    assert_eq!(shims_of(&id).len(), 1, "its shim");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(mounts.lines().any(|l| l.contains(&id)), "its rootfs mount");
    ok(&env.berth(&["rm", "-f", "live"]), "rm -f live");
    env.assert_nothing_left(&id);

    // A command that is not in the image: Docker's 127, the runtime's reason.
    let out = env.berth(&["run", "--name", "nf", IMAGE, "no-such-command"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out));
    assert!(text(&out).contains("no-such-command"), "{}", text(&out));
    let id = env.id_of("nf");
    ok(&env.berth(&["rm", "nf"]), "rm nf");
    env.assert_nothing_left(&id);
    // The same with --rm: nothing left without asking.
    let out = env.berth(&["run", "--rm", "--name", "nf2", IMAGE, "/no/such/binary"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out));
    let all = ok(&env.berth(&["ps", "-a", "-q"]), "ps -a");
    assert_eq!(all.trim(), "", "--rm left a container");

    // A file that is not executable: 126.
    let out = env.berth(&["run", "--rm", IMAGE, "/etc/passwd"]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out));

    // An image nobody pulled: 125, Docker's words, no record, no snapshot.
    let before = ok(&env.d.ctr(&["snapshots", "ls"]), "snapshots")
        .lines()
        .count();
    let out = env.berth(&["run", "--rm", "example.com/nope:1", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    assert!(
        text(&out).contains("Unable to find image"),
        "{}",
        text(&out)
    );
    let after = ok(&env.d.ctr(&["snapshots", "ls"]), "snapshots")
        .lines()
        .count();
    assert_eq!(before, after, "a snapshot was left");
    assert_eq!(ok(&env.berth(&["ps", "-a", "-q"]), "ps").trim(), "");

    // A runtime whose shim is not installed: a clear error naming both (containerd's
    // words), nothing left.
    let out = env.berth(&[
        "run",
        "--name",
        "rt",
        "--runtime",
        "io.example.nope.v1",
        IMAGE,
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    assert!(
        text(&out).contains("io.example.nope.v1")
            && text(&out).contains("binary not installed \"containerd-shim-nope-v1\""),
        "{}",
        text(&out)
    );
    let id = env.id_of("rt");
    ok(&env.berth(&["rm", "rt"]), "rm rt");
    env.assert_nothing_left(&id);

    // exec into a container that has stopped: Docker's message, exit 1.
    ok(
        &env.berth(&["run", "-d", "--name", "done", IMAGE, "true"]),
        "run -d true",
    );
    ok(&env.berth(&["wait", "done"]), "wait");
    let err = fails(&env.berth(&["exec", "done", "ls"]), "exec into stopped");
    assert!(err.contains("is not running"), "{err}");
    let id = env.id_of("done");
    ok(&env.berth(&["rm", "done"]), "rm done");
    env.assert_nothing_left(&id);

    // stop / rm / logs / exec of a container that does not exist.
    for verb in [&["stop"][..], &["rm"], &["logs"], &["exec"], &["kill"]] {
        let mut args = verb.to_vec();
        args.push("ghost");
        if verb == ["exec"] {
            args.push("true");
        }
        let out = env.berth(&args);
        assert_eq!(out.status.code(), Some(1), "{verb:?}: {}", text(&out));
        assert!(
            text(&out).contains("No such container: ghost"),
            "{verb:?}: {}",
            text(&out)
        );
    }
}
