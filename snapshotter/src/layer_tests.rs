//! Apply and diff tests over real layers built with the `tar` crate, run as root (mknod,
//! chown and `trusted.*` xattrs), including real overlayfs mounts.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::{ApplyOptions, Compression, SnapshotterError, apply_layer, diff};

const MTIME: u64 = 1_600_000_000;

/// Builds a layer tar in memory.
struct Layer {
    b: tar::Builder<Vec<u8>>,
}

fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(MTIME);
    h.set_size(0);
    h
}

impl Layer {
    fn new() -> Self {
        Layer {
            b: tar::Builder::new(Vec::new()),
        }
    }
    fn dir(mut self, path: &str, mode: u32) -> Self {
        let mut h = header(tar::EntryType::Directory, mode, 0, 0);
        self.b
            .append_data(&mut h, path, std::io::empty())
            .expect("dir");
        self
    }
    fn file_owned(mut self, path: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> Self {
        let mut h = header(tar::EntryType::Regular, mode, uid, gid);
        h.set_size(data.len() as u64);
        self.b.append_data(&mut h, path, data).expect("file");
        self
    }
    fn file(self, path: &str, data: &[u8]) -> Self {
        self.file_owned(path, data, 0o644, 0, 0)
    }
    fn xattr_file(mut self, path: &str, data: &[u8], attrs: &[(&str, &[u8])]) -> Self {
        let recs: Vec<(String, &[u8])> = attrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
            .collect();
        self.b
            .append_pax_extensions(recs.iter().map(|(k, v)| (k.as_str(), *v)))
            .expect("pax");
        self.file(path, data)
    }
    fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0, 0);
        self.b.append_link(&mut h, path, target).expect("symlink");
        self
    }
    fn hardlink(mut self, path: &str, target: &str, mode: u32, uid: u64) -> Self {
        let mut h = header(tar::EntryType::Link, mode, uid, uid);
        self.b.append_link(&mut h, path, target).expect("hardlink");
        self
    }
    fn device(mut self, path: &str, kind: tar::EntryType, major: u32, minor: u32) -> Self {
        let mut h = header(kind, 0o660, 0, 6);
        h.set_device_major(major).expect("major");
        h.set_device_minor(minor).expect("minor");
        self.b
            .append_data(&mut h, path, std::io::empty())
            .expect("device");
        self
    }
    fn whiteout(self, path: &str) -> Self {
        self.file(path, b"")
    }
    /// An entry whose name is written as is (the tar crate refuses `..` otherwise).
    fn raw(mut self, name: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]) -> Self {
        let mut h = header(kind, 0o644, 0, 0);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.b.append(&h, data).expect("raw");
        self
    }
    fn bytes(self) -> Vec<u8> {
        self.b.into_inner().expect("finish")
    }
}

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("berth-snap-test")
        .tempdir_in("/tmp")
        .expect("tempdir")
}

fn overlay() -> ApplyOptions {
    ApplyOptions {
        overlay_whiteouts: true,
        ..Default::default()
    }
}

fn native() -> ApplyOptions {
    ApplyOptions {
        overlay_whiteouts: false,
        ..Default::default()
    }
}

fn apply(bytes: &[u8], target: &Path, opts: &ApplyOptions) -> crate::Result<crate::ApplyStats> {
    apply_layer(bytes, Compression::Auto, target, opts)
}

