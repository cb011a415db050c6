//! Image archives: import a tar of images into the content store and the image records, and
//! export images as one tar that both OCI and Docker tools read.
//!
//! ```text
//! archive.tar                     (plain, or gzip-compressed on import)
//! ├── blobs/sha256/<hex>          every blob, once, whatever the number of images using it
//! ├── index.json                  OCI: one descriptor per image, named by the annotations
//! │                               io.containerd.image.name (full name) and
//! │                               org.opencontainers.image.ref.name (the tag)
//! ├── manifest.json               Docker `save`: [{"Config","RepoTags","Layers"}]
//! └── oci-layout                  {"imageLayoutVersion":"1.0.0"}
//! ```
//!
//! [`Archives::import`] reads either format, preferring the OCI layout when an archive has
//! both (as containerd does):
//!
//! - **OCI image layout.** Every `blobs/<alg>/<hex>` file is written through the content
//!   store's writer with its digest as the expected one, so each is verified on commit.
//!   Each `index.json` entry becomes an image whose target is that entry's descriptor. The
//!   tree under it is walked: manifests must have their config and every layer; an index
//!   needs only the children the archive (or the namespace) holds — `ctr export` and
//!   single-platform pulls leave the other platforms out — or, with
//!   [`ImportOptions::platform`], exactly that platform's children.
//! - **Docker `save`.** The config and layer files named by `manifest.json` are stored
//!   (other files, such as `<id>/json` and `repositories`, are ignored); a Docker schema 2
//!   manifest is built for each entry exactly as containerd's importer builds it (same JSON
//!   bytes, so the same digest), and each `RepoTags` entry, normalised (`busybox:latest` →
//!   `docker.io/library/busybox:latest`), becomes an image. Layers are stored as they are —
//!   uncompressed `application/vnd.docker.image.rootfs.diff.tar` — unless
//!   [`ImportOptions::compress_blobs`] asks for gzip (`ctr import --compress-blobs`).
//!
//! containerd's garbage-collection labels (`containerd.io/gc.ref.content.m.<i>` on indexes,
//! `.config` and `.l.<i>` on manifests) are set on what was walked. Nothing partial becomes
//! visible as an image: the archive is read twice (first its listing and metadata files, then
//! the blobs), every blob is verified and every reference checked before the first image
//! record is written. Blobs already committed when a later one fails stay in the content
//! store: they are verified and content-addressed, and only a lease or an image keeps them
//! from the garbage collector — pass [`ImportOptions::lease`] to hold them while importing.
//!
//! [`Archives::export`] writes the tar above to a temporary file next to the destination,
//! fsyncs it and renames it into place. Blob bytes are hashed while copied, so a damaged
//! blob file fails the export instead of producing a bad archive.
//!
//! The files here, one job each: this one holds the API and what both directions share
//! (the content store reads, the image records); [`oci_import`] and [`docker_import`] read
//! the two formats; [`ingest`] streams an archive's files into the content store;
//! [`walk`] checks the tree under an image (both directions); [`export`] builds and writes
//! an archive; [`tar_stream`] reads the tar (listing, then the wanted files). The documents
//! themselves (descriptors, manifests, the OCI layout) are `berth_oci::image`'s.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

use berth_oci::image::{self as oci, INDEX_FILE, LAYOUT_FILE, MediaType};

use crate::content::{ContentStore, Info, Writer};
use crate::error::{Error, Result};
use crate::images::{Descriptor, Image, Images};

mod docker_import;
mod export;
mod ingest;
mod oci_import;
mod tar_stream;
mod walk;

#[cfg(test)]
mod tests;

use docker_import::DockerEntry;
use oci_import::parse_layout;
use tar_stream::list_archive;

/// The Docker `save` archive's list of images.
const DOCKER_MANIFEST_FILE: &str = "manifest.json";

/// The largest JSON document read from an archive or the content store (containerd's
/// importer limit).
const MAX_JSON: u64 = 20 << 20;
/// How much of a blob travels from the tar reader to the content writer at a time.
const CHUNK: usize = 1 << 20;

