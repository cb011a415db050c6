//! Pull: resolve a reference at its registry, fetch the manifest or index, pick the
//! platform(s), fetch config and layers into the content store and record the image.
//!
//! - Everything runs under a lease (with a `containerd.io/gc.expire` label) so garbage
//!   collection leaves in-flight content alone; the lease holds each blob's ingest too. It
//!   is deleted when the pull succeeds or meets a full disk. A pull that fails otherwise
//!   leaves it to expire after the content store's ingest expiry: what was fetched (blobs
//!   and partial ingests) stays that long for a resumed pull, then is collected.
//! - Each blob is written through `ContentStore::writer` under containerd's ingest ref
//!   (`manifest-<digest>`, `index-<digest>`, `config-<digest>`, `layer-<digest>`), so an
//!   interrupted pull resumes: the writer reports what is already there and the registry is
//!   asked for the rest (`Range: bytes=<offset>-`); if it sends everything instead (200,
//!   not 206) the ingest starts over. Blobs the namespace already has are not fetched.
//! - Labels as containerd sets them: `containerd.io/gc.ref.content.m.<i>` on an index,
//!   `containerd.io/gc.ref.content.config` and `containerd.io/gc.ref.content.l.<i>` on a
//!   manifest, `containerd.io/distribution.source.<host>=<repository>` on every blob.
//! - With [`PullOptions::unpack`], the manifest for the unpack platform (the host's unless
//!   told) is unpacked into a snapshotter ([`crate::unpack`]) under the same lease, before
//!   the image record is written: a failed unpack leaves no image record behind.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use berth_oci::image::{self as oci, DISTRIBUTION_SOURCE_PREFIX, Kind, MediaType, Platform};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use crate::content::{ContentStore, Writer};
use crate::error::{Error, Result};
use crate::images::{Descriptor, Image, Images};
use crate::leases::{self, Leases, Resource};
use crate::registry::{Hosts, Progress, ProgressState, Reference, Registries, RegistryClient};
use crate::unpack::{UnpackRequest, Unpacker};

pub use crate::registry::{Progress as PullProgress, ProgressState as PullState};

/// How long the pull's lease lives if berthd dies before deleting it.
const LEASE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Bytes gathered before each write to the ingest.
const WRITE_CHUNK: usize = 1 << 20;
/// How long to wait for another writer of the same blob to finish.
const LOCK_WAIT: Duration = Duration::from_secs(600);

/// How to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// `os/arch[/variant]`; the host's platform when unset.
    pub platform: Option<String>,
    /// Fetch every manifest of an index (overrides `platform`).
    pub all_platforms: bool,
    /// Plain HTTP to the registry (ctr's `--plain-http`).
    pub plain_http: bool,
    /// Skip TLS verification (ctr's `--skip-verify`).
    pub skip_verify: bool,
    /// Blobs fetched at once; 0 means [`crate::blobs::DEFAULT_CONCURRENCY`].
    pub max_concurrent_downloads: usize,
    /// Fetch the content only, without creating or updating an image record (`ctr content
    /// fetch`); the returned image is not stored.
    pub content_only: bool,
    /// Unpack the image into a snapshotter after fetching it (needs a puller made
    /// [`Puller::with_unpacker`]; ignored with `content_only`).
    pub unpack: bool,
    /// The snapshotter to unpack into; the default one when unset.
    pub snapshotter: Option<String>,
    /// The platform to unpack (`os/arch[/variant]`); `platform`, else the host's, when unset.
    pub unpack_platform: Option<String>,
    /// Run under this (client's) lease instead of one of the pull's own; it is left in place.
    pub lease: Option<String>,
}

/// Pulls images from registries into the content store.
#[derive(Clone)]
pub struct Puller {
    content: ContentStore,
    images: Images,
    leases: Leases,
    registries: Registries,
    unpacker: Option<Unpacker>,
}

/// A manifest the pull fetched, with what unpacking needs of it.
struct Picked {
    manifest: Descriptor,
    /// The platform its index entry names, if it came from an index that names one.
    platform: Option<Platform>,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// What one pull shares among its steps.
struct Job<'a> {
    namespace: &'a str,
    reference: &'a Reference,
    client: &'a RegistryClient,
    lease: &'a str,
    progress: &'a mpsc::Sender<Progress>,
}