fn base_layer() -> Vec<u8> {
    Layer::new()
        .dir("bin/", 0o755)
        .file_owned("bin/su", b"#!setuid\n", 0o4755, 0, 0)
        .file_owned("bin/owned", b"mine\n", 0o640, 1000, 1001)
        .dir("shared/", 0o2775)
        .dir("tmp/", 0o1777)
        .file("etc/hostname", b"berth\n") // parent created implicitly
        .symlink("etc/link", "hostname")
        .symlink("lib", "/usr/lib")
        .dir("usr/", 0o755)
        .dir("usr/lib/", 0o755)
        .file("lib/through-link", b"via /lib\n") // lands in usr/lib
        .file("data/a", b"shared inode\n")
        .hardlink("data/b", "data/a", 0o600, 7)
        .device("dev/null", tar::EntryType::Char, 1, 3)
        .device("dev/loop0", tar::EntryType::Block, 7, 0)
        .device("dev/fifo", tar::EntryType::Fifo, 0, 0)
        .xattr_file(
            "caps",
            b"x",
            &[("user.note", b"hello"), ("trusted.berth", b"t")],
        )
        .dir("old/", 0o755)
        .file("old/one", b"1")
        .dir("old/sub/", 0o755)
        .file("old/sub/two", b"2")
        .file("gone", b"to be deleted")
        .bytes()
}

#[test]
fn applies_every_entry_kind() {
    let t = tmp();
    let root = t.path();
    let bytes = base_layer();
    let stats = apply(&bytes, root, &overlay()).expect("apply");
    assert_eq!(stats.diff_id, sha(&bytes));
    assert_eq!(stats.size, bytes.len() as u64);

    let m = fs::metadata(root.join("bin/su")).expect("su");
    assert_eq!(m.mode() & 0o7777, 0o4755, "setuid kept after chown");
    let m = fs::metadata(root.join("bin/owned")).expect("owned");
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1000, 1001, 0o640));
    assert_eq!(
        fs::metadata(root.join("shared")).expect("shared").mode() & 0o7777,
        0o2775
    );
    assert_eq!(
        fs::metadata(root.join("tmp")).expect("tmp").mode() & 0o7777,
        0o1777
    );
    assert_eq!(
        fs::read(root.join("etc/hostname")).expect("hostname"),
        b"berth\n"
    );
    assert_eq!(
        fs::metadata(root.join("etc")).expect("etc").mode() & 0o7777,
        0o755
    );
    assert_eq!(
        fs::read_link(root.join("etc/link")).expect("link"),
        Path::new("hostname")
    );
    assert_eq!(
        fs::read(root.join("usr/lib/through-link")).expect("via"),
        b"via /lib\n"
    );
    let a = fs::metadata(root.join("data/a")).expect("a");
    let b = fs::metadata(root.join("data/b")).expect("b");
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
    assert_eq!(
        (a.mode() & 0o7777, a.uid(), a.gid()),
        (0o600, 7, 7),
        "link header applies to the inode"
    );
    let n = fs::symlink_metadata(root.join("dev/null")).expect("null");
    assert!(n.file_type().is_char_device());
    assert_eq!(
        (
            nix::sys::stat::major(n.rdev()),
            nix::sys::stat::minor(n.rdev())
        ),
        (1, 3)
    );
    assert_eq!((n.mode() & 0o7777, n.gid()), (0o660, 6));
    let l = fs::symlink_metadata(root.join("dev/loop0")).expect("loop0");
    assert!(l.file_type().is_block_device());
    assert_eq!(nix::sys::stat::major(l.rdev()), 7);
    assert!(
        fs::symlink_metadata(root.join("dev/fifo"))
            .expect("fifo")
            .file_type()
            .is_fifo()
    );
    assert_eq!(
        xattr::get(root.join("caps"), "user.note").expect("xattr"),
        Some(b"hello".to_vec())
    );
    assert_eq!(
        xattr::get(root.join("caps"), "trusted.berth").expect("xattr"),
        Some(b"t".to_vec())
    );
    // Times: files and directories (directories after their contents were written).
    for p in ["bin/su", "bin", "old", "old/sub", "usr/lib", "dev/null"] {
        assert_eq!(
            fs::symlink_metadata(root.join(p)).expect(p).mtime(),
            MTIME as i64,
            "{p} mtime"
        );
    }
    assert_eq!(
        fs::symlink_metadata(root.join("etc/link"))
            .expect("link")
            .mtime(),
        MTIME as i64
    );
}

