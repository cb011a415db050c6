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

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use crate::content::{ContentStore, Writer};
use crate::error::{Error, Result};
use crate::images::{Descriptor, Image, Images};
use crate::leases::{self, Leases, Resource};
use crate::registry::media::{self, Kind, Platform};
use crate::registry::{Progress, ProgressState, Reference, Registries, RegistryClient};
use crate::unpack::{UnpackRequest, Unpacker};

pub use crate::registry::{Progress as PullProgress, ProgressState as PullState};

/// The label prefix that records where a blob came from.
pub const DISTRIBUTION_SOURCE_PREFIX: &str = "containerd.io/distribution.source.";
/// The label prefix of garbage-collection references to other content.
pub use crate::registry::media::GC_REF_CONTENT_PREFIX;
/// How long the pull's lease lives if berthd dies before deleting it.
const LEASE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Blobs fetched at once unless told otherwise.
pub const DEFAULT_CONCURRENCY: usize = 3;
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
    /// Blobs fetched at once; 0 means [`DEFAULT_CONCURRENCY`].
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

/// containerd's ingest ref for a descriptor (`remotes.MakeRefKey`).
pub fn ref_key(desc: &Descriptor) -> String {
    let mt = desc.media_type.as_str();
    // containerd's `remotes.MakeRefKey`.
    let kind = match mt {
        media::OCI_MANIFEST | media::DOCKER_MANIFEST => "manifest",
        media::OCI_INDEX | media::DOCKER_LIST => "index",
        _ if media::is_layer(mt) => "layer",
        _ if media::is_known_config(mt) => "config",
        _ => "unknown",
    };
    format!("{kind}-{}", desc.digest)
}

/// The labels that make an index or manifest hold its children (see
/// [`media::child_gc_labels`]).
pub fn children_labels(children: &[Descriptor]) -> BTreeMap<String, String> {
    media::child_gc_labels(
        children
            .iter()
            .map(|c| (c.media_type.as_str(), c.digest.as_str())),
    )
}

