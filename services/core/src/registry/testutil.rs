//! Test fixtures: Debian's `docker-registry` on a free loopback port, tiny OCI images built
//! on the spot (a gzip tar layer, a config, a manifest, optionally an index) and pushed with
//! `skopeo`, and a content store on a temp dir.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::content::ContentStore;
use crate::images::Images;
use crate::leases::Leases;
use crate::metadata::Store;
use crate::pull::Puller;
use crate::push::Pusher;

use berth_oci::image as media;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn sha256_bytes(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub fn sha256_file(path: &Path) -> String {
    sha256_bytes(&std::fs::read(path).expect("read file"))
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A `docker-registry` process serving plain HTTP on 127.0.0.1; stopped (by pid) on drop.
pub struct TestRegistry {
    child: Child,
    port: u16,
    /// Config, data and log; removed on drop after the process is gone.
    _dir: tempfile::TempDir,
}

impl TestRegistry {
    /// Starts a registry; with `auth`, it requires that user (htpasswd, bcrypt).
    pub fn start(auth: Option<(&str, &str)>) -> TestRegistry {
        Self::start_with(auth, None)
    }

    /// Starts a registry serving HTTPS with `tls` = (certificate, key) PEM files.
    pub fn start_tls(cert: &Path, key: &Path) -> TestRegistry {
        Self::start_with(None, Some((cert, key)))
    }

    fn start_with(auth: Option<(&str, &str)>, tls: Option<(&Path, &Path)>) -> TestRegistry {
        let dir = tempfile::tempdir().expect("tmp");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n",
            dir.path().join("data").display()
        );
        if let Some((user, pass)) = auth {
            let line = run(Command::new("htpasswd").args(["-Bbn", user, pass]));
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, line).expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        // The port may be taken between probing and binding: try a few.
        for _ in 0..5 {
            let port = free_port();
            let mut cfg = format!("{config}http:\n  addr: 127.0.0.1:{port}\n");
            if let Some((cert, key)) = tls {
                cfg.push_str(&format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    cert.display(),
                    key.display()
                ));
            }
            let path = dir.path().join("config.yml");
            std::fs::write(&path, cfg).expect("write config");
            let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("start docker-registry");
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return TestRegistry {
                        child,
                        port,
                        _dir: dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default();
        panic!("docker-registry did not start: {log}");
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `skopeo inspect --raw` of a reference in this registry.
    pub fn inspect_raw(&self, repo_tag: &str, creds: Option<(&str, &str)>) -> Vec<u8> {
        let mut cmd = Command::new("skopeo");
        cmd.args(["inspect", "--raw", "--tls-verify=false"]);
        if let Some((u, p)) = creds {
            cmd.arg("--creds").arg(format!("{u}:{p}"));
        }
        cmd.arg(format!("docker://{}/{repo_tag}", self.host()));
        run(&mut cmd)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed certificate for 127.0.0.1 in `dir`: (`cert.pem`, `key.pem`).
pub fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null()));
    (cert, key)
}

/// One image of a layout.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub manifest_digest: String,
    pub manifest_size: i64,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
    pub platform: String,
}

/// An OCI image layout on a temp dir.
pub struct Layout {
    dir: tempfile::TempDir,
}

impl Layout {
    fn new() -> Layout {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(dir.path().join("blobs/sha256")).expect("mkdir");
        std::fs::write(
            dir.path().join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .expect("oci-layout");
        Layout { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.path()
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    fn add_blob(&self, data: &[u8]) -> (String, i64) {
        let d = sha256_bytes(data);
        std::fs::write(self.blob_path(&d), data).expect("write blob");
        (d, data.len() as i64)
    }

    fn platform_json(platform: &str) -> serde_json::Value {
        let mut parts = platform.split('/');
        let os = parts.next().unwrap_or("linux");
        let arch = parts.next().unwrap_or("amd64");
        let mut v = serde_json::json!({"os": os, "architecture": arch});
        if let Some(variant) = parts.next() {
            v["variant"] = serde_json::Value::String(variant.into());
        }
        v
    }

    /// Adds an image with one gzip tar layer holding `files`.
    fn add_image(&self, files: &[(&str, &[u8])], platform: &str) -> ImageInfo {
        let work = tempfile::tempdir().expect("tmp");
        let src = work.path().join("src");
        std::fs::create_dir_all(&src).expect("mkdir");
        for (name, data) in files {
            std::fs::write(src.join(name), data).expect("write file");
        }
        let tar = work.path().join("layer.tar");
        run(Command::new("tar")
            .args([
                "--sort=name",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--mtime=@0",
                "-C",
            ])
            .arg(&src)
            .arg("-cf")
            .arg(&tar)
            .arg("."));
        let diff_id = sha256_file(&tar);
        let gz = run(Command::new("gzip").args(["-n", "-c"]).arg(&tar));
        let (layer, layer_size) = self.add_blob(&gz);
        let mut config = Self::platform_json(platform);
        config["rootfs"] = serde_json::json!({"type": "layers", "diff_ids": [diff_id]});
        config["config"] = serde_json::json!({"Cmd": ["/hello"]});
        let (config_digest, config_size) =
            self.add_blob(&serde_json::to_vec(&config).expect("json"));
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "digest": config_digest, "size": config_size},
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer, "size": layer_size
            }]
        });
        let (manifest_digest, manifest_size) =
            self.add_blob(&serde_json::to_vec(&manifest).expect("json"));
        ImageInfo {
            manifest_digest,
            manifest_size,
            config_digest,
            layer_digests: vec![layer],
            platform: platform.to_string(),
        }
    }

    fn write_index_json(&self, media_type: &str, digest: &str, size: i64, tag: &str) {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": media_type, "digest": digest, "size": size,
                "annotations": {"org.opencontainers.image.ref.name": tag}
            }]
        });
        std::fs::write(
            self.path().join("index.json"),
            serde_json::to_vec(&index).expect("json"),
        )
        .expect("index.json");
    }

    fn skopeo_copy(
        &self,
        tag: &str,
        reg: &TestRegistry,
        repo_tag: &str,
        all: bool,
        creds: Option<(&str, &str)>,
    ) {
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
        ]);
        if all {
            cmd.arg("--all");
        }
        if let Some((u, p)) = creds {
            cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
        }
        cmd.arg(format!("oci:{}:{tag}", self.path().display()));
        cmd.arg(format!("docker://{}/{repo_tag}", reg.host()));
        run(&mut cmd);
    }
}

