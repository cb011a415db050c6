//! The archive tests: an in-memory namespace (content store and images on a temp dir),
//! images built on the spot, archives read back member by member.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use berth_oci::image::{
    self as oci, ANNOTATION_REF_NAME, DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST, OCI_CONFIG,
    OCI_MANIFEST,
};
use flate2::write::GzEncoder;

use super::docker_import::docker_ref_name;
use super::export::{oci_ref_name, repo_tag};
use super::tar_stream::{blob_digest, clean_path};
use super::*;
use crate::filters::Filter;
use crate::registry::testutil;

mod export;
mod import;

const GC_CONFIG: &str = "containerd.io/gc.ref.content.config";
const GC_MANIFEST: &str = "containerd.io/gc.ref.content.m.";

const NS: &str = "default";

/// The registry tests' namespace on a temp dir, with archives over it.
struct Env {
    base: testutil::Env,
    content: ContentStore,
    images: Images,
    archives: Archives,
}

fn env() -> Env {
    let base = testutil::Env::new();
    let archives = Archives::new(base.content.clone(), base.images.clone());
    Env {
        content: base.content.clone(),
        images: base.images.clone(),
        archives,
        base,
    }
}

impl Env {
    /// The temp dir the store lives in, where archives are written too.
    fn dir(&self) -> &Path {
        self.base._dir.path()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    async fn put(&self, data: &[u8]) -> String {
        let d = oci::sha256_digest(data);
        match self
            .content
            .writer(NS, &format!("test-{d}"), 0, &d, None)
            .await
        {
            Ok(mut w) => {
                w.write(data.to_vec()).await.expect("write");
                w.commit(data.len() as i64, &d, BTreeMap::new(), None)
                    .await
                    .expect("commit");
            }
            Err(Error::AlreadyExists(_)) => {}
            Err(e) => panic!("writer: {e}"),
        }
        d
    }

    async fn read(&self, digest: &str) -> Vec<u8> {
        let (mut f, _) = self.content.open_blob(NS, digest).await.expect("open");
        let mut out = Vec::new();
        f.read_to_end(&mut out).expect("read");
        out
    }

    /// A one-layer image for `arch`: returns the manifest descriptor.
    async fn image_manifest(&self, arch: &str, file: &str) -> oci::Descriptor {
        let layer_tar = tar_of(&[(file, format!("hello from {arch}").as_bytes())]);
        let diff_id = oci::sha256_digest(&layer_tar);
        let layer = gzip(&layer_tar);
        let config = format!(
            r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}},"config":{{}}}}"#
        )
        .into_bytes();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{}}}]}}"#,
            oci::sha256_digest(&config),
            config.len(),
            oci::sha256_digest(&layer),
            layer.len()
        )
        .into_bytes();
        self.put(&layer).await;
        self.put(&config).await;
        let d = self.put(&manifest).await;
        oci::Descriptor {
            media_type: oci::OCI_MANIFEST.into(),
            digest: d,
            size: manifest.len() as i64,
            platform: Some(oci::Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: String::new(),
            }),
            ..Default::default()
        }
    }

    async fn index_of(&self, manifests: &[oci::Descriptor]) -> Descriptor {
        let index = serde_json::to_vec(&oci::Index {
            schema_version: 2,
            media_type: oci::MediaType::OciIndex,
            manifests: manifests.to_vec(),
            annotations: BTreeMap::new(),
        })
        .expect("json");
        let d = self.put(&index).await;
        Descriptor {
            media_type: oci::OCI_INDEX.into(),
            digest: d,
            size: index.len() as i64,
            annotations: BTreeMap::new(),
        }
    }

    async fn create_image(&self, name: &str, target: Descriptor) {
        self.images
            .create(
                NS,
                Image {
                    name: name.into(),
                    target: Some(target),
                    ..Default::default()
                },
            )
            .await
            .expect("create image");
    }

    /// A one-layer image `name` (with `file`) exported to the archive `out`, then wiped
    /// from the namespace: the manifest's descriptor, the archive, the manifest.
    async fn exported(
        &self,
        name: &str,
        file: &str,
        out: &str,
    ) -> (oci::Descriptor, PathBuf, oci::Manifest) {
        let m = self.image_manifest("amd64", file).await;
        self.create_image(name, plain(&m)).await;
        let out = self.path(out);
        self.archives
            .export(NS, &[name.to_string()], &out, ExportOptions::default())
            .await
            .expect("export");
        let manifest = self.manifest(&m.digest).await;
        self.wipe().await;
        (m, out, manifest)
    }

    /// The error of importing the archive at `path`, which must fail.
    async fn import_err(&self, path: &Path) -> Error {
        self.archives
            .import(NS, path, ImportOptions::default())
            .await
            .expect_err("the import must fail")
    }

    /// Exports the image `name` to `out`, for `platform` only if given.
    async fn export_platform(&self, name: &str, out: &Path, platform: Option<&str>) -> Result<()> {
        let opts = ExportOptions {
            platform: platform.map(str::to_string),
            ..Default::default()
        };
        self.archives
            .export(NS, &[name.to_string()], out, opts)
            .await
    }

    /// The stored manifest `digest`.
    async fn manifest(&self, digest: &str) -> oci::Manifest {
        serde_json::from_slice(&self.read(digest).await).expect("manifest")
    }

    /// Deletes every image and every blob of the namespace.
    async fn wipe(&self) {
        for i in self.images.list(NS, Filter::always()).await.expect("list") {
            self.images
                .delete(NS, &i.name, None, false)
                .await
                .expect("delete");
        }
        for c in self.content.list(NS, Filter::always()).await.expect("list") {
            self.content.delete(NS, &c.digest).await.expect("delete");
        }
    }

    async fn image_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .images
            .list(NS, Filter::always())
            .await
            .expect("list")
            .into_iter()
            .map(|i| i.name)
            .collect();
        names.sort();
        names
    }
}

