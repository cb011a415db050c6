//! A process's stdio. The client names FIFOs (as `ctr` does), `file://` or `binary://`
//! URIs, or nothing (null IO). The container never writes to the client's FIFOs directly:
//! it gets pipes, and the shim copies between them, so stdin can be closed on request
//! (CloseIO) and output keeps flowing into files with no client attached. With a terminal,
//! runc hands the pty master over a console socket and the shim copies to and from it.

use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::UnixListener;
use tokio::net::unix::pipe;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::error::{Result, ShimError};
use crate::runc::ChildStdio;

/// What the client asked for.
#[derive(Clone, Debug, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// The shim's side of a running process's stdio.
#[derive(Default)]
pub struct ProcessIo {
    stdin_close: Option<Arc<Notify>>,
    copies: Vec<JoinHandle<()>>,
    console: Option<Arc<AsyncFd<OwnedFd>>>,
    /// The logging binary of a `binary://` URI, when there is one.
    pub logger_pid: Option<u32>,
    /// The read end of the logger's readiness pipe (its fd 5), until it said ready.
    logger_ready: Option<OwnedFd>,
    /// The CRI log files it writes (reopened by ReopenContainerLog).
    cri_logs: Vec<Arc<CriLog>>,
}

/// How long a `binary://` logger may take to say it is ready.
const LOGGER_READY_TIMEOUT: Duration = Duration::from_secs(60);

impl ProcessIo {
    /// The CRI log files it writes (to reopen outside the process's lock).
    pub fn cri_logs(&self) -> Vec<Arc<CriLog>> {
        self.cri_logs.clone()
    }

    /// Waits until the `binary://` logger is ready to read the container's output: it
    /// closes (or writes to) its fd 5, as containerd's logging binaries do.
    pub async fn logger_ready(&mut self) -> Result<()> {
        let Some(fd) = self.logger_ready.take() else {
            return Ok(());
        };
        let mut rx =
            pipe::Receiver::from_owned_fd(fd).map_err(ShimError::io("logger ready pipe"))?;
        let mut byte = [0u8; 1];
        match tokio::time::timeout(LOGGER_READY_TIMEOUT, rx.read(&mut byte)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(ShimError::Io {
                context: "read from the logging binary's ready pipe".into(),
                source: e,
            }),
            Err(_) => Err(ShimError::Io {
                context: "logging binary".into(),
                source: std::io::Error::other(format!(
                    "not ready within {}s (it must close fd 5 once it reads fds 3 and 4)",
                    LOGGER_READY_TIMEOUT.as_secs()
                )),
            }),
        }
    }

    /// Closes the process's stdin (after forwarding what the client already wrote).
    pub fn close_stdin(&mut self) {
        if let Some(n) = self.stdin_close.take() {
            n.notify_one();
        }
    }

    /// Sets the terminal's size. A process without a terminal has nothing to resize: the
    /// call succeeds and does nothing, as containerd's shim answers it.
    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        match &self.console {
            Some(master) => set_winsize(master.get_ref(), width, height),
            None => Ok(()),
        }
    }

    /// Once the process is gone: closes its stdin and waits (at most `limit`) until the
    /// output copies have drained.
    pub async fn drain(&mut self, limit: Duration) {
        self.close_stdin();
        let copies = std::mem::take(&mut self.copies);
        let all = async {
            for c in copies {
                let _ = c.await;
            }
        };
        let _ = tokio::time::timeout(limit, all).await;
    }
}

/// Where a pending terminal's pty master will arrive.
pub struct ConsoleSocket {
    pub path: PathBuf,
    listener: UnixListener,
}

static SOCKETS: AtomicU64 = AtomicU64::new(0);

impl ConsoleSocket {
    pub fn new() -> Result<ConsoleSocket> {
        let n = SOCKETS.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("berth-pty-{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(ShimError::io(format!(
            "bind console socket {}",
            path.display()
        )))?;
        Ok(ConsoleSocket { path, listener })
    }

    /// Receives the pty master runc sends.
    pub async fn receive(self) -> Result<OwnedFd> {
        let result = receive_fd(&self.listener).await;
        let _ = std::fs::remove_file(&self.path);
        result
    }
}

