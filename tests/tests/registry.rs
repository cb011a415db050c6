//! Images in and out of berthd through `berth`: pull, push, login, save/load, and the
//! failures a user meets on the way.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_tests::fixtures::{Registry, busybox_image, docker_archive, multilayer_image};
use berth_tests::{Daemon, bin, fails, ok};

/// Runs `berth` with a private credentials file.
fn berth(d: &Daemon, auth: &Path, args: &[&str]) -> Output {
    Command::new(bin("berth"))
        .arg("-a")
        .arg(&d.address)
        .args(args)
        .env("BERTH_AUTH_FILE", auth)
        .env_remove("BERTH_NAMESPACE")
        .stdin(Stdio::null())
        .output()
        .expect("run berth")
}

/// The names of the images of namespace `ns`, a line each (`REPOSITORY:TAG`, as Docker
/// shows them).
fn image_names(d: &Daemon, auth: &Path, ns: &str) -> String {
    let args = [
        "--namespace",
        ns,
        "images",
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ];
    ok(&berth(d, auth, &args), "images")
}

fn berth_stdin(d: &Daemon, auth: &Path, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(bin("berth"))
        .arg("-a")
        .arg(&d.address)
        .args(args)
        .env("BERTH_AUTH_FILE", auth)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    child.wait_with_output().expect("wait")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn pull_images_inspect_push() {
    let work = tempfile::Builder::new()
        .prefix("berth-reg-")
        .tempdir_in("/tmp")
        .expect("tmp");
    let auth = work.path().join("auth.json");
    let bb = busybox_image(&work.path().join("bb"), "1.35");
    let reg = Registry::start();
    reg.push_layout(&bb.layout, "lib/busybox:1.35");
    let d = Daemon::start();
    let r = reg.reference("lib/busybox:1.35");

    let out = berth(&d, &auth, &["pull", &r]);
    let text = ok(&out, "berth pull");
    assert_eq!(text.trim(), r);
    let progress = stderr(&out);
    assert!(
        progress.contains(&format!("{}: done", &bb.layers[0].descriptor.hex()[..12])),
        "{progress}"
    );

    let images = ok(&berth(&d, &auth, &["images"]), "berth images");
    let line = images
        .lines()
        .find(|l| l.contains("lib/busybox"))
        .expect("image listed");
    assert!(
        line.contains("1.35") && line.contains(&bb.config.hex()[..12]),
        "{images}"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&berth(&d, &auth, &["image", "inspect", &r]), "inspect"))
            .expect("json");
    assert_eq!(inspect[0]["Id"], bb.config.digest);
    assert_eq!(inspect[0]["Config"]["Cmd"], serde_json::json!(["sh"]));

    // Pulling again finds everything present.
    let again = berth(&d, &auth, &["pull", &r]);
    ok(&again, "second pull");
    assert!(stderr(&again).contains("exists"), "{}", stderr(&again));

    // Push to another repository; the registry serves the same manifest.
    let target = reg.reference("copies/busybox:v2");
    ok(&berth(&d, &auth, &["push", &r, &target]), "berth push");
    let raw = reg.manifest_raw("copies/busybox:v2");
    assert_eq!(
        berth_tests::fixtures::sha256_digest(&raw),
        bb.manifest.digest
    );

    // content fetch: the blobs, no image record.
    ok(
        &berth(&d, &auth, &["-n", "fetchonly", "content", "fetch", &r]),
        "content fetch",
    );
    let blobs = ok(
        &berth(&d, &auth, &["-n", "fetchonly", "content", "ls", "-q"]),
        "content ls",
    );
    for digest in [
        &bb.manifest.digest,
        &bb.config.digest,
        &bb.layers[0].descriptor.digest,
    ] {
        assert!(
            blobs.contains(digest.as_str()),
            "{digest} not fetched:\n{blobs}"
        );
    }
    assert_eq!(
        ok(
            &berth(&d, &auth, &["-n", "fetchonly", "images", "-q"]),
            "images"
        )
        .trim(),
        ""
    );

    // Tag and remove.
    ok(
        &berth(&d, &auth, &["image", "tag", &r, "example.com/bb:tagged"]),
        "tag",
    );
    assert!(image_names(&d, &auth, "default").contains("example.com/bb:tagged"));
    ok(&berth(&d, &auth, &["rmi", "example.com/bb:tagged"]), "rmi");
    assert!(!image_names(&d, &auth, "default").contains("example.com/bb:tagged"));
}

