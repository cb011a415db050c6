//! The labels containerd's conventions put on image content, and the one rule for the
//! garbage-collection labels by which an index or manifest holds its children.

use std::collections::BTreeMap;

use super::document::Descriptor;

/// The prefix of the garbage-collection labels by which content holds other content.
pub const GC_REF_CONTENT_PREFIX: &str = "containerd.io/gc.ref.content.";
/// The prefix of the garbage-collection labels by which content holds a snapshot
/// (`containerd.io/gc.ref.snapshot.<snapshotter>=<key>`, on an unpacked image's config).
pub const GC_REF_SNAPSHOT_PREFIX: &str = "containerd.io/gc.ref.snapshot.";
/// The content label that records a compressed layer's uncompressed digest (diff ID).
pub const UNCOMPRESSED_LABEL: &str = "containerd.io/uncompressed";
/// The label prefix that records where a blob came from
/// (`containerd.io/distribution.source.<registry host>=<repositories>`).
pub const DISTRIBUTION_SOURCE_PREFIX: &str = "containerd.io/distribution.source.";

/// The labels that make an index or manifest hold its children for garbage collection,
/// as containerd's `ChildGCLabels` + `SetChildrenMappedLabels` name them: `config` for a
/// config, `m.<i>` for manifests, `l.<i>` for layers, `<i>` for anything else, numbered per
/// key (the config's key is unnumbered while it is the only one). The one rule for every
/// way an image arrives (pull, import), so the same image gets the same labels.
pub fn child_gc_labels<'a>(
    children: impl IntoIterator<Item = &'a Descriptor>,
) -> BTreeMap<String, String> {
    let mut counters: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for child in children {
        let media_type = &child.media_type;
        let key = if media_type.is_config() {
            "config"
        } else if media_type.is_manifest() {
            "m."
        } else if media_type.is_layer() {
            "l."
        } else {
            ""
        };
        let n = counters.entry(key).or_insert(0);
        let name = if key.is_empty() || key.ends_with('.') || *n > 0 {
            format!("{GC_REF_CONTENT_PREFIX}{key}{n}")
        } else {
            format!("{GC_REF_CONTENT_PREFIX}{key}")
        };
        *n += 1;
        out.insert(name, child.digest.clone());
    }
    out
}

/// Adds `repo` to a comma-separated, sorted, de-duplicated source list (containerd's
/// `appendDistributionSourceLabel`).
pub fn append_source(existing: Option<&str>, repo: &str) -> String {
    let mut repos: Vec<&str> = existing
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .collect();
    repos.push(repo);
    repos.sort_unstable();
    repos.dedup();
    repos.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::media::MediaType;
    use crate::image::media::{OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST};

    fn d(mt: &str, n: char) -> Descriptor {
        Descriptor {
            media_type: MediaType::from(mt),
            digest: format!("sha256:{}", n.to_string().repeat(64)),
            size: 1,
            ..Default::default()
        }
    }

    #[test]
    fn children_are_named_per_kind() {
        let l = child_gc_labels(&[
            d(OCI_CONFIG, 'c'),
            d(OCI_LAYER_GZIP, '1'),
            d(OCI_LAYER_GZIP, '2'),
        ]);
        assert_eq!(l["containerd.io/gc.ref.content.config"], d("", 'c').digest);
        assert_eq!(l["containerd.io/gc.ref.content.l.0"], d("", '1').digest);
        assert_eq!(l["containerd.io/gc.ref.content.l.1"], d("", '2').digest);
        let l = child_gc_labels(&[
            d(OCI_MANIFEST, 'a'),
            d(OCI_INDEX, 'b'),
            d("text/plain", 'c'),
            d(OCI_CONFIG, 'e'),
            d(OCI_CONFIG, 'f'),
        ]);
        let keys: Vec<&str> = l.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "containerd.io/gc.ref.content.0",
                "containerd.io/gc.ref.content.1",
                "containerd.io/gc.ref.content.config",
                "containerd.io/gc.ref.content.config1",
                "containerd.io/gc.ref.content.m.0",
            ]
        );
    }

    #[test]
    fn pull_and_import_name_the_same_children() {
        let l = child_gc_labels(&[
            d(OCI_CONFIG, 'c'),
            d(OCI_LAYER_GZIP, '1'),
            d("application/vnd.docker.image.rootfs.diff.tar.gzip", '2'),
        ]);
        assert_eq!(l.len(), 3);
        assert_eq!(l["containerd.io/gc.ref.content.config"], d("", 'c').digest);
        assert_eq!(l["containerd.io/gc.ref.content.l.0"], d("", '1').digest);
        assert_eq!(l["containerd.io/gc.ref.content.l.1"], d("", '2').digest);
        let l = child_gc_labels(&[
            d(OCI_MANIFEST, 'a'),
            d(crate::image::media::DOCKER_MANIFEST, 'b'),
            d("application/vnd.example.artifact", 'x'),
        ]);
        assert_eq!(l["containerd.io/gc.ref.content.m.0"], d("", 'a').digest);
        assert_eq!(l["containerd.io/gc.ref.content.m.1"], d("", 'b').digest);
        assert_eq!(l["containerd.io/gc.ref.content.0"], d("", 'x').digest);
    }

    #[test]
    fn every_kind_of_child() {
        let children = [
            d(OCI_CONFIG, 'a'),
            d(OCI_LAYER_GZIP, 'b'),
            d(crate::image::media::DOCKER_LAYER, 'c'),
            d("application/vnd.example+json", 'd'),
            d(OCI_MANIFEST, 'e'),
            d(OCI_INDEX, 'f'),
        ];
        let labels = child_gc_labels(&children);
        let keys: Vec<&str> = labels.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "containerd.io/gc.ref.content.0",
                "containerd.io/gc.ref.content.1",
                "containerd.io/gc.ref.content.config",
                "containerd.io/gc.ref.content.l.0",
                "containerd.io/gc.ref.content.l.1",
                "containerd.io/gc.ref.content.m.0",
            ]
        );
    }

    #[test]
    fn sources() {
        assert_eq!(append_source(None, "library/busybox"), "library/busybox");
        assert_eq!(append_source(Some("b/x,d/y"), "c/z"), "b/x,c/z,d/y");
        assert_eq!(append_source(Some("a/b"), "a/b"), "a/b");
    }
}