async fn receive_fd(listener: &UnixListener) -> Result<OwnedFd> {
    let ctx = "receive the pty master from the console socket";
    let (stream, _) = listener.accept().await.map_err(ShimError::io(ctx))?;
    loop {
        stream.readable().await.map_err(ShimError::io(ctx))?;
        let got = stream.try_io(Interest::READABLE, || {
            let mut buf = [0u8; 4096];
            let mut iov = [IoSliceMut::new(&mut buf)];
            let mut cmsg = nix::cmsg_space!([RawFd; 1]);
            let msg = recvmsg::<()>(
                stream.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(std::io::Error::from)?;
            let mut fds = Vec::new();
            for c in msg.cmsgs().map_err(std::io::Error::from)? {
                if let ControlMessageOwned::ScmRights(rights) = c {
                    fds.extend(rights);
                }
            }
            Ok(fds)
        });
        match got {
            Ok(fds) => {
                let mut owned: Vec<OwnedFd> = fds.into_iter().map(own_fd).collect();
                return owned.pop().ok_or_else(|| ShimError::Io {
                    context: ctx.into(),
                    source: std::io::Error::other("no file descriptor in the message"),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(ShimError::io(ctx)(e)),
        }
    }
}

/// Owns `fd`: only for a descriptor the kernel has just installed in this process for the
/// caller (received through SCM_RIGHTS, or returned by a call that makes a new one, such
/// as `fcntl(F_DUPFD_CLOEXEC)` or `openat2`).
#[allow(unsafe_code)]
pub(crate) fn own_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: per the contract above, `fd` is a new descriptor of this process that
    // nothing else owns or closes.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[allow(unsafe_code)]
fn set_winsize(fd: &OwnedFd, width: u32, height: u32) -> Result<()> {
    let ws = libc::winsize {
        ws_row: height.min(u16::MAX as u32) as u16,
        ws_col: width.min(u16::MAX as u32) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which points to a live
    // value for the duration of the call; `fd` is an open pty master.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    Errno::result(rc)
        .map(drop)
        .map_err(ShimError::os("resize the terminal"))
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(ShimError::os("create a pipe"))
}

/// Opens the client's end of a FIFO without blocking on the other side. Read-write
/// keeps the FIFO usable while the client is not (yet) attached.
fn fifo_sender(path: &str) -> Result<pipe::Sender> {
    pipe::OpenOptions::new()
        .read_write(true)
        .open_sender(path)
        .map_err(ShimError::io(format!("open {path}")))
}

fn fifo_receiver(path: &str) -> Result<pipe::Receiver> {
    pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(path)
        .map_err(ShimError::io(format!("open {path}")))
}

/// An output destination named by the client.
enum Output {
    Null,
    Writer(Box<dyn AsyncWrite + Unpin + Send>),
    /// `file://<path>?format=cri[&max-line=N]`: the shim writes CRI log records into the
    /// file, lines longer than N bytes (16 KiB) cut into partial records.
    Cri(PathBuf, usize),
    /// `binary://`: the logger reads our pipe itself.
    Binary(PathBuf, Vec<(String, String)>),
}

fn parse_output(uri: &str) -> Result<Output> {
    if uri.is_empty() {
        return Ok(Output::Null);
    }
    if let Some(rest) = uri.strip_prefix("file://") {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if query.split('&').any(|kv| kv == "format=cri") {
            let max = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("max-line="))
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| *n > 0)
                .unwrap_or(crate::crilog::MAX_LINE);
            return Ok(Output::Cri(PathBuf::from(path), max));
        }
        if let Some(dir) = Path::new(path).parent() {
            std::fs::create_dir_all(dir)
                .map_err(ShimError::io(format!("create {}", dir.display())))?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(ShimError::io(format!("open {path}")))?;
        return Ok(Output::Writer(Box::new(tokio::fs::File::from_std(f))));
    }
    if let Some(rest) = uri.strip_prefix("binary://") {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let bad =
            |what: &str| ShimError::InvalidArgument(format!("logging URI {uri:?}: bad {what}"));
        let path = percent_decode(path, false).ok_or_else(|| bad("path"))?;
        // As Go's url.Query: decoded keys and values, the first value of each key.
        let mut args: Vec<(String, String)> = Vec::new();
        for kv in query.split(['&', ';']).filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let k = percent_decode(k, true).ok_or_else(|| bad("query"))?;
            let v = percent_decode(v, true).ok_or_else(|| bad("query"))?;
            if !args.iter().any(|(have, _)| *have == k) {
                args.push((k, v));
            }
        }
        return Ok(Output::Binary(PathBuf::from(path), args));
    }
    let path = uri.strip_prefix("fifo://").unwrap_or(uri);
    Ok(Output::Writer(Box::new(fifo_sender(path)?)))
}

/// `%XX`-decodes a URI component (and `+` as a space in a query); None when an escape is
/// malformed or the result is not UTF-8.
fn percent_decode(s: &str, query: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if query => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Opens a CRI log for appending (0640), creating its directory (0755) when missing.
/// A CRI log file, shared by the streams that write it; reopened at the same path when
/// the kubelet rotated it (ReopenContainerLog).
pub struct CriLog {
    path: PathBuf,
    file: std::sync::RwLock<Arc<std::fs::File>>,
    max_line: usize,
}

impl CriLog {
    fn open(path: &Path, max_line: usize) -> Result<Arc<CriLog>> {
        Ok(Arc::new(CriLog {
            path: path.to_path_buf(),
            file: std::sync::RwLock::new(open_cri_log(path)?),
            max_line,
        }))
    }

    fn file(&self) -> Arc<std::fs::File> {
        self.file.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Opens the path again (a new file when the old one was renamed away); later
    /// records go there.
    pub fn reopen(&self) -> Result<()> {
        let f = open_cri_log(&self.path)?;
        *self.file.write().unwrap_or_else(|e| e.into_inner()) = f;
        Ok(())
    }
}

fn open_cri_log(path: &Path) -> Result<Arc<std::fs::File>> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if !path.is_absolute() {
        return Err(ShimError::InvalidArgument(format!(
            "log file {}: the path must be absolute",
            path.display()
        )));
    }
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(ShimError::io(format!("create {}", dir.display())))?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(ShimError::io(format!("open {}", path.display())))?;
    Ok(Arc::new(f))
}

/// One stream's writer into a CRI log file (which both streams may share: each write is
/// one O_APPEND `write` of whole records, so lines of the two streams never mix).
///
/// The file is written inline: a record or a few per pipe read, to a local file, costs
/// less than handing each to a blocking thread. A failed write is logged (once) and the
/// output dropped: the container's pipe keeps draining either way.
struct CriSink {
    log: Arc<CriLog>,
    lines: crate::crilog::CriLines,
    failed: bool,
    /// A terminal's output: what a read brought that ends without a newline (a shell's
    /// prompt, an echoed key) is written at once as a `P` record, for `attach` to show.
    eager: bool,
}

impl CriSink {
    fn new(log: Arc<CriLog>, stream: &'static str) -> CriSink {
        CriSink {
            lines: crate::crilog::CriLines::new(stream, log.max_line),
            log,
            failed: false,
            eager: false,
        }
    }

    /// A terminal's sink (see `eager`).
    fn eager(mut self) -> CriSink {
        self.eager = true;
        self
    }

    fn write_records(&mut self, records: &[u8]) {
        use std::io::Write;
        if records.is_empty() {
            return;
        }
        if let Err(e) = (&*self.log.file()).write_all(records)
            && !self.failed
        {
            self.failed = true;
            log::error!("write log {}: {e}", self.log.path.display());
        }
    }
}

impl AsyncWrite for CriSink {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let mut out = Vec::new();
        let now = std::time::SystemTime::now();
        self.lines.push(buf, now, &mut out);
        if self.eager {
            self.lines.finish(now, &mut out);
        }
        self.write_records(&out);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl Drop for CriSink {
    /// The stream ended: a last line without its newline becomes a partial record.
    fn drop(&mut self) {
        let mut out = Vec::new();
        self.lines.finish(std::time::SystemTime::now(), &mut out);
        self.write_records(&out);
    }
}

fn spawn_copy<R, W>(mut from: R, mut to: W) -> JoinHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from, &mut to).await;
        let _ = to.flush().await;
    })
}

/// Copies the client's stdin into `to` until CloseIO; then forwards what is already
/// buffered and closes `to`.
fn spawn_stdin<W>(mut from: pipe::Receiver, mut to: W, close: Arc<Notify>) -> JoinHandle<()>
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut buf = vec![0u8; 8192];
        loop {
            tokio::select! {
                n = from.read(&mut buf) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => if to.write_all(&buf[..n]).await.is_err() { break },
                },
                () = close.notified() => {
                    while let Ok(n) = from.try_read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    break;
                }
            }
        }
        let _ = to.shutdown().await;
    })
}