#[test]
fn login_pull_from_basic_auth_registry() {
    let work = tempfile::Builder::new()
        .prefix("berth-reg-")
        .tempdir_in("/tmp")
        .expect("tmp");
    let auth = work.path().join("auth.json");
    let bb = busybox_image(&work.path().join("bb"), "1.35");
    let reg = Registry::start_with_auth("alice", "s3cret");
    reg.push_layout(&bb.layout, "private/busybox:1.35");
    let d = Daemon::start();
    let r = reg.reference("private/busybox:1.35");

    let denied = fails(&berth(&d, &auth, &["pull", &r]), "pull without login");
    assert!(
        denied.contains("401") || denied.to_lowercase().contains("unauthorized"),
        "{denied}"
    );

    // A wrong password is refused by the registry, and nothing is stored.
    let wrong = berth_stdin(
        &d,
        &auth,
        &["login", "-u", "alice", "--password-stdin", &reg.host()],
        "nope\n",
    );
    assert_eq!(wrong.status.code(), Some(1), "{wrong:?}");
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        said.contains("Error response from daemon") && said.contains("unauthorized"),
        "{said}"
    );
    assert!(!String::from_utf8_lossy(&wrong.stdout).contains("Login Succeeded"));
    assert!(
        !std::fs::read_to_string(&auth)
            .unwrap_or_default()
            .contains(&reg.host()),
        "a refused login stored credentials"
    );
    // A registry that is not there: refused too.
    let closed = berth_stdin(
        &d,
        &auth,
        &["login", "-u", "alice", "--password-stdin", "127.0.0.1:1"],
        "s3cret\n",
    );
    assert_eq!(closed.status.code(), Some(1), "{closed:?}");
    // No terminal and no username: Docker's refusal.
    let no_tty = berth(&d, &auth, &["login", &reg.host()]);
    assert!(
        String::from_utf8_lossy(&no_tty.stderr)
            .contains("Cannot perform an interactive login from a non TTY device"),
        "{no_tty:?}"
    );

    let login = berth_stdin(
        &d,
        &auth,
        &["login", "-u", "alice", "--password-stdin", &reg.host()],
        "s3cret\n",
    );
    assert!(ok(&login, "login").contains("Login Succeeded"));
    // search: the registry's catalog, with the stored credentials.
    let found = ok(
        &berth(&d, &auth, &["search", &format!("{}/busy", reg.host())]),
        "search",
    );
    let mut lines = found.lines();
    assert!(
        lines.next().is_some_and(|h| h.starts_with("NAME")),
        "{found}"
    );
    assert_eq!(
        lines.next().and_then(|l| l.split_whitespace().next()),
        Some(format!("{}/private/busybox", reg.host()).as_str()),
        "{found}"
    );
    let none = ok(
        &berth(
            &d,
            &auth,
            &[
                "search",
                "--format",
                "{{.Name}}",
                &format!("{}/nothing", reg.host()),
            ],
        ),
        "search with no match",
    );
    assert_eq!(none, "");
    ok(&berth(&d, &auth, &["pull", &r]), "pull after login");
    assert!(image_names(&d, &auth, "default").contains("private/busybox:1.35"));
    // Push with the same credentials.
    ok(
        &berth(&d, &auth, &["push", &r, &reg.reference("private/copy:1")]),
        "push with credentials",
    );

    ok(&berth(&d, &auth, &["logout", &reg.host()]), "logout");
    let denied = fails(
        &berth(&d, &auth, &["push", &r, &reg.reference("private/copy:2")]),
        "push after logout",
    );
    assert!(
        denied.contains("401") || denied.to_lowercase().contains("unauthorized"),
        "{denied}"
    );
}

