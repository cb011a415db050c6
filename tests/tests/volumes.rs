//! Volumes through berthd's volumes core and `berth`: named volumes that outlive their
//! containers, bind mounts (read-only ones refuse writes from inside), `--volumes-from`,
//! Docker's copy-up (once), tmpfs mounts, the in-use rule of `volume rm`, anonymous volumes
//! going with `run --rm` and `rm -v`, and the `volume` commands' output. Each test runs its
//! own berthd, and checks from inside the containers and on the host.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use berth_tests::fixtures::{
    Compression, Entry, IMAGE_PATH_ENV, LayerSpec, busybox_layer, custom_image, import_busybox,
    pack_layout,
};
use berth_tests::{Daemon, fails, ok};
use serde_json::{Value, json};

const IMAGE: &str = "example.com/busybox:latest";
/// busybox with `/app/data` (a file owned by 1000:1000, mode 0640, and a symlink) and
/// `VOLUME /app/data`.
const DATA_IMAGE: &str = "example.com/appdata:latest";

struct Env {
    d: Daemon,
    work: tempfile::TempDir,
}

impl Env {
    fn start() -> Env {
        let d = Daemon::start();
        let work = tempfile::tempdir().expect("tempdir");
        import_busybox(work.path(), |a| d.ctr(a));
        Env { d, work }
    }

    fn berth(&self, args: &[&str]) -> Output {
        self.d.berth(args)
    }

    fn ok(&self, args: &[&str]) -> String {
        ok(&self.berth(args), &format!("berth {args:?}"))
    }

    fn fails(&self, args: &[&str]) -> String {
        fails(&self.berth(args), &format!("berth {args:?}"))
    }

    /// Imports [`DATA_IMAGE`].
    fn import_data_image(&self) {
        let layout = self.work.path().join("appdata");
        let files = LayerSpec::new(
            Compression::Gzip,
            "app data",
            vec![
                Entry::dir("app", 0o755),
                Entry::dir("app/data", 0o750).owner(1000, 1000),
                Entry::file("app/data/hello.txt", 0o640, "hello from the image\n")
                    .owner(1000, 1000),
                Entry::symlink("app/data/link", "hello.txt"),
            ],
        );
        custom_image(
            &layout,
            "latest",
            &[busybox_layer(), files],
            json!({"Env": [IMAGE_PATH_ENV], "Cmd": ["sh"], "Volumes": {"/app/data": {}}}),
        );
        let archive = self.work.path().join("appdata.tar");
        pack_layout(&layout, &archive);
        ok(
            &self.d.ctr(&[
                "images",
                "import",
                "--base-name",
                "example.com/appdata",
                &archive.display().to_string(),
            ]),
            "ctr images import appdata",
        );
    }

