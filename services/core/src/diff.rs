//! The differ (containerd's `walking` differ): applies layer blobs from the content store
//! onto snapshot mounts, and turns the difference between two mounts into a layer blob.
//!
//! - **Apply** reads the blob, decompresses it by media type and unpacks it with
//!   [`berth_snapshotter::apply_layer`]: straight into the upper dir of a writable overlay
//!   mount (overlay whiteouts) or the source of a bind mount (native), otherwise onto the
//!   mounts mounted on a temporary directory. The result names the uncompressed tar (its
//!   digest is the layer's diff ID), as containerd's applier reports it.
//! - **Diff** mounts both sides read-only, writes the changes as a tar with
//!   [`berth_snapshotter::diff`], compresses it into an anonymous temporary file while
//!   hashing, then stores it through the content writer (verified on commit) with the
//!   `containerd.io/uncompressed` label.
//!
//! All filesystem work runs on the blocking pool.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use berth_snapshotter::mount::{apply_target, with_temp_mount};
use berth_snapshotter::{ApplyOptions, ApplyStats, Compression, Mount, SnapshotterError};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt;

use crate::content::ContentStore;
use crate::error::{Error, Result};
use crate::images::Descriptor;
use crate::leases::{Leases, Resource};
use crate::staged::{Feed, Staged};
use berth_oci::image::{self as oci, MediaType, UNCOMPRESSED_LABEL};

/// Bytes per content write when storing a produced layer.
const COPY_CHUNK: usize = 1 << 20;

fn unsupported(media_type: &str) -> Error {
    Error::NotImplemented(format!("unsupported diff media type: {media_type}"))
}

/// How a layer of `media_type` is compressed ([`Compression::of_layer`]); wrapped types
/// (`+encrypted`) and anything that is not a layer are NotImplemented, as in containerd.
pub fn layer_compression(media_type: &str) -> Result<Compression> {
    Compression::of_layer(&MediaType::from(media_type)).ok_or_else(|| unsupported(media_type))
}

/// How a produced layer is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Plain,
    Gzip,
    Zstd,
}

/// The media type of a produced layer (empty: OCI gzip) and how to compress it.
fn output_compression(media_type: &str) -> Result<(String, Output)> {
    let mt = if media_type.is_empty() {
        oci::OCI_LAYER_GZIP
    } else {
        media_type
    };
    let out = match layer_compression(mt)? {
        Compression::Gzip => Output::Gzip,
        Compression::Zstd => Output::Zstd,
        Compression::Uncompressed | Compression::Auto => Output::Plain,
    };
    Ok((mt.to_string(), out))
}

/// Mounts made read-only as containerd's `WithReadonlyTempMount` does: an overlay's upper
/// dir becomes its top lower dir (no work dir), other mounts get `ro`.
pub fn readonly(mounts: &[Mount]) -> Vec<Mount> {
    mounts
        .iter()
        .map(|m| {
            if m.kind == "overlay" {
                let upper = m
                    .options
                    .iter()
                    .find_map(|o| o.strip_prefix("upperdir="))
                    .map(str::to_string);
                let Some(upper) = upper else {
                    return m.clone();
                };
                let mut options = Vec::new();
                let mut had_lower = false;
                for o in &m.options {
                    if o.starts_with("upperdir=") || o.starts_with("workdir=") {
                        continue;
                    }
                    if let Some(lower) = o.strip_prefix("lowerdir=") {
                        options.push(format!("lowerdir={upper}:{lower}"));
                        had_lower = true;
                    } else {
                        options.push(o.clone());
                    }
                }
                if !had_lower {
                    // One lower dir is not a valid overlay: bind the former upper instead.
                    return Mount {
                        kind: "bind".into(),
                        source: upper,
                        options: vec!["ro".into(), "rbind".into()],
                    };
                }
                Mount {
                    kind: m.kind.clone(),
                    source: m.source.clone(),
                    options,
                }
            } else {
                let mut options: Vec<String> =
                    m.options.iter().filter(|o| *o != "rw").cloned().collect();
                if !options.iter().any(|o| o == "ro") {
                    options.push("ro".into());
                }
                Mount {
                    kind: m.kind.clone(),
                    source: m.source.clone(),
                    options,
                }
            }
        })
        .collect()
}

