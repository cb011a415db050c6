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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use crate::content::{ContentStore, Info, Writer};
use crate::digest;
use crate::error::{Error, Result};
use crate::images::{Descriptor, Image, Images};
use crate::registry::Reference;
use crate::registry::media::{self, Platform, parse_platform};

/// The annotation containerd puts the full image name in.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// The OCI annotation for an image's reference name (by convention only its tag).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

const LAYOUT_FILE: &str = "oci-layout";
const INDEX_FILE: &str = "index.json";
const DOCKER_MANIFEST_FILE: &str = "manifest.json";
const LAYOUT_VERSION: &str = "1.0.0";

use crate::registry::media::{
    DOCKER_CONFIG as MT_DOCKER_CONFIG, DOCKER_LAYER as MT_DOCKER_LAYER,
    DOCKER_LAYER_GZIP as MT_DOCKER_LAYER_GZIP, DOCKER_LAYER_ZSTD as MT_DOCKER_LAYER_ZSTD,
    DOCKER_LIST as MT_DOCKER_LIST, DOCKER_MANIFEST as MT_DOCKER_MANIFEST,
    DOCKER_SCHEMA1 as MT_DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED as MT_DOCKER_SCHEMA1_SIGNED,
    OCI_CONFIG as MT_OCI_CONFIG, OCI_INDEX as MT_OCI_INDEX, OCI_MANIFEST as MT_OCI_MANIFEST,
};

