//! The OCI image format, written once for pull, push, archives, unpack, diff, the registry
//! client and the `berth` CLI: media types ([`MediaType`]), layer compression
//! ([`Compression`]), descriptors, indexes, manifests and image configs ([`Descriptor`],
//! [`Index`], [`Manifest`], [`ImageConfig`]), platforms and which manifest fits one
//! ([`Platform`], [`best_match`]), the `containerd.io/gc.ref.content.*` child labels
//! ([`child_gc_labels`]), chain IDs ([`chain_ids`]) and the OCI image layout.
//!
//! # Our own serde types, not `oci-spec`'s
//!
//! The documents are thin serde types of our own rather than
//! `oci_spec::image::{Descriptor, ImageIndex, ImageManifest, ImageConfiguration}`, because
//! oci-spec's strictness would change what berth accepts and writes:
//!
//! - its `Descriptor` requires `mediaType` (an OCI layout's `index.json` entry may leave it
//!   out; berth reads the document to tell), parses `digest` into its own type (a digest
//!   that is not well formed fails the whole document instead of the one descriptor, with
//!   berth's error naming it) and takes `size` as `u64`;
//! - it keeps `annotations` in a `HashMap`, so a document it writes has its annotations in
//!   random order — the manifest an archive import builds must have containerd's exact
//!   bytes to get containerd's digest; ours is a `BTreeMap` in Go's field order;
//! - its `ImageManifest`/`ImageIndex` require `schemaVersion` and its `ImageConfiguration`
//!   requires `architecture`, `os` and `rootfs`, where berth reads what is there (pull
//!   reports schema versions itself; a config without a platform is not checked against
//!   one);
//! - its `MediaType` knows no Docker type (they all become `Other`), so the Docker schema 2
//!   questions (is it a layer, a manifest list) could not be asked of it.
//!
//! [`MediaType`] converts to and from `oci_spec::image::MediaType` (by its string) for code
//! that works with oci-spec's types. Unknown fields of a parsed document are not kept: berth
//! never writes back a document it read (push sends the stored bytes).

pub mod compression;
pub mod digest;
pub mod document;
pub mod labels;
pub mod layout;
pub mod media;
pub mod platform;

pub use compression::Compression;
pub use digest::{chain_ids, sha256_digest};
pub use document::{
    Descriptor, ImageConfig, Index, Manifest, RootFs, parse_index, parse_manifest, sniff,
    sniff_media_type,
};
pub use labels::{
    DISTRIBUTION_SOURCE_PREFIX, GC_REF_CONTENT_PREFIX, GC_REF_SNAPSHOT_PREFIX, UNCOMPRESSED_LABEL,
    append_source, child_gc_labels,
};
pub use layout::{
    ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, INDEX_FILE, LAYOUT_FILE, LAYOUT_VERSION, OciLayout,
};
pub use media::*;
pub use platform::{
    Platform, UNKNOWN_PLATFORM_RANK, best_match, host_platform, match_rank, matches_strict,
    normalize, parse_platform,
};
