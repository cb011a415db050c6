//! `attach` to a running docker-style container, as Docker's: its output from now on (read
//! from its log file, which the shim writes), our stdin into its stdin FIFO when it was made
//! with `-i`, our terminal raw and its size followed when it has a terminal, and the detach
//! keys (Ctrl-P Ctrl-Q unless told otherwise) to leave it running.

use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use anyhow::Context;
use berth_proto::containerd::services::containers::v1::Container;

use super::Client;
use super::containers::{self, log_path, stdin_path};
use super::logs::{Follower, Printer};
use super::process::{follow_size, forward_signals};
use super::stdio;

/// Docker's default detach keys.
pub const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";

/// How an attachment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The container exited with this status.
    Exited(u32),
    /// The user typed the detach keys; the container goes on.
    Detached,
}

/// Parses Docker's detach keys: comma-separated, each a character or `ctrl-X` (X one of
/// `a`-`z`, `@`, `[`, `\`, `]`, `^`, `_`).
pub fn parse_detach_keys(keys: &str) -> anyhow::Result<Vec<u8>> {
    let bad = || anyhow::anyhow!("Invalid detach keys ({keys}) provided");
    let mut out = Vec::new();
    for key in keys.split(',') {
        let byte = match key.strip_prefix("ctrl-") {
            Some(c) if c.len() == 1 => match c.as_bytes()[0] {
                b @ b'a'..=b'z' => b - b'a' + 1,
                b'@' => 0,
                b'[' => 27,
                b'\\' => 28,
                b']' => 29,
                b'^' => 30,
                b'_' => 31,
                _ => return Err(bad()),
            },
            Some(_) => return Err(bad()),
            None if key.len() == 1 => key.as_bytes()[0],
            None => return Err(bad()),
        };
        out.push(byte);
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

/// Finds the detach keys in a stream of input, holding back what may be their start.
pub struct Escape {
    keys: Vec<u8>,
    matched: usize,
}

impl Escape {
    pub fn new(keys: Vec<u8>) -> Escape {
        Escape { keys, matched: 0 }
    }

    /// What of `input` is to be passed on, and whether the keys were typed (then nothing
    /// after them is passed on).
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut pass = Vec::with_capacity(input.len());
        for &b in input {
            if self.keys.is_empty() {
                pass.push(b);
                continue;
            }
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return (pass, true);
                }
                continue;
            }
            // Not the keys after all: what was held back goes on, then this byte is looked
            // at afresh.
            pass.extend_from_slice(&self.keys[..self.matched]);
            self.matched = 0;
            if b == self.keys[0] {
                self.matched = 1;
                if self.keys.len() == 1 {
                    return (pass, true);
                }
            } else {
                pass.push(b);
            }
        }
        (pass, false)
    }
}

/// What an attachment takes in.
pub struct Options {
    /// Forward our stdin (when the container has a stdin FIFO).
    pub stdin: bool,
    pub detach_keys: Vec<u8>,
    /// Forward the signals we get to the container (without a terminal).
    pub sig_proxy: bool,
}

/// The log of `ct` followed from its end: made before a start, so that nothing the new
/// run writes is missed.
pub fn follower(ct: &Container) -> Follower {
    Follower::at_end(&log_path(ct).unwrap_or_default())
}

/// Stays attached to running container `ct` until it exits or the user detaches; its output
/// from `follower` on.
pub async fn attach(
    c: &Client,
    ct: &Container,
    mut follower: Follower,
    opts: Options,
) -> anyhow::Result<Ended> {
    let tty = containers::has_terminal(ct);
    let fifo = stdin_path(ct).filter(|_| opts.stdin);
    let our_tty = std::io::stdin().is_terminal();
    if tty && fifo.is_some() && !our_tty {
        anyhow::bail!("the input device is not a TTY");
    }
    let (detach_tx, mut detached) = tokio::sync::mpsc::channel::<()>(1);
    if let Some(path) = &fifo {
        let target = open_fifo(path)?;
        // The detach keys are looked for on a terminal, as Docker does.
        let escape = Escape::new(if tty { opts.detach_keys } else { Vec::new() });
        forward_stdin(target, escape, detach_tx);
    }
    let raw = if tty && fifo.is_some() {
        stdio::raw_terminal()?
    } else {
        None
    };
    let _size = tty.then(|| follow_size(c, &ct.id, ""));
    let signals = (!tty && opts.sig_proxy).then(|| forward_signals(c, &ct.id, ""));
    let mut printer = Printer::new(false).crlf(raw.is_some());
    let wait = super::docker::wait_exit(c, &ct.id);
    tokio::pin!(wait);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let ended = loop {
        tokio::select! {
            r = &mut wait => break Ended::Exited(r?),
            Some(()) = detached.recv() => break Ended::Detached,
            _ = tick.tick() => {
                let data = follower.read(false);
                printer.print(&data, &mut out, &mut err);
            }
        }
    };
    let data = follower.read(matches!(ended, Ended::Exited(_)));
    printer.print(&data, &mut out, &mut err);
    if let Some(s) = signals {
        s.abort();
    }
    drop(raw);
    Ok(ended)
}

/// Opens the write end of the container's stdin FIFO without waiting: the shim holds its
/// read end while the container runs (ENXIO otherwise).
fn open_fifo(path: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .with_context(|| format!("open the container's stdin {}", path.display()))?;
    // Blocking writes from here on.
    let flags = rustix::fs::fcntl_getfl(&file).context("read the stdin FIFO's flags")?;
    rustix::fs::fcntl_setfl(&file, flags - rustix::fs::OFlags::NONBLOCK)
        .context("set the stdin FIFO blocking")?;
    Ok(file)
}

/// Copies our stdin into `to` on a thread of its own (a blocking read), until our stdin
/// ends or the detach keys are typed.
fn forward_stdin(
    mut to: std::fs::File,
    mut escape: Escape,
    detached: tokio::sync::mpsc::Sender<()>,
) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 4096];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let (pass, detach) = escape.feed(&buf[..n]);
            if !pass.is_empty() && to.write_all(&pass).is_err() {
                return;
            }
            if detach {
                let _ = detached.blocking_send(());
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_as_docker_reads_them() {
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap(), vec![16, 17]);
        assert_eq!(
            parse_detach_keys("a,ctrl-\\,ctrl-@").unwrap(),
            vec![b'a', 28, 0]
        );
        assert_eq!(parse_detach_keys("X").unwrap(), vec![b'X']);
        for bad in ["", "ctrl-", "ctrl-1", "ab", "ctrl-p,"] {
            assert!(parse_detach_keys(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn escape_holds_back_a_start_and_detaches() {
        let mut e = Escape::new(vec![16, 17]);
        assert_eq!(e.feed(b"ls\r"), (b"ls\r".to_vec(), false));
        // A lone ctrl-p is held until the next byte says it was not the keys.
        assert_eq!(e.feed(&[16]), (vec![], false));
        assert_eq!(e.feed(b"x"), (vec![16, b'x'], false));
        assert_eq!(e.feed(&[16, 16, 17, b'z']), (vec![16], true));
        let mut none = Escape::new(Vec::new());
        assert_eq!(none.feed(&[16, 17]), (vec![16, 17], false));
    }
}
