//! HPACK (RFC 7541), as much as [`crate::authority`] needs: a decoder of a client's header
//! blocks (the static and dynamic tables, Huffman-coded strings) and an encoder that writes
//! every field as a literal without indexing.
//!
//! The decoder runs on the first header block of every connection berthd accepts, so it is
//! made to be cheap there: the Huffman code is canonical, which makes its decoding a table of
//! 31 code ranges built at compile time rather than a tree or a map.

use std::collections::VecDeque;

/// A header block that is not valid HPACK (or asks for more than a client may).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad HPACK header block: {0}")]
pub struct HpackError(&'static str);

/// A header field: name and value, as bytes.
pub type Field = (Vec<u8>, Vec<u8>);

/// The dynamic table's size limit a client starts with and may not exceed: the initial
/// SETTINGS_HEADER_TABLE_SIZE, which berthd's HTTP/2 server leaves as it is.
const MAX_TABLE_SIZE: usize = 4096;

/// What an entry costs in the dynamic table beyond its name and value (RFC 7541 4.1).
const ENTRY_OVERHEAD: usize = 32;

/// The static table (RFC 7541 Appendix A); index 1 is its first entry.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The code length of every symbol of the Huffman code (RFC 7541 Appendix B): the bytes
/// 0–255, then EOS (256). The code is canonical: codes of one length are consecutive, in
/// the order of their symbols, and each length's first code follows the previous length's
/// last — so the lengths are the whole code.
const HUFFMAN_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

const LONGEST: usize = 30;
const EOS: u16 = 256;

/// The canonical code's ranges: for each length, its first code, how many codes it has, and
/// where its symbols start in `symbols` (which lists them by length, then value).
struct Canonical {
    first: [u32; LONGEST + 1],
    count: [u32; LONGEST + 1],
    start: [u16; LONGEST + 1],
    symbols: [u16; 257],
}

const HUFFMAN: Canonical = canonical();

const fn canonical() -> Canonical {
    let mut count = [0u32; LONGEST + 1];
    let mut i = 0;
    while i < HUFFMAN_LENGTHS.len() {
        count[HUFFMAN_LENGTHS[i] as usize] += 1;
        i += 1;
    }
    let mut first = [0u32; LONGEST + 1];
    let mut start = [0u16; LONGEST + 1];
    let (mut code, mut at) = (0u32, 0u16);
    let mut len = 1;
    while len <= LONGEST {
        first[len] = code;
        start[len] = at;
        code = (code + count[len]) << 1;
        at += count[len] as u16;
        len += 1;
    }
    let mut symbols = [0u16; 257];
    let mut next = start;
    let mut symbol = 0;
    while symbol < HUFFMAN_LENGTHS.len() {
        let len = HUFFMAN_LENGTHS[symbol] as usize;
        symbols[next[len] as usize] = symbol as u16;
        next[len] += 1;
        symbol += 1;
    }
    Canonical {
        first,
        count,
        start,
        symbols,
    }
}

/// Decodes a Huffman-coded string (RFC 7541 5.2): no EOS inside, at most 7 bits of padding,
/// and those the first bits of EOS (all ones).
pub fn huffman_decode(coded: &[u8]) -> Result<Vec<u8>, HpackError> {
    let mut out = Vec::with_capacity(coded.len() * 8 / 5);
    let (mut code, mut len) = (0u32, 0usize);
    for byte in coded {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            let offset = code.wrapping_sub(HUFFMAN.first[len]);
            if offset < HUFFMAN.count[len] {
                let symbol = HUFFMAN.symbols[(HUFFMAN.start[len] as u32 + offset) as usize];
                if symbol == EOS {
                    return Err(HpackError("EOS inside a Huffman-coded string"));
                }
                out.push(symbol as u8);
                (code, len) = (0, 0);
            } else if len == LONGEST {
                return Err(HpackError("not a Huffman code"));
            }
        }
    }
    if len > 7 || code != (1 << len) - 1 {
        return Err(HpackError("bad padding of a Huffman-coded string"));
    }
    Ok(out)
}

/// Reads an integer with an `prefix`-bit prefix (RFC 7541 5.1) at `block[*at..]`.
fn integer(block: &[u8], at: &mut usize, prefix: u32) -> Result<usize, HpackError> {
    let truncated = HpackError("truncated integer");
    let max = (1usize << prefix) - 1;
    let first = usize::from(*block.get(*at).ok_or(truncated.clone())?) & max;
    *at += 1;
    if first < max {
        return Ok(first);
    }
    let mut value = max;
    let mut shift = 0;
    loop {
        let byte = *block.get(*at).ok_or(truncated.clone())?;
        *at += 1;
        if shift > 21 {
            return Err(HpackError("integer too large"));
        }
        value += usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
    }
}

/// Reads a string literal (RFC 7541 5.2) at `block[*at..]`.
fn string(block: &[u8], at: &mut usize) -> Result<Vec<u8>, HpackError> {
    let huffman = block.get(*at).is_some_and(|b| b & 0x80 != 0);
    let len = integer(block, at, 7)?;
    let end = at
        .checked_add(len)
        .filter(|&end| end <= block.len())
        .ok_or(HpackError("truncated string"))?;
    let raw = &block[*at..end];
    *at = end;
    if huffman {
        huffman_decode(raw)
    } else {
        Ok(raw.to_vec())
    }
}