    /// The names `volume ls -q` lists.
    fn volume_names(&self) -> Vec<String> {
        self.ok(&["volume", "ls", "-q"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn data_dir(&self, name: &str) -> std::path::PathBuf {
        self.d
            .root
            .join("volumes")
            .join("default")
            .join(name)
            .join("_data")
    }

    fn wait_for(&self, what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn both(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn named_volume_data_survives_rm_and_a_new_run() {
    let mut e = Env::start();
    e.ok(&[
        "run",
        "--name",
        "writer",
        "-v",
        "data:/data",
        IMAGE,
        "sh",
        "-c",
        "echo kept > /data/f",
    ]);
    // Made implicitly by -v, and its data is under berthd's root.
    assert_eq!(e.volume_names(), ["data"]);
    assert_eq!(
        std::fs::read_to_string(e.data_dir("data").join("f")).expect("on the host"),
        "kept\n"
    );
    e.ok(&["rm", "writer"]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(e.d.root.join("volumes"))
        .expect("volumes dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "the volumes are root's alone");
    // And a restart of berthd: the record and the data are its own.
    e.d.restart();
    assert_eq!(e.volume_names(), ["data"]);
    let out = e.ok(&["run", "--rm", "-v", "data:/data", IMAGE, "cat", "/data/f"]);
    assert_eq!(out, "kept\n");
    assert_eq!(
        e.volume_names(),
        ["data"],
        "rm and run --rm keep named volumes"
    );
}

#[test]
fn bind_mounts_and_read_only_ones() {
    let e = Env::start();
    let host = tempfile::tempdir().expect("tempdir");
    std::fs::write(host.path().join("in"), "from the host\n").expect("write");
    let spec = format!("{}:/h", host.path().display());
    let out = e.ok(&[
        "run",
        "--rm",
        "-v",
        &spec,
        IMAGE,
        "sh",
        "-c",
        "cat /h/in && echo back > /h/out",
    ]);
    assert_eq!(out, "from the host\n");
    assert_eq!(
        std::fs::read_to_string(host.path().join("out")).expect("written from inside"),
        "back\n"
    );

    let ro = format!("{}:/h:ro", host.path().display());
    let out = e.berth(&[
        "run",
        "--rm",
        "-v",
        &ro,
        IMAGE,
        "sh",
        "-c",
        "cat /h/in; echo x > /h/new",
    ]);
    assert!(
        !out.status.success(),
        "a write into a read-only bind succeeded"
    );
    let text = both(&out);
    assert!(text.contains("from the host"), "{text}");
    assert!(text.contains("Read-only file system"), "{text}");
    assert!(!host.path().join("new").exists());

    // -v makes a missing host directory; --mount refuses it, as Docker.
    let missing = host.path().join("made/by/v");
    let spec = format!("{}:/m", missing.display());
    e.ok(&["run", "--rm", "-v", &spec, IMAGE, "touch", "/m/x"]);
    assert!(missing.join("x").exists());
    let mount = format!("type=bind,source={}/nope,target=/m", host.path().display());
    let err = e.fails(&["run", "--rm", "--mount", &mount, IMAGE, "true"]);
    assert!(err.contains("bind source path does not exist"), "{err}");
    // --mount type=bind, readonly.
    let mount = format!(
        "type=bind,source={},target=/m,readonly",
        host.path().display()
    );
    let out = e.berth(&["run", "--rm", "--mount", &mount, IMAGE, "touch", "/m/y"]);
    assert!(!out.status.success());
    assert!(
        both(&out).contains("Read-only file system"),
        "{}",
        both(&out)
    );
}

#[test]
fn volumes_from_shares_the_other_containers_mounts() {
    let e = Env::start();
    let host = tempfile::tempdir().expect("tempdir");
    let bind = format!("{}:/hostdir", host.path().display());
    e.ok(&[
        "create",
        "--name",
        "source",
        "-v",
        "shared:/shared",
        "-v",
        &bind,
        IMAGE,
        "true",
    ]);
    e.ok(&[
        "run",
        "--rm",
        "--volumes-from",
        "source",
        IMAGE,
        "sh",
        "-c",
        "echo one > /shared/x && echo two > /hostdir/y",
    ]);
    assert_eq!(
        std::fs::read_to_string(e.data_dir("shared").join("x")).expect("x"),
        "one\n"
    );
    assert!(host.path().join("y").exists());
    let out = e.berth(&[
        "run",
        "--rm",
        "--volumes-from",
        "source:ro",
        IMAGE,
        "sh",
        "-c",
        "cat /shared/x; echo three > /shared/z",
    ]);
    assert!(!out.status.success());
    let text = both(&out);
    assert!(
        text.contains("one") && text.contains("Read-only file system"),
        "{text}"
    );
    let err = e.fails(&["run", "--rm", "--volumes-from", "nobody", IMAGE, "true"]);
    assert!(err.contains("No such container: nobody"), "{err}");
}

#[test]
fn copy_up_fills_a_new_volume_once() {
    let e = Env::start();
    e.import_data_image();
    let out = e.ok(&[
        "run", "--rm", "-v", "fresh:/app/data", DATA_IMAGE, "sh", "-c",
        "cat /app/data/hello.txt; stat -c '%u:%g %a' /app/data/hello.txt /app/data; readlink /app/data/link",
    ]);
    assert_eq!(
        out,
        "hello from the image\n1000:1000 640\n1000:1000 750\nhello.txt\n"
    );
    // On the host too, owners kept.
    let meta = std::fs::metadata(e.data_dir("fresh").join("hello.txt")).expect("copied");
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (1000, 0o640));
    // Emptied by a container: a later run does not copy again.
    e.ok(&[
        "run",
        "--rm",
        "-v",
        "fresh:/app/data",
        DATA_IMAGE,
        "sh",
        "-c",
        "rm -rf /app/data/* /app/data/.[!.]*; true",
    ]);
    let out = e.ok(&[
        "run",
        "--rm",
        "-v",
        "fresh:/app/data",
        DATA_IMAGE,
        "ls",
        "-A",
        "/app/data",
    ]);
    assert_eq!(out, "", "copied again");
    // Changed data stays as changed.
    e.ok(&[
        "run",
        "--rm",
        "-v",
        "fresh:/app/data",
        DATA_IMAGE,
        "sh",
        "-c",
        "echo mine > /app/data/hello.txt",
    ]);
    let out = e.ok(&[
        "run",
        "--rm",
        "-v",
        "fresh:/app/data",
        DATA_IMAGE,
        "cat",
        "/app/data/hello.txt",
    ]);
    assert_eq!(out, "mine\n");
    // nocopy: a new volume stays empty.
    let out = e.ok(&[
        "run",
        "--rm",
        "-v",
        "bare:/app/data:nocopy",
        DATA_IMAGE,
        "ls",
        "-A",
        "/app/data",
    ]);
    assert_eq!(out, "");
    let out = e.ok(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,src=bare2,dst=/app/data,volume-nocopy",
        DATA_IMAGE,
        "ls",
        "-A",
        "/app/data",
    ]);
    assert_eq!(out, "");
    e.ok(&["volume", "rm", "bare", "bare2"]);
    // A volume over a directory the image does not have stays empty.
    let out = e.ok(&[
        "run",
        "--rm",
        "-v",
        "other:/nowhere",
        DATA_IMAGE,
        "ls",
        "-A",
        "/nowhere",
    ]);
    assert_eq!(out, "");

    // Two containers starting at once on one new volume: filled once, both see it.
    let outs: Vec<Output> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    e.berth(&[
                        "run",
                        "--rm",
                        "-v",
                        "together:/app/data",
                        DATA_IMAGE,
                        "cat",
                        "/app/data/hello.txt",
                    ])
                })
            })
            .collect();
        runs.into_iter()
            .map(|r| r.join().expect("thread"))
            .collect()
    });
    for out in &outs {
        assert_eq!(ok(out, "concurrent run"), "hello from the image\n");
    }
    e.ok(&["volume", "rm", "together"]);
    // The image's VOLUME: an anonymous volume, filled too, gone with run --rm.
    let out = e.ok(&["run", "--rm", DATA_IMAGE, "cat", "/app/data/hello.txt"]);
    assert_eq!(out, "hello from the image\n");
    let mut left = e.volume_names();
    left.sort();
    assert_eq!(left, ["fresh", "other"]);
}

