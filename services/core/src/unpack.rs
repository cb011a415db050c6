//! Unpack: turn an image's layers (blobs in the content store) into committed snapshots
//! named by their chain IDs, as containerd's unpacker does.
//!
//! - chainID(0) = diff_id(0), chainID(n) = sha256(chainID(n-1) + " " + diff_id(n)).
//! - The prefix of the chain that already exists is skipped; every chain ID and every
//!   active snapshot the unpack creates is added to the caller's lease BEFORE it is created,
//!   so a garbage collection can't take it.
//! - Each missing layer is applied into an active snapshot `extract-<nanos>-<rand> <chainID>`,
//!   its uncompressed digest checked against the config's `rootfs.diff_ids[i]`, then
//!   committed as the chain ID. A snapshotter that can rebase (overlayfs) gets its layers
//!   prepared without a parent and applied up to [`PARALLEL`] at once, then committed in
//!   order onto their parents; otherwise the layers go one by one on top of each other.
//! - On an error every active snapshot the unpack created is removed (committed lower
//!   layers stay: they are valid and leased). A commit that finds the chain ID already
//!   there (a concurrent unpack won) removes its active snapshot and goes on.
//! - At the end the config blob gets `containerd.io/gc.ref.snapshot.<snapshotter>=<top
//!   chain ID>`, so image → manifest → config → snapshots stays alive without the lease.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_oci::image::{self as oci, Compression, GC_REF_SNAPSHOT_PREFIX, Platform};
use berth_snapshotter::{ApplyStats, Kind, Snapshotter};
use tokio::sync::Semaphore;

use crate::content::ContentStore;
use crate::error::{Error, Result};
use crate::images::Descriptor;
use crate::leases::{Leases, Resource};
use crate::snapshots::Snapshotters;

/// Layers applied at once when the snapshotter can rebase.
pub const PARALLEL: usize = 3;
/// Read buffer for layer blobs.
const READ_BUFFER: usize = 1 << 20;

/// What an unpack did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// The chain ID of the top layer (the image's root filesystem snapshot).
    pub chain_id: String,
    /// Layers applied now.
    pub applied: usize,
    /// Layers that were there already.
    pub skipped: usize,
    /// Uncompressed bytes of the applied layers.
    pub bytes: u64,
    pub elapsed: Duration,
}

/// One image to unpack: its config and layers (bottom first), as the manifest lists them.
#[derive(Debug, Clone)]
pub struct UnpackRequest<'a> {
    pub namespace: &'a str,
    /// The lease that holds the snapshots while they are made.
    pub lease: &'a str,
    /// The snapshotter's name ("" for the default).
    pub snapshotter: &'a str,
    pub config: &'a Descriptor,
    pub layers: &'a [Descriptor],
}

/// One missing layer's work.
#[derive(Clone)]
struct Step {
    index: usize,
    layer: Descriptor,
    compression: Compression,
    diff_id: String,
    chain_id: String,
    /// The committed snapshot below (chain ID of the layer below), if any.
    parent: Option<String>,
    key: String,
}

/// Active snapshots an unpack created and has not committed yet.
type Created = Arc<Mutex<Vec<String>>>;

/// Unpacks images into snapshotters. Cheap to clone.
#[derive(Clone)]
pub struct Unpacker {
    content: ContentStore,
    snapshotters: Snapshotters,
    leases: Leases,
}

impl Unpacker {
    pub fn new(content: ContentStore, snapshotters: Snapshotters, leases: Leases) -> Unpacker {
        Unpacker {
            content,
            snapshotters,
            leases,
        }
    }

    /// The snapshotter used when a request names none.
    pub fn default_snapshotter(&self) -> &str {
        self.snapshotters.default_name()
    }

    /// Unpacks the image's layers into the snapshotter and labels its config.
    #[tracing::instrument(skip(self, req), fields(namespace = %req.namespace, config = %req.config.digest, snapshotter = %req.snapshotter))]
    pub async fn unpack(&self, req: UnpackRequest<'_>) -> Result<Unpacked> {
        let start = Instant::now();
        let name = self
            .snapshotters
            .name_for(req.namespace, req.snapshotter)
            .await?;
        let sn = self.snapshotters.get(&name)?;
        let name = sn.name().to_string();
        let ns = req.namespace.to_string();

        let diff_ids = self.diff_ids(req.namespace, req.config).await?;
        let compressions = layer_compressions(&req, &diff_ids)?;
        let chain = oci::chain_ids(&diff_ids);

        // Hold the whole chain before looking at it: a collection can't take an existing
        // layer between the Stat below and the Prepare on top of it.
        self.leases
            .add_resources(
                req.namespace,
                req.lease,
                chain.iter().map(|c| Resource::snapshot(&name, c)).collect(),
            )
            .await?;

        let first_missing = first_missing(&sn, &ns, &chain).await?;
        let steps = plan_steps(&req, &compressions, &diff_ids, &chain, first_missing);
        let bytes = self.apply_steps(&sn, &req, &steps).await?;

        let top = chain[chain.len() - 1].clone();
        self.label_config(req.namespace, req.config, &name, &top)
            .await?;
        let unpacked = Unpacked {
            chain_id: top,
            applied: steps.len(),
            skipped: first_missing,
            bytes,
            elapsed: start.elapsed(),
        };
        log_unpacked(&name, &unpacked);
        Ok(unpacked)
    }

