//! The client side of containerd's Transfer protocol: streams opened through the Streaming
//! service carry progress, credential requests and archive data; a Transfer call names them.
//! Pulls, pushes, saves and loads are transfers between a registry, the image store and a
//! stream.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use berth_proto::containerd::services::streaming::v1::StreamInit;
use berth_proto::containerd::services::streaming::v1::streaming_client::StreamingClient;
use berth_proto::containerd::services::transfer::v1 as pb;
use berth_proto::containerd::services::transfer::v1::transfer_client::TransferClient;
use berth_proto::containerd::types::Platform;
use berth_proto::containerd::types::transfer as tt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{Client, status};
use crate::credentials;

/// Packs a message as containerd's typeurl does.
pub fn any<M: prost::Name>(m: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: M::full_name(),
        value: m.encode_to_vec(),
    }
}

/// Unpacks `a` if it holds an `M`.
pub fn unpack<M: prost::Name + Default>(a: &prost_types::Any) -> Option<M> {
    let name = a.type_url.rsplit('/').next().unwrap_or(&a.type_url);
    (name == M::full_name())
        .then(|| M::decode(a.value.as_slice()).ok())
        .flatten()
}

/// A stream registered with the daemon.
pub struct Stream {
    pub id: String,
    pub tx: mpsc::Sender<prost_types::Any>,
    pub rx: tonic::Streaming<prost_types::Any>,
}

/// Opens a stream and waits until the daemon has registered it.
pub async fn open(c: &Client) -> anyhow::Result<Stream> {
    let id = uuid::Uuid::new_v4().to_string();
    let (tx, rx) = mpsc::channel(16);
    tx.send(any(&StreamInit { id: id.clone() }))
        .await
        .context("queue StreamInit")?;
    let mut resp = StreamingClient::new(c.channel.clone())
        .stream(c.req(ReceiverStream::new(rx)))
        .await
        .map_err(status)?
        .into_inner();
    resp.message()
        .await
        .map_err(status)?
        .context("stream closed before it was registered")?;
    Ok(Stream { id, tx, rx: resp })
}

/// Looks up credentials for a registry host.
pub type CredentialLookup = Box<dyn Fn(&str) -> Option<(String, String)> + Send + Sync>;

/// Answers the daemon's credential requests until the stream ends.
pub fn answer_auth(mut s: Stream, lookup: CredentialLookup) {
    tokio::spawn(async move {
        while let Ok(Some(msg)) = s.rx.message().await {
            let Some(req) = unpack::<tt::AuthRequest>(&msg) else {
                continue;
            };
            let resp = match lookup(&req.host) {
                Some((user, secret)) => tt::AuthResponse {
                    auth_type: tt::AuthType::Credentials as i32,
                    secret,
                    username: user,
                    expire_at: None,
                },
                None => tt::AuthResponse::default(),
            };
            if s.tx.send(any(&resp)).await.is_err() {
                break;
            }
        }
    });
}

/// Shows transfer progress: bars on a terminal, one line per state change otherwise.
pub fn show_progress(s: Stream) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        // Own the whole stream (its sender too): dropping the sender would end the stream.
        let mut s = s;
        let tty = std::io::stderr().is_terminal();
        let multi = MultiProgress::new();
        let style = ProgressStyle::with_template(
            "{prefix:.bold} {msg:<12} [{bar:30}] {bytes}/{total_bytes}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let mut bars: HashMap<String, ProgressBar> = HashMap::new();
        let mut last_event: HashMap<String, String> = HashMap::new();
        let mut saved: Vec<String> = Vec::new();
        while let Ok(Some(msg)) = s.rx.message().await {
            let Some(p) = unpack::<tt::Progress>(&msg) else {
                continue;
            };
            if p.event == "saved" && !saved.contains(&p.name) {
                saved.push(p.name.clone());
            }
            let label = p
                .desc
                .as_ref()
                .map(|d| short(&d.digest))
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| p.name.clone());
            if tty {
                let bar = bars.entry(p.name.clone()).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new(0));
                    b.set_style(style.clone());
                    b.set_prefix(label.clone());
                    b
                });
                if p.total > 0 {
                    bar.set_length(p.total as u64);
                }
                bar.set_position(p.progress.max(0) as u64);
                bar.set_message(p.event.clone());
                if matches!(
                    p.event.as_str(),
                    "complete" | "done" | "exists" | "already exists"
                ) {
                    bar.finish();
                }
            } else if last_event.get(&p.name) != Some(&p.event) {
                last_event.insert(p.name.clone(), p.event.clone());
                if p.total > 0 {
                    eprintln!("{label}: {} ({}/{} bytes)", p.event, p.progress, p.total);
                } else {
                    eprintln!("{label}: {}", p.event);
                }
            }
        }
        for b in bars.values() {
            b.finish();
        }
        saved
    })
}

