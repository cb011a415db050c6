//! The same command lines against `berth` and against the real `docker` (Debian's docker.io,
//! its own dockerd): exit codes and output shapes must match. IDs, times and sizes are put
//! in a normal form before the comparison; the differences kept on purpose are named where
//! they are allowed, with the reason.

use std::process::Output;

use berth_tests::Daemon;
use berth_tests::dockerd::Dockerd;
use berth_tests::fixtures::BUSYBOX_REF as IMAGE;

/// stdout with hex ids (12 or 64 digits, `sha256:` too) as `<id>`.
fn normal(text: &str) -> String {
    text.split_inclusive(['\n', ' ', '\t', '"', '/', ','])
        .map(|w| {
            let core = w.trim_end_matches(['\n', ' ', '\t', '"', '/', ',']);
            let hex = core.strip_prefix("sha256:").unwrap_or(core);
            if (hex.len() == 12 || hex.len() == 64) && hex.chars().all(|c| c.is_ascii_hexdigit()) {
                w.replacen(core, "<id>", 1)
            } else {
                w.to_string()
            }
        })
        .collect()
}

/// `run -d --network none --name NAME IMAGE cmd...`.
fn detached<'a>(name: &'a str, cmd: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run", "-d", "--network", "none", "--name", name, IMAGE];
    args.extend_from_slice(cmd);
    args
}

struct Pair {
    berth: Daemon,
    _work: tempfile::TempDir,
    docker: Dockerd,
}

impl Pair {
    fn start() -> Pair {
        let (berth, work) = Daemon::with_busybox();
        Pair {
            berth,
            _work: work,
            docker: Dockerd::start(),
        }
    }

    /// Both run `args`; returns (berth's, docker's).
    fn both(&self, args: &[&str]) -> (Output, Output) {
        (self.berth.berth(args), self.docker.docker(args))
    }

    /// Both run `args`: the same exit code and the same stdout (ids in normal form).
    fn same(&self, args: &[&str]) -> String {
        let (b, d) = self.both(args);
        assert_eq!(
            b.status.code(),
            d.status.code(),
            "exit code of {args:?}\nberth: {b:?}\ndocker: {d:?}"
        );
        let (bo, dout) = (
            normal(&String::from_utf8_lossy(&b.stdout)),
            normal(&String::from_utf8_lossy(&d.stdout)),
        );
        assert_eq!(bo, dout, "stdout of {args:?}");
        bo
    }

    /// Both fail `args` with the same exit code, and both say `words` on stderr.
    fn same_failure(&self, args: &[&str], words: &str) {
        let (b, d) = self.both(args);
        assert_eq!(
            b.status.code(),
            d.status.code(),
            "exit code of {args:?}\nberth: {b:?}\ndocker: {d:?}"
        );
        assert!(!b.status.success(), "{args:?} succeeded");
        for (who, out) in [("berth", &b), ("docker", &d)] {
            assert!(
                String::from_utf8_lossy(&out.stderr).contains(words),
                "{who} {args:?} does not say {words:?}: {out:?}"
            );
        }
    }
}

