//! The snapshotter conformance suite: one set of cases, run against every snapshotter
//! (`overlayfs::<case>` and `native::<case>`), modelled on containerd's `SnapshotterSuite`.
//!
//! Each case gets its own root under /var/tmp (a real disk: overlayfs needs a filesystem
//! with xattrs and whiteouts) and its own redb database, and mounts for real.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_snapshotter::metastore::SNAPSHOTS;
use berth_snapshotter::mount::{self, mount_all, unmount, with_temp_mount};
use berth_snapshotter::{Kind, Mount, Snapshotter, SnapshotterError};

const NS: &str = "testsuite";

struct Env {
    dir: tempfile::TempDir,
    db: Arc<berth_snapshotter::SharedDb>,
    sn: Arc<dyn Snapshotter>,
    name: &'static str,
}

impl Env {
    fn new(name: &'static str) -> Env {
        fs::create_dir_all("/var/tmp").expect("mkdir /var/tmp");
        let dir = tempfile::Builder::new()
            .prefix(&format!("berth-snap-{name}-"))
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        let db =
            berth_snapshotter::SharedDb::open(&dir.path().join("meta.redb")).expect("create db");
        let sn = berth_snapshotter::open(name, db.clone(), &dir.path().join("root")).expect("open");
        Env { dir, db, sn, name }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn reopen(&mut self) {
        self.sn =
            berth_snapshotter::open(self.name, self.db.clone(), &self.root()).expect("reopen");
    }

    fn entries(&self, sub: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.root().join(sub))
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Prepares `key` on `parent`, runs `f` on its mounted filesystem, commits it as `name`.
    fn layer(&self, key: &str, parent: Option<&str>, name: &str, f: impl FnOnce(&Path)) {
        let mounts = self
            .sn
            .prepare(NS, key, parent, labels(&[]))
            .expect("prepare");
        in_mount(&mounts, f);
        self.sn.commit(NS, name, key, labels(&[])).expect("commit");
    }

    /// Runs `f` on a read-only view of `parent`, removed afterwards.
    fn check_view(&self, parent: &str, f: impl FnOnce(&Path)) {
        let key = format!("view-of-{parent}");
        let mounts = self
            .sn
            .view(NS, &key, Some(parent), labels(&[]))
            .expect("view");
        in_mount(&mounts, f);
        self.sn.remove(NS, &key).expect("remove view");
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn in_mount(mounts: &[Mount], f: impl FnOnce(&Path)) {
    with_temp_mount(mounts, |dir| {
        f(dir);
        Ok(())
    })
    .expect("mount");
}

fn write(path: &Path, content: &str) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("mkdir");
    }
    fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

macro_rules! err_is {
    ($result:expr, $variant:ident) => {
        match $result {
            Err(SnapshotterError::$variant(msg)) => msg,
            Err(other) => panic!(
                "expected {} error, got {other:?} ({other})",
                stringify!($variant)
            ),
            Ok(_) => panic!("expected {} error, got success", stringify!($variant)),
        }
    };
}

// ---- cases ----

fn basic(name: &'static str) {
    let env = Env::new(name);
    let mounts = env
        .sn
        .prepare(NS, "prep", None, labels(&[]))
        .expect("prepare");
    let target = env.dir.path().join("mnt");
    fs::create_dir(&target).expect("mkdir");
    mount_all(&mounts, &target).expect("mount");
    write(&target.join("a/b"), "hello");
    write(&target.join("c"), "see");
    unmount(&target).expect("unmount");
    env.sn
        .commit(NS, "committed", "prep", labels(&[]))
        .expect("commit");
    let info = env.sn.stat(NS, "committed").expect("stat");
    assert_eq!(info.kind, Kind::Committed);
    assert_eq!(info.parent, None);

    let mounts = env
        .sn
        .prepare(NS, "next", Some("committed"), labels(&[]))
        .expect("prepare next");
    assert_eq!(env.sn.mounts(NS, "next").expect("mounts"), mounts);
    mount_all(&mounts, &target).expect("mount next");
    assert_eq!(read(&target.join("a/b")), "hello");
    write(&target.join("d"), "dee");
    unmount(&target).expect("unmount");
    env.sn
        .commit(NS, "next-committed", "next", labels(&[]))
        .expect("commit next");

    let mounts = env
        .sn
        .view(NS, "view", Some("next-committed"), labels(&[]))
        .expect("view");
    assert_eq!(env.sn.mounts(NS, "view").expect("mounts"), mounts);
    in_mount(&mounts, |dir| {
        assert_eq!(read(&dir.join("a/b")), "hello");
        assert_eq!(read(&dir.join("c")), "see");
        assert_eq!(read(&dir.join("d")), "dee");
    });
    let info = env.sn.stat(NS, "view").expect("stat view");
    assert_eq!(info.kind, Kind::View);
    assert_eq!(info.parent.as_deref(), Some("next-committed"));
    let names: Vec<String> = env
        .sn
        .list(NS)
        .expect("list")
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["committed", "next-committed", "view"]);
}

fn stat_active(name: &'static str) {
    let env = Env::new(name);
    env.sn
        .prepare(NS, "active", None, labels(&[("a", "1")]))
        .expect("prepare");
    let info = env.sn.stat(NS, "active").expect("stat");
    assert_eq!(info.name, "active");
    assert_eq!(info.kind, Kind::Active);
    assert_eq!(info.parent, None);
    assert_eq!(info.labels, labels(&[("a", "1")]));
    assert!(info.created <= info.updated);
}

fn stat_committed(name: &'static str) {
    let env = Env::new(name);
    env.layer("prep", None, "base", |d| write(&d.join("f"), "x"));
    let info = env.sn.stat(NS, "base").expect("stat");
    assert_eq!(info.name, "base");
    assert_eq!(info.kind, Kind::Committed);
    err_is!(env.sn.stat(NS, "prep"), NotFound);
    env.layer("prep2", Some("base"), "top", |_| {});
    assert_eq!(
        env.sn.stat(NS, "top").expect("stat").parent.as_deref(),
        Some("base")
    );
}

fn transitivity(name: &'static str) {
    let env = Env::new(name);
    env.layer("k1", None, "l1", |d| write(&d.join("foo"), "from layer 1"));
    env.layer("k2", Some("l1"), "l2", |d| {
        write(&d.join("bar"), "from layer 2")
    });
    let mounts = env
        .sn
        .prepare(NS, "k3", Some("l2"), labels(&[]))
        .expect("prepare");
    in_mount(&mounts, |d| {
        assert_eq!(read(&d.join("foo")), "from layer 1");
        assert_eq!(read(&d.join("bar")), "from layer 2");
    });
}

fn prepare_view_missing_parent(name: &'static str) {
    let env = Env::new(name);
    let msg = err_is!(env.sn.prepare(NS, "k", Some("nope"), labels(&[])), NotFound);
    assert!(msg.contains("nope"), "{msg}");
    err_is!(env.sn.view(NS, "v", Some("nope"), labels(&[])), NotFound);
    // A parent that is not committed.
    env.sn
        .prepare(NS, "active", None, labels(&[]))
        .expect("prepare");
    err_is!(
        env.sn.prepare(NS, "k", Some("active"), labels(&[])),
        InvalidArgument
    );
    err_is!(
        env.sn.view(NS, "v", Some("active"), labels(&[])),
        InvalidArgument
    );
    env.layer("p", None, "base", |_| {});
    env.sn
        .view(NS, "view", Some("base"), labels(&[]))
        .expect("view");
    err_is!(
        env.sn.prepare(NS, "k", Some("view"), labels(&[])),
        InvalidArgument
    );
    err_is!(env.sn.stat(NS, "k"), NotFound);
}

fn failed_prepare_leaves_nothing(name: &'static str) {
    let env = Env::new(name);
    err_is!(env.sn.prepare(NS, "k", Some("nope"), labels(&[])), NotFound);
    err_is!(env.sn.view(NS, "v", Some("nope"), labels(&[])), NotFound);
    assert!(env.entries("tmp").is_empty(), "{:?}", env.entries("tmp"));
    assert!(
        env.entries("snapshots").is_empty(),
        "{:?}",
        env.entries("snapshots")
    );
    env.sn.prepare(NS, "k", None, labels(&[])).expect("prepare");
    err_is!(env.sn.prepare(NS, "k", None, labels(&[])), AlreadyExists);
    assert!(env.entries("tmp").is_empty(), "{:?}", env.entries("tmp"));
    assert_eq!(env.entries("snapshots").len(), 1);
    assert!(env.sn.list(NS).expect("list").len() == 1);
}

fn update(name: &'static str) {
    let env = Env::new(name);
    env.sn
        .prepare(NS, "k", None, labels(&[("a", "1"), ("b", "2")]))
        .expect("prepare");
    let before = env.sn.stat(NS, "k").expect("stat");

    // No field paths: all labels replaced.
    let mut info = before.clone();
    info.labels = labels(&[("c", "3")]);
    let out = env.sn.update(NS, info.clone(), &[]).expect("update");
    assert_eq!(out.labels, labels(&[("c", "3")]));
    assert!(out.updated >= before.updated);
    assert_eq!(out.created, before.created);
    assert_eq!(
        env.sn.stat(NS, "k").expect("stat").labels,
        labels(&[("c", "3")])
    );

    // labels.<key>: set one, delete one absent from the given labels.
    info.labels = labels(&[("d", "4")]);
    let out = env
        .sn
        .update(NS, info.clone(), &["labels.d".into(), "labels.c".into()])
        .expect("update paths");
    assert_eq!(out.labels, labels(&[("d", "4")]));
    info.labels = labels(&[("e", "5")]);
    let out = env
        .sn
        .update(NS, info.clone(), &["labels.e".into()])
        .expect("update path");
    assert_eq!(out.labels, labels(&[("d", "4"), ("e", "5")]));

    // "labels": replace all.
    info.labels = labels(&[("f", "6")]);
    let out = env
        .sn
        .update(NS, info.clone(), &["labels".into()])
        .expect("update labels");
    assert_eq!(out.labels, labels(&[("f", "6")]));

    // Anything else is InvalidArgument and changes nothing.
    let msg = err_is!(
        env.sn.update(NS, info.clone(), &["name".into()]),
        InvalidArgument
    );
    assert!(msg.contains("name"), "{msg}");
    err_is!(
        env.sn.update(NS, info.clone(), &["parent".into()]),
        InvalidArgument
    );
    assert_eq!(
        env.sn.stat(NS, "k").expect("stat").labels,
        labels(&[("f", "6")])
    );

    // Missing and empty names.
    info.name = "missing".into();
    err_is!(env.sn.update(NS, info.clone(), &[]), NotFound);
    info.name = String::new();
    err_is!(env.sn.update(NS, info, &[]), InvalidArgument);

    // Labels of a committed snapshot can be updated too.
    env.layer("p", None, "c", |_| {});
    let mut ci = env.sn.stat(NS, "c").expect("stat");
    ci.labels = labels(&[("containerd.io/gc.root", "x")]);
    env.sn.update(NS, ci, &[]).expect("update committed");
    assert_eq!(
        env.sn.stat(NS, "c").expect("stat").labels,
        labels(&[("containerd.io/gc.root", "x")])
    );
}

fn remove(name: &'static str) {
    let env = Env::new(name);
    env.layer("p", None, "parent", |d| write(&d.join("f"), "x"));
    env.sn
        .prepare(NS, "child", Some("parent"), labels(&[]))
        .expect("prepare");
    let msg = err_is!(env.sn.remove(NS, "parent"), FailedPrecondition);
    assert!(msg.contains("cannot remove snapshot with child"), "{msg}");
    env.sn.stat(NS, "parent").expect("parent still there");
    env.sn.remove(NS, "child").expect("remove child");
    env.sn.remove(NS, "parent").expect("remove parent");
    err_is!(env.sn.remove(NS, "parent"), NotFound);
    err_is!(env.sn.remove(NS, "never"), NotFound);
    err_is!(env.sn.remove(NS, ""), InvalidArgument);
    assert!(env.sn.list(NS).expect("list").is_empty());
    assert!(
        env.entries("snapshots").is_empty(),
        "{:?}",
        env.entries("snapshots")
    );
    assert!(env.entries("tmp").is_empty(), "{:?}", env.entries("tmp"));
    // The key can be reused, with a fresh directory.
    env.sn
        .prepare(NS, "parent", None, labels(&[]))
        .expect("prepare again");
    let mounts = env.sn.mounts(NS, "parent").expect("mounts");
    in_mount(&mounts, |d| assert!(!exists(&d.join("f"))));
}

fn layer_file_update(name: &'static str) {
    let env = Env::new(name);
    env.layer("k1", None, "l1", |d| {
        write(&d.join("foo"), "first version");
        write(&d.join("dir/bar"), "bar");
    });
    env.layer("k2", Some("l1"), "l2", |d| {
        assert_eq!(read(&d.join("foo")), "first version");
        write(&d.join("foo"), "second");
        fs::OpenOptions::new()
            .append(true)
            .open(d.join("dir/bar"))
            .and_then(|mut f| io::Write::write_all(&mut f, b"+more"))
            .expect("append");
    });
    env.check_view("l2", |d| {
        assert_eq!(read(&d.join("foo")), "second");
        assert_eq!(read(&d.join("dir/bar")), "bar+more");
    });
    env.check_view("l1", |d| assert_eq!(read(&d.join("foo")), "first version"));
}

fn remove_directory_in_lower_layer(name: &'static str) {
    let env = Env::new(name);
    env.layer("k1", None, "l1", |d| {
        write(&d.join("lib/sub/file"), "x");
        write(&d.join("keep/file"), "y");
    });
    env.layer("k2", Some("l1"), "l2", |d| {
        fs::remove_dir_all(d.join("lib")).expect("remove dir");
    });
    env.layer("k3", Some("l2"), "l3", |d| {
        assert!(!exists(&d.join("lib")));
        // A directory of the same name created again starts empty.
        fs::create_dir(d.join("lib")).expect("mkdir");
        write(&d.join("lib/new"), "n");
    });
    env.check_view("l2", |d| {
        assert!(!exists(&d.join("lib")));
        assert_eq!(read(&d.join("keep/file")), "y");
    });
    env.check_view("l3", |d| {
        assert!(!exists(&d.join("lib/sub")));
        assert_eq!(read(&d.join("lib/new")), "n");
    });
}

fn chown_and_permissions(name: &'static str) {
    let env = Env::new(name);
    env.layer("k1", None, "l1", |d| {
        fs::create_dir(d.join("private")).expect("mkdir");
        fs::set_permissions(d.join("private"), fs::Permissions::from_mode(0o700)).expect("chmod");
        std::os::unix::fs::chown(d.join("private"), Some(1001), Some(1002)).expect("chown");
        write(&d.join("owned"), "o");
        std::os::unix::fs::chown(d.join("owned"), Some(1234), Some(5678)).expect("chown");
        fs::set_permissions(d.join("owned"), fs::Permissions::from_mode(0o640)).expect("chmod");
        write(&d.join("setuid"), "s");
        fs::set_permissions(d.join("setuid"), fs::Permissions::from_mode(0o4755)).expect("chmod");
        fs::create_dir(d.join("sticky")).expect("mkdir");
        fs::set_permissions(d.join("sticky"), fs::Permissions::from_mode(0o1777)).expect("chmod");
    });
    env.layer("k2", Some("l1"), "l2", |d| {
        // Ownership changed in an upper layer, on a file of the lower one.
        std::os::unix::fs::chown(d.join("owned"), Some(42), Some(43)).expect("chown");
    });
    env.check_view("l1", |d| {
        let m = fs::metadata(d.join("owned")).expect("stat");
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1234, 5678, 0o640));
    });
    env.check_view("l2", |d| {
        let m = fs::metadata(d.join("private")).expect("stat");
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1001, 1002, 0o700));
        let m = fs::metadata(d.join("owned")).expect("stat");
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (42, 43, 0o640));
        let m = fs::metadata(d.join("setuid")).expect("stat");
        assert_eq!(m.mode() & 0o7777, 0o4755);
        let m = fs::metadata(d.join("sticky")).expect("stat");
        assert_eq!(m.mode() & 0o7777, 0o1777);
    });
}