fn short(digest: &str) -> String {
    digest
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect()
}

/// Where an archive comes from or goes to: a file, or the CLI's stdin / stdout (`-`).
pub enum Endpoint {
    File(std::path::PathBuf),
    Std,
}

impl Endpoint {
    fn name(&self) -> String {
        match self {
            Endpoint::File(p) => p.display().to_string(),
            Endpoint::Std => "-".to_string(),
        }
    }
}

/// Sends a file (or stdin) as `Data` messages within the receiver's windows, then closes
/// the stream.
pub fn send_file(mut s: Stream, from: Endpoint) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        use tokio::io::{AsyncRead, AsyncReadExt};
        let what = from.name();
        let mut f: Box<dyn AsyncRead + Unpin + Send> = match &from {
            Endpoint::File(path) => Box::new(
                tokio::fs::File::open(path)
                    .await
                    .with_context(|| format!("open {what}"))?,
            ),
            Endpoint::Std => Box::new(tokio::io::stdin()),
        };
        let mut window: i64 = 0;
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            while window <= 0 {
                match s.rx.message().await.map_err(status)? {
                    Some(m) => {
                        if let Some(u) = unpack::<tt::WindowUpdate>(&m) {
                            window += i64::from(u.update);
                        }
                    }
                    None => return Ok(()),
                }
            }
            let max = usize::try_from(window).unwrap_or(buf.len()).min(buf.len());
            let n = f
                .read(&mut buf[..max])
                .await
                .with_context(|| format!("read {what}"))?;
            if n == 0 {
                // End of data: close only our sending side, and let the daemon end the
                // stream once it has everything. Dropping the whole stream here would reset
                // it and could lose the last messages still in flight.
                drop(s.tx);
                while let Ok(Some(_)) = s.rx.message().await {}
                return Ok(());
            }
            window -= n as i64;
            s.tx.send(any(&tt::Data {
                data: buf[..n].to_vec(),
            }))
            .await
            .context("send archive data")?;
        }
    })
}

/// Receives `Data` messages into a file (or stdout), granting windows as containerd's
/// receiver does.
pub fn receive_file(mut s: Stream, to: Endpoint) -> tokio::task::JoinHandle<anyhow::Result<u64>> {
    tokio::spawn(async move {
        use tokio::io::{AsyncWrite, AsyncWriteExt};
        const WINDOW: i32 = 64 * 1024;
        let what = to.name();
        let mut file = None;
        let mut f: Box<dyn AsyncWrite + Unpin + Send> = match &to {
            Endpoint::File(path) => {
                let created = tokio::fs::File::create(path)
                    .await
                    .with_context(|| format!("create {what}"))?;
                file = Some(created.try_clone().await?);
                Box::new(created)
            }
            Endpoint::Std => Box::new(tokio::io::stdout()),
        };
        let mut window: i64 = 0;
        let mut total = 0u64;
        loop {
            if window < i64::from(WINDOW)
                && s.tx
                    .send(any(&tt::WindowUpdate { update: WINDOW }))
                    .await
                    .is_ok()
            {
                window += i64::from(WINDOW);
            }
            match tokio::time::timeout(Duration::from_secs(600), s.rx.message()).await {
                Ok(Ok(Some(m))) => {
                    if let Some(d) = unpack::<tt::Data>(&m) {
                        window -= d.data.len() as i64;
                        total += d.data.len() as u64;
                        f.write_all(&d.data)
                            .await
                            .with_context(|| format!("write {what}"))?;
                    }
                }
                Ok(Ok(None)) => break,
                Ok(Err(e)) => return Err(status(e)),
                Err(_) => anyhow::bail!("no archive data for 10 minutes"),
            }
        }
        f.flush().await?;
        if let Some(file) = file {
            file.sync_all().await?;
        }
        Ok(total)
    })
}

