//! The CRI container log format, which kubelet and `berth logs` read:
//!
//! ```text
//! <RFC3339Nano timestamp> <stdout|stderr> <F|P> <content>\n
//! ```
//!
//! One record per line of output (`F`, the newline and a `\r` before it dropped). A line
//! longer than [`MAX_LINE`] bytes is cut into `P` (partial) records of that size, its last
//! piece ending as `F`; output that ends without a newline ends with a `P` record. These are
//! the rules containerd's CRI plugin follows with its default 16 KiB line limit.

use std::time::{SystemTime, UNIX_EPOCH};

/// Longest content of one record.
pub const MAX_LINE: usize = 16 * 1024;

/// Cuts one stream's output into CRI records.
pub struct CriLines {
    stream: &'static str,
    max: usize,
    pending: Vec<u8>,
}

impl CriLines {
    /// `stream` is "stdout" or "stderr".
    pub fn new(stream: &'static str, max: usize) -> CriLines {
        CriLines {
            stream,
            max: max.max(1),
            pending: Vec::new(),
        }
    }

    /// Takes the next bytes of output; appends the records they complete to `out`.
    pub fn push(&mut self, mut data: &[u8], now: SystemTime, out: &mut Vec<u8>) {
        while !data.is_empty() {
            match data.iter().position(|b| *b == b'\n') {
                Some(end) => {
                    self.pending.extend_from_slice(&data[..end]);
                    data = &data[end + 1..];
                    if self.pending.last() == Some(&b'\r') {
                        self.pending.pop();
                    }
                    self.cut(0, now, out);
                    record(out, now, self.stream, 'F', &self.pending);
                    self.pending.clear();
                }
                None => {
                    self.pending.extend_from_slice(data);
                    data = &[];
                    // A trailing '\r' may be half of a "\r\n": not content yet.
                    let held = usize::from(self.pending.last() == Some(&b'\r'));
                    self.cut(held, now, out);
                }
            }
        }
    }

    /// The stream ended: what is left (a line without its newline) becomes a `P` record.
    pub fn finish(&mut self, now: SystemTime, out: &mut Vec<u8>) {
        if !self.pending.is_empty() {
            record(out, now, self.stream, 'P', &self.pending);
            self.pending.clear();
        }
    }

    /// Emits `P` records while the pending content (less `held` trailing bytes) is longer
    /// than the limit.
    fn cut(&mut self, held: usize, now: SystemTime, out: &mut Vec<u8>) {
        while self.pending.len() - held > self.max {
            record(out, now, self.stream, 'P', &self.pending[..self.max]);
            self.pending.drain(..self.max);
        }
    }
}

fn record(out: &mut Vec<u8>, now: SystemTime, stream: &str, tag: char, content: &[u8]) {
    out.extend_from_slice(rfc3339_nano(now).as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_bytes());
    out.push(b' ');
    out.push(tag as u8);
    out.push(b' ');
    out.extend_from_slice(content);
    out.push(b'\n');
}

/// `2006-01-02T15:04:05.999999999Z` in UTC: nanoseconds without trailing zeros, none at
/// all on a whole second (Go's RFC3339Nano).
pub fn rfc3339_nano(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    let mut s = format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    let nanos = d.subsec_nanos();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::new(1_700_000_000, 120_000_000)
    }
    const TS: &str = "2023-11-14T22:13:20.12Z";

    fn records(out: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(out)
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_nano(at()), TS);
        assert_eq!(rfc3339_nano(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_nano(UNIX_EPOCH + Duration::new(951_782_400, 1)),
            "2000-02-29T00:00:00.000000001Z"
        );
        assert_eq!(
            rfc3339_nano(UNIX_EPOCH + Duration::new(4_102_444_799, 999_999_999)),
            "2099-12-31T23:59:59.999999999Z"
        );
    }

    #[test]
    fn full_lines_across_reads() {
        let mut l = CriLines::new("stdout", MAX_LINE);
        let mut out = Vec::new();
        l.push(b"hello\nwor", at(), &mut out);
        l.push(b"ld\r\n\nlast", at(), &mut out);
        assert_eq!(
            records(&out),
            [
                format!("{TS} stdout F hello"),
                format!("{TS} stdout F world"),
                format!("{TS} stdout F "),
            ]
        );
        out.clear();
        l.finish(at(), &mut out);
        assert_eq!(records(&out), [format!("{TS} stdout P last")]);
        out.clear();
        l.finish(at(), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn long_lines_are_cut_into_partials() {
        let mut l = CriLines::new("stderr", MAX_LINE);
        let mut out = Vec::new();
        let line = vec![b'a'; 2 * MAX_LINE + 5];
        // In uneven reads, as a pipe delivers them.
        for chunk in line.chunks(4000) {
            l.push(chunk, at(), &mut out);
        }
        l.push(b"\n", at(), &mut out);
        let recs = records(&out);
        assert_eq!(recs.len(), 3);
        let head = format!("{TS} stderr P ");
        assert_eq!(recs[0], format!("{head}{}", "a".repeat(MAX_LINE)));
        assert_eq!(recs[1], format!("{head}{}", "a".repeat(MAX_LINE)));
        assert_eq!(recs[2], format!("{TS} stderr F aaaaa"));

        // Exactly the limit is one full line.
        out.clear();
        l.push(&vec![b'b'; MAX_LINE], at(), &mut out);
        l.push(b"\r", at(), &mut out);
        assert!(out.is_empty());
        l.push(b"\n", at(), &mut out);
        assert_eq!(
            records(&out),
            [format!("{TS} stderr F {}", "b".repeat(MAX_LINE))]
        );
    }

    #[test]
    fn both_streams_into_one_log() {
        let (mut o, mut e) = (CriLines::new("stdout", 8), CriLines::new("stderr", 8));
        let mut out = Vec::new();
        o.push(b"out1\n", at(), &mut out);
        e.push(b"err1\nerr", at(), &mut out);
        o.push(b"out2\n", at(), &mut out);
        e.push(b"2\n", at(), &mut out);
        assert_eq!(
            records(&out),
            [
                format!("{TS} stdout F out1"),
                format!("{TS} stderr F err1"),
                format!("{TS} stdout F out2"),
                format!("{TS} stderr F err2"),
            ]
        );
    }
}