impl Job<'_> {
    fn source_key(&self) -> String {
        format!("{DISTRIBUTION_SOURCE_PREFIX}{}", self.reference.domain())
    }

    async fn report(&self, desc: &Descriptor, offset: i64, state: ProgressState) {
        // A receiver that went away only stops the reports, never the pull.
        let _ = self.progress.send(Progress::new(desc, offset, state)).await;
    }

    fn report_soon(&self, desc: &Descriptor, offset: i64) {
        let _ = self
            .progress
            .try_send(Progress::new(desc, offset, ProgressState::Downloading));
    }
}

/// containerd's ingest ref for a descriptor (`remotes.MakeRefKey`).
pub fn ref_key(desc: &Descriptor) -> String {
    let mt = MediaType::from(&desc.media_type);
    let kind = if mt.is_manifest() {
        "manifest"
    } else if mt.is_index() {
        "index"
    } else if mt.is_layer() {
        "layer"
    } else if mt.is_config() {
        "config"
    } else {
        "unknown"
    };
    format!("{kind}-{}", desc.digest)
}

/// What the walk over a pull's manifests and indexes found.
#[derive(Default)]
struct Walked {
    /// Configs, layers and other blobs that are not manifests, once each, in order.
    blobs: Vec<Descriptor>,
    /// (manifest, config) of the manifests reached without a platform: the config must
    /// state the wanted one.
    to_check: Vec<(Descriptor, Descriptor)>,
    /// The image manifests met.
    picked: Vec<Picked>,
}

impl Walked {
    fn add_blob(&mut self, desc: Descriptor) {
        if !self.blobs.iter().any(|b| b.digest == desc.digest) {
            self.blobs.push(desc);
        }
    }
}

impl Puller {
    /// `hosts_dir` is the registry hosts directory (`config.registry.config_path`),
    /// `credentials` the `config.json`-style credentials file; either may not exist.
    pub fn new(
        content: ContentStore,
        images: Images,
        leases: Leases,
        hosts: impl Into<Hosts>,
        credentials: PathBuf,
    ) -> Puller {
        Puller {
            content,
            images,
            leases,
            registries: Registries {
                hosts: hosts.into(),
                credentials,
            },
            unpacker: None,
        }
    }

    /// Lets pulls with [`PullOptions::unpack`] unpack through `unpacker`.
    pub fn with_unpacker(mut self, unpacker: Unpacker) -> Puller {
        self.unpacker = Some(unpacker);
        self
    }

    /// Pulls `reference` into the namespace and creates or updates its image record (named
    /// by the normalised reference). Progress reports go to `progress`: the caller keeps
    /// receiving until the channel closes (a full channel makes the pull wait; byte counts
    /// are dropped rather than waited for) or drops the receiver (reports stop, the pull
    /// goes on).
    #[tracing::instrument(skip(self, opts, progress), fields(namespace = %namespace, reference = %reference))]
    pub async fn pull(
        &self,
        namespace: &str,
        reference: &str,
        opts: PullOptions,
        progress: mpsc::Sender<Progress>,
    ) -> Result<Image> {
        let reference = Reference::parse(reference)?;
        let want = if opts.all_platforms {
            None
        } else {
            Some(match &opts.platform {
                Some(p) => oci::parse_platform(p)?,
                None => oci::host_platform(),
            })
        };
        let client = self
            .registries
            .client(reference.domain(), opts.plain_http, opts.skip_verify)
            .await?;
        let root = client.resolve(reference.path(), reference.object()).await?;
        MediaType::from(&root.media_type)
            .kind()
            .map_err(|e| Error::from(e).context(&reference.to_string()))?;
        tracing::debug!(digest = %root.digest, media_type = %root.media_type, "resolved");

        let own_lease = opts.lease.is_none();
        let lease = match &opts.lease {
            Some(l) => l.clone(),
            None => self.start_lease(namespace).await?,
        };
        let job = Job {
            namespace,
            reference: &reference,
            client: &client,
            lease: &lease,
            progress: &progress,
        };
        let result = self.pull_leased(&job, &root, want.as_ref(), &opts).await;
        if own_lease {
            let kept = match &result {
                Err(e) if !e.is_no_space() => {
                    let keep = self.content.ingest_expiry();
                    self.leases
                        .expire_after(namespace, &lease, keep)
                        .await
                        .inspect(|()| {
                            tracing::info!(lease = %lease, keep = %humantime::format_duration(keep), "pull failed: what it fetched is kept for a resumed pull")
                        })
                        .is_ok()
                }
                _ => false,
            };
            if !kept && let Err(e) = self.leases.delete(namespace, &lease).await {
                tracing::warn!(lease = %lease, error = %e, "could not delete the pull's lease; it expires by itself");
            }
        }
        let image = result?;
        tracing::info!(image = %image.name, digest = %root.digest, "pulled");
        Ok(image)
    }

