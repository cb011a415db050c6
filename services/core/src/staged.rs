//! Layers applied ahead. A client that pulls on its own side (`ctr images pull`, the Go
//! client's `Pull`) writes each layer through the content service under a `layer-` ref,
//! and only when every blob is in asks Diff.Apply for them one by one, bottom first. Here a
//! layer is unpacked into a directory of its own while it is written ([`Feed`]: the
//! session's bytes go to an unpacking thread as they arrive), or, when its write did not
//! start at byte 0 (a resumed ingest), as soon as its blob is committed ([`Staged::offer`]).
//! The Apply of that layer onto a fresh snapshot then renames the directory into place
//! instead of unpacking again. The committed blob is verified against its digest as
//! always; what was unpacked is exactly the bytes that were committed, or it is dropped.
//!
//! - The layer is applied with overlay markers onto an empty directory: exactly what an
//!   apply onto a fresh overlay upper dir writes. A bind target (a native apply) takes it
//!   only when the layer has no whiteout or opaque entry, where the two differ.
//! - The target must be an empty directory on the same filesystem. It keeps its mode and
//!   owner (a layer never changes its root): they are given to the staged directory before
//!   the rename.
//! - The media type the Apply names must decompress as the blob does.
//! - The Apply still opens the blob in its own namespace first: a namespace takes only a
//!   layer it holds.
//! - A staged layer is used once. One not asked for within [`TTL`] is removed; at most
//!   [`MAX_HELD`] are held or in work, [`WORKERS`] unpacked at a time. An Apply that finds
//!   its layer queued behind busy workers applies it itself, so it never waits behind other
//!   layers.
//! - Whatever a previous run left is removed when berthd starts; anything that goes wrong
//!   here only means the Apply unpacks the blob as it would have anyway.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use berth_snapshotter::mount::apply_target;
use berth_snapshotter::{ApplyOptions, ApplyStats, Compression, Mount};
use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use crate::content::ContentStore;

/// Layers unpacked at a time.
const WORKERS: usize = 2;

/// Layers held or in work at most; past it, a committed layer is not staged.
const MAX_HELD: usize = 32;

/// How long a staged layer waits for its Apply.
const TTL: Duration = Duration::from_secs(120);

/// The ref prefix containerd's fetch gives layer blobs (`remotes.MakeRefKey`).
const LAYER_REF_PREFIX: &str = "layer-";

/// Layer writes unpacked as they are written at most at a time (ctr downloads three
/// layers at a time); past it, a layer is unpacked once committed.
const MAX_FEEDS: usize = 4;

/// Written chunks queued for a feed's unpacking thread before the write waits for it.
const FEED_CHUNKS: usize = 16;

/// An unpacked layer waiting for its Apply.
#[derive(Debug)]
struct Layer {
    dir: PathBuf,
    stats: ApplyStats,
    /// How the blob turned out to be compressed.
    compression: Compression,
}

#[derive(Debug, Clone)]
enum State {
    /// Waiting for a worker.
    Queued,
    Running,
    Ready(Arc<Layer>),
    Failed,
}

struct Entry {
    generation: u64,
    state: watch::Receiver<State>,
}

struct Inner {
    content: ContentStore,
    /// This run's directory of staged layers.
    dir: PathBuf,
    entries: Mutex<HashMap<String, Entry>>,
    workers: Semaphore,
    generation: AtomicU64,
    /// Feeds alive.
    feeds: AtomicUsize,
}

/// The layers applied ahead. Cheap to clone.
#[derive(Clone)]
pub struct Staged {
    inner: Arc<Inner>,
}