    /// Leases the steps' active snapshots, then applies and commits the layers (in
    /// parallel when the snapshotter can rebase); returns the uncompressed bytes applied.
    /// On an error the active snapshots created so far are removed.
    async fn apply_steps(
        &self,
        sn: &Arc<dyn Snapshotter>,
        req: &UnpackRequest<'_>,
        steps: &[Step],
    ) -> Result<u64> {
        if steps.is_empty() {
            return Ok(0);
        }
        let ns = req.namespace;
        self.leases
            .add_resources(
                ns,
                req.lease,
                steps
                    .iter()
                    .map(|s| Resource::snapshot(sn.name(), &s.key))
                    .collect(),
            )
            .await?;
        let created: Created = Arc::new(Mutex::new(Vec::new()));
        let result = if sn.can_rebase() {
            self.apply_parallel(sn, ns, steps, &created).await
        } else {
            self.apply_in_order(sn, ns, steps, &created).await
        };
        if result.is_err() {
            remove_active(sn, ns, &created).await;
        }
        result
    }

    /// Unpacks a stored image, given its target (an index or a manifest): the manifest
    /// that best matches `platform` (the host's when None) is unpacked, under `lease`.
    pub async fn unpack_image(
        &self,
        namespace: &str,
        lease: &str,
        snapshotter: &str,
        target: &Descriptor,
        platform: Option<&Platform>,
    ) -> Result<Unpacked> {
        let want = platform.cloned().unwrap_or_else(oci::host_platform);
        let manifest =
            crate::blobs::platform_manifest(&self.content, namespace, target, &want).await?;
        let data = self.read_blob(namespace, &manifest.digest).await?;
        let parsed = oci::parse_manifest(&manifest.digest, &data)?;
        let layers: Vec<Descriptor> = parsed.layers.iter().map(Descriptor::from).collect();
        self.unpack(UnpackRequest {
            namespace,
            lease,
            snapshotter,
            config: &Descriptor::from(&parsed.config),
            layers: &layers,
        })
        .await
    }

    async fn read_blob(&self, namespace: &str, digest: &str) -> Result<Vec<u8>> {
        crate::blobs::read_blob(&self.content, namespace, digest).await
    }

    async fn diff_ids(&self, namespace: &str, config: &Descriptor) -> Result<Vec<String>> {
        let data = self.read_blob(namespace, &config.digest).await?;
        let parsed: oci::ImageConfig = serde_json::from_slice(&data)
            .map_err(|e| Error::invalid(format!("image config {}: {e}", config.digest)))?;
        Ok(parsed.rootfs.diff_ids)
    }

    /// One layer after the other, each prepared on the one below.
    async fn apply_in_order(
        &self,
        sn: &Arc<dyn Snapshotter>,
        ns: &str,
        steps: &[Step],
        created: &Created,
    ) -> Result<u64> {
        let mut bytes = 0;
        for step in steps {
            let (file, _) = self.content.open_blob(ns, &step.layer.digest).await?;
            let stats = {
                let (s, n, st, c) = (sn.clone(), ns.to_string(), step.clone(), created.clone());
                blocking(move || apply_step(s.as_ref(), &n, &st, file, false, &c)).await?
            };
            bytes += stats.size;
            commit(sn, ns, step, None, created).await?;
        }
        Ok(bytes)
    }

