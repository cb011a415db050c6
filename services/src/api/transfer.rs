//! `containerd.services.transfer.v1.Transfer`: pull (registry → image store), push (image
//! store → registry), import (archive stream → image store) and export (image store →
//! archive stream). Progress, credentials and archive bytes travel on streams the client
//! opened through the Streaming service and names in the request.

use super::Convert;
use crate::api::status::OrStatus;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use berth_proto::containerd::services::images::v1 as ipb;
use berth_proto::containerd::services::transfer::v1 as pb;
use berth_proto::containerd::services::transfer::v1::transfer_server::Transfer;
use berth_proto::containerd::types::Descriptor as WireDescriptor;
use berth_proto::containerd::types::Platform;
use berth_proto::containerd::types::transfer as tt;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::{Services, event_any, lease, namespace_required, publish};
use crate::archive::{ExportOptions, ImportOptions};
use crate::error::{Error, Result};
use crate::images::Image;
use crate::pull::{PullOptions, Puller};
use crate::push::{PushOptions, Pusher};
use crate::registry::auth::{self, Credentials};
use crate::registry::{Progress, Reference};
use crate::streams::Stream;
use crate::types::AnyValue;
use crate::unpack::Unpacker;

/// The flow-control window the daemon grants when it receives archive bytes.
const WINDOW: i32 = 64 * 1024;
/// The most bytes per `Data` message the daemon sends.
const MAX_DATA: usize = 32 * 1024;

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

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

/// A file under the state directory for one transfer, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(state: &Path, what: &str) -> Result<TempFile> {
        let dir = state.join("transfer");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let n = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        Ok(TempFile(
            dir.join(format!("{what}-{}-{n}", std::process::id())),
        ))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub struct TransferApi(pub Services);

impl TransferApi {
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

    /// Asks the client, over its auth stream, for credentials to `host`; writes what it
    /// answers to a private credentials file for this transfer.
    async fn credentials(
        &self,
        ns: &str,
        resolver: Option<&tt::RegistryResolver>,
        reference: &str,
    ) -> Result<Option<TempFile>> {
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
        let file = TempFile::new(&self.0.state, "credentials")?;
        let creds = Credentials {
            username: resp.username,
            password: resp.secret,
        };
        let path = file.0.clone();
        tokio::task::spawn_blocking(move || auth::store(&path, &host, &creds))
            .await
            .map_err(|e| Error::Internal(format!("store credentials: {e}")))??;
        Ok(Some(file))
    }

    fn no_credentials(&self) -> PathBuf {
        self.0.state.join("transfer").join("no-credentials.json")
    }

    /// Creates or re-points image records under extra names and publishes image events.
    async fn name_images(
        &self,
        ns: &str,
        image: &Image,
        extra: &[String],
        existed: bool,
    ) -> Result<()> {
        publish_image(&self.0, ns, &image.name, &image.labels, existed);
        for name in extra.iter().filter(|n| !n.is_empty() && **n != image.name) {
            let record = Image {
                name: name.clone(),
                labels: image.labels.clone(),
                target: image.target.clone(),
                ..Default::default()
            };
            let (_, existed) = self
                .0
                .images
                .create_or_update(ns, record, vec!["target".into()])
                .await?;
            publish_image(&self.0, ns, name, &image.labels, existed);
        }
        Ok(())
    }

