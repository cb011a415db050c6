//! One `Write` session of containerd's content service: the first request names the ref
//! (and may give the total size and expected digest); then each request is a STAT, a WRITE
//! or a COMMIT, answered with the writer's state. The rules are containerd's: a write must
//! start at the current offset (offset 0 starts over), a request that names an expected
//! digest the namespace already holds ends the session with AlreadyExists and drops the
//! ingest, and a commit verifies size and digest and ends the session.

use std::collections::BTreeMap;

use super::{ContentStore, Writer};
use crate::error::{Error, Result};

/// What one request asks of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteAction {
    /// Report the state.
    Stat,
    /// Append data.
    Write,
    /// Append data, then commit.
    Commit,
}

/// One request of a session.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub action: WriteAction,
    /// Where the data goes: the current offset, or 0 to start over.
    pub offset: i64,
    /// The blob's size, when the request tells it (0: unchanged).
    pub total: i64,
    /// The blob's digest, when the request tells it (empty: unchanged).
    pub expected: String,
    pub data: bytes::Bytes,
    /// The committed blob's labels.
    pub labels: BTreeMap<String, String>,
}

/// The state a request is answered with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteState {
    pub offset: i64,
    /// The digest of what was written so far (after a commit: the blob's).
    pub digest: String,
    pub total: i64,
    /// Unix nanoseconds.
    pub started_at: i64,
    pub updated_at: i64,
    /// The blob is committed: the session is over.
    pub committed: bool,
}

/// A live session on one ref.
pub struct WriteSession {
    content: ContentStore,
    namespace: String,
    reference: String,
    lease: Option<String>,
    /// None once committed.
    writer: Option<Writer>,
    total: i64,
    expected: String,
}

impl WriteSession {
    /// Opens the session on `reference` (resuming its ingest, if any), held by `lease`.
    pub async fn open(
        content: &ContentStore,
        namespace: &str,
        reference: &str,
        total: i64,
        expected: &str,
        lease: Option<String>,
    ) -> Result<WriteSession> {
        if reference.is_empty() {
            return Err(Error::invalid("first message must have a reference"));
        }
        let writer = content
            .writer(namespace, reference, total, expected, lease.as_deref())
            .await?;
        Ok(WriteSession {
            content: content.clone(),
            namespace: namespace.to_string(),
            reference: reference.to_string(),
            lease,
            writer: Some(writer),
            total,
            expected: expected.to_string(),
        })
    }

    /// Serves one request.
    pub async fn step(&mut self, mut req: WriteRequest) -> Result<WriteState> {
        let Some(mut w) = self.writer.take() else {
            return Err(Error::precondition(format!(
                "write session of {:?} is over: its blob is committed",
                self.reference
            )));
        };
        if !req.expected.is_empty() {
            self.expected = std::mem::take(&mut req.expected);
            if self
                .content
                .info(&self.namespace, &self.expected)
                .await
                .is_ok()
            {
                drop(w);
                let _ = self.content.abort(&self.namespace, &self.reference).await;
                return Err(Error::already_exists(format!(
                    "blob with expected digest {} exists",
                    self.expected
                )));
            }
        }
        if req.total > 0 {
            self.total = req.total;
        }
        let ws = w.status();
        let mut state = WriteState {
            offset: ws.offset,
            total: self.total,
            started_at: ws.started_at,
            updated_at: ws.updated_at,
            ..Default::default()
        };
        if req.action != WriteAction::Stat {
            state.offset = write(&mut w, &mut req, ws.offset).await?;
        }
        if req.action == WriteAction::Commit {
            let labels = std::mem::take(&mut req.labels);
            let info = w
                .commit(self.total, &self.expected, labels, self.lease.clone())
                .await?;
            state.digest = info.digest;
            state.offset = info.size;
            state.committed = true;
            return Ok(state);
        }
        state.digest = w.digest();
        self.writer = Some(w);
        Ok(state)
    }
}

/// Appends the request's data at `offset` (the writer's), or from 0 when the request starts
/// over; returns the new offset.
async fn write(w: &mut Writer, req: &mut WriteRequest, offset: i64) -> Result<i64> {
    if req.offset > 0 && req.offset != offset {
        return Err(Error::OutOfRange(format!(
            "write @{} must occur at current offset {offset}",
            req.offset
        )));
    }
    let mut offset = offset;
    if req.offset == 0 && offset > 0 {
        w.truncate().await?;
        offset = 0;
    }
    if !req.data.is_empty() {
        let n = req.data.len() as i64;
        w.write(std::mem::take(&mut req.data)).await?;
        offset += n;
    }
    Ok(offset)
}