impl Staged {
    /// Stages under `parent` (created if missing); what earlier runs left there is removed
    /// in the background.
    pub fn open(parent: &Path, content: ContentStore) -> Staged {
        let run = format!("run-{}", crate::metadata::now_nanos());
        let dir = parent.join(&run);
        let sweep = parent.to_path_buf();
        if let Ok(entries) = fs::read_dir(&sweep) {
            let old: Vec<PathBuf> = entries
                .flatten()
                .filter(|e| e.file_name() != run.as_str())
                .map(|e| e.path())
                .collect();
            if !old.is_empty() {
                tokio::task::spawn_blocking(move || {
                    for path in old {
                        if let Err(e) = fs::remove_dir_all(&path) {
                            tracing::warn!(path = %path.display(), error = %e,
                                "remove a previous run's staged layers");
                        }
                    }
                });
            }
        }
        Staged {
            inner: Arc::new(Inner {
                content,
                dir,
                entries: Mutex::new(HashMap::new()),
                workers: Semaphore::new(WORKERS),
                generation: AtomicU64::new(0),
                feeds: AtomicUsize::new(0),
            }),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A blob was committed under `reference` in `namespace` without a [`Feed`]: if it is a
    /// layer, unpack it ahead in the background.
    pub fn offer(&self, namespace: &str, reference: &str, digest: &str) {
        if reference.starts_with(LAYER_REF_PREFIX) {
            self.stage_committed(namespace, digest);
        }
    }

    /// Registers `digest` as in work; None when it is already, or too many are.
    fn register(&self, digest: &str, first: State) -> Option<(u64, watch::Sender<State>)> {
        let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(first);
        let mut entries = self.entries();
        if entries.contains_key(digest) || entries.len() >= MAX_HELD {
            return None;
        }
        entries.insert(
            digest.to_string(),
            Entry {
                generation,
                state: rx,
            },
        );
        Some((generation, tx))
    }

    fn stage_committed(&self, namespace: &str, digest: &str) {
        let Some((generation, tx)) = self.register(digest, State::Queued) else {
            return;
        };
        let this = self.clone();
        let (namespace, digest) = (namespace.to_string(), digest.to_string());
        tokio::spawn(async move { this.work(namespace, digest, generation, tx).await });
    }

    /// Starts unpacking a layer as it is written under `reference`, or None (not a layer
    /// ref, or too many feeds already).
    pub fn feed(&self, namespace: &str, reference: &str) -> Option<Feed> {
        if !reference.starts_with(LAYER_REF_PREFIX) {
            return None;
        }
        if self.inner.feeds.fetch_add(1, Ordering::Relaxed) >= MAX_FEEDS {
            self.inner.feeds.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!(%namespace, %reference, "too many layer writes unpacked at once; this one is unpacked once committed");
            return None;
        }
        let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed);
        let dir = self.inner.dir.join(format!("feed-{generation}"));
        let (tx, rx) = mpsc::channel(FEED_CHUNKS);
        let job = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || stage(ChannelReader::new(rx), &dir))
        };
        Some(Feed {
            staged: self.clone(),
            namespace: namespace.to_string(),
            tx: Some(tx),
            job: Some(job),
            dir,
            fed: 0,
        })
    }

    /// Whether `digest`'s entry is still the one of `generation`.
    fn current(entries: &HashMap<String, Entry>, digest: &str, generation: u64) -> bool {
        entries.get(digest).map(|e| e.generation) == Some(generation)
    }

    async fn work(
        &self,
        namespace: String,
        digest: String,
        generation: u64,
        tx: watch::Sender<State>,
    ) {
        let Ok(_permit) = self.inner.workers.acquire().await else {
            return;
        };
        {
            // An Apply that found it queued took it over: nothing to do.
            let entries = self.entries();
            if !Self::current(&entries, &digest, generation) {
                return;
            }
            tx.send_replace(State::Running);
        }
        let dir = self.inner.dir.join(format!(
            "{}-{generation}",
            digest.rsplit(':').next().unwrap_or_default()
        ));
        let staged = match self.inner.content.open_blob(&namespace, &digest).await {
            Ok((file, _)) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || stage(BufReader::new(file), &dir))
                    .await
                    .unwrap_or_else(|e| Err(io::Error::other(e.to_string())))
            }
            Err(e) => Err(io::Error::other(e.to_string())),
        };
        drop(_permit);
        self.settle(&namespace, &digest, generation, tx, dir, staged)
            .await;
    }

    /// Publishes the outcome of unpacking `digest` into `dir`; a staged layer nobody takes
    /// is removed after [`TTL`].
    async fn settle(
        &self,
        namespace: &str,
        digest: &str,
        generation: u64,
        tx: watch::Sender<State>,
        dir: PathBuf,
        staged: io::Result<(ApplyStats, Compression)>,
    ) {
        match staged {
            Ok((stats, compression)) => {
                tracing::debug!(%namespace, %digest, diff_id = %stats.diff_id, dir = %dir.display(), "layer applied ahead");
                tx.send_replace(State::Ready(Arc::new(Layer {
                    dir,
                    stats,
                    compression,
                })));
                tokio::time::sleep(TTL).await;
                self.expire(digest, generation);
            }
            Err(e) => {
                tracing::debug!(%namespace, %digest, error = %e, "layer not applied ahead");
                let mut entries = self.entries();
                if Self::current(&entries, digest, generation) {
                    entries.remove(digest);
                }
                tx.send_replace(State::Failed);
            }
        }
    }

    /// Removes `digest`'s staged layer if nothing took it.
    fn expire(&self, digest: &str, generation: u64) {
        let entry = {
            let mut entries = self.entries();
            if !Self::current(&entries, digest, generation) {
                return;
            }
            entries.remove(digest)
        };
        if let Some(Entry { state, .. }) = entry
            && let State::Ready(layer) = state.borrow().clone()
        {
            tracing::debug!(%digest, "staged layer not asked for; removed");
            let dir = layer.dir.clone();
            tokio::task::spawn_blocking(move || fs::remove_dir_all(dir));
        }
    }

    /// Puts the staged layer `digest` in place for an Apply onto `mounts` of a layer that
    /// the Apply's media type says is compressed as `compression`; returns what the apply
    /// would have reported. None: nothing staged that fits; the caller applies the blob.
    pub async fn take(
        &self,
        digest: &str,
        compression: Compression,
        mounts: &[Mount],
    ) -> Option<ApplyStats> {
        let (generation, mut state) = {
            let mut entries = self.entries();
            let entry = entries.get(digest)?;
            let queued = matches!(*entry.state.borrow(), State::Queued);
            if queued && self.inner.workers.available_permits() == 0 {
                // Behind other layers: applying it here is sooner than waiting.
                entries.remove(digest);
                return None;
            }
            (entry.generation, entry.state.clone())
        };
        let layer = loop {
            let now = state.borrow_and_update().clone();
            match now {
                State::Ready(layer) => break layer,
                State::Failed => return None,
                State::Queued | State::Running => {}
            }
            if state.changed().await.is_err() {
                return None;
            }
        };
        {
            // From here the layer's directory is this call's.
            let mut entries = self.entries();
            if !Self::current(&entries, digest, generation) {
                return None;
            }
            entries.remove(digest);
        }
        let fits = compression == Compression::Auto || compression == layer.compression;
        let target = apply_target(mounts);
        let digest = digest.to_string();
        tokio::task::spawn_blocking(move || {
            let placed = match target {
                Some((target, overlay)) if fits && (overlay || layer.stats.markers == 0) => {
                    place(&layer.dir, &target)
                }
                _ => Err(io::Error::other("the target does not take a staged layer")),
            };
            match placed {
                Ok(()) => Some(layer.stats.clone()),
                Err(e) => {
                    tracing::debug!(%digest, error = %e, "staged layer not used");
                    let _ = fs::remove_dir_all(&layer.dir);
                    None
                }
            }
        })
        .await
        .ok()
        .flatten()
    }
}

