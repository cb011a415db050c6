//! Readers and writers that hash (sha256) and count the bytes passing through.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

/// Hashes and counts everything read through it; remembers whether the inner reader failed
/// (for a decompressor, that means the compressed stream is corrupt).
pub(crate) struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
    pub(crate) inner_failed: bool,
}

impl<R: Read> HashReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            size: 0,
            inner_failed: false,
        }
    }

    /// `sha256:<hex>` of the bytes read so far, and their count.
    pub(crate) fn finish(self) -> (String, u64) {
        (
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.size,
        )
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                self.size += n as u64;
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.inner_failed = true;
                }
                Err(e)
            }
        }
    }
}

/// Hashes and counts everything written through it.
pub(crate) struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> HashWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    pub(crate) fn finish(self) -> (String, u64) {
        (
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.size,
        )
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
