//! SPDY/3.1 as Kubernetes' streaming clients speak it: client-go's remotecommand and
//! portforward (kubectl through the kubelet, crictl before 1.30) upgrade an HTTP/1.1
//! request to `SPDY/3.1` and open one SPDY stream per purpose, named by its `streamtype`
//! header (`error`, `stdin`, `stdout`, `stderr`, `resize`; `data` and `error` per
//! forwarded port, paired by `requestid`).
//!
//! Only what those clients use is spoken: SYN_STREAM answered by SYN_REPLY, DATA with FIN,
//! RST_STREAM, PING echoed, GOAWAY; SETTINGS, WINDOW_UPDATE and HEADERS are read and
//! ignored (the clients do no flow control). Header blocks are zlib streams, one per
//! direction for the whole session, primed with the protocol's dictionary.

use std::collections::HashMap;
use std::io;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

const VERSION: u16 = 3;
const FLAG_FIN: u8 = 0x01;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
/// RST_STREAM's REFUSED_STREAM.
pub(super) const REFUSED_STREAM: u32 = 3;
/// The largest header block accepted, decompressed.
const MAX_HEADERS: usize = 64 << 10;
/// The largest DATA payload sent in one frame.
const MAX_DATA: usize = 32 << 10;

/// A frame from the peer, as far as this server cares.
#[derive(Debug, PartialEq)]
pub(super) enum Frame {
    /// A new stream and its headers (names lower case, as SPDY requires).
    Syn {
        stream: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    Data {
        stream: u32,
        fin: bool,
        data: Vec<u8>,
    },
    Reset {
        stream: u32,
    },
    Ping(u32),
    GoAway,
    /// SETTINGS, WINDOW_UPDATE, SYN_REPLY, HEADERS, NOOP: nothing to do.
    Other,
}

impl Frame {
    /// The value of a SYN_STREAM's header.
    pub(super) fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    }
}

/// What the session writes.
#[derive(Debug)]
pub(super) enum Out {
    /// SYN_REPLY with no headers: the stream is accepted.
    Reply(u32),
    Data {
        stream: u32,
        data: Vec<u8>,
        fin: bool,
    },
    Reset(u32, u32),
    Ping(u32),
}

/// Reads frames, inflating header blocks with the session's one zlib stream.
pub(super) struct FrameReader<R> {
    r: R,
    inflate: Decompress,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(super) fn new(r: R) -> Self {
        FrameReader {
            r,
            inflate: Decompress::new(true),
        }
    }

    /// The next frame; None at the end of the connection.
    pub(super) async fn next(&mut self) -> io::Result<Option<Frame>> {
        let mut head = [0u8; 8];
        match self.r.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let flags = head[4];
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        let mut body = vec![0u8; len];
        self.r.read_exact(&mut body).await?;
        let fin = flags & FLAG_FIN != 0;
        if head[0] & 0x80 == 0 {
            let stream = word(&head, 0)? & 0x7fff_ffff;
            return Ok(Some(Frame::Data {
                stream,
                fin,
                data: body,
            }));
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != VERSION {
            return Err(invalid(format!("SPDY version {version} (3 is spoken)")));
        }
        let stream = || word(&body, 0).map(|w| w & 0x7fff_ffff);
        Ok(Some(match u16::from_be_bytes([head[2], head[3]]) {
            SYN_STREAM => {
                let block = body
                    .get(10..)
                    .ok_or_else(|| invalid("short SYN_STREAM".into()))?;
                Frame::Syn {
                    stream: stream()?,
                    fin,
                    headers: self.headers(block)?,
                }
            }
            // Their header blocks are inflated all the same: the zlib stream is shared.
            SYN_REPLY | HEADERS => {
                self.headers(body.get(4..).unwrap_or_default())?;
                Frame::Other
            }
            RST_STREAM => Frame::Reset { stream: stream()? },
            PING => Frame::Ping(word(&body, 0)?),
            GOAWAY => Frame::GoAway,
            _ => Frame::Other,
        }))
    }

    fn headers(&mut self, block: &[u8]) -> io::Result<Vec<(String, String)>> {
        let mut out = Vec::with_capacity(block.len() * 4 + 256);
        let mut input = block;
        loop {
            let (before_in, before_out) = (self.inflate.total_in(), self.inflate.total_out());
            let result = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            input = &input[(self.inflate.total_in() - before_in) as usize..];
            if let Err(e) = result {
                if e.needs_dictionary().is_none() {
                    return Err(invalid(format!("SPDY header block: {e}")));
                }
                self.inflate
                    .set_dictionary(&dictionary())
                    .map_err(|e| invalid(format!("SPDY header dictionary: {e}")))?;
                continue;
            }
            let stuck =
                self.inflate.total_in() == before_in && self.inflate.total_out() == before_out;
            if (input.is_empty() && out.len() < out.capacity()) || stuck {
                break;
            }
            if out.len() > MAX_HEADERS {
                return Err(invalid("SPDY header block too large".into()));
            }
            out.reserve(4096);
        }
        parse_block(&out)
    }
}

/// Writes frames, deflating header blocks with the session's one zlib stream.
pub(super) struct FrameWriter {
    deflate: Compress,
}

impl FrameWriter {
    pub(super) fn new() -> io::Result<Self> {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(&dictionary())
            .map_err(|e| invalid(format!("SPDY header dictionary: {e}")))?;
        Ok(FrameWriter { deflate })
    }

