//! The overlayfs snapshotter: each snapshot's directory holds its own layer as an overlay
//! upper dir (`fs/`) and, while active, overlay's `work/`; the parents are stacked as lower
//! dirs at mount time, so a layer never depends on where its parents are.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Result, SnapshotterError};
use crate::snapshots::{Kind, Mount};
use crate::store::{Backend, Store};

/// The overlayfs snapshotter ("overlayfs").
pub type Overlay = Store<OverlayLayout>;

/// Directory layout and mounts of the overlayfs snapshotter.
#[derive(Debug, Clone, Copy)]
pub struct OverlayLayout {
    /// Put `index=off` first in overlay mounts' options, as containerd does whenever the
    /// kernel has the `index` feature: an upper dir must stay mountable on other lowers.
    pub index_off: bool,
}

impl Default for OverlayLayout {
    /// `index=off` when the kernel knows the option.
    fn default() -> Self {
        Self {
            index_off: Path::new("/sys/module/overlay/parameters/index").exists(),
        }
    }
}

impl Backend for OverlayLayout {
    const NAME: &'static str = "overlayfs";
    const CAN_REBASE: bool = true;

    fn stage(&self, dir: &Path, kind: Kind, _parents: &[PathBuf]) -> Result<()> {
        let mut subdirs = vec!["fs"];
        if kind == Kind::Active {
            subdirs.push("work");
        }
        for sub in subdirs {
            let path = dir.join(sub);
            fs::create_dir(&path).map_err(|e| SnapshotterError::io("create", &path, e))?;
            // As containerd: the layer root is 0755 whatever the umask says.
            fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(|e| SnapshotterError::io("chmod", &path, e))?;
        }
        Ok(())
    }

    fn mounts(&self, dir: &Path, kind: Kind, parents: &[PathBuf]) -> Vec<Mount> {
        let fs_of = |d: &Path| d.join("fs").to_string_lossy().into_owned();
        let bind = |source: String, ro: bool| {
            vec![Mount {
                kind: "bind".into(),
                source,
                options: vec![if ro { "ro" } else { "rw" }.into(), "rbind".into()],
            }]
        };
        match (kind, parents) {
            (Kind::Active, []) => bind(fs_of(dir), false),
            (_, []) => bind(fs_of(dir), true),
            (Kind::View | Kind::Committed, [only]) => bind(fs_of(only), true),
            _ => {
                let lower = parents
                    .iter()
                    .map(|p| fs_of(p))
                    .collect::<Vec<_>>()
                    .join(":");
                let mut options = Vec::new();
                if self.index_off {
                    options.push("index=off".to_string());
                }
                if kind == Kind::Active {
                    options.push(format!("workdir={}", dir.join("work").to_string_lossy()));
                    options.push(format!("upperdir={}", fs_of(dir)));
                }
                options.push(format!("lowerdir={lower}"));
                vec![Mount {
                    kind: "overlay".into(),
                    source: "overlay".into(),
                    options,
                }]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts(kind: Kind, parents: &[&str]) -> Vec<Mount> {
        let parents: Vec<PathBuf> = parents.iter().map(PathBuf::from).collect();
        OverlayLayout { index_off: false }.mounts(Path::new("/s/9"), kind, &parents)
    }

    fn opts(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn mount_shapes() {
        let bind = |source: &str, o: &[&str]| {
            vec![Mount {
                kind: "bind".into(),
                source: source.into(),
                options: opts(o),
            }]
        };
        assert_eq!(mounts(Kind::Active, &[]), bind("/s/9/fs", &["rw", "rbind"]));
        assert_eq!(mounts(Kind::View, &[]), bind("/s/9/fs", &["ro", "rbind"]));
        assert_eq!(
            mounts(Kind::View, &["/s/1"]),
            bind("/s/1/fs", &["ro", "rbind"])
        );
        let overlay = |o: &[&str]| {
            vec![Mount {
                kind: "overlay".into(),
                source: "overlay".into(),
                options: opts(o),
            }]
        };
        assert_eq!(
            mounts(Kind::Active, &["/s/2", "/s/1"]),
            overlay(&[
                "workdir=/s/9/work",
                "upperdir=/s/9/fs",
                "lowerdir=/s/2/fs:/s/1/fs"
            ])
        );
        assert_eq!(
            mounts(Kind::Active, &["/s/1"]),
            overlay(&["workdir=/s/9/work", "upperdir=/s/9/fs", "lowerdir=/s/1/fs"])
        );
        assert_eq!(
            mounts(Kind::View, &["/s/2", "/s/1"]),
            overlay(&["lowerdir=/s/2/fs:/s/1/fs"])
        );
        let with_index = OverlayLayout { index_off: true }.mounts(
            Path::new("/s/9"),
            Kind::View,
            &[PathBuf::from("/s/2"), PathBuf::from("/s/1")],
        );
        assert_eq!(with_index[0].options[0], "index=off");
    }
}