/// Unpacks the layer blob read from `reader` onto a new directory `dir`, as onto a fresh
/// overlay upper dir.
fn stage(mut reader: impl BufRead, dir: &Path) -> io::Result<(ApplyStats, Compression)> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir.parent().unwrap_or(dir))?;
    fs::DirBuilder::new().mode(0o755).create(dir)?;
    let compression = match reader.fill_buf() {
        Ok(magic) => Compression::detect(magic),
        Err(e) => {
            let _ = fs::remove_dir_all(dir);
            return Err(e);
        }
    };
    let opts = ApplyOptions {
        overlay_whiteouts: true,
        cancel: None,
    };
    match berth_snapshotter::apply_layer(reader, compression, dir, &opts) {
        Ok(stats) => Ok((stats, compression)),
        Err(e) => {
            let _ = fs::remove_dir_all(dir);
            Err(io::Error::other(e.to_string()))
        }
    }
}

/// The bytes a write session sends, read on the unpacking thread (end of stream when the
/// session commits or goes away).
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    chunk: Bytes,
    at: usize,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<Bytes>) -> BufReader<ChannelReader> {
        BufReader::new(ChannelReader {
            rx,
            chunk: Bytes::new(),
            at: 0,
        })
    }
}

impl io::Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len() - self.at);
        out[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// A layer unpacked while it is written: the write session hands it each write it made
/// ([`Feed::wrote`]) and, once its blob is committed, the digest ([`Feed::committed`]).
/// Writes that do not follow on from the last (a write session that starts over or
/// resumed an ingest) end the feed; the committed layer is then unpacked from its blob.
/// Dropped without a commit, what it unpacked is removed.
pub struct Feed {
    staged: Staged,
    namespace: String,
    /// None once ended (committed, or writes that do not follow on).
    tx: Option<mpsc::Sender<Bytes>>,
    job: Option<JoinHandle<io::Result<(ApplyStats, Compression)>>>,
    dir: PathBuf,
    /// Bytes fed so far: the blob's offset of the next write.
    fed: i64,
}

impl Feed {
    /// The session wrote `data`, which left the blob at `offset` bytes.
    pub async fn wrote(&mut self, data: Bytes, offset: i64) {
        let Some(tx) = &self.tx else {
            return;
        };
        if offset != self.fed + data.len() as i64 {
            tracing::debug!(namespace = %self.namespace, fed = self.fed, offset,
                "layer write does not follow on (started over or resumed); unpacked once committed");
            self.tx = None;
            return;
        }
        self.fed = offset;
        if !data.is_empty() && tx.send(data).await.is_err() {
            tracing::debug!(namespace = %self.namespace, fed = self.fed,
                "layer write's unpacking stopped; unpacked once committed, if at all");
            self.tx = None;
        }
    }

    /// The blob is committed as `digest`: the layer becomes ready once its last bytes are
    /// unpacked (or is unpacked from the blob, if the feed ended early).
    pub fn committed(mut self, digest: &str) {
        if self.tx.is_none() || self.job.is_none() {
            let (staged, namespace) = (self.staged.clone(), self.namespace.clone());
            drop(self);
            staged.stage_committed(&namespace, digest);
            return;
        }
        self.tx = None;
        let Some(job) = self.job.take() else {
            return;
        };
        let Some((generation, state)) = self.staged.register(digest, State::Running) else {
            // Held already (another writer's), or too many: this one is not needed.
            self.job = Some(job);
            return;
        };
        let (staged, namespace, dir) = (
            self.staged.clone(),
            self.namespace.clone(),
            self.dir.clone(),
        );
        let digest = digest.to_string();
        tokio::spawn(async move {
            let result = job
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
            staged
                .settle(&namespace, &digest, generation, state, dir, result)
                .await;
        });
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.staged.inner.feeds.fetch_sub(1, Ordering::Relaxed);
        self.tx = None;
        let Some(job) = self.job.take() else {
            return;
        };
        let dir = self.dir.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                // The thread ends at the end of the stream; then its work goes.
                let _ = job.await;
                let _ = tokio::task::spawn_blocking(move || fs::remove_dir_all(dir)).await;
            });
        }
    }
}

