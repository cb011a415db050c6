//! `containerd.services.transfer.v1.Transfer`: pull (registry → image store), push (image
//! store → registry), import (archive stream → image store) and export (image store →
//! archive stream), each one call of the core's [`crate::transfer::Transfers`]. What stays
//! here is the wire: progress, credentials and archive bytes travel on streams the client
//! opened through the Streaming service and names in the request.

use std::path::Path;

use berth_proto::containerd::services::transfer::v1 as pb;
use berth_proto::containerd::services::transfer::v1::transfer_server::Transfer;
use berth_proto::containerd::types::Descriptor as WireDescriptor;
use berth_proto::containerd::types::Platform;
use berth_proto::containerd::types::transfer as tt;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::{Convert, Services, event_any, lease, namespace_required};
use crate::api::status::OrStatus;
use crate::error::{Error, Result};
use crate::registry::auth::Credentials;
use crate::registry::{Progress, Reference};
use crate::streams::Stream;
use crate::transfer::{ImportRequest, PullRequest, PushRequest, Transfers, UnpackTarget};
use crate::types::AnyValue;

/// The flow-control window the daemon grants when it receives archive bytes.
const WINDOW: i32 = 64 * 1024;
/// The most bytes per `Data` message the daemon sends.
const MAX_DATA: usize = 32 * 1024;

fn decode<M: prost::Name + Default>(a: &prost_types::Any, role: &str) -> Result<M> {
    M::decode(a.value.as_slice())
        .map_err(|e| Error::invalid(format!("transfer {role} {}: {e}", a.type_url)))
}

fn name_of(a: &prost_types::Any) -> &str {
    a.type_url.rsplit('/').next().unwrap_or(&a.type_url)
}

fn platform_string(p: &Platform) -> String {
    if p.variant.is_empty() {
        format!("{}/{}", p.os, p.architecture)
    } else {
        format!("{}/{}/{}", p.os, p.architecture, p.variant)
    }
}

/// A platform the client set (os and architecture both given), as a string.
fn given_platform(p: Option<&Platform>) -> Option<String> {
    p.filter(|p| !p.os.is_empty() && !p.architecture.is_empty())
        .map(platform_string)
}

fn plain_http(resolver: Option<&tt::RegistryResolver>) -> bool {
    resolver.is_some_and(|r| r.default_scheme == "http")
}

pub struct TransferApi(pub Services);

impl TransferApi {
    fn core(&self) -> &Transfers {
        &self.0.transfers
    }

    async fn stream(&self, ns: &str, id: &str) -> Result<Option<Stream>> {
        if id.is_empty() {
            return Ok(None);
        }
        self.0.streams.take(ns, id).await.map(Some)
    }

