//! The walk over an image's tree in the content store, for import (after the blobs are in)
//! and export (before they are written): every blob present with the size its descriptor
//! states, the GC labels of every parent, the manifests met.

use std::collections::{BTreeMap, HashSet};

use berth_oci::image::{self as oci, Kind, Platform};

use super::Archives;
use crate::digest;
use crate::error::{Error, Result};

/// Which way a walk goes: what a missing blob means differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    /// A missing blob is a bad archive (InvalidArgument).
    Import,
    /// A missing blob is content the namespace lost (FailedPrecondition).
    Export,
}

impl Side {
    /// Where a missing blob is not.
    fn missing(self, namespace: &str) -> String {
        match self {
            Side::Import => format!("neither in the archive nor in namespace {namespace:?}"),
            Side::Export => format!("not in namespace {namespace:?}"),
        }
    }

    /// The error for a missing blob.
    fn absent(self, msg: String) -> Error {
        match self {
            Side::Import => Error::invalid(msg),
            Side::Export => Error::precondition(msg),
        }
    }
}

#[derive(Default)]
pub(super) struct Walked {
    pub blobs: Vec<(String, i64)>,
    pub labels: Vec<(String, BTreeMap<String, String>)>,
    pub manifests: Vec<WalkedManifest>,
}

pub(super) struct WalkedManifest {
    /// The descriptor that pointed at the manifest (with its platform, from an index).
    pub desc: oci::Descriptor,
    pub manifest: oci::Manifest,
}

/// One walk's fixed parts.
struct Walk<'a> {
    namespace: &'a str,
    platform: Option<&'a Platform>,
    side: Side,
}

/// A descriptor still to visit: who named it, and whether it is a leaf (a config or a
/// layer, checked for presence and size only).
type Pending = (oci::Descriptor, String, bool);

impl Archives {
    /// Walks the tree under `root`, checking that every blob is in the namespace with the
    /// size its descriptor states, and returns the blobs, the GC labels for each parent and
    /// the image manifests met. Index children: with `platform`, those matching it (or with
    /// no platform) are required; without, those present are taken and at least one must
    /// be. Manifests need their config and every layer.
    pub(super) async fn walk(
        &self,
        namespace: &str,
        root: &oci::Descriptor,
        platform: Option<&Platform>,
        what: &str,
        side: Side,
    ) -> Result<Walked> {
        let walk = Walk {
            namespace,
            platform,
            side,
        };
        let mut walked = Walked::default();
        let mut seen = HashSet::new();
        let mut stack: Vec<Pending> = vec![(root.clone(), what.to_string(), false)];
        while let Some((desc, parent, leaf)) = stack.pop() {
            if !seen.insert(desc.digest.clone()) {
                continue;
            }
            let size = self.check_present(&walk, &desc, &parent).await?;
            walked.blobs.push((desc.digest.clone(), size));
            if leaf {
                continue;
            }
            let media_type = if desc.media_type.is_empty() {
                self.sniff(namespace, &desc.digest).await?
            } else {
                desc.media_type.clone()
            };
            match media_type.kind() {
                Ok(Kind::Index) => {
                    let children = self.walk_index(&walk, &desc, &parent).await?;
                    walked
                        .labels
                        .push((desc.digest.clone(), oci::child_gc_labels(&children)));
                    let context = format!("index {}", desc.digest);
                    for child in children.into_iter().rev() {
                        stack.push((child, context.clone(), false));
                    }
                }
                Ok(Kind::Manifest) => {
                    let data = self.read_json(namespace, &desc.digest).await?;
                    let manifest = oci::parse_manifest(&desc.digest, &data)?;
                    walked.labels.push((
                        desc.digest.clone(),
                        oci::child_gc_labels(manifest.children()),
                    ));
                    let context = format!("manifest {}", desc.digest);
                    for child in manifest.children().rev() {
                        stack.push((child.clone(), context.clone(), true));
                    }
                    walked.manifests.push(WalkedManifest {
                        desc: oci::Descriptor { media_type, ..desc },
                        manifest,
                    });
                }
                Err(berth_oci::Error::Schema1 { .. }) => {
                    return Err(Error::precondition(format!(
                        "{parent}: {} is a Docker schema 1 manifest, which is not supported",
                        desc.digest
                    )));
                }
                Err(_) => {}
            }
        }
        Ok(walked)
    }

    /// Checks that the namespace has the blob with the size its descriptor states; returns
    /// the size.
    async fn check_present(
        &self,
        walk: &Walk<'_>,
        desc: &oci::Descriptor,
        parent: &str,
    ) -> Result<i64> {
        digest::validate(&desc.digest).map_err(|e| e.context(parent))?;
        let info = match self.content.info(walk.namespace, &desc.digest).await {
            Ok(info) => info,
            Err(e) if e.is_not_found() => {
                let mt = if desc.media_type.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", desc.media_type)
                };
                return Err(walk.side.absent(format!(
                    "{parent} references {}{mt}, which is {}",
                    desc.digest,
                    walk.side.missing(walk.namespace)
                )));
            }
            Err(e) => return Err(e),
        };
        if info.size != desc.size {
            return Err(Error::invalid(format!(
                "{parent}: the descriptor of {} says {} bytes, the blob has {}",
                desc.digest, desc.size, info.size
            )));
        }
        Ok(info.size)
    }

    /// The children of an index the walk takes: with a platform, those for it (or for no
    /// platform in particular); without, those the namespace has. None of several is an
    /// error.
    async fn walk_index(
        &self,
        walk: &Walk<'_>,
        desc: &oci::Descriptor,
        parent: &str,
    ) -> Result<Vec<oci::Descriptor>> {
        let data = self.read_json(walk.namespace, &desc.digest).await?;
        let index = oci::parse_index(&desc.digest, &data)?;
        let mut chosen = Vec::new();
        for child in &index.manifests {
            match (walk.platform, &child.platform) {
                (Some(want), Some(have)) if !oci::matches_strict(want, have) => continue,
                (Some(_), _) => chosen.push(child.clone()),
                (None, _) if self.has(walk.namespace, &child.digest).await? => {
                    chosen.push(child.clone());
                }
                (None, _) => tracing::debug!(
                    index = %desc.digest,
                    manifest = %child.digest,
                    "manifest not present: left out"
                ),
            }
        }
        if chosen.is_empty() && !index.manifests.is_empty() {
            return Err(match walk.platform {
                Some(p) => Error::not_found(format!(
                    "{parent}: index {} has no manifest for platform {p}",
                    desc.digest
                )),
                None => walk.side.absent(format!(
                    "{parent}: index {} has none of its {} manifests: they are {}",
                    desc.digest,
                    index.manifests.len(),
                    walk.side.missing(walk.namespace)
                )),
            });
        }
        Ok(chosen)
    }
}