#[test]
fn docker_verbs_side_by_side() {
    let p = Pair::start();
    // Exit codes of run: the command's, 125 for a bad flag, 127 for a missing command.
    p.same(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-h",
        "myhost",
        IMAGE,
        "hostname",
    ]);
    p.same(&[
        "run",
        "--rm",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "exit 3",
    ]);
    let (b, d) = p.both(&["run", "--rm", "--network", "none", IMAGE, "/no/such"]);
    assert_eq!((b.status.code(), d.status.code()), (Some(127), Some(127)));
    p.same_failure(&["ps", "--no-such-flag"], "--no-such-flag");
    p.same_failure(&["run", "--no-such-flag", IMAGE], "--no-such-flag");

    // A stopped and a running container, named alike in both.
    p.same(&detached("one", &["true"]));
    p.same(&["wait", "one"]);
    p.same(&detached("two", &["sleep", "600"]));
    // ps: quiet, all, filters, last, templates.
    p.same(&["ps", "-q"]);
    p.same(&["ps", "-aq"]);
    p.same(&["ps", "-aq", "-f", "status=exited"]);
    p.same(&["ps", "-q", "-f", "exited=0"]);
    p.same(&["ps", "-aq", "-f", "exited=0"]);
    p.same(&["ps", "-q", "-f", "name=tw"]);
    p.same(&["ps", "-q", "-n", "1"]);
    p.same(&["ps", "-ql"]);
    p.same(&["ps", "-a", "--format", "{{.Names}} {{.State}} {{.Image}}"]);
    p.same(&["ps", "-a", "--format", "table {{.Names}}\t{{.State}}"]);
    p.same(&["ps", "-a", "--format", "{{upper .Names}} {{len .ID}}"]);
    // -s: a SIZE column, "<rw> (virtual <rw + image>)" (the figures are each daemon's).
    let (b, d) = p.both(&["ps", "-s", "--format", "table {{.Names}}\t{{.Size}}"]);
    let shape = |o: &Output| -> Vec<(String, bool)> {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| {
                let name = l.split_whitespace().next().unwrap_or_default().to_string();
                (name, l.contains("(virtual "))
            })
            .collect()
    };
    assert_eq!(shape(&b), shape(&d), "ps -s\nberth: {b:?}\ndocker: {d:?}");
    // The JSON of a row: the same keys (the values of sizes, times and mounts differ).
    let keys = |o: &Output| -> Vec<String> {
        let line = String::from_utf8_lossy(&o.stdout);
        let v: serde_json::Value = serde_json::from_str(line.lines().next().unwrap_or("{}"))
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        let mut k: Vec<String> = v
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        k.sort();
        k
    };
    let (b, d) = p.both(&["ps", "--format", "{{json .}}"]);
    assert_eq!(keys(&b), keys(&d), "ps {{json .}} keys");
    p.same_failure(&["ps", "-f", "colour=red"], "Invalid filter 'colour'");
    p.same_failure(
        &["ps", "-f", "status=bogus"],
        "Invalid filter 'status=bogus'",
    );
    p.same_failure(
        &["ps", "-f", "noequals"],
        "bad format of filter (expected name=value)",
    );
    p.same_failure(
        &["images", "-f", "dangling=maybe"],
        "Invalid filter 'dangling=[maybe]'",
    );
    // inspect -f of containers and of images.
    p.same(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{.Name}} {{.State.ExitCode}}",
        "one",
        "two",
    ]);
    p.same(&[
        "inspect",
        "-f",
        "{{.Config.Image}} {{json .Config.Cmd}}",
        "two",
    ]);
    p.same(&["inspect", "-f", "{{.State.Running}}", "two"]);
    p.same(&["container", "inspect", "-f", "{{.Name}}", "two"]);
    p.same(&["image", "inspect", "-f", "{{.Id}}", IMAGE]);
    // images: ids, templates, filters, tags by Docker's names.
    p.same(&["images", "-q"]);
    p.same(&["images", "-qa"]);
    p.same(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    p.same(&["images", "-q", "-f", "dangling=true"]);
    p.same(&["images", "-q", "-f", "reference=example.com/*"]);
    p.same(&["tag", IMAGE, "zz"]);
    p.same(&["images", "--format", "{{.Repository}}:{{.Tag}}", "zz"]);
    p.same(&["rmi", "zz:latest"]);
    // What is not there.
    p.same_failure(&["inspect", "nosuch"], "No such object: nosuch");
    p.same(&["inspect", "nosuch"]);
    p.same_failure(&["rmi", "nosuch"], "No such image: nosuch");
    // rmi of an image a container uses: refused alike.
    p.same_failure(
        &["rmi", IMAGE],
        "conflict: unable to remove repository reference",
    );
    // logs -n, container ls, prune.
    p.same(&detached("lines", &["sh", "-c", "echo a; echo b"]));
    p.same(&["wait", "lines"]);
    assert_eq!(p.same(&["logs", "-n", "1", "lines"]), "b\n");
    p.same(&["container", "ls", "-q"]);
    let (b, d) = p.both(&["container", "prune", "-f"]);
    assert_eq!(b.status.code(), d.status.code());
    let first_lines = |o: &Output| -> Vec<String> {
        normal(&String::from_utf8_lossy(&o.stdout))
            .lines()
            .take(3)
            .map(str::to_string)
            .collect()
    };
    assert_eq!(first_lines(&b), first_lines(&d), "container prune");
    p.same(&["ps", "-aq"]);
    // diff: the same changes, listed alike.
    let script = "mkdir /new && echo hi > /new/file && echo x > /bin/extra";
    p.same(&detached("fs", &["sh", "-c", script]));
    p.same(&["wait", "fs"]);
    // Docker lists them in its upper directory's order; berth by path: compared sorted.
    let (b, d) = p.both(&["diff", "fs"]);
    let sorted = |o: &Output| {
        let mut l: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        l.sort();
        l
    };
    assert_eq!(b.status.code(), d.status.code());
    assert_eq!(sorted(&b), sorted(&d), "diff\nberth: {b:?}\ndocker: {d:?}");
    p.same(&["rm", "fs"]);
    p.same(&["rm", "-f", "two"]);
    // Kept differences: the CLI's own name leads its error lines ("berth: ...",
    // "docker: ..."), and sizes and times are each daemon's own: compared by shape only.
}

