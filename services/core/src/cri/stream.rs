//! The CRI streaming server: Exec and PortForward hand out a one-time URL on it
//! (`http://<stream_address>:<port>/exec/<token>`), and the client (the kubelet, crictl,
//! kubectl through the kubelet) connects there with a WebSocket speaking Kubernetes'
//! channel protocol (`v5.channel.k8s.io`, `v4.channel.k8s.io`, `channel.k8s.io`): every
//! binary message starts with its channel (0 stdin, 1 stdout, 2 stderr, 3 the status,
//! 4 terminal resizes; v5's 255 closes a channel). Port forwarding gives each requested
//! port a data and an error channel, each opened by the port number (two bytes, little
//! endian).
//!
//! The WebSocket (RFC 6455) is spoken here directly over the TCP stream: the upgrade is
//! one HTTP/1.1 request, and the frames are small. The older clients' SPDY/3.1
//! (`v4`/`v3`/`v2.channel.k8s.io`, `portforward.k8s.io`; see `spdy.rs`) is taken too:
//! its streams are mapped onto the same channels.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_proto::runtime::v1 as cri;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::*;
use crate::tasks::Stdio;

/// How long an Exec or PortForward URL may wait for its client.
const TOKEN_TTL: Duration = Duration::from_secs(60);
/// The largest request head and message accepted.
const MAX_HEAD: usize = 16 << 10;
const MAX_MESSAGE: u64 = 16 << 20;
const PROTOCOLS: [&str; 3] = ["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"];
/// The exec and attach protocols over SPDY, best first (v4 reports the exit as a
/// metav1.Status; v3 and v2 write only a failure's message; v2 has no resize stream).
const SPDY_PROTOCOLS: [&str; 3] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
];
/// How long a SPDY client has to open the streams its request asks for.
const STREAM_WAIT: Duration = Duration::from_secs(30);

/// A session over either transport: the client's channel messages, the channel for
/// the server's, and the tasks that carry them.
struct Session {
    input: mpsc::Receiver<Vec<u8>>,
    tx: mpsc::Sender<Vec<u8>>,
    writer: tokio::task::JoinHandle<()>,
    reader: tokio::task::JoinHandle<()>,
}

/// What a URL was handed out for.
#[derive(Debug, Clone)]
enum Pending {
    Exec(cri::ExecRequest),
    Attach(cri::AttachRequest),
    PortForward(cri::PortForwardRequest),
}

/// The server's state: where it listens, the URLs not used yet.
#[derive(Default)]
pub(super) struct Streams {
    addr: std::sync::OnceLock<SocketAddr>,
    pending: Mutex<HashMap<String, (Pending, Instant)>>,
}

impl Streams {
    fn put(&self, p: Pending) -> String {
        let token = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
        let mut m = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, (_, at)| at.elapsed() < TOKEN_TTL);
        m.insert(token.clone(), (p, Instant::now()));
        token
    }

    fn take(&self, token: &str) -> Option<Pending> {
        let mut m = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(token)
            .filter(|(_, at)| at.elapsed() < TOKEN_TTL)
            .map(|(p, _)| p)
    }
}