#[test]
fn tmpfs_mounts_are_tmpfs() {
    let e = Env::start();
    let out = e.ok(&[
        "run",
        "--rm",
        "--tmpfs",
        "/scratch:size=1m",
        "--mount",
        "type=tmpfs,destination=/t2,tmpfs-size=2m,tmpfs-mode=1770",
        IMAGE,
        "sh",
        "-c",
        "grep -E ' /(scratch|t2) ' /proc/mounts; stat -c %a /t2",
    ]);
    let scratch = out
        .lines()
        .find(|l| l.contains(" /scratch "))
        .unwrap_or_else(|| panic!("no /scratch mount: {out}"));
    assert!(scratch.starts_with("tmpfs /scratch tmpfs "), "{scratch}");
    assert!(scratch.contains("size=1024k"), "{scratch}");
    assert!(scratch.contains("noexec"), "{scratch}");
    let t2 = out
        .lines()
        .find(|l| l.contains(" /t2 "))
        .unwrap_or_else(|| panic!("no /t2 mount: {out}"));
    assert!(
        t2.starts_with("tmpfs /t2 tmpfs ") && t2.contains("size=2048k"),
        "{t2}"
    );
    assert_eq!(out.lines().last(), Some("1770"));
    assert!(e.volume_names().is_empty());
}