/// How to import an archive.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The repository for entries named only by a tag (`org.opencontainers.image.ref.name`
    /// = `1.0` becomes `<base_name>:1.0`), and for entries with no name at all
    /// (`<base_name>@<digest>`); `ctr import --base-name`. Without it such entries are an
    /// error.
    pub base_name: Option<String>,
    /// `os/arch[/variant]`: only this platform's manifests of an index are required and
    /// referenced. Default: whatever the archive holds.
    pub platform: Option<String>,
    /// Labels to set on the image records created or updated.
    pub labels: BTreeMap<String, String>,
    /// Gzip the uncompressed layers of a Docker-format archive
    /// (`ctr import --compress-blobs`); the stored blob gets `containerd.io/uncompressed`.
    pub compress_blobs: bool,
    /// A lease to add every committed blob to, so the garbage collector keeps it until the
    /// images exist.
    pub lease: Option<String>,
}

/// How to export images.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// `os/arch[/variant]`: from an index, export only this platform's manifests (the index
    /// blob itself goes as it is). Default: every manifest the namespace holds.
    pub platform: Option<String>,
    /// Leave out the Docker-compatible `manifest.json`.
    pub skip_docker_manifest: bool,
}

/// Import and export of image archives over the content store and the images core.
#[derive(Clone)]
pub struct Archives {
    content: ContentStore,
    images: Images,
}

impl Archives {
    pub fn new(content: ContentStore, images: Images) -> Self {
        Archives { content, images }
    }

    /// Imports every image of the archive at `archive` into `namespace` and returns the
    /// image records, created or updated (an existing image of the same name is pointed at
    /// the new target, as `ctr import` does).
    ///
    /// Errors: a file that is not a (gzip) tar, or is truncated, and an archive in neither
    /// format are `InvalidArgument`; so is an index, manifest or `manifest.json` that
    /// references a blob neither in the archive nor in the namespace. A blob whose bytes do
    /// not match its digest is `FailedPrecondition` (from the content store). No image record
    /// is written unless every blob verified and every reference resolved.
    #[tracing::instrument(skip(self, opts))]
    pub async fn import(
        &self,
        namespace: &str,
        archive: &Path,
        opts: ImportOptions,
    ) -> Result<Vec<Image>> {
        let platform = opts
            .platform
            .as_deref()
            .map(oci::parse_platform)
            .transpose()?;
        crate::labels::validate_all(&opts.labels).map_err(|e| e.context("image labels"))?;
        let path = archive.to_path_buf();
        let listing = blocking(move || list_archive(&path)).await?;
        let imported = if let Some(layout) = &listing.layout {
            let entries = parse_layout(archive, layout, listing.index.as_deref())?;
            self.import_oci(
                namespace,
                archive,
                &listing,
                entries,
                platform.as_ref(),
                &opts,
            )
            .await?
        } else if let Some(manifest) = &listing.docker_manifest {
            let entries: Vec<DockerEntry> = serde_json::from_slice(manifest).map_err(|e| {
                Error::invalid(format!(
                    "archive {}: {DOCKER_MANIFEST_FILE} is not valid: {e}",
                    archive.display()
                ))
            })?;
            self.import_docker(namespace, archive, &listing, entries, &opts)
                .await?
        } else {
            return Err(Error::invalid(format!(
                "archive {}: unrecognized image format: neither an OCI layout ({LAYOUT_FILE}) \
                 nor a Docker archive ({DOCKER_MANIFEST_FILE})",
                archive.display()
            )));
        };
        for (digest, labels) in imported.labels {
            let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
            let info = Info {
                digest,
                labels,
                ..Default::default()
            };
            self.content.update(namespace, info, paths).await?;
        }
        let images = self
            .record_images(namespace, imported.images, &opts.labels)
            .await?;
        tracing::info!(images = images.len(), "imported image archive");
        Ok(images)
    }

