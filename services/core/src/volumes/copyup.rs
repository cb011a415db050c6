//! A volume's own filesystem (`volume create -o type=tmpfs …`) is mounted here too, at
//! first use. Then Docker's copy-up: a volume that is new (never filled) and empty, mounted over a
//! directory of the image, first gets that directory's contents — owners, modes, times,
//! symlinks, hard links and xattrs kept (the native snapshotter's tree copy). It happens
//! once per volume, at task create, before the shim mounts anything: the container's root
//! filesystem is mounted read-only on a temporary directory for the copy.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use berth_snapshotter::Mount;
use serde_json::Value;

use super::{NOCOPY_LABEL, VOLUMES_LABEL, Volumes, blocking, names_in_label};
use crate::error::{Error, Result};

/// A read-only view of a root filesystem's mounts: an overlay's upper directory becomes
/// its top lower directory (nothing is written, and the upper stays free for the shim's
/// mount); a bind becomes read-only.
pub(super) fn read_only_view(mounts: &[Mount]) -> Vec<Mount> {
    mounts
        .iter()
        .map(|m| {
            if m.kind != "overlay" {
                let mut options: Vec<String> = m
                    .options
                    .iter()
                    .filter(|o| *o != "rw" && *o != "ro")
                    .cloned()
                    .collect();
                options.push("ro".to_string());
                return Mount {
                    options,
                    ..m.clone()
                };
            }
            let upper = m.options.iter().find_map(|o| o.strip_prefix("upperdir="));
            let mut options = Vec::new();
            for o in &m.options {
                if o.starts_with("upperdir=") || o.starts_with("workdir=") || o == "rw" {
                    continue;
                }
                match (o.strip_prefix("lowerdir="), upper) {
                    (Some(lower), Some(upper)) => options.push(format!("lowerdir={upper}:{lower}")),
                    _ => options.push(o.clone()),
                }
            }
            options.push("ro".to_string());
            Mount {
                options,
                ..m.clone()
            }
        })
        .collect()
}

/// The relative path of `dest` inside a root, if no component climbs out.
fn relative(dest: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(dest).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(p) => out.push(p),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// The directory at `rel` under `root`, if every component of the way is a real directory
/// (a symlink could lead out of the root filesystem: no copy-up then).
fn image_dir(root: &Path, rel: &Path) -> Option<PathBuf> {
    let mut at = root.to_path_buf();
    for c in rel.components() {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            _ => return None,
        }
    }
    Some(at)
}

fn is_empty_dir(dir: &Path) -> Result<bool> {
    let mut entries =
        std::fs::read_dir(dir).map_err(|e| Error::io("read volume directory", dir, e))?;
    Ok(entries.next().is_none())
}

/// The (volume name, destination) pairs of the spec's mounts of the container's volumes.
fn volume_mounts(
    volumes: &Volumes,
    namespace: &str,
    names: &[String],
    spec: &Value,
) -> Vec<(String, String)> {
    let Some(mounts) = spec.get("mounts").and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for m in mounts {
        let (Some(src), Some(dest)) = (
            m.get("source").and_then(Value::as_str),
            m.get("destination").and_then(Value::as_str),
        ) else {
            continue;
        };
        if let Some(name) = names
            .iter()
            .find(|n| Path::new(src) == volumes.mountpoint(namespace, n))
        {
            out.push((name.clone(), dest.to_string()));
        }
    }
    out
}

impl Volumes {
    /// Mounts the filesystems of the container's volumes that have one (`-o type=…`),
    /// then fills each new, empty volume (unless its mount is in [`NOCOPY_LABEL`]) the container mounts (its [`VOLUMES_LABEL`]) with the
    /// image directory it is mounted over, once. `rootfs` are the container's root
    /// filesystem mounts; none: nothing to copy from.
    pub async fn copy_up(
        &self,
        namespace: &str,
        id: &str,
        labels: &BTreeMap<String, String>,
        spec: &[u8],
        rootfs: &[Mount],
    ) -> Result<()> {
        let names = names_in_label(labels, VOLUMES_LABEL);
        if names.is_empty() {
            return Ok(());
        }
        let spec: Value = serde_json::from_slice(spec)
            .map_err(|e| Error::invalid(format!("runtime spec of container {id}: {e}")))?;
        let nocopy = names_in_label(labels, NOCOPY_LABEL);
        for (name, dest) in volume_mounts(self, namespace, &names, &spec) {
            let lock = self.preparing_lock(namespace, &name);
            let _held = lock.lock().await;
            let volume = self.get(namespace, &name).await?;
            self.mount_if_needed(&volume).await?;
            if volume.filled || nocopy.iter().any(|d| Path::new(d) == Path::new(&dest)) {
                continue;
            }
            let data = volume.mountpoint.clone();
            let empty = {
                let d = data.clone();
                // A crash between the record and its directory leaves no directory.
                blocking(move || {
                    std::fs::create_dir_all(&d)
                        .map_err(|e| Error::io("create volume directory", &d, e))?;
                    is_empty_dir(&d)
                })
                .await?
            };
            if !empty {
                self.mark_filled(namespace, &name).await?;
                continue;
            }
            let (Some(rel), false) = (relative(&dest), rootfs.is_empty()) else {
                continue;
            };
            let view = read_only_view(rootfs);
            let target = data.clone();
            let copied = blocking(move || {
                berth_snapshotter::mount::with_temp_mount(&view, |root| {
                    let Some(src) = image_dir(root, &rel) else {
                        return Ok(false);
                    };
                    if std::fs::read_dir(&src)
                        .map(|mut e| e.next().is_none())
                        .unwrap_or(true)
                    {
                        return Ok(false);
                    }
                    berth_snapshotter::native::copy_tree(&src, &target)?;
                    Ok(true)
                })
                .map_err(Error::from)
            })
            .await
            .map_err(|e| e.context(&format!("copy image directory {dest} into volume {name}")))?;
            if copied {
                tracing::info!(%namespace, %id, volume = %name, %dest, "volume filled from the image (copy-up)");
                self.mark_filled(namespace, &name).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_views_take_the_upper_as_a_lower() {
        let m = Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                "index=off".into(),
                "workdir=/s/2/work".into(),
                "upperdir=/s/2/fs".into(),
                "lowerdir=/s/1/fs".into(),
            ],
        };
        let v = read_only_view(&[m]);
        assert_eq!(
            v[0].options,
            ["index=off", "lowerdir=/s/2/fs:/s/1/fs", "ro"]
        );
        let b = Mount {
            kind: "bind".into(),
            source: "/s/1/fs".into(),
            options: vec!["rw".into(), "rbind".into()],
        };
        assert_eq!(read_only_view(&[b])[0].options, ["rbind", "ro"]);
    }

    #[test]
    fn destinations_stay_inside() {
        assert_eq!(relative("/var/lib/x"), Some(PathBuf::from("var/lib/x")));
        assert_eq!(relative("/"), None);
        assert_eq!(relative("/a/../../etc"), None);
    }
}