impl Puller {
    /// `hosts_dir` is the registry hosts directory (`config.registry.config_path`),
    /// `credentials` the `config.json`-style credentials file; either may not exist.
    pub fn new(
        content: ContentStore,
        images: Images,
        leases: Leases,
        hosts_dir: PathBuf,
        credentials: PathBuf,
    ) -> Puller {
        Puller {
            content,
            images,
            leases,
            registries: Registries {
                hosts_dir,
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
                Some(p) => media::parse_platform(p)?,
                None => media::host_platform(),
            })
        };
        let client = self
            .registries
            .client(reference.domain(), opts.plain_http, opts.skip_verify)
            .await?;
        let root = client.resolve(reference.path(), reference.object()).await?;
        media::kind(&root.media_type).map_err(|e| e.context(&reference.to_string()))?;
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
        let id = format!(
            "{}{}",
            leases::PULL_LEASE_PREFIX,
            uuid::Uuid::new_v4().simple()
        );
        let mut labels = BTreeMap::new();
        labels.insert(
            leases::EXPIRE_LABEL.to_string(),
            humantime::format_rfc3339_seconds(SystemTime::now() + LEASE_TTL).to_string(),
        );
        self.leases.create(namespace, id.clone(), labels).await?;
        Ok(id)
    }

    async fn pull_leased(
        &self,
        job: &Job<'_>,
        root: &Descriptor,
        want: Option<&Platform>,
        opts: &PullOptions,
    ) -> Result<Image> {
        // Manifests and indexes, depth first; each is stored with its children's labels.
        let mut blobs: Vec<Descriptor> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        // (descriptor, whether its platform still needs checking against its config)
        let mut stack: Vec<(Descriptor, bool)> = vec![(root.clone(), true)];
        let mut to_check: Vec<(Descriptor, Descriptor)> = Vec::new();
        let mut platforms: std::collections::HashMap<String, Platform> = Default::default();
        let mut picked_manifests: Vec<Picked> = Vec::new();
        while let Some((desc, check_platform)) = stack.pop() {
            if !seen.insert(desc.digest.clone()) {
                continue;
            }
            let kind = media::kind(&desc.media_type)
                .map_err(|e| e.context(&format!("{} {}", job.reference, desc.digest)))?;
            let data = self.manifest_bytes(job, &desc).await?;
            let children = match kind {
                Kind::Index => {
                    let index = media::parse_index(&desc.digest, &data)?;
                    let picked = select_manifests(job.reference, &desc, &index, want)?;
                    for m in &index.manifests {
                        if let Some(p) = &m.platform
                            && picked.iter().any(|(d, _)| d.digest == m.digest)
                        {
                            platforms
                                .entry(m.digest.clone())
                                .or_insert_with(|| media::normalize(p.clone()));
                        }
                    }
                    for (child, has_platform) in picked.iter().rev() {
                        if media::is_manifest_type(&child.media_type) {
                            stack.push((child.clone(), !has_platform));
                        } else if media::is_schema1(&child.media_type) {
                            media::kind(&child.media_type)
                                .map_err(|e| e.context(&job.reference.to_string()))?;
                        } else if !blobs.iter().any(|b| b.digest == child.digest) {
                            // Not an image (an artifact): fetched as a plain blob.
                            blobs.push(child.clone());
                        }
                    }
                    picked.into_iter().map(|(d, _)| d).collect::<Vec<_>>()
                }
                Kind::Manifest => {
                    let m = media::parse_manifest(&desc.digest, &data)?;
                    if m.schema_version != 2 {
                        return Err(Error::precondition(format!(
                            "manifest {} of {} has schemaVersion {}; only schema 2 is supported",
                            desc.digest, job.reference, m.schema_version
                        )));
                    }
                    let config = m.config.to_descriptor();
                    if check_platform && want.is_some() {
                        to_check.push((desc.clone(), config.clone()));
                    }
                    picked_manifests.push(Picked {
                        manifest: desc.clone(),
                        platform: platforms.get(&desc.digest).cloned(),
                        config: config.clone(),
                        layers: m.layers.iter().map(|l| l.to_descriptor()).collect(),
                    });
                    let mut children = vec![config];
                    children.extend(m.layers.iter().map(|l| l.to_descriptor()));
                    for c in &children {
                        if !blobs.iter().any(|b| b.digest == c.digest) {
                            blobs.push(c.clone());
                        }
                    }
                    children
                }
            };
            let labels = children_labels(&children);
            self.store_manifest(job, &desc, data, labels).await?;
        }

        let concurrency = match opts.max_concurrent_downloads {
            0 => DEFAULT_CONCURRENCY,
            n => n,
        };
        for b in &blobs {
            job.report(b, 0, ProgressState::Waiting).await;
        }
        // Configs first: a manifest for the wrong platform fails before its layers come.
        let (configs, layers): (Vec<Descriptor>, Vec<Descriptor>) =
            blobs.into_iter().partition(|b| {
                matches!(
                    b.media_type.as_str(),
                    media::OCI_CONFIG | media::DOCKER_CONFIG
                ) || to_check.iter().any(|(_, c)| c.digest == b.digest)
            });
        self.fetch_all(job, &configs, concurrency).await?;
        if let Some(want) = want {
            for (manifest, config) in &to_check {
                self.check_config_platform(job, manifest, config, want)
                    .await?;
            }
        }
        self.fetch_all(job, &layers, concurrency).await?;

        if opts.unpack && !opts.content_only {
            self.unpack(job, &picked_manifests, opts).await?;
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
        let (mut file, _) = self.content.open_blob(namespace, digest).await?;
        let d = digest.to_string();
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut out = Vec::new();
            file.read_to_end(&mut out)
                .map_err(|e| Error::io("read blob", PathBuf::from(&d), e))?;
            Ok(out)
        })
        .await
        .map_err(|e| Error::Internal(format!("read blob task: {e}")))?
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
            append_source(
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
        let mut labels = children;
        labels.insert(job.source_key(), job.reference.path().to_string());
        w.commit(desc.size, &desc.digest, labels, Some(job.lease.to_string()))
            .await
            .map_err(|e| e.context(&format!("storing {} of {}", desc.digest, job.reference)))?;
        job.report(desc, desc.size, ProgressState::Done).await;
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
        let mut labels = BTreeMap::new();
        labels.insert(job.source_key(), job.reference.path().to_string());
        w.commit(desc.size, &desc.digest, labels, Some(job.lease.to_string()))
            .await
            .map_err(|e| {
                e.context(&format!(
                    "blob {} from {}/{}",
                    desc.digest,
                    job.client.registry(),
                    job.reference.path()
                ))
            })?;
        job.report(desc, desc.size, ProgressState::Done).await;
        Ok(())
    }

    /// Unpacks the fetched manifest that best matches the unpack platform.
    async fn unpack(&self, job: &Job<'_>, picked: &[Picked], opts: &PullOptions) -> Result<()> {
        let unpacker = self.unpacker.as_ref().ok_or_else(|| {
            Error::NotImplemented("unpacking: this puller has no snapshotters".into())
        })?;
        let want = match opts.unpack_platform.as_ref().or(opts.platform.as_ref()) {
            Some(p) => media::parse_platform(p)?,
            None => media::host_platform(),
        };
        let best = picked
            .iter()
            .filter_map(|p| {
                let rank = match &p.platform {
                    Some(have) => media::match_rank(&want, have)?,
                    None => u32::MAX - 1,
                };
                Some((rank, p))
            })
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, p)| p)
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
        let Ok(cp) = serde_json::from_slice::<media::ConfigPlatform>(&data) else {
            return Ok(());
        };
        if cp.os.is_empty() && cp.architecture.is_empty() {
            return Ok(());
        }
        let have = media::normalize(Platform {
            os: cp.os,
            architecture: cp.architecture,
            variant: cp.variant,
        });
        if media::match_rank(want, &have).is_none() {
            return Err(Error::not_found(format!(
                "no match for platform {want} in manifest {} of {}: the image is for {have} only",
                manifest.digest, job.reference
            )));
        }
        Ok(())
    }
}