impl Cri {
    /// Starts the streaming server on the configured address and port.
    pub async fn start_streaming(&self) -> Result<SocketAddr> {
        let c = &self.p().config;
        let listener = TcpListener::bind((c.stream_address.as_str(), c.stream_port))
            .await
            .map_err(|e| {
                Error::invalid(format!(
                    "cri streaming server on {}:{}: {e}",
                    c.stream_address, c.stream_port
                ))
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Internal(format!("streaming server address: {e}")))?;
        let _ = self.inner.streams.addr.set(addr);
        let cri = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    continue;
                };
                let cri = cri.clone();
                tokio::spawn(async move {
                    if let Err(e) = cri.serve_stream(conn).await {
                        tracing::debug!(error = %e, "streaming connection ended");
                    }
                });
            }
        });
        tracing::info!(%addr, "CRI streaming server listening");
        Ok(addr)
    }

    fn stream_url(&self, kind: &str, token: &str) -> Result<String> {
        let addr =
            self.inner.streams.addr.get().ok_or_else(|| {
                Error::Unavailable("the CRI streaming server is not running".into())
            })?;
        Ok(format!("http://{addr}/{kind}/{token}"))
    }

    /// Exec: the URL of the command's stream.
    pub async fn exec_url(&self, r: cri::ExecRequest) -> Result<String> {
        if r.cmd.is_empty() {
            return Err(Error::invalid("Exec: the command must not be empty"));
        }
        if !(r.stdin || r.stdout || r.stderr) {
            return Err(Error::invalid(
                "Exec: one of stdin, stdout and stderr must be set",
            ));
        }
        if r.tty && r.stderr {
            return Err(Error::invalid("Exec: tty and stderr cannot both be set"));
        }
        let c = self.find("container", &r.container_id).await?;
        if self.observe_state(&c).await != cri::ContainerState::ContainerRunning {
            return Err(Error::precondition(format!(
                "container {} is not running",
                c.id
            )));
        }
        let mut r = r;
        r.container_id = c.id;
        let token = self.inner.streams.put(Pending::Exec(r));
        self.stream_url("exec", &token)
    }

    /// Attach: the URL of the running container's streams.
    pub async fn attach_url(&self, r: cri::AttachRequest) -> Result<String> {
        if !(r.stdin || r.stdout || r.stderr) {
            return Err(Error::invalid(
                "Attach: one of stdin, stdout and stderr must be set",
            ));
        }
        let c = self.find("container", &r.container_id).await?;
        if self.observe_state(&c).await != cri::ContainerState::ContainerRunning {
            return Err(Error::precondition(format!(
                "container {} is not running",
                c.id
            )));
        }
        let config: cri::ContainerConfig = decode_config(&c);
        if r.stdin && !config.stdin {
            return Err(Error::invalid(format!(
                "Attach: container {} was not created with stdin",
                c.id
            )));
        }
        if !c.labels.contains_key(LOG_LABEL) && (r.stdout || r.stderr) {
            return Err(Error::invalid(format!(
                "Attach: container {} has no log to follow",
                c.id
            )));
        }
        let mut r = r;
        r.container_id = c.id;
        let token = self.inner.streams.put(Pending::Attach(r));
        self.stream_url("attach", &token)
    }

    /// PortForward: the URL of the pod's port forwarding.
    pub async fn port_forward_url(&self, r: cri::PortForwardRequest) -> Result<String> {
        let sb = self.sandbox(&r.pod_sandbox_id).await?;
        if !sb.ready() {
            return Err(Error::precondition(format!(
                "sandbox {} is not running",
                sb.record.id
            )));
        }
        let mut r = r;
        r.pod_sandbox_id = sb.record.id.clone();
        let token = self.inner.streams.put(Pending::PortForward(r));
        self.stream_url("portforward", &token)
    }

    /// One connection: the upgrade (WebSocket or SPDY), then the exec, the attach or the
    /// forwarding.
    async fn serve_stream(&self, mut conn: TcpStream) -> Result<()> {
        let head = read_head(&mut conn).await?;
        let req = Head::parse(&head)?;
        let (kind, token) = req
            .path
            .trim_start_matches('/')
            .split_once('/')
            .map(|(k, t)| (k.to_string(), t.split('?').next().unwrap_or(t).to_string()))
            .unwrap_or_default();
        let Some(pending) = self.inner.streams.take(&token) else {
            return reply(
                &mut conn,
                "404 Not Found",
                "unknown or expired stream token",
            )
            .await;
        };
        let upgrade = req.header("upgrade").to_ascii_lowercase();
        if upgrade == "websocket" {
            self.serve_websocket(conn, req, &kind, pending).await
        } else if upgrade.starts_with("spdy/3") {
            self.serve_spdy(conn, req, &kind, pending).await
        } else {
            reply(
                &mut conn,
                "400 Bad Request",
                "berthd's streaming server needs an upgrade to WebSocket (v5.channel.k8s.io, v4.channel.k8s.io) or SPDY/3.1 (v4.channel.k8s.io, portforward.k8s.io)",
            )
            .await
        }
    }

    /// A WebSocket session: Kubernetes' channel protocol, one binary message per write.
    async fn serve_websocket(
        &self,
        mut conn: TcpStream,
        req: Head,
        kind: &str,
        pending: Pending,
    ) -> Result<()> {
        let offered: Vec<&str> = req.values("sec-websocket-protocol");
        let protocol = PROTOCOLS.iter().find(|p| offered.contains(p)).copied();
        let key = req.header("sec-websocket-key");
        if key.is_empty() {
            return reply(&mut conn, "400 Bad Request", "no Sec-WebSocket-Key").await;
        }
        let accept = websocket_accept(key);
        let mut answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
        );
        if let Some(p) = protocol {
            answer.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
        }
        answer.push_str("\r\n");
        conn.write_all(answer.as_bytes())
            .await
            .map_err(|e| Error::Internal(format!("stream upgrade: {e}")))?;
        let v5 = protocol == Some("v5.channel.k8s.io");
        let (rd, wr) = conn.into_split();
        let (tx, rx) = mpsc::channel::<Vec<u8>>(64);
        let writer = tokio::spawn(write_frames(wr, rx));
        let (in_tx, input) = mpsc::channel::<Vec<u8>>(64);
        let reader = tokio::spawn(read_websocket(rd, in_tx, v5));
        let session = Session {
            input,
            tx,
            writer,
            reader,
        };
        self.serve_channels(kind, pending, &req.path, session).await
    }

    /// A SPDY session: exec and attach map its streams onto the channels; port
    /// forwarding pairs its streams by request.
    async fn serve_spdy(
        &self,
        mut conn: TcpStream,
        req: Head,
        kind: &str,
        pending: Pending,
    ) -> Result<()> {
        let offered = req.values("x-stream-protocol-version");
        let supported: &[&str] = if kind == "portforward" {
            &["portforward.k8s.io"]
        } else {
            &SPDY_PROTOCOLS
        };
        let Some(&protocol) = supported.iter().find(|p| offered.contains(p)) else {
            return reply(
                &mut conn,
                "403 Forbidden",
                &format!(
                    "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}"
                ),
            )
            .await;
        };
        // A port forwarding's pod is looked up before the upgrade, so a refusal is an
        // HTTP answer.
        let forward = match &pending {
            Pending::PortForward(r) => match self.forward_target(r).await {
                Ok(t) => Some(t),
                Err(e) => {
                    return reply(&mut conn, "500 Internal Server Error", &e.to_string()).await;
                }
            },
            _ => None,
        };
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {protocol}\r\n\r\n"
        );
        conn.write_all(answer.as_bytes())
            .await
            .map_err(|e| Error::Internal(format!("stream upgrade: {e}")))?;
        let (rd, wr) = conn.into_split();
        let (out, out_rx) = mpsc::channel::<spdy::Out>(64);
        let writer = tokio::spawn(spdy::write_loop(wr, out_rx));
        let frames = spdy::FrameReader::new(rd);
        let result = match forward {
            Some((netns, pod)) => {
                spdy_port_forward(frames, out, netns, pod).await;
                Ok(())
            }
            None => {
                self.spdy_channels(frames, out, kind, pending, &req.path, protocol)
                    .await
            }
        };
        let _ = writer.await;
        result
    }

    /// Exec or attach over SPDY: once the client has opened the streams the request
    /// asks for, the same work as over a WebSocket.
    async fn spdy_channels(
        &self,
        frames: spdy::FrameReader<tokio::net::tcp::OwnedReadHalf>,
        out: mpsc::Sender<spdy::Out>,
        kind: &str,
        pending: Pending,
        path: &str,
        protocol: &str,
    ) -> Result<()> {
        let (stdin, stdout, stderr, tty) = match &pending {
            Pending::Exec(r) => (r.stdin, r.stdout, r.stderr, r.tty),
            Pending::Attach(r) => (r.stdin, r.stdout, r.stderr, r.tty),
            Pending::PortForward(_) => (false, false, false, false),
        };
        let mut expected = vec!["error"];
        for (wanted, name) in [
            (stdin, "stdin"),
            (stdout, "stdout"),
            (stderr && !tty, "stderr"),
            (tty && protocol != "v2.channel.k8s.io", "resize"),
        ] {
            if wanted {
                expected.push(name);
            }
        }
        let (in_tx, input) = mpsc::channel::<Vec<u8>>(64);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let reader = tokio::spawn(spdy::read_channels(
            frames,
            out.clone(),
            in_tx,
            expected.clone(),
            ready_tx,
        ));
        let streams = match tokio::time::timeout(STREAM_WAIT, ready_rx).await {
            Ok(Ok(streams)) => streams,
            _ => {
                reader.abort();
                return Err(Error::invalid(format!(
                    "the client did not open the streams {expected:?} within {}s",
                    STREAM_WAIT.as_secs()
                )));
            }
        };
        let (tx, rx) = mpsc::channel::<Vec<u8>>(64);
        let status_json = protocol == "v4.channel.k8s.io";
        let writer = tokio::spawn(spdy::write_channels(rx, out, streams, status_json));
        let session = Session {
            input,
            tx,
            writer,
            reader,
        };
        self.serve_channels(kind, pending, path, session).await
    }

    /// The work of a session whose transport gives channel messages; a failure is
    /// reported on the status channel, then the writer finishes and the reader stops.
    async fn serve_channels(
        &self,
        kind: &str,
        pending: Pending,
        path: &str,
        mut s: Session,
    ) -> Result<()> {
        let (input, tx) = (&mut s.input, s.tx.clone());
        let result = match (kind, pending) {
            ("exec", Pending::Exec(r)) => self.stream_exec(r, input, tx).await,
            ("attach", Pending::Attach(r)) => self.stream_attach(r, input, tx).await,
            ("portforward", Pending::PortForward(r)) => {
                self.stream_port_forward(r, path, input, tx).await
            }
            _ => Err(Error::invalid(
                "the stream token is for another kind of stream",
            )),
        };
        if let Err(e) = &result {
            let _ = s.tx.send(failure(e)).await;
        }
        drop(s.tx);
        let _ = s.writer.await;
        s.reader.abort();
        result
    }

    /// The network namespace and id of the pod a port forwarding reaches.
    async fn forward_target(&self, r: &cri::PortForwardRequest) -> Result<(String, String)> {
        let sb = self.sandbox(&r.pod_sandbox_id).await?;
        let netns = sb
            .netns()
            .map(str::to_string)
            .ok_or_else(|| Error::invalid("port forwarding to a pod on the host's network"))?;
        Ok((netns, sb.record.id.clone()))
    }

    /// An exec over the channels: FIFOs between the WebSocket and the shim.
    async fn stream_exec(
        &self,
        r: cri::ExecRequest,
        input: &mut mpsc::Receiver<Vec<u8>>,
        tx: mpsc::Sender<Vec<u8>>,
    ) -> Result<()> {
        let c = self.find("container", &r.container_id).await?;
        let id = c.id.clone();
        let process = super::container::exec_process(&c, &r.cmd, r.tty)?;
        let exec_id = format!("exec-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        let dir = self.dir().join("exec").join(&exec_id);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Error::io("create exec directory", &dir, e))?;
        let result = self
            .exec_fifos(&id, &exec_id, &dir, process, &r, input, tx)
            .await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn exec_fifos(
        &self,
        id: &str,
        exec_id: &str,
        dir: &Path,
        process: Value,
        r: &cri::ExecRequest,
        input: &mut mpsc::Receiver<Vec<u8>>,
        tx: mpsc::Sender<Vec<u8>>,
    ) -> Result<()> {
        use tokio::net::unix::pipe;
        let fifo = |name: &str, wanted: bool| -> Result<Option<PathBuf>> {
            if !wanted {
                return Ok(None);
            }
            let p = dir.join(name);
            nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| Error::io("mkfifo", &p, e.into()))?;
            Ok(Some(p))
        };
        let stdin = fifo("stdin", r.stdin)?;
        let stdout = fifo("stdout", r.stdout)?;
        let stderr = fifo("stderr", r.stderr && !r.tty)?;
        let open_out = |p: &Option<PathBuf>| -> Result<Option<pipe::Receiver>> {
            p.as_ref()
                .map(|p| {
                    pipe::OpenOptions::new()
                        .open_receiver(p)
                        .map_err(|e| Error::io("open FIFO", p, e))
                })
                .transpose()
        };
        let out_rx = open_out(&stdout)?;
        let err_rx = open_out(&stderr)?;
        let in_tx = stdin
            .as_ref()
            .map(|p| {
                pipe::OpenOptions::new()
                    .read_write(true)
                    .open_sender(p)
                    .map_err(|e| Error::io("open FIFO", p, e))
            })
            .transpose()?;
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        let tasks = &self.p().tasks;
        let stdio = Stdio {
            stdin: path(&stdin),
            stdout: path(&stdout),
            stderr: path(&stderr),
            terminal: r.tty,
        };
        self.start_exec(id, exec_id, stdio, &process).await?;
        // Output: each stream to its channel until the process and its children close it.
        let pumps: Vec<_> = [(out_rx, 1u8), (err_rx, 2u8)]
            .into_iter()
            .filter_map(|(rx, ch)| rx.map(|rx| (rx, ch)))
            .map(|(rx, ch)| tokio::spawn(pump_out(rx, ch, tx.clone())))
            .collect();
        // Input: stdin and resizes, until the client closes or the process exits.
        let input = self.pump_input(input, in_tx, id, exec_id);
        let waited = tokio::select! {
            w = tasks.wait(NAMESPACE, id, exec_id) => w,
            () = input => tasks.wait(NAMESPACE, id, exec_id).await,
        };
        for p in pumps {
            let _ = tokio::time::timeout(Duration::from_secs(2), p).await;
        }
        let _ = tasks.delete_process(NAMESPACE, id, exec_id).await;
        let (code, _) = waited?;
        let status = if code == 0 {
            json!({"metadata": {}, "status": "Success"})
        } else {
            json!({
                "metadata": {},
                "status": "Failure",
                // As containerd words it (Go's %v of the command).
                "message": format!("command terminated with non-zero exit code: error executing command [{}], exit code {code}", r.cmd.join(" ")),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            })
        };
        let mut msg = vec![3u8];
        msg.extend(status.to_string().as_bytes());
        let _ = tx.send(msg).await;
        Ok(())
    }

    /// Port forwarding: each `port=` of the URL gets a data channel (2n) and an error
    /// channel (2n+1); the data goes to that port on the pod's localhost.
    async fn stream_port_forward(
        &self,
        r: cri::PortForwardRequest,
        path: &str,
        input: &mut mpsc::Receiver<Vec<u8>>,
        tx: mpsc::Sender<Vec<u8>>,
    ) -> Result<()> {
        let (netns, pod) = self.forward_target(&r).await?;
        let query = path.split_once('?').map(|(_, q)| q).unwrap_or_default();
        let mut ports: Vec<u16> = query
            .split('&')
            .filter_map(|kv| kv.strip_prefix("port="))
            .filter_map(|p| p.parse().ok())
            .collect();
        if ports.is_empty() {
            ports = r
                .port
                .iter()
                .filter_map(|p| u16::try_from(*p).ok())
                .collect();
        }
        if ports.is_empty() {
            return Err(Error::invalid("port forwarding: no port given"));
        }
        let mut conns = Vec::new();
        for (n, port) in ports.iter().enumerate() {
            for ch in [2 * n as u8, 2 * n as u8 + 1] {
                let mut msg = vec![ch];
                msg.extend(port.to_le_bytes());
                let _ = tx.send(msg).await;
            }
            let stream = connect_in(&netns, *port).await;
            match stream {
                Ok(s) => {
                    let (r_half, w_half) = s.into_split();
                    tokio::spawn(pump_out(r_half, 2 * n as u8, tx.clone()));
                    conns.push(Some(w_half));
                }
                Err(e) => {
                    let mut msg = vec![2 * n as u8 + 1];
                    msg.extend(forward_error(*port, &pod, &e).as_bytes());
                    let _ = tx.send(msg).await;
                    conns.push(None);
                }
            }
        }
        while let Some(msg) = input.recv().await {
            let Some((&ch, data)) = msg.split_first() else {
                continue;
            };
            // Data on a port's data channel; its error channel carries nothing inward.
            let n = usize::from(ch / 2);
            if ch % 2 != 0 || n >= conns.len() || data.is_empty() {
                continue;
            }
            if let Some(w) = conns[n].as_mut()
                && w.write_all(data).await.is_err()
            {
                conns[n] = None;
            }
        }
        Ok(())
    }

    /// An attach: the container's output, as it reaches its log from now on, to the
    /// output channels; the input channel into its stdin FIFO. It ends when the container
    /// exits or the client goes; with `stdin_once`, the container's stdin is closed then.
    async fn stream_attach(
        &self,
        r: cri::AttachRequest,
        input: &mut mpsc::Receiver<Vec<u8>>,
        tx: mpsc::Sender<Vec<u8>>,
    ) -> Result<()> {
        use tokio::net::unix::pipe;
        let c = self.find("container", &r.container_id).await?;
        let config: cri::ContainerConfig = decode_config(&c);
        let id = c.id.clone();
        let sandbox = c.labels.get(SANDBOX_LABEL).cloned().unwrap_or_default();
        let follow = match c.labels.get(LOG_LABEL) {
            Some(log) if r.stdout || r.stderr => {
                let (path, tx) = (PathBuf::from(log), tx.clone());
                let (stdout, stderr) = (r.stdout, r.stderr && !config.tty);
                Some(tokio::spawn(follow_log(path, stdout, stderr, tx)))
            }
            _ => None,
        };
        let stdin = if r.stdin {
            let path = self.stdin_fifo(&sandbox, &id);
            Some(
                pipe::OpenOptions::new()
                    .read_write(true)
                    .open_sender(&path)
                    .map_err(|e| Error::io("open FIFO", &path, e))?,
            )
        } else {
            None
        };
        let input = self.pump_input(input, stdin, &id, "");
        tokio::select! {
            _ = self.p().tasks.wait(NAMESPACE, &id, "") => {
                // The last lines reach the log just after the exit.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            () = input => {}
        }
        if let Some(f) = follow {
            f.abort();
        }
        if r.stdin && config.stdin_once {
            let _ = self.p().tasks.close_io(NAMESPACE, &id, "", true).await;
        }
        let mut msg = vec![3u8];
        msg.extend(
            json!({"metadata": {}, "status": "Success"})
                .to_string()
                .as_bytes(),
        );
        let _ = tx.send(msg).await;
        Ok(())
    }

    /// The client's messages until it closes: stdin (channel 0) into `stdin`, terminal
    /// resizes (4) to the process `exec_id` ("" for the container's own), the close of
    /// stdin (255, 0).
    async fn pump_input(
        &self,
        input: &mut mpsc::Receiver<Vec<u8>>,
        mut stdin: Option<tokio::net::unix::pipe::Sender>,
        id: &str,
        exec_id: &str,
    ) {
        while let Some(msg) = input.recv().await {
            let Some((&ch, data)) = msg.split_first() else {
                continue;
            };
            match ch {
                0 => {
                    if let Some(w) = stdin.as_mut()
                        && w.write_all(data).await.is_err()
                    {
                        stdin = None;
                    }
                }
                4 => {
                    if let Ok(size) = serde_json::from_slice::<Value>(data) {
                        let w = size["Width"].as_u64().unwrap_or(0) as u32;
                        let h = size["Height"].as_u64().unwrap_or(0) as u32;
                        let _ = self
                            .p()
                            .tasks
                            .resize_pty(NAMESPACE, id, exec_id, w, h)
                            .await;
                    }
                }
                255 if data.first() == Some(&0) => stdin = None,
                _ => {}
            }
        }
    }

    async fn observe_state(&self, c: &Container) -> cri::ContainerState {
        match self.p().tasks.state(NAMESPACE, &c.id, "").await {
            Ok(s) if s.status == crate::tasks::ProcessStatus::Running => {
                cri::ContainerState::ContainerRunning
            }
            _ => cri::ContainerState::ContainerExited,
        }
    }
}

/// A TCP connection to `port` on the loopback of the network namespace at `netns`: the
/// socket is made in a thread that entered the namespace, and keeps it.
async fn connect_in(netns: &str, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let netns = netns.to_string();
    let std_stream = tokio::task::spawn_blocking(move || {
        super::sandbox::in_netns(&netns, || {
            std::net::TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(5),
            )
        })
    })
    .await
    .map_err(std::io::Error::other)??;
    std_stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(std_stream)
}

