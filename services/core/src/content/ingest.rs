//! The file side of one ingest, `<root>/content/ingest/<key>/` (the layout is drawn in the
//! store's opening comment): its small state files, its status, and the writer state that
//! resumes, appends to and hashes its `data`. Everything here blocks: the store runs it on
//! the blocking pool.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::filters::Adaptor;
use crate::metadata;

/// The state of an ingest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    pub reference: String,
    pub offset: i64,
    pub total: i64,
    pub expected: String,
    pub started_at: i64,
    pub updated_at: i64,
}

impl Adaptor for Status {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "ref" => Some(self.reference.clone()),
            _ => None,
        }
    }
}

pub(super) fn write_small(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|e| Error::io("write", path, e))
}

pub(super) fn read_small(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| Error::io("read", path, e))
}

pub(super) fn read_i64(path: &Path) -> i64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The status of the ingest in `dir`, read from its files.
pub(super) fn read_status(dir: &Path, reference: &str) -> Result<Status> {
    let data = dir.join("data");
    let offset = fs::metadata(&data)
        .map_err(|e| Error::io("stat ingest", &data, e))?
        .len();
    Ok(Status {
        reference: reference.to_string(),
        offset: i64::try_from(offset).unwrap_or(i64::MAX),
        total: read_i64(&dir.join("total")),
        expected: fs::read_to_string(dir.join("expected")).unwrap_or_default(),
        started_at: read_i64(&dir.join("startedat")),
        updated_at: read_i64(&dir.join("updatedat")),
    })
}

/// The file side of a writer; moved onto the blocking pool for each operation.
pub(super) struct WriterState {
    pub(super) dir: PathBuf,
    /// Written at explicit offsets, so a big write can go on beside its hashing.
    pub(super) file: Arc<File>,
    hasher: Sha256,
    pub(super) offset: u64,
    total: i64,
    pub(super) expected: String,
    started_at: i64,
    /// Unix nanoseconds of the last write. The `updatedat` file (what the expiry of
    /// abandoned ingests and other sessions' Status read) follows it at most once per
    /// [`TOUCH_EVERY_NANOS`]: a file write per 1 MiB write would be wasted.
    updated_at: i64,
    touched_at: i64,
}

/// How stale the `updatedat` file of an ingest being written may be.
const TOUCH_EVERY_NANOS: i64 = 1_000_000_000;