const LABEL_UNCOMPRESSED: &str = "containerd.io/uncompressed";
const LABEL_DISTRIBUTION_SOURCE: &str = "containerd.io/distribution.source.";

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
        let platform = opts.platform.as_deref().map(parse_platform).transpose()?;
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

    /// Writes the images `names` of `namespace` to `out` as one tar: an OCI image layout
    /// plus a Docker `manifest.json` for the images that resolve to one manifest (a manifest
    /// target, or an index of which one image manifest is exported). Every blob reachable
    /// from the targets goes in once. `out` is replaced atomically; on error it is untouched.
    ///
    /// Errors: an unknown image is `NotFound`; a target that is not a manifest or an index,
    /// or a platform no manifest matches, is `InvalidArgument`/`NotFound`; a manifest whose
    /// config or layer the namespace does not hold is `FailedPrecondition`.
    #[tracing::instrument(skip(self, opts))]
    pub async fn export(
        &self,
        namespace: &str,
        names: &[String],
        out: &Path,
        opts: ExportOptions,
    ) -> Result<()> {
        if names.is_empty() {
            return Err(Error::invalid("no images to export"));
        }
        let platform = opts.platform.as_deref().map(parse_platform).transpose()?;
        let mut blobs: BTreeMap<String, (PathBuf, i64)> = BTreeMap::new();
        let mut index = Vec::new();
        let mut docker: Vec<(String, DockerEntry)> = Vec::new();
        let mut seen_names = HashSet::new();
        for name in names {
            if !seen_names.insert(name.as_str()) {
                continue;
            }
            let image = self.images.get(namespace, name).await?;
            let target = JsonDescriptor::from_descriptor(&image.target());
            let target_kind = kind(&target.media_type);
            if !matches!(target_kind, Kind::Index | Kind::Manifest) {
                return Err(Error::invalid(format!(
                    "image {name:?}: only manifests and indexes may be exported, \
                     the target is {:?}",
                    target.media_type
                )));
            }
            let walked = self
                .walk(
                    namespace,
                    &target,
                    platform.as_ref(),
                    &format!("image {name:?}"),
                    Side::Export,
                )
                .await?;
            for (digest, size) in walked.blobs {
                if let std::collections::btree_map::Entry::Vacant(slot) = blobs.entry(digest) {
                    let path = self.content.blob_path(slot.key())?;
                    slot.insert((path, size));
                }
            }

            let mut entry = target.clone();
            let info = self.content.info(namespace, &target.digest).await?;
            for (k, v) in &info.labels {
                if k.starts_with(LABEL_DISTRIBUTION_SOURCE) {
                    entry.annotations.insert(k.clone(), v.clone());
                }
            }
            entry
                .annotations
                .insert(ANNOTATION_IMAGE_NAME.into(), name.clone());
            entry
                .annotations
                .insert(ANNOTATION_REF_NAME.into(), oci_ref_name(name));
            index.push(entry);

            if opts.skip_docker_manifest {
                continue;
            }
            let Some(m) = docker_candidate(&walked.manifests, platform.as_ref()) else {
                tracing::debug!(image = %name, "no single manifest: not in manifest.json");
                continue;
            };
            let tag = repo_tag(name);
            let pos = match docker.iter().position(|(d, _)| *d == m.desc.digest) {
                Some(pos) => pos,
                None => {
                    let entry = DockerEntry {
                        config: blob_tar_path(&m.manifest.config.digest)?,
                        repo_tags: Some(Vec::new()),
                        layers: Some(
                            m.manifest
                                .layers
                                .iter()
                                .map(|l| blob_tar_path(&l.digest))
                                .collect::<Result<_>>()?,
                        ),
                    };
                    docker.push((m.desc.digest.clone(), entry));
                    docker.len() - 1
                }
            };
            if let Some(tag) = tag
                && let Some(tags) = docker[pos].1.repo_tags.as_mut()
                && !tags.contains(&tag)
            {
                tags.push(tag);
            }
        }

        let mut records = vec![
            Record::dir("blobs/"),
            Record::dir("blobs/sha256/"),
            Record::bytes(LAYOUT_FILE, 0o444, to_json(&Layout::default())?),
            Record::bytes(
                INDEX_FILE,
                0o644,
                to_json(&OciIndex {
                    schema_version: 2,
                    media_type: MT_OCI_INDEX,
                    manifests: index,
                })?,
            ),
        ];
        if !docker.is_empty() {
            let entries: Vec<DockerEntry> = docker.into_iter().map(|(_, e)| e).collect();
            records.push(Record::bytes(
                DOCKER_MANIFEST_FILE,
                0o644,
                to_json(&entries)?,
            ));
        }
        let blob_count = blobs.len();
        for (digest, (path, size)) in blobs {
            records.push(Record {
                name: blob_tar_path(&digest)?,
                mode: 0o444,
                body: Body::Blob { path, digest, size },
            });
        }
        let out = out.to_path_buf();
        blocking(move || write_archive(&out, records)).await?;
        tracing::info!(
            images = seen_names.len(),
            blobs = blob_count,
            "exported images"
        );
        Ok(())
    }

    /// Ingests the OCI layout's blobs, then walks and names each `index.json` entry.
    async fn import_oci(
        &self,
        namespace: &str,
        archive: &Path,
        listing: &Listing,
        entries: Vec<JsonDescriptor>,
        platform: Option<&Platform>,
        opts: &ImportOptions,
    ) -> Result<Imported> {
        // Names first: a naming error must not cost a blob write.
        let mut named = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            digest::validate(&entry.digest)
                .map_err(|e| e.context(&format!("{INDEX_FILE} entry {i}")))?;
            let name = oci_entry_name(i, entry, opts.base_name.as_deref())?;
            named.push((name, entry.clone()));
        }
        let mut wanted = HashMap::new();
        for (name, size) in &listing.files {
            let Some(d) = blob_digest(name) else {
                if name.starts_with("blobs/") {
                    tracing::warn!(file = %name, "not a blob path: ignored");
                }
                continue;
            };
            match self.content.info(namespace, &d).await {
                // Already here: not read from the archive, but held in the import's lease
                // (a collection may be about to take it) — or read after all if one just did.
                Ok(info) if u64::try_from(info.size).ok() == Some(*size) => match &opts.lease {
                    Some(l) if !self.content.hold(namespace, l, &d).await? => {}
                    _ => continue,
                },
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
            wanted.insert(
                name.clone(),
                Want {
                    expected: Some(d),
                    compress: false,
                },
            );
        }
        for (i, entry) in entries.iter().enumerate() {
            let in_archive = listing.files.contains_key(&blob_tar_path(&entry.digest)?);
            if !in_archive && !self.has(namespace, &entry.digest).await? {
                return Err(Error::invalid(format!(
                    "archive {}: {INDEX_FILE} entry {i} references {}, which is neither in \
                     the archive nor in namespace {namespace:?}",
                    archive.display(),
                    entry.digest
                )));
            }
        }
        self.ingest(namespace, archive, wanted, opts.lease.clone())
            .await?;

        let mut labels = Vec::new();
        let mut images = Vec::new();
        let mut walked_roots = HashSet::new();
        for (i, (name, entry)) in named.into_iter().enumerate() {
            let mut entry = entry;
            if entry.media_type.is_empty() {
                entry.media_type = self.sniff(namespace, &entry.digest).await?;
            }
            if walked_roots.insert(entry.digest.clone()) {
                let walked = self
                    .walk(
                        namespace,
                        &entry,
                        platform,
                        &format!("archive {}: {INDEX_FILE} entry {i}", archive.display()),
                        Side::Import,
                    )
                    .await?;
                labels.extend(walked.labels);
            }
            if entry.media_type.is_empty() || entry.size <= 0 {
                return Err(Error::invalid(format!(
                    "archive {}: {INDEX_FILE} entry {i} ({}) needs a media type and a size",
                    archive.display(),
                    entry.digest
                )));
            }
            images.push((name, entry.to_descriptor()));
        }
        Ok(Imported { images, labels })
    }

    /// Ingests a Docker `save` archive's configs and layers and builds a schema 2 manifest
    /// for each `manifest.json` entry.
    async fn import_docker(
        &self,
        namespace: &str,
        archive: &Path,
        listing: &Listing,
        entries: Vec<DockerEntry>,
        opts: &ImportOptions,
    ) -> Result<Imported> {
        let where_ = |i: usize| {
            format!(
                "archive {}: {DOCKER_MANIFEST_FILE} entry {i}",
                archive.display()
            )
        };
        if entries.is_empty() {
            return Err(Error::invalid(format!(
                "archive {}: {DOCKER_MANIFEST_FILE} lists no images",
                archive.display()
            )));
        }
        // Resolve every file and name before writing anything.
        struct Planned {
            config: String,
            layers: Vec<String>,
            names: Vec<String>,
        }
        let mut planned = Vec::new();
        let mut wanted: HashMap<String, Want> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            let config = listing.resolve(&e.config).ok_or_else(|| {
                Error::invalid(format!(
                    "{}: config {:?} is not in the archive",
                    where_(i),
                    e.config
                ))
            })?;
            let mut layers = Vec::new();
            for l in e.layers.iter().flatten() {
                layers.push(listing.resolve(l).ok_or_else(|| {
                    Error::invalid(format!("{}: layer {l:?} is not in the archive", where_(i)))
                })?);
            }
            let mut names = Vec::new();
            for tag in e.repo_tags.iter().flatten() {
                let normalized = docker_ref_name(tag)
                    .map_err(|err| err.context(&format!("{}: RepoTag {tag:?}", where_(i))))?;
                names.push(normalized);
            }
            if names.is_empty() && opts.base_name.is_none() {
                return Err(Error::invalid(format!(
                    "{}: image name required: the entry has no RepoTags; give a base name",
                    where_(i)
                )));
            }
            wanted.entry(config.clone()).or_insert(Want {
                expected: blob_digest(&config),
                compress: false,
            });
            for l in &layers {
                wanted.entry(l.clone()).or_insert(Want {
                    expected: blob_digest(l),
                    compress: opts.compress_blobs,
                });
            }
            planned.push(Planned {
                config,
                layers,
                names,
            });
        }
        let stored = self
            .ingest(namespace, archive, wanted, opts.lease.clone())
            .await?;
        let get = |file: &str| {
            stored.get(file).ok_or_else(|| {
                Error::Internal(format!(
                    "archive {}: {file} was not ingested",
                    archive.display()
                ))
            })
        };

        let mut images = Vec::new();
        let mut labels = Vec::new();
        for p in planned {
            let config = get(&p.config)?;
            let config = JsonDescriptor {
                media_type: MT_DOCKER_CONFIG.into(),
                digest: config.digest.clone(),
                size: config.size,
                ..Default::default()
            };
            let mut layers = Vec::new();
            for l in &p.layers {
                let b = get(l)?;
                let media_type = match b.compression {
                    Compression::None => MT_DOCKER_LAYER,
                    Compression::Gzip => MT_DOCKER_LAYER_GZIP,
                    Compression::Zstd => MT_DOCKER_LAYER_ZSTD,
                };
                layers.push(JsonDescriptor {
                    media_type: media_type.into(),
                    digest: b.digest.clone(),
                    size: b.size,
                    ..Default::default()
                });
            }
            let mut children = vec![&config];
            children.extend(layers.iter());
            let gc = gc_labels(&children);
            let manifest = to_json(&DockerManifest {
                schema_version: 2,
                media_type: MT_DOCKER_MANIFEST,
                config: config.clone(),
                layers: layers.clone(),
            })?;
            let (digest, size) = self
                .put_blob(namespace, manifest, opts.lease.clone())
                .await?;
            labels.push((digest.clone(), gc));
            if p.names.is_empty() {
                // Checked above: a base name exists.
                let base = opts.base_name.as_deref().unwrap_or_default();
                images.push((
                    format!("{base}@{digest}"),
                    Descriptor {
                        media_type: MT_DOCKER_MANIFEST.into(),
                        digest: digest.clone(),
                        size,
                        annotations: BTreeMap::new(),
                    },
                ));
            }
            for name in p.names {
                let annotations = BTreeMap::from([
                    (ANNOTATION_IMAGE_NAME.to_string(), name.clone()),
                    (ANNOTATION_REF_NAME.to_string(), oci_ref_name(&name)),
                ]);
                images.push((
                    name,
                    Descriptor {
                        media_type: MT_DOCKER_MANIFEST.into(),
                        digest: digest.clone(),
                        size,
                        annotations,
                    },
                ));
            }
        }
        Ok(Imported { images, labels })
    }

    /// Streams the `wanted` files of the archive into the content store, one writer per
    /// file, verifying each against its expected digest when it has one.
    async fn ingest(
        &self,
        namespace: &str,
        archive: &Path,
        wanted: HashMap<String, Want>,
        lease: Option<String>,
    ) -> Result<HashMap<String, Ingested>> {
        let (tx, mut rx) = mpsc::channel::<Msg>(4);
        let path = archive.to_path_buf();
        let reader = tokio::task::spawn_blocking(move || stream_files(&path, &wanted, &tx));
        let run = uuid::Uuid::new_v4().simple().to_string();
        let mut sink = Ingest {
            content: &self.content,
            namespace,
            archive,
            lease,
            run,
            count: 0,
            current: None,
            done: HashMap::new(),
        };
        let mut failed = None;
        while let Some(msg) = rx.recv().await {
            if let Err(e) = sink.handle(msg).await {
                failed = Some(e);
                break;
            }
        }
        // Stop the reader (if it is still going) and wait for it.
        drop(rx);
        let read = reader
            .await
            .map_err(|e| Error::Internal(format!("archive reader task: {e}")))?;
        let result = match (failed, read) {
            (Some(e), _) | (None, Err(e)) => Err(e),
            (None, Ok(())) => Ok(()),
        };
        if let Err(e) = result {
            sink.abort_current().await;
            return Err(e);
        }
        Ok(sink.done)
    }

    /// Walks the tree under `root`, checking that every blob is in the namespace with the
    /// size its descriptor states, and returns the blobs, the GC labels for each parent and
    /// the image manifests met. Index children: with `platform`, those matching it (or with
    /// no platform) are required; without, those present are taken and at least one must
    /// be. Manifests need their config and every layer.
    async fn walk(
        &self,
        namespace: &str,
        root: &JsonDescriptor,
        platform: Option<&Platform>,
        what: &str,
        side: Side,
    ) -> Result<Walked> {
        let missing = match side {
            Side::Import => format!("neither in the archive nor in namespace {namespace:?}"),
            Side::Export => format!("not in namespace {namespace:?}"),
        };
        let absent = |msg: String| match side {
            Side::Import => Error::invalid(msg),
            Side::Export => Error::precondition(msg),
        };
        let mut walked = Walked::default();
        let mut seen = HashSet::new();
        let mut stack = vec![(root.clone(), what.to_string(), false)];
        while let Some((desc, parent, leaf)) = stack.pop() {
            if !seen.insert(desc.digest.clone()) {
                continue;
            }
            digest::validate(&desc.digest).map_err(|e| e.context(&parent))?;
            let info = match self.content.info(namespace, &desc.digest).await {
                Ok(info) => info,
                Err(e) if e.is_not_found() => {
                    let mt = if desc.media_type.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", desc.media_type)
                    };
                    return Err(absent(format!(
                        "{parent} references {}{mt}, which is {missing}",
                        desc.digest
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
            walked.blobs.push((desc.digest.clone(), info.size));
            if leaf {
                continue;
            }
            let media_type = if desc.media_type.is_empty() {
                self.sniff(namespace, &desc.digest).await?
            } else {
                desc.media_type.clone()
            };
            match kind(&media_type) {
                Kind::Index => {
                    let data = self.read_json(namespace, &desc.digest).await?;
                    let index: JsonIndex = serde_json::from_slice(&data).map_err(|e| {
                        Error::invalid(format!("index {} is not valid: {e}", desc.digest))
                    })?;
                    let mut chosen = Vec::new();
                    for child in &index.manifests {
                        match (platform, &child.platform) {
                            (Some(want), Some(have)) if !media::matches_strict(want, have) => {
                                continue;
                            }
                            (Some(_), _) => chosen.push(child),
                            (None, _) => {
                                if self.has(namespace, &child.digest).await? {
                                    chosen.push(child);
                                } else {
                                    tracing::debug!(
                                        index = %desc.digest,
                                        manifest = %child.digest,
                                        "manifest not present: left out"
                                    );
                                }
                            }
                        }
                    }
                    if chosen.is_empty() && !index.manifests.is_empty() {
                        return Err(match platform {
                            Some(p) => Error::not_found(format!(
                                "{parent}: index {} has no manifest for platform {p}",
                                desc.digest
                            )),
                            None => absent(format!(
                                "{parent}: index {} has none of its {} manifests: they are \
                                 {missing}",
                                desc.digest,
                                index.manifests.len()
                            )),
                        });
                    }
                    walked
                        .labels
                        .push((desc.digest.clone(), gc_labels(&chosen)));
                    let context = format!("index {}", desc.digest);
                    for child in chosen.into_iter().rev() {
                        stack.push((child.clone(), context.clone(), false));
                    }
                }
                Kind::Manifest => {
                    let data = self.read_json(namespace, &desc.digest).await?;
                    let manifest: JsonManifest = serde_json::from_slice(&data).map_err(|e| {
                        Error::invalid(format!("manifest {} is not valid: {e}", desc.digest))
                    })?;
                    let mut children = vec![&manifest.config];
                    children.extend(manifest.layers.iter());
                    walked
                        .labels
                        .push((desc.digest.clone(), gc_labels(&children)));
                    let context = format!("manifest {}", desc.digest);
                    for child in children.into_iter().rev() {
                        // Config and layers are leaves: checked for presence and size only.
                        stack.push((child.clone(), context.clone(), true));
                    }
                    walked.manifests.push(WalkedManifest {
                        desc: JsonDescriptor {
                            media_type,
                            ..desc.clone()
                        },
                        manifest,
                    });
                }
                Kind::Schema1 => {
                    return Err(Error::precondition(format!(
                        "{parent}: {} is a Docker schema 1 manifest, which is not supported",
                        desc.digest
                    )));
                }
                Kind::Other => {}
            }
        }
        Ok(walked)
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
            let target = by_name.remove(&name);
            let image = Image {
                name,
                labels: labels.clone(),
                target,
                ..Default::default()
            };
            let mut tries = 0;
            let recorded = loop {
                tries += 1;
                match self
                    .images
                    .update(namespace, image.clone(), paths.clone())
                    .await
                {
                    Ok(i) => break i,
                    Err(e) if !e.is_not_found() => return Err(e),
                    Err(_) => {}
                }
                match self.images.create(namespace, image.clone()).await {
                    Ok(i) => break i,
                    // Created by someone else meanwhile: update it instead.
                    Err(Error::AlreadyExists(_)) if tries < 3 => {}
                    Err(e) => return Err(e),
                }
            };
            out.push(recorded);
        }
        Ok(out)
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
    async fn sniff(&self, namespace: &str, digest: &str) -> Result<String> {
        let info = self.content.info(namespace, digest).await?;
        if u64::try_from(info.size).unwrap_or(u64::MAX) > MAX_JSON {
            return Ok(String::new());
        }
        let data = self.read_json(namespace, digest).await?;
        let Ok(doc) = serde_json::from_slice::<Sniff>(&data) else {
            return Ok(String::new());
        };
        Ok(match doc {
            Sniff { media_type, .. } if !media_type.is_empty() => media_type,
            Sniff {
                manifests: Some(_), ..
            } => MT_OCI_INDEX.into(),
            Sniff {
                config: Some(_), ..
            } => MT_OCI_MANIFEST.into(),
            _ => String::new(),
        })
    }

    /// Stores an in-memory blob; one the namespace already has is fine.
    async fn put_blob(
        &self,
        namespace: &str,
        data: Vec<u8>,
        lease: Option<String>,
    ) -> Result<(String, i64)> {
        let digest = sha256_digest(&data);
        let size = i64::try_from(data.len()).map_err(|_| Error::invalid("blob too large"))?;
        let reference = format!("import-{}-{digest}", uuid::Uuid::new_v4().simple());
        let mut w = loop {
            match self
                .content
                .writer(namespace, &reference, size, &digest, lease.as_deref())
                .await
            {
                Ok(w) => break w,
                // Already here: held in the lease (or written again if just collected).
                Err(Error::AlreadyExists(_)) => match &lease {
                    Some(l) if !self.content.hold(namespace, l, &digest).await? => {}
                    _ => return Ok((digest, size)),
                },
                Err(e) => return Err(e),
            }
        };
        if w.offset() != 0 {
            w.truncate().await?;
        }
        w.write(data).await?;
        match w.commit(size, &digest, BTreeMap::new(), lease).await {
            Ok(_) | Err(Error::AlreadyExists(_)) => Ok((digest, size)),
            Err(e) => Err(e),
        }
    }
}

/// Which way a walk goes: what a missing blob means differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// A missing blob is a bad archive (InvalidArgument).
    Import,
    /// A missing blob is content the namespace lost (FailedPrecondition).
    Export,
}

/// What an import produced before the image records: names with targets, and the GC labels
/// to set on content.
struct Imported {
    images: Vec<(String, Descriptor)>,
    labels: Vec<(String, BTreeMap<String, String>)>,
}

#[derive(Default)]
struct Walked {
    blobs: Vec<(String, i64)>,
    labels: Vec<(String, BTreeMap<String, String>)>,
    manifests: Vec<WalkedManifest>,
}

struct WalkedManifest {
    /// The descriptor that pointed at the manifest (with its platform, from an index).
    desc: JsonDescriptor,
    manifest: JsonManifest,
}

/// The manifest of an exported image that `manifest.json` describes: the image's own
/// manifest, or from an index the best one for `platform`, or the only image manifest.
fn docker_candidate<'a>(
    manifests: &'a [WalkedManifest],
    platform: Option<&Platform>,
) -> Option<&'a WalkedManifest> {
    let images: Vec<&WalkedManifest> = manifests
        .iter()
        .filter(|m| {
            matches!(
                m.manifest.config.media_type.as_str(),
                MT_DOCKER_CONFIG | MT_OCI_CONFIG
            ) && m
                .desc
                .annotations
                .get("vnd.docker.reference.type")
                .is_none_or(|t| t != "attestation-manifest")
        })
        .collect();
    match platform {
        Some(want) => images.into_iter().min_by_key(|m| match &m.desc.platform {
            Some(have) if media::normalize(have.clone()) == *want => 0,
            Some(_) => 1,
            None => 2,
        }),
        None if images.len() == 1 => images.into_iter().next(),
        None => None,
    }
}