    /// Creates each image, or points the existing one at the new target (`ctr import`).
    async fn record_images(
        &self,
        namespace: &str,
        images: Vec<(String, Descriptor)>,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<Image>> {
        // A later entry of the same name wins, as a sequence of updates would.
        let mut order: Vec<String> = Vec::new();
        let mut by_name: HashMap<String, Descriptor> = HashMap::new();
        for (name, target) in images {
            if by_name.insert(name.clone(), target).is_none() {
                order.push(name);
            }
        }
        let mut paths = vec!["target".to_string(), "annotations".to_string()];
        if !labels.is_empty() {
            paths.push("labels".into());
        }
        let mut out = Vec::new();
        for name in order {
            let image = Image {
                target: by_name.remove(&name),
                name,
                labels: labels.clone(),
                ..Default::default()
            };
            out.push(self.upsert_image(namespace, image, &paths).await?);
        }
        Ok(out)
    }

    /// Updates the image, or creates it if there is none (retrying as an update when
    /// someone else created it meanwhile).
    async fn upsert_image(&self, namespace: &str, image: Image, paths: &[String]) -> Result<Image> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self
                .images
                .update(namespace, image.clone(), paths.to_vec())
                .await
            {
                Ok(i) => return Ok(i),
                Err(e) if !e.is_not_found() => return Err(e),
                Err(_) => {}
            }
            match self.images.create(namespace, image.clone()).await {
                Ok(i) => return Ok(i),
                // Created by someone else meanwhile: update it instead.
                Err(Error::AlreadyExists(_)) if tries < 3 => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether the namespace holds the blob.
    async fn has(&self, namespace: &str, digest: &str) -> Result<bool> {
        match self.content.info(namespace, digest).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads a JSON blob (an index, a manifest) of the namespace, at most [`MAX_JSON`].
    async fn read_json(&self, namespace: &str, digest: &str) -> Result<Vec<u8>> {
        let (file, size) = self.content.open_blob(namespace, digest).await?;
        if u64::try_from(size).unwrap_or(u64::MAX) > MAX_JSON {
            return Err(Error::invalid(format!(
                "{digest}: {size} bytes is too large for a manifest or index (at most {MAX_JSON})"
            )));
        }
        let path = self.content.blob_path(digest)?;
        blocking(move || {
            let mut data = Vec::new();
            file.take(MAX_JSON)
                .read_to_end(&mut data)
                .map_err(|e| Error::io("read blob", &path, e))?;
            Ok(data)
        })
        .await
    }

    /// The media type of a descriptor that did not state one, from the document itself.
    async fn sniff(&self, namespace: &str, digest: &str) -> Result<MediaType> {
        let info = self.content.info(namespace, digest).await?;
        if u64::try_from(info.size).unwrap_or(u64::MAX) > MAX_JSON {
            return Ok(MediaType::default());
        }
        let data = self.read_json(namespace, digest).await?;
        Ok(oci::sniff_media_type(&data))
    }

    /// Stores an in-memory blob; one the namespace already has is fine.
    async fn put_blob(
        &self,
        namespace: &str,
        data: Vec<u8>,
        lease: Option<String>,
    ) -> Result<(String, i64)> {
        let digest = oci::sha256_digest(&data);
        let size = i64::try_from(data.len()).map_err(|_| Error::invalid("blob too large"))?;
        let reference = format!("import-{}-{digest}", uuid::Uuid::new_v4().simple());
        let writer = open_writer(
            &self.content,
            namespace,
            &reference,
            size,
            &digest,
            lease.as_deref(),
        )
        .await?;
        let Some(mut w) = writer else {
            return Ok((digest, size));
        };
        w.write(data).await?;
        match w.commit(size, &digest, BTreeMap::new(), lease).await {
            Ok(_) | Err(Error::AlreadyExists(_)) => Ok((digest, size)),
            Err(e) => Err(e),
        }
    }
}

/// Opens a content writer for a blob the import stores, at offset 0. `None` when the
/// namespace has the blob already: it is held in the import's lease instead (or, if a
/// collection took it meanwhile, written after all).
async fn open_writer(
    content: &ContentStore,
    namespace: &str,
    reference: &str,
    size: i64,
    digest: &str,
    lease: Option<&str>,
) -> Result<Option<Writer>> {
    loop {
        match content
            .writer(namespace, reference, size, digest, lease)
            .await
        {
            Ok(mut w) => {
                if w.offset() != 0 {
                    w.truncate().await?;
                }
                return Ok(Some(w));
            }
            Err(Error::AlreadyExists(_)) => match lease {
                Some(l) if !content.hold(namespace, l, digest).await? => {}
                _ => return Ok(None),
            },
            Err(e) => return Err(e),
        }
    }
}

/// Where a blob goes in an archive: `blobs/<alg>/<hex>` of a valid digest.
fn blob_tar_path(digest: &str) -> Result<String> {
    crate::digest::validate(digest)?;
    oci::layout::blob_path(digest)
        .ok_or_else(|| Error::invalid(format!("{digest:?} is not a digest")))
}

/// What an import produced before the image records: names with targets, and the GC labels
/// to set on content.
struct Imported {
    images: Vec<(String, Descriptor)>,
    labels: Vec<(String, BTreeMap<String, String>)>,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("archive task: {e}")))?
}
