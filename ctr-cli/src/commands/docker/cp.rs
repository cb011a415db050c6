//! `berth cp`: copy files and directories between a container and the host, both ways.
//!
//! A running container is reached through `/proc/<pid>/root`; a container with no running
//! task gets its snapshot mounted on a temporary directory for the copy. Every path inside
//! the container is resolved as the container would see it: symlinks (absolute or with
//! `..`) are followed within the container's root and can never lead out of it. Mode,
//! ownership and modification times are kept (copying in, files belong to the container's
//! root unless `-a`).

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use clap::Args;

use crate::client::rootfs::{components, resolve_in_root, resolve_parent_in_root, with_root};
use crate::client::{Client, containers};

#[derive(Args, Debug)]
pub struct CpArgs {
    /// Archive mode: copy uid/gid information too (copying in).
    #[arg(short, long)]
    pub archive: bool,
    /// Always follow a symlink given as SRC.
    #[arg(short = 'L', long)]
    pub follow_link: bool,
    /// CONTAINER:SRC_PATH, a local path, or `-` (a tar archive on stdin).
    pub src: String,
    /// CONTAINER:DEST_PATH, a local path, or `-` (a tar archive to stdout).
    pub dest: String,
}

/// One side of a copy.
#[derive(Debug, PartialEq)]
enum Loc {
    Local(String),
    Container(String, String),
}

/// Docker's rule: an absolute path, or one whose part before `:` starts with `.`, or that
/// has no `:`, is local; else `CONTAINER:PATH`.
fn parse_loc(arg: &str) -> Loc {
    if arg.starts_with('/') {
        return Loc::Local(arg.to_string());
    }
    match arg.split_once(':') {
        Some((c, p)) if !c.starts_with('.') && !c.is_empty() => {
            Loc::Container(c.to_string(), p.to_string())
        }
        _ => Loc::Local(arg.to_string()),
    }
}

/// Where copied entries go: `base` on the host, or (with a root) `base` inside the
/// container, each entry's parent resolved in the container's root.
struct Dest<'a> {
    root: Option<&'a Path>,
    base: PathBuf,
}

impl Dest<'_> {
    fn path(&self, rel: &Path) -> io::Result<PathBuf> {
        let p = if rel.as_os_str().is_empty() {
            self.base.clone()
        } else {
            self.base.join(rel)
        };
        match self.root {
            Some(root) => resolve_parent_in_root(root, &p),
            None => Ok(p),
        }
    }
}

/// Whose files the copies become: the source's owner, or the destination's root.
#[derive(Clone, Copy)]
enum Owner {
    Keep,
    Root,
}

impl Owner {
    fn of(self, m: &fs::Metadata) -> (u32, u32) {
        match self {
            Owner::Keep => (m.uid(), m.gid()),
            Owner::Root => (0, 0),
        }
    }
}

fn with_path(e: io::Error, what: &str, p: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
}

/// Removes whatever non-directory is at `p` (a file, a symlink...), so that a new entry is
/// never written through a link.
fn clear(p: &Path) -> io::Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => Ok(Some(m)),
        Ok(_) => {
            fs::remove_file(p).map_err(|e| with_path(e, "remove", p))?;
            Ok(None)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(with_path(e, "lstat", p)),
    }
}

fn set_attrs(dst: &Path, m: &fs::Metadata, owner: Owner) -> io::Result<()> {
    let (uid, gid) = owner.of(m);
    std::os::unix::fs::lchown(dst, Some(uid), Some(gid)).map_err(|e| with_path(e, "chown", dst))?;
    if !m.file_type().is_symlink() {
        fs::set_permissions(dst, fs::Permissions::from_mode(m.mode() & 0o7777))
            .map_err(|e| with_path(e, "chmod", dst))?;
        let times = fs::FileTimes::new()
            .set_modified(m.modified()?)
            .set_accessed(m.accessed()?);
        fs::File::open(dst)
            .and_then(|f| f.set_times(times))
            .map_err(|e| with_path(e, "set times of", dst))?;
    }
    Ok(())
}

