//! Push: upload an image from the content store to a registry.
//!
//! The image's content is walked from its target (index → manifests → config and layers),
//! taking what the namespace has. Blobs the registry lacks are uploaded (HEAD first, then
//! POST + PUT), then manifests children first (by digest), then the target under the tag.
//! Non-distributable (foreign) layers are not uploaded, as containerd does.
//!
//! An index whose manifests the namespace holds only in part (a single-platform pull) is
//! pushed with what there is; registries that check an index's children refuse it, and the
//! error says which manifests were missing. `PushOptions::platform` pushes just that
//! platform's manifest under the tag instead.

use std::path::PathBuf;

use berth_oci::image::{self as oci, Kind, MediaType, Platform};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use crate::content::ContentStore;
use crate::error::{Error, Result};
use crate::images::{Descriptor, Image, Images};
use crate::registry::client::BlobSource;
use crate::registry::{Hosts, Progress, ProgressState, Reference, Registries, RegistryClient};

/// How to push.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Push only this platform's manifest of an index, under the tag.
    pub platform: Option<String>,
    /// Plain HTTP to the registry (ctr's `--plain-http`).
    pub plain_http: bool,
    /// Skip TLS verification (ctr's `--skip-verify`).
    pub skip_verify: bool,
    /// Blobs uploaded at once; 0 means [`crate::blobs::DEFAULT_CONCURRENCY`].
    pub max_concurrent_uploads: usize,
}

/// Pushes images from the content store to registries.
#[derive(Clone)]
pub struct Pusher {
    content: ContentStore,
    images: Images,
    registries: Registries,
}

/// What to upload, in order.
#[derive(Default)]
struct Plan {
    /// Configs and layers, de-duplicated.
    blobs: Vec<Descriptor>,
    /// Manifests and indexes with their bytes, children before parents; the last is the root.
    manifests: Vec<(Descriptor, Vec<u8>)>,
    /// Index children the namespace does not have: (digest, platform).
    missing: Vec<(String, String)>,
}

/// Sends a progress report; a receiver that went away only stops the reports.
async fn report(
    progress: &mpsc::Sender<Progress>,
    desc: &Descriptor,
    offset: i64,
    state: ProgressState,
) {
    let _ = progress.send(Progress::new(desc, offset, state)).await;
}

impl Pusher {
    pub fn new(
        content: ContentStore,
        images: Images,
        hosts: impl Into<Hosts>,
        credentials: PathBuf,
    ) -> Pusher {
        Pusher {
            content,
            images,
            registries: Registries {
                hosts: hosts.into(),
                credentials,
            },
        }
    }