/// Sets up pipes for a process without a terminal: returns what the container inherits
/// and the shim's side (copies run from now on).
pub fn setup_pipes(
    paths: &StdioPaths,
    container_id: &str,
    namespace: &str,
) -> Result<(ChildStdio, ProcessIo)> {
    let mut child = ChildStdio::default();
    let mut io = ProcessIo::default();
    if !paths.stdin.is_empty() {
        let (r, w) = pipe()?;
        let src = fifo_receiver(&paths.stdin)?;
        let dst = pipe::Sender::from_owned_fd(w).map_err(ShimError::io("stdin pipe"))?;
        let close = Arc::new(Notify::new());
        io.copies.push(spawn_stdin(src, dst, close.clone()));
        io.stdin_close = Some(close);
        child.stdin = Some(r);
    }
    // A `binary://` logger reads the container's stdout on its fd 3 and stderr on fd 4.
    let mut logger: Option<(PathBuf, Vec<(String, String)>)> = None;
    let mut logger_fds: [Option<OwnedFd>; 2] = [None, None];
    // A CRI log named by both streams is opened once and shared.
    let mut cri_log: Option<Arc<CriLog>> = None;
    let outputs = [
        (&paths.stdout, &mut child.stdout, "stdout"),
        (&paths.stderr, &mut child.stderr, "stderr"),
    ];
    for (n, (uri, slot, stream)) in outputs.into_iter().enumerate() {
        match parse_output(uri)? {
            Output::Null => {}
            Output::Cri(path, max) => {
                let log = match &cri_log {
                    Some(l) if l.path == path => l.clone(),
                    _ => {
                        let l = CriLog::open(&path, max)?;
                        cri_log = Some(l.clone());
                        io.cri_logs.push(l.clone());
                        l
                    }
                };
                let (r, w) = pipe()?;
                let src = pipe::Receiver::from_owned_fd(r).map_err(ShimError::io("output pipe"))?;
                io.copies.push(spawn_copy(src, CriSink::new(log, stream)));
                *slot = Some(w);
            }
            Output::Writer(dst) => {
                let (r, w) = pipe()?;
                let src = pipe::Receiver::from_owned_fd(r).map_err(ShimError::io("output pipe"))?;
                io.copies.push(spawn_copy(src, dst));
                *slot = Some(w);
            }
            Output::Binary(bin, args) => {
                let (r, w) = pipe()?;
                logger_fds[n] = Some(r);
                logger.get_or_insert((bin, args));
                *slot = Some(w);
            }
        }
    }
    if let Some((bin, args)) = logger {
        let [out, err] = logger_fds;
        let (pid, ready) = spawn_logger(&bin, &args, out, err, container_id, namespace)?;
        io.logger_pid = Some(pid);
        io.logger_ready = Some(ready);
    }
    Ok((child, io))
}