/// What a port forwarding's error channel or stream says when the pod's port is not
/// reachable.
fn forward_error(port: u16, pod: &str, e: &std::io::Error) -> String {
    format!("failed to connect to localhost:{port} in pod {pod}: {e}")
}

/// A failed session's status message (channel 3).
fn failure(e: &Error) -> Vec<u8> {
    let status = json!({"metadata": {}, "status": "Failure", "message": e.to_string()});
    let mut msg = vec![3u8];
    msg.extend(status.to_string().as_bytes());
    msg
}

/// The client's WebSocket messages onto `tx`; the close of a channel (255) only where
/// the protocol has it (v5).
async fn read_websocket(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    tx: mpsc::Sender<Vec<u8>>,
    v5: bool,
) {
    while let Ok(Some(msg)) = read_message(&mut rd).await {
        if msg.first() == Some(&255) && !v5 {
            continue;
        }
        if tx.send(msg).await.is_err() {
            return;
        }
    }
}

/// Port forwarding over SPDY: each `data` stream is a connection to its `port` on the
/// pod's loopback; the `error` stream of the same `requestid` carries a failure.
async fn spdy_port_forward(
    mut frames: spdy::FrameReader<tokio::net::tcp::OwnedReadHalf>,
    out: mpsc::Sender<spdy::Out>,
    netns: String,
    pod: String,
) {
    let mut errors: HashMap<String, u32> = HashMap::new();
    let mut inputs: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
    while let Ok(Some(frame)) = frames.next().await {
        match frame {
            spdy::Frame::Syn {
                stream, headers, ..
            } => {
                let field = |name| spdy::Frame::header(&headers, name).to_string();
                let (kind, request) = (field("streamtype"), field("requestid"));
                match kind.as_str() {
                    "error" => {
                        errors.insert(request, stream);
                    }
                    "data" => {
                        let (tx, rx) = mpsc::channel(64);
                        inputs.insert(stream, tx);
                        let target = Forward {
                            netns: netns.clone(),
                            pod: pod.clone(),
                            port: field("port"),
                            stream,
                            error: errors.get(&request).copied(),
                        };
                        tokio::spawn(target.run(rx, out.clone()));
                    }
                    _ => {
                        let _ = out
                            .send(spdy::Out::Reset(stream, spdy::REFUSED_STREAM))
                            .await;
                        continue;
                    }
                }
                let _ = out.send(spdy::Out::Reply(stream)).await;
            }
            spdy::Frame::Data { stream, fin, data } => {
                if let Some(tx) = inputs.get(&stream)
                    && !data.is_empty()
                    && tx.send(data).await.is_err()
                {
                    inputs.remove(&stream);
                }
                if fin {
                    inputs.remove(&stream);
                }
            }
            spdy::Frame::Reset { stream } => {
                inputs.remove(&stream);
            }
            spdy::Frame::Ping(id) => {
                let _ = out.send(spdy::Out::Ping(id)).await;
            }
            spdy::Frame::GoAway => break,
            spdy::Frame::Other => {}
        }
    }
}

