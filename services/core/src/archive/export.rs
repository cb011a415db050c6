//! Exporting images: the tree under each image walked, an OCI layout plus a Docker
//! `manifest.json` built, and the tar written to a temporary file, fsynced and renamed into
//! place.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use berth_oci::image::layout::OciLayout;
use berth_oci::image::{
    self as oci, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, DISTRIBUTION_SOURCE_PREFIX, MediaType,
    Platform,
};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::docker_import::DockerEntry;
use super::walk::{Side, Walked, WalkedManifest};
use super::{
    Archives, DOCKER_MANIFEST_FILE, ExportOptions, INDEX_FILE, LAYOUT_FILE, blob_tar_path, blocking,
};
use crate::error::{Error, Result};
use crate::registry::Reference;

/// What an export gathers before it writes: every blob once, the `index.json` entries, the
/// `manifest.json` entries (by manifest digest).
#[derive(Default)]
struct Gathered {
    blobs: BTreeMap<String, (PathBuf, i64)>,
    index: Vec<oci::Descriptor>,
    docker: Vec<(String, DockerEntry)>,
}

impl Archives {
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
        let platform = opts
            .platform
            .as_deref()
            .map(oci::parse_platform)
            .transpose()?;
        let mut gathered = Gathered::default();
        let mut seen_names = HashSet::new();
        for name in names {
            if !seen_names.insert(name.as_str()) {
                continue;
            }
            self.gather(namespace, name, platform.as_ref(), &opts, &mut gathered)
                .await?;
        }
        let blob_count = gathered.blobs.len();
        let records = records(gathered)?;
        let out = out.to_path_buf();
        blocking(move || write_archive(&out, records)).await?;
        tracing::info!(
            images = seen_names.len(),
            blobs = blob_count,
            "exported images"
        );
        Ok(())
    }

    /// Adds one image to the export: its blobs, its `index.json` entry and, if it resolves
    /// to one manifest, its `manifest.json` entry.
    async fn gather(
        &self,
        namespace: &str,
        name: &str,
        platform: Option<&Platform>,
        opts: &ExportOptions,
        gathered: &mut Gathered,
    ) -> Result<()> {
        let image = self.images.get(namespace, name).await?;
        let target = oci::Descriptor::from(&image.target());
        if target.media_type.kind().is_err() {
            return Err(Error::invalid(format!(
                "image {name:?}: only manifests and indexes may be exported, \
                 the target is {:?}",
                target.media_type.as_str()
            )));
        }
        let walked: Walked = self
            .walk(
                namespace,
                &target,
                platform,
                &format!("image {name:?}"),
                Side::Export,
            )
            .await?;
        for (digest, size) in walked.blobs {
            if let std::collections::btree_map::Entry::Vacant(slot) = gathered.blobs.entry(digest) {
                let path = self.content.blob_path(slot.key())?;
                slot.insert((path, size));
            }
        }

        let mut entry = target.clone();
        let info = self.content.info(namespace, &target.digest).await?;
        for (k, v) in &info.labels {
            if k.starts_with(DISTRIBUTION_SOURCE_PREFIX) {
                entry.annotations.insert(k.clone(), v.clone());
            }
        }
        entry
            .annotations
            .insert(ANNOTATION_IMAGE_NAME.into(), name.to_string());
        entry
            .annotations
            .insert(ANNOTATION_REF_NAME.into(), oci_ref_name(name));
        gathered.index.push(entry);

        if opts.skip_docker_manifest {
            return Ok(());
        }
        let Some(m) = docker_candidate(&walked.manifests, platform) else {
            tracing::debug!(image = %name, "no single manifest: not in manifest.json");
            return Ok(());
        };
        add_docker_entry(&mut gathered.docker, m, repo_tag(name))
    }
}

/// Adds the manifest's `manifest.json` entry (once per manifest) with the tag.
fn add_docker_entry(
    docker: &mut Vec<(String, DockerEntry)>,
    m: &WalkedManifest,
    tag: Option<String>,
) -> Result<()> {
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
    Ok(())
}

