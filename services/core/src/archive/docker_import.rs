//! Importing a Docker `save` archive: the configs and layers `manifest.json` names are
//! stored and a schema 2 manifest is built for each entry exactly as containerd's importer
//! builds it (same JSON bytes, so the same digest).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use berth_oci::image::{self as oci, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, MediaType};
use serde::{Deserialize, Serialize};

use super::export::oci_ref_name;
use super::ingest::{Ingested, Want};
use super::tar_stream::{Listing, blob_digest};
use super::{Archives, DOCKER_MANIFEST_FILE, ImportOptions, Imported};
use crate::error::{Error, Result};
use crate::images::Descriptor;
use crate::registry::Reference;

/// One entry of a Docker `save` archive's `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct DockerEntry {
    #[serde(rename = "Config", default)]
    pub config: String,
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    pub layers: Option<Vec<String>>,
}

/// One entry resolved to the archive's files, and its names.
struct Planned {
    config: String,
    layers: Vec<String>,
    names: Vec<String>,
}

impl Archives {
    /// Ingests a Docker `save` archive's configs and layers and builds a schema 2 manifest
    /// for each `manifest.json` entry.
    pub(super) async fn import_docker(
        &self,
        namespace: &str,
        archive: &Path,
        listing: &Listing,
        entries: Vec<DockerEntry>,
        opts: &ImportOptions,
    ) -> Result<Imported> {
        if entries.is_empty() {
            return Err(Error::invalid(format!(
                "archive {}: {DOCKER_MANIFEST_FILE} lists no images",
                archive.display()
            )));
        }
        // Resolve every file and name before writing anything.
        let (planned, wanted) = plan(archive, listing, &entries, opts)?;
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
            let layers = p
                .layers
                .iter()
                .map(|l| get(l))
                .collect::<Result<Vec<_>>>()?;
            let manifest = docker_manifest(get(&p.config)?, &layers);
            let gc = oci::child_gc_labels(manifest.children());
            let json = serde_json::to_vec(&manifest)
                .map_err(|e| Error::Internal(format!("encode JSON: {e}")))?;
            let (digest, size) = self.put_blob(namespace, json, opts.lease.clone()).await?;
            labels.push((digest.clone(), gc));
            let target = |annotations| Descriptor {
                media_type: oci::DOCKER_MANIFEST.into(),
                digest: digest.clone(),
                size,
                annotations,
            };
            if p.names.is_empty() {
                // Checked by `plan`: a base name exists.
                let base = opts.base_name.as_deref().unwrap_or_default();
                images.push((format!("{base}@{digest}"), target(BTreeMap::new())));
            }
            for name in p.names {
                let annotations = BTreeMap::from([
                    (ANNOTATION_IMAGE_NAME.to_string(), name.clone()),
                    (ANNOTATION_REF_NAME.to_string(), oci_ref_name(&name)),
                ]);
                images.push((name, target(annotations)));
            }
        }
        Ok(Imported { images, labels })
    }
}

/// Resolves each entry's files (following links) and names, and the files to store.
fn plan(
    archive: &Path,
    listing: &Listing,
    entries: &[DockerEntry],
    opts: &ImportOptions,
) -> Result<(Vec<Planned>, HashMap<String, Want>)> {
    let where_ = |i: usize| {
        format!(
            "archive {}: {DOCKER_MANIFEST_FILE} entry {i}",
            archive.display()
        )
    };
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
    Ok((planned, wanted))
}

/// The manifest containerd's importer builds for a Docker `save` entry: the config, and
/// each layer typed by how it was stored.
fn docker_manifest(config: &Ingested, layers: &[&Ingested]) -> oci::Manifest {
    oci::Manifest {
        schema_version: 2,
        media_type: MediaType::DockerManifest,
        config: oci::Descriptor {
            media_type: MediaType::DockerConfig,
            digest: config.digest.clone(),
            size: config.size,
            ..Default::default()
        },
        layers: layers
            .iter()
            .map(|b| oci::Descriptor {
                media_type: b.compression.docker_layer_type(),
                digest: b.digest.clone(),
                size: b.size,
                ..Default::default()
            })
            .collect(),
        annotations: BTreeMap::new(),
    }
}

/// containerd's `ParseDockerRef`: the normalised name (`busybox:latest` →
/// `docker.io/library/busybox:latest`), with `:latest` when it has neither tag nor digest,
/// and without the tag when it has a digest.
pub(super) fn docker_ref_name(s: &str) -> Result<String> {
    let r = Reference::parse(s)?;
    Ok(match r.digest() {
        Some(d) => format!("{}@{d}", r.name()),
        None => r.to_string(),
    })
}