    /// Up to [`PARALLEL`] layers applied at once into parentless snapshots, committed in
    /// order onto the layer below.
    async fn apply_parallel(
        &self,
        sn: &Arc<dyn Snapshotter>,
        ns: &str,
        steps: &[Step],
        created: &Created,
    ) -> Result<u64> {
        let permits = Arc::new(Semaphore::new(PARALLEL));
        let cancel = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::with_capacity(steps.len());
        for step in steps {
            let (s, n, st, c) = (sn.clone(), ns.to_string(), step.clone(), created.clone());
            let (permits, cancel, content) =
                (permits.clone(), cancel.clone(), self.content.clone());
            handles.push(tokio::spawn(async move {
                let _permit = permits
                    .acquire_owned()
                    .await
                    .map_err(|e| Error::Internal(format!("unpack permits: {e}")))?;
                if cancel.load(Ordering::SeqCst) {
                    return Err(Error::Internal("unpack cancelled".into()));
                }
                let (file, _) = content.open_blob(&n, &st.layer.digest).await?;
                blocking(move || {
                    let mut st = st;
                    // Parentless: the layer dir is an overlay layer of its own.
                    st.parent = None;
                    apply_step(s.as_ref(), &n, &st, file, true, &c)
                })
                .await
            }));
        }
        let mut bytes = 0;
        let mut failure = None;
        let mut handles = handles.into_iter();
        for step in steps {
            let Some(handle) = handles.next() else { break };
            let result = match handle.await {
                Ok(r) => r,
                Err(e) => Err(Error::Internal(format!("unpack task: {e}"))),
            };
            let result = match result {
                Ok(stats) => {
                    bytes += stats.size;
                    commit(sn, ns, step, step.parent.as_deref(), created).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                failure = Some(e);
                break;
            }
        }
        if let Some(e) = failure {
            // Let the layers in flight finish before their snapshots are removed.
            cancel.store(true, Ordering::SeqCst);
            for h in handles {
                let _ = h.await;
            }
            return Err(e);
        }
        Ok(bytes)
    }

    /// Labels the config with the top snapshot, unless it says so already.
    async fn label_config(
        &self,
        namespace: &str,
        config: &Descriptor,
        snapshotter: &str,
        top: &str,
    ) -> Result<()> {
        let key = format!("{GC_REF_SNAPSHOT_PREFIX}{snapshotter}");
        let mut info = self.content.info(namespace, &config.digest).await?;
        if info.labels.get(&key).map(String::as_str) == Some(top) {
            return Ok(());
        }
        info.labels = BTreeMap::from([(key.clone(), top.to_string())]);
        self.content
            .update(namespace, info, vec![format!("labels.{key}")])
            .await?;
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("unpack task: {e}")))?
}

/// Checks that the config lists one diff_id per layer and that there are layers, and
/// returns each layer's compression (NotImplemented for a media type we can't unpack).
fn layer_compressions(req: &UnpackRequest<'_>, diff_ids: &[String]) -> Result<Vec<Compression>> {
    if diff_ids.len() != req.layers.len() {
        return Err(Error::invalid(format!(
            "image config {} lists {} diff_ids for the {} layers of its manifest",
            req.config.digest,
            diff_ids.len(),
            req.layers.len()
        )));
    }
    if req.layers.is_empty() {
        return Err(Error::invalid(format!(
            "image with config {} has no layers to unpack",
            req.config.digest
        )));
    }
    let mut compressions = Vec::with_capacity(req.layers.len());
    for (i, l) in req.layers.iter().enumerate() {
        let media_type = oci::MediaType::from(&l.media_type);
        compressions.push(Compression::of_layer(&media_type).ok_or_else(|| {
            Error::NotImplemented(format!(
                "layer {} (#{i}): unsupported layer media type {}",
                l.digest, l.media_type
            ))
        })?);
    }
    Ok(compressions)
}

/// The index of the first chain ID the snapshotter does not have (the chain's length when
/// it has them all). A snapshot there that is not committed is FailedPrecondition.
async fn first_missing(sn: &Arc<dyn Snapshotter>, ns: &str, chain: &[String]) -> Result<usize> {
    for (i, c) in chain.iter().enumerate() {
        let (s, n, key) = (sn.clone(), ns.to_string(), c.clone());
        match blocking(move || s.stat(&n, &key).map_err(Error::from)).await {
            Ok(info) if info.kind == Kind::Committed => {}
            Ok(info) => {
                return Err(Error::precondition(format!(
                    "snapshot {c} of snapshotter {} exists but is {}, not committed",
                    sn.name(),
                    info.kind.as_str()
                )));
            }
            Err(e) if e.is_not_found() => return Ok(i),
            Err(e) => return Err(e),
        }
    }
    Ok(chain.len())
}

/// One step per missing layer (from `first_missing` up), each with its own active key
/// `extract-<nanos>-<rand> <chainID>`.
fn plan_steps(
    req: &UnpackRequest<'_>,
    compressions: &[Compression],
    diff_ids: &[String],
    chain: &[String],
    first_missing: usize,
) -> Vec<Step> {
    let nanos = crate::metadata::now_nanos();
    (first_missing..chain.len())
        .map(|i| {
            let rand = uuid::Uuid::new_v4().simple().to_string();
            Step {
                index: i,
                layer: req.layers[i].clone(),
                compression: compressions[i],
                diff_id: diff_ids[i].clone(),
                chain_id: chain[i].clone(),
                parent: (i > 0).then(|| chain[i - 1].clone()),
                key: format!("extract-{nanos}-{} {}", &rand[..8], chain[i]),
            }
        })
        .collect()
}