// ---------------------------------------------------------------------------------------
// Reading the archive (blocking pool)
// ---------------------------------------------------------------------------------------

/// The files of an archive, and its metadata documents.
#[derive(Debug, Default)]
struct Listing {
    /// Regular files (cleaned path) and their sizes.
    files: HashMap<String, u64>,
    /// Symbolic and hard links (cleaned path) and the file they point at (cleaned).
    links: HashMap<String, String>,
    layout: Option<Vec<u8>>,
    index: Option<Vec<u8>>,
    docker_manifest: Option<Vec<u8>>,
}

impl Listing {
    /// The regular file a path names, following links (Docker `save` links repeated
    /// layers to the first copy).
    fn resolve(&self, name: &str) -> Option<String> {
        let mut name = clean_path(name);
        for _ in 0..16 {
            if self.files.contains_key(&name) {
                return Some(name);
            }
            name = self.links.get(&name)?.clone();
        }
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    File,
    Symlink,
    HardLink,
    Other,
}

/// What `walk_tar` tells its visitor about an entry.
struct EntryHead {
    name: String,
    kind: EntryKind,
    size: u64,
    link: Option<String>,
}

fn bad_archive(archive: &Path, e: impl std::fmt::Display) -> Error {
    Error::invalid(format!(
        "archive {}: not a valid tar archive, or truncated: {e}",
        archive.display()
    ))
}

/// Calls `visit` for every entry of the (plain or gzip) tar at `archive`. A plain tar is
/// read with seeks over the data the visitor does not read.
fn walk_tar(
    archive: &Path,
    visit: &mut dyn FnMut(&EntryHead, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let mut file = File::open(archive).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::not_found(format!("archive {}", archive.display())),
        _ => Error::io("open archive", archive, e),
    })?;
    let mut magic = [0u8; 4];
    let n = read_full(&mut file, &mut magic).map_err(|e| Error::io("read archive", archive, e))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io("seek archive", archive, e))?;
    match detect_compression(&magic[..n]) {
        Compression::Gzip => {
            let mut tar = tar::Archive::new(MultiGzDecoder::new(BufReader::new(file)));
            let entries = tar.entries().map_err(|e| bad_archive(archive, e))?;
            visit_entries(archive, entries, None, visit)
        }
        Compression::Zstd => Err(Error::invalid(format!(
            "archive {}: zstd-compressed archives are not supported; decompress it first",
            archive.display()
        ))),
        Compression::None => {
            let len = file
                .metadata()
                .map_err(|e| Error::io("stat archive", archive, e))?
                .len();
            let mut tar = tar::Archive::new(file);
            let entries = tar
                .entries_with_seek()
                .map_err(|e| bad_archive(archive, e))?;
            visit_entries(archive, entries, Some(len), visit)
        }
    }
}

fn visit_entries<R: Read>(
    archive: &Path,
    entries: tar::Entries<'_, R>,
    file_len: Option<u64>,
    visit: &mut dyn FnMut(&EntryHead, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    for entry in entries {
        let mut entry = entry.map_err(|e| bad_archive(archive, e))?;
        let name = clean_path(&String::from_utf8_lossy(&entry.path_bytes()));
        let stored = entry
            .header()
            .entry_size()
            .map_err(|e| bad_archive(archive, e))?;
        // Seeking past the data of the last entries of a cut-off file does not fail. Like
        // Go's archive/tar, the padding to the next block must be there too; the end marker
        // (two zero blocks) may be missing.
        let padded = stored.div_ceil(512).saturating_mul(512);
        if let Some(len) = file_len
            && entry.raw_file_position().saturating_add(padded) > len
        {
            return Err(Error::invalid(format!(
                "archive {} is truncated: {name} ({stored} bytes) ends at byte {}, \
                 the file has {len}",
                archive.display(),
                entry.raw_file_position().saturating_add(padded)
            )));
        }
        let entry_type = entry.header().entry_type();
        let kind = if entry_type.is_file() {
            EntryKind::File
        } else if entry_type.is_symlink() {
            EntryKind::Symlink
        } else if entry_type.is_hard_link() {
            EntryKind::HardLink
        } else {
            EntryKind::Other
        };
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        let head = EntryHead {
            name,
            kind,
            size: entry.size(),
            link,
        };
        visit(&head, &mut entry)?;
    }
    Ok(())
}

/// First pass: the listing, and the contents of the metadata files.
fn list_archive(archive: &Path) -> Result<Listing> {
    let mut listing = Listing::default();
    walk_tar(archive, &mut |head, data| {
        match head.kind {
            EntryKind::File => {}
            EntryKind::Symlink | EntryKind::HardLink => {
                if let Some(link) = &head.link {
                    let target = if head.kind == EntryKind::Symlink {
                        let dir = head.name.rsplit_once('/').map_or("", |(d, _)| d);
                        clean_path(&format!("{dir}/{link}"))
                    } else {
                        clean_path(link)
                    };
                    listing.links.insert(head.name.clone(), target);
                }
                return Ok(());
            }
            EntryKind::Other => return Ok(()),
        }
        let slot = match head.name.as_str() {
            LAYOUT_FILE => Some(&mut listing.layout),
            INDEX_FILE => Some(&mut listing.index),
            DOCKER_MANIFEST_FILE => Some(&mut listing.docker_manifest),
            _ => None,
        };
        if let Some(slot) = slot {
            if head.size > MAX_JSON {
                return Err(Error::invalid(format!(
                    "archive {}: {} is {} bytes, more than the {MAX_JSON} allowed",
                    archive.display(),
                    head.name,
                    head.size
                )));
            }
            let mut buf = Vec::new();
            data.take(MAX_JSON)
                .read_to_end(&mut buf)
                .map_err(|e| bad_archive(archive, e))?;
            if buf.len() as u64 != head.size {
                return Err(truncated(archive, &head.name, buf.len() as u64, head.size));
            }
            *slot = Some(buf);
        }
        listing.files.insert(head.name.clone(), head.size);
        Ok(())
    })?;
    Ok(listing)
}

fn truncated(archive: &Path, name: &str, got: u64, want: u64) -> Error {
    Error::invalid(format!(
        "archive {} is truncated: {name} has {got} of its {want} bytes",
        archive.display()
    ))
}

/// A file the second pass must store.
#[derive(Debug, Clone)]
struct Want {
    /// The digest the file must have (an OCI `blobs/<alg>/<hex>` path).
    expected: Option<String>,
    /// Gzip it if it is not compressed (a Docker layer with `compress_blobs`).
    compress: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

/// How a member starting with `head` is compressed (by its magic, as the layer applier
/// tells).
fn detect_compression(head: &[u8]) -> Compression {
    match berth_snapshotter::Compression::detect(head) {
        berth_snapshotter::Compression::Gzip => Compression::Gzip,
        berth_snapshotter::Compression::Zstd => Compression::Zstd,
        _ => Compression::None,
    }
}

/// From the archive reader to the content writer.
enum Msg {
    Begin {
        name: String,
        /// Bytes that will follow; `None` when compressed on the way.
        size: Option<u64>,
        expected: Option<String>,
        /// Of the stored bytes.
        compression: Compression,
    },
    Data(Vec<u8>),
    End {
        /// The digest of the uncompressed bytes, when compressed on the way.
        uncompressed: Option<String>,
    },
}

/// Second pass: sends every wanted file through the channel.
fn stream_files(
    archive: &Path,
    wanted: &HashMap<String, Want>,
    tx: &mpsc::Sender<Msg>,
) -> Result<()> {
    if wanted.is_empty() {
        return Ok(());
    }
    let send = |msg: Msg| {
        tx.blocking_send(msg)
            .map_err(|_| Error::Internal("import: the content writer stopped".into()))
    };
    walk_tar(archive, &mut |head, data| {
        if head.kind != EntryKind::File {
            return Ok(());
        }
        let Some(want) = wanted.get(&head.name) else {
            return Ok(());
        };
        let read_err = |e: io::Error| {
            Error::invalid(format!(
                "archive {}: reading {}: {e}",
                archive.display(),
                head.name
            ))
        };
        let mut first = vec![0u8; CHUNK];
        let n = read_full(data, &mut first).map_err(read_err)?;
        first.truncate(n);
        let found = detect_compression(&first);
        let mut count = n as u64;
        if want.compress && found == Compression::None {
            send(Msg::Begin {
                name: head.name.clone(),
                size: None,
                expected: None,
                compression: Compression::Gzip,
            })?;
            let mut hasher = Sha256::new();
            hasher.update(&first);
            let mut gz = GzEncoder::new(ChunkSink::new(tx), flate2::Compression::default());
            let write_err = |e: io::Error| Error::Internal(format!("import: compressing: {e}"));
            gz.write_all(&first).map_err(write_err)?;
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = read_full(data, &mut buf).map_err(read_err)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                gz.write_all(&buf[..n]).map_err(write_err)?;
                count += n as u64;
            }
            if count != head.size {
                return Err(truncated(archive, &head.name, count, head.size));
            }
            let uncompressed = format!("sha256:{}", hex::encode(hasher.finalize()));
            if let Some(expected) = &want.expected
                && *expected != uncompressed
            {
                return Err(Error::precondition(format!(
                    "archive {}: {}: unexpected digest {uncompressed}, expected {expected}",
                    archive.display(),
                    head.name
                )));
            }
            let sink = gz.finish().map_err(write_err)?;
            sink.finish()?;
            send(Msg::End {
                uncompressed: Some(uncompressed),
            })
        } else {
            send(Msg::Begin {
                name: head.name.clone(),
                size: Some(head.size),
                expected: want.expected.clone(),
                compression: found,
            })?;
            if n > 0 {
                send(Msg::Data(first))?;
            }
            loop {
                let mut buf = vec![0u8; CHUNK];
                let n = read_full(data, &mut buf).map_err(read_err)?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                count += n as u64;
                send(Msg::Data(buf))?;
            }
            if count != head.size {
                return Err(truncated(archive, &head.name, count, head.size));
            }
            send(Msg::End { uncompressed: None })
        }
    })
}

/// Collects compressed output into chunks for the channel.
struct ChunkSink<'a> {
    tx: &'a mpsc::Sender<Msg>,
    buf: Vec<u8>,
}