#[test]
fn compressed_streams_give_the_uncompressed_digest() {
    let bytes = base_layer();
    let gz = gzip(&bytes);
    let zst = zstd::encode_all(&bytes[..], 3).expect("zstd");
    for (data, c) in [
        (&gz, Compression::Auto),
        (&gz, Compression::Gzip),
        (&zst, Compression::Auto),
        (&zst, Compression::Zstd),
        (&bytes, Compression::Uncompressed),
    ] {
        let t = tmp();
        let stats = apply_layer(&data[..], c, t.path(), &overlay()).expect("apply");
        assert_eq!(stats.diff_id, sha(&bytes), "{c:?}");
        assert_eq!(stats.size, bytes.len() as u64);
        assert_eq!(fs::read(t.path().join("old/sub/two")).expect("two"), b"2");
    }
    assert_eq!(Compression::detect(&gz), Compression::Gzip);
    assert_eq!(Compression::detect(&zst), Compression::Zstd);
    assert_eq!(Compression::detect(&bytes), Compression::Uncompressed);
}

#[test]
fn corrupt_gzip_is_a_decompress_error() {
    let mut gz = gzip(&base_layer());
    let mid = gz.len() / 2;
    for b in &mut gz[mid..mid + 16] {
        *b ^= 0x5a;
    }
    let t = tmp();
    let err = apply(&gz, t.path(), &overlay()).expect_err("corrupt");
    assert!(
        matches!(
            err,
            SnapshotterError::Decompress {
                compression: "gzip",
                ..
            }
        ),
        "{err}"
    );

    let whole = gzip(&base_layer());
    let t = tmp();
    let err = apply(&whole[..whole.len() - 30], t.path(), &overlay()).expect_err("truncated");
    assert!(
        matches!(
            err,
            SnapshotterError::Decompress {
                compression: "gzip",
                ..
            }
        ),
        "{err}"
    );
}

fn second_layer() -> Vec<u8> {
    Layer::new()
        .whiteout(".wh.gone")
        .dir("old/", 0o755)
        .file("old/-early", b"before the marker") // sorts before ".wh..wh..opq"
        .whiteout("old/.wh..wh..opq")
        .file("old/new", b"new")
        .whiteout("bin/.wh.owned")
        .bytes()
}

#[test]
fn whiteouts_in_overlay_mode() {
    let t = tmp();
    let root = t.path();
    apply(&second_layer(), root, &overlay()).expect("apply");
    let g = fs::symlink_metadata(root.join("gone")).expect("gone");
    assert!(g.file_type().is_char_device() && g.rdev() == 0);
    let o = fs::symlink_metadata(root.join("bin/owned")).expect("owned");
    assert!(o.file_type().is_char_device() && o.rdev() == 0);
    assert_eq!(
        xattr::get(root.join("old"), "trusted.overlay.opaque").expect("xattr"),
        Some(b"y".to_vec())
    );
    assert!(root.join("old/new").exists() && root.join("old/-early").exists());
    assert!(!root.join(".wh.gone").exists() && !root.join("old/.wh..wh..opq").exists());
}

#[test]
fn whiteouts_in_native_mode() {
    let t = tmp();
    let root = t.path();
    apply(&base_layer(), root, &native()).expect("base");
    apply(&second_layer(), root, &native()).expect("second");
    assert!(fs::symlink_metadata(root.join("gone")).is_err());
    assert!(fs::symlink_metadata(root.join("bin/owned")).is_err());
    assert!(root.join("bin/su").exists());
    let mut names: Vec<_> = fs::read_dir(root.join("old"))
        .expect("old")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["-early", "new"],
        "opaque removes lower contents only"
    );
    assert!(
        xattr::get(root.join("old"), "trusted.overlay.opaque")
            .expect("xattr")
            .is_none()
    );
}

