//! Reading an image archive, on the blocking pool: the (plain or gzip) tar walked once for
//! its listing and metadata files, then again to send the wanted files, chunk by chunk, to
//! the content writer ([`super::ingest`]), gzipping Docker layers on the way if asked.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use berth_oci::image::{self as oci, Compression, INDEX_FILE, LAYOUT_FILE};
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use super::ingest::Want;
use super::{CHUNK, DOCKER_MANIFEST_FILE, MAX_JSON};
use crate::digest;
use crate::error::{Error, Result};

/// The files of an archive, and its metadata documents.
#[derive(Debug, Default)]
pub(super) struct Listing {
    /// Regular files (cleaned path) and their sizes.
    pub files: HashMap<String, u64>,
    /// Symbolic and hard links (cleaned path) and the file they point at (cleaned).
    pub links: HashMap<String, String>,
    pub layout: Option<Vec<u8>>,
    pub index: Option<Vec<u8>>,
    pub docker_manifest: Option<Vec<u8>>,
}

impl Listing {
    /// The regular file a path names, following links (Docker `save` links repeated
    /// layers to the first copy).
    pub fn resolve(&self, name: &str) -> Option<String> {
        let mut name = clean_path(name);
        for _ in 0..16 {
            if self.files.contains_key(&name) {
                return Some(name);
            }
            name = self.links.get(&name)?.clone();
        }
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    File,
    Symlink,
    HardLink,
    Other,
}

/// What `walk_tar` tells its visitor about an entry.
struct EntryHead {
    name: String,
    kind: EntryKind,
    size: u64,
    link: Option<String>,
}

fn bad_archive(archive: &Path, e: impl std::fmt::Display) -> Error {
    Error::invalid(format!(
        "archive {}: not a valid tar archive, or truncated: {e}",
        archive.display()
    ))
}

/// Calls `visit` for every entry of the (plain or gzip) tar at `archive`. A plain tar is
/// read with seeks over the data the visitor does not read.
fn walk_tar(
    archive: &Path,
    visit: &mut dyn FnMut(&EntryHead, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let mut file = File::open(archive).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::not_found(format!("archive {}", archive.display())),
        _ => Error::io("open archive", archive, e),
    })?;
    let mut magic = [0u8; 4];
    let n = read_full(&mut file, &mut magic).map_err(|e| Error::io("read archive", archive, e))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io("seek archive", archive, e))?;
    match Compression::detect(&magic[..n]) {
        Compression::Gzip => {
            let mut tar = tar::Archive::new(MultiGzDecoder::new(BufReader::new(file)));
            let entries = tar.entries().map_err(|e| bad_archive(archive, e))?;
            visit_entries(archive, entries, None, visit)
        }
        Compression::Zstd => Err(Error::invalid(format!(
            "archive {}: zstd-compressed archives are not supported; decompress it first",
            archive.display()
        ))),
        Compression::Uncompressed | Compression::Auto => {
            let len = file
                .metadata()
                .map_err(|e| Error::io("stat archive", archive, e))?
                .len();
            let mut tar = tar::Archive::new(file);
            let entries = tar
                .entries_with_seek()
                .map_err(|e| bad_archive(archive, e))?;
            visit_entries(archive, entries, Some(len), visit)
        }
    }
}