/// One forwarded connection of a SPDY session.
struct Forward {
    netns: String,
    pod: String,
    port: String,
    stream: u32,
    error: Option<u32>,
}

impl Forward {
    /// Connects, then copies both ways until both ends are done; a failure goes to the
    /// error stream. Each stream ends with FIN.
    async fn run(self, mut input: mpsc::Receiver<Vec<u8>>, out: mpsc::Sender<spdy::Out>) {
        let fin = |stream: u32, data: Vec<u8>| spdy::Out::Data {
            stream,
            data,
            fin: true,
        };
        let conn = match self.port.parse::<u16>() {
            Ok(port) => connect_in(&self.netns, port)
                .await
                .map_err(|e| forward_error(port, &self.pod, &e)),
            Err(_) => Err(format!("unable to parse {:?} as a port", self.port)),
        };
        let conn = match conn {
            Ok(conn) => conn,
            Err(message) => {
                if let Some(e) = self.error {
                    let _ = out.send(fin(e, message.into_bytes())).await;
                }
                let _ = out.send(fin(self.stream, Vec::new())).await;
                return;
            }
        };
        let (mut rd, mut wr) = conn.into_split();
        let inbound = async {
            while let Some(data) = input.recv().await {
                if wr.write_all(&data).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        };
        let outbound = async {
            let mut buf = vec![0u8; 32 << 10];
            while let Ok(n @ 1..) = rd.read(&mut buf).await {
                let data = spdy::Out::Data {
                    stream: self.stream,
                    data: buf[..n].to_vec(),
                    fin: false,
                };
                if out.send(data).await.is_err() {
                    return;
                }
            }
            let _ = out.send(fin(self.stream, Vec::new())).await;
        };
        tokio::join!(inbound, outbound);
        if let Some(e) = self.error {
            let _ = out.send(fin(e, Vec::new())).await;
        }
    }
}

/// Follows a CRI log from its current end: each record's content to the channel of its
/// stream (a full record with its newline), until aborted.
async fn follow_log(path: PathBuf, stdout: bool, stderr: bool, tx: mpsc::Sender<Vec<u8>>) {
    use tokio::io::AsyncSeekExt;
    let Ok(mut f) = tokio::fs::File::open(&path).await else {
        return;
    };
    if f.seek(std::io::SeekFrom::End(0)).await.is_err() {
        return;
    }
    let mut partial = Vec::new();
    let mut buf = vec![0u8; 32 << 10];
    loop {
        // A rotated log (a new file at the path): follow the new one from its start.
        if let (Ok(now), Ok(open)) = (tokio::fs::metadata(&path).await, f.metadata().await) {
            use std::os::unix::fs::MetadataExt;
            if now.ino() != open.ino() {
                match tokio::fs::File::open(&path).await {
                    Ok(new) => {
                        f = new;
                        partial.clear();
                    }
                    Err(_) => return,
                }
            }
        }
        let n = match f.read(&mut buf).await {
            Ok(n) => n,
            Err(_) => return,
        };
        if n == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        partial.extend_from_slice(&buf[..n]);
        while let Some(end) = partial.iter().position(|b| *b == b'\n') {
            let record: Vec<u8> = partial.drain(..=end).collect();
            let text = String::from_utf8_lossy(&record[..record.len() - 1]).into_owned();
            // <time> <stream> <P|F> <content>
            let mut parts = text.splitn(4, ' ');
            let (_, stream, tag) = (parts.next(), parts.next(), parts.next());
            let content = parts.next().unwrap_or_default();
            let ch = match stream {
                Some("stdout") if stdout => 1u8,
                Some("stderr") if stderr => 2u8,
                _ => continue,
            };
            let mut msg = vec![ch];
            msg.extend(content.as_bytes());
            if tag == Some("F") {
                msg.push(b'\n');
            }
            if tx.send(msg).await.is_err() {
                return;
            }
        }
    }
}

/// Copies `r` to channel `ch` until its end.
async fn pump_out(mut r: impl AsyncRead + Unpin, ch: u8, tx: mpsc::Sender<Vec<u8>>) {
    let mut buf = vec![0u8; 32 << 10];
    loop {
        match r.read(&mut buf[1..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                buf[0] = ch;
                if tx.send(buf[..=n].to_vec()).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Writes each message as one binary frame, then a close frame.
async fn write_frames(mut w: impl AsyncWrite + Unpin, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(msg) = rx.recv().await {
        if w.write_all(&frame(2, &msg)).await.is_err() {
            return;
        }
    }
    let _ = w.write_all(&frame(8, &1000u16.to_be_bytes())).await;
    let _ = w.shutdown().await;
}

/// A server frame (final, unmasked).
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= 0xffff => {
            f.push(126);
            f.extend((n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend((n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// The next whole data message from the client (fragments joined, pings skipped); None
/// at a close frame or the end of the connection.
async fn read_message(r: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Option<Vec<u8>>> {
    let mut message = Vec::new();
    loop {
        let mut h = [0u8; 2];
        if r.read_exact(&mut h).await.is_err() {
            return Ok(None);
        }
        let fin = h[0] & 0x80 != 0;
        let opcode = h[0] & 0x0f;
        let masked = h[1] & 0x80 != 0;
        let mut len = u64::from(h[1] & 0x7f);
        if len == 126 {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).await?;
            len = u64::from(u16::from_be_bytes(b));
        } else if len == 127 {
            let mut b = [0u8; 8];
            r.read_exact(&mut b).await?;
            len = u64::from_be_bytes(b);
        }
        if len > MAX_MESSAGE {
            return Err(std::io::Error::other("WebSocket message too large"));
        }
        let mut mask = [0u8; 4];
        if masked {
            r.read_exact(&mut mask).await?;
        }
        let mut payload = vec![0u8; len as usize];
        r.read_exact(&mut payload).await?;
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        match opcode {
            8 => return Ok(None),
            9 | 10 => continue,
            _ => {
                message.extend(payload);
                if fin {
                    return Ok(Some(message));
                }
            }
        }
    }
}

/// The request head, up to the blank line.
async fn read_head(conn: &mut TcpStream) -> Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Err(Error::invalid("streaming request head too large"));
        }
        let n = conn
            .read(&mut byte)
            .await
            .map_err(|e| Error::Internal(format!("read stream request: {e}")))?;
        if n == 0 {
            return Err(Error::invalid(
                "streaming connection closed before its request",
            ));
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

struct Head {
    path: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn parse(text: &str) -> Result<Head> {
        let mut lines = text.split("\r\n");
        let first = lines.next().unwrap_or_default();
        let mut words = first.split_whitespace();
        let (method, path) = (
            words.next().unwrap_or_default(),
            words.next().unwrap_or_default(),
        );
        if method != "GET" && method != "POST" {
            return Err(Error::invalid(format!("streaming request {first:?}")));
        }
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Ok(Head {
            path: path.to_string(),
            headers,
        })
    }

    /// Every value of a header given once or more, each list split at its commas.
    fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    }
}

async fn reply(conn: &mut TcpStream, status: &str, text: &str) -> Result<()> {
    let body = format!("{text}\n");
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(answer.as_bytes())
        .await
        .map_err(|e| Error::Internal(format!("stream reply: {e}")))?;
    Err(Error::invalid(format!("streaming request refused: {text}")))
}

/// `Sec-WebSocket-Accept` for a key: base64(SHA-1(key + the RFC's GUID)).
fn websocket_accept(key: &str) -> String {
    use base64::Engine as _;
    let digest = sha1(format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// SHA-1 (FIPS 180-4), for the WebSocket handshake only (no security rests on it).
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend(bits.to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_of_rfc_6455() {
        // The example of RFC 6455 section 1.3.
        assert_eq!(
            websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            hex::encode(sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }

    #[test]
    fn frames_of_every_length() {
        assert_eq!(frame(2, b"hi"), vec![0x82, 2, b'h', b'i']);
        assert_eq!(&frame(2, &[0; 200])[..4], &[0x82, 126, 0, 200]);
        assert_eq!(&frame(2, &vec![0; 70_000])[..2], &[0x82, 127]);
    }
}