    async fn start_lease(&self, namespace: &str) -> Result<String> {
        self.leases
            .create_temporary(namespace, leases::PULL_LEASE_PREFIX, LEASE_TTL)
            .await
    }

    async fn pull_leased(
        &self,
        job: &Job<'_>,
        root: &Descriptor,
        want: Option<&Platform>,
        opts: &PullOptions,
    ) -> Result<Image> {
        let walked = self.fetch_manifests(job, root, want).await?;
        let concurrency = crate::blobs::concurrency(opts.max_concurrent_downloads);
        for b in &walked.blobs {
            job.report(b, 0, ProgressState::Waiting).await;
        }
        // Configs first: a manifest for the wrong platform fails before its layers come.
        let (configs, layers): (Vec<Descriptor>, Vec<Descriptor>) =
            walked.blobs.into_iter().partition(|b| {
                MediaType::from(&b.media_type).is_image_config()
                    || walked.to_check.iter().any(|(_, c)| c.digest == b.digest)
            });
        self.fetch_all(job, &configs, concurrency).await?;
        if let Some(want) = want {
            for (manifest, config) in &walked.to_check {
                self.check_config_platform(job, manifest, config, want)
                    .await?;
            }
        }
        self.fetch_all(job, &layers, concurrency).await?;

        if opts.unpack && !opts.content_only {
            self.unpack(job, &walked.picked, opts).await?;
        }

        let image = Image {
            name: job.reference.to_string(),
            labels: BTreeMap::new(),
            target: Some(Descriptor {
                media_type: root.media_type.clone(),
                digest: root.digest.clone(),
                size: root.size,
                annotations: BTreeMap::new(),
            }),
            created_at: 0,
            updated_at: 0,
        };
        if opts.content_only {
            return Ok(image);
        }
        self.images
            .create_or_update(job.namespace, image, vec!["target".to_string()])
            .await
            .map(|(i, _)| i)
    }

