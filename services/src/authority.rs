//! The `:authority` that gRPC C-core clients send over a unix socket.
//!
//! gRPC C-core (Python `grpcio`, Ruby, C++, PHP) and some other stacks send the socket's
//! path (or its %-encoding) as the HTTP/2 `:authority` of every request on a `unix:`
//! channel. That is no authority in RFC 3986 terms, and the HTTP/2 library under tonic
//! resets such a stream with PROTOCOL_ERROR before any service sees it; containerd's
//! grpc-go server takes it. An authority means nothing on a unix socket, so berthd repairs
//! the request instead of refusing it.
//!
//! [`AuthorityFix`] wraps each accepted connection's read side. It follows the HTTP/2
//! frames the client sends until the first header block: when that block's `:authority`
//! is valid (or absent) — Go, Rust and Java clients — the connection is handed through
//! untouched from then on at no cost. When it is not, every header block of the
//! connection is decoded (HPACK keeps state across blocks, so all of them must be) and
//! encoded again with `:authority: localhost`. Frames other than HEADERS and CONTINUATION
//! pass through as they are, without being buffered. The write side is never touched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

use crate::hpack::{self, Decoder};

/// What the client sends first on an HTTP/2 connection.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame the server accepts unless it says otherwise (SETTINGS_MAX_FRAME_SIZE's
/// initial value): re-encoded blocks are split into frames no larger.
const MAX_FRAME: usize = 16_384;
/// A header block larger than this is not decoded: the connection goes through as it is
/// (and the server judges the block).
const MAX_BLOCK: usize = 1 << 20;
/// What an unusable authority is replaced with (what grpc-go sends on a unix socket).
const LOCALHOST: &[u8] = b"localhost";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Reading the preface and frames until the first header block decides.
    Inspect,
    /// Every header block is decoded and encoded again.
    Rewrite,
    /// Bytes go through untouched.
    Through,
}

/// A header block being gathered from a HEADERS frame and its CONTINUATIONs.
struct Block {
    stream: u32,
    flags: u8,
    /// The HEADERS frame's priority fields, when it had them.
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    /// The frames as received, to hand through unchanged if the block is let be.
    raw: Vec<u8>,
}

/// A server-side connection whose incoming header blocks get a usable `:authority`.
pub struct AuthorityFix<S> {
    inner: S,
    mode: Mode,
    preface_seen: usize,
    /// Bytes read from the client and not yet looked at.
    input: Vec<u8>,
    /// Bytes ready for the server to read, from `output[out_pos..]`.
    output: Vec<u8>,
    out_pos: usize,
    /// Payload bytes of a frame that goes through unchanged, still to come.
    skip: usize,
    block: Option<Block>,
    decoder: Decoder,
    eof: bool,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> Self {
        AuthorityFix {
            inner,
            mode: Mode::Inspect,
            preface_seen: 0,
            input: Vec::new(),
            output: Vec::new(),
            out_pos: 0,
            skip: 0,
            block: None,
            decoder: Decoder::new(),
            eof: false,
        }
    }

    /// Moves whatever of `input` can be decided on to `output`.
    fn process(&mut self) {
        loop {
            if self.mode == Mode::Through {
                self.output.append(&mut self.input);
                return;
            }
            if self.preface_seen < PREFACE.len() {
                let n = (PREFACE.len() - self.preface_seen).min(self.input.len());
                if n == 0 {
                    return;
                }
                if self.input[..n] != PREFACE[self.preface_seen..self.preface_seen + n] {
                    // Not HTTP/2 with prior knowledge: nothing of ours to repair.
                    self.mode = Mode::Through;
                    continue;
                }
                self.output.extend(self.input.drain(..n));
                self.preface_seen += n;
                continue;
            }
            if self.skip > 0 {
                let n = self.skip.min(self.input.len());
                if n == 0 {
                    return;
                }
                self.output.extend(self.input.drain(..n));
                self.skip -= n;
                continue;
            }
            if self.input.len() < FRAME_HEADER {
                return;
            }
            let len = u32::from_be_bytes([0, self.input[0], self.input[1], self.input[2]]) as usize;
            let kind = self.input[3];
            let flags = self.input[4];
            let stream =
                u32::from_be_bytes([self.input[5], self.input[6], self.input[7], self.input[8]])
                    & 0x7fff_ffff;
            let in_block = self.block.is_some();
            if kind != HEADERS && kind != CONTINUATION && !in_block {
                self.output.extend(self.input.drain(..FRAME_HEADER));
                self.skip = len;
                continue;
            }
            let gathered = self.block.as_ref().map_or(0, |b| b.raw.len());
            if len > MAX_BLOCK || gathered + len > MAX_BLOCK {
                self.give_up();
                continue;
            }
            if self.input.len() < FRAME_HEADER + len {
                return;
            }
            let frame: Vec<u8> = self.input.drain(..FRAME_HEADER + len).collect();
            if !self.gather(kind, flags, stream, &frame) {
                // Not a well-formed header block: the server will say so.
                self.give_up_with(frame);
                continue;
            }
            if flags & END_HEADERS != 0
                && let Some(block) = self.block.take()
            {
                self.finish(block);
            }
        }
    }