fn visit_entries<R: Read>(
    archive: &Path,
    entries: tar::Entries<'_, R>,
    file_len: Option<u64>,
    visit: &mut dyn FnMut(&EntryHead, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    for entry in entries {
        let mut entry = entry.map_err(|e| bad_archive(archive, e))?;
        let name = clean_path(&String::from_utf8_lossy(&entry.path_bytes()));
        let stored = entry
            .header()
            .entry_size()
            .map_err(|e| bad_archive(archive, e))?;
        // Seeking past the data of the last entries of a cut-off file does not fail. Like
        // Go's archive/tar, the padding to the next block must be there too; the end marker
        // (two zero blocks) may be missing.
        let padded = stored.div_ceil(512).saturating_mul(512);
        if let Some(len) = file_len
            && entry.raw_file_position().saturating_add(padded) > len
        {
            return Err(Error::invalid(format!(
                "archive {} is truncated: {name} ({stored} bytes) ends at byte {}, \
                 the file has {len}",
                archive.display(),
                entry.raw_file_position().saturating_add(padded)
            )));
        }
        let entry_type = entry.header().entry_type();
        let kind = if entry_type.is_file() {
            EntryKind::File
        } else if entry_type.is_symlink() {
            EntryKind::Symlink
        } else if entry_type.is_hard_link() {
            EntryKind::HardLink
        } else {
            EntryKind::Other
        };
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        let head = EntryHead {
            name,
            kind,
            size: entry.size(),
            link,
        };
        visit(&head, &mut entry)?;
    }
    Ok(())
}

/// First pass: the listing, and the contents of the metadata files.
pub(super) fn list_archive(archive: &Path) -> Result<Listing> {
    let mut listing = Listing::default();
    walk_tar(archive, &mut |head, data| {
        match head.kind {
            EntryKind::File => {}
            EntryKind::Symlink | EntryKind::HardLink => {
                if let Some(link) = &head.link {
                    let target = if head.kind == EntryKind::Symlink {
                        let dir = head.name.rsplit_once('/').map_or("", |(d, _)| d);
                        clean_path(&format!("{dir}/{link}"))
                    } else {
                        clean_path(link)
                    };
                    listing.links.insert(head.name.clone(), target);
                }
                return Ok(());
            }
            EntryKind::Other => return Ok(()),
        }
        let slot = match head.name.as_str() {
            LAYOUT_FILE => Some(&mut listing.layout),
            INDEX_FILE => Some(&mut listing.index),
            DOCKER_MANIFEST_FILE => Some(&mut listing.docker_manifest),
            _ => None,
        };
        if let Some(slot) = slot {
            if head.size > MAX_JSON {
                return Err(Error::invalid(format!(
                    "archive {}: {} is {} bytes, more than the {MAX_JSON} allowed",
                    archive.display(),
                    head.name,
                    head.size
                )));
            }
            let mut buf = Vec::new();
            data.take(MAX_JSON)
                .read_to_end(&mut buf)
                .map_err(|e| bad_archive(archive, e))?;
            if buf.len() as u64 != head.size {
                return Err(truncated(archive, &head.name, buf.len() as u64, head.size));
            }
            *slot = Some(buf);
        }
        listing.files.insert(head.name.clone(), head.size);
        Ok(())
    })?;
    Ok(listing)
}

fn truncated(archive: &Path, name: &str, got: u64, want: u64) -> Error {
    Error::invalid(format!(
        "archive {} is truncated: {name} has {got} of its {want} bytes",
        archive.display()
    ))
}

/// From the archive reader to the content writer.
pub(super) enum Msg {
    Begin {
        name: String,
        /// Bytes that will follow; `None` when compressed on the way.
        size: Option<u64>,
        expected: Option<String>,
        /// Of the stored bytes.
        compression: Compression,
    },
    Data(Vec<u8>),
    End {
        /// The digest of the uncompressed bytes, when compressed on the way.
        uncompressed: Option<String>,
    },
}

/// Second pass: sends every wanted file through the channel.
pub(super) fn stream_files(
    archive: &Path,
    wanted: &HashMap<String, Want>,
    tx: &mpsc::Sender<Msg>,
) -> Result<()> {
    if wanted.is_empty() {
        return Ok(());
    }
    walk_tar(archive, &mut |head, data| {
        if head.kind != EntryKind::File {
            return Ok(());
        }
        let Some(want) = wanted.get(&head.name) else {
            return Ok(());
        };
        let mut file = FileStream {
            archive,
            head,
            data,
            tx,
        };
        let mut first = vec![0u8; CHUNK];
        let n = file.read(&mut first)?;
        first.truncate(n);
        let found = Compression::detect(&first);
        if want.compress && found == Compression::Uncompressed {
            file.send_gzipped(first, want.expected.as_deref())
        } else {
            file.send_as_is(first, want.expected.clone(), found)
        }
    })
}

/// One wanted file of the second pass, on its way to the channel.
struct FileStream<'a> {
    archive: &'a Path,
    head: &'a EntryHead,
    data: &'a mut dyn Read,
    tx: &'a mpsc::Sender<Msg>,
}

