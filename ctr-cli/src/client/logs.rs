//! A container's log file, as the shim writes it: stdout and stderr in one file in the CRI
//! log format, `<RFC3339Nano> stdout|stderr F|P <text>\n`, where `P` marks a partial line
//! (the text goes on in the next entry) and `F` a full one. A line that is not in that
//! format (a shim writing raw bytes) is shown as it is, on stdout.
//!
//! Read whole by `berth logs`, followed while the container runs by `run`, `start -a`,
//! `attach` and `logs -f`.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Client;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One entry of the log file.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The timestamp ("" for a raw line).
    pub time: &'a str,
    pub stream: Stream,
    /// The text goes on in the next entry (no newline after it).
    pub partial: bool,
    pub text: &'a [u8],
}

/// Parses one line of the log file (without its newline).
pub fn parse(line: &[u8]) -> Entry<'_> {
    let raw = Entry {
        time: "",
        stream: Stream::Stdout,
        partial: false,
        text: line,
    };
    let mut parts = line.splitn(4, |b| *b == b' ');
    let (Some(time), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
        return raw;
    };
    let text = parts.next().unwrap_or_default();
    let Ok(time) = std::str::from_utf8(time) else {
        return raw;
    };
    if time.len() < 20 || time.as_bytes().get(4) != Some(&b'-') || !time.contains('T') {
        return raw;
    }
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return raw,
    };
    let partial = match tag {
        b"F" => false,
        b"P" => true,
        _ => return raw,
    };
    Entry {
        time,
        stream,
        partial,
        text,
    }
}

/// Turns log entries into what the user sees on stdout and stderr.
#[derive(Default)]
pub struct Printer {
    pub timestamps: bool,
    /// The last entry was partial: the next continues its line (no timestamp).
    in_line: bool,
    crlf: bool,
}

impl Printer {
    pub fn new(timestamps: bool) -> Printer {
        Printer {
            timestamps,
            in_line: false,
            crlf: false,
        }
    }

    /// Ends lines with "\r\n" (for a terminal in raw mode).
    pub fn crlf(mut self, on: bool) -> Printer {
        self.crlf = on;
        self
    }

    /// Writes the entries of `lines` (complete lines of the file, newline-terminated or
    /// not) to `out` / `err`.
    pub fn print(&mut self, lines: &[u8], out: &mut impl Write, err: &mut impl Write) {
        for line in lines.split(|b| *b == b'\n') {
            if line.is_empty() {
                continue;
            }
            let e = parse(line);
            let w: &mut dyn Write = match e.stream {
                Stream::Stdout => out,
                Stream::Stderr => err,
            };
            let mut buf = Vec::with_capacity(e.text.len() + 40);
            if self.timestamps && !self.in_line && !e.time.is_empty() {
                buf.extend_from_slice(e.time.as_bytes());
                buf.push(b' ');
            }
            buf.extend_from_slice(e.text);
            if !e.partial {
                if self.crlf {
                    buf.push(b'\r');
                }
                buf.push(b'\n');
            }
            self.in_line = e.partial;
            let _ = w.write_all(&buf);
        }
        let _ = out.flush();
        let _ = err.flush();
    }
}

/// The last `n` logical lines of `data` (a partial entry and the ones continuing it count
/// as one line).
pub fn tail(data: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &data[data.len()..];
    }
    let mut count = 0;
    let mut end = data.len();
    // Walk back over entries; a full entry (or a raw line) ends a logical line.
    while end > 0 {
        let body_end = if data[end - 1] == b'\n' { end - 1 } else { end };
        let start = data[..body_end]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        if !parse(&data[start..body_end]).partial {
            count += 1;
            if count > n {
                return &data[end..];
            }
        }
        end = start;
    }
    data
}

/// Reads the bytes appended to a file since the last call, handing out complete lines.
pub struct Follower {
    path: PathBuf,
    offset: u64,
    pending: Vec<u8>,
}

