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
#[derive(Debug, Default, Clone, Copy)]
pub struct OverlayLayout;

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