impl FileStream<'_> {
    fn send(&self, msg: Msg) -> Result<()> {
        self.tx
            .blocking_send(msg)
            .map_err(|_| Error::Internal("import: the content writer stopped".into()))
    }

    /// Reads the next chunk (short only at the end).
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        read_full(self.data, buf).map_err(|e| {
            Error::invalid(format!(
                "archive {}: reading {}: {e}",
                self.archive.display(),
                self.head.name
            ))
        })
    }

    /// Checks that the file had all the bytes its header says.
    fn check_count(&self, count: u64) -> Result<()> {
        if count != self.head.size {
            return Err(truncated(
                self.archive,
                &self.head.name,
                count,
                self.head.size,
            ));
        }
        Ok(())
    }

    /// Sends the file as it is (`first` is its first chunk).
    fn send_as_is(
        &mut self,
        first: Vec<u8>,
        expected: Option<String>,
        compression: Compression,
    ) -> Result<()> {
        self.send(Msg::Begin {
            name: self.head.name.clone(),
            size: Some(self.head.size),
            expected,
            compression,
        })?;
        let mut count = first.len() as u64;
        if !first.is_empty() {
            self.send(Msg::Data(first))?;
        }
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = self.read(&mut buf)?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            count += n as u64;
            self.send(Msg::Data(buf))?;
        }
        self.check_count(count)?;
        self.send(Msg::End { uncompressed: None })
    }

    /// Sends the file gzipped, checking the uncompressed bytes against `expected`.
    fn send_gzipped(&mut self, first: Vec<u8>, expected: Option<&str>) -> Result<()> {
        self.send(Msg::Begin {
            name: self.head.name.clone(),
            size: None,
            expected: None,
            compression: Compression::Gzip,
        })?;
        let mut hasher = Sha256::new();
        hasher.update(&first);
        let mut count = first.len() as u64;
        let mut gz = GzEncoder::new(ChunkSink::new(self.tx), flate2::Compression::default());
        let write_err = |e: io::Error| Error::Internal(format!("import: compressing: {e}"));
        gz.write_all(&first).map_err(write_err)?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = self.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            gz.write_all(&buf[..n]).map_err(write_err)?;
            count += n as u64;
        }
        self.check_count(count)?;
        let uncompressed = format!("sha256:{}", hex::encode(hasher.finalize()));
        if let Some(expected) = expected
            && expected != uncompressed
        {
            return Err(Error::precondition(format!(
                "archive {}: {}: unexpected digest {uncompressed}, expected {expected}",
                self.archive.display(),
                self.head.name
            )));
        }
        let sink = gz.finish().map_err(write_err)?;
        sink.finish()?;
        self.send(Msg::End {
            uncompressed: Some(uncompressed),
        })
    }
}

/// Collects compressed output into chunks for the channel.
struct ChunkSink<'a> {
    tx: &'a mpsc::Sender<Msg>,
    buf: Vec<u8>,
}

impl<'a> ChunkSink<'a> {
    fn new(tx: &'a mpsc::Sender<Msg>) -> Self {
        ChunkSink {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn finish(self) -> Result<()> {
        if !self.buf.is_empty() {
            self.tx
                .blocking_send(Msg::Data(self.buf))
                .map_err(|_| Error::Internal("import: the content writer stopped".into()))?;
        }
        Ok(())
    }
}

impl Write for ChunkSink<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
            self.tx
                .blocking_send(Msg::Data(chunk))
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "content writer stopped"))?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads until `buf` is full or the reader is exhausted.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(m) => n += m,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// `path.Clean` for archive member names, relative: `./a//b/` → `a/b`.
pub(super) fn clean_path(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// The digest a `blobs/<alg>/<hex>` member stands for.
pub(super) fn blob_digest(name: &str) -> Option<String> {
    let d = oci::layout::blob_path_digest(name)?;
    digest::validate(&d).ok()?;
    Some(d)
}
