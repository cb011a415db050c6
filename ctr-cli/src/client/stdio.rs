//! A process's stdio as the CLI sees it: FIFOs the shim opens at create (as `ctr` does),
//! copied to and from this process's own stdio, and the terminal handling around them
//! (raw mode, size, resizes).
//!
//! The copies are plain blocking threads: a FIFO open blocks until the other side opens,
//! which is exactly the hand-over we need, and no async runtime has to wait for them.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use tokio::sync::oneshot;

/// The FIFOs of one process, in a private directory removed (with them) on drop.
pub struct Fifos {
    dir: PathBuf,
    pub stdin: Option<PathBuf>,
    pub stdout: PathBuf,
    /// None with a terminal: a pty carries both streams.
    pub stderr: Option<PathBuf>,
}

impl Fifos {
    /// Makes the FIFOs for process `id`: stdin only when asked, stderr only without a
    /// terminal.
    pub fn new(id: &str, stdin: bool, terminal: bool) -> anyhow::Result<Fifos> {
        let dir = std::env::temp_dir().join(format!("berth-fifo-{}", uuid::Uuid::new_v4()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("create fifo directory {}", dir.display()))?;
        let mut f = Fifos {
            stdin: None,
            stdout: dir.join(format!("{id}-stdout")),
            stderr: None,
            dir,
        };
        if stdin {
            f.stdin = Some(f.dir.join(format!("{id}-stdin")));
        }
        if !terminal {
            f.stderr = Some(f.dir.join(format!("{id}-stderr")));
        }
        for p in f.paths() {
            mkfifo(p)?;
        }
        Ok(f)
    }

    fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.stdin
            .iter()
            .chain(std::iter::once(&self.stdout))
            .chain(self.stderr.iter())
    }

    /// The stdin, stdout and stderr paths as the Tasks API takes them ("" for none).
    pub fn uris(&self) -> (String, String, String) {
        let s = |p: Option<&PathBuf>| p.map(|p| p.display().to_string()).unwrap_or_default();
        (
            s(self.stdin.as_ref()),
            s(Some(&self.stdout)),
            s(self.stderr.as_ref()),
        )
    }
}