#[test]
fn volume_rm_is_refused_while_in_use() {
    let e = Env::start();
    assert_eq!(e.ok(&["volume", "create", "v1"]), "v1\n");
    let id = e.ok(&["create", "--name", "user", "-v", "v1:/v", IMAGE, "true"]);
    let id = id.trim();
    let out = e.berth(&["volume", "rm", "v1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "Error response from daemon: remove v1: volume is in use - [{id}]"
        )),
        "{err}"
    );
    // -f does not override it either (Docker's rule).
    e.fails(&["volume", "rm", "-f", "v1"]);
    assert!(e.data_dir("v1").exists());
    e.ok(&["rm", "user"]);
    assert_eq!(e.ok(&["volume", "rm", "v1"]), "v1\n");
    assert!(e.volume_names().is_empty());
    assert!(!e.data_dir("v1").exists());
    let err = e.fails(&["volume", "rm", "v1"]);
    assert!(
        err.contains("Error response from daemon: get v1: no such volume"),
        "{err}"
    );
    e.ok(&["volume", "rm", "-f", "v1"]);
}

#[test]
fn anonymous_volumes_go_with_run_rm_and_rm_v() {
    let e = Env::start();
    // Foreground run --rm.
    e.ok(&["run", "--rm", "-v", "/anon", IMAGE, "touch", "/anon/x"]);
    assert!(e.volume_names().is_empty());
    // run -d --rm: berthd removes the container and its anonymous volume.
    e.ok(&[
        "run",
        "-d",
        "--rm",
        "-v",
        "/anon",
        "-v",
        "keep:/keep",
        IMAGE,
        "true",
    ]);
    e.wait_for(
        "the auto-removed container's anonymous volume to go",
        || e.volume_names() == ["keep"],
    );
    // rm -v takes the anonymous ones, not the named ones.
    e.ok(&[
        "create",
        "--name",
        "c1",
        "-v",
        "/anon",
        "-v",
        "keep:/keep",
        IMAGE,
        "true",
    ]);
    let names = e.volume_names();
    assert_eq!(names.len(), 2, "{names:?}");
    let anon = names
        .iter()
        .find(|n| n.len() == 64)
        .expect("anonymous")
        .clone();
    assert!(anon.chars().all(|c| c.is_ascii_hexdigit()));
    let inspect: Value = serde_json::from_str(&e.ok(&["inspect", "c1"])).expect("inspect json");
    let mounts = inspect[0]["Mounts"].as_array().expect("Mounts").clone();
    let m = mounts
        .iter()
        .find(|m| m["Destination"] == "/anon")
        .expect("anon mount");
    assert_eq!(m["Type"], "volume");
    assert_eq!(m["Name"], anon.as_str());
    assert_eq!(m["Driver"], "local");
    assert_eq!(m["RW"], true);
    assert_eq!(m["Source"], e.data_dir(&anon).display().to_string(), "{m}");
    e.ok(&["rm", "-v", "c1"]);
    assert_eq!(e.volume_names(), ["keep"]);
    // Plain rm keeps it: prune (anonymous only) takes it later.
    e.ok(&["create", "--name", "c2", "-v", "/anon", IMAGE, "true"]);
    e.ok(&["rm", "c2"]);
    assert_eq!(e.volume_names().len(), 2);
    let out = e.ok(&["volume", "prune", "-f"]);
    let anon: Vec<String> = e.volume_names();
    assert_eq!(anon, ["keep"]);
    assert!(out.starts_with("Deleted Volumes:\n"), "{out}");
    assert!(out.ends_with("\nTotal reclaimed space: 0B\n"), "{out}");
}

