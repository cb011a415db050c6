//! Images: a name pointing at a target descriptor (a manifest or an index) in the content
//! store, with labels.

use std::collections::BTreeMap;

use prost::Message;
use redb::ReadableTable;

use berth_proto::containerd::services::images::v1::{ImageCreate, ImageDelete, ImageUpdate};

use crate::collector::Collector;
use crate::error::{Error, Result};
use crate::events::{Exchange, publish, topics};
use crate::filters::{self, Adaptor, Filter};
use crate::metadata::{self, DbContext, IMAGES, Store};
use crate::{digest, labels, namespaces};

/// An OCI descriptor.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct Descriptor {
    #[prost(string, tag = "1")]
    pub media_type: String,
    #[prost(string, tag = "2")]
    pub digest: String,
    #[prost(int64, tag = "3")]
    pub size: i64,
    #[prost(btree_map = "string, string", tag = "4")]
    pub annotations: BTreeMap<String, String>,
}

impl From<&berth_oci::image::Descriptor> for Descriptor {
    /// The stored shape of a JSON descriptor (URLs and platform are not kept).
    fn from(d: &berth_oci::image::Descriptor) -> Self {
        Descriptor {
            media_type: d.media_type.to_string(),
            digest: d.digest.clone(),
            size: d.size,
            annotations: d.annotations.clone(),
        }
    }
}

impl From<&Descriptor> for berth_oci::image::Descriptor {
    fn from(d: &Descriptor) -> Self {
        berth_oci::image::Descriptor {
            media_type: d.media_type.as_str().into(),
            digest: d.digest.clone(),
            size: d.size,
            annotations: d.annotations.clone(),
            ..Default::default()
        }
    }
}

/// An image record. Stored as the `images` table's record.
#[derive(Clone, PartialEq, Message)]
pub struct Image {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(btree_map = "string, string", tag = "2")]
    pub labels: BTreeMap<String, String>,
    #[prost(message, optional, tag = "3")]
    pub target: Option<Descriptor>,
    #[prost(int64, tag = "4")]
    pub created_at: i64,
    #[prost(int64, tag = "5")]
    pub updated_at: i64,
}

impl Image {
    pub fn target(&self) -> Descriptor {
        self.target.clone().unwrap_or_default()
    }
}

impl Adaptor for Image {
    fn field(&self, path: &[String]) -> Option<String> {
        let present = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let t = self.target.as_ref();
        match path.first().map(String::as_str)? {
            "name" => present(&self.name),
            "target" => match path.get(1).map(String::as_str)? {
                "digest" => present(&t?.digest),
                "mediatype" => present(&t?.media_type),
                _ => None,
            },
            "labels" => filters::map_field(&self.labels, &path[1..]),
            "annotations" => filters::map_field(&t?.annotations, &path[1..]),
            _ => None,
        }
    }
}

fn validate(image: &Image) -> Result<()> {
    if image.name.is_empty() {
        return Err(Error::invalid("image name must not be empty"));
    }
    labels::validate_all(&image.labels).map_err(|e| e.context("image.Labels"))?;
    let t = image.target();
    if let Err(e) = digest::validate(&t.digest) {
        let why = e.to_string();
        let why = why.trim_end_matches(": invalid argument");
        let why = why.strip_prefix(&format!("{}: ", t.digest)).unwrap_or(why);
        return Err(Error::invalid(format!(
            "target.Digest {:?} invalid: {why}",
            t.digest
        )));
    }
    if t.size <= 0 {
        return Err(Error::invalid("target.Size must be greater than zero"));
    }
    if t.media_type.is_empty() {
        return Err(Error::invalid("target.MediaType must be set"));
    }
    Ok(())
}

/// The images core: its records publish `/images/*` events, and a deletion asks for a
/// garbage collection of what the image held.
#[derive(Clone)]
pub struct Images {
    store: Store,
    exchange: Exchange,
    gc: Collector,
}

impl Images {
    pub fn new(store: Store, exchange: Exchange, gc: Collector) -> Self {
        Images {
            store,
            exchange,
            gc,
        }
    }

    fn published(&self, namespace: &str, image: Image, created: bool) -> Image {
        let (name, labels) = (image.name.clone(), image.labels.clone());
        if created {
            let event = ImageCreate { name, labels };
            publish(&self.exchange, namespace, topics::IMAGE_CREATE, &event);
        } else {
            let event = ImageUpdate { name, labels };
            publish(&self.exchange, namespace, topics::IMAGE_UPDATE, &event);
        }
        image
    }

    pub async fn get(&self, namespace: &str, name: &str) -> Result<Image> {
        let (ns, name) = (namespace.to_string(), name.to_string());
        self.store
            .view(move |txn| {
                let t = txn.open_table(IMAGES).ctx("open images")?;
                match t.get((ns.as_str(), name.as_str())).ctx("read image")? {
                    Some(v) => metadata::decode("image", &name, v.value()),
                    None => Err(Error::not_found(format!("image {name:?}"))),
                }
            })
            .await
    }