/// A single-manifest image.
pub struct OciImage {
    pub layout: Layout,
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
}

impl OciImage {
    pub fn build(files: &[(&str, &[u8])], platform: &str) -> OciImage {
        let layout = Layout::new();
        let info = layout.add_image(files, platform);
        layout.write_index_json(
            media::OCI_MANIFEST,
            &info.manifest_digest,
            info.manifest_size,
            "t",
        );
        OciImage {
            layout,
            manifest_digest: info.manifest_digest,
            config_digest: info.config_digest,
            layer_digests: info.layer_digests,
        }
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.layout.blob_path(digest)
    }

    pub fn push(&self, reg: &TestRegistry, repo_tag: &str, creds: Option<(&str, &str)>) {
        self.layout.skopeo_copy("t", reg, repo_tag, false, creds);
    }
}

/// A multi-platform image: an OCI index with one image per platform.
pub struct OciIndex {
    pub layout: Layout,
    pub index_digest: String,
    pub images: Vec<ImageInfo>,
}

impl OciIndex {
    pub fn build(platforms: &[&str]) -> OciIndex {
        let layout = Layout::new();
        let images: Vec<ImageInfo> = platforms
            .iter()
            .map(|p| layout.add_image(&[("platform.txt", p.as_bytes())], p))
            .collect();
        let manifests: Vec<serde_json::Value> = images
            .iter()
            .map(|i| {
                serde_json::json!({
                    "mediaType": media::OCI_MANIFEST,
                    "digest": i.manifest_digest,
                    "size": i.manifest_size,
                    "platform": Layout::platform_json(&i.platform),
                })
            })
            .collect();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_INDEX,
            "manifests": manifests,
        });
        let (index_digest, index_size) =
            layout.add_blob(&serde_json::to_vec(&index).expect("json"));
        layout.write_index_json(media::OCI_INDEX, &index_digest, index_size, "t");
        OciIndex {
            layout,
            index_digest,
            images,
        }
    }

    pub fn push(&self, reg: &TestRegistry, repo_tag: &str) {
        self.layout.skopeo_copy("t", reg, repo_tag, true, None);
    }
}

