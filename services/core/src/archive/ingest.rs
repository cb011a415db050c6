//! The content-store side of an import's second pass: each file the tar reader sends is
//! written through its own content writer and verified on commit.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use berth_oci::image::{Compression, UNCOMPRESSED_LABEL};
use tokio::sync::mpsc;

use super::tar_stream::{Msg, stream_files};
use super::{Archives, open_writer};
use crate::content::{ContentStore, Info, Writer};
use crate::error::{Error, Result};

/// A file the second pass must store.
#[derive(Debug, Clone)]
pub(super) struct Want {
    /// The digest the file must have (an OCI `blobs/<alg>/<hex>` path).
    pub expected: Option<String>,
    /// Gzip it if it is not compressed (a Docker layer with `compress_blobs`).
    pub compress: bool,
}

/// A file stored by the second pass.
#[derive(Debug, Clone)]
pub(super) struct Ingested {
    pub digest: String,
    pub size: i64,
    /// Of the stored bytes.
    pub compression: Compression,
}

impl Archives {
    /// Streams the `wanted` files of the archive into the content store, one writer per
    /// file, verifying each against its expected digest when it has one.
    pub(super) async fn ingest(
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
            } => self.begin(name, size, expected, compression).await,
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
            Msg::End { uncompressed } => self.end(uncompressed).await,
        }
    }

    /// Opens the writer of the next file (none if the namespace has it).
    async fn begin(
        &mut self,
        name: String,
        size: Option<u64>,
        expected: Option<String>,
        compression: Compression,
    ) -> Result<()> {
        self.count += 1;
        let reference = format!("import-{}-{}", self.run, self.count);
        let total = match size {
            Some(s) => i64::try_from(s).map_err(|_| Error::invalid("file too large"))?,
            None => 0,
        };
        let writer = open_writer(
            self.content,
            self.namespace,
            &reference,
            total,
            expected.as_deref().unwrap_or(""),
            self.lease.as_deref(),
        )
        .await
        .map_err(|e| e.context(&self.context(&name)))?;
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

    /// Commits the file in progress (with the uncompressed digest of a file gzipped on the
    /// way as its label).
    async fn end(&mut self, uncompressed: Option<String>) -> Result<()> {
        let Some(mut cur) = self.current.take() else {
            return Err(Error::Internal("import: end outside a file".into()));
        };
        let size = cur.size.map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX));
        let (digest, size) = match cur.writer.take() {
            None => (cur.expected.clone().unwrap_or_default(), size),
            Some(w) => {
                let mut labels = BTreeMap::new();
                if let Some(u) = &uncompressed {
                    labels.insert(UNCOMPRESSED_LABEL.to_string(), u.clone());
                }
                self.commit(&cur, w, size, labels).await?
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

    /// Commits a written file; one that is there already gets the labels. Returns the
    /// digest and size stored.
    async fn commit(
        &self,
        cur: &Current,
        w: Writer,
        size: i64,
        labels: BTreeMap<String, String>,
    ) -> Result<(String, i64)> {
        let digest = w.digest();
        let written = w.offset();
        let expected = cur.expected.clone().unwrap_or_default();
        match w
            .commit(size, &expected, labels.clone(), self.lease.clone())
            .await
        {
            Ok(info) => Ok((info.digest, info.size)),
            Err(Error::AlreadyExists(_)) => {
                if !labels.is_empty() {
                    let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
                    let info = Info {
                        digest: digest.clone(),
                        labels,
                        ..Default::default()
                    };
                    self.content.update(self.namespace, info, paths).await?;
                }
                Ok((digest, written))
            }
            Err(e) => {
                self.forget(&cur.reference).await;
                Err(e.context(&self.context(&cur.name)))
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