/// The records of the archive: the layout, its index, `manifest.json` if any image has
/// one, every blob.
fn records(gathered: Gathered) -> Result<Vec<Record>> {
    let index = oci::Index {
        schema_version: 2,
        media_type: MediaType::OciIndex,
        manifests: gathered.index,
        annotations: BTreeMap::new(),
    };
    let mut records = vec![
        Record::dir("blobs/"),
        Record::dir("blobs/sha256/"),
        Record::bytes(LAYOUT_FILE, 0o444, to_json(&OciLayout::default())?),
        Record::bytes(INDEX_FILE, 0o644, to_json(&index)?),
    ];
    if !gathered.docker.is_empty() {
        let entries: Vec<DockerEntry> = gathered.docker.into_iter().map(|(_, e)| e).collect();
        records.push(Record::bytes(
            DOCKER_MANIFEST_FILE,
            0o644,
            to_json(&entries)?,
        ));
    }
    for (digest, (path, size)) in gathered.blobs {
        records.push(Record {
            name: blob_tar_path(&digest)?,
            mode: 0o444,
            body: Body::Blob { path, digest, size },
        });
    }
    Ok(records)
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Internal(format!("encode JSON: {e}")))
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
            m.manifest.config.media_type.is_image_config()
                && m.desc
                    .annotations
                    .get("vnd.docker.reference.type")
                    .is_none_or(|t| t != "attestation-manifest")
        })
        .collect();
    match platform {
        Some(want) => images.into_iter().min_by_key(|m| match &m.desc.platform {
            Some(have) if oci::normalize(have.clone()) == *want => 0,
            Some(_) => 1,
            None => 2,
        }),
        None if images.len() == 1 => images.into_iter().next(),
        None => None,
    }
}

/// containerd's `ociReferenceName`: the tag (and digest) of a full name, or the whole name
/// when it has no tag.
pub(super) fn oci_ref_name(name: &str) -> String {
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

/// The short `name:tag` Docker shows (`busybox:latest`), for `RepoTags`; `None` for a name
/// that is not a reference or has no tag, which `docker load` would refuse.
pub(super) fn repo_tag(name: &str) -> Option<String> {
    let r = Reference::parse_named(name).ok()?;
    Some(r.with_tag(r.tag()?).ok()?.familiar())
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
    let mut tmp = TempFile {
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
    for record in records {
        append(&mut builder, record, &tmp.path)?;
    }
    let werr = |e: io::Error| Error::io("write", &tmp.path, e);
    let file = builder
        .into_inner()
        .map_err(werr)?
        .into_inner()
        .map_err(|e| werr(e.into_error()))?;
    file.sync_all()
        .map_err(|e| Error::io("fsync", &tmp.path, e))?;
    drop(file);
    fs::rename(&tmp.path, out).map_err(|e| Error::io("rename archive to", out, e))?;
    tmp.keep = true;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync", &dir, e))?;
    Ok(())
}

/// Appends one record to the tar being written to `tmp`.
fn append<W: io::Write>(builder: &mut tar::Builder<W>, record: Record, tmp: &Path) -> Result<()> {
    let werr = |e: io::Error| Error::io("write", tmp, e);
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
            builder.append(&header, io::empty()).map_err(werr)
        }
        Body::Bytes(data) => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(data.len() as u64);
            header.set_cksum();
            builder.append(&header, data.as_slice()).map_err(werr)
        }
        Body::Blob { path, digest, size } => append_blob(builder, header, &path, &digest, size),
    }
}

/// Appends a blob file, hashing it on the way: a file whose size or digest is not its
/// record's fails the export.
fn append_blob<W: io::Write>(
    builder: &mut tar::Builder<W>,
    mut header: tar::Header,
    path: &Path,
    digest: &str,
    size: i64,
) -> Result<()> {
    let size =
        u64::try_from(size).map_err(|_| Error::invalid(format!("blob {digest}: negative size")))?;
    let blob = File::open(path).map_err(|e| Error::io("open blob", path, e))?;
    let on_disk = blob
        .metadata()
        .map_err(|e| Error::io("stat blob", path, e))?
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
        .map_err(|e| Error::io("copy blob", path, e))?;
    let actual = format!("sha256:{}", hex::encode(reader.hasher.finalize()));
    if reader.count != size || actual != digest {
        return Err(Error::precondition(format!(
            "blob {digest} at {} is damaged: read {} bytes with digest {actual}",
            path.display(),
            reader.count
        )));
    }
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