    pub async fn list(&self, namespace: &str, filter: Filter) -> Result<Vec<Image>> {
        let ns = namespace.to_string();
        self.store
            .view(move |txn| {
                let t = txn.open_table(IMAGES).ctx("open images")?;
                Ok(metadata::list_in_namespace::<_, Image>(&t, "image", &ns)?
                    .into_iter()
                    .map(|(_, i)| i)
                    .filter(|i| filter.matches(i))
                    .collect())
            })
            .await
    }

    #[tracing::instrument(level = "debug", skip(self, image), fields(name = %image.name))]
    pub async fn create(&self, namespace: &str, mut image: Image) -> Result<Image> {
        validate(&image)?;
        let now = metadata::now_nanos();
        image.created_at = now;
        image.updated_at = now;
        let ns = namespace.to_string();
        let created = self
            .store
            .update(move |txn| {
                namespaces::ensure(txn, &ns)?;
                let mut t = txn.open_table(IMAGES).ctx("open images")?;
                if t.get((ns.as_str(), image.name.as_str()))
                    .ctx("read image")?
                    .is_some()
                {
                    return Err(Error::already_exists(format!("image {:?}", image.name)));
                }
                t.insert(
                    (ns.as_str(), image.name.as_str()),
                    image.encode_to_vec().as_slice(),
                )
                .ctx("write image")?;
                Ok(image)
            })
            .await?;
        Ok(self.published(namespace, created, true))
    }