/// Applies a layer stream onto `mounts`: straight into the upper dir of a writable overlay
/// mount (overlay whiteouts) or the source of a bind mount (native whiteouts, unless
/// `overlay_layer` says that directory is an overlay layer of its own), otherwise onto the
/// mounts mounted on a temporary directory. The one way Diff.Apply and unpack apply.
pub fn apply_to_mounts(
    mounts: &[Mount],
    reader: impl io::Read,
    compression: Compression,
    overlay_layer: bool,
    cancel: Option<Arc<AtomicBool>>,
) -> berth_snapshotter::Result<ApplyStats> {
    match apply_target(mounts) {
        Some((dir, overlay)) => berth_snapshotter::apply_layer(
            reader,
            compression,
            &dir,
            &ApplyOptions {
                overlay_whiteouts: overlay || overlay_layer,
                cancel,
            },
        ),
        None => with_temp_mount(mounts, |root| {
            berth_snapshotter::apply_layer(
                reader,
                compression,
                root,
                &ApplyOptions {
                    overlay_whiteouts: false,
                    cancel,
                },
            )
        }),
    }
}

/// A layer error with the layer's digest in its message, its class kept: a bad layer is the
/// caller's input (InvalidArgument), an unsupported one NotImplemented.
fn layer_error(digest: &str, e: SnapshotterError) -> Error {
    use SnapshotterError as S;
    match e {
        S::InvalidArgument(m) => Error::invalid(format!("apply layer {digest}: {m}")),
        S::PathEscape { .. } | S::InvalidEntry { .. } | S::Decompress { .. } | S::Tar { .. } => {
            Error::invalid(format!("apply layer {digest}: {e}"))
        }
        S::NotImplemented(m) => Error::NotImplemented(format!("apply layer {digest}: {m}")),
        S::CompressionNotImplemented(_) => {
            Error::NotImplemented(format!("apply layer {digest}: {e}"))
        }
        other => Error::Snapshotter(other),
    }
}

/// A writer that hashes and counts what passes through.
struct HashCount<W> {
    inner: W,
    hash: Sha256,
    count: u64,
}

impl<W: Write> Write for HashCount<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What a produced layer is.
struct Produced {
    file: File,
    digest: String,
    size: u64,
    diff_id: String,
}

fn write_err(source: io::Error) -> SnapshotterError {
    SnapshotterError::Write {
        path: PathBuf::from("<diff temporary file>"),
        source,
    }
}

/// Writes the diff `lower` → `upper` compressed as `output` into `file`.
fn produce(
    lower: &Path,
    upper: &Path,
    output: Output,
    file: File,
) -> berth_snapshotter::Result<Produced> {
    let mut sink = HashCount {
        inner: io::BufWriter::new(file),
        hash: Sha256::new(),
        count: 0,
    };
    let stats = match output {
        Output::Plain => berth_snapshotter::diff(lower, upper, false, &mut sink)?,
        Output::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(&mut sink, flate2::Compression::default());
            let stats = berth_snapshotter::diff(lower, upper, false, &mut enc)?;
            enc.finish().map_err(write_err)?;
            stats
        }
        Output::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(&mut sink, 3).map_err(write_err)?;
            let stats = berth_snapshotter::diff(lower, upper, false, &mut enc)?;
            enc.finish().map_err(write_err)?;
            stats
        }
    };
    let HashCount {
        inner, hash, count, ..
    } = sink;
    let mut file = inner.into_inner().map_err(|e| write_err(e.into_error()))?;
    file.seek(SeekFrom::Start(0)).map_err(write_err)?;
    Ok(Produced {
        file,
        digest: format!("sha256:{}", hex::encode(hash.finalize())),
        size: count,
        diff_id: stats.diff_id,
    })
}

