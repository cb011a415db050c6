//! `berth build` (issue 15, the first part): a Dockerfile built on berthd's own content
//! store, snapshots, Diff service and tasks, with the classic builder's cache.

use std::process::Command;

use berth_tests::fixtures::FileServer;
use berth_tests::{Daemon, bin, ok};

const IMAGE: &str = "example.com/busybox:latest";

fn write(dir: &std::path::Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }
}

#[test]
fn a_dockerfile_builds_runs_and_caches() {
    let (d, work) = Daemon::with_busybox();
    let berth = |args: &[&str]| ok(&d.berth(args), &format!("berth {args:?}"));
    let ctx = work.path().join("ctx");
    write(
        &ctx,
        &[
            (
                "Dockerfile",
                &format!(
                    "# a comment\n\
                     ARG BASE={IMAGE}\n\
                     FROM $BASE AS base\n\
                     ARG GREETING=hello\n\
                     ENV APP=/app \\\n    MODE=${{GREETING:-none}}\n\
                     WORKDIR $APP\n\
                     COPY files/ ./files/\n\
                     COPY --chown=1000:1000 one.txt two.txt ./\n\
                     RUN echo \"$GREETING from run\" > run.txt && mkdir -p /data\n\
                     LABEL org.example.tier=front\n\
                     EXPOSE 8080/tcp\n\
                     VOLUME /data\n\
                     STOPSIGNAL SIGINT\n\
                     HEALTHCHECK --interval=5s CMD true\n\
                     USER 1000\n\
                     ENTRYPOINT [\"cat\"]\n\
                     CMD [\"run.txt\"]\n"
                ),
            ),
            ("files/a.txt", "A\n"),
            ("files/skip.log", "no\n"),
            ("one.txt", "1\n"),
            ("two.txt", "2\n"),
            (".dockerignore", "**/*.log\n"),
        ],
    );
    let out = d.berth(&[
        "build",
        "-t",
        "built:v1",
        "-t",
        "built:also",
        "--build-arg",
        "GREETING=hi",
        "--network",
        "none",
        ctx.to_str().expect("utf8"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("Step 1/16 : ARG BASE="), "{text}");
    assert!(
        text.contains("Step 2/16 : FROM example.com/busybox:latest AS base"),
        "{text}"
    );
    assert!(text.contains("Successfully tagged built:v1"), "{text}");
    // It runs, with what each instruction set.
    assert_eq!(
        berth(&["run", "--rm", "--network", "none", "built:v1"]),
        "hi from run\n"
    );
    let check = berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "sh",
        "built:v1",
        "-c",
        "pwd; id -u; echo $MODE; cat files/a.txt; ls files; stat -c '%u %g' one.txt two.txt",
    ]);
    assert_eq!(check, "/app\n1000\nhi\nA\na.txt\n1000 1000\n1000 1000\n");
    let cfg = berth(&[
        "image",
        "inspect",
        "-f",
        "{{json .Config.Labels}} {{json .Config.ExposedPorts}} {{json .Config.Volumes}} {{.Config.StopSignal}} {{json .Config.Healthcheck.Test}} {{.Config.User}}",
        "built:v1",
    ]);
    assert_eq!(
        cfg,
        "{\"org.example.tier\":\"front\"} {\"8080/tcp\":{}} {\"/data\":{}} SIGINT [\"CMD-SHELL\",\"true\"] 1000\n"
    );
    assert_eq!(
        berth(&["images", "-q", "built:also"]),
        berth(&["images", "-q", "built:v1"])
    );
    // Again: every step from the cache, the same image.
    let again = d.berth(&[
        "build",
        "-q",
        "--build-arg",
        "GREETING=hi",
        "--network",
        "none",
        ctx.to_str().expect("utf8"),
    ]);
    assert!(again.status.success(), "{again:?}");
    let id = berth(&["image", "inspect", "-f", "{{.Id}}", "built:v1"]);
    assert_eq!(String::from_utf8_lossy(&again.stdout), id);
    let cached = d.berth(&[
        "build",
        "--build-arg",
        "GREETING=hi",
        "--network",
        "none",
        ctx.to_str().expect("utf8"),
    ]);
    let text = String::from_utf8_lossy(&cached.stdout);
    assert_eq!(text.matches("---> CACHED").count(), 14, "{text}");
    // A changed COPY source: built again from that step on.
    write(&ctx, &[("two.txt", "2 changed\n")]);
    let changed = d.berth(&[
        "build",
        "--build-arg",
        "GREETING=hi",
        "--network",
        "none",
        ctx.to_str().expect("utf8"),
    ]);
    let text = String::from_utf8_lossy(&changed.stdout);
    assert!(changed.status.success(), "{changed:?}");
    assert_eq!(text.matches("---> CACHED").count(), 4, "{text}");
    // The intermediate images are shown with -a only.
    assert!(
        berth(&["images", "-a", "-q"]).lines().count() > berth(&["images", "-q"]).lines().count()
    );
}