/// Starts a `binary://` logger as containerd does: each query key and its value as two
/// arguments, the container's stdout on the logger's fd 3, stderr on fd 4, the write end
/// of a readiness pipe on fd 5, and only `CONTAINER_ID` / `CONTAINER_NAMESPACE` in its
/// environment. Returns its pid and the readiness pipe's read end.
fn spawn_logger(
    bin: &Path,
    args: &[(String, String)],
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    container_id: &str,
    namespace: &str,
) -> Result<(u32, OwnedFd)> {
    let mut cmd = Command::new(bin);
    for (k, v) in args {
        cmd.arg(k).arg(v);
    }
    cmd.env_clear()
        .env("CONTAINER_ID", container_id)
        .env("CONTAINER_NAMESPACE", namespace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let (ready_r, ready_w) = pipe()?;
    let fds = [
        stdout.as_ref().map(|f| f.as_raw_fd()),
        stderr.as_ref().map(|f| f.as_raw_fd()),
        Some(ready_w.as_raw_fd()),
    ];
    install_fds(&mut cmd, fds);
    let child = cmd
        .spawn()
        .map_err(ShimError::io(format!("start logger {}", bin.display())))?;
    // Our copies of the pipes' logger ends close here; the logger holds its own.
    drop((stdout, stderr, ready_w));
    Ok((child.id(), ready_r))
}

#[allow(unsafe_code)]
fn install_fds(cmd: &mut Command, fds: [Option<RawFd>; 3]) {
    use std::os::unix::process::CommandExt;
    const FIRST: RawFd = 3;
    const END: RawFd = FIRST + 3;
    // SAFETY: the closure runs in the forked child before exec and only calls fcntl and
    // dup2, which are async-signal-safe, on descriptors that are open in the child
    // (inherited from us, kept alive by the caller until after spawn).
    unsafe {
        cmd.pre_exec(move || {
            // A source that sits on one of the target numbers moves out of the way first,
            // so that placing one descriptor never closes another still to be placed.
            let mut fds = fds;
            for fd in fds.iter_mut().flatten() {
                if (FIRST..END).contains(fd) {
                    let moved = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, END);
                    if moved < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    *fd = moved;
                }
            }
            for (target, fd) in (FIRST..).zip(fds) {
                if let Some(fd) = fd
                    && libc::dup2(fd, target) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Wires a terminal: copies the client's stdin into the pty master and the master's
/// output to the client's stdout.
pub fn setup_console(master: OwnedFd, paths: &StdioPaths) -> Result<ProcessIo> {
    nix::fcntl::fcntl(
        master.as_fd(),
        nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK | OFlag::O_RDWR),
    )
    .map_err(ShimError::os("set the pty master non-blocking"))?;
    let master = Arc::new(register(master, "the pty master")?);
    let mut io = ProcessIo {
        console: Some(master.clone()),
        ..ProcessIo::default()
    };
    if !paths.stdin.is_empty() {
        let src = fifo_receiver(&paths.stdin)?;
        let close = Arc::new(Notify::new());
        io.copies
            .push(spawn_stdin(src, PtyWriter(master.clone()), close.clone()));
        io.stdin_close = Some(close);
    }
    let dst: Option<Box<dyn AsyncWrite + Unpin + Send>> = match parse_output(&paths.stdout)? {
        Output::Writer(dst) => Some(dst),
        Output::Cri(path, max) => {
            let log = CriLog::open(&path, max)?;
            io.cri_logs.push(log.clone());
            Some(Box::new(CriSink::new(log, "stdout").eager()))
        }
        Output::Null | Output::Binary(..) => None,
    };
    if let Some(mut dst) = dst {
        let m = master.clone();
        io.copies.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            loop {
                let Ok(mut guard) = m.readable().await else {
                    break;
                };
                match guard.try_io(|fd| {
                    nix::unistd::read(fd.get_ref(), &mut buf).map_err(std::io::Error::from)
                }) {
                    Ok(Ok(0)) | Ok(Err(_)) => break, // EIO: every slave side is closed
                    Ok(Ok(n)) => {
                        if dst.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    Err(_would_block) => continue,
                }
            }
            let _ = dst.flush().await;
        }));
    }
    Ok(io)
}

/// Puts `fd` in the reactor. `fd` owns its descriptor (an `OwnedFd`, an `EventFd`, ...).
#[allow(unsafe_code)]
pub(crate) fn register<T: AsRawFd>(fd: T, what: &str) -> Result<AsyncFd<T>> {
    // SAFETY: the AsyncFd owns `fd`, which owns the descriptor, so it stays open for as
    // long as it is registered and nothing else can close or reuse it meanwhile.
    unsafe { AsyncFd::register(fd) }
        .map_err(|e| ShimError::io(format!("register {what}"))(std::io::Error::from(e)))
}

/// Writes into the pty master.
struct PtyWriter(Arc<AsyncFd<OwnedFd>>);

impl AsyncWrite for PtyWriter {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        loop {
            let mut guard = std::task::ready!(self.0.poll_write_ready(cx))?;
            match guard
                .try_io(|fd| nix::unistd::write(fd.get_ref(), buf).map_err(std::io::Error::from))
            {
                Ok(r) => return std::task::Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        // A terminal has no half-close; send EOF (^D) as a line discipline would.
        let _ = nix::unistd::write(self.0.get_ref(), &[4u8]);
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_uris() {
        assert!(matches!(parse_output("").expect("null"), Output::Null));
        match parse_output("binary:///usr/bin/logger?a=1&b").expect("binary") {
            Output::Binary(p, args) => {
                assert_eq!(p, Path::new("/usr/bin/logger"));
                assert_eq!(
                    args,
                    [("a".into(), "1".into()), ("b".into(), String::new())]
                );
            }
            _ => panic!("not binary"),
        }
        // Keys and values decoded as Go's url.Query does; a repeated key keeps its first.
        match parse_output("binary:///opt/my%20logger?log=%2Ftmp%2Fx.log&tag=a+b&log=2")
            .expect("binary")
        {
            Output::Binary(p, args) => {
                assert_eq!(p, Path::new("/opt/my logger"));
                assert_eq!(
                    args,
                    [
                        ("log".into(), "/tmp/x.log".into()),
                        ("tag".into(), "a b".into())
                    ]
                );
            }
            _ => panic!("not binary"),
        }
        assert!(parse_output("binary:///l?x=%zz").is_err());
        match parse_output("file:///var/log/c/x.log?format=cri").expect("cri") {
            Output::Cri(p, max) => {
                assert_eq!(p, Path::new("/var/log/c/x.log"));
                assert_eq!(max, crate::crilog::MAX_LINE);
            }
            _ => panic!("not cri"),
        }
    }

    #[tokio::test]
    async fn one_cri_log_for_both_streams() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("sub/c.log");
        let uri = format!("file://{}?format=cri", log.display());
        let paths = StdioPaths {
            stdout: uri.clone(),
            stderr: uri,
            ..StdioPaths::default()
        };
        let (child, mut io) = setup_pipes(&paths, "c1", "default").expect("pipes");
        let mut out = std::fs::File::from(child.stdout.expect("stdout"));
        let mut err = std::fs::File::from(child.stderr.expect("stderr"));
        out.write_all(b"line one\n").expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        err.write_all(b"oops\n").expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        out.write_all(b"no newline").expect("write");
        drop((out, err));
        io.drain(Duration::from_secs(5)).await;
        let text = std::fs::read_to_string(&log).expect("read log");
        let recs: Vec<Vec<&str>> = text.lines().map(|l| l.splitn(4, ' ').collect()).collect();
        let tail: Vec<&[&str]> = recs.iter().map(|r| &r[1..]).collect();
        assert_eq!(
            tail,
            [
                &["stdout", "F", "line one"][..],
                &["stderr", "F", "oops"],
                &["stdout", "P", "no newline"],
            ]
        );
        assert!(recs.iter().all(|r| r[0].ends_with('Z') && r[0].len() >= 20));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&log).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
    }
}