impl WriterState {
    /// Opens the ingest in `dir`, or resumes it (re-hashing what it holds); starts it over
    /// when it was begun for another size or digest.
    pub(super) fn open(
        dir: PathBuf,
        namespace: &str,
        reference: &str,
        total: i64,
        expected: &str,
        lease: Option<&str>,
    ) -> Result<WriterState> {
        let data = dir.join("data");
        let resumed = data.exists();
        let now_nanos = metadata::now_nanos();
        let now = now_nanos.to_string();
        if !resumed {
            fs::create_dir_all(&dir).map_err(|e| Error::io("create ingest", &dir, e))?;
            write_small(&dir.join("ref"), &format!("{namespace}\n{reference}"))?;
            write_small(&dir.join("startedat"), &now)?;
        }
        // Opening counts as a touch: an abandoned ingest's clock starts again.
        write_small(&dir.join("updatedat"), &now)?;
        write_lease(&dir, lease)?;
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&data)
            .map_err(|e| Error::io("open ingest data", &data, e))?;
        let (mut hasher, mut offset) = rehash(&mut file, &data)?;
        let mut total = total;
        let stored_total = read_i64(&dir.join("total"));
        let stored_expected = fs::read_to_string(dir.join("expected")).unwrap_or_default();
        let mut expected = expected.to_string();
        // An ingest left by a writer that claimed another size or digest (a registry that
        // lied about a layer, a client that gave up) cannot be resumed by this one: it
        // starts over rather than refusing every later writer of the ref.
        let other_total = total != 0 && stored_total != 0 && stored_total != total;
        let other_digest =
            !expected.is_empty() && !stored_expected.is_empty() && stored_expected != expected;
        if resumed && (other_total || other_digest) {
            tracing::info!(
                namespace,
                reference,
                total,
                stored_total,
                expected = %expected,
                stored_expected = %stored_expected,
                "ingest was started for another size or digest: starting over"
            );
            file.set_len(0)
                .map_err(|e| Error::io("truncate ingest data", &data, e))?;
            hasher = Sha256::new();
            offset = 0;
            let now = metadata::now_nanos().to_string();
            write_small(&dir.join("startedat"), &now)?;
            write_small(&dir.join("updatedat"), &now)?;
        } else if total == 0 {
            total = stored_total;
        }
        write_small(&dir.join("total"), &total.to_string())?;
        if expected.is_empty() {
            expected = stored_expected;
        }
        write_small(&dir.join("expected"), &expected)?;
        Ok(WriterState {
            started_at: read_i64(&dir.join("startedat")),
            dir,
            file: Arc::new(file),
            hasher,
            offset,
            total,
            expected,
            updated_at: now_nanos,
            touched_at: now_nanos,
        })
    }

    pub(super) fn status(&self, reference: &str) -> Status {
        Status {
            reference: reference.to_string(),
            offset: i64::try_from(self.offset).unwrap_or(i64::MAX),
            total: self.total,
            expected: self.expected.clone(),
            started_at: self.started_at,
            updated_at: self.updated_at,
        }
    }

    /// Appends `data`: written at the offset, then hashed.
    pub(super) fn write(&mut self, data: &[u8]) -> Result<()> {
        write_at(&self.file, &self.dir, data, self.offset)?;
        self.hasher.update(data);
        self.appended(data.len())
    }

    /// Hashes `data`, whose write at [`Self::offset`] goes on elsewhere ([`write_at`]);
    /// [`Self::appended`] then counts it, or [`Self::unhash`] takes it back.
    pub(super) fn hash(&mut self, data: &[u8]) -> Sha256 {
        let before = self.hasher.clone();
        self.hasher.update(data);
        before
    }

    /// Takes back a [`Self::hash`] whose write failed.
    pub(super) fn unhash(&mut self, before: Sha256) {
        self.hasher = before;
    }

    /// Counts `len` written and hashed bytes; touches `updatedat` when it is stale.
    pub(super) fn appended(&mut self, len: usize) -> Result<()> {
        self.offset += len as u64;
        self.updated_at = metadata::now_nanos();
        if self.updated_at - self.touched_at >= TOUCH_EVERY_NANOS {
            write_small(&self.dir.join("updatedat"), &self.updated_at.to_string())?;
            self.touched_at = self.updated_at;
        }
        Ok(())
    }

    pub(super) fn truncate(&mut self) -> Result<()> {
        let path = self.dir.join("data");
        self.file
            .set_len(0)
            .map_err(|e| Error::io("truncate ingest", &path, e))?;
        self.hasher = Sha256::new();
        self.offset = 0;
        Ok(())
    }

    pub(super) fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.clone().finalize()))
    }
}

/// Writes `data` at `offset` of the ingest's `data` file in `dir`. A write that fails part
/// way is cut back off, so the file never holds more than the hashed bytes.
pub(super) fn write_at(file: &File, dir: &Path, data: &[u8], offset: u64) -> Result<()> {
    file.write_all_at(data, offset).map_err(|e| {
        let _ = file.set_len(offset);
        Error::io("write ingest", dir.join("data"), e)
    })
}

/// Records the lease of the writer that opens the ingest; without one, the ingest has none.
fn write_lease(dir: &Path, lease: Option<&str>) -> Result<()> {
    let lease_file = dir.join("lease");
    match lease {
        Some(l) => write_small(&lease_file, l),
        None => match fs::remove_file(&lease_file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove ingest lease", &lease_file, e)),
        },
    }
}

/// Hashes what the ingest's `data` already holds: the hasher and the offset to resume at.
fn rehash(file: &mut File, data: &Path) -> Result<(Sha256, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io("read ingest data", data, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    Ok((hasher, offset))
}