    /// Fetches the manifests and indexes from `root` down, depth first, each stored with its
    /// children's labels, and collects the blobs they name.
    async fn fetch_manifests(
        &self,
        job: &Job<'_>,
        root: &Descriptor,
        want: Option<&Platform>,
    ) -> Result<Walked> {
        let mut walked = Walked::default();
        let mut seen: HashSet<String> = HashSet::new();
        // (descriptor, whether its platform still needs checking against its config)
        let mut stack: Vec<(Descriptor, bool)> = vec![(root.clone(), true)];
        let mut platforms: HashMap<String, Platform> = HashMap::new();
        while let Some((desc, check_platform)) = stack.pop() {
            if !seen.insert(desc.digest.clone()) {
                continue;
            }
            let kind = MediaType::from(&desc.media_type).kind().map_err(|e| {
                Error::from(e).context(&format!("{} {}", job.reference, desc.digest))
            })?;
            let data = self.manifest_bytes(job, &desc).await?;
            let children = match kind {
                Kind::Index => {
                    let index = oci::parse_index(&desc.digest, &data)?;
                    let picked = select_manifests(job.reference, &desc, &index, want)?;
                    for m in &picked {
                        if let Some(p) = &m.platform {
                            platforms
                                .entry(m.digest.clone())
                                .or_insert_with(|| oci::normalize(p.clone()));
                        }
                    }
                    for child in picked.iter().rev() {
                        if child.media_type.is_manifest_or_index() {
                            stack.push((Descriptor::from(*child), child.platform.is_none()));
                        } else if child.media_type.is_schema1() {
                            child
                                .media_type
                                .kind()
                                .map_err(|e| Error::from(e).context(&job.reference.to_string()))?;
                        } else {
                            // Not an image (an artifact): fetched as a plain blob.
                            walked.add_blob(Descriptor::from(*child));
                        }
                    }
                    picked.into_iter().cloned().collect()
                }
                Kind::Manifest => {
                    let m = oci::parse_manifest(&desc.digest, &data)?;
                    if m.schema_version != 2 {
                        return Err(Error::precondition(format!(
                            "manifest {} of {} has schemaVersion {}; only schema 2 is supported",
                            desc.digest, job.reference, m.schema_version
                        )));
                    }
                    let config = Descriptor::from(&m.config);
                    if check_platform && want.is_some() {
                        walked.to_check.push((desc.clone(), config.clone()));
                    }
                    walked.picked.push(Picked {
                        manifest: desc.clone(),
                        platform: platforms.get(&desc.digest).cloned(),
                        config,
                        layers: m.layers.iter().map(Descriptor::from).collect(),
                    });
                    m.children()
                        .for_each(|c| walked.add_blob(Descriptor::from(c)));
                    m.children().cloned().collect::<Vec<_>>()
                }
            };
            let labels = oci::child_gc_labels(&children);
            self.store_manifest(job, &desc, data, labels).await?;
        }
        Ok(walked)
    }

    async fn fetch_all(
        &self,
        job: &Job<'_>,
        blobs: &[Descriptor],
        concurrency: usize,
    ) -> Result<()> {
        // The futures are made first: a closure inside the stream would make the whole
        // pull future `Send` only for one lifetime (rust-lang/rust#64552).
        let fetches: Vec<_> = blobs.iter().map(|b| self.fetch_blob(job, b)).collect();
        futures::stream::iter(fetches)
            .buffer_unordered(concurrency)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
    }

    /// The bytes of a manifest or index: from the store when the namespace has it, else from
    /// the registry (size and digest checked).
    async fn manifest_bytes(&self, job: &Job<'_>, desc: &Descriptor) -> Result<Vec<u8>> {
        if self.content.info(job.namespace, &desc.digest).await.is_ok() {
            let data = self.read_blob(job.namespace, &desc.digest).await?;
            crate::registry::client::verify(&data, desc)?;
            return Ok(data);
        }
        job.client.fetch_manifest(job.reference.path(), desc).await
    }

    async fn read_blob(&self, namespace: &str, digest: &str) -> Result<Vec<u8>> {
        crate::blobs::read_blob(&self.content, namespace, digest).await
    }