    /// Adds a HEADERS or CONTINUATION frame to the block; false when it does not fit.
    fn gather(&mut self, kind: u8, flags: u8, stream: u32, frame: &[u8]) -> bool {
        let payload = &frame[FRAME_HEADER..];
        match (kind, self.block.as_mut()) {
            (HEADERS, None) => {
                let mut body = payload;
                let mut pad = 0usize;
                if flags & PADDED != 0 {
                    let Some((&p, rest)) = body.split_first() else {
                        return false;
                    };
                    pad = p as usize;
                    body = rest;
                }
                let mut priority = None;
                if flags & PRIORITY != 0 {
                    let Some(p) = body.get(..5) else {
                        return false;
                    };
                    let mut fields = [0u8; 5];
                    fields.copy_from_slice(p);
                    priority = Some(fields);
                    body = &body[5..];
                }
                if pad > body.len() {
                    return false;
                }
                self.block = Some(Block {
                    stream,
                    flags,
                    priority,
                    fragment: body[..body.len() - pad].to_vec(),
                    raw: frame.to_vec(),
                });
                true
            }
            (CONTINUATION, Some(block)) if block.stream == stream => {
                block.fragment.extend_from_slice(payload);
                block.raw.extend_from_slice(frame);
                true
            }
            _ => false,
        }
    }

    /// Decides on a whole header block: hands it through or encodes it again.
    fn finish(&mut self, block: Block) {
        let Ok(mut headers) = self.decoder.decode(&block.fragment) else {
            self.give_up_with(block.raw);
            return;
        };
        let bad = headers
            .iter()
            .any(|(n, v)| n.as_slice() == b":authority" && !usable_authority(v));
        if self.mode == Mode::Inspect && !bad {
            // Every block of this client will be fine: stop looking.
            self.output.extend_from_slice(&block.raw);
            self.mode = Mode::Through;
            return;
        }
        if self.mode == Mode::Inspect {
            tracing::debug!(
                authority = %headers
                    .iter()
                    .find(|(n, _)| n.as_slice() == b":authority")
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default(),
                "client sends an authority that is not one (a unix socket path): using localhost"
            );
            self.mode = Mode::Rewrite;
        }
        for (name, value) in headers.iter_mut() {
            if name.as_slice() == b":authority" && !usable_authority(value) {
                *value = LOCALHOST.to_vec();
            }
        }
        let encoded = hpack::encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        write_block(&mut self.output, &block, &encoded);
    }

    /// Stops decoding: what is gathered and everything after goes through unchanged.
    fn give_up(&mut self) {
        let raw = self.block.take().map(|b| b.raw).unwrap_or_default();
        self.give_up_with(raw);
    }

    fn give_up_with(&mut self, raw: Vec<u8>) {
        if let Some(b) = self.block.take() {
            self.output.extend_from_slice(&b.raw);
        }
        self.output.extend_from_slice(&raw);
        self.mode = Mode::Through;
    }
}

/// Whether the HTTP/2 stack under tonic takes `value` as an `:authority`.
fn usable_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// Writes a header block as a HEADERS frame and as many CONTINUATION frames as it needs.
fn write_block(out: &mut Vec<u8>, block: &Block, encoded: &[u8]) {
    let head_room = if block.priority.is_some() { 5 } else { 0 };
    let first_len = encoded.len().min(MAX_FRAME - head_room);
    let (first, mut rest) = encoded.split_at(first_len);
    let mut flags = block.flags & (END_STREAM | PRIORITY);
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    write_frame_header(out, first.len() + head_room, HEADERS, flags, block.stream);
    if let Some(p) = block.priority {
        out.extend_from_slice(&p);
    }
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME));
        let flags = if tail.is_empty() { END_HEADERS } else { 0 };
        write_frame_header(out, chunk.len(), CONTINUATION, flags, block.stream);
        out.extend_from_slice(chunk);
        rest = tail;
    }
}