/// Copies `src` (not following it if it is a symlink) to `dest.path(rel)`, recursively.
fn copy_tree(src: &Path, dest: &Dest<'_>, rel: &Path, owner: Owner) -> io::Result<()> {
    let m = fs::symlink_metadata(src).map_err(|e| with_path(e, "lstat", src))?;
    copy_entry(src, &m, dest, rel, owner)
}

fn copy_entry(
    src: &Path,
    m: &fs::Metadata,
    dest: &Dest<'_>,
    rel: &Path,
    owner: Owner,
) -> io::Result<()> {
    let dst = dest.path(rel)?;
    let ft = m.file_type();
    if ft.is_dir() {
        if clear(&dst)?.is_none() {
            fs::create_dir(&dst).map_err(|e| with_path(e, "mkdir", &dst))?;
        }
        let mut children: Vec<_> = fs::read_dir(src)
            .map_err(|e| with_path(e, "read directory", src))?
            .collect::<io::Result<_>>()?;
        children.sort_by_key(|e| e.file_name());
        for child in children {
            copy_tree(&child.path(), dest, &rel.join(child.file_name()), owner)?;
        }
        // The directory's own mode and times last: copying into it changed its mtime.
        let dst = dest.path(rel)?;
        return set_attrs(&dst, m, owner);
    }
    if clear(&dst)?.is_some() {
        return Err(io::Error::other(format!(
            "cannot overwrite directory {} with non-directory {}",
            dst.display(),
            src.display()
        )));
    }
    if ft.is_file() {
        let mut from = fs::File::open(src).map_err(|e| with_path(e, "open", src))?;
        let mut to = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .mode(0o600)
            .open(&dst)
            .map_err(|e| with_path(e, "create", &dst))?;
        io::copy(&mut from, &mut to).map_err(|e| with_path(e, "copy to", &dst))?;
    } else if ft.is_symlink() {
        let target = fs::read_link(src).map_err(|e| with_path(e, "readlink", src))?;
        std::os::unix::fs::symlink(&target, &dst).map_err(|e| with_path(e, "symlink", &dst))?;
    } else {
        let kind = nix::sys::stat::SFlag::from_bits_truncate(m.mode() & libc_ifmt());
        nix::sys::stat::mknod(
            &dst,
            kind,
            nix::sys::stat::Mode::from_bits_truncate(m.mode() & 0o7777),
            m.rdev(),
        )
        .map_err(|e| with_path(io::Error::from(e), "mknod", &dst))?;
    }
    set_attrs(&dst, m, owner)
}

/// The file-type bits of `st_mode`.
const fn libc_ifmt() -> u32 {
    0o170000
}

/// Where a copy of `src_name` (a directory when `src_is_dir`) goes for the destination
/// `dest` (host path, already resolved when in a container): into it when it is an
/// existing directory, else `dest` itself. `contents` (a SRC ending in `/.`) copies a
/// directory's entries into `dest`.
fn target_of(
    dest_resolved: &Path,
    dest_given: &str,
    src_name: Option<&std::ffi::OsStr>,
    src_is_dir: bool,
    contents: bool,
) -> anyhow::Result<Option<OsString>> {
    match fs::metadata(dest_resolved) {
        Ok(m) if m.is_dir() => {
            if contents && src_is_dir {
                Ok(None)
            } else {
                Ok(src_name.map(OsString::from))
            }
        }
        Ok(_) if src_is_dir => {
            anyhow::bail!("cannot copy a directory to a file: {dest_given}")
        }
        Ok(_) => Ok(Some(OsString::new())),
        Err(_) if dest_given.ends_with('/') && !src_is_dir => {
            anyhow::bail!("destination directory {dest_given} does not exist")
        }
        Err(_) => Ok(Some(OsString::new())),
    }
}