    /// Opens the writer for a blob, waiting while another pull writes the same ref. `None`
    /// when the namespace has the blob already.
    async fn open_writer(&self, job: &Job<'_>, desc: &Descriptor) -> Result<Option<Writer>> {
        let key = ref_key(desc);
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            match self
                .content
                .writer(
                    job.namespace,
                    &key,
                    desc.size,
                    &desc.digest,
                    Some(job.lease),
                )
                .await
            {
                Ok(w) => return Ok(Some(w)),
                Err(Error::AlreadyExists(_)) => return Ok(None),
                Err(Error::Unavailable(m)) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(reference = %key, reason = %m, "ingest busy; waiting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Marks a blob the namespace already has: holds it in the lease and adds the source.
    async fn mark_existing(
        &self,
        job: &Job<'_>,
        desc: &Descriptor,
        extra: BTreeMap<String, String>,
    ) -> Result<()> {
        self.leases
            .add_resource(job.namespace, job.lease, Resource::content(&desc.digest))
            .await?;
        let info = self.content.info(job.namespace, &desc.digest).await?;
        let key = job.source_key();
        let mut labels = extra;
        labels.insert(
            key.clone(),
            oci::append_source(
                info.labels.get(&key).map(String::as_str),
                job.reference.path(),
            ),
        );
        let changed: Vec<String> = labels
            .iter()
            .filter(|(k, v)| info.labels.get(*k) != Some(*v))
            .map(|(k, _)| format!("labels.{k}"))
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        let mut update = info;
        update.labels = labels;
        self.content.update(job.namespace, update, changed).await?;
        Ok(())
    }

    async fn store_manifest(
        &self,
        job: &Job<'_>,
        desc: &Descriptor,
        data: Vec<u8>,
        children: BTreeMap<String, String>,
    ) -> Result<()> {
        let Some(mut w) = self.open_writer(job, desc).await? else {
            self.mark_existing(job, desc, children).await?;
            job.report(desc, desc.size, ProgressState::Exists).await;
            return Ok(());
        };
        if w.offset() != 0 {
            w.truncate().await?;
        }
        w.write(data).await?;
        self.commit_blob(job, desc, w, children)
            .await
            .map_err(|e| e.context(&format!("storing {} of {}", desc.digest, job.reference)))
    }

    /// Commits a written blob with `extra` labels and the pull's source label. Another
    /// writer may have stored the same blob meanwhile under another ref (a concurrent
    /// client-side pull through `Content.Write`): the commit answers AlreadyExists, with the
    /// blob held in the pull's lease, and the blob counts as stored, as in containerd.
    async fn commit_blob(
        &self,
        job: &Job<'_>,
        desc: &Descriptor,
        w: Writer,
        extra: BTreeMap<String, String>,
    ) -> Result<()> {
        let mut labels = extra.clone();
        labels.insert(job.source_key(), job.reference.path().to_string());
        match w
            .commit(desc.size, &desc.digest, labels, Some(job.lease.to_string()))
            .await
        {
            Ok(_) => job.report(desc, desc.size, ProgressState::Done).await,
            Err(Error::AlreadyExists(_)) => {
                tracing::debug!(digest = %desc.digest, "stored meanwhile by another writer");
                self.mark_existing(job, desc, extra).await?;
                job.report(desc, desc.size, ProgressState::Exists).await;
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Fetches one config or layer into the content store, resuming a partial ingest.
    #[tracing::instrument(level = "debug", skip(self, job, desc), fields(digest = %desc.digest))]
    async fn fetch_blob(&self, job: &Job<'_>, desc: &Descriptor) -> Result<()> {
        let Some(w) = self.open_writer(job, desc).await? else {
            self.mark_existing(job, desc, BTreeMap::new()).await?;
            job.report(desc, desc.size, ProgressState::Exists).await;
            return Ok(());
        };
        let result = self.fetch_into(job, desc, w).await;
        if let Err(e) = &result
            && e.is_no_space()
        {
            // A partial blob on a full disk is what keeps it full: it goes (the next pull
            // starts that blob over). Any other failure keeps it for a resumed pull.
            if let Err(abort) = self.content.abort(job.namespace, &ref_key(desc)).await {
                tracing::debug!(digest = %desc.digest, error = %abort, "abort the ingest of a blob that met a full disk");
            }
        }
        result
    }

    /// Downloads `desc` through `w` (resuming at its offset) and commits it.
    async fn fetch_into(&self, job: &Job<'_>, desc: &Descriptor, mut w: Writer) -> Result<()> {
        let size = u64::try_from(desc.size).unwrap_or(0);
        let mut offset = u64::try_from(w.offset()).unwrap_or(0);
        if desc.size > 0 && offset > size {
            w.truncate().await?;
            offset = 0;
        }
        if desc.size <= 0 || offset < size {
            let mut reader = job
                .client
                .fetch_blob(job.reference.path(), desc, offset)
                .await?;
            if reader.start != offset {
                tracing::debug!(offset, "registry ignored the range; starting over");
                w.truncate().await?;
                offset = 0;
            } else if offset > 0 {
                tracing::debug!(offset, "resuming");
            }
            job.report(desc, offset as i64, ProgressState::Downloading)
                .await;
            let mut buf = Vec::with_capacity(WRITE_CHUNK);
            loop {
                let n = reader.read_into(&mut buf).await?;
                if n == 0 || buf.len() >= WRITE_CHUNK {
                    offset += buf.len() as u64;
                    if desc.size > 0 && offset > size {
                        drop(w);
                        let _ = self.content.abort(job.namespace, &ref_key(desc)).await;
                        return Err(Error::precondition(format!(
                            "registry {} sent more than the {size} bytes of blob {}",
                            job.client.registry(),
                            desc.digest
                        )));
                    }
                    if !buf.is_empty() {
                        w.write(std::mem::replace(&mut buf, Vec::with_capacity(WRITE_CHUNK)))
                            .await?;
                        job.report_soon(desc, offset as i64);
                    }
                }
                if n == 0 {
                    break;
                }
            }
        }
        self.commit_blob(job, desc, w, BTreeMap::new())
            .await
            .map_err(|e| {
                e.context(&format!(
                    "blob {} from {}/{}",
                    desc.digest,
                    job.client.registry(),
                    job.reference.path()
                ))
            })
    }

    /// Unpacks the fetched manifest that best matches the unpack platform.
    async fn unpack(&self, job: &Job<'_>, picked: &[Picked], opts: &PullOptions) -> Result<()> {
        let unpacker = self.unpacker.as_ref().ok_or_else(|| {
            Error::NotImplemented("unpacking: this puller has no snapshotters".into())
        })?;
        let want = match opts.unpack_platform.as_ref().or(opts.platform.as_ref()) {
            Some(p) => oci::parse_platform(p)?,
            None => oci::host_platform(),
        };
        let best = oci::best_match(&want, picked.iter().map(|p| (p.platform.as_ref(), p)))
            .ok_or_else(|| {
                Error::not_found(format!(
                    "no manifest of {} for platform {want} to unpack",
                    job.reference
                ))
            })?;
        let snapshotter = opts.snapshotter.as_deref().unwrap_or_default();
        tracing::debug!(manifest = %best.manifest.digest, platform = %want, "unpacking");
        for l in &best.layers {
            job.report(l, l.size, ProgressState::Unpacking).await;
        }
        unpacker
            .unpack(UnpackRequest {
                namespace: job.namespace,
                lease: job.lease,
                snapshotter,
                config: &best.config,
                layers: &best.layers,
            })
            .await
            .map_err(|e| e.context(&format!("unpacking {}", job.reference)))?;
        for l in &best.layers {
            job.report(l, l.size, ProgressState::Done).await;
        }
        Ok(())
    }

    /// For a manifest reached without a platform (the root, or an index entry without one):
    /// its config must say the wanted platform.
    async fn check_config_platform(
        &self,
        job: &Job<'_>,
        manifest: &Descriptor,
        config: &Descriptor,
        want: &Platform,
    ) -> Result<()> {
        let data = self.read_blob(job.namespace, &config.digest).await?;
        let Ok(image_config) = serde_json::from_slice::<oci::ImageConfig>(&data) else {
            return Ok(());
        };
        let Some(have) = image_config.platform().map(oci::normalize) else {
            return Ok(());
        };
        if oci::match_rank(want, &have).is_none() {
            return Err(Error::not_found(format!(
                "no match for platform {want} in manifest {} of {}: the image is for {have} only",
                manifest.digest, job.reference
            )));
        }
        Ok(())
    }
}

/// Picks an index's manifests: all of them, or the best match for the platform.
fn select_manifests<'a>(
    reference: &Reference,
    index_desc: &Descriptor,
    index: &'a oci::Index,
    want: Option<&Platform>,
) -> Result<Vec<&'a oci::Descriptor>> {
    let Some(want) = want else {
        return Ok(index.manifests.iter().collect());
    };
    // No platform in the index: decided by its config later, as containerd does.
    let candidates = index
        .manifests
        .iter()
        .filter(|m| m.media_type.is_manifest_or_index())
        .map(|m| (m.platform.as_ref(), m));
    if let Some(m) = oci::best_match(want, candidates) {
        return Ok(vec![m]);
    }
    let mut available: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|m| m.platform.as_ref())
        .filter(|p| p.os != "unknown")
        .map(|p| oci::normalize(p.clone()).to_string())
        .collect();
    available.dedup();
    Err(Error::not_found(format!(
        "no match for platform {want} in index {} of {reference} (available: {})",
        index_desc.digest,
        if available.is_empty() {
            "none".to_string()
        } else {
            available.join(", ")
        }
    )))
}

#[cfg(test)]
mod tests;