impl Drop for Fifos {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Makes a FIFO that outlives this process (a container's stdin), with its directory.
pub fn make_fifo(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(dir)
            .with_context(|| format!("create directory {}", dir.display()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove {}", path.display())),
    }
    mkfifo(path)
}

fn mkfifo(path: &Path) -> anyhow::Result<()> {
    use rustix::fs::{CWD, FileType, Mode, mknodat};
    mknodat(CWD, path, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
        .with_context(|| format!("create fifo {}", path.display()))
}

/// The copies between this process's stdio and a process's FIFOs. Start it before the
/// task or exec is created: the shim opens the FIFOs then.
pub struct Attached {
    stdin_eof: Option<oneshot::Receiver<()>>,
    outputs: Vec<oneshot::Receiver<()>>,
    /// FIFOs whose open may still be waiting for the shim (released on drop).
    pending: Vec<(PathBuf, Arc<AtomicBool>)>,
}

/// Where a process's output goes: this process's own stdout and stderr, or a channel
/// (both streams, chunk by chunk, as they come) for a caller that shows it its own way.
#[derive(Clone, Default)]
pub enum Output {
    #[default]
    Inherit,
    To(std::sync::mpsc::Sender<Vec<u8>>),
}

/// Writes into an [`Output::To`] channel.
struct ChannelWriter(std::sync::mpsc::Sender<Vec<u8>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .send(buf.to_vec())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Attached {
    pub fn start(f: &Fifos) -> anyhow::Result<Attached> {
        Attached::start_to(f, Output::Inherit)
    }

    /// Like [`Attached::start`], the output sent to `out`.
    pub fn start_to(f: &Fifos, out: Output) -> anyhow::Result<Attached> {
        let mut a = Attached {
            stdin_eof: None,
            outputs: Vec::new(),
            pending: Vec::new(),
        };
        if let Some(path) = &f.stdin {
            let (tx, rx) = oneshot::channel();
            let opened = Arc::new(AtomicBool::new(false));
            a.pending.push((path.clone(), opened.clone()));
            let path = path.clone();
            spawn("stdin", move || {
                // Blocks until the shim opens its end.
                let fifo = std::fs::OpenOptions::new().write(true).open(&path);
                opened.store(true, Ordering::SeqCst);
                if let Ok(mut fifo) = fifo {
                    let _ = copy(&mut std::io::stdin().lock(), &mut fifo);
                }
                let _ = tx.send(());
            })?;
            a.stdin_eof = Some(rx);
        }
        let outs = [(Some(&f.stdout), false), (f.stderr.as_ref(), true)];
        for (path, is_err) in outs {
            let Some(path) = path else { continue };
            let (tx, rx) = oneshot::channel();
            let opened = Arc::new(AtomicBool::new(false));
            a.pending.push((path.clone(), opened.clone()));
            let path = path.clone();
            let out = out.clone();
            spawn("output", move || {
                let fifo = File::open(&path);
                opened.store(true, Ordering::SeqCst);
                if let Ok(mut fifo) = fifo {
                    let _ = match out {
                        Output::To(tx) => copy(&mut fifo, &mut ChannelWriter(tx)),
                        Output::Inherit if is_err => copy(&mut fifo, &mut std::io::stderr().lock()),
                        Output::Inherit => copy(&mut fifo, &mut std::io::stdout().lock()),
                    };
                }
                let _ = tx.send(());
            })?;
            a.outputs.push(rx);
        }
        Ok(a)
    }

    /// Fires once this process's stdin reached end-of-file and the FIFO was closed: the
    /// caller then closes the process's stdin (Tasks.CloseIO).
    pub fn take_stdin_eof(&mut self) -> Option<oneshot::Receiver<()>> {
        self.stdin_eof.take()
    }

    /// Waits until the process's output is all copied: the shim closed the FIFOs (the
    /// process and everything holding its stdio exited).
    pub async fn wait_output(mut self) {
        for rx in std::mem::take(&mut self.outputs) {
            let _ = rx.await;
        }
    }
}

impl Drop for Attached {
    /// Releases copy threads still blocked opening a FIFO that the shim never opened (the
    /// create failed): opening the other end read-write lets their open return.
    fn drop(&mut self) {
        for (path, opened) in &self.pending {
            if !opened.load(Ordering::SeqCst) {
                let _ = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path);
            }
        }
    }
}

fn spawn(what: &str, f: impl FnOnce() + Send + 'static) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name(format!("berth-{what}"))
        .spawn(f)
        .map(drop)
        .with_context(|| format!("start the {what} copy"))
}

/// Copies until end-of-file, flushing after every read so output shows up at once.
fn copy(src: &mut impl Read, dst: &mut impl Write) -> std::io::Result<()> {
    let mut buf = [0u8; 32 * 1024];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        dst.write_all(&buf[..n])?;
        dst.flush()?;
    }
}

/// Our terminal in raw mode; restored on drop.
pub struct RawTerminal {
    saved: rustix::termios::Termios,
}

/// Puts stdin's terminal in raw mode (None when stdin is not a terminal).
pub fn raw_terminal() -> anyhow::Result<Option<RawTerminal>> {
    use rustix::termios::{OptionalActions, isatty, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    if !isatty(stdin.as_fd()) {
        return Ok(None);
    }
    let saved = tcgetattr(stdin.as_fd()).context("read the terminal's settings")?;
    let mut raw = saved.clone();
    raw.make_raw();
    tcsetattr(stdin.as_fd(), OptionalActions::Now, &raw).context("set the terminal raw")?;
    Ok(Some(RawTerminal { saved }))
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        use rustix::termios::{OptionalActions, tcsetattr};
        let _ = tcsetattr(std::io::stdin().as_fd(), OptionalActions::Now, &self.saved);
    }
}

/// The size (columns, rows) of the terminal on stdin or stdout, if there is one.
pub fn terminal_size() -> Option<(u16, u16)> {
    use rustix::termios::tcgetwinsize;
    let size = tcgetwinsize(std::io::stdin().as_fd())
        .or_else(|_| tcgetwinsize(std::io::stdout().as_fd()))
        .ok()?;
    (size.ws_col > 0 && size.ws_row > 0).then_some((size.ws_col, size.ws_row))
}

/// Calls `f(columns, rows)` on every SIGWINCH until dropped.
pub struct ResizeWatcher(Option<tokio::task::JoinHandle<()>>);

pub fn on_resize(f: impl Fn(u16, u16) + Send + 'static) -> ResizeWatcher {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut sig) = signal(SignalKind::window_change()) else {
        return ResizeWatcher(None);
    };
    ResizeWatcher(Some(tokio::spawn(async move {
        while sig.recv().await.is_some() {
            if let Some((cols, rows)) = terminal_size() {
                f(cols, rows);
            }
        }
    })))
}

impl Drop for ResizeWatcher {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_is_copied_until_the_writer_closes() {
        let f = Fifos::new("p1", false, false).expect("fifos");
        let (stdin, stdout, stderr) = f.uris();
        assert!(stdin.is_empty());
        assert!(stdout.ends_with("p1-stdout") && stderr.ends_with("p1-stderr"));
        let a = Attached::start(&f).expect("attach");
        // Plays the shim: opens both writers, writes, closes.
        for p in [&f.stdout, f.stderr.as_ref().expect("stderr")] {
            let mut w = std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .expect("open");
            w.write_all(b"").expect("write");
        }
        tokio::time::timeout(std::time::Duration::from_secs(5), a.wait_output())
            .await
            .expect("output copies end once the writers closed");
        let dir = f.dir.clone();
        drop(f);
        assert!(!dir.exists());
    }

    #[tokio::test]
    async fn a_create_that_never_opens_the_fifos_releases_the_copies() {
        let f = Fifos::new("p2", true, true).expect("fifos");
        assert!(f.stderr.is_none() && f.stdin.is_some());
        let a = Attached::start(&f).expect("attach");
        // Dropping unblocks the threads waiting in open (they see EOF and end).
        drop(a);
    }
}
