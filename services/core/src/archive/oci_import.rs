//! Importing an OCI image layout: every `blobs/<alg>/<hex>` verified against its name, each
//! `index.json` entry walked and named.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use berth_oci::image::layout::{LAYOUT_VERSION, OciLayout};
use berth_oci::image::{self as oci, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, Platform};

use super::ingest::Want;
use super::tar_stream::{Listing, blob_digest};
use super::walk::Side;
use super::{Archives, INDEX_FILE, ImportOptions, Imported, LAYOUT_FILE, blob_tar_path};
use crate::digest;
use crate::error::{Error, Result};
use crate::images::Descriptor;

impl Archives {
    /// Ingests the OCI layout's blobs, then walks and names each `index.json` entry.
    pub(super) async fn import_oci(
        &self,
        namespace: &str,
        archive: &Path,
        listing: &Listing,
        entries: Vec<oci::Descriptor>,
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
        let wanted = self.wanted_blobs(namespace, listing, opts).await?;
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
        for (i, (name, mut entry)) in named.into_iter().enumerate() {
            if entry.media_type.is_empty() {
                entry.media_type = self.sniff(namespace, &entry.digest).await?;
            }
            let what = format!("archive {}: {INDEX_FILE} entry {i}", archive.display());
            if walked_roots.insert(entry.digest.clone()) {
                let walked = self
                    .walk(namespace, &entry, platform, &what, Side::Import)
                    .await?;
                labels.extend(walked.labels);
            }
            if entry.media_type.is_empty() || entry.size <= 0 {
                return Err(Error::invalid(format!(
                    "{what} ({}) needs a media type and a size",
                    entry.digest
                )));
            }
            images.push((name, Descriptor::from(&entry)));
        }
        Ok(Imported { images, labels })
    }

    /// The blob files of the archive to store: each `blobs/<alg>/<hex>` the namespace does
    /// not have yet. One it has is held in the import's lease instead (a collection may be
    /// about to take it) — or read after all if one just did.
    async fn wanted_blobs(
        &self,
        namespace: &str,
        listing: &Listing,
        opts: &ImportOptions,
    ) -> Result<HashMap<String, Want>> {
        let mut wanted = HashMap::new();
        for (name, size) in &listing.files {
            let Some(d) = blob_digest(name) else {
                if name.starts_with("blobs/") {
                    tracing::warn!(file = %name, "not a blob path: ignored");
                }
                continue;
            };
            match self.content.info(namespace, &d).await {
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
        Ok(wanted)
    }
}

/// Checks `oci-layout` and returns the entries of `index.json`.
pub(super) fn parse_layout(
    archive: &Path,
    layout: &[u8],
    index: Option<&[u8]>,
) -> Result<Vec<oci::Descriptor>> {
    let layout: OciLayout = serde_json::from_slice(layout).map_err(|e| {
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
    let index: oci::Index = serde_json::from_slice(index).map_err(|e| {
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
pub(super) fn oci_entry_name(
    i: usize,
    entry: &oci::Descriptor,
    base: Option<&str>,
) -> Result<String> {
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