#[test]
fn refuses_escapes() {
    let outer = tmp();
    let root = outer.path().join("root");
    let outside = outer.path().join("outside");
    fs::create_dir(&root).expect("root");
    fs::create_dir(&outside).expect("outside");

    let err = apply(
        &Layer::new()
            .raw("../escape", tar::EntryType::Regular, None, b"x")
            .bytes(),
        &root,
        &native(),
    )
    .expect_err("dotdot");
    assert!(
        matches!(&err, SnapshotterError::PathEscape { entry, .. } if entry == "../escape"),
        "{err}"
    );
    assert!(!outer.path().join("escape").exists());

    // A relative symlink climbing out, then an entry through it.
    let layer = Layer::new()
        .symlink("up", "../../../../../..")
        .file("up/evil", b"x")
        .bytes();
    let err = apply(&layer, &root, &native()).expect_err("symlink escape");
    assert!(
        matches!(&err, SnapshotterError::PathEscape { entry, .. } if entry == "up/evil"),
        "{err}"
    );

    // A hard link to a path outside.
    let layer = Layer::new()
        .raw("hl", tar::EntryType::Link, Some("../outside/secret"), b"")
        .bytes();
    fs::write(outside.join("secret"), b"s").expect("secret");
    let err = apply(&layer, &root, &native()).expect_err("link escape");
    assert!(
        matches!(&err, SnapshotterError::PathEscape { entry, .. } if entry == "hl"),
        "{err}"
    );

    // An absolute symlink is resolved inside the target, never on the host.
    let abs = outside.to_str().expect("utf8");
    let layer = Layer::new()
        .symlink("abs", abs)
        .file("abs/file", b"inside")
        .bytes();
    apply(&layer, &root, &native()).expect("absolute symlink stays inside");
    assert!(!outside.join("file").exists());
    let landed = root.join(outside.strip_prefix("/").expect("absolute"));
    assert_eq!(fs::read(landed.join("file")).expect("landed"), b"inside");

    // An absolute entry name is relative to the target.
    apply(
        &Layer::new()
            .raw("/abs-name", tar::EntryType::Regular, None, b"a")
            .bytes(),
        &root,
        &native(),
    )
    .expect("absolute name");
    assert!(root.join("abs-name").exists());
    assert_eq!(
        fs::read_dir(outer.path()).expect("outer").count(),
        2,
        "nothing written beside root"
    );
    assert_eq!(fs::read_dir(&outside).expect("outside").count(), 1);
}

/// Unmounts on drop, whatever happened.
struct MountGuard(PathBuf);