/// One connection's decoding state: the dynamic table and its size limit.
pub struct Decoder {
    /// Newest first: index 62 is `table[0]`.
    table: VecDeque<Field>,
    size: usize,
    max_size: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max_size: MAX_TABLE_SIZE,
        }
    }
}

impl Decoder {
    pub fn new() -> Self {
        Decoder::default()
    }

    /// Decodes one whole header block into its fields, in order. On an error the decoder's
    /// state is no longer the client's: the connection's later blocks cannot be decoded.
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<Field>, HpackError> {
        let mut fields = Vec::new();
        let mut at = 0;
        while let Some(&first) = block.get(at) {
            if first & 0x80 != 0 {
                let index = integer(block, &mut at, 7)?;
                fields.push(self.entry(index)?);
            } else if first & 0xc0 == 0x40 {
                let field = self.literal(block, &mut at, 6)?;
                self.insert(field.clone());
                fields.push(field);
            } else if first & 0xe0 == 0x20 {
                let size = integer(block, &mut at, 5)?;
                if size > MAX_TABLE_SIZE {
                    return Err(HpackError("dynamic table size over the limit"));
                }
                self.max_size = size;
                self.evict(0);
            } else {
                // Without indexing (0000) or never indexed (0001): a 4-bit index.
                fields.push(self.literal(block, &mut at, 4)?);
            }
        }
        Ok(fields)
    }

    /// A literal field whose name is indexed with a `prefix`-bit index, or new when 0.
    fn literal(&self, block: &[u8], at: &mut usize, prefix: u32) -> Result<Field, HpackError> {
        let index = integer(block, at, prefix)?;
        let name = if index == 0 {
            string(block, at)?
        } else {
            self.entry(index)?.0
        };
        Ok((name, string(block, at)?))
    }

    fn entry(&self, index: usize) -> Result<Field, HpackError> {
        if let Some(&(name, value)) = index.checked_sub(1).and_then(|i| STATIC_TABLE.get(i)) {
            return Ok((name.as_bytes().to_vec(), value.as_bytes().to_vec()));
        }
        index
            .checked_sub(STATIC_TABLE.len() + 1)
            .and_then(|i| self.table.get(i))
            .cloned()
            .ok_or(HpackError("index out of the tables"))
    }

    fn insert(&mut self, field: Field) {
        let size = field.0.len() + field.1.len() + ENTRY_OVERHEAD;
        self.evict(size);
        // An entry larger than the whole table empties it and is not kept (RFC 7541 4.4).
        if size <= self.max_size {
            self.size += size;
            self.table.push_front(field);
        }
    }

    /// Drops the oldest entries until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            let Some((name, value)) = self.table.pop_back() else {
                break;
            };
            self.size -= name.len() + value.len() + ENTRY_OVERHEAD;
        }
    }
}

/// Encodes `fields` as literals without indexing, names and values as they are: a block any
/// decoder reads without touching its dynamic table.
pub fn encode<'a>(fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0);
        for s in [name, value] {
            put_integer(&mut out, s.len(), 7, 0);
            out.extend_from_slice(s);
        }
    }
    out
}

