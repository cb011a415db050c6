//! Moving images in and out: pull (registry → image store, unpacked), push (image store →
//! registry), import (archive file → image store) and export (image store → archive file).
//! Each front door (containerd's Transfer service, berth's own API, the builder next) calls
//! these; the orchestration — which puller, pusher and unpacker, which lease holds the
//! blobs, which image events go out — lives only here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::archive::{Archives, ExportOptions, ImportOptions};
use crate::content::ContentStore;
use crate::error::{Error, Result};
use crate::images::{Image, Images};
use crate::leases::Leases;
use crate::pull::{PullOptions, Puller};
use crate::push::{PushOptions, Pusher};
use crate::registry::auth::{self, Credentials};
use crate::registry::{Progress, Reference};
use crate::snapshots::Snapshotters;
use crate::unpack::Unpacker;

/// How long an import's own lease lives if berthd dies before it ends it.
const IMPORT_LEASE_TTL: Duration = Duration::from_secs(3600);

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A file under `<state>/transfer` for one transfer, removed when dropped.
pub struct TempFile(PathBuf);

impl TempFile {
    fn new(state: &Path, what: &str) -> Result<TempFile> {
        let dir = state.join("transfer");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let n = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        Ok(TempFile(
            dir.join(format!("{what}-{}-{n}", std::process::id())),
        ))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A pull: from `reference` into the image store under `names` (none: content only).
#[derive(Debug, Clone, Default)]
pub struct PullRequest {
    pub reference: String,
    /// Names to record the image under besides its own; all empty asks for the content
    /// only (`berth content fetch`).
    pub names: Vec<String>,
    pub lease: Option<String>,
    pub platform: Option<String>,
    pub all_platforms: bool,
    pub plain_http: bool,
    /// Unpacked into this snapshotter (None: the default one).
    pub snapshotter: Option<String>,
    pub unpack_platform: Option<String>,
    pub credentials: Option<Credentials>,
}

/// A push of image `name` to `reference`.
#[derive(Debug, Clone, Default)]
pub struct PushRequest {
    pub name: String,
    pub reference: String,
    pub platform: Option<String>,
    pub plain_http: bool,
    pub credentials: Option<Credentials>,
}

/// Where an imported image is unpacked.
#[derive(Debug, Clone, Default)]
pub struct UnpackTarget {
    pub snapshotter: String,
    pub platform: Option<String>,
}

/// An import of an archive (OCI layout or `docker save`).
#[derive(Debug, Clone, Default)]
pub struct ImportRequest {
    pub base_name: Option<String>,
    pub platform: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub lease: Option<String>,
    pub unpacks: Vec<UnpackTarget>,
}

/// The transfer service of the core.
#[derive(Clone)]
pub struct Transfers {
    pub content: ContentStore,
    pub images: Images,
    pub leases: Leases,
    pub snapshotters: Snapshotters,
    pub archives: Archives,
    /// The registry hosts directory (containerd's hosts.toml layout), mirrors and
    /// insecure registries.
    pub registry_hosts: crate::registry::Hosts,
    /// The daemon's state directory (temporary files go under `transfer/`).
    pub state: PathBuf,
}

/// `name` in its normalised form (`docker.io/library/x:latest`), or as given when it does
/// not parse.
pub fn normalized(name: &str) -> String {
    Reference::parse(name)
        .map(|r| r.to_string())
        .unwrap_or_else(|_| name.to_string())
}

impl Transfers {
    /// A temporary file for one transfer (an archive on its way in or out).
    pub fn temp_file(&self, what: &str) -> Result<TempFile> {
        TempFile::new(&self.state, what)
    }

    /// The credentials file a puller or pusher reads: a private one holding `creds` for
    /// the registry of `reference`, or an empty path that names no file.
    async fn credentials_file(
        &self,
        reference: &str,
        creds: Option<Credentials>,
    ) -> Result<(Option<TempFile>, PathBuf)> {
        let Some(creds) = creds else {
            let none = self.state.join("transfer").join("no-credentials.json");
            return Ok((None, none));
        };
        let host = Reference::parse(reference)?.domain().to_string();
        let file = self.temp_file("credentials")?;
        let path = file.0.clone();
        tokio::task::spawn_blocking(move || auth::store(&path, &host, &creds))
            .await
            .map_err(|e| Error::Internal(format!("store credentials: {e}")))??;
        let path = file.0.clone();
        Ok((Some(file), path))
    }

    pub fn unpacker(&self) -> Unpacker {
        Unpacker::new(
            self.content.clone(),
            self.snapshotters.clone(),
            self.leases.clone(),
        )
    }

    /// Pulls (and unpacks, unless only content is asked for), then records the image
    /// under `req.names` too (the image records publish their events).
    pub async fn pull(
        &self,
        ns: &str,
        req: PullRequest,
        progress: mpsc::Sender<Progress>,
    ) -> Result<()> {
        let (_file, creds) = self
            .credentials_file(&req.reference, req.credentials.clone())
            .await?;
        let puller = Puller::new(
            self.content.clone(),
            self.images.clone(),
            self.leases.clone(),
            self.registry_hosts.clone(),
            creds,
        )
        .with_unpacker(self.unpacker());
        let content_only = req.names.iter().all(String::is_empty);
        let opts = PullOptions {
            platform: req.platform,
            all_platforms: req.all_platforms,
            plain_http: req.plain_http,
            content_only,
            unpack: !content_only,
            snapshotter: req.snapshotter,
            unpack_platform: req.unpack_platform,
            lease: req.lease,
            ..Default::default()
        };
        let image = puller.pull(ns, &req.reference, opts, progress).await?;
        if content_only {
            return Ok(());
        }
        let names: Vec<String> = req
            .names
            .iter()
            .map(|n| {
                if n.is_empty() {
                    n.clone()
                } else {
                    normalized(n)
                }
            })
            .collect();
        self.name_image(ns, &image, &names).await
    }

    /// Records the image under the other `names` too.
    async fn name_image(&self, ns: &str, image: &Image, names: &[String]) -> Result<()> {
        for name in names.iter().filter(|n| !n.is_empty() && **n != image.name) {
            let record = Image {
                name: name.clone(),
                labels: image.labels.clone(),
                target: image.target.clone(),
                ..Default::default()
            };
            self.images
                .create_or_update(ns, record, vec!["target".into()])
                .await?;
        }
        Ok(())
    }

    /// Pushes image `req.name` to `req.reference`.
    pub async fn push(
        &self,
        ns: &str,
        req: PushRequest,
        progress: mpsc::Sender<Progress>,
    ) -> Result<()> {
        let (_file, creds) = self
            .credentials_file(&req.reference, req.credentials.clone())
            .await?;
        let pusher = Pusher::new(
            self.content.clone(),
            self.images.clone(),
            self.registry_hosts.clone(),
            creds,
        );
        let opts = PushOptions {
            platform: req.platform,
            plain_http: req.plain_http,
            ..Default::default()
        };
        pusher
            .push(ns, &req.name, Some(&req.reference), opts, progress)
            .await
    }

    /// Imports the archive at `file`; unpacks the images when asked, before the lease that
    /// holds their blobs ends. The blobs are held by the caller's lease, or by one of the
    /// import's own for its duration. Returns the images (their records published their events).
    pub async fn import(&self, ns: &str, file: &Path, req: ImportRequest) -> Result<Vec<Image>> {
        let own_lease = match &req.lease {
            Some(_) => None,
            None => Some(self.import_lease(ns).await?),
        };
        let lease = req
            .lease
            .clone()
            .or_else(|| own_lease.clone())
            .unwrap_or_default();
        let opts = ImportOptions {
            base_name: req.base_name,
            platform: req.platform,
            labels: req.labels,
            lease: Some(lease.clone()),
            ..Default::default()
        };
        let imported = match self.archives.import(ns, file, opts).await {
            Ok(images) if !req.unpacks.is_empty() => self
                .unpack_imported(ns, &lease, &images, &req.unpacks)
                .await
                .map(|()| images),
            other => other,
        };
        if let Some(id) = own_lease
            && let Err(e) = self.leases.delete(ns, &id).await
        {
            tracing::warn!(lease = %id, error = %e, "could not delete the import's lease; it expires by itself");
        }
        imported
    }

    /// A lease for one import, expiring by itself should berthd die before it ends it.
    async fn import_lease(&self, ns: &str) -> Result<String> {
        self.leases
            .create_temporary(ns, crate::leases::IMPORT_LEASE_PREFIX, IMPORT_LEASE_TTL)
            .await
    }

    async fn unpack_imported(
        &self,
        ns: &str,
        lease: &str,
        images: &[Image],
        unpacks: &[UnpackTarget],
    ) -> Result<()> {
        let unpacker = self.unpacker();
        for u in unpacks {
            let platform = u
                .platform
                .as_deref()
                .map(berth_oci::image::parse_platform)
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

    /// Exports the images `names` (stored names, or names that normalise to them) into
    /// the archive file `file`.
    pub async fn export(
        &self,
        ns: &str,
        names: &[String],
        file: &Path,
        platform: Option<String>,
    ) -> Result<()> {
        let mut resolved = Vec::new();
        for n in names.iter().filter(|n| !n.is_empty()) {
            if self.images.get(ns, n).await.is_ok() {
                resolved.push(n.clone());
            } else {
                resolved.push(normalized(n));
            }
        }
        let opts = ExportOptions {
            platform,
            ..Default::default()
        };
        self.archives.export(ns, &resolved, file, opts).await
    }
}