#[test]
fn multi_stage_failures_and_context_on_stdin() {
    let (d, work) = Daemon::with_busybox();
    let berth = |args: &[&str]| ok(&d.berth(args), &format!("berth {args:?}"));
    let ctx = work.path().join("ms");
    write(
        &ctx,
        &[(
            "Dockerfile",
            &format!(
                "FROM {IMAGE} AS build\n\
                 RUN mkdir /out && echo artefact > /out/thing && echo junk > /junk\n\
                 FROM {IMAGE} AS unused\n\
                 RUN exit 9\n\
                 FROM {IMAGE}\n\
                 COPY --from=build /out/thing /thing\n\
                 CMD [\"cat\", \"/thing\"]\n"
            ),
        )],
    );
    berth(&[
        "build",
        "-t",
        "ms:1",
        "--network",
        "none",
        ctx.to_str().expect("utf8"),
    ]);
    assert_eq!(
        berth(&["run", "--rm", "--network", "none", "ms:1"]),
        "artefact\n"
    );
    // None of the build stage's layers: one layer more than the base.
    let layers = |img: &str| {
        berth(&["image", "inspect", "-f", "{{len .RootFS.Layers}}", img])
            .trim()
            .parse::<usize>()
            .expect("count")
    };
    assert_eq!(layers("ms:1"), layers(IMAGE) + 1);
    let junk = d.berth(&["run", "--rm", "--network", "none", "ms:1", "ls", "/junk"]);
    assert!(!junk.status.success());
    // --target: the first stage only.
    berth(&[
        "build",
        "--target",
        "build",
        "-t",
        "ms:build",
        "--network",
        "none",
        ctx.to_str().expect("utf8"),
    ]);
    assert_eq!(
        berth(&[
            "run",
            "--rm",
            "--network",
            "none",
            "ms:build",
            "cat",
            "/junk"
        ]),
        "junk\n"
    );
    // A failing RUN: its code and output, nothing left behind.
    let bad = work.path().join("bad");
    write(
        &bad,
        &[(
            "Dockerfile",
            &format!("FROM {IMAGE}\nRUN echo before-failing && exit 7\nRUN echo never\n"),
        )],
    );
    let containers_before = berth(&["containers", "ls", "-q"]);
    let failed = d.berth(&[
        "build",
        "-t",
        "bad:1",
        "--network",
        "none",
        bad.to_str().expect("utf8"),
    ]);
    assert_eq!(failed.status.code(), Some(7), "{failed:?}");
    assert!(String::from_utf8_lossy(&failed.stdout).contains("before-failing"));
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("returned a non-zero code: 7"),
        "{failed:?}"
    );
    assert_eq!(berth(&["containers", "ls", "-q"]), containers_before);
    assert!(!d.berth(&["image", "inspect", "bad:1"]).status.success());
    // The context as a tar on stdin.
    let piped = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C {} -cf - . | {} -H {} build -q -t piped:1 --network none -",
            ctx.display(),
            bin("berth").display(),
            d.address.display()
        ))
        .output()
        .expect("sh");
    assert!(piped.status.success(), "{piped:?}");
    assert_eq!(
        berth(&["run", "--rm", "--network", "none", "piped:1"]),
        "artefact\n"
    );
}