/// `events`: the same container events, in the same order, with the same attributes, in
/// Docker's line format and through a template.
#[test]
fn events_side_by_side() {
    use berth_tests::Background;
    use std::time::Duration;
    let p = Pair::start();
    let watch = ["events", "-f", "type=container", "-f", "container=ev"];
    let template = [
        "events",
        "-f",
        "type=container",
        "--format",
        "{{.Type}} {{.Action}} {{.Actor.Attributes.name}} {{.Actor.Attributes.exitCode}}",
    ];
    let (b_lines, d_lines) = (
        Background::spawn(p.berth.berth_command(&watch)),
        Background::spawn(p.docker.docker_command(&watch)),
    );
    let (b_tmpl, d_tmpl) = (
        Background::spawn(p.berth.berth_command(&template)),
        Background::spawn(p.docker.docker_command(&template)),
    );
    std::thread::sleep(Duration::from_millis(800));
    p.same(&detached("ev", &["sh", "-c", "exit 3"]));
    p.same(&["wait", "ev"]);
    p.same(&["rm", "ev"]);
    // A missing key is Go's "<no value>" in both.
    let expected = "container create ev <no value>\ncontainer start ev <no value>\n\
                    container die ev 3\ncontainer destroy ev <no value>\n";
    for (who, bg) in [("berth", &b_tmpl), ("docker", &d_tmpl)] {
        let text = bg.wait_for(&["destroy"], Duration::from_secs(10));
        assert_eq!(text, expected, "{who}");
    }
    // Docker's line: time, type, action, full id, sorted attributes.
    let shape = |bg: &Background| -> Vec<String> {
        bg.wait_for(&["destroy"], Duration::from_secs(10))
            .lines()
            .map(|l| {
                let mut w = l.splitn(4, ' ');
                let time = w.next().unwrap_or_default();
                assert!(time.len() == 30 && time.ends_with('Z'), "{l}");
                let rest: Vec<&str> = w.collect();
                normal(&rest.join(" "))
            })
            .collect()
    };
    let (b, d) = (shape(&b_lines), shape(&d_lines));
    assert_eq!(b, d);
    assert!(
        b[2].contains("exitCode=3") && b[2].contains("name=ev"),
        "{b:?}"
    );
}