#[test]
fn save_rmi_load_round_trip_and_docker_archive() {
    let work = tempfile::Builder::new()
        .prefix("berth-reg-")
        .tempdir_in("/tmp")
        .expect("tmp");
    let auth = work.path().join("auth.json");
    let bb = busybox_image(&work.path().join("bb"), "1.35");
    let multi = multilayer_image(&work.path().join("ml"), "v1", 4);
    let reg = Registry::start();
    reg.push_layout(&bb.layout, "lib/busybox:1.35");
    reg.push_layout(&multi.image.layout, "lib/multi:v1");
    let d = Daemon::start();
    let (r1, r2) = (
        reg.reference("lib/busybox:1.35"),
        reg.reference("lib/multi:v1"),
    );
    ok(&berth(&d, &auth, &["pull", &r1]), "pull 1");
    ok(&berth(&d, &auth, &["pull", &r2]), "pull 2");
    let before = ok(&berth(&d, &auth, &["images", "--digests"]), "images");

    let archive = work.path().join("both.tar");
    ok(
        &berth(
            &d,
            &auth,
            &["save", "-o", archive.to_str().expect("utf8"), &r1, &r2],
        ),
        "save",
    );
    let listing = ok(
        &Command::new("tar")
            .arg("tf")
            .arg(&archive)
            .output()
            .expect("tar"),
        "tar tf",
    );
    assert!(
        listing.contains("index.json") && listing.contains("manifest.json"),
        "{listing}"
    );
    ok(&berth(&d, &auth, &["rmi", &r1, &r2]), "rmi");
    assert_eq!(
        ok(&berth(&d, &auth, &["images", "-q"]), "images").trim(),
        ""
    );
    ok(
        &berth(&d, &auth, &["load", "-i", archive.to_str().expect("utf8")]),
        "load",
    );
    let after = ok(&berth(&d, &auth, &["images", "--digests"]), "images");
    for digest in [&bb.manifest.digest, &multi.image.manifest.digest] {
        assert!(
            before.contains(digest.as_str()) && after.contains(digest.as_str()),
            "before:\n{before}\nafter:\n{after}"
        );
    }

    // A `docker save` archive loads too, named as Docker would.
    let docker = work.path().join("docker.tar");
    docker_archive(&bb, "mybox:7", &docker);
    ok(
        &berth(
            &d,
            &auth,
            &["-n", "dock", "load", "-i", docker.to_str().expect("utf8")],
        ),
        "load docker archive",
    );
    assert_eq!(
        image_names(&d, &auth, "dock"),
        "mybox:7\n",
        "named as Docker names it"
    );
    // Loaded images are unpacked into the default snapshotter, ready to run.
    let snaps = ok(
        &berth(&d, &auth, &["-n", "dock", "snapshots", "ls"]),
        "snapshots",
    );
    assert_eq!(
        snaps.matches("Committed").count(),
        bb.layers.len(),
        "one committed snapshot per layer:\n{snaps}"
    );
    let inspect: serde_json::Value = serde_json::from_str(&ok(
        &berth(
            &d,
            &auth,
            &[
                "-n",
                "dock",
                "image",
                "inspect",
                "docker.io/library/mybox:7",
            ],
        ),
        "inspect",
    ))
    .expect("json");
    assert_eq!(
        inspect[0]["Id"], bb.config.digest,
        "the config is the same blob"
    );

    // A truncated archive is refused and leaves no image.
    let bytes = std::fs::read(&archive).expect("read");
    let cut = work.path().join("cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).expect("write");
    let err = fails(
        &berth(
            &d,
            &auth,
            &["-n", "cut", "load", "-i", cut.to_str().expect("utf8")],
        ),
        "truncated load",
    );
    assert!(!err.is_empty());
    assert_eq!(
        ok(&berth(&d, &auth, &["-n", "cut", "images", "-q"]), "images").trim(),
        ""
    );
}

#[test]
fn interrupted_pull_resumes_without_refetching() {
    let (_work, auth, multi, mut reg) = big_image_in_registry(96);
    let d = Daemon::start();
    let r = reg.reference("big/multi:v1");

    let big = interrupt_pull(&d, &auth, &mut reg, &r, &multi.image);
    let committed = ok(&berth(&d, &auth, &["content", "ls", "-q"]), "content ls");

    reg.restart();
    let retry = berth(&d, &auth, &["pull", &r]);
    ok(&retry, "retried pull");
    let log = stderr(&retry);
    // Blobs that finished before the interruption are not fetched again...
    for digest in committed.lines().filter(|l| !l.is_empty()) {
        let short = &digest.trim_start_matches("sha256:")[..12];
        assert!(
            !log.contains(&format!("{short}: downloading")),
            "{short} was downloaded again:\n{log}"
        );
    }
    // ... and the big layer resumes at the offset it had reached.
    let short = &big.trim_start_matches("sha256:")[..12];
    let resumed_at = log
        .lines()
        .find(|l| l.starts_with(&format!("{short}: downloading (")))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|r| r.split('/').next())
        .and_then(|n| n.parse::<u64>().ok());
    assert!(
        resumed_at.is_some_and(|n| n > 4 << 20),
        "{short} did not resume past 4 MiB:\n{log}"
    );
    let images = ok(&berth(&d, &auth, &["images", "--digests"]), "images");
    assert!(images.contains(&multi.image.manifest.digest), "{images}");
}