/// Here-documents in RUN and COPY, ONBUILD triggers, `history` of the steps, and a built
/// image pushed to a registry and pulled back with the same digest.
#[test]
fn heredocs_onbuild_history_and_push() {
    use berth_tests::fixtures::Registry;
    let (d, work) = Daemon::with_busybox();
    let berth = |args: &[&str]| ok(&d.berth(args), &format!("berth {args:?}"));
    let base = work.path().join("base");
    write(
        &base,
        &[(
            "Dockerfile",
            &format!(
                "FROM {IMAGE}\n\
                 RUN <<EOF\n\
                 mkdir -p /hd\n\
                 echo from-heredoc > /hd/run.txt\n\
                 EOF\n\
                 COPY <<CONF /hd/app.conf\n\
                 key=value\n\
                 CONF\n\
                 ONBUILD RUN echo triggered > /hd/trigger.txt\n\
                 ADD bundle.tar /bundle/\n"
            ),
        )],
    );
    // ADD of a local archive unpacks it.
    write(
        &base,
        &[("bundle-src/inner/file.txt", "from the archive\n")],
    );
    let status = Command::new("tar")
        .arg("-C")
        .arg(base.join("bundle-src"))
        .arg("-cf")
        .arg(base.join("bundle.tar"))
        .arg("inner")
        .status()
        .expect("tar");
    assert!(status.success());
    berth(&[
        "build",
        "-t",
        "onbuild-base:1",
        "--network",
        "none",
        base.to_str().expect("utf8"),
    ]);
    assert_eq!(
        berth(&[
            "run",
            "--rm",
            "--network",
            "none",
            "onbuild-base:1",
            "cat",
            "/hd/run.txt",
            "/hd/app.conf"
        ]),
        "from-heredoc\nkey=value\n"
    );
    assert_eq!(
        berth(&[
            "run",
            "--rm",
            "--network",
            "none",
            "onbuild-base:1",
            "cat",
            "/bundle/inner/file.txt"
        ]),
        "from the archive\n"
    );
    // The base's trigger runs when another build starts FROM it, and is not inherited.
    let child = work.path().join("child");
    write(
        &child,
        &[(
            "Dockerfile",
            "FROM onbuild-base:1\nCMD [\"cat\", \"/hd/trigger.txt\"]\n",
        )],
    );
    let out = d.berth(&[
        "build",
        "-t",
        "onbuild-child:1",
        "--network",
        "none",
        child.to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Executing 1 build trigger"));
    assert_eq!(
        berth(&["run", "--rm", "--network", "none", "onbuild-child:1"]),
        "triggered\n"
    );
    assert_eq!(
        berth(&[
            "image",
            "inspect",
            "-f",
            "{{json .Config.OnBuild}}",
            "onbuild-child:1"
        ]),
        "null\n"
    );
    // history: a line per step, newest first.
    let history = berth(&["history", "--no-trunc", "onbuild-base:1"]);
    assert!(history.contains("ONBUILD RUN echo triggered"), "{history}");
    assert!(history.contains("mkdir -p /hd"), "{history}");
    // Pushed and pulled back: the same digest.
    let reg = Registry::start();
    let remote = reg.reference("built/onbuild:1");
    berth(&["tag", "onbuild-base:1", &remote]);
    berth(&["push", &remote]);
    let digest = |r: &str| berth(&["image", "inspect", "-f", "{{.Target.digest}}", r]);
    let pushed = digest(&remote);
    berth(&["rmi", &remote]);
    berth(&["pull", &remote]);
    assert_eq!(digest(&remote), pushed);
}

#[test]
fn add_from_a_url_and_the_progress_views() {
    let (d, work) = Daemon::with_busybox();
    let berth = |args: &[&str]| ok(&d.berth(args), &format!("berth {args:?}"));
    // A tar archive served as is: ADD of a URL does not unpack it.
    let tarball = {
        let dir = work.path().join("tarsrc");
        write(&dir, &[("inner.txt", "inner\n")]);
        let out = Command::new("tar")
            .args(["-C", dir.to_str().expect("utf8"), "-cf", "-", "inner.txt"])
            .output()
            .expect("tar");
        out.stdout
    };
    let files = FileServer::serve(&[("/files/hello.txt", b"hello\n"), ("/data.tar", &tarball)]);
    let ctx = work.path().join("ctx");
    write(
        &ctx,
        &[
            (
                "Dockerfile",
                &format!(
                    "FROM {IMAGE}\n\
                     ADD {hello} /srv/\n\
                     ADD {hello} /srv/renamed.txt\n\
                     ADD --chmod=644 {tar} local.txt /srv/data/\n\
                     RUN echo ran\n",
                    hello = files.url("/files/hello.txt"),
                    tar = files.url("/data.tar"),
                ),
            ),
            ("local.txt", "local\n"),
        ],
    );
    let build = |extra: &[&str]| {
        let mut args = vec!["build", "-t", "fromurl:1", "--network", "none"];
        args.extend_from_slice(extra);
        args.push(ctx.to_str().expect("utf8"));
        d.berth(&args)
    };
    let first = build(&[]);
    assert!(first.status.success(), "{first:?}");
    // The classic builder's mode 0600, owner root, the server's Last-Modified; the archive
    // kept whole beside the local file.
    let seen = berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        "fromurl:1",
        "sh",
        "-c",
        "stat -c '%a %u %Y' /srv/hello.txt; cat /srv/hello.txt /srv/renamed.txt; \
         ls /srv/data; stat -c '%a' /srv/data/data.tar",
    ]);
    assert_eq!(
        seen,
        "600 0 784111777\nhello\nhello\ndata.tar\nlocal.txt\n644\n"
    );
    // Again: fetched again (its contents key the step), every step from the cache.
    let hits = files.hits();
    let again = build(&[]);
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{again:?}");
    assert_eq!(text.matches("---> CACHED").count(), 4, "{text}");
    assert_eq!(files.hits(), hits + 3);
    // A changed file at the URL: built again from that step on.
    files.set("/files/hello.txt", b"changed\n");
    let changed = build(&[]);
    let text = String::from_utf8_lossy(&changed.stdout);
    assert!(changed.status.success(), "{changed:?}");
    assert_eq!(text.matches("---> CACHED").count(), 0, "{text}");
    assert_eq!(
        berth(&[
            "run",
            "--rm",
            "--network",
            "none",
            "fromurl:1",
            "cat",
            "/srv/renamed.txt"
        ]),
        "changed\n"
    );
    // A URL that is not there, and one with no file name for a directory: clear errors,
    // nothing left behind.
    let containers_before = berth(&["containers", "ls", "-q"]);
    let snapshots_before = berth(&["snapshots", "ls"]).lines().count();
    for (add, error) in [
        (
            format!("ADD {} /x", files.url("/nothere")),
            "404 Not Found".to_string(),
        ),
        (
            format!("ADD http://127.0.0.1:{}/ /dir/", files.port),
            "cannot determine filename from url".to_string(),
        ),
    ] {
        write(&ctx, &[("Dockerfile", &format!("FROM {IMAGE}\n{add}\n"))]);
        let out = build(&[]);
        assert!(!out.status.success(), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&error), "{err}");
    }
    assert_eq!(berth(&["containers", "ls", "-q"]), containers_before);
    assert_eq!(
        berth(&["snapshots", "ls"]).lines().count(),
        snapshots_before
    );

    // -q: only the ID; a failing step's output on stderr.
    write(
        &ctx,
        &[(
            "Dockerfile",
            &format!("FROM {IMAGE}\nRUN echo quietly-said\nRUN echo says-why && exit 3\n"),
        )],
    );
    let quiet = build(&["-q"]);
    assert_eq!(quiet.status.code(), Some(3), "{quiet:?}");
    assert_eq!(String::from_utf8_lossy(&quiet.stdout), "");
    let err = String::from_utf8_lossy(&quiet.stderr);
    assert!(
        err.contains("says-why") && err.contains("Step 3/3"),
        "{err}"
    );
    // --progress=tty wants a terminal; on one it draws BuildKit's view on stderr.
    let no_tty = build(&["--progress=tty"]);
    assert!(!no_tty.status.success());
    assert!(String::from_utf8_lossy(&no_tty.stderr).contains("needs a terminal"));
    write(
        &ctx,
        &[(
            "Dockerfile",
            &format!("FROM {IMAGE}\nRUN echo on-a-terminal\nLABEL a=b\n"),
        )],
    );
    let cmd = format!(
        "{} --address {} build --progress=tty -t viewed:1 --network none {}",
        berth_tests::bin("berth").display(),
        d.address.display(),
        ctx.display()
    );
    let out = Command::new(berth_tests::system_bin("script"))
        .args(["-qefc", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for want in [
        "[+] Building",
        "(3/3) FINISHED",
        "=> [1/3] FROM example.com/busybox:latest",
        "=> [2/3] RUN echo on-a-terminal",
        "=> [3/3] LABEL a=b",
        "=> => naming to docker.io/library/viewed:1",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    assert!(!text.contains("Step 2/3"), "{text}");
    berth(&["image", "inspect", "viewed:1"]);
}