/// Writes `value` with a `prefix`-bit prefix, the first byte's other bits `high`.
fn put_integer(out: &mut Vec<u8>, value: usize, prefix: u32, high: u8) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(high | value as u8);
        return;
    }
    out.push(high | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Huffman-codes `s` with the canonical code of `HUFFMAN_LENGTHS` (the test's encoder).
    fn huffman_encode(s: &[u8]) -> Vec<u8> {
        let mut code_of = [(0u32, 0usize); 257];
        for len in 1..=LONGEST {
            for k in 0..HUFFMAN.count[len] {
                let symbol = HUFFMAN.symbols[(HUFFMAN.start[len] as u32 + k) as usize];
                code_of[symbol as usize] = (HUFFMAN.first[len] + k, len);
            }
        }
        let (mut out, mut acc, mut bits) = (Vec::new(), 0u64, 0usize);
        for &b in s {
            let (code, len) = code_of[b as usize];
            acc = (acc << len) | u64::from(code);
            bits += len;
            while bits >= 8 {
                out.push((acc >> (bits - 8)) as u8);
                bits -= 8;
            }
        }
        if bits > 0 {
            out.push(((acc << (8 - bits)) as u8) | ((1u8 << (8 - bits)) - 1));
        }
        out
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn the_huffman_code_is_rfc_7541s() {
        // RFC 7541 C.4.1: "www.example.com".
        assert_eq!(
            huffman_decode(&hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff")).unwrap(),
            b"www.example.com"
        );
        assert_eq!(
            huffman_encode(b"www.example.com"),
            hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff")
        );
        // The code's own shape: complete (Kraft sum exactly one) with EOS all ones.
        let kraft: u64 = HUFFMAN_LENGTHS
            .iter()
            .map(|&l| 1u64 << (LONGEST - l as usize))
            .sum();
        assert_eq!(kraft, 1 << LONGEST);
        assert_eq!(
            HUFFMAN.first[LONGEST] + HUFFMAN.count[LONGEST] - 1,
            (1 << LONGEST) - 1
        );
        assert_eq!(HUFFMAN.symbols[256], EOS);
        // Every byte, against an independent decoder.
        let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        let coded = huffman_encode(&all);
        assert_eq!(huffman_decode(&coded).unwrap(), all);
        let mut other = loona_hpack::Decoder::new();
        let mut block = vec![0u8, 0x01, b'x'];
        block.push(0x80 | 0x7f);
        let mut len = coded.len() - 0x7f;
        while len >= 0x80 {
            block.push((len & 0x7f) as u8 | 0x80);
            len >>= 7;
        }
        block.push(len as u8);
        block.extend_from_slice(&coded);
        assert_eq!(other.decode(&block).unwrap(), vec![(b"x".to_vec(), all)]);
    }

    #[test]
    fn bad_huffman_strings_are_refused() {
        // Padding longer than 7 bits: "a" (00011) then 11 one bits.
        assert!(huffman_decode(&[0x1f, 0xff]).is_err());
        // Padding that is not all ones: "a" then 010.
        assert!(huffman_decode(&[0x1a]).is_err());
        // EOS coded inside: 30 one bits.
        assert!(huffman_decode(&[0xff, 0xff, 0xff, 0xfc]).is_err());
        assert_eq!(huffman_decode(&[]).unwrap(), b"");
        assert_eq!(huffman_decode(&[0x1f]).unwrap(), b"a");
    }

    #[test]
    fn the_static_table_is_rfc_7541s() {
        let mut other = loona_hpack::Decoder::new();
        let mut ours = Decoder::new();
        for index in 1..=61u8 {
            let block = [0x80 | index];
            assert_eq!(
                ours.decode(&block).unwrap(),
                other.decode(&block).unwrap(),
                "index {index}"
            );
        }
        assert!(ours.decode(&[0x80 | 62]).is_err());
        assert!(ours.decode(&[0x80]).is_err());
    }

    #[test]
    fn request_sequences_decode_as_an_independent_decoder_does() {
        // RFC 7541 C.4: three requests, Huffman-coded, the dynamic table carried along.
        let blocks = [
            hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
            hex("8286 84be 5886 a8eb 1064 9cbf"),
            hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
        ];
        let mut ours = Decoder::new();
        let mut other = loona_hpack::Decoder::new();
        for block in &blocks {
            assert_eq!(ours.decode(block).unwrap(), other.decode(block).unwrap());
        }
        assert_eq!(ours.table.len(), 3);
        assert_eq!(ours.size, 164);
        assert_eq!(
            ours.table[0],
            (b"custom-key".to_vec(), b"custom-value".to_vec())
        );
        // An encoder that indexes, over a table small enough to evict.
        let mut enc = loona_hpack::Encoder::new();
        let mut ours = Decoder::new();
        let mut other = loona_hpack::Decoder::new();
        for i in 0..200 {
            let value = format!("/run/berth/{}.sock", "x".repeat(i % 37));
            let name = format!("x-header-{}", i % 11);
            let fields = [
                (&b":method"[..], &b"POST"[..]),
                (b":authority", value.as_bytes()),
                (name.as_bytes(), value.as_bytes()),
            ];
            let block = enc.encode(fields);
            assert_eq!(ours.decode(&block).unwrap(), other.decode(&block).unwrap());
        }
        // A size update within the limit evicts; over it is refused.
        let mut ours = Decoder::new();
        ours.decode(&hex("4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"))
            .unwrap();
        assert_eq!(ours.table.len(), 1);
        ours.decode(&[0x20]).unwrap();
        assert_eq!((ours.table.len(), ours.size), (0, 0));
        let mut over = Vec::new();
        put_integer(&mut over, MAX_TABLE_SIZE + 1, 5, 0x20);
        assert!(Decoder::new().decode(&over).is_err());
    }

    #[test]
    fn truncated_and_oversized_blocks_are_refused() {
        let mut ours = Decoder::new();
        assert!(ours.decode(&[0x40, 0x05, b'a']).is_err());
        assert!(ours.decode(&[0xff]).is_err());
        assert!(
            ours.decode(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])
                .is_err()
        );
        assert!(ours.decode(&[0x00, 0x01]).is_err());
    }

    #[test]
    fn encoded_blocks_decode_to_the_same_fields() {
        let long = "v".repeat(300);
        let fields = [
            (&b":authority"[..], &b"localhost"[..]),
            (b"x-long", long.as_bytes()),
            (b"", b""),
        ];
        let block = encode(fields);
        let want: Vec<Field> = fields
            .iter()
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect();
        assert_eq!(Decoder::new().decode(&block).unwrap(), want);
        assert_eq!(loona_hpack::Decoder::new().decode(&block).unwrap(), want);
        let mut n = Vec::new();
        put_integer(&mut n, 1337, 5, 0);
        assert_eq!(n, [31, 154, 10]); // RFC 7541 C.1.2
    }
}