/// Picks an index's manifests: all of them, or the best match for the platform. Each comes
/// with whether its descriptor names a platform.
fn select_manifests(
    reference: &Reference,
    index_desc: &Descriptor,
    index: &media::Index,
    want: Option<&Platform>,
) -> Result<Vec<(Descriptor, bool)>> {
    let Some(want) = want else {
        return Ok(index
            .manifests
            .iter()
            .map(|m| (m.to_descriptor(), m.platform.is_some()))
            .collect());
    };
    let mut best: Option<(u32, &media::JsonDescriptor)> = None;
    for m in index
        .manifests
        .iter()
        .filter(|m| media::is_manifest_type(&m.media_type))
    {
        let rank = match &m.platform {
            Some(p) => media::match_rank(want, p),
            // No platform in the index: decided by its config later, as containerd does.
            None => Some(u32::MAX - 1),
        };
        if let Some(r) = rank
            && best.is_none_or(|(b, _)| r < b)
        {
            best = Some((r, m));
        }
    }
    match best {
        Some((_, m)) => Ok(vec![(m.to_descriptor(), m.platform.is_some())]),
        None => {
            let mut available: Vec<String> = index
                .manifests
                .iter()
                .filter_map(|m| m.platform.as_ref())
                .filter(|p| p.os != "unknown")
                .map(|p| media::normalize(p.clone()).to_string())
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::testutil::{self, OciImage, TestRegistry};

    #[test]
    fn labels_and_refs() {
        assert_eq!(append_source(None, "library/busybox"), "library/busybox");
        assert_eq!(append_source(Some("b/x,d/y"), "c/z"), "b/x,c/z,d/y");
        assert_eq!(append_source(Some("a/b"), "a/b"), "a/b");
        let d = |mt: &str, n: char| Descriptor {
            media_type: mt.into(),
            digest: format!("sha256:{}", n.to_string().repeat(64)),
            size: 1,
            annotations: BTreeMap::new(),
        };
        assert!(ref_key(&d(media::OCI_MANIFEST, 'a')).starts_with("manifest-sha256:"));
        assert!(ref_key(&d(media::DOCKER_LIST, 'a')).starts_with("index-sha256:"));
        assert!(ref_key(&d(media::DOCKER_CONFIG, 'a')).starts_with("config-sha256:"));
        assert!(
            ref_key(&d("application/vnd.oci.image.layer.v1.tar+zstd", 'a'))
                .starts_with("layer-sha256:")
        );
        let layer = "application/vnd.oci.image.layer.v1.tar+gzip";
        let l = children_labels(&[
            d(media::OCI_CONFIG, 'c'),
            d(layer, '1'),
            d("application/vnd.docker.image.rootfs.diff.tar.gzip", '2'),
        ]);
        assert_eq!(l.len(), 3);
        assert_eq!(l["containerd.io/gc.ref.content.config"], d("", 'c').digest);
        assert_eq!(l["containerd.io/gc.ref.content.l.0"], d("", '1').digest);
        assert_eq!(l["containerd.io/gc.ref.content.l.1"], d("", '2').digest);
        let l = children_labels(&[
            d(media::OCI_MANIFEST, 'a'),
            d(media::DOCKER_MANIFEST, 'b'),
            d("application/vnd.example.artifact", 'x'),
        ]);
        assert_eq!(l["containerd.io/gc.ref.content.m.0"], d("", 'a').digest);
        assert_eq!(l["containerd.io/gc.ref.content.m.1"], d("", 'b').digest);
        assert_eq!(l["containerd.io/gc.ref.content.0"], d("", 'x').digest);
    }

    fn collect(mut rx: mpsc::Receiver<Progress>) -> Vec<Progress> {
        let mut out = Vec::new();
        while let Ok(p) = rx.try_recv() {
            out.push(p);
        }
        out
    }

    #[tokio::test]
    async fn pull_single_manifest_image() {
        let reg = TestRegistry::start(None);
        let img = OciImage::build(
            &[("hello.txt", b"hello from a layer\n".as_slice())],
            "linux/amd64",
        );
        img.push(&reg, "test/hello:v1", None);
        let env = testutil::Env::new();
        let (tx, rx) = mpsc::channel(1024);
        let reference = format!("{}/test/hello:v1", reg.host());
        let opts = PullOptions {
            platform: Some("linux/amd64".into()),
            ..Default::default()
        };
        let image = env
            .puller()
            .pull("default", &reference, opts.clone(), tx)
            .await
            .expect("pull");
        assert_eq!(image.name, reference);
        let target = image.target();
        assert_eq!(target.digest, img.manifest_digest);
        assert_eq!(target.media_type, media::OCI_MANIFEST);

        // Content and labels.
        let source = format!("{DISTRIBUTION_SOURCE_PREFIX}{}", reg.host());
        let m = env
            .content
            .info("default", &img.manifest_digest)
            .await
            .expect("manifest");
        assert_eq!(
            m.labels[&format!("{GC_REF_CONTENT_PREFIX}config")],
            img.config_digest
        );
        assert_eq!(
            m.labels[&format!("{GC_REF_CONTENT_PREFIX}l.0")],
            img.layer_digests[0]
        );
        assert_eq!(m.labels[&source], "test/hello");
        for d in [&img.config_digest, &img.layer_digests[0]] {
            let info = env.content.info("default", d).await.expect("blob");
            assert_eq!(info.labels[&source], "test/hello");
            let path = env.content.blob_path(d).expect("path");
            assert_eq!(testutil::sha256_file(&path), *d);
        }
        // The lease is gone; nothing is left in ingest.
        assert!(
            env.leases
                .list("default", crate::filters::Filter::always())
                .await
                .expect("leases")
                .is_empty()
        );
        assert!(
            env.content
                .list_statuses("default", crate::filters::Filter::always())
                .await
                .expect("ingests")
                .is_empty()
        );

        let reports = collect(rx);
        for d in [&img.config_digest, &img.layer_digests[0]] {
            assert!(
                reports
                    .iter()
                    .any(|p| &p.digest == d && p.state == ProgressState::Done),
                "{reports:?}"
            );
        }

        // A second pull fetches nothing and keeps the record.
        let (tx, rx) = mpsc::channel(1024);
        let again = env
            .puller()
            .pull("default", &reference, opts, tx)
            .await
            .expect("again");
        assert_eq!(again.target().digest, img.manifest_digest);
        let reports = collect(rx);
        assert!(
            reports
                .iter()
                .filter(|p| p.state != ProgressState::Waiting)
                .all(|p| p.state == ProgressState::Exists),
            "{reports:?}"
        );
        // A platform the image is not for.
        let (tx, _rx) = mpsc::channel(16);
        let err = env
            .puller()
            .pull(
                "other",
                &reference,
                PullOptions {
                    platform: Some("linux/s390x".into()),
                    ..Default::default()
                },
                tx,
            )
            .await
            .expect_err("wrong platform");
        assert!(err.is_not_found(), "{err}");
        assert!(err.to_string().contains("linux/amd64"), "{err}");
    }

    #[tokio::test]
    async fn pull_index_selects_platforms() {
        let reg = TestRegistry::start(None);
        let idx = testutil::OciIndex::build(&["linux/amd64", "linux/arm64", "linux/arm/v7"]);
        idx.push(&reg, "multi/app:1");
        let env = testutil::Env::new();
        let reference = format!("{}/multi/app:1", reg.host());

        let (tx, _rx) = mpsc::channel(1024);
        let image = env
            .puller()
            .pull(
                "ns1",
                &reference,
                PullOptions {
                    platform: Some("linux/arm64".into()),
                    ..Default::default()
                },
                tx,
            )
            .await
            .expect("pull arm64");
        assert_eq!(image.target().digest, idx.index_digest);
        assert_eq!(image.target().media_type, media::OCI_INDEX);
        let arm64 = &idx.images[1];
        let info = env
            .content
            .info("ns1", &idx.index_digest)
            .await
            .expect("index");
        assert_eq!(
            info.labels[&format!("{GC_REF_CONTENT_PREFIX}m.0")],
            arm64.manifest_digest
        );
        assert!(
            !info
                .labels
                .contains_key(&format!("{GC_REF_CONTENT_PREFIX}m.1"))
        );
        assert!(
            env.content
                .info("ns1", &arm64.layer_digests[0])
                .await
                .is_ok()
        );
        assert!(
            env.content
                .info("ns1", &idx.images[0].manifest_digest)
                .await
                .is_err()
        );

        // The host platform by default (this machine is one of the three).
        let (tx, _rx) = mpsc::channel(1024);
        env.puller()
            .pull("ns2", &reference, PullOptions::default(), tx)
            .await
            .expect("pull host");
        let host = media::host_platform().to_string();
        let pos = ["linux/amd64", "linux/arm64", "linux/arm/v7"]
            .iter()
            .position(|p| *p == host)
            .expect("known host");
        assert!(
            env.content
                .info("ns2", &idx.images[pos].manifest_digest)
                .await
                .is_ok()
        );

        // Every platform.
        let (tx, _rx) = mpsc::channel(1024);
        env.puller()
            .pull(
                "ns3",
                &reference,
                PullOptions {
                    all_platforms: true,
                    ..Default::default()
                },
                tx,
            )
            .await
            .expect("pull all");
        let info = env
            .content
            .info("ns3", &idx.index_digest)
            .await
            .expect("index");
        for (i, im) in idx.images.iter().enumerate() {
            assert_eq!(
                info.labels[&format!("{GC_REF_CONTENT_PREFIX}m.{i}")],
                im.manifest_digest
            );
            assert!(env.content.info("ns3", &im.layer_digests[0]).await.is_ok());
        }

        // A platform the index does not have: the error lists what it has.
        let (tx, _rx) = mpsc::channel(16);
        let err = env
            .puller()
            .pull(
                "ns4",
                &reference,
                PullOptions {
                    platform: Some("linux/riscv64".into()),
                    ..Default::default()
                },
                tx,
            )
            .await
            .expect_err("no riscv64");
        assert!(err.is_not_found(), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("linux/amd64, linux/arm64, linux/arm/v7"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn pull_resumes_an_interrupted_blob() {
        let reg = TestRegistry::start(None);
        let big: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let img = OciImage::build(&[("big.bin", big.as_slice())], "linux/amd64");
        img.push(&reg, "resume/me:latest", None);
        let env = testutil::Env::new();
        let layer = img.layer_digests[0].clone();
        let layer_bytes = std::fs::read(img.blob_path(&layer)).expect("layer");
        let half = layer_bytes.len() / 2;
        let desc = Descriptor {
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            digest: layer.clone(),
            size: layer_bytes.len() as i64,
            annotations: BTreeMap::new(),
        };
        // An earlier pull stopped half-way through the layer.
        let mut w = env
            .content
            .writer("default", &ref_key(&desc), desc.size, &layer, None)
            .await
            .expect("writer");
        w.write(layer_bytes[..half].to_vec()).await.expect("write");
        drop(w);

        let (tx, rx) = mpsc::channel(4096);
        let reference = format!("{}/resume/me", reg.host());
        env.puller()
            .pull(
                "default",
                &reference,
                PullOptions {
                    platform: Some("linux/amd64".into()),
                    ..Default::default()
                },
                tx,
            )
            .await
            .expect("pull");
        let reports = collect(rx);
        let first = reports
            .iter()
            .find(|p| p.digest == layer && p.state == ProgressState::Downloading)
            .expect("downloading report");
        assert_eq!(first.offset, half as i64, "resumed at the stored offset");
        let info = env
            .content
            .info("default", &layer)
            .await
            .expect("layer stored");
        assert_eq!(info.size, layer_bytes.len() as i64);
        assert_eq!(
            testutil::sha256_file(&env.content.blob_path(&layer).expect("path")),
            layer
        );

        // Garbage in the ingest: the commit notices and names both digests; nothing stays.
        let env = testutil::Env::new();
        let mut w = env
            .content
            .writer("default", &ref_key(&desc), desc.size, &layer, None)
            .await
            .expect("writer");
        w.write(vec![0u8; half]).await.expect("write");
        drop(w);
        let (tx, _rx) = mpsc::channel(4096);
        let err = env
            .puller()
            .pull(
                "default",
                &reference,
                PullOptions {
                    platform: Some("linux/amd64".into()),
                    ..Default::default()
                },
                tx,
            )
            .await
            .expect_err("corrupt ingest");
        let msg = err.to_string();
        assert!(
            msg.contains(&layer) && msg.contains("unexpected commit digest"),
            "{msg}"
        );
        // The retry starts clean and succeeds.
        let (tx, _rx) = mpsc::channel(4096);
        env.puller()
            .pull(
                "default",
                &reference,
                PullOptions {
                    platform: Some("linux/amd64".into()),
                    ..Default::default()
                },
                tx,
            )
            .await
            .expect("retry");
    }

    #[tokio::test]
    async fn pull_errors_name_the_registry_answer() {
        let reg = TestRegistry::start(Some(("alice", "wonderland")));
        let img = OciImage::build(&[("a", b"a".as_slice())], "linux/amd64");
        img.push(&reg, "private/app:1", Some(("alice", "wonderland")));
        let env = testutil::Env::new();
        let reference = format!("{}/private/app:1", reg.host());
        let opts = PullOptions {
            platform: Some("linux/amd64".into()),
            ..Default::default()
        };

        // No credentials.
        let (tx, _rx) = mpsc::channel(64);
        let err = env
            .puller()
            .pull("default", &reference, opts.clone(), tx)
            .await
            .expect_err("anonymous");
        assert!(matches!(err, Error::FailedPrecondition(_)), "{err}");
        assert!(err.to_string().contains("unauthorized"), "{err}");

        // Wrong password.
        let creds = crate::registry::auth::Credentials {
            username: "alice".into(),
            password: "wrong".into(),
        };
        crate::registry::auth::store(&env.credentials, &reg.host(), &creds).expect("store");
        let (tx, _rx) = mpsc::channel(64);
        let err = env
            .puller()
            .pull("default", &reference, opts.clone(), tx)
            .await
            .expect_err("wrong password");
        assert!(matches!(err, Error::FailedPrecondition(_)), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("401") && msg.contains("rejected"), "{msg}");

        // Right password.
        let creds = crate::registry::auth::Credentials {
            username: "alice".into(),
            password: "wonderland".into(),
        };
        crate::registry::auth::store(&env.credentials, &reg.host(), &creds).expect("store");
        let (tx, _rx) = mpsc::channel(64);
        let image = env
            .puller()
            .pull("default", &reference, opts.clone(), tx)
            .await
            .expect("authorized");
        assert_eq!(image.target().digest, img.manifest_digest);

        // Unknown tag and unknown repository.
        for missing in ["private/app:nope", "private/nothing:1"] {
            let (tx, _rx) = mpsc::channel(64);
            let err = env
                .puller()
                .pull(
                    "default",
                    &format!("{}/{missing}", reg.host()),
                    opts.clone(),
                    tx,
                )
                .await
                .expect_err("missing");
            assert!(err.is_not_found(), "{err}");
            assert!(err.to_string().contains("404"), "{err}");
        }

        // Nothing listening.
        let (tx, _rx) = mpsc::channel(64);
        let err = env
            .puller()
            .pull(
                "default",
                &format!("127.0.0.1:{}/x/y:1", testutil::free_port()),
                opts.clone(),
                tx,
            )
            .await
            .expect_err("unreachable");
        assert!(matches!(err, Error::Unavailable(_)), "{err}");
        // Bad reference.
        let (tx, _rx) = mpsc::channel(64);
        let err = env
            .puller()
            .pull("default", "Not/Valid", opts, tx)
            .await
            .expect_err("invalid");
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }

    #[tokio::test]
    async fn bearer_tokens_and_a_registry_that_ignores_ranges() {
        use base64::Engine;
        use testutil::{Answer, ScriptedServer};
        let big: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_be_bytes()).collect();
        let img = OciImage::build(&[("big", big.as_slice())], "linux/amd64");
        let mut blobs = std::collections::HashMap::new();
        for d in [
            &img.manifest_digest,
            &img.config_digest,
            &img.layer_digests[0],
        ] {
            blobs.insert(d.clone(), std::fs::read(img.blob_path(d)).expect("blob"));
        }
        let manifest = img.manifest_digest.clone();
        let good = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("carol:s3cret")
        );
        let server = ScriptedServer::start(move |req, port| {
            let path = req.target.split('?').next().unwrap_or_default();
            if path == "/token" {
                if req.headers.get("authorization") != Some(&good) {
                    return Answer::new(401, r#"{"details":"bad credentials"}"#);
                }
                if !req.target.contains("scope=repository%3Aapp%3Apull") {
                    return Answer::new(400, "scope missing");
                }
                return Answer::new(200, r#"{"token":"t0k","expires_in":300}"#);
            }
            if req.headers.get("authorization").map(String::as_str) != Some("Bearer t0k") {
                return Answer::new(401, r#"{"errors":[{"code":"UNAUTHORIZED","message":"token required"}]}"#)
                    .header(
                        "WWW-Authenticate",
                        &format!(
                            "Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"scripted\",scope=\"repository:app:pull\""
                        ),
                    );
            }
            let object = path.rsplit('/').next().unwrap_or_default();
            let key = if object == "v1" { manifest.clone() } else { object.to_string() };
            match blobs.get(&key) {
                // Ranges are ignored: always the whole blob, 200.
                Some(b) if path.contains("/manifests/") => Answer::new(200, b.clone())
                    .header("Content-Type", media::OCI_MANIFEST)
                    .header("Docker-Content-Digest", &key),
                Some(b) => Answer::new(200, b.clone()),
                None => Answer::new(404, r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}"#),
            }
        })
        .await;
        let reference = format!("{}/app:v1", server.host());
        let opts = PullOptions {
            platform: Some("linux/amd64".into()),
            ..Default::default()
        };
        let env = testutil::Env::new();

        // Wrong password: the token endpoint's refusal is named.
        let bad = crate::registry::auth::Credentials {
            username: "carol".into(),
            password: "nope".into(),
        };
        crate::registry::auth::store(&env.credentials, &server.host(), &bad).expect("store");
        let (tx, _rx) = mpsc::channel(64);
        let err = env
            .puller()
            .pull("default", &reference, opts.clone(), tx)
            .await
            .expect_err("bad token");
        assert!(matches!(err, Error::FailedPrecondition(_)), "{err}");
        assert!(
            err.to_string().contains("unauthorized: fetching token"),
            "{err}"
        );

        let creds = crate::registry::auth::Credentials {
            username: "carol".into(),
            password: "s3cret".into(),
        };
        crate::registry::auth::store(&env.credentials, &server.host(), &creds).expect("store");
        // Half of the layer from an earlier attempt.
        let layer = img.layer_digests[0].clone();
        let layer_bytes = std::fs::read(img.blob_path(&layer)).expect("layer");
        let desc = Descriptor {
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            digest: layer.clone(),
            size: layer_bytes.len() as i64,
            annotations: BTreeMap::new(),
        };
        let mut w = env
            .content
            .writer("default", &ref_key(&desc), desc.size, &layer, None)
            .await
            .expect("writer");
        w.write(layer_bytes[..layer_bytes.len() / 2].to_vec())
            .await
            .expect("write");
        drop(w);

        let before = server.requests().len();
        let (tx, rx) = mpsc::channel(4096);
        let image = env
            .puller()
            .pull("default", &reference, opts, tx)
            .await
            .expect("pull");
        assert_eq!(image.target().digest, img.manifest_digest);
        let reports = collect(rx);
        let first = reports
            .iter()
            .find(|p| p.digest == layer && p.state == ProgressState::Downloading)
            .expect("downloading report");
        assert_eq!(
            first.offset, 0,
            "the range was ignored, so the ingest started over"
        );
        assert_eq!(
            testutil::sha256_file(&env.content.blob_path(&layer).expect("path")),
            layer
        );
        let seen = &server.requests()[before..];
        let ranged = seen
            .iter()
            .find(|r| r.target.ends_with(&layer))
            .expect("layer request");
        assert!(
            ranged
                .headers
                .get("range")
                .is_some_and(|r| r.starts_with("bytes=")),
            "{ranged:?}"
        );
        let tokens = seen
            .iter()
            .filter(|r| r.target.starts_with("/token"))
            .count();
        assert_eq!(
            tokens, 1,
            "one token, reused for every request of the scope"
        );
    }

    #[tokio::test]
    async fn pull_through_mirrors_in_hosts_toml() {
        let upstream = TestRegistry::start(None);
        let mirror = TestRegistry::start(None);
        let img = OciImage::build(&[("m", b"mirrored".as_slice())], "linux/amd64");
        // Only the mirror has the image.
        img.push(&mirror, "lib/app:1", None);
        let env = testutil::Env::new();
        let dir = env.hosts_dir.join(upstream.host());
        std::fs::create_dir_all(&dir).expect("mkdir");
        let dead = testutil::free_port();
        std::fs::write(
            dir.join("hosts.toml"),
            format!(
                "server = \"http://{}\"\n\n\
                 [host.\"http://127.0.0.1:{dead}\"]\n  capabilities = [\"pull\", \"resolve\"]\n\n\
                 [host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
                upstream.host(),
                mirror.host()
            ),
        )
        .expect("hosts.toml");
        let reference = format!("{}/lib/app:1", upstream.host());
        let (tx, _rx) = mpsc::channel(1024);
        let image = env
            .puller()
            .pull(
                "default",
                &reference,
                PullOptions {
                    platform: Some("linux/amd64".into()),
                    ..Default::default()
                },
                tx,
            )
            .await
            .expect("pull via mirror");
        assert_eq!(image.name, reference);
        assert_eq!(image.target().digest, img.manifest_digest);
        let info = env
            .content
            .info("default", &img.layer_digests[0])
            .await
            .expect("layer");
        // The source is the registry the reference names, not the mirror.
        assert_eq!(
            info.labels[&format!("{DISTRIBUTION_SOURCE_PREFIX}{}", upstream.host())],
            "lib/app"
        );
        // Nobody has this tag; as in containerd, the first error other than a 404 (the dead
        // mirror's) is the one reported.
        let (tx, _rx) = mpsc::channel(64);
        let err = env
            .puller()
            .pull(
                "default",
                &format!("{}/lib/app:2", upstream.host()),
                PullOptions::default(),
                tx,
            )
            .await
            .expect_err("missing everywhere");
        assert!(
            matches!(err, Error::Unavailable(_)),
            "the first non-404 error wins: {err}"
        );
    }

    #[tokio::test]
    async fn pull_over_tls_with_a_configured_ca() {
        let certs = tempfile::tempdir().expect("tmp");
        let (cert, key) = testutil::self_signed_cert(certs.path());
        let reg = TestRegistry::start_tls(&cert, &key);
        let img = OciImage::build(&[("tls", b"over tls".as_slice())], "linux/amd64");
        img.push(&reg, "secure/app:1", None);
        let reference = format!("{}/secure/app:1", reg.host());
        let opts = PullOptions {
            platform: Some("linux/amd64".into()),
            ..Default::default()
        };
        let env = testutil::Env::new();
        let dir = env.hosts_dir.join(reg.host());
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::copy(&cert, dir.join("ca.pem")).expect("copy ca");
        let write = |extra: &str| {
            std::fs::write(
                dir.join("hosts.toml"),
                format!("server = \"https://{}\"\n{extra}", reg.host()),
            )
            .expect("hosts.toml")
        };

        // Verified against the configured CA.
        write("ca = \"ca.pem\"\n");
        let (tx, _rx) = mpsc::channel(1024);
        let image = env
            .puller()
            .pull("a", &reference, opts.clone(), tx)
            .await
            .expect("pull with ca");
        assert_eq!(image.target().digest, img.manifest_digest);

        // Without it the certificate is refused...
        write("");
        let (tx, _rx) = mpsc::channel(1024);
        let err = env
            .puller()
            .pull("b", &reference, opts.clone(), tx)
            .await
            .expect_err("unknown issuer");
        assert!(matches!(err, Error::Unavailable(_)), "{err}");
        assert!(
            err.to_string().to_lowercase().contains("certificate"),
            "{err}"
        );

        // ...unless verification is off.
        write("skip_verify = true\n");
        let (tx, _rx) = mpsc::channel(1024);
        env.puller()
            .pull("c", &reference, opts.clone(), tx)
            .await
            .expect("pull with skip_verify");

        // With no hosts.toml, a loopback registry is reached over HTTPS (unverified, as
        // containerd does for loopback) without falling back to HTTP.
        std::fs::remove_file(dir.join("hosts.toml")).expect("rm");
        let (tx, _rx) = mpsc::channel(1024);
        env.puller()
            .pull("d", &reference, opts, tx)
            .await
            .expect("pull loopback default");
    }
}