/// A content ref for a diff whose request named none (unique, like containerd's).
fn generated_ref() -> String {
    format!(
        "diff-{}-{}",
        crate::metadata::now_nanos(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// What an Apply reports: the uncompressed layer (its digest is the diff ID).
fn applied(stats: ApplyStats) -> Descriptor {
    Descriptor {
        media_type: oci::OCI_LAYER.to_string(),
        digest: stats.diff_id,
        size: i64::try_from(stats.size).unwrap_or(i64::MAX),
        annotations: BTreeMap::new(),
    }
}

/// What `Diff` is asked for.
#[derive(Debug, Clone, Default)]
pub struct DiffRequest {
    /// The lower side; empty means "against nothing".
    pub left: Vec<Mount>,
    pub right: Vec<Mount>,
    /// Media type of the blob to produce; empty means OCI tar+gzip.
    pub media_type: String,
    /// The content ingest ref; empty means a generated one.
    pub reference: String,
    pub labels: BTreeMap<String, String>,
}

/// The differ. Cheap to clone.
#[derive(Clone)]
pub struct Differ {
    content: ContentStore,
    leases: Leases,
    /// Layers unpacked ahead of their Apply (None: every Apply unpacks its blob).
    staged: Option<Staged>,
}

/// Sets its flag when dropped (with the request future that owns it).
#[derive(Default)]
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Differ {
    pub fn new(content: ContentStore, leases: Leases) -> Differ {
        Differ {
            content,
            leases,
            staged: None,
        }
    }

    /// Unpacks layers ahead into `staged` ([`crate::staged`]).
    pub fn with_staged(mut self, staged: Staged) -> Differ {
        self.staged = Some(staged);
        self
    }

    /// A write session on `reference` begins: a layer is unpacked as it is written, if this
    /// differ unpacks ahead ([`crate::staged::Feed`]).
    pub fn feed(&self, namespace: &str, reference: &str) -> Option<Feed> {
        self.staged.as_ref()?.feed(namespace, reference)
    }

    /// A blob was committed through the content service under `reference` without a feed:
    /// a layer is unpacked ahead of its Apply, if this differ does that.
    pub fn committed(&self, namespace: &str, reference: &str, digest: &str) {
        if let Some(staged) = &self.staged {
            staged.offer(namespace, reference, digest);
        }
    }

    /// Applies the layer `desc` of `namespace`'s content onto `mounts`; returns the
    /// uncompressed layer's descriptor (its digest is the diff ID).
    #[tracing::instrument(level = "debug", skip(self, mounts), fields(digest = %desc.digest))]
    pub async fn apply(
        &self,
        namespace: &str,
        desc: &Descriptor,
        mounts: Vec<Mount>,
    ) -> Result<Descriptor> {
        let compression = layer_compression(&desc.media_type)?;
        if mounts.is_empty() {
            return Err(Error::invalid(format!(
                "apply layer {}: no mounts to apply onto",
                desc.digest
            )));
        }
        let (file, _) = self.content.open_blob(namespace, &desc.digest).await?;
        if let Some(staged) = &self.staged
            && let Some(stats) = staged.take(&desc.digest, compression, &mounts).await
        {
            tracing::debug!(%namespace, digest = %desc.digest, "applied from the layer unpacked ahead");
            return Ok(applied(stats));
        }
        let digest = desc.digest.clone();
        // Dropped with this future when the client goes away: the apply stops at its next
        // entry instead of working on for nobody.
        let cancel = CancelOnDrop::default();
        let flag = cancel.0.clone();
        let stats = tokio::task::spawn_blocking(move || {
            apply_to_mounts(
                &mounts,
                io::BufReader::new(file),
                compression,
                false,
                Some(flag),
            )
        })
        .await
        .map_err(|e| Error::Internal(format!("apply layer task: {e}")))?
        .map_err(|e| layer_error(&digest, e))?;
        drop(cancel);
        Ok(applied(stats))
    }

    /// Stores the changes from `req.left` to `req.right` as a layer blob in `namespace`
    /// (and in `lease`, if given) and returns its descriptor.
    #[tracing::instrument(level = "debug", skip(self, req), fields(media_type = %req.media_type))]
    pub async fn diff(
        &self,
        namespace: &str,
        req: DiffRequest,
        lease: Option<String>,
    ) -> Result<Descriptor> {
        let (media_type, output) = output_compression(&req.media_type)?;
        if req.right.is_empty() {
            return Err(Error::invalid("diff: the right (upper) mounts must be set"));
        }
        let left = readonly(&req.left);
        let right = readonly(&req.right);
        let produced = tokio::task::spawn_blocking(move || {
            let file = tempfile::tempfile().map_err(write_err)?;
            let with_upper =
                |lower: &Path| with_temp_mount(&right, |upper| produce(lower, upper, output, file));
            if left.is_empty() {
                let empty = tempfile::tempdir().map_err(write_err)?;
                with_upper(empty.path())
            } else {
                with_temp_mount(&left, with_upper)
            }
        })
        .await
        .map_err(|e| Error::Internal(format!("diff task: {e}")))??;

        let mut labels = req.labels;
        labels.insert(UNCOMPRESSED_LABEL.to_string(), produced.diff_id.clone());
        let size = i64::try_from(produced.size).unwrap_or(i64::MAX);
        let generated = req.reference.is_empty();
        let reference = if generated {
            generated_ref()
        } else {
            req.reference
        };
        let stored = self
            .store(namespace, &reference, produced, size, labels, lease.clone())
            .await;
        let digest = match stored {
            Ok(d) => d,
            Err(e) => {
                if generated {
                    let _ = self.content.abort(namespace, &reference).await;
                }
                return Err(e);
            }
        };
        Ok(Descriptor {
            media_type,
            digest,
            size,
            annotations: BTreeMap::new(),
        })
    }

    /// Writes the produced blob under `reference`; a blob the namespace already holds is
    /// kept (given the uncompressed label if it lacks it, and added to the lease).
    async fn store(
        &self,
        namespace: &str,
        reference: &str,
        produced: Produced,
        size: i64,
        labels: BTreeMap<String, String>,
        lease: Option<String>,
    ) -> Result<String> {
        let digest = produced.digest.clone();
        let committed = match self
            .content
            .writer(namespace, reference, size, &digest, lease.as_deref())
            .await
        {
            Ok(mut w) => {
                if w.offset() > 0 {
                    w.truncate().await?;
                }
                let mut file = tokio::fs::File::from_std(produced.file);
                loop {
                    let mut buf = vec![0u8; COPY_CHUNK];
                    let n = file
                        .read(&mut buf)
                        .await
                        .map_err(|e| Error::io("read", "<diff temporary file>", e))?;
                    if n == 0 {
                        break;
                    }
                    buf.truncate(n);
                    w.write(buf).await?;
                }
                match w.commit(size, &digest, labels.clone(), lease.clone()).await {
                    Ok(_) => true,
                    Err(e) if e.is_already_exists() => false,
                    Err(e) => return Err(e),
                }
            }
            Err(e) if e.is_already_exists() => false,
            Err(e) => return Err(e),
        };
        if !committed {
            let mut info = self.content.info(namespace, &digest).await?;
            if !info.labels.contains_key(UNCOMPRESSED_LABEL)
                && let Some(v) = labels.get(UNCOMPRESSED_LABEL)
            {
                info.labels
                    .insert(UNCOMPRESSED_LABEL.to_string(), v.clone());
                self.content
                    .update(
                        namespace,
                        info,
                        vec![format!("labels.{UNCOMPRESSED_LABEL}")],
                    )
                    .await?;
            }
            if let Some(lease) = lease {
                self.leases
                    .add_resource(namespace, &lease, Resource::content(&digest))
                    .await?;
            }
        }
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_by_media_type() {
        let c = |mt: &str| layer_compression(mt).map_err(|e| e.to_string());
        assert_eq!(c(oci::OCI_LAYER), Ok(Compression::Uncompressed));
        assert_eq!(c(oci::OCI_LAYER_GZIP), Ok(Compression::Gzip));
        assert_eq!(c(oci::OCI_LAYER_ZSTD), Ok(Compression::Zstd));
        assert_eq!(
            c("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"),
            Ok(Compression::Gzip)
        );
        assert_eq!(c(oci::DOCKER_LAYER_GZIP), Ok(Compression::Gzip));
        assert_eq!(c(oci::DOCKER_LAYER_FOREIGN_GZIP), Ok(Compression::Gzip));
        assert_eq!(c(oci::DOCKER_LAYER), Ok(Compression::Auto));
        for bad in [
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
            "application/vnd.oci.image.manifest.v1+json",
            "",
        ] {
            let e = c(bad).expect_err(bad);
            assert!(e.contains("unsupported diff media type"), "{e}");
        }
        assert!(matches!(
            layer_compression("text/plain"),
            Err(Error::NotImplemented(_))
        ));
    }

    #[test]
    fn output_defaults_to_gzip() {
        let (mt, out) = output_compression("").expect("default");
        assert_eq!((mt.as_str(), out), (oci::OCI_LAYER_GZIP, Output::Gzip));
        let (_, out) = output_compression(oci::OCI_LAYER).expect("tar");
        assert_eq!(out, Output::Plain);
        let (_, out) = output_compression(oci::OCI_LAYER_ZSTD).expect("zstd");
        assert_eq!(out, Output::Zstd);
        assert!(output_compression("application/json").is_err());
    }

    #[test]
    fn readonly_mounts() {
        let ov = Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                "index=off".into(),
                "workdir=/s/2/work".into(),
                "upperdir=/s/2/fs".into(),
                "lowerdir=/s/1/fs".into(),
            ],
        };
        let ro = readonly(&[ov]);
        assert_eq!(
            ro[0].options,
            vec![
                "index=off".to_string(),
                "lowerdir=/s/2/fs:/s/1/fs".to_string()
            ]
        );
        let single = Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: vec!["workdir=/w".into(), "upperdir=/u".into()],
        };
        let ro = readonly(&[single]);
        assert_eq!(ro[0].kind, "bind");
        assert_eq!(ro[0].source, "/u");
        let bind = Mount {
            kind: "bind".into(),
            source: "/s/1/fs".into(),
            options: vec!["rw".into(), "rbind".into()],
        };
        assert_eq!(
            readonly(&[bind])[0].options,
            vec!["rbind".to_string(), "ro".to_string()]
        );
    }

    #[test]
    fn bad_layers_keep_their_class_and_name_the_digest() {
        let e = layer_error(
            "sha256:abc",
            SnapshotterError::PathEscape {
                entry: "../x".into(),
                reason: "leaves the root".into(),
            },
        );
        assert!(
            matches!(&e, Error::InvalidArgument(m) if m.contains("sha256:abc") && m.contains("../x"))
        );
    }
}