/// The verbs of the second half of the contract: update, stats and info templates, kill and
/// attach of a stopped container, login and search failures, import, prune output.
#[test]
fn more_verbs_side_by_side() {
    let p = Pair::start();
    p.same(&detached("long", &["sleep", "600"]));
    p.same(&detached("done", &["sh", "-c", "exit 2"]));
    p.same(&["wait", "done"]);
    // update: the policy (Docker's words when it is wrong), the limits.
    p.same(&["update", "--restart", "on-failure:3", "long"]);
    p.same(&[
        "inspect",
        "-f",
        "{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.RestartPolicy.MaximumRetryCount}}",
        "long",
    ]);
    p.same_failure(
        &["update", "--restart", "sometimes", "long"],
        "invalid restart policy",
    );
    p.same(&["update", "--pids-limit", "64", "long"]);
    p.same(&["inspect", "-f", "{{.HostConfig.PidsLimit}}", "long"]);
    // Labels of a container: set, filtered on, inspected.
    p.same(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "lab",
        "-l",
        "tier=front",
        "--label",
        "bare",
        IMAGE,
        "sleep",
        "600",
    ]);
    p.same(&["ps", "-q", "-f", "label=tier=front"]);
    p.same(&["ps", "-q", "-f", "label=bare"]);
    p.same(&["inspect", "-f", "{{json .Config.Labels}}", "lab"]);
    p.same(&["rm", "-f", "lab"]);
    // stats and info templates.
    p.same(&["stats", "--no-stream", "--format", "{{.Name}}", "long"]);
    p.same(&[
        "info",
        "--format",
        "{{.Containers}} {{.ContainersRunning}} {{.ContainersStopped}}",
    ]);
    // A stopped container: no kill, no attach (an exited one keeps no process in either).
    p.same_failure(&["kill", "done"], "is not running");
    p.same_failure(
        &["attach", "done"],
        "You cannot attach to a stopped container, start it first",
    );
    p.same(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{.State.ExitCode}} {{.State.Pid}}",
        "done",
    ]);
    // Nothing listens on port 1: login and search fail alike.
    p.same_failure(
        &["login", "-u", "u", "-p", "p", "127.0.0.1:1"],
        "Error response from daemon",
    );
    // import: a tarball from stdin, with a change; the image ID printed.
    let tar = p._work.path().join("rootfs.tar");
    let status = std::process::Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(p._work.path())
        .arg(".")
        .status()
        .expect("tar");
    assert!(status.success());
    let import = |o: &Output| {
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(o.status.success(), "{o:?}");
        normal(&text)
    };
    let tar_arg = tar.display().to_string();
    let args = [
        "import",
        "-c",
        "CMD [\"sh\"]",
        tar_arg.as_str(),
        "imported:1",
    ];
    let (b, d) = p.both(&args);
    assert_eq!(import(&b), import(&d));
    assert_eq!(import(&b), "<id>\n", "sha256:<64 hex>");
    p.same(&["images", "--format", "{{.Repository}}:{{.Tag}}", "imported"]);
    p.same(&[
        "image",
        "inspect",
        "-f",
        "{{json .Config.Cmd}}",
        "imported:1",
    ]);
    p.same(&["rmi", "imported:1"]);
    // commit: the ID printed; the image's command, author and layers alike.
    p.same(&[
        "commit",
        "-a",
        "A <a@b>",
        "-c",
        "CMD [\"cat\", \"/x\"]",
        "done",
        "committed:1",
    ]);
    p.same(&[
        "image",
        "inspect",
        "-f",
        "{{json .Config.Cmd}} {{.Author}} {{len .RootFS.Layers}} {{.RootFS.Type}}",
        "committed:1",
    ]);
    p.same(&["rmi", "committed:1"]);
    // prune: the same report's shape.
    p.same(&["rm", "-f", "long"]);
    let (b, d) = p.both(&["container", "prune", "-f"]);
    let shape = |o: &Output| -> Vec<String> {
        normal(&String::from_utf8_lossy(&o.stdout))
            .lines()
            .map(|l| {
                if l.starts_with("Total reclaimed space:") {
                    "Total reclaimed space:".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect()
    };
    assert_eq!(
        shape(&b),
        shape(&d),
        "container prune\nberth: {b:?}\ndocker: {d:?}"
    );
}

/// The same Dockerfile built by berth and by Docker's builder: the same run configuration,
/// the same files, the same history shape.
#[test]
fn build_side_by_side() {
    let p = Pair::start();
    let ctx = p._work.path().join("ctx");
    std::fs::create_dir_all(ctx.join("files")).expect("mkdir");
    std::fs::write(ctx.join("files/a.txt"), "A\n").expect("write");
    std::fs::write(ctx.join("files/skip.log"), "no\n").expect("write");
    std::fs::write(ctx.join(".dockerignore"), "**/*.log\n").expect("write");
    let served = berth_tests::fixtures::FileServer::serve(&[("/dl/remote.txt", b"remote\n")]);
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {IMAGE}\n\
             ARG WHO=world\n\
             ENV GREETING=\"hello $WHO\" APP=/app\n\
             WORKDIR $APP\n\
             COPY files/ ./files/\n\
             ADD {url} ./\n\
             ADD {url} ./renamed.txt\n\
             RUN echo \"$GREETING\" > greeting.txt\n\
             LABEL tier=front\n\
             EXPOSE 8080\n\
             VOLUME /data\n\
             STOPSIGNAL SIGINT\n\
             HEALTHCHECK --interval=5s --retries=2 CMD test -f greeting.txt\n\
             USER 1000:1000\n\
             ENTRYPOINT [\"/bin/sh\", \"-c\"]\n\
             CMD [\"cat greeting.txt\"]\n",
            url = served.url("/dl/remote.txt"),
        ),
    )
    .expect("write");
    let ctx_arg = ctx.display().to_string();
    let build = [
        "build",
        "-q",
        "--network",
        "none",
        "--build-arg",
        "WHO=there",
        "-t",
        "sbs:1",
        ctx_arg.as_str(),
    ];
    let (b, d) = p.both(&build);
    assert!(b.status.success(), "berth build: {b:?}");
    assert!(d.status.success(), "docker build: {d:?}");
    p.same(&["run", "--rm", "--network", "none", "sbs:1"]);
    p.same(&[
        "run",
        "--rm",
        "--network",
        "none",
        "sbs:1",
        "sh",
        "-c",
        "pwd; id -u; ls files; stat -c '%a %u %Y %n' remote.txt renamed.txt",
    ]);
    p.same(&[
        "image",
        "inspect",
        "-f",
        "{{json .Config.Env}} {{.Config.WorkingDir}} {{.Config.User}} {{json .Config.Cmd}} {{json .Config.Entrypoint}} {{json .Config.Labels}} {{json .Config.ExposedPorts}} {{json .Config.Volumes}} {{.Config.StopSignal}} {{json .Config.Healthcheck.Test}} {{json .Config.Healthcheck.Interval}} {{.Config.Healthcheck.Retries}} {{len .RootFS.Layers}}",
        "sbs:1",
    ]);
    // The same filesystem, file by file (modes, owners, sizes, contents; not the times),
    // the runtime's own files and mount points aside.
    p.same(&["create", "--name", "sbs-fs", "--network", "none", "sbs:1"]);
    let listing = |o: &Output| -> Vec<String> {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("fs.tar"), &o.stdout).expect("write");
        let out = std::process::Command::new("tar")
            .args(["--numeric-owner", "-tvf"])
            .arg(dir.path().join("fs.tar"))
            .output()
            .expect("tar");
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                // mode owner size date time name [-> target]
                let name = f.get(5..)?.join(" ");
                let bare = name.trim_end_matches('/');
                if bare != "app" && !bare.starts_with("app/") {
                    return None;
                }
                Some(format!("{} {} {} {}", f[0], f[1], f[2], bare))
            })
            .collect();
        lines.sort();
        lines
    };
    let (b, d) = p.both(&["export", "sbs-fs"]);
    assert!(
        b.status.success() && d.status.success(),
        "export\nberth: {:?}\ndocker: {:?}",
        b.stderr,
        d.stderr
    );
    assert_eq!(listing(&b), listing(&d), "exported filesystems differ");
    p.same(&["rm", "sbs-fs"]);
    // The same history, step by step (the commands as each builder records them).
    let steps = |o: &Output| String::from_utf8_lossy(&o.stdout).lines().count();
    let (b, d) = p.both(&["history", "-q", "sbs:1"]);
    assert_eq!(steps(&b), steps(&d), "history\nberth: {b:?}\ndocker: {d:?}");
}