impl MountGuard {
    fn overlay(lowers: &[&Path], upper: &Path, work: &Path, target: &Path) -> MountGuard {
        let lower: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            upper.display(),
            work.display()
        );
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(target)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        MountGuard(target.to_path_buf())
    }
    fn unmount(self) {
        let out = Command::new("umount")
            .arg(&self.0)
            .output()
            .expect("run umount");
        assert!(
            out.status.success(),
            "umount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::mem::forget(self);
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A comparable description of a tree (root excluded): type, mode, owner, size, content,
/// link target, device, xattrs (overlayfs' own left out), mtime seconds, link count.
/// Times after this (2023-11-14) were set by the clock during a test, not by a layer.
const RECENT: i64 = 1_700_000_000;

fn describe(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let mut names: Vec<_> = fs::read_dir(root.join(rel))
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        for name in names {
            let r = rel.join(&name);
            let p = root.join(&r);
            let m = fs::symlink_metadata(&p).expect("lstat");
            let ft = m.file_type();
            let detail = if ft.is_file() {
                let mut data = Vec::new();
                fs::File::open(&p)
                    .expect("open")
                    .read_to_end(&mut data)
                    .expect("read");
                format!("file {} nlink={}", sha(&data), m.nlink())
            } else if ft.is_symlink() {
                format!("symlink {}", fs::read_link(&p).expect("readlink").display())
            } else if ft.is_dir() {
                "dir".to_owned()
            } else {
                format!("special {:?} rdev={}", ft, m.rdev())
            };
            let mut attrs: Vec<String> = xattr::list(&p)
                .expect("xattrs")
                .filter_map(|n| n.to_str().map(str::to_owned))
                .filter(|n| !n.starts_with("trusted.overlay."))
                .map(|n| format!("{n}={:?}", xattr::get(&p, &n).expect("xattr")))
                .collect();
            attrs.sort();
            let mode = if ft.is_symlink() {
                0
            } else {
                m.mode() & 0o7777
            };
            // A directory the kernel stamped while the test ran (a parent created on the fly,
            // or one whose entries the test changed) has a wall-clock mtime that two trees
            // built a moment apart may see in different seconds; the layers' own times are
            // fixed (2020). Only the fixed times are compared exactly.
            let mtime = if ft.is_dir() && m.mtime() > RECENT {
                "recent".to_owned()
            } else {
                m.mtime().to_string()
            };
            out.insert(
                r.clone(),
                format!(
                    "{detail} mode={mode:o} {}:{} mtime={mtime} {attrs:?}",
                    m.uid(),
                    m.gid()
                ),
            );
            if ft.is_dir() {
                walk(root, &r, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out);
    out
}

fn cp_a(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(st.success());
}

#[test]
fn overlay_mount_of_applied_layers_and_overlay_diff() {
    let t = tmp();
    let d = |n: &str| {
        let p = t.path().join(n);
        fs::create_dir(&p).expect("mkdir");
        p
    };
    let (l1, l2, u, w, m) = (d("l1"), d("l2"), d("u"), d("w"), d("m"));
    apply(&base_layer(), &l1, &overlay()).expect("l1");
    apply(
        &Layer::new()
            .whiteout(".wh.gone")
            .dir("old/", 0o755)
            .whiteout("old/.wh..wh..opq")
            .file("old/new", b"new")
            .dir("links/", 0o755)
            .file("links/x", b"linked")
            .hardlink("links/y", "links/x", 0o644, 0)
            .bytes(),
        &l2,
        &overlay(),
    )
    .expect("l2");
    apply(
        &Layer::new()
            .file("etc/hostname", b"changed\n")
            .whiteout("bin/.wh.su")
            .bytes(),
        &u,
        &overlay(),
    )
    .expect("upper");

    let guard = MountGuard::overlay(&[&l2, &l1], &u, &w, &m);
    assert!(
        fs::symlink_metadata(m.join("gone")).is_err(),
        "whited-out file hidden"
    );
    assert!(
        fs::symlink_metadata(m.join("bin/su")).is_err(),
        "whiteout in the upper dir"
    );
    assert!(m.join("bin/owned").exists());
    let mut old: Vec<_> = fs::read_dir(m.join("old"))
        .expect("old")
        .map(|e| e.expect("e").file_name())
        .collect();
    old.sort();
    assert_eq!(old, ["new"], "opaque dir hides the lower contents");
    let x = fs::metadata(m.join("links/x")).expect("x");
    let y = fs::metadata(m.join("links/y")).expect("y");
    assert_eq!(
        (x.ino(), x.nlink()),
        (y.ino(), 2),
        "hard links share an inode"
    );
    assert_eq!(
        fs::read(m.join("etc/hostname")).expect("hostname"),
        b"changed\n"
    );
    assert_eq!(
        fs::read(m.join("usr/lib/through-link")).expect("via"),
        b"via /lib\n"
    );
    assert!(
        fs::symlink_metadata(m.join("dev/null"))
            .expect("null")
            .file_type()
            .is_char_device()
    );

    // Change the merged view, then diff the upper dir and apply it natively onto the
    // lower layers: the result must equal the merged view.
    fs::remove_file(m.join("etc/link")).expect("rm");
    fs::write(m.join("bin/new-tool"), b"tool").expect("write");
    fs::remove_dir_all(m.join("usr")).expect("rm -r usr");
    fs::create_dir_all(m.join("usr/lib")).expect("mkdir usr"); // becomes opaque
    fs::write(m.join("usr/lib/fresh"), b"fresh").expect("fresh");
    fs::set_permissions(m.join("caps"), fs::Permissions::from_mode(0o600)).expect("chmod");
    let merged = describe(&m);
    guard.unmount();
    assert_eq!(
        xattr::get(u.join("usr"), "trusted.overlay.opaque").expect("xattr"),
        Some(b"y".to_vec())
    );

    let mut layer = Vec::new();
    let empty = d("empty");
    let stats = diff(&empty, &u, true, &mut layer).expect("diff");
    assert_eq!(stats.diff_id, sha(&layer));
    assert_eq!(stats.size, layer.len() as u64);

    let native_root = d("native");
    apply(&base_layer(), &native_root, &native()).expect("n1");
    let l2_bytes = {
        let mut v = Vec::new();
        diff(&empty, &l2, true, &mut v).expect("diff l2");
        v
    };
    apply(&l2_bytes, &native_root, &native()).expect("n2");
    let applied = apply(&layer, &native_root, &native()).expect("n3");
    assert_eq!(applied.diff_id, stats.diff_id);
    let got = describe(&native_root);
    assert_eq!(got, merged);
}

#[test]
fn diff_round_trip_of_two_trees() {
    let t = tmp();
    let base = t.path().join("base");
    fs::create_dir(&base).expect("base");
    apply(&base_layer(), &base, &native()).expect("base");
    let new = t.path().join("new");
    cp_a(&base, &new);

    // add, change, delete, replace a directory's contents, chmod/chown, links, devices
    fs::write(new.join("added"), b"added").expect("add");
    fs::write(new.join("etc/hostname"), b"other\n").expect("change");
    fs::remove_file(new.join("gone")).expect("delete");
    fs::remove_dir_all(new.join("old")).expect("rm old");
    fs::create_dir(new.join("old")).expect("mkdir old");
    fs::write(new.join("old/replacement"), b"r").expect("replacement");
    fs::remove_dir_all(new.join("dev")).expect("rm dev");
    fs::write(new.join("dev"), b"now a file").expect("dir to file");
    fs::remove_file(new.join("lib")).expect("rm lib");
    fs::create_dir(new.join("lib")).expect("symlink to dir");
    fs::write(new.join("lib/inside"), b"i").expect("inside");
    fs::set_permissions(new.join("bin/su"), fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::lchown(new.join("bin/owned"), Some(5), Some(6)).expect("chown");
    fs::create_dir(new.join("deep")).expect("deep");
    fs::write(new.join("deep/h1"), b"hard").expect("h1");
    fs::hard_link(new.join("deep/h1"), new.join("deep/h2")).expect("h2");
    std::os::unix::fs::symlink("../etc/hostname", new.join("deep/sym")).expect("sym");
    nix::sys::stat::mknod(
        &new.join("deep/zero"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 5),
    )
    .expect("mknod");
    xattr::set(new.join("added"), "user.tag", b"v").expect("xattr");
    // Names and link targets too long for a ustar header.
    let long_dir = new.join("long").join("d".repeat(120));
    fs::create_dir_all(&long_dir).expect("long dir");
    fs::write(long_dir.join("f".repeat(150)), b"long").expect("long file");
    std::os::unix::fs::symlink("t".repeat(200), new.join("long/sym")).expect("long symlink");

    let mut layer = Vec::new();
    let stats = diff(&base, &new, false, &mut layer).expect("diff");
    assert_eq!(stats.diff_id, sha(&layer));
    let mut again = Vec::new();
    assert_eq!(
        diff(&base, &new, false, &mut again).expect("diff again"),
        stats,
        "deterministic"
    );
    assert_eq!(layer, again);

    // The layer lists changes only, sorted, with whiteouts for deletions and one link.
    let mut names = Vec::new();
    let mut archive = tar::Archive::new(&layer[..]);
    for e in archive.entries().expect("entries") {
        let e = e.expect("entry");
        let kind = e.header().entry_type();
        names.push((e.path().expect("path").display().to_string(), kind));
    }
    let plain: Vec<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
    assert!(plain.contains(&".wh.gone"), "{plain:?}");
    assert!(
        plain.contains(&"old/.wh.one") && plain.contains(&"old/.wh.sub"),
        "{plain:?}"
    );
    assert!(
        !plain.contains(&"data/a") && !plain.contains(&"usr/lib/through-link"),
        "unchanged: {plain:?}"
    );
    assert!(
        names.contains(&("deep/h2".to_owned(), tar::EntryType::Link)),
        "{names:?}"
    );
    assert!(
        plain.iter().position(|n| *n == "deep/").expect("deep/")
            < plain.iter().position(|n| *n == "deep/h1").expect("h1")
    );

    let copy = t.path().join("copy");
    cp_a(&base, &copy);
    let applied = apply(&layer, &copy, &native()).expect("apply diff");
    assert_eq!(applied.diff_id, stats.diff_id);
    assert_eq!(describe(&copy), describe(&new));

    // Nothing changed: an empty layer (just the end-of-archive blocks).
    let mut empty = Vec::new();
    let s = diff(&new, &new, false, &mut empty).expect("no-op diff");
    assert_eq!(s.size, 1024);
}

#[test]
fn interoperates_with_gnu_tar() {
    // GNU tar (pax format, xattrs) as an independent producer: applying its archive of a
    // tree rebuilds the tree.
    let t = tmp();
    let src = t.path().join("src");
    fs::create_dir(&src).expect("src");
    apply(&base_layer(), &src, &native()).expect("src tree");
    let long = src.join("x".repeat(90)).join("y".repeat(90));
    fs::create_dir_all(&long).expect("long");
    fs::write(long.join("z".repeat(120)), b"long name").expect("long file");
    let out = Command::new("tar")
        .args([
            "--format=posix",
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "-cf",
            "-",
            "-C",
        ])
        .arg(&src)
        .arg(".")
        .output()
        .expect("run tar");
    assert!(
        out.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dst = t.path().join("dst");
    fs::create_dir(&dst).expect("dst");
    let stats = apply(&out.stdout, &dst, &native()).expect("apply GNU tar archive");
    assert_eq!(stats.diff_id, sha(&out.stdout));
    assert_eq!(describe(&dst), describe(&src));

    // ...and as a consumer: GNU tar reads our diff and extracts the same tree.
    let empty = t.path().join("empty");
    fs::create_dir(&empty).expect("empty");
    let layer = t.path().join("layer.tar");
    let file = fs::File::create(&layer).expect("layer file");
    diff(&empty, &src, false, file).expect("diff");
    let extracted = t.path().join("extracted");
    fs::create_dir(&extracted).expect("extracted");
    let st = Command::new("tar")
        .args([
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "--same-owner",
            "-xpf",
        ])
        .arg(&layer)
        .arg("-C")
        .arg(&extracted)
        .status()
        .expect("run tar -x");
    assert!(st.success());
    assert_eq!(describe(&extracted), describe(&src));
}

/// Entries resolve from the previous entry's directory, but a directory that a later
/// entry of the same layer turns into a symlink is still followed safely (inside the
/// target), never through a stale resolution.
#[test]
fn a_directory_replaced_by_a_symlink_mid_layer_is_resolved_again() {
    let outer = tmp();
    let root = outer.path().join("root");
    let outside = outer.path().join("outside");
    fs::create_dir_all(&root).expect("root");
    fs::create_dir_all(&outside).expect("outside");
    let abs = outside.to_str().expect("utf8");
    let layer = Layer::new()
        .dir("a", 0o755)
        .dir("a/b", 0o755)
        .file("a/b/one", b"1")
        .symlink("a/b", abs)
        .file("a/b/two", b"2")
        .bytes();
    apply(&layer, &root, &native()).expect("apply");
    assert!(
        !outside.join("two").exists(),
        "written through the old resolution"
    );
    assert_eq!(
        fs::read(root.join(abs.trim_start_matches('/')).join("two")).expect("inside"),
        b"2"
    );

    // Deep trees: every entry of a directory costs one step, whatever the depth.
    let mut deep = Layer::new();
    let mut path = String::new();
    for i in 0..300 {
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(&format!("d{i}"));
        deep = deep.dir(&path, 0o755);
    }
    for f in 0..50 {
        deep = deep.file(&format!("{path}/f{f}"), b"x");
    }
    let target = outer.path().join("deep");
    fs::create_dir_all(&target).expect("deep");
    crate::secure::LOOKUPS.with(|n| n.set(0));
    apply(&deep.bytes(), &target, &native()).expect("deep apply");
    assert!(target.join(&path).join("f49").exists());
    // 350 entries: resolving each from the root would look up ~60,000 components.
    let lookups = crate::secure::LOOKUPS.with(|n| n.get());
    assert!(lookups < 1_000, "{lookups} path lookups for 350 entries");
}

/// The same, below a prefix deep enough that entries go through a handle on their parent
/// (paths over 256 bytes): the handle never outlives a replacement, nothing is written
/// through a stale directory, and the directory times land where they belong.
#[test]
fn deep_entries_through_handles_stay_inside_and_get_their_times() {
    let outer = tmp();
    let root = outer.path().join("root");
    let outside = outer.path().join("outside");
    fs::create_dir_all(&root).expect("root");
    fs::create_dir_all(outside.join("b")).expect("outside");
    let abs = outside.to_str().expect("utf8");
    let mut layer = Layer::new();
    let mut prefix = String::new();
    for i in 0..80 {
        prefix.push_str(&format!("level{i:02}/"));
        layer = layer.dir(&prefix, 0o755);
    }
    assert!(prefix.len() > 2 * super::apply::HANDLE_PATH_BYTES);
    let p = |rest: &str| format!("{prefix}{rest}");
    let layer = layer
        .dir(&p("a"), 0o755)
        .dir(&p("a/b"), 0o755)
        .file(&p("a/b/one"), b"1")
        // The parent of later entries becomes a symlink out of the target...
        .symlink(&p("a/b"), abs)
        .file(&p("a/b/two"), b"2")
        // ... and so does an ancestor of a directory whose time is set at the end.
        .dir(&p("c"), 0o755)
        .dir(&p("c/b"), 0o755)
        .symlink(&p("c"), abs)
        .file(&p("f1"), b"x")
        .file(&p("f2"), b"y")
        .bytes();
    let outside_time = filetime::FileTime::from_unix_time(1_000_000, 0);
    filetime::set_file_mtime(outside.join("b"), outside_time).expect("set time");
    super::apply::HANDLES.with(|n| n.set(0));
    apply(&layer, &root, &native()).expect("apply");
    // The entries below the prefix went through handles (one per parent, not per entry).
    let handles = super::apply::HANDLES.with(|n| n.get());
    assert!((10..100).contains(&handles), "{handles} directory handles");
    assert!(
        !outside.join("two").exists(),
        "written through a stale handle"
    );
    assert_eq!(
        fs::read(root.join(abs.trim_start_matches('/')).join("two")).expect("inside"),
        b"2"
    );
    assert_eq!(fs::read(root.join(p("f2"))).expect("f2"), b"y");
    let mtime = |path: &Path| {
        filetime::FileTime::from_last_modification_time(&fs::symlink_metadata(path).expect("stat"))
    };
    assert_eq!(
        mtime(&outside.join("b")),
        outside_time,
        "a time set outside"
    );
    assert_eq!(mtime(&root.join(&prefix)).unix_seconds(), MTIME as i64);
    assert_eq!(mtime(&root.join("level00")).unix_seconds(), MTIME as i64);
}

#[test]
fn a_cancelled_apply_stops() {
    let root = tmp();
    let mut layer = Layer::new();
    for f in 0..10 {
        layer = layer.file(&format!("f{f}"), b"x");
    }
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let opts = ApplyOptions {
        overlay_whiteouts: false,
        cancel: Some(flag),
    };
    let err = apply(&layer.bytes(), root.path(), &opts).expect_err("cancelled");
    assert!(matches!(err, SnapshotterError::Cancelled(_)), "{err}");
    assert!(!root.path().join("f0").exists());
}