/// Copies out of the container rooted at `root`.
fn copy_out(
    root: &Path,
    container: &str,
    src: &str,
    dest: &str,
    follow: bool,
) -> anyhow::Result<()> {
    let contents = src.ends_with("/.") || src == ".";
    let src_path = Path::new(if src.is_empty() { "/" } else { src });
    let resolved = if follow || contents || src.ends_with('/') {
        resolve_in_root(root, src_path)?
    } else {
        resolve_parent_in_root(root, src_path)?
    };
    let m = fs::symlink_metadata(&resolved)
        .map_err(|_| anyhow::anyhow!("Could not find the file {src} in container {container}"))?;
    let name = components(src_path).last().cloned();
    let dest_path = PathBuf::from(dest);
    let sub = target_of(&dest_path, dest, name.as_deref(), m.is_dir(), contents)?;
    let out = Dest {
        root: None,
        base: match &sub {
            Some(n) if !n.is_empty() => dest_path.join(n),
            _ => dest_path.clone(),
        },
    };
    if m.is_dir() && sub.is_none() {
        for child in fs::read_dir(&resolved)? {
            let child = child?;
            copy_tree(
                &child.path(),
                &out,
                Path::new(&child.file_name()),
                Owner::Keep,
            )?;
        }
        return Ok(());
    }
    copy_entry(&resolved, &m, &out, Path::new(""), Owner::Keep)?;
    Ok(())
}

/// Copies into the container rooted at `root`.
fn copy_in(root: &Path, src: &str, dest: &str, follow: bool, owner: Owner) -> anyhow::Result<()> {
    let contents = src.ends_with("/.") || src == ".";
    let src_path = PathBuf::from(src);
    let m = if follow || contents {
        fs::metadata(&src_path)
    } else {
        fs::symlink_metadata(&src_path)
    }
    .map_err(|e| anyhow::anyhow!("lstat {src}: {e}"))?;
    let dest_given = if dest.is_empty() { "/" } else { dest };
    let dest_resolved = resolve_in_root(root, Path::new(dest_given))?;
    let name = fs::canonicalize(&src_path)
        .ok()
        .and_then(|p| p.file_name().map(OsString::from))
        .or_else(|| src_path.file_name().map(OsString::from));
    let sub = target_of(
        &dest_resolved,
        dest_given,
        name.as_deref(),
        m.is_dir(),
        contents,
    )?;
    let base = match &sub {
        Some(n) if !n.is_empty() => Path::new(dest_given).join(n),
        _ => PathBuf::from(dest_given),
    };
    let into = Dest {
        root: Some(root),
        base,
    };
    if m.is_dir() && sub.is_none() {
        for child in fs::read_dir(&src_path)? {
            let child = child?;
            copy_tree(&child.path(), &into, Path::new(&child.file_name()), owner)?;
        }
        return Ok(());
    }
    copy_entry(&src_path, &m, &into, Path::new(""), owner)?;
    Ok(())
}

/// A directory of the CLI's own for one copy through a tar stream, removed on drop.
struct Staging(PathBuf);

impl Staging {
    fn new() -> io::Result<Staging> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("berth-cp-{}-{nanos}", std::process::id()));
        std::os::unix::fs::DirBuilderExt::mode(&mut fs::DirBuilder::new(), 0o700).create(&dir)?;
        Ok(Staging(dir))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs GNU tar (`-c` to stdout, `-x` from stdin) in `dir`, numeric owners kept.
fn tar(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let status = std::process::Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("--numeric-owner")
        .args(args)
        .status()
        .map_err(|e| anyhow::anyhow!("run tar: {e}"))?;
    anyhow::ensure!(status.success(), "tar {}: {status}", args.join(" "));
    Ok(())
}

/// `cp CONTAINER:SRC -`: the path as a tar archive on stdout (as Docker's), named by its
/// last component.
fn copy_out_tar(root: &Path, container: &str, src: &str, follow: bool) -> anyhow::Result<()> {
    let staging = Staging::new()?;
    copy_out(
        root,
        container,
        src,
        &staging.0.display().to_string(),
        follow,
    )?;
    let names: Vec<String> = fs::read_dir(&staging.0)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut args = vec!["-cf", "-"];
    args.extend(names.iter().map(String::as_str));
    tar(&staging.0, &args)
}