    /// The image named `name` as stored, or by its normalised reference.
    async fn find_image(&self, namespace: &str, name: &str) -> Result<Image> {
        match self.images.get(namespace, name).await {
            Ok(i) => Ok(i),
            Err(e) if e.is_not_found() => match Reference::parse(name) {
                Ok(r) if r.to_string() != name => self.images.get(namespace, &r.to_string()).await,
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Pushes the image `image_name_or_ref` of the namespace to `target_ref` (the image's
    /// own name when `None`).
    #[tracing::instrument(skip(self, opts, progress), fields(namespace = %namespace, image = %image_name_or_ref))]
    pub async fn push(
        &self,
        namespace: &str,
        image_name_or_ref: &str,
        target_ref: Option<&str>,
        opts: PushOptions,
        progress: mpsc::Sender<Progress>,
    ) -> Result<()> {
        let image = self.find_image(namespace, image_name_or_ref).await?;
        let target = Reference::parse(target_ref.unwrap_or(&image.name))?;
        let want = opts
            .platform
            .as_deref()
            .map(oci::parse_platform)
            .transpose()?;
        let root = image.target();
        let mut plan = Plan::default();
        self.walk(namespace, &image.name, &root, want.as_ref(), &mut plan)
            .await?;
        let Some((root, _)) = plan.manifests.last().cloned() else {
            return Err(Error::Internal("push plan without a root".into()));
        };
        let object = root_object(&target, &root)?;

        let client = self
            .registries
            .client(target.domain(), opts.plain_http, opts.skip_verify)
            .await?;
        let repo = target.path();
        self.push_blobs(&client, repo, &plan, &opts, &progress)
            .await?;
        push_manifests(&client, repo, &plan, &object, &progress).await?;
        tracing::info!(target = %target, digest = %root.digest, "pushed");
        Ok(())
    }

    /// Uploads the plan's configs and layers, [`PushOptions::max_concurrent_uploads`] at
    /// once (each reported as waiting first).
    async fn push_blobs(
        &self,
        client: &RegistryClient,
        repo: &str,
        plan: &Plan,
        opts: &PushOptions,
        progress: &mpsc::Sender<Progress>,
    ) -> Result<()> {
        for b in &plan.blobs {
            report(progress, b, 0, ProgressState::Waiting).await;
        }
        let concurrency = crate::blobs::concurrency(opts.max_concurrent_uploads);
        // The futures are made first: a closure inside the stream would make the whole
        // push future `Send` only for one lifetime (rust-lang/rust#64552).
        let uploads: Vec<_> = plan
            .blobs
            .iter()
            .map(|b| self.push_blob(client, repo, b, progress))
            .collect();
        futures::stream::iter(uploads)
            .buffer_unordered(concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Uploads one config or layer unless the repository has it.
    async fn push_blob(
        &self,
        client: &RegistryClient,
        repo: &str,
        b: &Descriptor,
        progress: &mpsc::Sender<Progress>,
    ) -> Result<()> {
        if client.blob_exists(repo, &b.digest).await?.is_some() {
            report(progress, b, b.size, ProgressState::Exists).await;
            return Ok(());
        }
        report(progress, b, 0, ProgressState::Uploading).await;
        let path = self.content.blob_path(&b.digest)?;
        let size = u64::try_from(b.size).unwrap_or(0);
        client
            .push_blob(repo, b, BlobSource::File(path, size))
            .await?;
        report(progress, b, b.size, ProgressState::Done).await;
        Ok(())
    }

    async fn read(&self, namespace: &str, desc: &Descriptor) -> Result<Vec<u8>> {
        let data = crate::blobs::read_blob(&self.content, namespace, &desc.digest).await?;
        crate::registry::client::verify(&data, desc)?;
        Ok(data)
    }

    /// Fills the plan from `desc` down.
    async fn walk(
        &self,
        namespace: &str,
        image: &str,
        root: &Descriptor,
        want: Option<&Platform>,
        plan: &mut Plan,
    ) -> Result<()> {
        // Iterative post-order: (descriptor, children already queued).
        let mut stack: Vec<(Descriptor, Option<Vec<u8>>)> = vec![(root.clone(), None)];
        let mut is_root = true;
        while let Some((desc, done)) = stack.pop() {
            if let Some(data) = done {
                if !plan.manifests.iter().any(|(d, _)| d.digest == desc.digest) {
                    plan.manifests.push((desc, data));
                }
                continue;
            }
            let data = self
                .read(namespace, &desc)
                .await
                .map_err(|e| e.context(&format!("content of image {image:?} ({})", desc.digest)))?;
            match MediaType::from(&desc.media_type).kind()? {
                Kind::Index => {
                    let index = oci::parse_index(&desc.digest, &data)?;
                    if is_root && let Some(want) = want {
                        // Push only the best match for the platform, as the root.
                        is_root = false;
                        stack.push((best_for_platform(&index, want, image)?, None));
                        continue;
                    }
                    stack.push((desc.clone(), Some(data)));
                    self.queue_index_children(namespace, &index, &mut stack, plan)
                        .await;
                }
                Kind::Manifest => {
                    self.plan_manifest_blobs(namespace, image, &desc, &data, plan)
                        .await?;
                    stack.push((desc.clone(), Some(data)));
                }
            }
            is_root = false;
        }
        Ok(())
    }

    /// Queues the index's manifests the namespace has (so that they pop in index order);
    /// the others go to `plan.missing` with their platform.
    async fn queue_index_children(
        &self,
        namespace: &str,
        index: &oci::Index,
        stack: &mut Vec<(Descriptor, Option<Vec<u8>>)>,
        plan: &mut Plan,
    ) {
        for m in index.manifests.iter().rev() {
            let child = Descriptor::from(m);
            if self.content.info(namespace, &child.digest).await.is_ok() {
                stack.push((child, None));
            } else {
                let platform = m
                    .platform
                    .as_ref()
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "unknown platform".into());
                plan.missing.push((child.digest, platform));
            }
        }
    }

    /// Adds the manifest's config and distributable layers to the plan's blobs (once
    /// each); each must be in the namespace.
    async fn plan_manifest_blobs(
        &self,
        namespace: &str,
        image: &str,
        desc: &Descriptor,
        data: &[u8],
        plan: &mut Plan,
    ) -> Result<()> {
        let m = oci::parse_manifest(&desc.digest, data)?;
        for c in m.children() {
            if c.media_type.is_nondistributable() {
                continue;
            }
            let c = Descriptor::from(c);
            self.content.info(namespace, &c.digest).await.map_err(|e| {
                e.context(&format!(
                    "image {image:?}: blob {} of manifest {}",
                    c.digest, desc.digest
                ))
            })?;
            if !plan.blobs.iter().any(|b| b.digest == c.digest) {
                plan.blobs.push(c);
            }
        }
        Ok(())
    }
}

/// The index's manifest that best matches `want` (among those that name a platform).
fn best_for_platform(index: &oci::Index, want: &Platform, image: &str) -> Result<Descriptor> {
    let candidates = index
        .manifests
        .iter()
        .filter(|m| m.platform.is_some())
        .map(|m| (m.platform.as_ref(), m));
    oci::best_match(want, candidates)
        .map(Descriptor::from)
        .ok_or_else(|| {
            Error::not_found(format!(
                "no manifest for platform {want} in image {image:?}"
            ))
        })
}

/// What the root manifest is pushed as: the target's tag, else its digest. A target that
/// names another digest than the content's is InvalidArgument.
fn root_object(target: &Reference, root: &Descriptor) -> Result<String> {
    match (target.tag(), target.digest()) {
        (_, Some(d)) if d != root.digest => Err(Error::invalid(format!(
            "target {target} names digest {d}, but the content to push is {}",
            root.digest
        ))),
        (Some(t), _) => Ok(t.to_string()),
        (None, _) => Ok(root.digest.clone()),
    }
}

/// Pushes the plan's manifests in order, children by digest and the root as `object`. A
/// refused root of an index the namespace holds only in part says which manifests it lacks.
async fn push_manifests(
    client: &RegistryClient,
    repo: &str,
    plan: &Plan,
    object: &str,
    progress: &mpsc::Sender<Progress>,
) -> Result<()> {
    let last = plan.manifests.len() - 1;
    for (i, (desc, data)) in plan.manifests.iter().enumerate() {
        let obj = if i == last {
            object.to_string()
        } else {
            desc.digest.clone()
        };
        report(progress, desc, 0, ProgressState::Uploading).await;
        let pushed = client
            .push_manifest(repo, &obj, &desc.media_type, data.clone())
            .await;
        if let Err(e) = pushed {
            if i == last && !plan.missing.is_empty() {
                return Err(lacking_manifests(e, &plan.missing));
            }
            return Err(e);
        }
        report(progress, desc, desc.size, ProgressState::Done).await;
    }
    Ok(())
}

/// `e` with the index's manifests the namespace lacks, (digest, platform) each.
fn lacking_manifests(e: Error, missing: &[(String, String)]) -> Error {
    let missing: Vec<String> = missing.iter().map(|(d, p)| format!("{p} ({d})")).collect();
    e.context(&format!(
        "the namespace lacks {} of the index's manifests: {}; pull all \
         platforms first or push one platform",
        missing.len(),
        missing.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pull::PullOptions;
    use crate::registry::testutil::{self, OciImage, OciIndex, TestRegistry};

    async fn pull(env: &testutil::Env, ns: &str, reference: &str, all: bool) -> Image {
        let (tx, _rx) = mpsc::channel(4096);
        let opts = PullOptions {
            platform: (!all).then(|| "linux/amd64".to_string()),
            all_platforms: all,
            ..Default::default()
        };
        env.puller()
            .pull(ns, reference, opts, tx)
            .await
            .expect("pull")
    }

    #[tokio::test]
    async fn push_to_another_repository() {
        let reg = TestRegistry::start(None);
        let img = OciImage::build(&[("f", b"push me".as_slice())], "linux/amd64");
        img.push(&reg, "src/app:1", None);
        let env = testutil::Env::new();
        let source = format!("{}/src/app:1", reg.host());
        pull(&env, "default", &source, false).await;

        let (tx, mut rx) = mpsc::channel(4096);
        let dest = format!("{}/dst/copy:2", reg.host());
        env.pusher()
            .push("default", &source, Some(&dest), PushOptions::default(), tx)
            .await
            .expect("push");
        let raw = reg.inspect_raw("dst/copy:2", None);
        assert_eq!(testutil::sha256_bytes(&raw), img.manifest_digest);
        let mut states = Vec::new();
        while let Ok(p) = rx.try_recv() {
            states.push((p.digest, p.state));
        }
        // Blobs were new to dst/copy (the registry does not mount across repositories).
        assert!(
            states.contains(&(img.layer_digests[0].clone(), ProgressState::Done)),
            "{states:?}"
        );
        assert!(
            states.contains(&(img.manifest_digest.clone(), ProgressState::Done)),
            "{states:?}"
        );

        // Pushing again finds every blob in place; the image name can be the short form.
        let (tx, mut rx) = mpsc::channel(4096);
        env.pusher()
            .push("default", &source, Some(&dest), PushOptions::default(), tx)
            .await
            .expect("push again");
        let mut exists = 0;
        while let Ok(p) = rx.try_recv() {
            if p.state == ProgressState::Exists {
                exists += 1;
            }
        }
        assert_eq!(exists, 2, "config and layer already there");

        // Unknown image.
        let (tx, _rx) = mpsc::channel(16);
        let err = env
            .pusher()
            .push("default", "nope:1", Some(&dest), PushOptions::default(), tx)
            .await
            .expect_err("no image");
        assert!(err.is_not_found(), "{err}");
    }

    #[tokio::test]
    async fn push_index_and_single_platform() {
        let reg = TestRegistry::start(None);
        let idx = OciIndex::build(&["linux/amd64", "linux/arm64"]);
        idx.push(&reg, "multi/src:1");
        let env = testutil::Env::new();
        let source = format!("{}/multi/src:1", reg.host());

        // Only one platform in the namespace: the whole index cannot go.
        pull(&env, "partial", &source, false).await;
        let (tx, _rx) = mpsc::channel(4096);
        let err = env
            .pusher()
            .push(
                "partial",
                &source,
                Some(&format!("{}/multi/partial:1", reg.host())),
                PushOptions::default(),
                tx,
            )
            .await
            .expect_err("partial index");
        let msg = err.to_string();
        assert!(
            msg.contains("lacks 1") && msg.contains("linux/arm64"),
            "{msg}"
        );
        // But its platform can.
        let (tx, _rx) = mpsc::channel(4096);
        env.pusher()
            .push(
                "partial",
                &source,
                Some(&format!("{}/multi/amd64:1", reg.host())),
                PushOptions {
                    platform: Some("linux/amd64".into()),
                    ..Default::default()
                },
                tx,
            )
            .await
            .expect("push one platform");
        let raw = reg.inspect_raw("multi/amd64:1", None);
        assert_eq!(testutil::sha256_bytes(&raw), idx.images[0].manifest_digest);

        // Everything pulled: the index goes whole.
        pull(&env, "all", &source, true).await;
        let (tx, _rx) = mpsc::channel(4096);
        env.pusher()
            .push(
                "all",
                &source,
                Some(&format!("{}/multi/copy:1", reg.host())),
                PushOptions::default(),
                tx,
            )
            .await
            .expect("push index");
        let raw = reg.inspect_raw("multi/copy:1", None);
        assert_eq!(testutil::sha256_bytes(&raw), idx.index_digest);
    }

    #[tokio::test]
    async fn push_needs_credentials() {
        let creds = ("bob", "builder");
        let reg = TestRegistry::start(Some(creds));
        let img = OciImage::build(&[("f", b"secret".as_slice())], "linux/amd64");
        img.push(&reg, "team/app:1", Some(creds));
        let env = testutil::Env::new();
        crate::registry::auth::store(
            &env.credentials,
            &reg.host(),
            &crate::registry::auth::Credentials {
                username: "bob".into(),
                password: "builder".into(),
            },
        )
        .expect("login");
        let source = format!("{}/team/app:1", reg.host());
        pull(&env, "default", &source, false).await;

        let dest = format!("{}/team/copy:1", reg.host());
        let (tx, _rx) = mpsc::channel(4096);
        env.pusher()
            .push("default", &source, Some(&dest), PushOptions::default(), tx)
            .await
            .expect("push with credentials");
        let raw = reg.inspect_raw("team/copy:1", Some(creds));
        assert_eq!(testutil::sha256_bytes(&raw), img.manifest_digest);

        // Logged out: the registry's 401 is named.
        assert!(crate::registry::auth::remove(&env.credentials, &reg.host()).expect("logout"));
        let (tx, _rx) = mpsc::channel(4096);
        let err = env
            .pusher()
            .push(
                "default",
                &source,
                Some(&format!("{}/team/other:1", reg.host())),
                PushOptions::default(),
                tx,
            )
            .await
            .expect_err("anonymous push");
        assert!(matches!(err, Error::FailedPrecondition(_)), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("unauthorized") && msg.contains("401"), "{msg}");
    }
}