/// A failed pull leaves what it fetched to its lease, which keeps it for the configured
/// ingest expiry (for a resumed pull) and then lets it go: the garbage collector takes the
/// partial ingest, the blobs and the lease. An ingest no lease holds (`ctr content ingest`
/// cut short) goes once untouched that long. Before ingests had owners, both stayed forever.
#[test]
fn a_failed_pulls_leftovers_are_collected_after_the_ingest_expiry() {
    let (work, auth, multi, mut reg) = big_image_in_registry(48);
    let d = Daemon::start_with_config("[content]\ningest_expiry = \"3s\"\n");
    let r = reg.reference("big/multi:v1");
    let big = interrupt_pull(&d, &auth, &mut reg, &r, &multi.image);

    let active = ok(&d.ctr(&["content", "active"]), "content active");
    assert!(active.contains(&format!("layer-{big}")), "{active}");
    let leases = ok(&d.ctr(&["leases", "ls"]), "leases ls");
    assert!(leases.contains("berth-pull-"), "{leases}");
    assert!(leases.contains("containerd.io/gc.expire"), "{leases}");
    // An unleased ingest: the client gives up after 10 of 1000 bytes.
    let ten = work.path().join("ten");
    std::fs::write(&ten, b"0123456789").expect("write");
    let cut = Command::new(berth_tests::system_bin("ctr"))
        .arg("--address")
        .arg(&d.address)
        .args(["content", "ingest", "--expected-size", "1000", "cut-short"])
        .stdin(std::fs::File::open(&ten).expect("open"))
        .output()
        .expect("ctr content ingest");
    assert!(!cut.status.success(), "a short ingest committed");
    let active = ok(&d.ctr(&["content", "active"]), "content active");
    assert!(active.contains("cut-short"), "{active}");

    wait_until_all_collected(&d);
    let log = d.log_text();
    assert!(log.contains("abandoned ingest removed"), "{log}");
}

/// A work dir (with the credentials file's path), the multi-layer image with a big layer
/// of `big_mb` MiB, and a registry serving it as `big/multi:v1`.
fn big_image_in_registry(
    big_mb: u64,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    berth_tests::fixtures::MultilayerImage,
    Registry,
) {
    let work = tempfile::Builder::new()
        .prefix("berth-reg-")
        .tempdir_in("/tmp")
        .expect("tmp");
    let auth = work.path().join("auth.json");
    let multi = multilayer_image(&work.path().join("ml"), "v1", big_mb);
    let reg = Registry::start();
    reg.push_layout(&multi.image.layout, "big/multi:v1");
    (work, auth, multi, reg)
}