    async fn pull(
        &self,
        ns: &str,
        lease: Option<String>,
        src: tt::OciRegistry,
        dst: tt::ImageStore,
        progress: Option<Stream>,
    ) -> Result<()> {
        let existed = self
            .0
            .images
            .get(ns, &normalized(&src.reference))
            .await
            .is_ok();
        let creds = self
            .credentials(ns, src.resolver.as_ref(), &src.reference)
            .await?;
        let puller = Puller::new(
            self.0.content.clone(),
            self.0.images.clone(),
            self.0.leases.clone(),
            self.0.registry_hosts.clone(),
            creds
                .as_ref()
                .map(|c| c.0.clone())
                .unwrap_or_else(|| self.no_credentials()),
        )
        .with_unpacker(Unpacker::new(
            self.0.content.clone(),
            self.0.snapshotters.clone(),
            self.0.leases.clone(),
        ));
        // An image store with no name asks for the content only (`berth content fetch`).
        let content_only = dst.name.is_empty() && dst.extra_references.is_empty();
        // Unpacked as the first unpack configuration says; with none, into the default
        // snapshotter for the pulled platform (berth's `pull` unpacks by default).
        let unpack = dst.unpacks.first();
        let opts = PullOptions {
            platform: dst.platforms.first().map(platform_string),
            all_platforms: dst.all_metadata,
            plain_http: src
                .resolver
                .as_ref()
                .is_some_and(|r| r.default_scheme == "http"),
            content_only,
            unpack: !content_only,
            snapshotter: unpack
                .map(|u| u.snapshotter.clone())
                .filter(|s| !s.is_empty()),
            unpack_platform: unpack
                .and_then(|u| u.platform.as_ref())
                .filter(|p| !p.os.is_empty() && !p.architecture.is_empty())
                .map(platform_string),
            lease,
            ..Default::default()
        };
        let (tx, task) = Self::forward_progress(progress);
        let result = puller.pull(ns, &src.reference, opts, tx).await;
        let _ = task.await;
        let image = result?;
        if content_only {
            return Ok(());
        }
        let extra: Vec<String> = std::iter::once(dst.name.clone())
            .chain(dst.extra_references.iter().map(|r| r.name.clone()))
            .map(|n| if n.is_empty() { n } else { normalized(&n) })
            .collect();
        self.name_images(ns, &image, &extra, existed).await
    }

    async fn push(
        &self,
        ns: &str,
        src: tt::ImageStore,
        dst: tt::OciRegistry,
        progress: Option<Stream>,
    ) -> Result<()> {
        let creds = self
            .credentials(ns, dst.resolver.as_ref(), &dst.reference)
            .await?;
        let pusher = Pusher::new(
            self.0.content.clone(),
            self.0.images.clone(),
            self.0.registry_hosts.clone(),
            creds
                .as_ref()
                .map(|c| c.0.clone())
                .unwrap_or_else(|| self.no_credentials()),
        );
        let opts = PushOptions {
            platform: src.platforms.first().map(platform_string),
            plain_http: dst
                .resolver
                .as_ref()
                .is_some_and(|r| r.default_scheme == "http"),
            ..Default::default()
        };
        let (tx, task) = Self::forward_progress(progress);
        let result = pusher
            .push(ns, &src.name, Some(&dst.reference), opts, tx)
            .await;
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
        let file = TempFile::new(&self.0.state, "import")?;
        receive_file(data, &file.0).await?;
        if let Some(p) = &progress {
            let _ = p
                .send(event_any(&tt::Progress {
                    event: "saved".into(),
                    name: "archive".into(),
                    ..Default::default()
                }))
                .await;
        }
        let opts = ImportOptions {
            base_name: (!dst.name.is_empty()).then(|| dst.name.clone()),
            platform: dst.platforms.first().map(platform_string),
            labels: dst.labels.clone(),
            ..Default::default()
        };
        // The blobs are garbage until the image records exist: hold them in the client's
        // lease, or in one of our own for the import's duration.
        let (opts, own_lease) = match lease {
            Some(l) => (
                ImportOptions {
                    lease: Some(l),
                    ..opts
                },
                None,
            ),
            None => {
                let id = format!(
                    "{}{}",
                    crate::leases::IMPORT_LEASE_PREFIX,
                    uuid::Uuid::new_v4().simple()
                );
                let expires = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
                let labels = std::collections::BTreeMap::from([(
                    crate::leases::EXPIRE_LABEL.to_string(),
                    humantime::format_rfc3339_seconds(expires).to_string(),
                )]);
                self.0.leases.create(ns, id.clone(), labels).await?;
                (
                    ImportOptions {
                        lease: Some(id.clone()),
                        ..opts
                    },
                    Some(id),
                )
            }
        };
        let lease_id = opts.lease.clone().unwrap_or_default();
        let imported = match self.0.archives.import(ns, &file.0, opts).await {
            // Unpacked before the lease that holds the blobs ends, when asked (`berth load`
            // asks for the default snapshotter, as `docker load` leaves runnable images).
            Ok(images) if !dst.unpacks.is_empty() => self
                .unpack_imported(ns, &lease_id, &images, &dst.unpacks)
                .await
                .map(|()| images),
            other => other,
        };
        if let Some(id) = own_lease
            && let Err(e) = self.0.leases.delete(ns, &id).await
        {
            tracing::warn!(lease = %id, error = %e, "could not delete the import's lease; it expires by itself");
        }
        let images = imported?;
        for image in &images {
            publish_image(&self.0, ns, &image.name, &image.labels, false);
            if let Some(p) = &progress {
                let _ = p
                    .send(event_any(&tt::Progress {
                        event: "saved".into(),
                        name: image.name.clone(),
                        desc: image.target.clone().map(Convert::convert),
                        ..Default::default()
                    }))
                    .await;
            }
        }
        Ok(())
    }

