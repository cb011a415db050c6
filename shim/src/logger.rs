//! The shim's log: lines into the bundle's `log` FIFO, which the daemon (berthd or
//! containerd) reads and copies into its own log.
//!
//! The shim crate's own logger opens that FIFO blocking: when the daemon died before it
//! opened the reading end (kill -9 during `ctr run`), the shim hangs in open(2) forever and
//! so does the `start` that waits for it. Here the FIFO is opened without blocking, retried
//! for a short while, and a shim whose daemon is not there serves without a log. Lines are
//! written without blocking too: a full FIFO (a daemon that stopped reading) drops lines, it
//! never stalls the shim.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the shim waits for a reader of its log FIFO.
const OPEN_WAIT: Duration = Duration::from_secs(2);

struct FifoLog {
    file: Mutex<File>,
}

impl log::Log for FifoLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!(
            "time=\"{}\" level={} msg=\"{}\"\n",
            rfc3339(SystemTime::now()),
            record.level().as_str().to_lowercase(),
            record.args()
        );
        if let Ok(mut f) = self.file.lock() {
            // EAGAIN (full) and EPIPE (no reader): the line is lost, the shim goes on.
            let _ = f.write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

/// Opens `path` (a FIFO) for writing without blocking, waiting up to [`OPEN_WAIT`] for a
/// reader. None when no reader came or the FIFO is not there.
fn open_nonblocking(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let deadline = std::time::Instant::now() + OPEN_WAIT;
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => return Some(f),
            // ENXIO: a FIFO nobody reads yet.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                if std::time::Instant::now() >= deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => return None,
        }
    }
}

/// Sets the shim's logger up on `<cwd>/log` (the bundle's FIFO), at info level (debug
/// with `-debug`, or as `RUST_LOG` says). Without a reader, logging is off.
pub fn init(debug: bool) {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|l| l.parse::<log::LevelFilter>().ok())
        .unwrap_or(log::LevelFilter::Info);
    let level = if debug {
        level.max(log::LevelFilter::Debug)
    } else {
        level
    };
    let Some(file) = open_nonblocking(Path::new("log")) else {
        log::set_max_level(log::LevelFilter::Off);
        return;
    };
    if log::set_boxed_logger(Box::new(FifoLog {
        file: Mutex::new(file),
    }))
    .is_ok()
    {
        log::set_max_level(level);
    }
}

/// `YYYY-MM-DDTHH:MM:SS.fffffffffZ` for `t` (UTC).
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (the proleptic Gregorian calendar).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3_600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_709_210_096, 5);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.000000005Z");
    }

    #[test]
    fn a_fifo_without_reader_is_given_up_not_waited_on_forever() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let start = std::time::Instant::now();
        assert!(open_nonblocking(&path).is_none());
        assert!(start.elapsed() < OPEN_WAIT + Duration::from_secs(1));
        assert!(open_nonblocking(&dir.path().join("missing")).is_none());
        // With a reader it opens at once.
        let _reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .expect("reader");
        assert!(open_nonblocking(&path).is_some());
    }
}