/// Waits (up to a minute) until berthd holds no ingest, lease or blob, and its ingest
/// directory holds no file.
fn wait_until_all_collected(d: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let active = ok(&d.ctr(&["content", "active"]), "content active");
        let leases = ok(&d.ctr(&["leases", "ls", "-q"]), "leases ls");
        let blobs = ok(&d.ctr(&["content", "ls", "-q"]), "content ls");
        // Ingest directories go after the collection's transaction, and one a crash left
        // half-made (no data, so not active) goes too.
        let ingest = d.root.join("content/ingest");
        let ingest_files = walkdir(&ingest);
        let ingest_dirs = std::fs::read_dir(&ingest).map_or(0, |d| d.count());
        if active.lines().count() <= 1
            && leases.trim().is_empty()
            && blobs.trim().is_empty()
            && ingest_dirs == 0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left after the expiry:\nactive:\n{active}\nleases:\n{leases}\nblobs:\n{blobs}\n\
             ingest directory: {ingest_dirs} entries, {ingest_files} bytes"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A pull that dies with berthd (kill -9 mid-layer) leaves its lease, which nobody will
/// delete: the next start gives it the ingest expiry, after which the partial ingest, the
/// blobs and the lease are collected.
#[test]
fn a_pull_killed_with_berthd_is_collected_after_the_restart() {
    let (_work, auth, _multi, reg) = big_image_in_registry(48);
    let mut d = Daemon::start_with_config("[content]\ningest_expiry = \"3s\"\n");
    let r = reg.reference("big/multi:v1");
    let mut child = Command::new(bin("berth"))
        .arg("-a")
        .arg(&d.address)
        .args(["pull", &r])
        .env("BERTH_AUTH_FILE", &auth)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pull");
    let ingest = d.root.join("content/ingest");
    let deadline = Instant::now() + Duration::from_secs(60);
    while walkdir(&ingest) < 4 << 20 {
        assert!(Instant::now() < deadline, "no partial download appeared");
        assert!(
            child.try_wait().ok().flatten().is_none(),
            "the pull finished before berthd could be killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    d.kill9();
    let _ = child.wait();
    d.restart();
    let leases = ok(&d.ctr(&["leases", "ls"]), "leases ls");
    assert!(leases.contains("berth-pull-"), "{leases}");
    wait_until_all_collected(&d);
    let log = d.log_text();
    assert!(
        log.contains("lease of a pull or import the previous run left"),
        "{log}"
    );
}

/// Bytes of the regular files under `dir`.
fn walkdir(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(m) = e.metadata() else { continue };
        if m.is_dir() {
            total += walkdir(&e.path());
        } else {
            total += m.len();
        }
    }
    total
}

/// Starts `berth pull r` and kills the registry once the image's biggest layer is partly
/// (over 4 MiB) downloaded; the pull must fail. Returns that layer's digest.
fn interrupt_pull(
    d: &Daemon,
    auth: &Path,
    reg: &mut Registry,
    r: &str,
    image: &berth_tests::fixtures::BuiltImage,
) -> String {
    // Start a pull and stop the registry once the big layer is partly downloaded.
    let mut child = Command::new(bin("berth"))
        .arg("-a")
        .arg(&d.address)
        .args(["pull", r])
        .env("BERTH_AUTH_FILE", auth)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pull");
    // The big layer's ingest (berth names layer ingests "layer-<digest>", one directory per
    // sha256("<namespace>\0<ref>")).
    let big = image
        .layers
        .iter()
        .max_by_key(|l| l.descriptor.size)
        .map(|l| l.descriptor.digest.clone())
        .expect("layers");
    let key = berth_tests::fixtures::sha256_digest(format!("default\0layer-{big}").as_bytes());
    let data = d
        .root
        .join("content/ingest")
        .join(key.trim_start_matches("sha256:"))
        .join("data");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if std::fs::metadata(&data)
            .map(|m| m.len() > 4 << 20)
            .unwrap_or(false)
        {
            break;
        }
        if let Ok(Some(_)) = child.try_wait() {
            panic!("the pull finished before it could be interrupted");
        }
        assert!(
            Instant::now() < deadline,
            "no partial download of {big} appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    reg.kill9();
    let first = child.wait_with_output().expect("wait");
    assert!(!first.status.success(), "the pull survived a dead registry");
    big
}

#[test]
fn pull_failures_are_clear() {
    let work = tempfile::Builder::new()
        .prefix("berth-reg-")
        .tempdir_in("/tmp")
        .expect("tmp");
    let auth = work.path().join("auth.json");
    let bb = busybox_image(&work.path().join("bb"), "1.35");
    let reg = Registry::start();
    reg.push_layout(&bb.layout, "lib/busybox:1.35");
    let d = Daemon::start();

    let unknown = fails(
        &berth(&d, &auth, &["pull", &reg.reference("lib/busybox:nope")]),
        "unknown tag",
    );
    assert!(unknown.contains("not found"), "{unknown}");
    let unreachable = fails(
        &berth(&d, &auth, &["pull", "127.0.0.1:1/x/y:z"]),
        "unreachable registry",
    );
    assert!(
        unreachable.contains("unavailable") || unreachable.contains("127.0.0.1:1"),
        "{unreachable}"
    );
    let bad = fails(
        &berth(&d, &auth, &["pull", "Not A Reference"]),
        "bad reference",
    );
    assert!(bad.contains("invalid reference format"), "{bad}");
    let other = fails(
        &berth(
            &d,
            &auth,
            &[
                "pull",
                "--platform",
                "linux/s390x",
                &reg.reference("lib/busybox:1.35"),
            ],
        ),
        "other platform",
    );
    assert!(other.contains("s390x"), "{other}");
    // Nothing partial is visible after the failures.
    assert_eq!(
        ok(&berth(&d, &auth, &["images", "-q"]), "images").trim(),
        ""
    );
    assert_eq!(
        ok(&berth(&d, &auth, &["content", "active"]), "active")
            .lines()
            .count(),
        1,
        "ingests left"
    );
}

#[test]
fn registry_serving_a_corrupt_blob_is_refused() {
    let work = tempfile::Builder::new()
        .prefix("berth-reg-")
        .tempdir_in("/tmp")
        .expect("tmp");
    let auth = work.path().join("auth.json");
    let bb = busybox_image(&work.path().join("bb"), "1.35");
    let reg = Registry::start();
    reg.push_layout(&bb.layout, "lib/busybox:1.35");
    // Flip bytes of the layer in the registry's own storage: same size, other digest.
    let layer = &bb.layers[0].descriptor;
    let hex = layer.hex();
    let stored = reg
        .storage()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut bytes = std::fs::read(&stored).expect("registry blob");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&stored, &bytes).expect("corrupt blob");

    let d = Daemon::start();
    let err = fails(
        &berth(&d, &auth, &["pull", &reg.reference("lib/busybox:1.35")]),
        "pull of a corrupt blob",
    );
    assert!(
        err.contains(&layer.digest),
        "the error names the expected digest: {err}"
    );
    assert!(err.contains("digest") || err.contains("mismatch"), "{err}");
    // Nothing of it is visible: no image, no layer blob, no ingest.
    assert_eq!(
        ok(&berth(&d, &auth, &["images", "-q"]), "images").trim(),
        ""
    );
    let blobs = ok(&berth(&d, &auth, &["content", "ls", "-q"]), "content ls");
    assert!(!blobs.contains(&layer.digest), "{blobs}");
    assert_eq!(
        ok(&berth(&d, &auth, &["content", "active"]), "active")
            .lines()
            .count(),
        1,
        "ingest left"
    );

    // History and inspect of a good image, for the record.
    let good = Registry::start();
    good.push_layout(&bb.layout, "lib/busybox:1.35");
    let r = good.reference("lib/busybox:1.35");
    ok(&berth(&d, &auth, &["pull", &r]), "pull");
    let history = ok(&berth(&d, &auth, &["image", "history", &r]), "history");
    assert!(history.starts_with("IMAGE"), "{history}");
    assert!(history.contains(&bb.config.hex()[..12]), "{history}");
}

/// Hardening, item 4: a pull that fails on a full disk gives the space back (its partial
/// blob goes); once there is room, the same pull works.
#[test]
fn a_pull_that_fills_the_disk_leaves_no_partial_blob() {
    let work = tempfile::Builder::new()
        .prefix("berth-reg-")
        .tempdir_in("/tmp")
        .expect("tmp");
    let multi = multilayer_image(&work.path().join("ml"), "v1", 40);
    let reg = Registry::start();
    reg.push_layout(&multi.image.layout, "big/full:v1");
    let r = reg.reference("big/full:v1");

    let disk = berth_tests::SmallDisk::mount("32m");
    let free = || disk.free();
    let d = Daemon::start_in(disk.base());
    let before = free();
    let failed = d.berth(&["pull", &r]);
    assert!(
        !failed.status.success(),
        "a 40 MiB layer fit on a 32 MiB disk"
    );
    let active = ok(&d.ctr(&["content", "active"]), "ctr content active");
    assert_eq!(
        active.lines().filter(|l| !l.starts_with("REF")).count(),
        0,
        "partial blobs left:\n{active}"
    );
    assert!(
        free() + (4 << 20) >= before,
        "the failed pull keeps {} bytes of the disk",
        before.saturating_sub(free())
    );
    drop(d);
}

/// `berth run` pulls a missing image first (Docker's `--pull missing`), and `--pull never`
/// refuses one that is not stored, with Docker's words.
#[test]
fn run_pulls_a_missing_image() {
    let work = tempfile::Builder::new()
        .prefix("berth-reg-")
        .tempdir_in("/tmp")
        .expect("tmp");
    let auth = work.path().join("auth.json");
    let bb = busybox_image(&work.path().join("bb"), "1");
    let reg = Registry::start();
    reg.push_layout(&bb.layout, "lib/busybox:1");
    let d = Daemon::start();
    let r = reg.reference("lib/busybox:1");

    let never = berth(&d, &auth, &["run", "--rm", "--pull", "never", &r, "true"]);
    assert_eq!(never.status.code(), Some(125), "{never:?}");
    assert!(
        stderr(&never).contains(&format!("Error response from daemon: No such image: {r}")),
        "{}",
        stderr(&never)
    );
    let out = berth(
        &d,
        &auth,
        &["run", "--rm", "--network", "none", &r, "echo", "hi"],
    );
    assert_eq!(ok(&out, "run of a missing image"), "hi\n");
    assert!(
        stderr(&out).contains(&format!("Unable to find image '{r}' locally")),
        "{}",
        stderr(&out)
    );
    // Stored now: no pull.
    let out = berth(&d, &auth, &["run", "--rm", "--network", "none", &r, "true"]);
    ok(&out, "second run");
    assert!(
        !stderr(&out).contains("Unable to find image"),
        "{}",
        stderr(&out)
    );
    let bad = berth(
        &d,
        &auth,
        &["run", "--rm", "--pull", "sometimes", &r, "true"],
    );
    assert_eq!(bad.status.code(), Some(125), "{bad:?}");
}

/// `berth login` on a terminal asks for the username and the password (the password
/// without echo), as Docker's does.
#[test]
fn login_prompts_on_a_terminal() {
    let work = tempfile::Builder::new()
        .prefix("berth-reg-")
        .tempdir_in("/tmp")
        .expect("tmp");
    let auth = work.path().join("auth.json");
    let reg = Registry::start_with_auth("alice", "s3cret");
    let d = Daemon::start();
    // `script` gives the command a terminal and passes our input to it.
    let cmd = format!(
        "{} -H {} login {}",
        bin("berth").display(),
        d.address.display(),
        reg.host()
    );
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .env("BERTH_AUTH_FILE", &auth)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    let mut stdin = child.stdin.take().expect("stdin");
    {
        use std::io::Write;
        stdin.write_all(b"alice\n").expect("username");
        std::thread::sleep(Duration::from_millis(500));
        stdin.write_all(b"s3cret\n").expect("password");
    }
    let out = child.wait_with_output().expect("script");
    drop(stdin);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("Username: "), "{text}");
    assert!(text.contains("Password: "), "{text}");
    assert!(text.contains("Login Succeeded"), "{text}");
    assert!(
        std::fs::read_to_string(&auth)
            .expect("auth file")
            .contains(&reg.host())
    );
}

/// Docker Hub's mirrors and the insecure registries of berthd's configuration: a pull of a
/// Docker Hub name comes from the mirror, and `info` shows both.
#[test]
fn registry_mirrors_and_insecure_registries() {
    let work = tempfile::Builder::new()
        .prefix("berth-reg-")
        .tempdir_in("/tmp")
        .expect("tmp");
    let auth = work.path().join("auth.json");
    let bb = busybox_image(&work.path().join("bb"), "1.35");
    let reg = Registry::start();
    reg.push_layout(&bb.layout, "library/busybox:1.35");
    let config = format!(
        "[registry]\nmirrors = [\"http://{}\"]\ninsecure_registries = [\"registry.test:5000\", \"10.99.0.0/16\"]\n",
        reg.host()
    );
    let d = Daemon::start_with_config(&config);
    ok(
        &berth(&d, &auth, &["pull", "busybox:1.35"]),
        "pull through the mirror",
    );
    assert!(image_names(&d, &auth, "default").contains("busybox:1.35"));
    let info = ok(&berth(&d, &auth, &["info"]), "info");
    assert!(
        info.contains(&format!(" Registry Mirrors:\n  http://{}\n", reg.host())),
        "{info}"
    );
    assert!(info.contains(" Insecure Registries:\n"), "{info}");
    for r in ["registry.test:5000", "10.99.0.0/16", "127.0.0.0/8"] {
        assert!(info.contains(&format!("\n  {r}\n")), "{r}: {info}");
    }
    let cidrs = ok(
        &berth(
            &d,
            &auth,
            &[
                "info",
                "--format",
                "{{json .RegistryConfig.InsecureRegistryCIDRs}}",
            ],
        ),
        "info --format",
    );
    assert_eq!(cidrs.trim(), r#"["10.99.0.0/16","127.0.0.0/8","::1/128"]"#);
}