fn log_unpacked(snapshotter: &str, unpacked: &Unpacked) {
    let secs = unpacked.elapsed.as_secs_f64();
    tracing::info!(
        snapshotter = %snapshotter,
        chain_id = %unpacked.chain_id,
        applied = unpacked.applied,
        skipped = unpacked.skipped,
        uncompressed_bytes = unpacked.bytes,
        duration_ms = unpacked.elapsed.as_millis() as u64,
        mb_per_s = if secs > 0.0 { (unpacked.bytes as f64 / 1e6 / secs) as u64 } else { 0 },
        "unpacked"
    );
}

/// Prepares the step's active snapshot, applies the layer blob into it and checks the
/// uncompressed digest. `overlay_layer`: the snapshot's directory becomes an overlay layer
/// (parentless prepare of a snapshotter that can rebase), so whiteouts are kept as overlay
/// whiteouts even though it is mounted as a plain bind.
fn apply_step(
    sn: &dyn Snapshotter,
    ns: &str,
    step: &Step,
    blob: File,
    overlay_layer: bool,
    created: &Mutex<Vec<String>>,
) -> Result<ApplyStats> {
    let started = Instant::now();
    let mounts = sn.prepare(ns, &step.key, step.parent.as_deref(), BTreeMap::new())?;
    if let Ok(mut c) = created.lock() {
        c.push(step.key.clone());
    }
    let reader = BufReader::with_capacity(READ_BUFFER, blob);
    let applied =
        crate::diff::apply_to_mounts(&mounts, reader, step.compression, overlay_layer, None);
    let stats = applied.map_err(|source| Error::Layer {
        layer: format!("{} (#{})", step.layer.digest, step.index),
        source,
    })?;
    if stats.diff_id != step.diff_id {
        return Err(Error::precondition(format!(
            "unpacking layer {} (#{}): uncompressed content has digest {}, but the image \
             config's rootfs.diff_ids[{}] is {}",
            step.layer.digest, step.index, stats.diff_id, step.index, step.diff_id
        )));
    }
    tracing::debug!(
        layer = %step.layer.digest,
        chain_id = %step.chain_id,
        bytes = stats.size,
        duration_ms = started.elapsed().as_millis() as u64,
        "layer applied"
    );
    Ok(stats)
}

/// Commits the step's active snapshot as its chain ID (onto `rebase_onto` when it was
/// prepared without a parent). AlreadyExists: another unpack won; its snapshot is used.
async fn commit(
    sn: &Arc<dyn Snapshotter>,
    ns: &str,
    step: &Step,
    rebase_onto: Option<&str>,
    created: &Created,
) -> Result<()> {
    let (s, n, st) = (sn.clone(), ns.to_string(), step.clone());
    let parent = rebase_onto.map(str::to_string);
    let result = blocking(move || {
        match parent {
            Some(p) => s.commit_rebased(&n, &st.chain_id, &st.key, &p, BTreeMap::new()),
            None => s.commit(&n, &st.chain_id, &st.key, BTreeMap::new()),
        }
        .map_err(Error::from)
    })
    .await;
    match result {
        Ok(()) => {}
        Err(e) if e.is_already_exists() => {
            tracing::debug!(chain_id = %step.chain_id, "layer committed concurrently; using it");
            let (s, n, key) = (sn.clone(), ns.to_string(), step.key.clone());
            blocking(move || s.remove(&n, &key).map_err(Error::from)).await?;
        }
        Err(e) => {
            return Err(e.context(&format!(
                "committing layer {} (#{}) as {}",
                step.layer.digest, step.index, step.chain_id
            )));
        }
    }
    if let Ok(mut c) = created.lock() {
        c.retain(|k| k != &step.key);
    }
    Ok(())
}

/// Removes the active snapshots an unpack created (after a failure).
async fn remove_active(sn: &Arc<dyn Snapshotter>, ns: &str, created: &Created) {
    let keys: Vec<String> = created.lock().map(|c| c.clone()).unwrap_or_default();
    for key in keys {
        let (s, n, k) = (sn.clone(), ns.to_string(), key.clone());
        match blocking(move || s.remove(&n, &k).map_err(Error::from)).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "could not remove the active snapshot of a failed unpack")
            }
        }
    }
}