fn write_frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.output.len() {
                let n = (this.output.len() - this.out_pos).min(buf.remaining());
                buf.put_slice(&this.output[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.output.len() {
                    this.output.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.mode == Mode::Through && this.input.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if this.eof {
                // A half-received frame at the end: hand it over as it is.
                this.output.append(&mut this.input);
                if this.output.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                this.eof = true;
                continue;
            }
            this.input.extend_from_slice(rb.filled());
            this.process();
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for AuthorityFix<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use loona_hpack::Encoder;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame_header(&mut out, payload.len(), kind, flags, stream);
        out.extend_from_slice(payload);
        out
    }

    fn request(enc: &mut Encoder<'_>, authority: &[u8]) -> Vec<u8> {
        enc.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", b"/containerd.services.version.v1.Version/Version"),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ])
    }

    /// Splits what the server reads into frames: (type, flags, stream, payload).
    fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        assert!(bytes.starts_with(PREFACE));
        bytes = &bytes[PREFACE.len()..];
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
            let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
            out.push((bytes[3], bytes[4], stream, bytes[9..9 + len].to_vec()));
            bytes = &bytes[9 + len..];
        }
        out
    }

    /// What the server side reads of `sent`, delivered in pieces of `piece` bytes.
    async fn through(sent: Vec<u8>, piece: usize) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let writer = tokio::spawn(async move {
            for chunk in sent.chunks(piece) {
                client.write_all(chunk).await.unwrap();
            }
            client.shutdown().await.unwrap();
        });
        let mut fixed = AuthorityFix::new(server);
        let mut got = Vec::new();
        fixed.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        got
    }

    fn authorities(
        dec: &mut loona_hpack::Decoder<'_>,
        frames: &[(u8, u8, u32, Vec<u8>)],
    ) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut block = Vec::new();
        for (kind, flags, _, payload) in frames {
            if *kind == HEADERS || *kind == CONTINUATION {
                block.extend_from_slice(payload);
                if flags & END_HEADERS != 0 {
                    for (n, v) in dec.decode(&block).unwrap() {
                        if n == b":authority" {
                            out.push(v);
                        }
                    }
                    block.clear();
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn a_socket_path_authority_becomes_localhost_on_every_request() {
        let mut enc = Encoder::new();
        let mut sent = PREFACE.to_vec();
        sent.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        sent.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &request(&mut enc, b"%2Frun%2Fberth%2Fberth.sock"),
        ));
        sent.extend(frame(0x0, END_STREAM, 1, &[0, 0, 0, 0, 0]));
        // The second request refers to the first one's entries in the dynamic table.
        sent.extend(frame(
            HEADERS,
            END_HEADERS,
            3,
            &request(&mut enc, b"/run/berth/berth.sock"),
        ));
        sent.extend(frame(0x0, END_STREAM, 3, &[0, 0, 0, 0, 0]));
        for piece in [1, 7, 4096] {
            let got = through(sent.clone(), piece).await;
            let fr = frames(&got);
            let kinds: Vec<u8> = fr.iter().map(|f| f.0).collect();
            assert_eq!(kinds, vec![0x4, HEADERS, 0x0, HEADERS, 0x0]);
            assert_eq!(fr[2].3, vec![0, 0, 0, 0, 0]);
            let mut dec = loona_hpack::Decoder::new();
            assert_eq!(
                authorities(&mut dec, &fr),
                vec![b"localhost".to_vec(), b"localhost".to_vec()]
            );
        }
    }

    #[tokio::test]
    async fn a_good_authority_goes_through_byte_for_byte() {
        let mut enc = Encoder::new();
        let mut sent = PREFACE.to_vec();
        sent.extend(frame(0x4, 0, 0, &[]));
        sent.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            1,
            &request(&mut enc, b"localhost"),
        ));
        sent.extend(frame(
            HEADERS,
            END_HEADERS,
            3,
            &request(&mut enc, b"/not/looked/at"),
        ));
        assert_eq!(through(sent.clone(), 5).await, sent);
    }

    #[tokio::test]
    async fn padding_priority_and_continuations_are_handled() {
        let mut enc = Encoder::new();
        let block = request(&mut enc, b"/tmp/s.sock");
        let (a, b) = block.split_at(10);
        let mut headers = vec![3u8]; // pad length
        headers.extend_from_slice(&[0, 0, 0, 0, 16]); // priority
        headers.extend_from_slice(a);
        headers.extend_from_slice(&[0, 0, 0]);
        let mut sent = PREFACE.to_vec();
        sent.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 1, &headers));
        sent.extend(frame(CONTINUATION, END_HEADERS, 1, b));
        let fr = frames(&through(sent, 3).await);
        assert_eq!(fr.len(), 1);
        let (kind, flags, stream, payload) = &fr[0];
        assert_eq!((*kind, *stream), (HEADERS, 1));
        assert_eq!(*flags, PRIORITY | END_STREAM | END_HEADERS);
        assert_eq!(&payload[..5], &[0, 0, 0, 0, 16]);
        let mut dec = loona_hpack::Decoder::new();
        let decoded = dec.decode(&payload[5..]).unwrap();
        assert!(decoded.contains(&(b":authority".to_vec(), b"localhost".to_vec())));
        assert!(decoded.contains(&(b":method".to_vec(), b"POST".to_vec())));
    }

    #[tokio::test]
    async fn garbage_goes_through_for_the_server_to_refuse() {
        let sent = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert_eq!(through(sent.clone(), 2).await, sent);
        let mut bad = PREFACE.to_vec();
        bad.extend(frame(HEADERS, END_HEADERS, 1, &[0xff, 0xff, 0xff]));
        assert_eq!(through(bad.clone(), 64).await, bad);
    }

    #[test]
    fn authorities_the_http2_stack_refuses() {
        assert!(usable_authority(b"localhost"));
        assert!(usable_authority(b"berthd.invalid:80"));
        assert!(!usable_authority(b"/run/berth/berth.sock"));
    }
}