impl Follower {
    /// Follows `path` from byte `offset`.
    pub fn new(path: &Path, offset: u64) -> Follower {
        Follower {
            path: path.to_path_buf(),
            offset,
            pending: Vec::new(),
        }
    }

    /// Follows `path` from its current end.
    pub fn at_end(path: &Path) -> Follower {
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        Follower::new(path, len)
    }

    /// The complete lines appended since the last call (with `flush`: also an unterminated
    /// last line).
    pub fn read(&mut self, flush: bool) -> Vec<u8> {
        if let Ok(mut f) = std::fs::File::open(&self.path)
            && f.seek(SeekFrom::Start(self.offset)).is_ok()
        {
            let mut buf = Vec::new();
            if let Ok(n) = f.read_to_end(&mut buf) {
                self.offset += n as u64;
                self.pending.extend_from_slice(&buf);
            }
        }
        let cut = if flush {
            self.pending.len()
        } else {
            self.pending
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1)
        };
        self.pending.drain(..cut).collect()
    }
}

/// Prints what the container writes to its log from `follower`'s position until its task
/// exits; returns the exit status.
pub async fn follow_until_exit(
    c: &Client,
    id: &str,
    mut follower: Follower,
    printer: &mut Printer,
) -> anyhow::Result<u32> {
    let wait = super::docker::wait_exit(c, id);
    tokio::pin!(wait);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let result = loop {
        tokio::select! {
            r = &mut wait => break r,
            _ = tick.tick() => {
                let data = follower.read(false);
                printer.print(&data, &mut out, &mut err);
            }
        }
    };
    let data = follower.read(true);
    printer.print(&data, &mut out, &mut err);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cri_lines_and_raw_ones() {
        let e = parse(b"2024-01-02T03:04:05.123456789Z stderr F oops: x y");
        assert_eq!(e.stream, Stream::Stderr);
        assert!(!e.partial);
        assert_eq!(e.text, b"oops: x y");
        assert_eq!(e.time, "2024-01-02T03:04:05.123456789Z");
        let e = parse(b"2024-01-02T03:04:05.1Z stdout P ");
        assert!(e.partial);
        assert_eq!(e.text, b"");
        let e = parse(b"hello world");
        assert_eq!(e.stream, Stream::Stdout);
        assert_eq!(e.text, b"hello world");
    }

    #[test]
    fn prints_streams_partials_and_timestamps() {
        let log = b"2024-01-02T03:04:05.1Z stdout P hel\n\
                    2024-01-02T03:04:05.2Z stdout F lo\n\
                    2024-01-02T03:04:05.3Z stderr F bad\n";
        let (mut out, mut err) = (Vec::new(), Vec::new());
        Printer::new(false).print(log, &mut out, &mut err);
        assert_eq!(out, b"hello\n");
        assert_eq!(err, b"bad\n");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        Printer::new(true).print(log, &mut out, &mut err);
        assert_eq!(out, b"2024-01-02T03:04:05.1Z hello\n");
        assert_eq!(err, b"2024-01-02T03:04:05.3Z bad\n");
    }

    #[test]
    fn tails_logical_lines() {
        let log = b"2024-01-02T03:04:05.1Z stdout F one\n\
                    2024-01-02T03:04:05.1Z stdout P tw\n\
                    2024-01-02T03:04:05.2Z stdout F o\n\
                    2024-01-02T03:04:05.3Z stderr F three\n";
        let (mut out, mut err) = (Vec::new(), Vec::new());
        Printer::new(false).print(tail(log, 2), &mut out, &mut err);
        assert_eq!(out, b"two\n");
        assert_eq!(err, b"three\n");
        assert_eq!(tail(log, 10), &log[..]);
        assert!(tail(log, 0).is_empty());
        assert_eq!(tail(b"a\nb\nc\n", 1), b"c\n");
    }
}