fn plain(m: &oci::Descriptor) -> Descriptor {
    Descriptor {
        annotations: BTreeMap::new(),
        ..Descriptor::from(m)
    }
}

fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).expect("path");
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, *data).expect("append");
    }
    b.into_inner().expect("tar")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// Every member of a tar file: name, kind byte, data.
fn members(path: &Path) -> Vec<(String, u8, Vec<u8>)> {
    let mut ar = tar::Archive::new(File::open(path).expect("open"));
    let mut out = Vec::new();
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let kind = e.header().entry_type().as_byte();
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("data");
        out.push((name, kind, data));
    }
    out
}

/// Writes members back as a tar (regular files and directories only).
fn write_members(path: &Path, members: &[(String, u8, Vec<u8>)]) {
    let mut b = tar::Builder::new(File::create(path).expect("create"));
    for (name, kind, data) in members {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).expect("path");
        h.set_entry_type(tar::EntryType::new(*kind));
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, data.as_slice()).expect("append");
    }
    b.finish().expect("finish");
}

fn member<'a>(members: &'a [(String, u8, Vec<u8>)], name: &str) -> &'a [u8] {
    members
        .iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, _, d)| d.as_slice())
        .unwrap_or_else(|| panic!("no {name} in archive"))
}

fn blob_member(digest: &str) -> String {
    blob_tar_path(digest).expect("digest")
}

#[test]
fn references() {
    let n = docker_ref_name;
    assert_eq!(
        n("busybox").expect("ok"),
        "docker.io/library/busybox:latest"
    );
    assert_eq!(
        n("busybox:1.36").expect("ok"),
        "docker.io/library/busybox:1.36"
    );
    assert_eq!(n("user/app:v1").expect("ok"), "docker.io/user/app:v1");
    assert_eq!(
        n("index.docker.io/user/app").expect("ok"),
        "docker.io/user/app:latest"
    );
    assert_eq!(
        n("localhost:5000/app:2").expect("ok"),
        "localhost:5000/app:2"
    );
    let d = format!("sha256:{}", "a".repeat(64));
    assert_eq!(
        n(&format!("app:1@{d}")).expect("ok"),
        format!("docker.io/library/app@{d}")
    );
    assert!(n("Busybox").is_err());
    assert!(n("bad name").is_err());
    assert!(n("").is_err());
    let f = repo_tag;
    assert_eq!(
        f("docker.io/library/busybox:latest").as_deref(),
        Some("busybox:latest")
    );
    assert_eq!(f("docker.io/user/app:1").as_deref(), Some("user/app:1"));
    assert_eq!(f("example.com/a/b:1").as_deref(), Some("example.com/a/b:1"));
    assert_eq!(f(&format!("docker.io/library/app@{d}")), None);

    assert_eq!(oci_ref_name("docker.io/library/busybox:1.36"), "1.36");
    assert_eq!(oci_ref_name("localhost:5000/app:2"), "2");
    assert_eq!(
        oci_ref_name("docker.io/library/app"),
        "docker.io/library/app"
    );
    assert_eq!(
        oci_ref_name(&format!("docker.io/library/app@{d}")),
        format!("docker.io/library/app@{d}")
    );
    assert_eq!(oci_ref_name("plain"), "plain");
}

#[test]
fn member_paths() {
    assert_eq!(clean_path("./a//b/../c/"), "a/c");
    assert_eq!(
        blob_digest(&format!("blobs/sha256/{}", "0".repeat(64))),
        Some(format!("sha256:{}", "0".repeat(64)))
    );
    assert_eq!(blob_digest("blobs/sha256/xyz"), None);
}