    /// The bytes of one frame (a DATA larger than 32 KiB becomes several).
    pub(super) fn encode(&mut self, out: Out) -> io::Result<Vec<u8>> {
        Ok(match out {
            Out::Reply(stream) => {
                let mut body = stream.to_be_bytes().to_vec();
                body.extend(self.block(&[])?);
                control(SYN_REPLY, 0, &body)
            }
            Out::Data { stream, data, fin } => {
                let mut bytes = Vec::with_capacity(data.len() + 16);
                let mut chunks = data.chunks(MAX_DATA).peekable();
                if chunks.peek().is_none() {
                    bytes.extend(data_frame(stream, fin, &[]));
                }
                while let Some(chunk) = chunks.next() {
                    let last = chunks.peek().is_none();
                    bytes.extend(data_frame(stream, fin && last, chunk));
                }
                bytes
            }
            Out::Reset(stream, status) => {
                let mut body = stream.to_be_bytes().to_vec();
                body.extend(status.to_be_bytes());
                control(RST_STREAM, 0, &body)
            }
            Out::Ping(id) => control(PING, 0, &id.to_be_bytes()),
        })
    }

    fn block(&mut self, headers: &[(&str, &str)]) -> io::Result<Vec<u8>> {
        let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
        for (k, v) in headers {
            for s in [k, v] {
                raw.extend((s.len() as u32).to_be_bytes());
                raw.extend(s.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| invalid(format!("SPDY header block: {e}")))?;
            input = &input[(self.deflate.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
            out.reserve(256);
        }
    }
}

/// Writes what arrives on `rx` until every sender is gone, then shuts the connection.
pub(super) async fn write_loop(mut w: impl AsyncWrite + Unpin, mut rx: mpsc::Receiver<Out>) {
    let Ok(mut writer) = FrameWriter::new() else {
        return;
    };
    while let Some(out) = rx.recv().await {
        let Ok(bytes) = writer.encode(out) else {
            break;
        };
        if w.write_all(&bytes).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
}

/// The streams a session's client opened, by `streamtype`, once all of `expected` are
/// there; the input of `stdin` and `resize` as channel messages (0 stdin, 4 a resize,
/// 255 0 the close of stdin), as the WebSocket protocol gives them.
pub(super) async fn read_channels(
    mut frames: FrameReader<impl AsyncRead + Unpin>,
    out: mpsc::Sender<Out>,
    input: mpsc::Sender<Vec<u8>>,
    expected: Vec<&'static str>,
    ready: tokio::sync::oneshot::Sender<HashMap<String, u32>>,
) {
    let mut ready = Some(ready);
    let mut types: HashMap<u32, String> = HashMap::new();
    let mut resize = Vec::new();
    while let Ok(Some(frame)) = frames.next().await {
        match frame {
            Frame::Syn {
                stream, headers, ..
            } => {
                let kind = Frame::header(&headers, "streamtype").to_string();
                if types.values().any(|k| *k == kind) {
                    let _ = out.send(Out::Reset(stream, REFUSED_STREAM)).await;
                    continue;
                }
                let _ = out.send(Out::Reply(stream)).await;
                types.insert(stream, kind);
                if expected.iter().all(|e| types.values().any(|k| k == e))
                    && let Some(r) = ready.take()
                {
                    let by_kind = types.iter().map(|(id, k)| (k.clone(), *id)).collect();
                    let _ = r.send(by_kind);
                }
            }
            Frame::Data { stream, fin, data } => {
                match types.get(&stream).map(String::as_str) {
                    Some("stdin") => {
                        if !data.is_empty() {
                            let mut msg = vec![0u8];
                            msg.extend(data);
                            let _ = input.send(msg).await;
                        }
                        if fin {
                            let _ = input.send(vec![255, 0]).await;
                        }
                    }
                    Some("resize") => {
                        // JSON objects back to back, split anywhere across frames.
                        resize.extend(data);
                        let mut objects = serde_json::Deserializer::from_slice(&resize)
                            .into_iter::<serde_json::Value>();
                        let mut used = 0;
                        while let Some(Ok(v)) = objects.next() {
                            used = objects.byte_offset();
                            let mut msg = vec![4u8];
                            msg.extend(v.to_string().as_bytes());
                            let _ = input.send(msg).await;
                        }
                        resize.drain(..used);
                    }
                    _ => {}
                }
            }
            Frame::Reset { stream } => {
                if types.get(&stream).map(String::as_str) == Some("stdin") {
                    let _ = input.send(vec![255, 0]).await;
                }
            }
            Frame::Ping(id) => {
                let _ = out.send(Out::Ping(id)).await;
            }
            Frame::GoAway => break,
            Frame::Other => {}
        }
    }
}

/// The server's half of the output: each channel message to the stream of its kind
/// (1 stdout, 2 stderr, 3 the status to `error`); at the end, FIN on each of them.
/// `status_json` is v4's metav1.Status; the older protocols write only a failure's
/// message.
pub(super) async fn write_channels(
    mut rx: mpsc::Receiver<Vec<u8>>,
    out: mpsc::Sender<Out>,
    streams: HashMap<String, u32>,
    status_json: bool,
) {
    let id = |kind: &str| streams.get(kind).copied();
    while let Some(msg) = rx.recv().await {
        let Some((&ch, data)) = msg.split_first() else {
            continue;
        };
        let (stream, data) = match ch {
            1 => (id("stdout"), data.to_vec()),
            2 => (id("stderr"), data.to_vec()),
            3 if status_json => (id("error"), data.to_vec()),
            3 => {
                let status: serde_json::Value = serde_json::from_slice(data).unwrap_or_default();
                if status["status"] == "Success" {
                    continue;
                }
                let text = status["message"].as_str().unwrap_or_default();
                (id("error"), text.as_bytes().to_vec())
            }
            _ => continue,
        };
        if let Some(stream) = stream
            && out
                .send(Out::Data {
                    stream,
                    data,
                    fin: false,
                })
                .await
                .is_err()
        {
            return;
        }
    }
    for kind in ["stdout", "stderr", "error"] {
        if let Some(stream) = id(kind) {
            let _ = out
                .send(Out::Data {
                    stream,
                    data: Vec::new(),
                    fin: true,
                })
                .await;
        }
    }
}

fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut f = (0x8000u16 | VERSION).to_be_bytes().to_vec();
    f.extend(kind.to_be_bytes());
    f.extend(frame_length(flags, body.len()));
    f.extend_from_slice(body);
    f
}

fn data_frame(stream: u32, fin: bool, data: &[u8]) -> Vec<u8> {
    let mut f = (stream & 0x7fff_ffff).to_be_bytes().to_vec();
    f.extend(frame_length(if fin { FLAG_FIN } else { 0 }, data.len()));
    f.extend_from_slice(data);
    f
}

fn frame_length(flags: u8, len: usize) -> [u8; 4] {
    let l = (len as u32).to_be_bytes();
    [flags, l[1], l[2], l[3]]
}

fn word(b: &[u8], at: usize) -> io::Result<u32> {
    b.get(at..at + 4)
        .and_then(|w| <[u8; 4]>::try_from(w).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| invalid("short SPDY frame".into()))
}

/// A header block: a count, then each name and value with its 32-bit length; a value
/// holding several values separates them with NULs (joined here by commas).
fn parse_block(b: &[u8]) -> io::Result<Vec<(String, String)>> {
    let count = word(b, 0)? as usize;
    let mut at = 4;
    let string = |at: &mut usize| -> io::Result<String> {
        let len = word(b, *at)? as usize;
        let s = b
            .get(*at + 4..*at + 4 + len)
            .ok_or_else(|| invalid("short SPDY header block".into()))?;
        *at += 4 + len;
        Ok(String::from_utf8_lossy(s).replace('\0', ","))
    };
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let name = string(&mut at)?.to_ascii_lowercase();
        let value = string(&mut at)?;
        headers.push((name, value));
    }
    Ok(headers)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The zlib dictionary of SPDY/3 header blocks: the protocol's common header names, each
/// with its 32-bit length, then a run of common values.
fn dictionary() -> Vec<u8> {
    const WORDS: &str = "options head post put delete trace accept accept-charset \
        accept-encoding accept-language accept-ranges age allow authorization cache-control \
        connection content-base content-encoding content-language content-length \
        content-location content-md5 content-range content-type date etag expect expires from \
        host if-match if-modified-since if-none-match if-range if-unmodified-since \
        last-modified location max-forwards pragma proxy-authenticate proxy-authorization \
        range referer retry-after server te trailer transfer-encoding upgrade user-agent vary \
        via warning www-authenticate method get status 200_OK version HTTP/1.1 url public \
        set-cookie keep-alive origin";
    const VALUES: &str = "100101201202205206300302303304305306307402405406407408409410411412\
        413414415416417502504505203 Non-Authoritative Information204 No Content301 Moved \
        Permanently400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal \
        Server Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug \
        Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,\
        image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,\
        text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=\
        iso-8859-1,utf-,*,enq=0.";
    let mut d = Vec::with_capacity(1423);
    for w in WORDS.split_whitespace() {
        let w = w.replace('_', " ");
        d.extend((w.len() as u32).to_be_bytes());
        d.extend(w.as_bytes());
    }
    d.extend(VALUES.as_bytes());
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adler32(b: &[u8]) -> u32 {
        let (mut a, mut s) = (1u32, 0u32);
        for x in b {
            a = (a + u32::from(*x)) % 65521;
            s = (s + a) % 65521;
        }
        (s << 16) | a
    }

    #[test]
    fn the_dictionary_is_the_protocols() {
        // The id every SPDY/3 zlib stream's header names.
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(adler32(&d), 0xe3c6_a7c2);
    }

    #[tokio::test]
    async fn frames_round_trip_through_one_session() {
        // A client's SYN_STREAMs, written as a server writes its replies (the same
        // framing and one deflate stream), read back with one inflate stream.
        let mut w = FrameWriter::new().expect("writer");
        let mut bytes = Vec::new();
        for (id, kind) in [(1u32, "error"), (3, "stdout")] {
            let mut body = id.to_be_bytes().to_vec();
            body.extend([0u8; 6]);
            body.extend(
                w.block(&[("streamtype", kind), ("port", "80\u{0}81")])
                    .expect("block"),
            );
            bytes.extend(control(SYN_STREAM, 0, &body));
        }
        bytes.extend(w.encode(Out::Reply(1)).expect("reply"));
        let big = vec![7u8; 70_000];
        bytes.extend(
            w.encode(Out::Data {
                stream: 3,
                data: big.clone(),
                fin: true,
            })
            .expect("data"),
        );
        bytes.extend(w.encode(Out::Ping(9)).expect("ping"));
        let mut r = FrameReader::new(&bytes[..]);
        for (id, kind) in [(1u32, "error"), (3, "stdout")] {
            assert_eq!(
                r.next().await.expect("frame"),
                Some(Frame::Syn {
                    stream: id,
                    fin: false,
                    headers: vec![
                        ("streamtype".into(), kind.into()),
                        ("port".into(), "80,81".into())
                    ],
                })
            );
        }
        assert_eq!(r.next().await.expect("reply"), Some(Frame::Other));
        let mut got = Vec::new();
        loop {
            match r.next().await.expect("data") {
                Some(Frame::Data { stream, fin, data }) => {
                    assert_eq!(stream, 3);
                    got.extend(data);
                    if fin {
                        break;
                    }
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, big);
        assert_eq!(r.next().await.expect("ping"), Some(Frame::Ping(9)));
        assert_eq!(r.next().await.expect("end"), None);
    }

    #[tokio::test]
    async fn bad_frames_are_errors_not_panics() {
        // Another version, a short SYN_STREAM, a header block that is not zlib.
        let mut v2 = control(SYN_STREAM, 0, &[0; 12]);
        v2[1] = 2;
        let short = control(SYN_STREAM, 0, &[0; 4]);
        let garbage = control(SYN_STREAM, 0, &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3]);
        for bytes in [v2, short, garbage] {
            assert!(FrameReader::new(&bytes[..]).next().await.is_err());
        }
        // A frame cut short is the end of the connection or an error, never a frame.
        let cut = &data_frame(1, false, b"hello")[..9];
        assert!(!matches!(FrameReader::new(cut).next().await, Ok(Some(_))));
    }
}