impl<'a> ChunkSink<'a> {
    fn new(tx: &'a mpsc::Sender<Msg>) -> Self {
        ChunkSink {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn finish(self) -> Result<()> {
        if !self.buf.is_empty() {
            self.tx
                .blocking_send(Msg::Data(self.buf))
                .map_err(|_| Error::Internal("import: the content writer stopped".into()))?;
        }
        Ok(())
    }
}

impl Write for ChunkSink<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
            self.tx
                .blocking_send(Msg::Data(chunk))
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "content writer stopped"))?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads until `buf` is full or the reader is exhausted.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(m) => n += m,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A file stored by the second pass.
#[derive(Debug, Clone)]
struct Ingested {
    digest: String,
    size: i64,
    compression: Compression,
}

/// The content-store side of the second pass.
struct Ingest<'a> {
    content: &'a ContentStore,
    namespace: &'a str,
    archive: &'a Path,
    lease: Option<String>,
    run: String,
    count: usize,
    current: Option<Current>,
    done: HashMap<String, Ingested>,
}

struct Current {
    name: String,
    reference: String,
    /// `None` when the namespace already has the expected blob: the bytes are skipped.
    writer: Option<Writer>,
    size: Option<u64>,
    expected: Option<String>,
    compression: Compression,
}

impl Ingest<'_> {
    fn context(&self, name: &str) -> String {
        format!("archive {}: {name}", self.archive.display())
    }

    async fn handle(&mut self, msg: Msg) -> Result<()> {
        match msg {
            Msg::Begin {
                name,
                size,
                expected,
                compression,
            } => {
                self.count += 1;
                let reference = format!("import-{}-{}", self.run, self.count);
                let total = match size {
                    Some(s) => i64::try_from(s).map_err(|_| Error::invalid("file too large"))?,
                    None => 0,
                };
                let exp = expected.as_deref().unwrap_or("");
                let writer = loop {
                    match self
                        .content
                        .writer(
                            self.namespace,
                            &reference,
                            total,
                            exp,
                            self.lease.as_deref(),
                        )
                        .await
                    {
                        Ok(mut w) => {
                            if w.offset() != 0 {
                                w.truncate().await?;
                            }
                            break Some(w);
                        }
                        // Already here: held in the lease (or, if a collection took it
                        // meanwhile, written after all).
                        Err(Error::AlreadyExists(_)) => match &self.lease {
                            Some(l) if !self.content.hold(self.namespace, l, exp).await? => {}
                            _ => break None,
                        },
                        Err(e) => return Err(e.context(&self.context(&name))),
                    }
                };
                self.current = Some(Current {
                    name,
                    reference,
                    writer,
                    size,
                    expected,
                    compression,
                });
                Ok(())
            }
            Msg::Data(data) => {
                let Some(cur) = self.current.as_mut() else {
                    return Err(Error::Internal("import: data outside a file".into()));
                };
                if let Some(w) = cur.writer.as_mut() {
                    let ctx = format!("archive {}: {}", self.archive.display(), cur.name);
                    w.write(data).await.map_err(|e| e.context(&ctx))?;
                }
                Ok(())
            }
            Msg::End { uncompressed } => {
                let Some(mut cur) = self.current.take() else {
                    return Err(Error::Internal("import: end outside a file".into()));
                };
                let ctx = self.context(&cur.name);
                let size = cur.size.map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX));
                let (digest, size) = match cur.writer.take() {
                    None => (cur.expected.clone().unwrap_or_default(), size),
                    Some(w) => {
                        let digest = w.digest();
                        let written = w.offset();
                        let mut labels = BTreeMap::new();
                        if let Some(u) = &uncompressed {
                            labels.insert(LABEL_UNCOMPRESSED.to_string(), u.clone());
                        }
                        let expected = cur.expected.clone().unwrap_or_default();
                        match w
                            .commit(size, &expected, labels.clone(), self.lease.clone())
                            .await
                        {
                            Ok(info) => (info.digest, info.size),
                            Err(Error::AlreadyExists(_)) => {
                                if !labels.is_empty() {
                                    let paths =
                                        labels.keys().map(|k| format!("labels.{k}")).collect();
                                    let info = Info {
                                        digest: digest.clone(),
                                        labels,
                                        ..Default::default()
                                    };
                                    self.content.update(self.namespace, info, paths).await?;
                                }
                                (digest, written)
                            }
                            Err(e) => {
                                self.forget(&cur.reference).await;
                                return Err(e.context(&ctx));
                            }
                        }
                    }
                };
                tracing::debug!(file = %cur.name, %digest, size, "stored");
                self.done.insert(
                    cur.name,
                    Ingested {
                        digest,
                        size,
                        compression: cur.compression,
                    },
                );
                Ok(())
            }
        }
    }

    /// Drops the half-written ingest of the file in progress, if any.
    async fn abort_current(&mut self) {
        if let Some(mut cur) = self.current.take() {
            drop(cur.writer.take());
            self.forget(&cur.reference).await;
        }
    }

    async fn forget(&self, reference: &str) {
        match self.content.abort(self.namespace, reference).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::warn!(%reference, error = %e, "abort of import ingest"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Writing the archive (blocking pool)
// ---------------------------------------------------------------------------------------

enum Body {
    Dir,
    Bytes(Vec<u8>),
    Blob {
        path: PathBuf,
        digest: String,
        size: i64,
    },
}

struct Record {
    name: String,
    mode: u32,
    body: Body,
}

impl Record {
    fn dir(name: &str) -> Record {
        Record {
            name: name.into(),
            mode: 0o755,
            body: Body::Dir,
        }
    }

    fn bytes(name: &str, mode: u32, data: Vec<u8>) -> Record {
        Record {
            name: name.into(),
            mode,
            body: Body::Bytes(data),
        }
    }
}

/// Removes a temporary file unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep
            && let Err(e) = fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "remove temporary archive");
        }
    }
}

/// Writes the records, sorted by name, to a temporary file beside `out`, fsyncs it and
/// renames it to `out`.
fn write_archive(out: &Path, mut records: Vec<Record>) -> Result<()> {
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = out
        .file_name()
        .ok_or_else(|| Error::invalid(format!("{}: not a file path", out.display())))?;
    let tmp = TempFile {
        path: dir.join(format!(
            ".{}.tmp-{}",
            file_name.to_string_lossy(),
            uuid::Uuid::new_v4().simple()
        )),
        keep: false,
    };
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp.path)
        .map_err(|e| Error::io("create", &tmp.path, e))?;
    let mut builder = tar::Builder::new(io::BufWriter::new(file));
    records.sort_by(|a, b| a.name.cmp(&b.name));
    records.dedup_by(|a, b| a.name == b.name);
    let werr = |e: io::Error| Error::io("write", &tmp.path, e);
    for record in records {
        let mut header = tar::Header::new_ustar();
        header.set_path(&record.name).map_err(werr)?;
        header.set_mode(record.mode);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        match record.body {
            Body::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                header.set_cksum();
                builder.append(&header, io::empty()).map_err(werr)?;
            }
            Body::Bytes(data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.len() as u64);
                header.set_cksum();
                builder.append(&header, data.as_slice()).map_err(werr)?;
            }
            Body::Blob { path, digest, size } => {
                let size = u64::try_from(size)
                    .map_err(|_| Error::invalid(format!("blob {digest}: negative size")))?;
                let blob = File::open(&path).map_err(|e| Error::io("open blob", &path, e))?;
                let on_disk = blob
                    .metadata()
                    .map_err(|e| Error::io("stat blob", &path, e))?
                    .len();
                if on_disk != size {
                    return Err(Error::precondition(format!(
                        "blob {digest} has {on_disk} bytes on disk, its record says {size}"
                    )));
                }
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(size);
                header.set_cksum();
                let mut reader = HashingReader {
                    inner: BufReader::new(blob).take(size),
                    hasher: Sha256::new(),
                    count: 0,
                };
                builder
                    .append(&header, &mut reader)
                    .map_err(|e| Error::io("copy blob", &path, e))?;
                let actual = format!("sha256:{}", hex::encode(reader.hasher.finalize()));
                if reader.count != size || actual != digest {
                    return Err(Error::precondition(format!(
                        "blob {digest} at {} is damaged: read {} bytes with digest {actual}",
                        path.display(),
                        reader.count
                    )));
                }
            }
        }
    }
    let file = builder
        .into_inner()
        .map_err(werr)?
        .into_inner()
        .map_err(|e| werr(e.into_error()))?;
    file.sync_all()
        .map_err(|e| Error::io("fsync", &tmp.path, e))?;
    drop(file);
    let mut tmp = tmp;
    fs::rename(&tmp.path, out).map_err(|e| Error::io("rename archive to", out, e))?;
    tmp.keep = true;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync", &dir, e))?;
    Ok(())
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------
// JSON documents
// ---------------------------------------------------------------------------------------