/// A platform as `os/arch[/variant]` names it.
pub fn platform(p: &str) -> anyhow::Result<Platform> {
    let mut parts = p.split('/');
    let os = parts.next().filter(|s| !s.is_empty());
    let arch = parts.next().filter(|s| !s.is_empty());
    let (Some(os), Some(arch)) = (os, arch) else {
        anyhow::bail!("invalid platform {p:?}: want os/arch[/variant], e.g. linux/amd64");
    };
    Ok(Platform {
        os: os.to_string(),
        architecture: arch.to_string(),
        variant: parts.next().unwrap_or_default().to_string(),
        ..Default::default()
    })
}

/// How the daemon reaches a registry: credentials through `auth_stream`, plain HTTP when
/// asked.
pub fn resolver(auth_stream: String, plain_http: bool) -> tt::RegistryResolver {
    tt::RegistryResolver {
        auth_stream,
        default_scheme: if plain_http {
            "http".into()
        } else {
            String::new()
        },
        ..Default::default()
    }
}

/// Runs one transfer from `source` to `destination`, its progress shown here; returns the
/// names the progress reported saved.
pub async fn run_transfer(
    c: &Client,
    source: prost_types::Any,
    destination: prost_types::Any,
) -> anyhow::Result<Vec<String>> {
    let progress = open(c).await?;
    let progress_id = progress.id.clone();
    let shown = show_progress(progress);
    TransferClient::new(c.channel.clone())
        .transfer(c.req(pb::TransferRequest {
            source: Some(source),
            destination: Some(destination),
            options: Some(pb::TransferOptions {
                progress_stream: progress_id,
            }),
        }))
        .await
        .map_err(status)?;
    // What the progress called "saved" (an import's images, by name).
    Ok(shown.await.unwrap_or_default())
}

/// Opens a stream that answers the daemon's credential requests from our credential store;
/// returns its id.
pub async fn auth_stream(c: &Client) -> anyhow::Result<String> {
    let auth = open(c).await?;
    let id = auth.id.clone();
    let store = credentials::Store::default_location()?;
    answer_auth(
        auth,
        Box::new(move |host| store.lookup(host).ok().flatten()),
    );
    Ok(id)
}

/// Fetches an image's content; with `record`, also creates or updates its image record.
pub async fn fetch(
    c: &Client,
    reference: String,
    platform_arg: Option<String>,
    all_platforms: bool,
    plain_http: bool,
    record: bool,
) -> anyhow::Result<()> {
    let source = tt::OciRegistry {
        reference: reference.clone(),
        resolver: Some(resolver(auth_stream(c).await?, plain_http)),
    };
    let destination = tt::ImageStore {
        // No name: the content only.
        name: if record { reference } else { String::new() },
        platforms: platform_arg
            .as_deref()
            .map(platform)
            .transpose()?
            .into_iter()
            .collect(),
        all_metadata: all_platforms,
        ..Default::default()
    };
    run_transfer(c, any(&source), any(&destination))
        .await
        .map(drop)
}

/// Loads an image archive (OCI or docker) through the Transfer service, unpacked into the
/// default snapshotter so that it runs at once; entries named only by a tag (or not at all)
/// take `base_name`. Returns the names of the images it stored.
pub async fn load_archive(
    c: &Client,
    from: Endpoint,
    base_name: String,
) -> anyhow::Result<Vec<String>> {
    let stream = open(c).await?;
    let stream_id = stream.id.clone();
    let sent = send_file(stream, from);
    let source = tt::ImageImportStream {
        stream: stream_id,
        media_type: "application/x-tar".into(),
        ..Default::default()
    };
    let destination = tt::ImageStore {
        name: base_name,
        unpacks: vec![tt::UnpackConfiguration::default()],
        ..Default::default()
    };
    let result = run_transfer(c, any(&source), any(&destination)).await;
    let sent = sent.await.map_err(|e| anyhow::anyhow!("send task: {e}"))?;
    let saved = result?;
    sent?;
    // "archive" is the upload's own progress.
    Ok(saved.into_iter().filter(|n| n != "archive").collect())
}