/// A metadata store, content store, images and leases on a temp dir, with the paths a
/// puller needs (no hosts directory, an empty credentials file location).
pub struct Env {
    /// Holds the store's files; removed on drop.
    pub _dir: tempfile::TempDir,
    pub content: ContentStore,
    pub images: Images,
    pub leases: Leases,
    pub credentials: PathBuf,
    pub hosts_dir: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("tmp");
        let meta = Store::open(&dir.path().join("meta.redb")).expect("db");
        let content = ContentStore::open(
            dir.path(),
            meta.clone(),
            crate::content::DEFAULT_INGEST_EXPIRY,
            crate::events::Exchange::new(),
            &crate::collector::channel().0,
        )
        .expect("content");
        Env {
            content,
            images: Images::new(
                meta.clone(),
                crate::events::Exchange::new(),
                crate::collector::channel().0,
            ),
            leases: Leases::new(meta, crate::collector::channel().0),
            credentials: dir.path().join("auth/config.json"),
            hosts_dir: dir.path().join("certs.d"),
            _dir: dir,
        }
    }

    pub fn puller(&self) -> Puller {
        Puller::new(
            self.content.clone(),
            self.images.clone(),
            self.leases.clone(),
            self.hosts_dir.clone(),
            self.credentials.clone(),
        )
    }

    pub fn pusher(&self) -> Pusher {
        Pusher::new(
            self.content.clone(),
            self.images.clone(),
            self.hosts_dir.clone(),
            self.credentials.clone(),
        )
    }
}

/// One request as a [`ScriptedServer`] saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Lower-cased names.
    pub headers: std::collections::HashMap<String, String>,
}

/// An answer of a [`ScriptedServer`].
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Answer {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
}

type Handler = dyn Fn(&SeenRequest, u16) -> Answer + Send + Sync;

/// A plain-HTTP/1.1 server on 127.0.0.1 that answers each request with a closure, for the
/// registry behaviours `docker-registry` cannot show (bearer tokens, ignored ranges). One
/// request per connection. Stops when dropped.
pub struct ScriptedServer {
    pub port: u16,
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<SeenRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedServer {
    pub async fn start(
        handler: impl Fn(&SeenRequest, u16) -> Answer + Send + Sync + 'static,
    ) -> ScriptedServer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let handler: std::sync::Arc<Handler> = std::sync::Arc::new(handler);
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        // Not HTTP (a TLS handshake): hang up, as a plain-HTTP server would.
                        if !buf[0].is_ascii_uppercase() {
                            return;
                        }
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i;
                        }
                        if buf.len() > 64 << 10 {
                            return;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                    let mut lines = head.split("\r\n");
                    let mut first = lines.next().unwrap_or_default().split(' ');
                    let (Some(method), Some(target)) = (first.next(), first.next()) else {
                        return;
                    };
                    let headers: std::collections::HashMap<String, String> = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                        .collect();
                    let want: usize = headers
                        .get("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let mut have = buf.len() - head_end - 4;
                    while have < want {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => have += n,
                        }
                    }
                    let req = SeenRequest {
                        method: method.to_string(),
                        target: target.to_string(),
                        headers,
                    };
                    if let Ok(mut l) = log.lock() {
                        l.push(req.clone());
                    }
                    let answer = handler(&req, port);
                    let mut out = format!(
                        "HTTP/1.1 {} Scripted\r\nContent-Length: {}\r\nConnection: close\r\n",
                        answer.status,
                        answer.body.len()
                    );
                    for (k, v) in &answer.headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    out.push_str("\r\n");
                    let mut bytes = out.into_bytes();
                    if req.method != "HEAD" {
                        bytes.extend_from_slice(&answer.body);
                    }
                    let _ = sock.write_all(&bytes).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        ScriptedServer { port, seen, task }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<SeenRequest> {
        self.seen.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