/// An OCI descriptor as JSON. Field order is Go's, so documents built here hash the same as
/// containerd's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonDescriptor {
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    size: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    urls: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    platform: Option<Platform>,
}

impl JsonDescriptor {
    fn from_descriptor(d: &Descriptor) -> Self {
        JsonDescriptor {
            media_type: d.media_type.clone(),
            digest: d.digest.clone(),
            size: d.size,
            annotations: d.annotations.clone(),
            ..Default::default()
        }
    }

    fn to_descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            annotations: self.annotations.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct JsonIndex {
    #[serde(default)]
    manifests: Vec<JsonDescriptor>,
}

#[derive(Debug, Deserialize)]
struct JsonManifest {
    config: JsonDescriptor,
    #[serde(default)]
    layers: Vec<JsonDescriptor>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Sniff {
    #[serde(default)]
    media_type: String,
    manifests: Option<serde_json::Value>,
    config: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Layout {
    #[serde(rename = "imageLayoutVersion", default)]
    version: String,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            version: LAYOUT_VERSION.into(),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct OciIndex {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<JsonDescriptor>,
}

/// The manifest containerd's importer builds for a Docker `save` entry.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DockerManifest {
    schema_version: u32,
    media_type: &'static str,
    config: JsonDescriptor,
    layers: Vec<JsonDescriptor>,
}

/// One entry of a Docker `save` archive's `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config", default)]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Option<Vec<String>>,
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Internal(format!("encode JSON: {e}")))
}

fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Checks `oci-layout` and returns the entries of `index.json`.
fn parse_layout(
    archive: &Path,
    layout: &[u8],
    index: Option<&[u8]>,
) -> Result<Vec<JsonDescriptor>> {
    let layout: Layout = serde_json::from_slice(layout).map_err(|e| {
        Error::invalid(format!(
            "archive {}: {LAYOUT_FILE} is not valid: {e}",
            archive.display()
        ))
    })?;
    if layout.version != LAYOUT_VERSION {
        return Err(Error::invalid(format!(
            "archive {}: unsupported OCI layout version {:?}",
            archive.display(),
            layout.version
        )));
    }
    let Some(index) = index else {
        return Err(Error::invalid(format!(
            "archive {}: missing {INDEX_FILE} in OCI layout {LAYOUT_VERSION}",
            archive.display()
        )));
    };
    let index: JsonIndex = serde_json::from_slice(index).map_err(|e| {
        Error::invalid(format!(
            "archive {}: {INDEX_FILE} is not valid: {e}",
            archive.display()
        ))
    })?;
    if index.manifests.is_empty() {
        return Err(Error::invalid(format!(
            "archive {}: {INDEX_FILE} lists no images",
            archive.display()
        )));
    }
    Ok(index.manifests)
}

/// The image name of an `index.json` entry (containerd's `imageName` with `--base-name`).
fn oci_entry_name(i: usize, entry: &JsonDescriptor, base: Option<&str>) -> Result<String> {
    if let Some(name) = entry.annotations.get(ANNOTATION_IMAGE_NAME)
        && !name.is_empty()
    {
        return Ok(name.clone());
    }
    let reference = entry
        .annotations
        .get(ANNOTATION_REF_NAME)
        .filter(|r| !r.is_empty());
    match (reference, base) {
        (Some(r), _) if r.contains(['/', ':', '@']) => Ok(r.clone()),
        (Some(tag), Some(base)) => Ok(format!("{base}:{tag}")),
        (None, Some(base)) => Ok(format!("{base}@{}", entry.digest)),
        (Some(tag), None) => Err(Error::invalid(format!(
            "image name required: {INDEX_FILE} entry {i} ({}) is named only by the tag \
             {tag:?}; give a base name",
            entry.digest
        ))),
        (None, None) => Err(Error::invalid(format!(
            "image name required: {INDEX_FILE} entry {i} ({}) has no name annotation; \
             give a base name",
            entry.digest
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// Media types and GC labels
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Index,
    Manifest,
    Schema1,
    Other,
}

fn kind(media_type: &str) -> Kind {
    match media_type {
        MT_OCI_INDEX | MT_DOCKER_LIST => Kind::Index,
        MT_OCI_MANIFEST | MT_DOCKER_MANIFEST => Kind::Manifest,
        MT_DOCKER_SCHEMA1 | MT_DOCKER_SCHEMA1_SIGNED => Kind::Schema1,
        _ => Kind::Other,
    }
}

/// containerd's `SetChildrenLabels` with `ChildGCLabels` ([`media::child_gc_labels`]).
fn gc_labels(children: &[&JsonDescriptor]) -> BTreeMap<String, String> {
    media::child_gc_labels(
        children
            .iter()
            .map(|c| (c.media_type.as_str(), c.digest.as_str())),
    )
}

// ---------------------------------------------------------------------------------------
// Names and paths
// ---------------------------------------------------------------------------------------

/// `path.Clean` for archive member names, relative: `./a//b/` → `a/b`.
fn clean_path(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// The digest a `blobs/<alg>/<hex>` member stands for.
fn blob_digest(name: &str) -> Option<String> {
    let rest = name.strip_prefix("blobs/")?;
    let (alg, hex) = rest.split_once('/')?;
    let d = format!("{alg}:{hex}");
    digest::validate(&d).ok()?;
    Some(d)
}

/// Where a blob goes in an archive.
fn blob_tar_path(digest: &str) -> Result<String> {
    digest::validate(digest)?;
    let (alg, hex) = digest.split_once(':').unwrap_or_default();
    Ok(format!("blobs/{alg}/{hex}"))
}

/// containerd's `ociReferenceName`: the tag (and digest) of a full name, or the whole name
/// when it has no tag.
fn oci_ref_name(name: &str) -> String {
    if name.contains("://") {
        return name.to_string();
    }
    let Some((host, path)) = name.split_once('/') else {
        return name.to_string();
    };
    if host.is_empty() {
        return name.to_string();
    }
    match path.find([':', '@']) {
        Some(i) if path[i..].starts_with(':') && i + 1 < path.len() => path[i + 1..].to_string(),
        _ => name.to_string(),
    }
}

/// containerd's `ParseDockerRef`: the normalised name (`busybox:latest` →
/// `docker.io/library/busybox:latest`), with `:latest` when it has neither tag nor digest,
/// and without the tag when it has a digest.
fn docker_ref_name(s: &str) -> Result<String> {
    let r = Reference::parse(s)?;
    Ok(match r.digest() {
        Some(d) => format!("{}@{d}", r.name()),
        None => r.to_string(),
    })
}

/// The short `name:tag` Docker shows (`busybox:latest`), for `RepoTags`; `None` for a name
/// that is not a reference or has no tag, which `docker load` would refuse.
fn repo_tag(name: &str) -> Option<String> {
    let r = Reference::parse_named(name).ok()?;
    Some(r.with_tag(r.tag()?).ok()?.familiar())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("archive task: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    const GC_CONFIG: &str = "containerd.io/gc.ref.content.config";
    const GC_MANIFEST: &str = "containerd.io/gc.ref.content.m.";
    use crate::filters::Filter;
    use crate::metadata::Store;

    const NS: &str = "default";

    struct Env {
        dir: tempfile::TempDir,
        content: ContentStore,
        images: Images,
        archives: Archives,
    }

    fn env() -> Env {
        let dir = tempfile::tempdir().expect("tmp");
        let meta = Store::open(&dir.path().join("meta.redb")).expect("db");
        let content = ContentStore::open(
            dir.path(),
            meta.clone(),
            crate::content::DEFAULT_INGEST_EXPIRY,
        )
        .expect("content");
        let images = Images::new(meta);
        let archives = Archives::new(content.clone(), images.clone());
        Env {
            dir,
            content,
            images,
            archives,
        }
    }

    impl Env {
        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        async fn put(&self, data: &[u8]) -> String {
            let d = sha256_digest(data);
            match self
                .content
                .writer(NS, &format!("test-{d}"), 0, &d, None)
                .await
            {
                Ok(mut w) => {
                    w.write(data.to_vec()).await.expect("write");
                    w.commit(data.len() as i64, &d, BTreeMap::new(), None)
                        .await
                        .expect("commit");
                }
                Err(Error::AlreadyExists(_)) => {}
                Err(e) => panic!("writer: {e}"),
            }
            d
        }

        async fn read(&self, digest: &str) -> Vec<u8> {
            let (mut f, _) = self.content.open_blob(NS, digest).await.expect("open");
            let mut out = Vec::new();
            f.read_to_end(&mut out).expect("read");
            out
        }

        /// A one-layer image for `arch`: returns the manifest descriptor.
        async fn image_manifest(&self, arch: &str, file: &str) -> JsonDescriptor {
            let layer_tar = tar_of(&[(file, format!("hello from {arch}").as_bytes())]);
            let diff_id = sha256_digest(&layer_tar);
            let layer = gzip(&layer_tar);
            let config = format!(
                r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}},"config":{{}}}}"#
            )
            .into_bytes();
            let manifest = format!(
                r#"{{"schemaVersion":2,"mediaType":"{MT_OCI_MANIFEST}","config":{{"mediaType":"{MT_OCI_CONFIG}","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{}}}]}}"#,
                sha256_digest(&config),
                config.len(),
                sha256_digest(&layer),
                layer.len()
            )
            .into_bytes();
            self.put(&layer).await;
            self.put(&config).await;
            let d = self.put(&manifest).await;
            JsonDescriptor {
                media_type: MT_OCI_MANIFEST.into(),
                digest: d,
                size: manifest.len() as i64,
                platform: Some(Platform {
                    architecture: arch.into(),
                    os: "linux".into(),
                    variant: String::new(),
                }),
                ..Default::default()
            }
        }

        async fn index_of(&self, manifests: &[JsonDescriptor]) -> Descriptor {
            let index = to_json(&OciIndex {
                schema_version: 2,
                media_type: MT_OCI_INDEX,
                manifests: manifests.to_vec(),
            })
            .expect("json");
            let d = self.put(&index).await;
            Descriptor {
                media_type: MT_OCI_INDEX.into(),
                digest: d,
                size: index.len() as i64,
                annotations: BTreeMap::new(),
            }
        }

        async fn create_image(&self, name: &str, target: Descriptor) {
            self.images
                .create(
                    NS,
                    Image {
                        name: name.into(),
                        target: Some(target),
                        ..Default::default()
                    },
                )
                .await
                .expect("create image");
        }

        /// Deletes every image and every blob of the namespace.
        async fn wipe(&self) {
            for i in self.images.list(NS, Filter::always()).await.expect("list") {
                self.images.delete(NS, &i.name, None).await.expect("delete");
            }
            for c in self.content.list(NS, Filter::always()).await.expect("list") {
                self.content.delete(NS, &c.digest).await.expect("delete");
            }
        }

        async fn image_names(&self) -> Vec<String> {
            let mut names: Vec<String> = self
                .images
                .list(NS, Filter::always())
                .await
                .expect("list")
                .into_iter()
                .map(|i| i.name)
                .collect();
            names.sort();
            names
        }
    }

    fn plain(m: &JsonDescriptor) -> Descriptor {
        Descriptor {
            annotations: BTreeMap::new(),
            ..m.to_descriptor()
        }
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_path(name).expect("path");
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("gzip");
        e.finish().expect("gzip")
    }

    /// Every member of a tar file: name, kind byte, data.
    fn members(path: &Path) -> Vec<(String, u8, Vec<u8>)> {
        let mut ar = tar::Archive::new(File::open(path).expect("open"));
        let mut out = Vec::new();
        for e in ar.entries().expect("entries") {
            let mut e = e.expect("entry");
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let kind = e.header().entry_type().as_byte();
            let mut data = Vec::new();
            e.read_to_end(&mut data).expect("data");
            out.push((name, kind, data));
        }
        out
    }

    /// Writes members back as a tar (regular files and directories only).
    fn write_members(path: &Path, members: &[(String, u8, Vec<u8>)]) {
        let mut b = tar::Builder::new(File::create(path).expect("create"));
        for (name, kind, data) in members {
            let mut h = tar::Header::new_ustar();
            h.set_path(name).expect("path");
            h.set_entry_type(tar::EntryType::new(*kind));
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, data.as_slice()).expect("append");
        }
        b.finish().expect("finish");
    }

    fn member<'a>(members: &'a [(String, u8, Vec<u8>)], name: &str) -> &'a [u8] {
        members
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, d)| d.as_slice())
            .unwrap_or_else(|| panic!("no {name} in archive"))
    }

    fn blob_member(digest: &str) -> String {
        blob_tar_path(digest).expect("digest")
    }

    #[tokio::test]
    async fn export_delete_import_round_trip() {
        let env = env();
        let m = env.image_manifest("amd64", "hello.txt").await;
        let name = "docker.io/library/tiny:1.0";
        env.create_image(name, plain(&m)).await;
        let out = env.path("tiny.tar");
        env.archives
            .export(NS, &[name.to_string()], &out, ExportOptions::default())
            .await
            .expect("export");

        let ms = members(&out);
        let names: Vec<&str> = ms.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names[0], "blobs/");
        assert_eq!(names[1], "blobs/sha256/");
        assert_eq!(names[5..], ["index.json", "manifest.json", "oci-layout"]);
        assert_eq!(
            member(&ms, "oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#
        );
        let index: serde_json::Value =
            serde_json::from_slice(member(&ms, "index.json")).expect("index");
        assert_eq!(index["mediaType"], MT_OCI_INDEX);
        assert_eq!(index["manifests"][0]["digest"], m.digest.as_str());
        assert_eq!(
            index["manifests"][0]["annotations"][ANNOTATION_IMAGE_NAME],
            name
        );
        assert_eq!(
            index["manifests"][0]["annotations"][ANNOTATION_REF_NAME],
            "1.0"
        );
        let manifest: JsonManifest =
            serde_json::from_slice(&env.read(&m.digest).await).expect("manifest");
        let docker: Vec<DockerEntry> =
            serde_json::from_slice(member(&ms, "manifest.json")).expect("manifest.json");
        assert_eq!(docker.len(), 1);
        assert_eq!(docker[0].config, blob_member(&manifest.config.digest));
        assert_eq!(docker[0].repo_tags, Some(vec!["tiny:1.0".to_string()]));
        assert_eq!(
            docker[0].layers,
            Some(vec![blob_member(&manifest.layers[0].digest)])
        );
        // Every blob is there with its bytes.
        for d in [
            &m.digest,
            &manifest.config.digest,
            &manifest.layers[0].digest,
        ] {
            assert_eq!(member(&ms, &blob_member(d)), env.read(d).await.as_slice());
        }
        // No temporary file is left beside the archive.
        let left: Vec<_> = fs::read_dir(env.dir.path())
            .expect("dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(left.is_empty());

        env.wipe().await;
        let imported = env
            .archives
            .import(NS, &out, ImportOptions::default())
            .await
            .expect("import");
        assert_eq!(imported.len(), 1);
        assert_eq!(imported[0].name, name);
        let target = imported[0].target();
        assert_eq!(target.digest, m.digest);
        assert_eq!(target.size, m.size);
        assert_eq!(target.media_type, MT_OCI_MANIFEST);
        assert_eq!(env.image_names().await, [name]);
        // The blobs are back, verified, and the manifest holds them for the GC.
        let info = env.content.info(NS, &m.digest).await.expect("manifest");
        assert_eq!(
            info.labels.get(GC_CONFIG),
            Some(&manifest.config.digest),
            "{:?}",
            info.labels
        );
        assert_eq!(
            info.labels.get("containerd.io/gc.ref.content.l.0"),
            Some(&manifest.layers[0].digest)
        );
        assert_eq!(
            env.content
                .list(NS, Filter::always())
                .await
                .expect("list")
                .len(),
            3
        );

        // Importing again updates the image in place.
        let again = env
            .archives
            .import(NS, &out, ImportOptions::default())
            .await
            .expect("import again");
        assert_eq!(again[0].target().digest, m.digest);
    }

    #[tokio::test]
    async fn two_images_share_blobs_and_both_come_back() {
        let env = env();
        let a = env.image_manifest("amd64", "a.txt").await;
        let b = env.image_manifest("amd64", "b.txt").await;
        env.create_image("docker.io/library/a:latest", plain(&a))
            .await;
        env.create_image("example.com/team/b:2", plain(&b)).await;
        // A third name for the same manifest as a.
        env.create_image("docker.io/library/a:again", plain(&a))
            .await;
        let out = env.path("two.tar");
        let names = [
            "docker.io/library/a:latest".to_string(),
            "example.com/team/b:2".to_string(),
            "docker.io/library/a:again".to_string(),
        ];
        env.archives
            .export(NS, &names, &out, ExportOptions::default())
            .await
            .expect("export");
        let ms = members(&out);
        let blobs: Vec<&str> = ms
            .iter()
            .map(|(n, _, _)| n.as_str())
            .filter(|n| n.starts_with("blobs/sha256/") && n.len() > 13)
            .collect();
        // Two manifests, two configs (the arch is the same but the diff ids differ), two layers.
        assert_eq!(blobs.len(), 6, "{blobs:?}");
        let unique: HashSet<&&str> = blobs.iter().collect();
        assert_eq!(unique.len(), blobs.len());
        let docker: Vec<DockerEntry> =
            serde_json::from_slice(member(&ms, "manifest.json")).expect("manifest.json");
        assert_eq!(docker.len(), 2);
        assert_eq!(
            docker[0].repo_tags,
            Some(vec!["a:latest".to_string(), "a:again".to_string()])
        );
        assert_eq!(
            docker[1].repo_tags,
            Some(vec!["example.com/team/b:2".to_string()])
        );

        env.wipe().await;
        let imported = env
            .archives
            .import(NS, &out, ImportOptions::default())
            .await
            .expect("import");
        assert_eq!(imported.len(), 3);
        let mut got: Vec<(String, String)> = imported
            .iter()
            .map(|i| (i.name.clone(), i.target().digest))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("docker.io/library/a:again".to_string(), a.digest.clone()),
                ("docker.io/library/a:latest".to_string(), a.digest.clone()),
                ("example.com/team/b:2".to_string(), b.digest.clone()),
            ]
        );
    }

    #[tokio::test]
    async fn docker_save_archive_imports_like_containerd() {
        let env = env();
        let layer = tar_of(&[("etc/motd", b"welcome\n")]);
        let layer_digest = sha256_digest(&layer);
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer_digest}","{layer_digest}"]}}}}"#
        )
        .into_bytes();
        let config_digest = sha256_digest(&config);
        let config_file = format!("{}.json", config_digest.trim_start_matches("sha256:"));
        let manifest_json = format!(
            r#"[{{"Config":"{config_file}","RepoTags":["tiny:latest","example.com/x/y:2"],"Layers":["aaa/layer.tar","bbb/layer.tar"]}}]"#
        );
        // `docker save` links a repeated layer to its first copy.
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_path(name).expect("path");
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, data).expect("append");
        };
        add("aaa/VERSION", b"1.0");
        add("aaa/json", b"{}");
        add("aaa/layer.tar", &layer);
        add(&config_file, &config);
        add("manifest.json", manifest_json.as_bytes());
        add("repositories", br#"{"tiny":{"latest":"aaa"}}"#);
        let mut h = tar::Header::new_ustar();
        h.set_path("bbb/layer.tar").expect("path");
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_link_name("../aaa/layer.tar").expect("link");
        h.set_size(0);
        h.set_cksum();
        b.append(&h, io::empty()).expect("symlink");
        let archive = b.into_inner().expect("tar");
        // Compressed as a whole: detected by its magic.
        let path = env.path("save.tar.gz");
        fs::write(&path, gzip(&archive)).expect("write");

        let imported = env
            .archives
            .import(NS, &path, ImportOptions::default())
            .await
            .expect("import");
        let names: Vec<&str> = imported.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            names,
            ["docker.io/library/tiny:latest", "example.com/x/y:2"]
        );
        let target = imported[0].target();
        assert_eq!(target.media_type, MT_DOCKER_MANIFEST);
        assert_eq!(
            target
                .annotations
                .get(ANNOTATION_IMAGE_NAME)
                .map(String::as_str),
            Some("docker.io/library/tiny:latest")
        );
        assert_eq!(
            target
                .annotations
                .get(ANNOTATION_REF_NAME)
                .map(String::as_str),
            Some("latest")
        );
        assert_eq!(imported[1].target().digest, target.digest);
        // The same bytes containerd's importer writes (Go's encoding/json of its struct).
        let want = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MT_DOCKER_MANIFEST}","config":{{"mediaType":"{MT_DOCKER_CONFIG}","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"{MT_DOCKER_LAYER}","digest":"{layer_digest}","size":{}}},{{"mediaType":"{MT_DOCKER_LAYER}","digest":"{layer_digest}","size":{}}}]}}"#,
            config.len(),
            layer.len(),
            layer.len()
        );
        assert_eq!(
            String::from_utf8(env.read(&target.digest).await).expect("utf8"),
            want
        );
        assert_eq!(target.digest, sha256_digest(want.as_bytes()));
        let info = env.content.info(NS, &target.digest).await.expect("info");
        assert_eq!(info.labels.get(GC_CONFIG), Some(&config_digest));
        assert_eq!(
            info.labels.get("containerd.io/gc.ref.content.l.0"),
            Some(&layer_digest)
        );
        assert_eq!(
            info.labels.get("containerd.io/gc.ref.content.l.1"),
            Some(&layer_digest)
        );
        // Only the config, the layer and the manifest were stored: not aaa/json, VERSION, ...
        let mut stored: Vec<String> = env
            .content
            .list(NS, Filter::always())
            .await
            .expect("list")
            .into_iter()
            .map(|i| i.digest)
            .collect();
        stored.sort();
        let mut want = vec![
            config_digest.clone(),
            layer_digest.clone(),
            target.digest.clone(),
        ];
        want.sort();
        assert_eq!(stored, want);

        // With compress_blobs the layer is stored gzipped and remembers its diff id.
        let env2 = self::env();
        let imported = env2
            .archives
            .import(
                NS,
                &path,
                ImportOptions {
                    compress_blobs: true,
                    ..Default::default()
                },
            )
            .await
            .expect("import compressed");
        let manifest: JsonManifest =
            serde_json::from_slice(&env2.read(&imported[0].target().digest).await)
                .expect("manifest");
        assert_eq!(manifest.layers[0].media_type, MT_DOCKER_LAYER_GZIP);
        assert_ne!(manifest.layers[0].digest, layer_digest);
        let gz = env2.read(&manifest.layers[0].digest).await;
        let mut plain = Vec::new();
        MultiGzDecoder::new(gz.as_slice())
            .read_to_end(&mut plain)
            .expect("gunzip");
        assert_eq!(plain, layer);
        let info = env2
            .content
            .info(NS, &manifest.layers[0].digest)
            .await
            .expect("info");
        assert_eq!(info.labels.get(LABEL_UNCOMPRESSED), Some(&layer_digest));
    }

    #[tokio::test]
    async fn docker_archive_missing_layer_or_name() {
        let env = env();
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let archive = tar_of(&[
            ("c.json", config),
            (
                "manifest.json",
                br#"[{"Config":"c.json","RepoTags":["x:1"],"Layers":["gone/layer.tar"]}]"#,
            ),
        ]);
        let path = env.path("missing.tar");
        fs::write(&path, archive).expect("write");
        let err = env
            .archives
            .import(NS, &path, ImportOptions::default())
            .await
            .expect_err("missing layer");
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(err.to_string().contains("gone/layer.tar"), "{err}");
        assert!(env.image_names().await.is_empty());
        // Nothing was stored: the check comes before the first blob write.
        assert!(
            env.content
                .list(NS, Filter::always())
                .await
                .expect("list")
                .is_empty()
        );

        let archive = tar_of(&[
            ("c.json", config),
            (
                "manifest.json",
                br#"[{"Config":"c.json","RepoTags":null,"Layers":[]}]"#,
            ),
        ]);
        fs::write(&path, archive).expect("write");
        let err = env
            .archives
            .import(NS, &path, ImportOptions::default())
            .await
            .expect_err("no name");
        assert!(err.to_string().contains("image name required"), "{err}");
        let imported = env
            .archives
            .import(
                NS,
                &path,
                ImportOptions {
                    base_name: Some("example.com/untagged".into()),
                    ..Default::default()
                },
            )
            .await
            .expect("with base name");
        assert_eq!(
            imported[0].name,
            format!("example.com/untagged@{}", imported[0].target().digest)
        );
    }

    #[tokio::test]
    async fn truncated_archive_fails_and_creates_no_image() {
        let env = env();
        let m = env.image_manifest("amd64", "big.bin").await;
        env.create_image("docker.io/library/t:1", plain(&m)).await;
        let out = env.path("t.tar");
        env.archives
            .export(
                NS,
                &["docker.io/library/t:1".into()],
                &out,
                ExportOptions::default(),
            )
            .await
            .expect("export");
        env.wipe().await;
        let full = fs::read(&out).expect("read");

        // Cut inside the first blob's data.
        let cut = env.path("cut.tar");
        fs::write(&cut, &full[..512 * 3 + 100]).expect("write");
        let err = env
            .archives
            .import(NS, &cut, ImportOptions::default())
            .await
            .expect_err("truncated");
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(err.to_string().contains("truncated"), "{err}");
        assert!(env.image_names().await.is_empty());

        // Cut inside the padding after the last file's data.
        fs::write(&cut, &full[..full.len() - 1024 - 300]).expect("write");
        let err = env
            .archives
            .import(NS, &cut, ImportOptions::default())
            .await
            .expect_err("truncated");
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(env.image_names().await.is_empty());

        // A cut gzip stream.
        let gz = gzip(&full);
        fs::write(&cut, &gz[..gz.len() / 2]).expect("write");
        let err = env
            .archives
            .import(NS, &cut, ImportOptions::default())
            .await
            .expect_err("truncated gzip");
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(env.image_names().await.is_empty());
        // No ingest is left behind.
        assert!(
            env.content
                .list_statuses(NS, Filter::always())
                .await
                .expect("statuses")
                .is_empty()
        );

        // Not an archive at all.
        fs::write(&cut, b"this is not a tar file, not even close to one").expect("write");
        let err = env
            .archives
            .import(NS, &cut, ImportOptions::default())
            .await
            .expect_err("garbage");
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }

    #[tokio::test]
    async fn blob_with_wrong_bytes_fails_and_creates_no_image() {
        let env = env();
        let m = env.image_manifest("amd64", "x").await;
        env.create_image("docker.io/library/bad:1", plain(&m)).await;
        let out = env.path("bad.tar");
        env.archives
            .export(
                NS,
                &["docker.io/library/bad:1".into()],
                &out,
                ExportOptions::default(),
            )
            .await
            .expect("export");
        let manifest: JsonManifest =
            serde_json::from_slice(&env.read(&m.digest).await).expect("manifest");
        env.wipe().await;

        let layer = blob_member(&manifest.layers[0].digest);
        let mut ms = members(&out);
        for (name, _, data) in ms.iter_mut() {
            if *name == layer {
                let last = data.len() - 1;
                data[last] ^= 0xff;
            }
        }
        write_members(&out, &ms);
        let err = env
            .archives
            .import(NS, &out, ImportOptions::default())
            .await
            .expect_err("corrupt blob");
        assert!(matches!(err, Error::FailedPrecondition(_)), "{err}");
        assert!(
            err.to_string().contains(&manifest.layers[0].digest),
            "{err}"
        );
        assert!(err.to_string().contains(&layer), "{err}");
        assert!(env.image_names().await.is_empty());
        assert!(
            env.content
                .info(NS, &manifest.layers[0].digest)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn reference_to_a_missing_blob_fails() {
        let env = env();
        let m = env.image_manifest("amd64", "x").await;
        env.create_image("docker.io/library/m:1", plain(&m)).await;
        let out = env.path("m.tar");
        env.archives
            .export(
                NS,
                &["docker.io/library/m:1".into()],
                &out,
                ExportOptions::default(),
            )
            .await
            .expect("export");
        let manifest: JsonManifest =
            serde_json::from_slice(&env.read(&m.digest).await).expect("manifest");
        env.wipe().await;
        let ms = members(&out);

        // A manifest whose layer is not in the archive.
        let layer = blob_member(&manifest.layers[0].digest);
        let without: Vec<_> = ms.iter().filter(|(n, _, _)| *n != layer).cloned().collect();
        let path = env.path("nolayer.tar");
        write_members(&path, &without);
        let err = env
            .archives
            .import(NS, &path, ImportOptions::default())
            .await
            .expect_err("missing layer");
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(
            err.to_string().contains(&manifest.layers[0].digest),
            "{err}"
        );
        assert!(err.to_string().contains(&m.digest), "{err}");
        assert!(env.image_names().await.is_empty());

        // index.json naming a manifest that is not there (nor in the namespace: blobs of the
        // failed import above stay, verified).
        env.wipe().await;
        let manifest_member = blob_member(&m.digest);
        let without: Vec<_> = ms
            .iter()
            .filter(|(n, _, _)| *n != manifest_member)
            .cloned()
            .collect();
        let path = env.path("nomanifest.tar");
        write_members(&path, &without);
        let err = env
            .archives
            .import(NS, &path, ImportOptions::default())
            .await
            .expect_err("missing manifest");
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(err.to_string().contains("index.json entry 0"), "{err}");
        assert!(err.to_string().contains(&m.digest), "{err}");
        assert!(env.image_names().await.is_empty());
    }

    #[tokio::test]
    async fn tag_only_names_need_a_base_name() {
        let env = env();
        let m = env.image_manifest("amd64", "x").await;
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{}","size":{},"annotations":{{"{ANNOTATION_REF_NAME}":"1.0"}}}}]}}"#,
            m.media_type, m.digest, m.size
        );
        let manifest = env.read(&m.digest).await;
        let parsed: JsonManifest = serde_json::from_slice(&manifest).expect("manifest");
        let config = env.read(&parsed.config.digest).await;
        let layer = env.read(&parsed.layers[0].digest).await;
        let archive = tar_of(&[
            ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
            ("index.json", index.as_bytes()),
            (&blob_member(&m.digest), &manifest),
            (&blob_member(&parsed.config.digest), &config),
            (&blob_member(&parsed.layers[0].digest), &layer),
        ]);
        env.wipe().await;
        let path = env.path("tag.tar");
        fs::write(&path, archive).expect("write");
        let err = env
            .archives
            .import(NS, &path, ImportOptions::default())
            .await
            .expect_err("no base name");
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(err.to_string().contains("image name required"), "{err}");
        // Naming is checked before any blob is written.
        assert!(
            env.content
                .list(NS, Filter::always())
                .await
                .expect("list")
                .is_empty()
        );

        let imported = env
            .archives
            .import(
                NS,
                &path,
                ImportOptions {
                    base_name: Some("example.com/app".into()),
                    labels: BTreeMap::from([("origin".to_string(), "archive".to_string())]),
                    ..Default::default()
                },
            )
            .await
            .expect("import");
        assert_eq!(imported[0].name, "example.com/app:1.0");
        assert_eq!(imported[0].target().digest, m.digest);
        assert_eq!(
            imported[0].labels.get("origin").map(String::as_str),
            Some("archive")
        );
    }

    #[tokio::test]
    async fn multi_platform_index_by_platform() {
        let env = env();
        let amd = env.image_manifest("amd64", "a").await;
        let arm = env.image_manifest("arm64", "b").await;
        let index = env.index_of(&[amd.clone(), arm.clone()]).await;
        let name = "docker.io/library/multi:1";
        env.create_image(name, index.clone()).await;
        let arm_manifest: JsonManifest =
            serde_json::from_slice(&env.read(&arm.digest).await).expect("manifest");

        // Everything: both manifests, and no Docker manifest.json (which one would it be?).
        let all = env.path("all.tar");
        env.archives
            .export(NS, &[name.into()], &all, ExportOptions::default())
            .await
            .expect("export all");
        let ms = members(&all);
        assert!(ms.iter().any(|(n, _, _)| *n == blob_member(&amd.digest)));
        assert!(ms.iter().any(|(n, _, _)| *n == blob_member(&arm.digest)));
        assert!(!ms.iter().any(|(n, _, _)| n == "manifest.json"));

        // One platform: the index as it is, that platform's blobs, and a manifest.json.
        let one = env.path("arm.tar");
        env.archives
            .export(
                NS,
                &[name.into()],
                &one,
                ExportOptions {
                    platform: Some("linux/arm64".into()),
                    ..Default::default()
                },
            )
            .await
            .expect("export arm64");
        let ms = members(&one);
        assert!(ms.iter().any(|(n, _, _)| *n == blob_member(&index.digest)));
        assert!(ms.iter().any(|(n, _, _)| *n == blob_member(&arm.digest)));
        assert!(!ms.iter().any(|(n, _, _)| *n == blob_member(&amd.digest)));
        let docker: Vec<DockerEntry> =
            serde_json::from_slice(member(&ms, "manifest.json")).expect("manifest.json");
        assert_eq!(docker[0].config, blob_member(&arm_manifest.config.digest));
        assert_eq!(docker[0].repo_tags, Some(vec!["multi:1".to_string()]));

        // A platform the index does not have.
        let none = env.path("none.tar");
        let err = env
            .archives
            .export(
                NS,
                &[name.into()],
                &none,
                ExportOptions {
                    platform: Some("linux/s390x".into()),
                    ..Default::default()
                },
            )
            .await
            .expect_err("no such platform");
        assert!(err.is_not_found(), "{err}");
        assert!(!none.exists());

        // The single-platform archive imports: the index is the target, the missing
        // platform is left out and only the present manifest is referenced.
        env.wipe().await;
        let imported = env
            .archives
            .import(NS, &one, ImportOptions::default())
            .await
            .expect("import");
        assert_eq!(imported[0].target().digest, index.digest);
        let info = env.content.info(NS, &index.digest).await.expect("index");
        let refs: Vec<(&String, &String)> = info
            .labels
            .iter()
            .filter(|(k, _)| k.starts_with("containerd.io/gc.ref."))
            .collect();
        assert_eq!(
            refs,
            [(&"containerd.io/gc.ref.content.m.0".to_string(), &arm.digest)]
        );
        // Asking for the missing platform on import fails, for the whole import.
        env.wipe().await;
        let err = env
            .archives
            .import(
                NS,
                &one,
                ImportOptions {
                    platform: Some("linux/amd64".into()),
                    ..Default::default()
                },
            )
            .await
            .expect_err("amd64 missing");
        assert!(err.to_string().contains(&amd.digest), "{err}");
        assert!(env.image_names().await.is_empty());

        // The complete archive round-trips with both manifests referenced.
        let imported = env
            .archives
            .import(NS, &all, ImportOptions::default())
            .await
            .expect("import all");
        assert_eq!(imported[0].target().digest, index.digest);
        let info = env.content.info(NS, &index.digest).await.expect("index");
        let refs = info
            .labels
            .keys()
            .filter(|k| k.starts_with(GC_MANIFEST))
            .count();
        assert_eq!(refs, 2, "{:?}", info.labels);
        assert_eq!(
            info.labels.get("containerd.io/gc.ref.content.m.0"),
            Some(&amd.digest)
        );
        assert_eq!(
            info.labels.get("containerd.io/gc.ref.content.m.1"),
            Some(&arm.digest)
        );
    }

    #[tokio::test]
    async fn export_errors_leave_no_file() {
        let env = env();
        let out = env.path("x.tar");
        let err = env
            .archives
            .export(
                NS,
                &["docker.io/library/nope:1".into()],
                &out,
                ExportOptions::default(),
            )
            .await
            .expect_err("unknown image");
        assert!(err.is_not_found(), "{err}");
        // A manifest whose layer the namespace lost.
        let m = env.image_manifest("amd64", "x").await;
        let manifest: JsonManifest =
            serde_json::from_slice(&env.read(&m.digest).await).expect("manifest");
        env.create_image("docker.io/library/lost:1", plain(&m))
            .await;
        env.content
            .delete(NS, &manifest.layers[0].digest)
            .await
            .expect("delete layer");
        let err = env
            .archives
            .export(
                NS,
                &["docker.io/library/lost:1".into()],
                &out,
                ExportOptions::default(),
            )
            .await
            .expect_err("lost layer");
        assert!(matches!(err, Error::FailedPrecondition(_)), "{err}");
        assert!(
            err.to_string().contains(&manifest.layers[0].digest),
            "{err}"
        );
        assert!(!out.exists());
        // A blob file damaged on disk is caught while copying; the old archive stays.
        fs::write(&out, b"previous").expect("write");
        let config = env
            .content
            .blob_path(&manifest.config.digest)
            .expect("path");
        let mut bytes = fs::read(&config).expect("read");
        bytes[0] ^= 0xff;
        fs::write(&config, bytes).expect("damage");
        let again = env.image_manifest("amd64", "x").await;
        assert_eq!(again.digest, m.digest);
        let err = env
            .archives
            .export(
                NS,
                &["docker.io/library/lost:1".into()],
                &out,
                ExportOptions::default(),
            )
            .await
            .expect_err("damaged config");
        assert!(err.to_string().contains("damaged"), "{err}");
        assert_eq!(fs::read(&out).expect("read"), b"previous");
        let names: Vec<String> = fs::read_dir(env.dir.path())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn references() {
        let n = docker_ref_name;
        assert_eq!(
            n("busybox").expect("ok"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            n("busybox:1.36").expect("ok"),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(n("user/app:v1").expect("ok"), "docker.io/user/app:v1");
        assert_eq!(
            n("index.docker.io/user/app").expect("ok"),
            "docker.io/user/app:latest"
        );
        assert_eq!(
            n("localhost:5000/app:2").expect("ok"),
            "localhost:5000/app:2"
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            n(&format!("app:1@{d}")).expect("ok"),
            format!("docker.io/library/app@{d}")
        );
        assert!(n("Busybox").is_err());
        assert!(n("bad name").is_err());
        assert!(n("").is_err());
        let f = repo_tag;
        assert_eq!(
            f("docker.io/library/busybox:latest").as_deref(),
            Some("busybox:latest")
        );
        assert_eq!(f("docker.io/user/app:1").as_deref(), Some("user/app:1"));
        assert_eq!(f("example.com/a/b:1").as_deref(), Some("example.com/a/b:1"));
        assert_eq!(f(&format!("docker.io/library/app@{d}")), None);

        assert_eq!(oci_ref_name("docker.io/library/busybox:1.36"), "1.36");
        assert_eq!(oci_ref_name("localhost:5000/app:2"), "2");
        assert_eq!(
            oci_ref_name("docker.io/library/app"),
            "docker.io/library/app"
        );
        assert_eq!(
            oci_ref_name(&format!("docker.io/library/app@{d}")),
            format!("docker.io/library/app@{d}")
        );
        assert_eq!(oci_ref_name("plain"), "plain");
    }

    #[test]
    fn platforms_and_labels() {
        let p = |s: &str| parse_platform(s).expect("platform");
        assert_eq!(p("linux/arm64").to_string(), "linux/arm64");
        assert_eq!(p("linux/aarch64/v8").to_string(), "linux/arm64");
        assert_eq!(p("amd64").to_string(), "linux/amd64");
        assert_eq!(p("linux/arm").to_string(), "linux/arm/v7");
        assert!(parse_platform("linux//x").is_err());
        assert!(parse_platform("a/b/c/d").is_err());
        let have = |a: &str, v: &str| Platform {
            os: "linux".into(),
            architecture: a.into(),
            variant: v.into(),
        };
        assert!(media::matches_strict(
            &p("linux/arm64"),
            &have("aarch64", "v8")
        ));
        assert!(media::matches_strict(&p("linux/arm/v7"), &have("arm", "")));
        assert!(!media::matches_strict(
            &p("linux/arm/v6"),
            &have("arm", "v7")
        ));
        assert!(!media::matches_strict(
            &p("linux/amd64"),
            &have("arm64", "")
        ));

        let d = |mt: &str, n: char| JsonDescriptor {
            media_type: mt.into(),
            digest: format!("sha256:{}", n.to_string().repeat(64)),
            ..Default::default()
        };
        let children = [
            d(MT_OCI_CONFIG, 'a'),
            d("application/vnd.oci.image.layer.v1.tar+gzip", 'b'),
            d(MT_DOCKER_LAYER, 'c'),
            d("application/vnd.example+json", 'd'),
            d(MT_OCI_MANIFEST, 'e'),
            d(MT_OCI_INDEX, 'f'),
        ];
        let refs: Vec<&JsonDescriptor> = children.iter().collect();
        let labels = gc_labels(&refs);
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
        assert_eq!(clean_path("./a//b/../c/"), "a/c");
        assert_eq!(
            blob_digest(&format!("blobs/sha256/{}", "0".repeat(64))),
            Some(format!("sha256:{}", "0".repeat(64)))
        );
        assert_eq!(blob_digest("blobs/sha256/xyz"), None);
    }
}