/// Renames `staged` over the empty directory `target`, with `target`'s mode and owner.
fn place(staged: &Path, target: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(target)?;
    if !meta.is_dir() {
        return Err(io::Error::other("the target is not a directory"));
    }
    if fs::read_dir(target)?.next().is_some() {
        return Err(io::Error::other("the target is not empty"));
    }
    std::os::unix::fs::chown(staged, Some(meta.uid()), Some(meta.gid()))?;
    fs::set_permissions(staged, meta.permissions())?;
    fs::rename(staged, target)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Write;
    use std::os::unix::fs::FileTypeExt;

    use sha2::{Digest as _, Sha256};

    use super::*;

    const NS: &str = "ns";

    fn sha(data: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(data)))
    }

    /// A tar of `entries` (a path ending in `/` is a directory), and its gzip.
    fn layer(entries: &[(&str, &[u8])]) -> (Vec<u8>, Vec<u8>) {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            if path.ends_with('/') {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
            } else {
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
            }
            b.append_data(&mut h, path, *data).expect("append");
        }
        let tar = b.into_inner().expect("tar");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).expect("gzip");
        (tar, gz.finish().expect("gzip"))
    }

    struct Env {
        dir: tempfile::TempDir,
        content: ContentStore,
        staged: Staged,
    }

    fn env() -> Env {
        let dir = tempfile::tempdir().expect("tmp");
        let content = crate::content::test_store(dir.path());
        let staged = Staged::open(&dir.path().join("staged"), content.clone());
        Env {
            dir,
            content,
            staged,
        }
    }

    impl Env {
        /// Commits `blob` under `reference` and tells the stager, as the content service does.
        async fn commit(&self, reference: &str, blob: &[u8]) -> String {
            let d = store(self, reference, blob).await;
            self.staged.offer(NS, reference, &d);
            d
        }

        /// A new empty directory, as a fresh snapshot's `fs`.
        fn target(&self, name: &str) -> PathBuf {
            let p = self.dir.path().join(name);
            fs::create_dir(&p).expect("mkdir");
            fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .expect("chmod");
            p
        }

        /// Entries left in this run's staging directory.
        fn left(&self) -> usize {
            fs::read_dir(&self.staged.inner.dir)
                .map(|d| d.count())
                .unwrap_or(0)
        }
    }

    fn bind(dir: &Path) -> Vec<Mount> {
        vec![Mount {
            kind: "bind".into(),
            source: dir.display().to_string(),
            options: vec!["rw".into(), "rbind".into()],
        }]
    }

    fn overlay(upper: &Path, lower: &Path) -> Vec<Mount> {
        vec![Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                format!("upperdir={}", upper.display()),
                format!("lowerdir={}", lower.display()),
            ],
        }]
    }

    #[tokio::test]
    async fn a_committed_layer_is_unpacked_ahead_and_renamed_into_the_snapshot() {
        let e = env();
        let (tar, gz) = layer(&[("etc/", b""), ("etc/hello", b"hi there\n")]);
        let d = e.commit(&format!("layer-{}", sha(&gz)), &gz).await;
        let target = e.target("fs");
        let stats = e
            .staged
            .take(&d, Compression::Gzip, &bind(&target))
            .await
            .expect("the staged layer is used");
        assert_eq!(stats.diff_id, sha(&tar));
        assert_eq!(stats.size, tar.len() as u64);
        assert_eq!(
            fs::read(target.join("etc/hello")).expect("file"),
            b"hi there\n"
        );
        let mode = fs::metadata(&target).expect("stat").permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o7777,
            0o755
        );
        assert_eq!(e.left(), 0, "nothing stays staged");
        // Used once: a second Apply of the same layer unpacks it itself.
        let again = e.target("fs2");
        assert!(
            e.staged
                .take(&d, Compression::Gzip, &bind(&again))
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_layer_with_whiteouts_goes_only_onto_an_overlay_upper_dir() {
        let e = env();
        let (_, gz) = layer(&[("a/", b""), ("a/.wh.gone", b""), ("a/kept", b"k")]);
        let reference = format!("layer-{}", sha(&gz));
        let d = e.commit(&reference, &gz).await;
        // A native apply would delete `a/gone`, not write a marker: not this layer.
        let native = e.target("native");
        assert!(
            e.staged
                .take(&d, Compression::Gzip, &bind(&native))
                .await
                .is_none()
        );
        assert_eq!(fs::read_dir(&native).expect("dir").count(), 0);
        assert_eq!(e.left(), 0, "the unused layer is removed");

        e.staged.offer(NS, &reference, &d);
        let (upper, lower) = (e.target("upper"), e.target("lower"));
        let stats = e
            .staged
            .take(&d, Compression::Auto, &overlay(&upper, &lower))
            .await
            .expect("used for the overlay");
        assert_eq!(stats.markers, 1);
        let gone = fs::symlink_metadata(upper.join("a/gone")).expect("whiteout");
        assert!(gone.file_type().is_char_device(), "{gone:?}");
        assert_eq!(fs::read(upper.join("a/kept")).expect("kept"), b"k");
    }

    #[tokio::test]
    async fn what_does_not_fit_is_applied_as_before() {
        let e = env();
        let (_, gz) = layer(&[("f", b"x")]);
        // Not a layer ref (a config, a manifest): nothing is staged.
        let d = e.commit("config-x", &gz).await;
        let t = e.target("t1");
        assert!(
            e.staged
                .take(&d, Compression::Gzip, &bind(&t))
                .await
                .is_none()
        );

        // The Apply's media type says plain tar; the blob is gzip.
        not_taken(&e, &d, Compression::Uncompressed, &bind(&t)).await;
        // A target that is not empty (a native snapshot holds its parent's files).
        fs::write(t.join("parent-file"), b"p").expect("write");
        not_taken(&e, &d, Compression::Gzip, &bind(&t)).await;
        // A read-only mount is no apply target.
        let ro = vec![Mount {
            kind: "bind".into(),
            source: e.target("t2").display().to_string(),
            options: vec!["ro".into()],
        }];
        not_taken(&e, &d, Compression::Gzip, &ro).await;
        // A blob that is no layer at all fails to unpack: the Apply reports it itself.
        let junk = e.commit("layer-junk", b"not a tar at all").await;
        assert!(
            e.staged
                .take(&junk, Compression::Auto, &bind(&e.target("t3")))
                .await
                .is_none()
        );
        assert_eq!(e.left(), 0, "every unused layer is removed");
    }

    /// Stages the committed layer `d` (again) and checks that an Apply onto `mounts` of a
    /// layer compressed as `compression` does not take it.
    async fn not_taken(e: &Env, d: &str, compression: Compression, mounts: &[Mount]) {
        e.staged.offer(NS, &format!("layer-{d}"), d);
        let taken = e.staged.take(d, compression, mounts).await;
        assert!(taken.is_none(), "{taken:?}");
    }

    /// Stores `blob` in the content store as `reference`, without telling the stager.
    async fn store(e: &Env, reference: &str, blob: &[u8]) -> String {
        let d = sha(blob);
        let mut w = e
            .content
            .writer(NS, reference, 0, &d, None)
            .await
            .expect("writer");
        w.write(blob.to_vec()).await.expect("write");
        w.commit(blob.len() as i64, &d, BTreeMap::new(), None)
            .await
            .expect("commit");
        d
    }

    async fn wait_until_empty(e: &Env) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while e.left() > 0 {
            assert!(std::time::Instant::now() < deadline, "{} left", e.left());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_layer_is_unpacked_as_it_is_written() {
        let e = env();
        let big = vec![7u8; 300_000];
        let (tar, gz) = layer(&[("d/", b""), ("d/big", &big), ("d/small", b"s")]);
        let reference = format!("layer-{}", sha(&gz));
        let mut feed = e.staged.feed(NS, &reference).expect("a layer ref is fed");
        let mut offset = 0;
        for chunk in gz.chunks(1000) {
            offset += chunk.len() as i64;
            feed.wrote(Bytes::copy_from_slice(chunk), offset).await;
        }
        // The blob is not in the content store: only what the feed unpacked can be taken
        // (a layer unpacked from the committed blob instead could not be).
        let d = sha(&gz);
        feed.committed(&d);
        let target = e.target("fs");
        let stats = e
            .staged
            .take(&d, Compression::Gzip, &bind(&target))
            .await
            .expect("the layer unpacked while written is used");
        assert_eq!(stats.diff_id, sha(&tar));
        assert_eq!(fs::read(target.join("d/big")).expect("big"), big);
        assert_eq!(e.left(), 0);
        // Not a layer: no feed.
        assert!(e.staged.feed(NS, "manifest-sha256:x").is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_feed_that_missed_bytes_unpacks_the_committed_blob() {
        let e = env();
        let (tar, gz) = layer(&[("f", b"0123456789")]);
        let reference = format!("layer-{}", sha(&gz));
        let mut feed = e.staged.feed(NS, &reference).expect("fed");
        let head = &gz[..gz.len() / 2];
        feed.wrote(Bytes::copy_from_slice(head), head.len() as i64)
            .await;
        // The session started over from byte 0: the feed's bytes no longer follow on.
        feed.wrote(gz.clone().into(), gz.len() as i64).await;
        let d = store(&e, &reference, &gz).await;
        feed.committed(&d);
        let stats = e
            .staged
            .take(&d, Compression::Auto, &bind(&e.target("fs")))
            .await
            .expect("unpacked from the blob instead");
        assert_eq!(stats.diff_id, sha(&tar));
        wait_until_empty(&e).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_feed_without_a_commit_leaves_nothing() {
        let e = env();
        let (_, gz) = layer(&[("f", &[1u8; 100_000][..])]);
        let mut feed = e.staged.feed(NS, "layer-gone").expect("fed");
        let half = &gz[..gz.len() / 2];
        feed.wrote(Bytes::copy_from_slice(half), half.len() as i64)
            .await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while e.left() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the feed unpacks nothing"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(feed);
        wait_until_empty(&e).await;
        assert_eq!(e.staged.inner.feeds.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_previous_runs_staged_layers_are_removed_at_start() {
        let dir = tempfile::tempdir().expect("tmp");
        let old = dir.path().join("staged/run-1/abc-0/etc");
        fs::create_dir_all(&old).expect("mkdir");
        let content = crate::content::test_store(dir.path());
        let _staged = Staged::open(&dir.path().join("staged"), content);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while dir.path().join("staged/run-1").exists() {
            assert!(std::time::Instant::now() < deadline, "old run not removed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