#[test]
fn volume_commands_output() {
    let e = Env::start();
    e.ok(&["volume", "create", "--label", "tier=db", "dbdata"]);
    e.ok(&["volume", "create", "plain"]);
    let anon = e.ok(&["volume", "create"]);
    let anon = anon.trim();
    assert_eq!(anon.len(), 64);
    let ls = e.ok(&["volume", "ls"]);
    let mut lines = ls.lines();
    assert_eq!(lines.next(), Some("DRIVER    VOLUME NAME"));
    assert!(ls.contains("\nlocal     dbdata\n"), "{ls}");
    assert_eq!(
        e.ok(&["volume", "ls", "-q", "--filter", "label=tier=db"]),
        "dbdata\n"
    );
    assert_eq!(
        e.ok(&["volume", "ls", "-q", "--filter", "name=pla"]),
        "plain\n"
    );
    let line = e.ok(&[
        "volume",
        "ls",
        "--format",
        "json",
        "--filter",
        "name=dbdata",
    ]);
    let j: Value = serde_json::from_str(line.trim()).expect("one JSON object");
    assert_eq!(
        (&j["Name"], &j["Driver"], &j["Labels"]),
        (&json!("dbdata"), &json!("local"), &json!("tier=db"))
    );
    e.ok(&["create", "--name", "cc", "-v", "plain:/p", IMAGE, "true"]);
    assert_eq!(
        e.ok(&["volume", "ls", "-q", "--filter", "dangling=false"]),
        "plain\n"
    );
    // system df counts them: 3 volumes, 1 in use, the unused ones' data reclaimable.
    std::fs::write(e.data_dir("dbdata").join("f"), "1234567").expect("write");
    std::fs::write(e.data_dir("plain").join("f"), "123").expect("write");
    let df = e.ok(&["system", "df"]);
    let row = df
        .lines()
        .find(|l| l.starts_with("Local Volumes"))
        .unwrap_or_else(|| panic!("no volumes row: {df}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[2..], ["3", "1", "10B", "7B", "(70%)"], "{row}");
    let df = e.ok(&["system", "df", "-v"]);
    let row = df
        .lines()
        .find(|l| l.starts_with("plain "))
        .unwrap_or_else(|| panic!("no row of plain: {df}"));
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["plain", "1", "3B"]
    );
    std::fs::remove_file(e.data_dir("dbdata").join("f")).expect("rm");
    std::fs::remove_file(e.data_dir("plain").join("f")).expect("rm");
    let err = e.fails(&["volume", "ls", "--filter", "colour=red"]);
    assert!(
        err.contains("Error response from daemon: Invalid filter 'colour'"),
        "{err}"
    );

    let text = e.ok(&["volume", "inspect", "dbdata"]);
    assert!(
        text.starts_with("[\n    {\n"),
        "Docker's four-space indent: {text}"
    );
    let v: Value = serde_json::from_str(&text).expect("json");
    let v = &v[0];
    assert_eq!(v["Name"], "dbdata");
    assert_eq!(v["Driver"], "local");
    assert_eq!(v["Scope"], "local");
    assert_eq!(v["Labels"], json!({"tier": "db"}));
    assert_eq!(v["Options"], Value::Null, "Docker's null for none");
    assert_eq!(v["Mountpoint"], e.data_dir("dbdata").display().to_string());
    assert!(Path::new(v["Mountpoint"].as_str().unwrap_or_default()).is_dir());
    let created = v["CreatedAt"].as_str().expect("CreatedAt");
    // RFC 3339 to the second, as Docker's: 2026-01-02T03:04:05Z.
    assert!(
        created.len() == 20 && created.ends_with('Z') && created.as_bytes()[10] == b'T',
        "{created}"
    );
    let out = e.berth(&["volume", "inspect", "dbdata", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("Error response from daemon: get nope: no such volume")
    );

    let err = e.fails(&["volume", "create", "a/b"]);
    assert!(
        err.contains("includes invalid characters for a local volume name"),
        "{err}"
    );
    let err = e.fails(&["volume", "create", "-o", "type=nfs", "x1"]);
    assert!(err.contains("missing required option: \"device\""), "{err}");
    let err = e.fails(&["volume", "create", "-o", "colour=red", "x1"]);
    assert!(
        err.contains("create x1: invalid option: \"colour\""),
        "{err}"
    );
    let err = e.fails(&["volume", "create", "-d", "nfs", "x2"]);
    assert!(err.contains("plugin \"nfs\" not found"), "{err}");

    // prune: anonymous only (a random name is not anonymous: `volume create` made it),
    // then every unused one with -a; the used one stays.
    e.ok(&["create", "--name", "made", "-v", "/scratch", IMAGE, "true"]);
    e.ok(&["rm", "made"]);
    let made: Vec<String> = e
        .volume_names()
        .into_iter()
        .filter(|n| n.len() == 64 && n != anon)
        .collect();
    assert_eq!(made.len(), 1, "{made:?}");
    std::fs::write(e.data_dir(&made[0]).join("f"), "12345").expect("write");
    let out = e.ok(&["volume", "prune", "-f"]);
    assert_eq!(
        out,
        format!(
            "Deleted Volumes:\n{}\n\nTotal reclaimed space: 5B\n",
            made[0]
        )
    );
    let out = e.ok(&["volume", "prune", "-f", "-a", "--filter", "label=tier"]);
    assert_eq!(
        out,
        "Deleted Volumes:\ndbdata\n\nTotal reclaimed space: 0B\n"
    );
    let out = e.ok(&["volume", "prune", "--all", "-f"]);
    assert_eq!(
        out,
        format!("Deleted Volumes:\n{anon}\n\nTotal reclaimed space: 0B\n")
    );
    assert_eq!(
        e.ok(&["volume", "prune", "-a", "-f"]),
        "Total reclaimed space: 0B\n"
    );
    assert_eq!(e.volume_names(), ["plain"]);
}

#[test]
fn volumes_api_is_listed_by_introspection() {
    let e = Env::start();
    let out = e.ok(&["plugins", "ls"]);
    assert!(
        out.lines()
            .any(|l| l.contains("io.berth.service.v1") && l.contains("volumes")),
        "{out}"
    );
}

/// Whether the host's mount table has a mount at `path`.
fn mounted(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&path.display().to_string()))
}

