//! The docker CLI contract (issue 14), the parts built so far: Docker's short flags belong
//! to the commands (`ps -aq`, `ps -n 1`, `images -qa`, `run -h NAME`, `logs -n`), berthd's
//! socket is `-H/--host` (`--address` too), the namespace a long option, usage errors
//! exit 125 as Docker's own errors do, and `--help` exits 0; `ps` and `images` filters;
//! Go templates in `inspect -f` and `ps`/`images --format` (plain, `table`, `json`).

use std::process::Command;

use berth_tests::{Daemon, bin, ok};

const IMAGE: &str = "example.com/busybox:latest";

/// `sh -c script` against `d` (`$B`: the berth binary, `$W`: `work`, `$IMG`: the image).
fn shell(d: &Daemon, work: &std::path::Path, script: &str) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("BERTH_ADDRESS", &d.address)
        .env("B", bin("berth"))
        .env("W", work)
        .env("IMG", IMAGE)
        .output()
        .expect("sh")
}

#[test]
fn dockers_short_flags_and_exit_codes() {
    let (d, _work) = Daemon::with_busybox();
    let berth = |args: &[&str]| ok(&d.berth(args), &format!("berth {args:?}"));
    // -h after run is the hostname, not help.
    assert_eq!(
        berth(&["run", "--rm", "-h", "myhost", IMAGE, "hostname"]),
        "myhost\n"
    );
    let first = berth(&["run", "-d", "--name", "one", IMAGE, "true"]);
    let second = berth(&["run", "-d", "--name", "two", IMAGE, "sleep", "600"]);
    let (first, second) = (first.trim(), second.trim());
    ok(&d.berth(&["wait", "one"]), "wait");
    // -a: every state; -q: short ids; -n 1 / -l: the last created, whatever its state.
    let all = berth(&["ps", "-aq"]);
    assert_eq!(all, format!("{}\n{}\n", &second[..12], &first[..12]));
    assert_eq!(berth(&["ps", "-q"]), format!("{}\n", &second[..12]));
    assert_eq!(
        berth(&["ps", "-q", "-n", "1"]),
        format!("{}\n", &second[..12])
    );
    assert_eq!(berth(&["ps", "-ql"]), format!("{}\n", &second[..12]));
    assert_eq!(berth(&["ps", "-aq", "-n", "5"]).lines().count(), 2);
    // images -qa parses (no intermediate images: the same list as -q).
    assert_eq!(berth(&["images", "-qa"]), berth(&["images", "-q"]));
    // The socket as Docker names it, and as ctr does; the namespace as a long option.
    let sock = d.address.display().to_string();
    for flag in ["-H", "--host", "--address"] {
        let out = Command::new(bin("berth"))
            .args([flag, &sock, "--namespace", "default", "ps", "-q"])
            .output()
            .expect("berth");
        assert_eq!(ok(&out, flag), format!("{}\n", &second[..12]));
    }
    // The old spellings before the verb still work.
    let out = Command::new(bin("berth"))
        .args(["-a", &sock, "-n", "default", "ps", "-q"])
        .output()
        .expect("berth");
    assert_eq!(ok(&out, "-a -n"), format!("{}\n", &second[..12]));
    // Usage errors: 125, as docker's; help: 0.
    let bad = d.berth(&["ps", "--no-such-flag"]);
    assert_eq!(bad.status.code(), Some(125), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--no-such-flag"),
        "{bad:?}"
    );
    assert_eq!(d.berth(&["no-such-verb"]).status.code(), Some(125));
    let help = d.berth(&["ps", "--help"]);
    assert_eq!(help.status.code(), Some(0), "{help:?}");
    assert!(String::from_utf8_lossy(&help.stdout).contains("Usage"));
    // Filters: a status filter sees stopped containers without -a.
    assert_eq!(
        berth(&["ps", "-aq", "-f", "status=exited"]),
        format!("{}\n", &first[..12])
    );
    assert_eq!(
        berth(&["ps", "-q", "--filter", "name=tw"]),
        format!("{}\n", &second[..12])
    );
    assert_eq!(
        berth(&["ps", "-aq", "-f", "exited=0"]),
        format!("{}\n", &first[..12])
    );
    // Without -a an exit-code filter sees running containers only (none has exited).
    assert_eq!(berth(&["ps", "-q", "-f", "exited=0"]), "");
    assert_eq!(berth(&["ps", "-aq", "-f", "exited=3"]), "");
    assert_eq!(
        berth(&["ps", "-aq", "-f", "ancestor=example.com/busybox"])
            .lines()
            .count(),
        2
    );
    let bad = d.berth(&["ps", "-f", "colour=red"]);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    let bad = d.berth(&["ps", "-f", "noequals"]);
    assert_eq!(bad.status.code(), Some(125), "{bad:?}");
    // Go templates: inspect -f, ps and images --format (plain, table, json).
    assert_eq!(
        berth(&["inspect", "-f", "{{.State.Status}} {{.Name}}", "one", "two"]),
        "exited /one\nrunning /two\n"
    );
    let ip = berth(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "two"]);
    assert!(ip.trim().starts_with(&d.network.prefix), "{ip}");
    assert_eq!(
        berth(&["ps", "-a", "--format", "{{.Names}} {{.State}}"]),
        "two running\none exited\n"
    );
    let table = berth(&["ps", "--format", "table {{.ID}}\t{{upper .Names}}"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(
        lines[0].starts_with("CONTAINER ID") && lines[0].ends_with("NAMES"),
        "{table}"
    );
    assert!(
        lines[1].starts_with(&second[..12]) && lines[1].ends_with("TWO"),
        "{table}"
    );
    let json_line = berth(&["ps", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(json_line.trim()).expect("one JSON object");
    assert_eq!(v["Names"], "two");
    assert_eq!(v["State"], "running");
    // images: -q prints image IDs; templates name the repository and tag.
    let ids = berth(&["images", "-q"]);
    assert!(
        ids.lines()
            .all(|l| l.len() == 12 && l.chars().all(|c| c.is_ascii_hexdigit())),
        "{ids}"
    );
    assert_eq!(
        berth(&["images", "--format", "{{.Repository}}:{{.Tag}}"]),
        format!("{IMAGE}\n")
    );
    assert_eq!(berth(&["images", "-q", "-f", "dangling=true"]), "");
    assert_eq!(
        berth(&["images", "-q", "-f", "reference=example.com/*"]),
        ids
    );
    assert_eq!(berth(&["images", "-q", "-f", "reference=nope*"]), "");
    let bad = d.berth(&["inspect", "-f", "{{.Name", "one"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("template parsing error"),
        "{bad:?}"
    );
    berth(&["rm", "-f", "one", "two"]);
}

/// `save` without `-o` writes the archive to stdout, `load` without `-i` reads stdin and
/// says what it loaded, as Docker's do: `berth save IMG | gzip > x.tgz`, `berth load < x`.
#[test]
fn save_to_stdout_and_load_from_stdin() {
    let (d, work) = Daemon::with_busybox();
    let sh = |script: &str| ok(&shell(&d, work.path(), script), script);
    sh("\"$B\" save \"$IMG\" | gzip > \"$W/bb.tgz\"");
    ok(&d.berth(&["rmi", IMAGE]), "rmi");
    assert_eq!(
        sh("gunzip -c \"$W/bb.tgz\" | \"$B\" load"),
        format!("Loaded image: {IMAGE}\n")
    );
    assert_eq!(sh("gunzip -c \"$W/bb.tgz\" | \"$B\" load -q"), "");
    assert_eq!(
        ok(&d.berth(&["run", "--rm", IMAGE, "echo", "back"]), "run"),
        "back\n"
    );
    // `-o -` is stdout too: an OCI layout with Docker's manifest.json.
    let names = sh("\"$B\" save -o - \"$IMG\" | tar -t");
    assert!(
        names.lines().any(|l| l == "index.json") && names.lines().any(|l| l == "manifest.json"),
        "{names}"
    );
}

/// Image names read as Docker reads them (`tag bb zz` is `zz:latest`; `rmi zz:latest`,
/// `run zz` find it); `rmi` refuses an image a container uses unless `-f`; `inspect` and
/// the top-level `tag`/`history` take images.
#[test]
fn image_names_tags_and_removal() {
    let (d, _work) = Daemon::with_busybox();
    let berth = |args: &[&str]| ok(&d.berth(args), &format!("berth {args:?}"));
    berth(&["tag", IMAGE, "zz"]);
    berth(&["image", "tag", IMAGE, "example.com/yy"]);
    let names = berth(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    assert_eq!(names, [IMAGE, "example.com/yy:latest", "zz:latest"]);
    assert_eq!(berth(&["run", "--rm", "zz", "echo", "zz"]), "zz\n");
    // inspect falls back to images; history is a top-level verb too.
    let id = berth(&["inspect", "-f", "{{.Id}}", "zz:latest"]);
    assert!(id.starts_with("sha256:"), "{id}");
    assert!(berth(&["history", "zz"]).starts_with("IMAGE"));
    // A container made from yy holds it: rmi refuses, rmi -f removes the name.
    berth(&["create", "--name", "holder", "example.com/yy", "true"]);
    let refused = d.berth(&["rmi", "example.com/yy"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("conflict: unable to remove repository reference \"example.com/yy\" (must force) - container"),
        "{err}"
    );
    // The name as stored, tag and all (Docker's words).
    assert_eq!(
        berth(&["rmi", "-f", "example.com/yy"]),
        "Untagged: example.com/yy:latest\n"
    );
    assert_eq!(berth(&["rmi", "zz:latest"]), "Untagged: zz:latest\n");
    let gone = d.berth(&["rmi", "zz"]);
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("No such image: zz"),
        "{gone:?}"
    );
    berth(&["rm", "holder"]);
}

/// `container` is Docker's management command (`container ls`, `container inspect`,
/// `container prune`); the ctr-style records stay under `containers` / `c`.
#[test]
fn container_management_command_and_prune() {
    let (d, _work) = Daemon::with_busybox();
    let berth = |args: &[&str]| ok(&d.berth(args), &format!("berth {args:?}"));
    let done = berth(&["run", "-d", "--name", "done", IMAGE, "true"]);
    berth(&["create", "--name", "made", IMAGE, "true"]);
    let up = berth(&["run", "-d", "--name", "up", IMAGE, "sleep", "600"]);
    ok(&d.berth(&["wait", "done"]), "wait");
    assert_eq!(
        berth(&["container", "ls", "-q"]),
        format!("{}\n", &up.trim()[..12])
    );
    assert_eq!(berth(&["container", "ps", "-aq"]).lines().count(), 3);
    assert_eq!(
        berth(&["container", "inspect", "-f", "{{.Name}}", "up"]),
        "/up\n"
    );
    // The ctr-style list is still there.
    assert!(berth(&["containers", "ls"]).contains(up.trim()));
    let pruned = berth(&["container", "prune", "-f"]);
    let lines: Vec<&str> = pruned.lines().collect();
    assert_eq!(lines[0], "Deleted Containers:", "{pruned}");
    let mut ids: Vec<&str> = lines[1..3].to_vec();
    ids.sort();
    let left = berth(&["containers", "ls", "-q"]);
    assert!(!left.contains(done.trim()), "{left}");
    assert!(ids.contains(&done.trim()), "{pruned}");
    assert!(
        lines
            .last()
            .is_some_and(|l| l.starts_with("Total reclaimed space: "))
    );
    assert_eq!(berth(&["ps", "-aq"]), format!("{}\n", &up.trim()[..12]));
    berth(&["rm", "-f", "up"]);
}

/// Shell completion and the man page come from the command-line definition.
#[test]
fn completion_and_man_page() {
    let run = |args: &[&str]| {
        let out = Command::new(bin("berth"))
            .args(args)
            .output()
            .expect("berth");
        ok(&out, &format!("{args:?}"))
    };
    let bash = run(&["completion", "bash"]);
    assert!(
        bash.starts_with("_berth()"),
        "{}",
        &bash[..40.min(bash.len())]
    );
    assert!(bash.contains("berth__subcmd__ps") && bash.contains("--filter"));
    assert!(run(&["completion", "zsh"]).starts_with("#compdef berth"));
    assert!(run(&["completion", "fish"]).contains("__fish_berth"));
    let man = run(&["man"]);
    assert!(
        man.contains(".TH berth 1") && man.contains("container"),
        "{man}"
    );
    let bad = Command::new(bin("berth"))
        .args(["completion", "tcsh"])
        .output()
        .expect("berth");
    assert_eq!(bad.status.code(), Some(125));
}

/// `system prune [-a] [--volumes]`: stopped containers, unused networks, (anonymous
/// volumes,) dangling or unused images, with Docker's report; `image prune -a`.
#[test]
fn system_and_image_prune() {
    let (d, _work) = Daemon::with_busybox();
    let berth = |args: &[&str]| ok(&d.berth(args), &format!("berth {args:?}"));
    let net = berth_tests::TestNetwork::claim();
    let bridge = format!("com.docker.network.bridge.name={}", net.bridge);
    berth(&[
        "network",
        "create",
        "--subnet",
        &net.subnet,
        "-o",
        &bridge,
        "spare",
    ]);
    berth(&["tag", IMAGE, "example.com/other"]);
    let done = berth(&["run", "-d", "-v", "/data", IMAGE, "true"]);
    ok(&d.berth(&["wait", done.trim()]), "wait");
    let up = berth(&["run", "-d", "--name", "up", IMAGE, "sleep", "600"]);
    // Without -f, a "no" at the prompt removes nothing.
    let no = berth(&["system", "prune"]);
    assert!(
        no.starts_with("WARNING! This will remove:\n  - all stopped containers\n"),
        "{no}"
    );
    assert_eq!(berth(&["ps", "-aq"]).lines().count(), 2);
    let out = berth(&["system", "prune", "-f", "--volumes"]);
    assert!(
        out.contains(&format!("Deleted Containers:\n{}\n", done.trim())),
        "{out}"
    );
    assert!(out.contains("Deleted Networks:\nspare\n"), "{out}");
    assert!(out.contains("Deleted Volumes:\n"), "{out}");
    assert!(out.contains("Total reclaimed space: "), "{out}");
    // Nothing dangling: both images stay without -a.
    assert!(!out.contains("Deleted Images:"), "{out}");
    assert_eq!(berth(&["ps", "-aq"]), format!("{}\n", &up.trim()[..12]));
    // image prune -a: the image no container uses goes, the one `up` uses stays.
    let out = berth(&["image", "prune", "-a", "-f"]);
    assert!(
        out.starts_with("Deleted Images:\nuntagged: example.com/other:latest\n"),
        "{out}"
    );
    assert_eq!(
        berth(&["images", "--format", "{{.Repository}}:{{.Tag}}"]),
        format!("{IMAGE}\n")
    );
    berth(&["rm", "-f", "up"]);
}

/// `berth info` (and `system info`): Docker's sections and counts; templates over Docker's
/// field names.
#[test]
fn info_counts_and_templates() {
    let (d, _work) = Daemon::with_busybox();
    let berth = |args: &[&str]| ok(&d.berth(args), &format!("berth {args:?}"));
    berth(&["run", "-d", "--name", "up", IMAGE, "sleep", "600"]);
    berth(&["create", "--name", "made", IMAGE, "true"]);
    let info = berth(&["info"]);
    for line in [
        "Server:\n Containers: 2\n  Running: 1\n  Paused: 0\n  Stopped: 1\n Images: 1\n",
        " Storage Driver: overlayfs\n",
        " OSType: linux\n",
    ] {
        assert!(info.contains(line), "{line:?} in\n{info}");
    }
    assert!(
        info.contains(&format!(" Berth Root Dir: {}\n", d.root.display())),
        "{info}"
    );
    assert_eq!(
        berth(&[
            "system",
            "info",
            "--format",
            "{{.Containers}} {{.ContainersRunning}} {{.Images}}"
        ]),
        "2 1 1\n"
    );
    let v: serde_json::Value =
        serde_json::from_str(&berth(&["info", "--format", "{{json .}}"])).expect("json");
    assert_eq!(
        v["NCPU"].as_u64(),
        std::thread::available_parallelism()
            .ok()
            .map(|n| n.get() as u64)
    );
    berth(&["rm", "-f", "up", "made"]);
}

/// `cp CONTAINER:SRC -` writes a tar archive to stdout, `cp - CONTAINER:DIR` unpacks one
/// from stdin, as Docker's.
#[test]
fn cp_through_tar_streams() {
    let (d, work) = Daemon::with_busybox();
    let berth = |args: &[&str]| ok(&d.berth(args), &format!("berth {args:?}"));
    berth(&["run", "-d", "--name", "box", IMAGE, "sleep", "600"]);
    berth(&[
        "exec",
        "box",
        "sh",
        "-c",
        "mkdir -p /srv/d && echo hi > /srv/d/f",
    ]);
    let sh = |script: &str| ok(&shell(&d, work.path(), script), script);
    let listed = sh("\"$B\" cp box:/srv/d - | tar -t | sort");
    assert_eq!(listed, "d/\nd/f\n");
    assert_eq!(sh("\"$B\" cp box:/srv/d/f - | tar -xO"), "hi\n");
    sh(
        "mkdir -p \"$W/in/sub\" && echo there > \"$W/in/sub/g\" && tar -C \"$W/in\" -cf - sub | \"$B\" cp - box:/srv",
    );
    assert_eq!(berth(&["exec", "box", "cat", "/srv/sub/g"]), "there\n");
    let bad = shell(
        &d,
        work.path(),
        "tar -C \"$W/in\" -cf - sub | \"$B\" cp - box:/srv/d/f",
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("must be a directory"),
        "{bad:?}"
    );
    berth(&["rm", "-f", "box"]);
}

/// A container whose process the kernel kills for want of memory shows
/// `State.OOMKilled` true (berthd records the shim's `/tasks/oom`), until its next start.
#[test]
fn oom_killed_is_recorded() {
    let (d, _work) = Daemon::with_busybox();
    let hog = "a=xxxxxxxxxxxxxxxx; while :; do a=\"$a$a\"; done";
    let out = d.berth(&["run", "--name", "hog", "-m", "16m", IMAGE, "sh", "-c", hog]);
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    // The record follows the event: it may land a moment after the exit.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let state = loop {
        let s = ok(
            &d.berth(&[
                "inspect",
                "-f",
                "{{.State.OOMKilled}} {{.State.ExitCode}}",
                "hog",
            ]),
            "inspect",
        );
        if s.starts_with("true") || std::time::Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(state, "true 137\n");
    // The mark goes with the next start.
    let id = ok(
        &d.berth(&["create", "--name", "calm", IMAGE, "true"]),
        "create",
    );
    let id = id.trim();
    ok(
        &d.berth(&["containers", "label", id, "berth/oom-killed=true"]),
        "label",
    );
    let oom = |what: &str| {
        ok(
            &d.berth(&["inspect", "-f", "{{.State.OOMKilled}}", "calm"]),
            what,
        )
    };
    assert_eq!(oom("marked"), "true\n");
    ok(&d.berth(&["start", "-a", "calm"]), "start");
    assert_eq!(oom("started"), "false\n");
    ok(&d.berth(&["rm", "hog", "calm"]), "rm");
}

/// `update -m --cpus --pids-limit`: a running container's limits change at once, and its
/// next start keeps them.
#[test]
fn update_resources_live_and_kept() {
    let (d, _work) = Daemon::with_busybox();
    let berth = |args: &[&str]| ok(&d.berth(args), &format!("berth {args:?}"));
    berth(&["run", "-d", "--name", "box", IMAGE, "sleep", "600"]);
    assert_eq!(
        berth(&[
            "update",
            "-m",
            "64m",
            "--cpus",
            "0.5",
            "--pids-limit",
            "50",
            "box"
        ]),
        "box\n"
    );
    let limits = || {
        berth(&[
            "exec",
            "box",
            "cat",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
            "/sys/fs/cgroup/pids/pids.max",
        ])
    };
    assert_eq!(limits(), format!("{}\n50000\n50\n", 64 << 20));
    berth(&["stop", "-t", "1", "box"]);
    berth(&["start", "box"]);
    assert_eq!(limits(), format!("{}\n50000\n50\n", 64 << 20));
    // inspect shows the limits as they are now.
    assert_eq!(
        berth(&[
            "inspect",
            "-f",
            "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}}",
            "box"
        ]),
        format!("{} 500000000 50\n", 64 << 20)
    );
    let none = d.berth(&["update", "box"]);
    assert!(!none.status.success());
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("you must provide one or more flags"),
        "{none:?}"
    );
    berth(&["rm", "-f", "box"]);
}

/// `logs --since` / `--until`: the lines of a time span (RFC 3339, Unix seconds or a
/// duration back from now).
#[test]
fn logs_since_and_until() {
    let (d, _work) = Daemon::with_busybox();
    let berth = |args: &[&str]| ok(&d.berth(args), &format!("berth {args:?}"));
    berth(&[
        "run",
        "-d",
        "--name",
        "talk",
        IMAGE,
        "sh",
        "-c",
        "echo a; sleep 1.2; echo b",
    ]);
    berth(&["wait", "talk"]);
    let stamped = berth(&["logs", "-t", "talk"]);
    let b_time = stamped
        .lines()
        .find(|l| l.ends_with(" b"))
        .and_then(|l| l.split(' ').next())
        .expect("b's time")
        .to_string();
    assert_eq!(berth(&["logs", "-n", "1", "talk"]), "b\n");
    assert_eq!(berth(&["logs", "--since", &b_time, "talk"]), "b\n");
    assert_eq!(berth(&["logs", "--until", &b_time, "talk"]), "a\n");
    assert_eq!(berth(&["logs", "--since", "1h", "talk"]), "a\nb\n");
    assert_eq!(berth(&["logs", "--since", "4000000000", "talk"]), "");
    let bad = d.berth(&["logs", "--since", "soon", "talk"]);
    assert!(!bad.status.success());
    berth(&["rm", "talk"]);
}

/// The shims whose arguments name container `id`.
fn shims_of(id: &str) -> Vec<(i32, Vec<String>)> {
    berth_tests::shim_processes()
        .into_iter()
        .filter(|(_, args)| args.iter().any(|a| a == id))
        .collect()
}

/// The shims of container `id`, waited for to be gone (10 s at most).
fn wait_no_shim_of(id: &str) {
    let of_it = || shims_of(id);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !of_it().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "a shim stays for the exited container: {:?}",
            of_it()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn an_exited_container_keeps_no_process() {
    let (mut d, _work) = Daemon::with_busybox();
    let berth = |args: &[&str]| ok(&d.berth(args), &format!("berth {args:?}"));
    let id = berth(&[
        "run",
        "-d",
        "--name",
        "gone",
        IMAGE,
        "sh",
        "-c",
        "echo ran; exit 3",
    ]);
    let id = id.trim();
    assert_eq!(berth(&["wait", "gone"]), "3\n");
    // berthd retires the exited task: its shim exits, and the exit stays on record.
    wait_no_shim_of(id);
    let status = berth(&["ps", "-a", "--format", "{{.Status}}", "-f", "name=gone"]);
    assert!(status.starts_with("Exited (3) "), "{status}");
    assert_eq!(
        berth(&["ps", "-aq", "-f", "exited=3"]),
        format!("{}\n", &id[..12])
    );
    let state = berth(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{.State.ExitCode}} {{.State.Running}} {{.State.Pid}}",
        "gone",
    ]);
    assert_eq!(state, "exited 3 false 0\n");
    let finished = berth(&["inspect", "-f", "{{.State.FinishedAt}}", "gone"]);
    assert!(!finished.starts_with("0001"), "{finished}");
    assert_eq!(berth(&["wait", "gone"]), "3\n");
    assert_eq!(berth(&["logs", "gone"]), "ran\n");
    // `start` makes a new task; the output goes on in the same log.
    assert_eq!(berth(&["start", "gone"]), "gone\n");
    assert_eq!(berth(&["wait", "gone"]), "3\n");
    assert_eq!(berth(&["logs", "gone"]), "ran\nran\n");
    // `start -a` waits for it and ends with its code.
    let attached = d.berth(&["start", "-a", "gone"]);
    assert_eq!(attached.status.code(), Some(3), "{attached:?}");
    assert_eq!(String::from_utf8_lossy(&attached.stdout), "ran\n");
    // A foreground run has its exit code, however quickly berthd retires the task.
    for _ in 0..5 {
        let fg = d.berth(&["run", IMAGE, "sh", "-c", "echo hi; exit 7"]);
        assert_eq!(fg.status.code(), Some(7), "{fg:?}");
        assert_eq!(String::from_utf8_lossy(&fg.stdout), "hi\n");
    }
    // Stop of an exited container is a no-op; kill is refused as Docker refuses it.
    assert_eq!(berth(&["stop", "gone"]), "gone\n");
    let kill = d.berth(&["kill", "gone"]);
    assert_eq!(kill.status.code(), Some(1), "{kill:?}");
    assert!(String::from_utf8_lossy(&kill.stderr).contains("is not running"));
    // A stopped long-running one goes the same way, and restarts. While it runs its shim
    // is there to be seen (the checks above look for the right processes).
    let long = berth(&["run", "-d", "--name", "long", IMAGE, "sleep", "600"]);
    let long = long.trim().to_string();
    assert_eq!(
        shims_of(&long).len(),
        1,
        "{:?}",
        berth_tests::shim_processes()
    );
    assert_eq!(berth(&["stop", "-t", "1", "long"]), "long\n");
    wait_no_shim_of(&long);
    assert_eq!(berth(&["restart", "-t", "1", "long"]), "long\n");
    assert_eq!(
        berth(&["inspect", "-f", "{{.State.Status}}", "long"]),
        "running\n"
    );
    // One that exits while berthd is down is retired once berthd is back (the shim kept
    // its exit).
    let late = berth(&[
        "run",
        "-d",
        "--name",
        "late",
        IMAGE,
        "sh",
        "-c",
        "sleep 1; exit 4",
    ]);
    d.kill9();
    std::thread::sleep(std::time::Duration::from_secs(2));
    d.restart();
    let berth = |args: &[&str]| ok(&d.berth(args), &format!("berth {args:?}"));
    wait_no_shim_of(late.trim());
    assert_eq!(berth(&["wait", "late"]), "4\n");
    // Through the containerd API (the real ctr): the retired task is gone, the exit is on
    // the container; a container ctr made keeps its stopped task, as containerd's has it.
    let tasks = ok(&d.ctr(&["tasks", "ls"]), "ctr tasks ls");
    assert!(!tasks.contains(late.trim()), "{tasks}");
    let info = ok(
        &d.ctr(&["containers", "info", late.trim()]),
        "ctr containers info",
    );
    assert!(info.contains("\"berth/exit-code\": \"4\""), "{info}");
    ok(&d.ctr(&["run", "-d", IMAGE, "ctrbox", "true"]), "ctr run");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let tasks = ok(&d.ctr(&["tasks", "ls"]), "ctr tasks ls");
        if tasks
            .lines()
            .any(|l| l.starts_with("ctrbox") && l.contains("STOPPED"))
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{tasks}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let tasks = ok(&d.ctr(&["tasks", "ls"]), "ctr tasks ls");
    assert!(
        tasks
            .lines()
            .any(|l| l.starts_with("ctrbox") && l.contains("STOPPED")),
        "{tasks}"
    );
    ok(&d.ctr(&["tasks", "rm", "ctrbox"]), "ctr tasks rm");
    ok(&d.ctr(&["containers", "rm", "ctrbox"]), "ctr containers rm");
    let all = berth(&["ps", "-aq"]);
    let mut rm = vec!["rm", "-f"];
    rm.extend(all.lines());
    assert_eq!(rm.len(), 2 + 8, "{all}");
    berth(&rm);
    assert_eq!(berth(&["ps", "-aq"]), "");
}

/// `attach` to an `-itd` shell: our input reaches it through a terminal, its output comes
/// back, and Ctrl-P Ctrl-Q leaves it running; without a terminal, stdin of a `-di` container
/// is forwarded and attach ends with the container's exit code.
#[test]
fn attach_forwards_stdin_and_detaches() {
    use std::io::Write;
    use std::process::Stdio;
    let (d, _work) = Daemon::with_busybox();
    let berth = |args: &[&str]| ok(&d.berth(args), &format!("berth {args:?}"));
    berth(&["run", "-itd", "--name", "sh", IMAGE, "sh"]);
    // `script` gives attach a terminal and passes our input to it.
    let cmd = format!(
        "{} -H {} attach sh",
        bin("berth").display(),
        d.address.display()
    );
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    let mut input = child.stdin.take().expect("stdin");
    std::thread::sleep(std::time::Duration::from_millis(700));
    input.write_all(b"echo hello-$((40+2))\n").expect("type");
    std::thread::sleep(std::time::Duration::from_millis(700));
    input.write_all(&[0x10, 0x11]).expect("detach keys");
    let out = child.wait_with_output().expect("script");
    drop(input);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("hello-42"), "{text}");
    assert!(text.contains("read escape sequence"), "{text}");
    // It runs on, and what was typed is in its log.
    assert_eq!(
        berth(&["inspect", "-f", "{{.State.Status}}", "sh"]),
        "running\n"
    );
    assert!(berth(&["logs", "sh"]).contains("hello-42"));
    // Bad detach keys: Docker's words.
    let bad = d.berth(&["attach", "--detach-keys", "ctrl-1", "sh"]);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("Invalid detach keys (ctrl-1) provided"),
        "{bad:?}"
    );
    // A terminal container wants a terminal for its stdin.
    let no_tty = d.berth(&["attach", "sh"]);
    assert!(
        String::from_utf8_lossy(&no_tty.stderr).contains("the input device is not a TTY"),
        "{no_tty:?}"
    );

    // `run -it` detaches the same way (here with other keys), and --rm then falls to
    // berthd.
    let cmd = format!(
        "{} -H {} run -it --rm --detach-keys ctrl-a,x --name runit {IMAGE} sh",
        bin("berth").display(),
        d.address.display()
    );
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    let mut input = child.stdin.take().expect("stdin");
    std::thread::sleep(std::time::Duration::from_millis(700));
    input.write_all(b"echo run-$((6*7))\n").expect("type");
    std::thread::sleep(std::time::Duration::from_millis(700));
    input.write_all(&[0x01, b'x']).expect("detach keys");
    let out = child.wait_with_output().expect("script");
    drop(input);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("run-42"), "{text}");
    assert_eq!(
        berth(&["inspect", "-f", "{{.State.Status}}", "runit"]),
        "running\n"
    );
    berth(&["stop", "-t", "1", "runit"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while d.berth(&["inspect", "runit"]).status.success() {
        assert!(
            std::time::Instant::now() < deadline,
            "runit was not removed"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // Without a terminal: a cat reading our stdin, stopped while we are attached.
    berth(&["run", "-di", "--name", "cat", IMAGE, "cat"]);
    let mut attach = Command::new(bin("berth"))
        .args(["-H", &d.address.display().to_string(), "attach", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("berth attach");
    let mut input = attach.stdin.take().expect("stdin");
    std::thread::sleep(std::time::Duration::from_millis(500));
    input.write_all(b"through-the-fifo\n").expect("write");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !berth(&["logs", "cat"]).contains("through-the-fifo") {
        assert!(
            std::time::Instant::now() < deadline,
            "cat never got the input"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    berth(&["stop", "-t", "1", "cat"]);
    let out = attach.wait_with_output().expect("attach");
    drop(input);
    // cat, as pid 1, ignores SIGTERM: killed after the second.
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("through-the-fifo"));
    // The container's stdin FIFO (beside its log) goes with it.
    let log = berth(&["inspect", "-f", "{{.LogPath}}", "cat"]);
    let fifo = std::path::Path::new(log.trim())
        .with_extension("stdin")
        .display()
        .to_string();
    assert!(std::path::Path::new(fifo.trim()).exists(), "{fifo}");
    berth(&["rm", "-f", "sh", "cat"]);
    assert!(!std::path::Path::new(fifo.trim()).exists(), "{fifo}");
}

/// `stats`' NET I/O: the counters of the container's own network namespace (loopback left
/// out); a container on the host's network has none, as with Docker.
#[test]
fn stats_counts_network_io() {
    let (d, _work) = Daemon::with_busybox();
    let berth = |args: &[&str]| ok(&d.berth(args), &format!("berth {args:?}"));
    let script = "ping -c 3 -W 1 $(ip route | awk '/default/ {print $3}'); sleep 600";
    berth(&["run", "-d", "--name", "net", IMAGE, "sh", "-c", script]);
    berth(&[
        "run",
        "-d",
        "--network",
        "host",
        "--name",
        "host",
        IMAGE,
        "sleep",
        "600",
    ]);
    let io = |name: &str| {
        berth(&["stats", "--no-stream", "--format", "{{.NetIO}}", name])
            .trim()
            .to_string()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let net = io("net");
        let (rx, tx) = net.split_once(" / ").unwrap_or_else(|| panic!("{net}"));
        if rx != "0B" && tx != "0B" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no traffic counted: {net}"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    assert_eq!(io("host"), "0B / 0B");
    berth(&["rm", "-f", "net", "host"]);
}

/// `diff` lists a container's changes (A/C/D), `export` writes its filesystem as a tar,
/// and `import` makes that tar an image again (with `-c` changes), which runs.
#[test]
fn diff_export_import() {
    let (d, work) = Daemon::with_busybox();
    let berth = |args: &[&str]| ok(&d.berth(args), &format!("berth {args:?}"));
    let script = "mkdir /new && echo hi > /new/file && echo x >> /etc/passwd && rm /etc/group";
    berth(&[
        "run",
        "--name",
        "fs",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        script,
    ]);
    let diff = berth(&["diff", "fs"]);
    for line in [
        "A /new\n",
        "A /new/file\n",
        "C /etc\n",
        "C /etc/passwd\n",
        "D /etc/group\n",
    ] {
        assert!(diff.contains(line), "{line:?} missing:\n{diff}");
    }
    assert_eq!(berth(&["container", "diff", "fs"]), diff);
    // export: to a file, and to stdout through a pipe; never to a terminal.
    let tar = work.path().join("fs.tar");
    berth(&["export", "-o", tar.to_str().expect("utf8"), "fs"]);
    let listing = Command::new("tar")
        .arg("-tf")
        .arg(&tar)
        .output()
        .expect("tar");
    let names = String::from_utf8_lossy(&listing.stdout);
    assert!(names.lines().any(|l| l == "new/file"), "{names}");
    assert!(!names.lines().any(|l| l == "etc/group"), "{names}");
    let piped = shell(
        &d,
        work.path(),
        "$B export fs | tar -tf - | grep -c '^new/file$'",
    );
    assert_eq!(String::from_utf8_lossy(&piped.stdout), "1\n", "{piped:?}");
    // import: the tar as a one-layer image, with changes; it runs as the container left it.
    let id = berth(&[
        "import",
        "-c",
        "CMD [\"cat\", \"/new/file\"]",
        "-c",
        "ENV WHO=imported",
        "-m",
        "from the test",
        tar.to_str().expect("utf8"),
        "imported:v1",
    ]);
    assert!(id.starts_with("sha256:") && id.trim().len() == 71, "{id}");
    assert_eq!(
        berth(&["images", "-q", "imported:v1"]).trim(),
        &id.trim()["sha256:".len()..][..12]
    );
    assert_eq!(
        berth(&["run", "--rm", "--network", "none", "imported:v1"]),
        "hi\n"
    );
    assert_eq!(
        berth(&[
            "run",
            "--rm",
            "--network",
            "none",
            "imported:v1",
            "sh",
            "-c",
            "echo $WHO"
        ]),
        "imported\n"
    );
    // By its ID too.
    let short = &id.trim()["sha256:".len()..][..12];
    assert_eq!(
        berth(&[
            "run",
            "--rm",
            "--network",
            "none",
            short,
            "cat",
            "/new/file"
        ]),
        "hi\n"
    );
    let history = berth(&["history", "--no-trunc", "imported:v1"]);
    assert!(history.contains("from the test"), "{history}");
    // From stdin, gzip'd, without a name: a dangling image.
    let gz = shell(
        &d,
        work.path(),
        &format!("gzip -c {} | $B import -", tar.display()),
    );
    assert!(gz.status.success(), "{gz:?}");
    let dangling = berth(&["images", "-q", "-f", "dangling=true"]);
    assert_eq!(
        dangling.trim(),
        &String::from_utf8_lossy(&gz.stdout).trim()["sha256:".len()..][..12]
    );
    // The tutorial's clean-up line.
    let cleaned = shell(&d, work.path(), "$B rmi $($B images -q -f dangling=true)");
    assert!(cleaned.status.success(), "{cleaned:?}");
    assert!(
        String::from_utf8_lossy(&cleaned.stdout).contains("Deleted: sha256:"),
        "{cleaned:?}"
    );
    assert_eq!(berth(&["images", "-q", "-f", "dangling=true"]), "");
    // The management command's spelling.
    let again = berth(&[
        "image",
        "import",
        tar.to_str().expect("utf8"),
        "imported:v2",
    ]);
    assert!(again.starts_with("sha256:"), "{again}");
    // A change Docker does not take, and a URL, are refused.
    let bad = d.berth(&["import", "-c", "FROM busybox", tar.to_str().expect("utf8")]);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("FROM is not a valid change command"),
        "{bad:?}"
    );
    berth(&["rm", "fs"]);
}

/// `commit`: a container's changes become an image (with `-m`, `-a`, `-c`), which runs at
/// once; a running container is paused for it; a commit of a commit stacks.
#[test]
fn commit_makes_an_image_of_a_container() {
    let (d, _work) = Daemon::with_busybox();
    let berth = |args: &[&str]| ok(&d.berth(args), &format!("berth {args:?}"));
    let none = ["--network", "none"];
    let mut run = vec!["run", "--name", "base"];
    run.extend(none);
    run.extend([
        IMAGE,
        "sh",
        "-c",
        "echo committed > /hello && rm /etc/group",
    ]);
    berth(&run);
    let id = berth(&[
        "commit",
        "-m",
        "the first",
        "-a",
        "Me <me@example.com>",
        "-c",
        "CMD [\"cat\", \"/hello\"]",
        "base",
        "committed:v1",
    ]);
    assert!(id.starts_with("sha256:") && id.trim().len() == 71, "{id}");
    assert_eq!(
        berth(&["run", "--rm", "--network", "none", "committed:v1"]),
        "committed\n"
    );
    // The round trip: what the container changed is exactly what its diff lists.
    assert_eq!(berth(&["diff", "base"]), "C /etc\nD /etc/group\nA /hello\n");
    let gone = d.berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        "committed:v1",
        "cat",
        "/etc/group",
    ]);
    assert!(!gone.status.success(), "{gone:?}");
    assert_eq!(
        berth(&[
            "image",
            "inspect",
            "-f",
            "{{.Author}} {{len .RootFS.Layers}}",
            "committed:v1"
        ]),
        format!(
            "Me <me@example.com> {}\n",
            berth(&["image", "inspect", "-f", "{{len .RootFS.Layers}}", IMAGE])
                .trim()
                .parse::<usize>()
                .expect("layers")
                + 1
        )
    );
    let history = berth(&["history", "--no-trunc", "committed:v1"]);
    assert!(history.contains("the first"), "{history}");
    // A running container, paused while committed; then a commit of the commit.
    berth(&[
        "run",
        "-d",
        "--name",
        "live",
        "--network",
        "none",
        "committed:v1",
        "sleep",
        "600",
    ]);
    berth(&["exec", "live", "sh", "-c", "echo second > /second"]);
    berth(&["container", "commit", "live", "committed:v2"]);
    assert_eq!(
        berth(&["inspect", "-f", "{{.State.Status}}", "live"]),
        "running\n"
    );
    assert_eq!(
        berth(&[
            "run",
            "--rm",
            "--network",
            "none",
            "committed:v2",
            "cat",
            "/hello",
            "/second"
        ]),
        "committed\nsecond\n"
    );
    // The container's own run configuration is kept (its command here).
    assert_eq!(
        berth(&[
            "image",
            "inspect",
            "-f",
            "{{json .Config.Cmd}}",
            "committed:v2"
        ]),
        "[\"sleep\",\"600\"]\n"
    );
    // Unnamed: a dangling image.
    berth(&["commit", "base"]);
    assert_eq!(
        berth(&["images", "-q", "-f", "dangling=true"])
            .lines()
            .count(),
        1
    );
    let bad = d.berth(&["commit", "-c", "FROM x", "base", "nope:1"]);
    assert!(!bad.status.success());
    assert!(d.berth(&["image", "inspect", "nope:1"]).status.code() != Some(0));
    berth(&["rm", "-f", "live", "base"]);
}
