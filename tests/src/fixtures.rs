//! Fixtures for the content, image and registry tests, built locally (no network):
//!
//! - **Images** written as OCI image layouts with deterministic layers (sorted entries,
//!   fixed mtimes and owners, gzip without timestamp), so digests are the same on every
//!   run: [`busybox_image`] (one layer, Debian's busybox-static with hard-linked applets)
//!   and [`multilayer_image`] (five layers, gzip and uncompressed, whiteouts, an opaque
//!   directory, hard links, symlinks, a big pseudo-random file, 1300 small files). Each
//!   returns a [`BuiltImage`] with the manifest, config and layer descriptors, diff IDs,
//!   chain IDs, sizes, and a [`RootfsExpect`] that checks an unpacked root filesystem.
//! - **Images of your own layers**: [`custom_image`] over [`LayerSpec`]s of [`Entry`]s
//!   (files, directories, symlinks, hard links, whiteouts, opaque markers).
//! - **Other formats of the same image**: [`pack_layout`] (OCI archive tar) and
//!   [`docker_archive`] (`docker save` format).
//! - **A file server**: [`FileServer`] serves files over HTTP on 127.0.0.1 (for `ADD <url>`).
//! - **A registry**: [`Registry`] runs Debian's `docker-registry` on 127.0.0.1 on a free
//!   port, optionally with htpasswd basic auth, and pushes layouts into it with `skopeo`.
//!
//! Gzip layers use the default level (6); there is no zstd layer, because no zstd crate is
//! in the workspace's Cargo.lock.
//!
//! Needs Debian's `busybox-static`, `docker-registry`, `skopeo` and `apache2-utils`
//! (htpasswd); the unit tests also use `umoci` and containerd's `ctr` (an independent
//! unpacker and the reference), and run as root (chroot, mount). A missing program fails
//! loudly.

mod files;
mod images;
mod layout;
mod registry;
mod rootfs;
#[cfg(test)]
mod tests;

pub use files::{FileServer, LAST_MODIFIED};
pub use images::{
    BIG_FILE_SEED, BUSYBOX, IMAGE_PATH_ENV, MultilayerImage, busybox_applets, busybox_image,
    busybox_image_with, busybox_layer, host_busybox, multilayer_image,
};
pub use layout::{
    ANNOTATION_REF_NAME, BuiltImage, Compression, Content, Descriptor, Entry, EntryKind,
    FIXED_CREATED, FIXED_MTIME, Layer, LayerSpec, MEDIA_TYPE_CONFIG, MEDIA_TYPE_INDEX,
    MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR, MEDIA_TYPE_MANIFEST, PseudoRandom, blob_path,
    check_layout, custom_image, docker_archive, oci_arch, open_layer, pack_layout, sha256_digest,
    sha256_reader, split_repo_tag,
};
pub use registry::{HttpResponse, Registry, free_port};
pub use rootfs::{Expected, RootfsExpect};

/// The name [`import_busybox`] gives the busybox fixture.
pub const BUSYBOX_REF: &str = "example.com/busybox:latest";

/// Builds the busybox fixture under `work` and imports it as [`BUSYBOX_REF`] with the real
/// `ctr`, run through `ctr` (bound to a daemon and namespace by the caller).
pub fn import_busybox(work: &std::path::Path, ctr: impl Fn(&[&str]) -> std::process::Output) {
    let img = busybox_image(&work.join("layout"), "latest");
    let archive = work.join("busybox.tar");
    pack_layout(&img.layout, &archive);
    crate::ok(
        &ctr(&[
            "images",
            "import",
            "--base-name",
            "example.com/busybox",
            &archive.display().to_string(),
        ]),
        "ctr images import",
    );
}