    /// Forwards pull/push progress to the client's progress stream until the sender closes.
    fn forward_progress(
        progress: Option<Stream>,
    ) -> (mpsc::Sender<Progress>, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Progress>(64);
        let task = tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                let Some(s) = progress.as_ref() else { continue };
                let msg = tt::Progress {
                    event: p.state.as_str().to_string(),
                    name: p.digest.clone(),
                    parents: Vec::new(),
                    progress: p.offset,
                    total: p.total,
                    desc: Some(WireDescriptor {
                        media_type: p.media_type,
                        digest: p.digest,
                        size: p.total,
                        annotations: Default::default(),
                    }),
                };
                if s.send(event_any(&msg)).await.is_err() {
                    break;
                }
            }
            // Dropping the stream ends it for the client.
        });
        (tx, task)
    }

    /// Asks the client, over its auth stream, for credentials to the registry of
    /// `reference` (containerd's transfer auth dialogue).
    async fn credentials(
        &self,
        ns: &str,
        resolver: Option<&tt::RegistryResolver>,
        reference: &str,
    ) -> Result<Option<Credentials>> {
        let Some(r) = resolver else { return Ok(None) };
        let Some(mut s) = self.stream(ns, &r.auth_stream).await? else {
            return Ok(None);
        };
        let host = Reference::parse(reference)?.domain().to_string();
        s.send(event_any(&tt::AuthRequest {
            host: host.clone(),
            reference: reference.to_string(),
            wwwauthenticate: Vec::new(),
        }))
        .await?;
        let answer = tokio::time::timeout(std::time::Duration::from_secs(30), s.recv())
            .await
            .map_err(|_| {
                Error::Unavailable(format!("no credentials answer for {host} within 30s"))
            })?;
        let Some(answer) = answer else {
            return Ok(None);
        };
        let resp = tt::AuthResponse::decode(answer.value.as_slice())
            .map_err(|e| Error::invalid(format!("auth response: {e}")))?;
        if resp.auth_type != tt::AuthType::Credentials as i32 || resp.username.is_empty() {
            return Ok(None);
        }
        Ok(Some(Credentials {
            username: resp.username,
            password: resp.secret,
        }))
    }

    async fn pull(
        &self,
        ns: &str,
        lease: Option<String>,
        src: tt::OciRegistry,
        dst: tt::ImageStore,
        progress: Option<Stream>,
    ) -> Result<()> {
        let credentials = self
            .credentials(ns, src.resolver.as_ref(), &src.reference)
            .await?;
        // Unpacked as the first unpack configuration says; with none, into the default
        // snapshotter for the pulled platform (berth's `pull` unpacks by default).
        let unpack = dst.unpacks.first();
        let req = PullRequest {
            names: std::iter::once(dst.name.clone())
                .chain(dst.extra_references.iter().map(|r| r.name.clone()))
                .collect(),
            lease,
            platform: dst.platforms.first().map(platform_string),
            all_platforms: dst.all_metadata,
            plain_http: plain_http(src.resolver.as_ref()),
            snapshotter: unpack
                .map(|u| u.snapshotter.clone())
                .filter(|s| !s.is_empty()),
            unpack_platform: given_platform(unpack.and_then(|u| u.platform.as_ref())),
            credentials,
            reference: src.reference,
        };
        let (tx, task) = Self::forward_progress(progress);
        let result = self.core().pull(ns, req, tx).await;
        let _ = task.await;
        result
    }

    async fn push(
        &self,
        ns: &str,
        src: tt::ImageStore,
        dst: tt::OciRegistry,
        progress: Option<Stream>,
    ) -> Result<()> {
        let credentials = self
            .credentials(ns, dst.resolver.as_ref(), &dst.reference)
            .await?;
        let req = PushRequest {
            name: src.name,
            platform: src.platforms.first().map(platform_string),
            plain_http: plain_http(dst.resolver.as_ref()),
            credentials,
            reference: dst.reference,
        };
        let (tx, task) = Self::forward_progress(progress);
        let result = self.core().push(ns, req, tx).await;
        let _ = task.await;
        result
    }

    async fn import(
        &self,
        ns: &str,
        lease: Option<String>,
        src: tt::ImageImportStream,
        dst: tt::ImageStore,
        progress: Option<Stream>,
    ) -> Result<()> {
        let data = self
            .stream(ns, &src.stream)
            .await?
            .ok_or_else(|| Error::invalid("import needs a data stream"))?;
        let file = self.core().temp_file("import")?;
        receive_file(data, file.path()).await?;
        send_progress(&progress, "archive", None).await;
        let req = ImportRequest {
            base_name: (!dst.name.is_empty()).then(|| dst.name.clone()),
            platform: dst.platforms.first().map(platform_string),
            labels: dst.labels.clone(),
            lease,
            unpacks: dst
                .unpacks
                .iter()
                .map(|u| UnpackTarget {
                    snapshotter: u.snapshotter.clone(),
                    platform: given_platform(u.platform.as_ref()),
                })
                .collect(),
        };
        let images = self.core().import(ns, file.path(), req).await?;
        for image in images {
            let desc = image.target.map(Convert::convert);
            send_progress(&progress, &image.name, desc).await;
        }
        Ok(())
    }

    async fn export(
        &self,
        ns: &str,
        src: tt::ImageStore,
        dst: tt::ImageExportStream,
    ) -> Result<()> {
        let data = self
            .stream(ns, &dst.stream)
            .await?
            .ok_or_else(|| Error::invalid("export needs a data stream"))?;
        let names: Vec<String> = std::iter::once(src.name.clone())
            .chain(src.extra_references.iter().map(|r| r.name.clone()))
            .collect();
        let platform = if dst.all_platforms {
            None
        } else {
            dst.platforms
                .first()
                .or(src.platforms.first())
                .map(platform_string)
        };
        let file = self.core().temp_file("export")?;
        self.core()
            .export(ns, &names, file.path(), platform)
            .await?;
        send_file(data, file.path()).await
    }
}

/// A "saved" progress message (an import's archive received, or one image stored).
async fn send_progress(progress: &Option<Stream>, name: &str, desc: Option<WireDescriptor>) {
    if let Some(p) = progress {
        let msg = tt::Progress {
            event: "saved".into(),
            name: name.to_string(),
            desc,
            ..Default::default()
        };
        let _ = p.send(event_any(&msg)).await;
    }
}

/// Receives `Data` messages into `path`, granting the sender windows as containerd does;
/// the sender closing the stream is the end of the data.
async fn receive_file(mut s: Stream, path: &Path) -> Result<()> {
    let mut f = tokio::fs::File::create(path)
        .await
        .map_err(|e| Error::io("create", path, e))?;
    let mut window: i64 = 0;
    loop {
        if window < i64::from(WINDOW)
            && s.send(event_any(&tt::WindowUpdate { update: WINDOW }))
                .await
                .is_ok()
        {
            window += i64::from(WINDOW);
        }
        match s.recv().await {
            Some(msg) => {
                if let Ok(d) = data_of(&msg) {
                    window -= d.len() as i64;
                    f.write_all(&d)
                        .await
                        .map_err(|e| Error::io("write", path, e))?;
                }
            }
            None => break,
        }
    }
    f.sync_all()
        .await
        .map_err(|e| Error::io("fsync", path, e))?;
    Ok(())
}