    /// Creates the image, or updates `paths` of the record that exists, as containerd's
    /// client does after a pull: a record removed between the two (a concurrent `rmi`) is
    /// created again. Returns the record and whether one existed.
    pub async fn create_or_update(
        &self,
        namespace: &str,
        image: Image,
        paths: Vec<String>,
    ) -> Result<(Image, bool)> {
        const ATTEMPTS: usize = 8;
        for _ in 0..ATTEMPTS {
            match self.create(namespace, image.clone()).await {
                Ok(i) => return Ok((i, false)),
                Err(Error::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
            match self.update(namespace, image.clone(), paths.clone()).await {
                Ok(i) => return Ok((i, true)),
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Unavailable(format!(
            "image {:?} was created and removed {ATTEMPTS} times while being recorded; try again",
            image.name
        )))
    }

    /// Updates the fields named by `paths` (`labels[.k]`, `target`, `annotations[.k]`; all
    /// three when empty).
    #[tracing::instrument(level = "debug", skip(self, image), fields(name = %image.name))]
    pub async fn update(&self, namespace: &str, image: Image, paths: Vec<String>) -> Result<Image> {
        if image.name.is_empty() {
            return Err(Error::invalid("image name is required for update"));
        }
        let ns = namespace.to_string();
        let updated = self
            .store
            .update(move |txn| {
                let mut t = txn.open_table(IMAGES).ctx("open images")?;
                let mut stored: Image = match t
                    .get((ns.as_str(), image.name.as_str()))
                    .ctx("read image")?
                {
                    Some(v) => metadata::decode("image", &image.name, v.value())?,
                    None => return Err(Error::not_found(format!("image {:?}", image.name))),
                };
                let new_target = image.target();
                if paths.is_empty() {
                    stored.labels = image.labels.clone();
                    stored.target = Some(new_target.clone());
                }
                for path in &paths {
                    if let Some(key) = path.strip_prefix("labels.") {
                        match image.labels.get(key) {
                            Some(v) if !v.is_empty() => {
                                stored.labels.insert(key.to_string(), v.clone());
                            }
                            _ => {
                                stored.labels.remove(key);
                            }
                        }
                    } else if let Some(key) = path.strip_prefix("annotations.") {
                        let mut t = stored.target();
                        match new_target.annotations.get(key) {
                            Some(v) => {
                                t.annotations.insert(key.to_string(), v.clone());
                            }
                            None => {
                                t.annotations.remove(key);
                            }
                        }
                        stored.target = Some(t);
                    } else {
                        match path.as_str() {
                            "labels" => stored.labels = image.labels.clone(),
                            "target" => {
                                // The annotations stay unless asked for.
                                let mut t = new_target.clone();
                                t.annotations = stored.target().annotations;
                                stored.target = Some(t);
                            }
                            "annotations" => {
                                let mut t = stored.target();
                                t.annotations = new_target.annotations.clone();
                                stored.target = Some(t);
                            }
                            _ => {
                                return Err(Error::invalid(format!(
                                    "cannot update {path:?} field on image {:?}",
                                    image.name
                                )));
                            }
                        }
                    }
                }
                validate(&stored)?;
                stored.updated_at = metadata::now_nanos();
                t.insert(
                    (ns.as_str(), image.name.as_str()),
                    stored.encode_to_vec().as_slice(),
                )
                .ctx("write image")?;
                Ok(stored)
            })
            .await?;
        Ok(self.published(namespace, updated, false))
    }

    /// Deletes an image; with `target`, only if it still points at that digest. What it
    /// held is collected before this returns when `sync`, else soon.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn delete(
        &self,
        namespace: &str,
        name: &str,
        target: Option<String>,
        sync: bool,
    ) -> Result<()> {
        let (ns, owned) = (namespace.to_string(), name.to_string());
        self.remove(ns, owned, target).await?;
        let event = ImageDelete {
            name: name.to_string(),
        };
        publish(&self.exchange, namespace, topics::IMAGE_DELETE, &event);
        self.gc.after_delete(sync).await
    }

    async fn remove(&self, ns: String, name: String, target: Option<String>) -> Result<()> {
        self.store
            .update(move |txn| {
                let mut t = txn.open_table(IMAGES).ctx("open images")?;
                let stored: Image = match t.get((ns.as_str(), name.as_str())).ctx("read image")? {
                    Some(v) => metadata::decode("image", &name, v.value())?,
                    None => return Err(Error::not_found(format!("image {name:?}"))),
                };
                if let Some(want) = target
                    && stored.target().digest != want
                {
                    return Err(Error::not_found(format!(
                        "image {name:?} has target {}, not {want}",
                        stored.target().digest
                    )));
                }
                t.remove((ns.as_str(), name.as_str())).ctx("delete image")?;
                Ok(())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Images with a collector that runs nothing (its requests are dropped).
    fn images_in(dir: &std::path::Path) -> Images {
        let store = Store::open(&dir.join("meta.redb")).expect("db");
        Images::new(store, Exchange::new(), crate::collector::channel().0)
    }

    fn image(name: &str, digest: char) -> Image {
        Image {
            name: name.to_string(),
            target: Some(Descriptor {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                digest: format!("sha256:{}", digest.to_string().repeat(64)),
                size: 10,
                annotations: BTreeMap::new(),
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn create_or_update_creates_then_updates_the_target() {
        let dir = tempfile::tempdir().expect("tmp");
        let images = images_in(dir.path());
        let target = vec!["target".to_string()];
        let (_, existed) = images
            .create_or_update("ns", image("a", '1'), target.clone())
            .await
            .expect("create");
        assert!(!existed);
        let (i, existed) = images
            .create_or_update("ns", image("a", '2'), target.clone())
            .await
            .expect("update");
        assert!(existed);
        assert_eq!(i.target().digest, format!("sha256:{}", "2".repeat(64)));
        images.delete("ns", "a", None, false).await.expect("delete");
        let (_, existed) = images
            .create_or_update("ns", image("a", '3'), target)
            .await
            .expect("created again");
        assert!(!existed);
    }

    /// A removal landing between the create (AlreadyExists) and the update (NotFound) is
    /// met by creating again: with another task removing the record over and over, every
    /// create_or_update succeeds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn create_or_update_survives_concurrent_removals() {
        let dir = tempfile::tempdir().expect("tmp");
        let images = images_in(dir.path());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let remover = {
            let (images, stop) = (images.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = images.delete("ns", "a", None, false).await;
                    tokio::task::yield_now().await;
                }
            })
        };
        let mut recreated = 0;
        for i in 0..400 {
            let digest = if i % 2 == 0 { '1' } else { '2' };
            let (_, existed) = images
                .create_or_update("ns", image("a", digest), vec!["target".to_string()])
                .await
                .expect("create_or_update under concurrent removals");
            recreated += usize::from(!existed);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        remover.await.expect("remover");
        assert!(recreated > 0, "the removals never raced the records");
    }

    /// The core publishes its own events: a front door only calls it.
    #[tokio::test]
    async fn changes_publish_image_events() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(&dir.path().join("meta.redb")).expect("db");
        let exchange = Exchange::new();
        let (gc, _requests) = crate::collector::channel();
        let images = Images::new(store, exchange.clone(), gc);
        let mut sub = exchange.subscribe(Filter::parse_all::<&str>(&[]).expect("no filter"));
        images.create("ns", image("a", '1')).await.expect("create");
        images
            .update("ns", image("a", '2'), vec!["target".into()])
            .await
            .expect("update");
        images.delete("ns", "a", None, false).await.expect("delete");
        let mut topics = Vec::new();
        for _ in 0..3 {
            let e = sub.next(&crate::events::NoFields).await.expect("event");
            assert_eq!(e.namespace, "ns");
            topics.push(e.topic);
        }
        assert_eq!(
            topics,
            ["/images/create", "/images/update", "/images/delete"]
        );
    }
}