fn special_files_survive(name: &'static str) {
    let env = Env::new(name);
    let mtime = filetime::FileTime::from_unix_time(1_000_000_000, 0);
    env.layer("k1", None, "l1", |d| {
        write(&d.join("file"), "data");
        fs::hard_link(d.join("file"), d.join("hardlink")).expect("link");
        std::os::unix::fs::symlink("file", d.join("symlink")).expect("symlink");
        nix::unistd::mkfifo(
            &d.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .expect("mkfifo");
        nix::sys::stat::mknod(
            &d.join("null"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .expect("mknod");
        xattr::set(d.join("file"), "user.note", b"hi").expect("user xattr");
        xattr::set(d.join("file"), "trusted.note", b"secret").expect("trusted xattr");
        filetime::set_file_mtime(d.join("file"), mtime).expect("mtime");
        fs::create_dir(d.join("dir")).expect("mkdir");
        filetime::set_file_mtime(d.join("dir"), mtime).expect("mtime");
    });
    // A child prepared on it (native: a copy) sees the same tree.
    let mounts = env
        .sn
        .prepare(NS, "k2", Some("l1"), labels(&[]))
        .expect("prepare");
    in_mount(&mounts, |d| {
        let f = fs::symlink_metadata(d.join("file")).expect("stat");
        let h = fs::symlink_metadata(d.join("hardlink")).expect("stat");
        assert_eq!(f.ino(), h.ino(), "hard link kept");
        assert_eq!(f.nlink(), 2);
        assert_eq!(f.mtime(), 1_000_000_000);
        assert_eq!(
            fs::read_link(d.join("symlink")).expect("readlink"),
            Path::new("file")
        );
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(
            &fs::symlink_metadata(d.join("fifo"))
                .expect("stat")
                .file_type()
        ));
        let n = fs::symlink_metadata(d.join("null")).expect("stat");
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(
            &n.file_type()
        ));
        assert_eq!(n.rdev(), nix::sys::stat::makedev(1, 3));
        assert_eq!(
            xattr::get(d.join("file"), "user.note").expect("get"),
            Some(b"hi".to_vec())
        );
        assert_eq!(
            xattr::get(d.join("file"), "trusted.note").expect("get"),
            Some(b"secret".to_vec())
        );
        assert_eq!(
            fs::metadata(d.join("dir")).expect("stat").mtime(),
            1_000_000_000
        );
    });
}

fn remove_intermediate_snapshot(name: &'static str) {
    let env = Env::new(name);
    env.layer("kb", None, "base", |d| write(&d.join("b"), "b"));
    env.layer("ki", Some("base"), "intermediate", |d| {
        write(&d.join("i"), "i")
    });
    env.sn
        .prepare(NS, "top", Some("intermediate"), labels(&[]))
        .expect("prepare top");
    err_is!(env.sn.remove(NS, "intermediate"), FailedPrecondition);
    err_is!(env.sn.remove(NS, "base"), FailedPrecondition);
    env.sn.remove(NS, "top").expect("remove top");
    env.sn
        .remove(NS, "intermediate")
        .expect("remove intermediate");
    env.sn.remove(NS, "base").expect("remove base");
    assert!(env.entries("snapshots").is_empty());
}

fn deleted_file_in_child(name: &'static str) {
    let env = Env::new(name);
    env.layer("k1", None, "l1", |d| {
        write(&d.join("a"), "a");
        write(&d.join("b"), "b");
        write(&d.join("dir/c"), "c");
    });
    env.layer("k2", Some("l1"), "l2", |d| {
        fs::remove_file(d.join("a")).expect("rm a");
        fs::remove_file(d.join("dir/c")).expect("rm c");
    });
    env.check_view("l2", |d| {
        assert!(!exists(&d.join("a")));
        assert!(!exists(&d.join("dir/c")));
        assert!(exists(&d.join("dir")));
        assert_eq!(read(&d.join("b")), "b");
    });
}

fn move_file_from_lower_layer(name: &'static str) {
    let env = Env::new(name);
    env.layer("k1", None, "l1", |d| {
        write(&d.join("dir1/f1"), "Hello");
        write(&d.join("dir2/f2"), "...");
    });
    env.layer("k2", Some("l1"), "l2", |d| {
        fs::create_dir(d.join("dir3")).expect("mkdir");
        fs::rename(d.join("dir1/f1"), d.join("dir3/f1")).expect("move f1");
        fs::remove_dir_all(d.join("dir1")).expect("rm dir1");
        fs::hard_link(d.join("dir2/f2"), d.join("dir3/f2")).expect("link f2");
        fs::remove_file(d.join("dir2/f2")).expect("rm f2");
    });
    env.check_view("l2", |d| {
        assert!(!exists(&d.join("dir1")));
        assert!(!exists(&d.join("dir2/f2")));
        assert_eq!(read(&d.join("dir3/f1")), "Hello");
        assert_eq!(read(&d.join("dir3/f2")), "...");
    });
}

fn rename(name: &'static str) {
    let env = Env::new(name);
    env.layer("k1", None, "l1", |d| {
        write(&d.join("dir/old"), "content");
        write(&d.join("top"), "t");
    });
    env.layer("k2", Some("l1"), "l2", |d| {
        fs::rename(d.join("dir/old"), d.join("dir/new")).expect("rename file");
        fs::rename(d.join("top"), d.join("top2")).expect("rename file");
        // A directory made in this layer renames anywhere.
        write(&d.join("fresh/x"), "x");
        fs::rename(d.join("fresh"), d.join("renamed")).expect("rename dir");
    });
    env.check_view("l2", |d| {
        assert!(!exists(&d.join("dir/old")));
        assert!(!exists(&d.join("top")));
        assert!(!exists(&d.join("fresh")));
        assert_eq!(read(&d.join("dir/new")), "content");
        assert_eq!(read(&d.join("top2")), "t");
        assert_eq!(read(&d.join("renamed/x")), "x");
    });
}

fn view_readonly(name: &'static str) {
    let env = Env::new(name);
    let erofs = |d: &Path| {
        let err = fs::write(d.join("new"), "x").expect_err("write into a view");
        assert_eq!(err.raw_os_error(), Some(nix::libc::EROFS), "{err}");
    };
    // No parent, one parent (overlay: a bind) and two (overlay: a lowerdir-only overlay).
    let mounts = env.sn.view(NS, "v0", None, labels(&[])).expect("view");
    in_mount(&mounts, |d| erofs(d));
    env.layer("k1", None, "l1", |d| write(&d.join("f"), "1"));
    let mounts = env
        .sn
        .view(NS, "v1", Some("l1"), labels(&[]))
        .expect("view");
    in_mount(&mounts, |d| {
        erofs(d);
        let err = fs::write(d.join("f"), "changed").expect_err("overwrite in a view");
        assert_eq!(err.raw_os_error(), Some(nix::libc::EROFS), "{err}");
    });
    env.layer("k2", Some("l1"), "l2", |d| write(&d.join("g"), "2"));
    let mounts = env
        .sn
        .view(NS, "v2", Some("l2"), labels(&[]))
        .expect("view");
    in_mount(&mounts, |d| {
        erofs(d);
        assert_eq!(read(&d.join("f")), "1");
        assert_eq!(read(&d.join("g")), "2");
    });
    assert!(mounts[0].options.iter().any(|o| o == "ro") || mounts[0].kind == "overlay");
    // A view can't be committed.
    err_is!(
        env.sn.commit(NS, "c", "v2", labels(&[])),
        FailedPrecondition
    );
}

fn usage(name: &'static str) {
    let env = Env::new(name);
    let mounts = env.sn.prepare(NS, "k", None, labels(&[])).expect("prepare");
    let empty = env.sn.usage(NS, "k").expect("usage");
    assert_eq!(empty.inodes, 1, "an empty layer is its root dir");
    let data = vec![7u8; 1 << 20];
    in_mount(&mounts, |d| {
        fs::write(d.join("big"), &data).expect("write");
        for i in 0..10 {
            write(&d.join(format!("small/{i}")), "s");
        }
        fs::hard_link(d.join("big"), d.join("big-link")).expect("link");
    });
    let used = env.sn.usage(NS, "k").expect("usage");
    assert!(used.size >= (1 << 20), "{used:?}");
    assert!(
        used.size < 2 * (1 << 20),
        "hard link counted once: {used:?}"
    );
    assert_eq!(used.inodes, 1 + 1 + 1 + 10, "{used:?}");
    env.sn.commit(NS, "c", "k", labels(&[])).expect("commit");
    assert_eq!(env.sn.usage(NS, "c").expect("usage committed"), used);
    err_is!(env.sn.usage(NS, "k"), NotFound);
}

fn list(name: &'static str) {
    let env = Env::new(name);
    env.layer("pk", None, "base", |_| {});
    env.sn
        .prepare(NS, "b-active", Some("base"), labels(&[]))
        .expect("prepare");
    env.sn
        .view(NS, "a-view", Some("base"), labels(&[]))
        .expect("view");
    env.sn
        .prepare("other", "other-key", None, labels(&[]))
        .expect("prepare other");
    let infos = env.sn.list(NS).expect("list");
    let got: Vec<(String, Kind)> = infos.iter().map(|i| (i.name.clone(), i.kind)).collect();
    assert_eq!(
        got,
        [
            ("a-view".to_string(), Kind::View),
            ("b-active".to_string(), Kind::Active),
            ("base".to_string(), Kind::Committed)
        ]
    );
    let other: Vec<String> = env
        .sn
        .list("other")
        .expect("list")
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(other, ["other-key"]);
    assert!(env.sn.list("empty").expect("list").is_empty());
}

fn namespaces_independent(name: &'static str) {
    let env = Env::new(name);
    let m1 = env
        .sn
        .prepare("ns1", "k", None, labels(&[]))
        .expect("prepare ns1");
    let m2 = env
        .sn
        .prepare("ns2", "k", None, labels(&[]))
        .expect("prepare ns2");
    assert_ne!(m1, m2, "two snapshots, two directories");
    in_mount(&m1, |d| write(&d.join("f"), "ns1"));
    in_mount(&m2, |d| assert!(!exists(&d.join("f"))));
    env.sn.commit("ns1", "c", "k", labels(&[])).expect("commit");
    err_is!(env.sn.prepare("ns2", "x", Some("c"), labels(&[])), NotFound);
    assert_eq!(env.sn.stat("ns2", "k").expect("stat").kind, Kind::Active);
    env.sn.remove("ns2", "k").expect("remove ns2");
    assert_eq!(env.sn.stat("ns1", "c").expect("stat").kind, Kind::Committed);
    err_is!(env.sn.stat("ns1", "k"), NotFound);
}

fn layers_128(name: &'static str) {
    let env = Env::new(name);
    let mut parent: Option<String> = None;
    for i in 0..128 {
        let key = format!("prepare-layer-{i}");
        let committed = format!("layer-{i}");
        env.layer(&key, parent.as_deref(), &committed, |d| {
            write(&d.join("overwriteme"), &format!("{i} WAS HERE"));
            write(&d.join(format!("ADDHERE/file-{i}")), "same");
            if i > 0 {
                fs::remove_dir_all(d.join("ONLYME")).expect("rm ONLYME");
            }
            write(&d.join(format!("ONLYME/file-{i}")), "only me");
        });
        parent = Some(committed);
    }
    let mounts = env
        .sn
        .prepare(NS, "top", parent.as_deref(), labels(&[]))
        .expect("prepare");
    if name == "overlayfs" {
        let len: usize = mounts[0].options.iter().map(|o| o.len() + 1).sum();
        assert!(
            len > 4096,
            "the overlay options ({len} bytes) should exceed one page"
        );
    }
    in_mount(&mounts, |d| {
        assert_eq!(read(&d.join("overwriteme")), "127 WAS HERE");
        for i in 0..128 {
            assert!(exists(&d.join(format!("ADDHERE/file-{i}"))), "file-{i}");
        }
        let only: Vec<_> = fs::read_dir(d.join("ONLYME")).expect("read").collect();
        assert_eq!(only.len(), 1);
        assert!(exists(&d.join("ONLYME/file-127")));
        write(&d.join("top-file"), "writable");
    });
}

fn cleanup(name: &'static str) {
    let mut env = Env::new(name);
    env.layer("k", None, "live", |d| write(&d.join("f"), "live"));
    env.sn
        .prepare(NS, "active", Some("live"), labels(&[]))
        .expect("prepare");
    let mut live_dirs = env.entries("snapshots");
    assert_eq!(live_dirs.len(), 2);
    let snapshots = env.root().join("snapshots");
    let tmp = env.root().join("tmp");
    write(&snapshots.join("9999/fs/junk"), "orphan");
    write(&tmp.join("rm-77/fs/junk"), "half-deleted");
    write(&tmp.join("new-inflight/fs/x"), "a prepare in flight");
    // A record deleted behind the snapshotter's back (as a garbage collector does).
    env.sn
        .prepare(NS, "gc-me", None, labels(&[]))
        .expect("prepare");
    {
        let txn = env.db.begin_write().expect("txn");
        txn.open_table(SNAPSHOTS)
            .expect("table")
            .remove((NS, name, "gc-me"))
            .expect("delete");
        txn.commit().expect("commit");
    }
    assert_eq!(env.entries("snapshots").len(), 4);
    env.sn.cleanup().expect("cleanup");
    live_dirs.sort();
    assert_eq!(env.entries("snapshots"), live_dirs);
    assert_eq!(env.entries("tmp"), ["new-inflight"]);
    let mounts = env.sn.mounts(NS, "active").expect("mounts");
    in_mount(&mounts, |d| assert_eq!(read(&d.join("f")), "live"));
    // Open clears the staging leftovers of a crash.
    env.reopen();
    assert!(env.entries("tmp").is_empty());
    assert_eq!(env.entries("snapshots"), live_dirs);
    assert_eq!(env.sn.stat(NS, "live").expect("stat").kind, Kind::Committed);
}

fn commit_rebased(name: &'static str) {
    let env = Env::new(name);
    env.layer("kb", None, "base", |d| write(&d.join("base"), "b"));
    let mounts = env
        .sn
        .prepare(NS, "free", None, labels(&[]))
        .expect("prepare");
    in_mount(&mounts, |d| write(&d.join("top"), "t"));
    if !env.sn.can_rebase() {
        assert_eq!(name, "native");
        err_is!(
            env.sn
                .commit_rebased(NS, "top", "free", "base", labels(&[])),
            NotImplemented
        );
        return;
    }
    err_is!(
        env.sn
            .commit_rebased(NS, "top", "free", "missing", labels(&[])),
        NotFound
    );
    env.sn
        .prepare(NS, "with-parent", Some("base"), labels(&[]))
        .expect("prepare");
    err_is!(
        env.sn
            .commit_rebased(NS, "x", "with-parent", "base", labels(&[])),
        InvalidArgument
    );
    env.sn
        .commit_rebased(NS, "top", "free", "base", labels(&[("l", "v")]))
        .expect("commit rebased");
    let info = env.sn.stat(NS, "top").expect("stat");
    assert_eq!(info.kind, Kind::Committed);
    assert_eq!(info.parent.as_deref(), Some("base"));
    assert_eq!(info.labels, labels(&[("l", "v")]));
    err_is!(env.sn.stat(NS, "free"), NotFound);
    env.check_view("top", |d| {
        assert_eq!(read(&d.join("base")), "b");
        assert_eq!(read(&d.join("top")), "t");
    });
    err_is!(env.sn.remove(NS, "base"), FailedPrecondition);
}

fn duplicate_prepare(name: &'static str) {
    let env = Env::new(name);
    env.sn.prepare(NS, "k", None, labels(&[])).expect("prepare");
    let msg = err_is!(env.sn.prepare(NS, "k", None, labels(&[])), AlreadyExists);
    assert!(msg.contains("\"k\""), "{msg}");
    err_is!(env.sn.view(NS, "k", None, labels(&[])), AlreadyExists);
    env.sn.commit(NS, "c", "k", labels(&[])).expect("commit");
    err_is!(env.sn.prepare(NS, "c", None, labels(&[])), AlreadyExists);
    err_is!(env.sn.prepare(NS, "", None, labels(&[])), InvalidArgument);
    err_is!(env.sn.view(NS, "", None, labels(&[])), InvalidArgument);
}

fn commit_onto_existing_name(name: &'static str) {
    let env = Env::new(name);
    env.layer("k1", None, "c", |_| {});
    env.sn
        .prepare(NS, "k2", None, labels(&[("keep", "me")]))
        .expect("prepare");
    err_is!(env.sn.commit(NS, "c", "k2", labels(&[])), AlreadyExists);
    let info = env.sn.stat(NS, "k2").expect("the active snapshot survives");
    assert_eq!(info.kind, Kind::Active);
    // Committing under its own key collides with itself.
    err_is!(env.sn.commit(NS, "k2", "k2", labels(&[])), AlreadyExists);
    // Labels are kept when the commit gives none.
    env.sn.commit(NS, "c2", "k2", labels(&[])).expect("commit");
    assert_eq!(
        env.sn.stat(NS, "c2").expect("stat").labels,
        labels(&[("keep", "me")])
    );
}

fn error_classes(name: &'static str) {
    let env = Env::new(name);
    env.layer("k", None, "committed", |_| {});
    env.sn
        .view(NS, "view", Some("committed"), labels(&[]))
        .expect("view");
    err_is!(
        env.sn.commit(NS, "x", "committed", labels(&[])),
        FailedPrecondition
    );
    err_is!(
        env.sn.commit(NS, "x", "view", labels(&[])),
        FailedPrecondition
    );
    err_is!(env.sn.commit(NS, "x", "missing", labels(&[])), NotFound);
    err_is!(env.sn.commit(NS, "", "view", labels(&[])), InvalidArgument);
    err_is!(env.sn.mounts(NS, "committed"), FailedPrecondition);
    err_is!(env.sn.mounts(NS, "missing"), NotFound);
    err_is!(env.sn.stat(NS, "missing"), NotFound);
    err_is!(env.sn.stat(NS, ""), InvalidArgument);
    err_is!(env.sn.usage(NS, "missing"), NotFound);
    // Another namespace sees none of it.
    err_is!(env.sn.stat("elsewhere", "committed"), NotFound);
    let big = "v".repeat(5000);
    err_is!(
        env.sn.prepare(NS, "big", None, labels(&[("k", &big)])),
        InvalidArgument
    );
    // The messages name the object.
    let e = env.sn.stat(NS, "missing").expect_err("missing");
    assert!(
        e.to_string().contains("missing") && e.to_string().ends_with(": not found"),
        "{e}"
    );
    assert!(matches!(
        berth_snapshotter::open("zfs", env.db.clone(), &env.dir.path().join("zfs")),
        Err(SnapshotterError::InvalidArgument(_))
    ));
    assert_eq!(env.sn.name(), name);
}

fn mount_helpers(name: &'static str) {
    let env = Env::new(name);
    let mounts = env.sn.prepare(NS, "k", None, labels(&[])).expect("prepare");
    let (dir, overlay_whiteouts) = mount::apply_target(&mounts).expect("apply target");
    assert!(!overlay_whiteouts, "a parentless snapshot is a bind mount");
    write(&dir.join("applied"), "directly");
    env.sn.commit(NS, "c", "k", labels(&[])).expect("commit");
    let mounts = env
        .sn
        .prepare(NS, "k2", Some("c"), labels(&[]))
        .expect("prepare");
    match mount::apply_target(&mounts) {
        Some((upper, true)) => {
            assert_eq!(name, "overlayfs");
            assert!(
                !exists(&upper.join("applied")),
                "the upper dir holds only this layer"
            );
        }
        Some((dir, false)) => {
            assert_eq!(name, "native");
            assert_eq!(read(&dir.join("applied")), "directly");
        }
        None => panic!("an active snapshot has an apply target"),
    }
    let view = env.sn.view(NS, "v", Some("c"), labels(&[])).expect("view");
    assert_eq!(mount::apply_target(&view), None);
    // with_temp_mount unmounts and removes its directory even when the closure fails.
    let mut seen = PathBuf::new();
    let r: Result<(), SnapshotterError> = with_temp_mount(&view, |d| {
        seen = d.to_path_buf();
        assert_eq!(read(&d.join("applied")), "directly");
        Err(SnapshotterError::NotFound("on purpose".into()))
    });
    assert!(matches!(r, Err(SnapshotterError::NotFound(_))));
    assert!(!seen.as_os_str().is_empty() && !exists(&seen));
    // Unmounting something not mounted is fine; a missing path is not.
    let plain = env.dir.path().join("plain");
    fs::create_dir(&plain).expect("mkdir");
    unmount(&plain).expect("unmount a plain dir");
    assert!(unmount(&env.dir.path().join("absent")).is_err());
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod overlayfs {
            $( #[test] fn $case() { super::$case("overlayfs") } )*
        }
        mod native {
            $( #[test] fn $case() { super::$case("native") } )*
        }
    };
}

suite!(
    basic,
    stat_active,
    stat_committed,
    transitivity,
    prepare_view_missing_parent,
    failed_prepare_leaves_nothing,
    update,
    remove,
    layer_file_update,
    remove_directory_in_lower_layer,
    chown_and_permissions,
    special_files_survive,
    remove_intermediate_snapshot,
    deleted_file_in_child,
    move_file_from_lower_layer,
    rename,
    view_readonly,
    usage,
    list,
    namespaces_independent,
    layers_128,
    cleanup,
    commit_rebased,
    duplicate_prepare,
    commit_onto_existing_name,
    error_classes,
    mount_helpers,
);