fn data_of(msg: &AnyValue) -> Result<Vec<u8>> {
    if !msg.type_url.ends_with("containerd.types.transfer.Data") {
        return Err(Error::invalid(format!(
            "unexpected stream message {}",
            msg.type_url
        )));
    }
    tt::Data::decode(msg.value.as_slice())
        .map(|d| d.data)
        .map_err(|e| Error::invalid(format!("decode Data: {e}")))
}

/// Sends `path` as `Data` messages within the windows the client grants, then ends the
/// stream.
async fn send_file(mut s: Stream, path: &Path) -> Result<()> {
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::io("open", path, e))?;
    let mut window: i64 = 0;
    let mut buf = vec![0u8; MAX_DATA];
    loop {
        while window <= 0 {
            match s.recv().await {
                Some(m)
                    if m.type_url
                        .ends_with("containerd.types.transfer.WindowUpdate") =>
                {
                    if let Ok(u) = tt::WindowUpdate::decode(m.value.as_slice()) {
                        window += i64::from(u.update);
                    }
                }
                Some(_) => {}
                None => {
                    return Err(Error::Unavailable(
                        "export stream closed by the client".into(),
                    ));
                }
            }
        }
        let max = usize::try_from(window).unwrap_or(MAX_DATA).min(MAX_DATA);
        let n = f
            .read(&mut buf[..max])
            .await
            .map_err(|e| Error::io("read", path, e))?;
        if n == 0 {
            return Ok(()); // dropping the stream ends it: end of data
        }
        window -= n as i64;
        s.send(event_any(&tt::Data {
            data: buf[..n].to_vec(),
        }))
        .await?;
    }
}

#[tonic::async_trait]
impl Transfer for TransferApi {
    async fn transfer(&self, req: Request<pb::TransferRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_required(req.metadata()).or_status()?;
        let lease = lease(req.metadata());
        let req = req.into_inner();
        let src = req
            .source
            .ok_or_else(|| Error::invalid("transfer source must be set"))
            .or_status()?;
        let dst = req
            .destination
            .ok_or_else(|| Error::invalid("transfer destination must be set"))
            .or_status()?;
        let progress_id = req.options.map(|o| o.progress_stream).unwrap_or_default();
        let progress = self.stream(&ns, &progress_id).await.or_status()?;
        let (s, d) = (name_of(&src).to_string(), name_of(&dst).to_string());
        let result = match (s.as_str(), d.as_str()) {
            ("containerd.types.transfer.OCIRegistry", "containerd.types.transfer.ImageStore") => {
                self.pull(
                    &ns,
                    lease,
                    decode(&src, "source").or_status()?,
                    decode(&dst, "destination").or_status()?,
                    progress,
                )
                .await
            }
            ("containerd.types.transfer.ImageStore", "containerd.types.transfer.OCIRegistry") => {
                self.push(
                    &ns,
                    decode(&src, "source").or_status()?,
                    decode(&dst, "destination").or_status()?,
                    progress,
                )
                .await
            }
            (
                "containerd.types.transfer.ImageImportStream",
                "containerd.types.transfer.ImageStore",
            ) => {
                self.import(
                    &ns,
                    lease,
                    decode(&src, "source").or_status()?,
                    decode(&dst, "destination").or_status()?,
                    progress,
                )
                .await
            }
            (
                "containerd.types.transfer.ImageStore",
                "containerd.types.transfer.ImageExportStream",
            ) => {
                self.export(
                    &ns,
                    decode(&src, "source").or_status()?,
                    decode(&dst, "destination").or_status()?,
                )
                .await
            }
            _ => Err(Error::NotImplemented(format!(
                "transfer from {s} to {d} is not supported"
            ))),
        };
        result.or_status()?;
        Ok(Response::new(()))
    }
}

/// The futures of pull, push and the registry client must be `Send` for any lifetimes, as
/// gRPC handlers (`#[tonic::async_trait]`) require. Compiled, never called.
#[cfg(test)]
#[allow(dead_code)]
fn futures_are_send(
    puller: &crate::pull::Puller,
    pusher: &crate::push::Pusher,
    client: &crate::registry::RegistryClient,
    desc: &crate::images::Descriptor,
    tx: tokio::sync::mpsc::Sender<crate::registry::Progress>,
) {
    fn s<T: Send>(_: T) {}
    s(puller.pull("ns", "ref", crate::pull::PullOptions::default(), tx.clone()));
    s(pusher.push(
        "ns",
        "img",
        Some("ref"),
        crate::push::PushOptions::default(),
        tx,
    ));
    s(client.resolve("repo", "tag"));
    s(client.fetch_manifest("repo", desc));
    s(client.fetch_blob("repo", desc, 0));
    s(client.blob_exists("repo", "sha256:x"));
    s(client.push_manifest("repo", "tag", "mt", Vec::new()));
    s(crate::registry::RegistryClient::new(
        "host",
        &crate::registry::ClientOptions::default(),
    ));
}