/// `cp - CONTAINER:DEST`: a tar archive from stdin unpacked into the directory DEST.
fn copy_in_tar(root: &Path, dest: &str, owner: Owner) -> anyhow::Result<()> {
    let dest_given = if dest.is_empty() { "/" } else { dest };
    let resolved = resolve_in_root(root, Path::new(dest_given))?;
    if !resolved.is_dir() {
        anyhow::bail!("destination \"{dest_given}\" must be a directory");
    }
    let staging = Staging::new()?;
    tar(&staging.0, &["-xf", "-"])?;
    for child in fs::read_dir(&staging.0)? {
        let child = child?;
        let into = Dest {
            root: Some(root),
            base: PathBuf::from(dest_given),
        };
        copy_tree(&child.path(), &into, Path::new(&child.file_name()), owner)?;
    }
    Ok(())
}

pub async fn run(c: &Client, a: CpArgs) -> anyhow::Result<()> {
    let (src, dest) = (parse_loc(&a.src), parse_loc(&a.dest));
    match (src, dest) {
        (Loc::Container(cref, path), Loc::Local(dest)) if dest == "-" => {
            let ct = containers::resolve(c, &cref).await?;
            let follow = a.follow_link;
            with_root(c, &ct, move |root| copy_out_tar(root, &cref, &path, follow)).await
        }
        (Loc::Local(src), Loc::Container(cref, path)) if src == "-" => {
            let ct = containers::resolve(c, &cref).await?;
            let owner = if a.archive { Owner::Keep } else { Owner::Root };
            with_root(c, &ct, move |root| copy_in_tar(root, &path, owner)).await
        }
        (Loc::Container(cref, path), Loc::Local(dest)) => {
            let ct = containers::resolve(c, &cref).await?;
            let follow = a.follow_link;
            with_root(c, &ct, move |root| {
                copy_out(root, &cref, &path, &dest, follow)
            })
            .await
        }
        (Loc::Local(src), Loc::Container(cref, path)) => {
            let ct = containers::resolve(c, &cref).await?;
            let owner = if a.archive { Owner::Keep } else { Owner::Root };
            let follow = a.follow_link;
            with_root(c, &ct, move |root| {
                copy_in(root, &src, &path, follow, owner)
            })
            .await
        }
        (Loc::Container(..), Loc::Container(..)) => {
            anyhow::bail!("copying between containers is not supported")
        }
        (Loc::Local(..), Loc::Local(..)) => {
            anyhow::bail!("must specify at least one container source")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_container_paths_like_docker() {
        assert_eq!(
            parse_loc("web:/etc/hosts"),
            Loc::Container("web".into(), "/etc/hosts".into())
        );
        assert_eq!(parse_loc("/a:b"), Loc::Local("/a:b".into()));
        assert_eq!(parse_loc("./a:b"), Loc::Local("./a:b".into()));
        assert_eq!(parse_loc("file"), Loc::Local("file".into()));
    }

    #[test]
    fn copies_trees_keeping_modes_and_never_through_links() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("d")).unwrap();
        fs::write(src.join("d/f"), "hello").unwrap();
        fs::set_permissions(src.join("d/f"), fs::Permissions::from_mode(0o751)).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", src.join("l")).unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("dst")).unwrap();
        // A planted link in the destination must not be written through.
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("dst/src")).unwrap();
        copy_in(&root, src.to_str().unwrap(), "/dst", false, Owner::Keep).unwrap();
        assert_eq!(
            fs::read_to_string(root.join("dst/src/d/f")).unwrap(),
            "hello"
        );
        let mode = fs::metadata(root.join("dst/src/d/f")).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o751);
        assert_eq!(
            fs::read_link(root.join("dst/src/l")).unwrap(),
            Path::new("/etc/hostname")
        );
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    }
}