    async fn unpack_imported(
        &self,
        ns: &str,
        lease: &str,
        images: &[crate::images::Image],
        unpacks: &[tt::UnpackConfiguration],
    ) -> Result<()> {
        let unpacker = Unpacker::new(
            self.0.content.clone(),
            self.0.snapshotters.clone(),
            self.0.leases.clone(),
        );
        for u in unpacks {
            let platform = u
                .platform
                .as_ref()
                .filter(|p| !p.os.is_empty() && !p.architecture.is_empty())
                .map(|p| berth_oci::image::parse_platform(&platform_string(p)))
                .transpose()?;
            for image in images {
                let Some(target) = &image.target else {
                    continue;
                };
                unpacker
                    .unpack_image(ns, lease, &u.snapshotter, target, platform.as_ref())
                    .await
                    .map_err(|e| e.context(&format!("unpacking {}", image.name)))?;
            }
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
            .filter(|n| !n.is_empty())
            .collect();
        let mut resolved = Vec::new();
        for n in names {
            // Accept the stored name or its normalised form.
            if self.0.images.get(ns, &n).await.is_ok() {
                resolved.push(n);
            } else {
                resolved.push(normalized(&n));
            }
        }
        let file = TempFile::new(&self.0.state, "export")?;
        let platform = if dst.all_platforms {
            None
        } else {
            dst.platforms
                .first()
                .or(src.platforms.first())
                .map(platform_string)
        };
        self.0
            .archives
            .export(
                ns,
                &resolved,
                &file.0,
                ExportOptions {
                    platform,
                    ..Default::default()
                },
            )
            .await?;
        send_file(data, &file.0).await
    }
}

fn normalized(name: &str) -> String {
    Reference::parse(name)
        .map(|r| r.to_string())
        .unwrap_or_else(|_| name.to_string())
}

fn publish_image(
    s: &Services,
    ns: &str,
    name: &str,
    labels: &std::collections::BTreeMap<String, String>,
    existed: bool,
) {
    if existed {
        publish(
            &s.exchange,
            ns,
            crate::events::topics::IMAGE_UPDATE,
            &ipb::ImageUpdate {
                name: name.to_string(),
                labels: labels.clone(),
            },
        );
    } else {
        publish(
            &s.exchange,
            ns,
            crate::events::topics::IMAGE_CREATE,
            &ipb::ImageCreate {
                name: name.to_string(),
                labels: labels.clone(),
            },
        );
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