#[test]
fn local_driver_options_mount_a_filesystem() {
    let e = Env::start();
    e.ok(&[
        "volume",
        "create",
        "-o",
        "type=tmpfs",
        "-o",
        "device=tmpfs",
        "-o",
        "o=size=1m",
        "tv",
    ]);
    let v: Value = serde_json::from_str(&e.ok(&["volume", "inspect", "tv"])).expect("inspect json");
    assert_eq!(
        v[0]["Options"],
        json!({"type": "tmpfs", "device": "tmpfs", "o": "size=1m"})
    );
    let out = e.ok(&[
        "run",
        "--rm",
        "-v",
        "tv:/tv",
        IMAGE,
        "grep",
        " /tv ",
        "/proc/mounts",
    ]);
    assert!(
        out.starts_with("tmpfs /tv tmpfs ") && out.contains("size=1024k"),
        "{out}"
    );
    let data = e.data_dir("tv");
    assert!(mounted(&data), "the tmpfs is mounted on the host");
    e.ok(&["volume", "rm", "tv"]);
    assert!(!mounted(&data), "unmounted with the volume");
    assert!(!data.exists());

    // A bind of a host directory as a volume: removing the volume leaves the directory.
    let host = tempfile::tempdir().expect("tempdir");
    std::fs::write(host.path().join("keep"), "precious").expect("write");
    let device = format!("device={}", host.path().display());
    e.ok(&[
        "volume",
        "create",
        "-o",
        "type=none",
        "-o",
        "o=bind",
        "-o",
        &device,
        "hv",
    ]);
    let out = e.ok(&[
        "run",
        "--rm",
        "-v",
        "hv:/hv",
        IMAGE,
        "sh",
        "-c",
        "cat /hv/keep && echo new > /hv/made",
    ]);
    assert_eq!(out, "precious");
    assert!(host.path().join("made").exists());
    e.ok(&["volume", "rm", "hv"]);
    assert_eq!(
        std::fs::read_to_string(host.path().join("keep")).expect("host file kept"),
        "precious"
    );
    assert!(!mounted(&e.data_dir("hv")));
}
