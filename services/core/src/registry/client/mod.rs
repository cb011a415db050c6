//! The registry v2 HTTP client for one registry host: resolve, fetch and push manifests and
//! blobs, trying the host's endpoints (mirrors, then the server) in order.
//!
//! Errors name the registry's answer and map onto the daemon's classes: 404 is NotFound,
//! 401/403 FailedPrecondition ("unauthorized: ..."), 5xx, 429 and an unreachable registry
//! Unavailable, 400 InvalidArgument. A manifest whose bytes do not hash to the digest asked
//! for is FailedPrecondition naming both digests.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt;

use super::auth::{self, Authorizer};
use super::hosts::{self, Capabilities, Endpoint, HostOptions};
use super::http::{
    content_type, describe_reqwest, docker_content_digest, header_str, read_limited,
    registry_message,
};
use crate::digest;
use crate::error::{Error, Result};
use crate::images::Descriptor;
use berth_oci::image as media;

const USER_AGENT: &str = concat!("berth/", env!("CARGO_PKG_VERSION"));
/// How much of an error body is read to find the registry's message.
const MAX_ERROR_BODY: usize = 64 << 10;

/// Where a client finds its configuration.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// containerd-style hosts directory (`<dir>/<host>/hosts.toml`); none for defaults only.
    pub hosts_dir: Option<PathBuf>,
    /// Docker-style `config.json` with credentials; none for anonymous access.
    pub credentials_file: Option<PathBuf>,
    /// Plain HTTP to the registry's default server (ctr's `--plain-http`).
    pub plain_http: bool,
    /// Do not verify TLS certificates (ctr's `--skip-verify`).
    pub skip_verify: bool,
    /// The daemon's mirrors of Docker Hub (`registry.mirrors`).
    pub mirrors: Vec<String>,
    /// The daemon's insecure registries (`registry.insecure_registries`).
    pub insecure: Vec<String>,
}

/// Where the daemon finds its registries: the hosts directory (`registry.config_path`),
/// Docker Hub's mirrors and the insecure registries of its configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hosts {
    pub dir: PathBuf,
    pub mirrors: Vec<String>,
    pub insecure: Vec<String>,
}

/// Docker's default number of search results.
const DEFAULT_SEARCH_LIMIT: u32 = 25;

/// The registry host a client named (`http://h:5000/` is `h:5000`; empty and Docker Hub's
/// aliases are `docker.io`).
pub fn server_host(server: &str) -> String {
    let bare = server
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let bare = bare.split('/').next().unwrap_or(bare);
    if bare.is_empty() {
        return "docker.io".to_string();
    }
    auth::normalize_host(bare)
}

impl Hosts {
    /// Checks `creds` against `registry` (as [`RegistryClient::check_login`]); the
    /// registry host they belong to.
    pub async fn login(&self, registry: &str, creds: auth::Credentials) -> Result<String> {
        if creds.username.is_empty() || creds.password.is_empty() {
            return Err(Error::invalid("username and password must not be empty"));
        }
        let server = server_host(registry);
        self.client(&server, Some(creds))
            .await?
            .check_login()
            .await?;
        tracing::info!(registry = %server, "login checked");
        Ok(server)
    }

    /// The repositories of `registry`'s catalog whose name contains `term` (any case), at
    /// most `limit` of them (0: Docker's 25).
    pub async fn search(
        &self,
        registry: &str,
        term: &str,
        limit: u32,
        creds: Option<auth::Credentials>,
    ) -> Result<Vec<String>> {
        let limit = if limit == 0 {
            DEFAULT_SEARCH_LIMIT
        } else {
            limit
        };
        let client = self.client(&server_host(registry), creds).await?;
        // The catalog is asked for more than the limit: the term filters it here.
        let names = client.catalog(limit.max(1000)).await?;
        let term = term.to_ascii_lowercase();
        Ok(names
            .into_iter()
            .filter(|n| n.to_ascii_lowercase().contains(&term))
            .take(limit as usize)
            .collect())
    }

    /// A client for `registry` with these hosts, and `creds` for it when given (no
    /// credentials file: anonymous otherwise).
    pub async fn client(
        &self,
        registry: &str,
        creds: Option<auth::Credentials>,
    ) -> Result<RegistryClient> {
        let client = RegistryClient::new(
            registry,
            &ClientOptions {
                hosts_dir: Some(self.dir.clone()),
                credentials_file: None,
                plain_http: false,
                skip_verify: false,
                mirrors: self.mirrors.clone(),
                insecure: self.insecure.clone(),
            },
        )
        .await?;
        Ok(match creds {
            Some(c) => client.with_credentials(c),
            None => client,
        })
    }
}

impl From<PathBuf> for Hosts {
    fn from(dir: PathBuf) -> Hosts {
        Hosts {
            dir,
            ..Default::default()
        }
    }
}

/// The daemon's registry configuration, from which pull and push make a client per
/// registry: its [`Hosts`] and the `config.json`-style credentials file; either may not
/// exist.
#[derive(Debug, Clone)]
pub struct Registries {
    pub hosts: Hosts,
    pub credentials: PathBuf,
}

impl Registries {
    /// A client for `registry`, over plain HTTP and without TLS verification as asked
    /// (ctr's `--plain-http`, `--skip-verify`).
    pub async fn client(
        &self,
        registry: &str,
        plain_http: bool,
        skip_verify: bool,
    ) -> Result<RegistryClient> {
        RegistryClient::new(
            registry,
            &ClientOptions {
                hosts_dir: Some(self.hosts.dir.clone()),
                credentials_file: Some(self.credentials.clone()),
                plain_http,
                skip_verify,
                mirrors: self.hosts.mirrors.clone(),
                insecure: self.hosts.insecure.clone(),
            },
        )
        .await
    }
}

/// What an operation needs an endpoint to be able to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Resolve,
    Pull,
}

impl Need {
    fn allows(self, c: &Capabilities) -> bool {
        match self {
            Need::Resolve => c.resolve,
            Need::Pull => c.pull,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Need::Resolve => "resolve",
            Need::Pull => "pull",
        }
    }
}

/// One endpoint with its HTTP client.
struct Ep {
    endpoint: Endpoint,
    http: reqwest::Client,
    /// Set once an https endpoint with `http_fallback` turned out to speak plain HTTP.
    plain: AtomicBool,
}

impl Ep {
    fn host(&self) -> String {
        self.endpoint.host()
    }

    /// `<api root>/<repo>/<rest>`, with the scheme in use and `?ns=` for mirrors.
    fn url(&self, registry: &str, repo: &str, rest: &str) -> Result<Url> {
        let mut url = self.endpoint.url.clone();
        if self.plain.load(Ordering::Relaxed) {
            let _ = url.set_scheme("http");
        }
        let path = format!("{}/{repo}/{rest}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        if self.endpoint.mirror {
            url.query_pairs_mut().append_pair("ns", registry);
        }
        Ok(url)
    }
}

/// A request body that can be produced again for a retry.
#[derive(Debug, Clone)]
pub enum BlobSource {
    Bytes(Vec<u8>),
    /// A file and its size.
    File(PathBuf, u64),
}

impl BlobSource {
    async fn body(&self) -> Result<(reqwest::Body, u64)> {
        match self {
            BlobSource::Bytes(b) => Ok((reqwest::Body::from(b.clone()), b.len() as u64)),
            BlobSource::File(path, size) => {
                let f = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| Error::io("open blob", path, e))?;
                let stream = futures::stream::unfold(Some(f), |state| async move {
                    let mut f = state?;
                    let mut buf = vec![0u8; 256 << 10];
                    match f.read(&mut buf).await {
                        Ok(0) => None,
                        Ok(n) => {
                            buf.truncate(n);
                            Some((Ok::<_, std::io::Error>(buf), Some(f)))
                        }
                        Err(e) => Some((Err(e), None)),
                    }
                });
                Ok((reqwest::Body::wrap_stream(stream), *size))
            }
        }
    }
}

/// A blob download in progress.
pub struct BlobReader {
    /// The offset the body starts at: the offset asked for, or 0 when the registry ignored
    /// the range.
    pub start: u64,
    response: reqwest::Response,
    registry: String,
}

impl BlobReader {
    /// Appends the next piece of the body to `buf`; returns how many bytes were added (0 at
    /// the end).
    pub async fn read_into(&mut self, buf: &mut Vec<u8>) -> Result<usize> {
        match self.response.chunk().await {
            Ok(Some(c)) => {
                buf.extend_from_slice(&c);
                Ok(c.len())
            }
            Ok(None) => Ok(0),
            Err(e) => Err(Error::Unavailable(format!(
                "reading blob from {}: {}",
                self.registry,
                describe_reqwest(&e)
            ))),
        }
    }
}

/// The failures of one operation across endpoints: the first error other than NotFound
/// wins (containerd's resolver does the same); NotFound everywhere is NotFound.
#[derive(Default)]
struct Attempts {
    first: Option<Error>,
    not_found: Option<Error>,
}

impl Attempts {
    fn failed(&mut self, registry: &str, ep: &Ep, e: Error) {
        tracing::debug!(registry = %registry, endpoint = %ep.endpoint.url, error = %e, "trying next endpoint");
        if e.is_not_found() {
            self.not_found = Some(e);
        } else if self.first.is_none() {
            self.first = Some(e);
        }
    }

    fn finish(self, registry: &str, need: Need) -> Error {
        self.first.or(self.not_found).unwrap_or_else(|| {
            Error::precondition(format!(
                "no endpoint of registry {registry} may {} (check its hosts.toml capabilities)",
                need.name()
            ))
        })
    }
}

/// A registry client for one registry host (`docker.io`, `localhost:5000`).
pub struct RegistryClient {
    registry: String,
    endpoints: Vec<Ep>,
    auth: Authorizer,
}

fn sha256_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A media type that names no manifest kind (some registries answer `application/json`).
fn is_generic(mt: &str) -> bool {
    matches!(
        mt,
        "" | "application/json" | "text/plain" | "application/octet-stream"
    )
}

fn pull_scope(repo: &str) -> Vec<String> {
    vec![format!("repository:{repo}:pull")]
}

fn push_scope(repo: &str) -> Vec<String> {
    vec![format!("repository:{repo}:pull,push")]
}

impl RegistryClient {
    /// Loads the host's endpoints and the credentials (on the blocking pool) and builds one
    /// HTTP client per endpoint.
    pub async fn new(registry: &str, opts: &ClientOptions) -> Result<RegistryClient> {
        let host_opts = HostOptions {
            plain_http: opts.plain_http,
            skip_verify: opts.skip_verify,
            insecure: hosts::is_insecure(&opts.insecure, registry),
            // Docker's registry mirrors are Docker Hub's.
            mirrors: if registry == "docker.io" {
                opts.mirrors.clone()
            } else {
                Vec::new()
            },
        };
        let (reg, dir, creds_file) = (
            registry.to_string(),
            opts.hosts_dir.clone(),
            opts.credentials_file.clone(),
        );
        let (endpoints, cas, creds) = tokio::task::spawn_blocking(move || {
            let eps = hosts::endpoints(dir.as_deref(), &reg, &host_opts)?;
            let mut cas = Vec::new();
            for e in &eps {
                let mut pems = Vec::new();
                for p in &e.ca {
                    pems.push(std::fs::read(p).map_err(|err| Error::io("read CA", p, err))?);
                }
                cas.push(pems);
            }
            let creds = match &creds_file {
                Some(f) => auth::load(f)?,
                None => auth::CredentialFile::default(),
            };
            Ok::<_, Error>((eps, cas, creds))
        })
        .await
        .map_err(|e| Error::Internal(format!("registry config task: {e}")))??;
        let mut eps = Vec::new();
        for (endpoint, pems) in endpoints.into_iter().zip(cas) {
            let http = build_http(&endpoint, &pems)?;
            eps.push(Ep {
                endpoint,
                http,
                plain: AtomicBool::new(false),
            });
        }
        Ok(RegistryClient {
            registry: registry.to_string(),
            endpoints: eps,
            auth: Authorizer::new(registry, creds),
        })
    }

    /// This client with `creds` for its registry in place of the credentials file's (a
    /// login checks credentials before they are stored).
    pub fn with_credentials(mut self, creds: auth::Credentials) -> RegistryClient {
        let mut file = auth::CredentialFile::default();
        file.insert(&self.registry, creds);
        self.auth = Authorizer::new(&self.registry, file);
        self
    }

    /// The registry itself: its own endpoint, not a mirror's.
    fn server(&self) -> Result<&Ep> {
        self.endpoints
            .iter()
            .rev()
            .find(|e| !e.endpoint.mirror)
            .ok_or_else(|| {
                Error::invalid(format!("registry {}: no server endpoint", self.registry))
            })
    }

    /// `<api root>/<rest>` of an endpoint, with the scheme in use.
    fn api_url(ep: &Ep, rest: &str) -> Url {
        let mut url = ep.endpoint.url.clone();
        if ep.plain.load(Ordering::Relaxed) {
            let _ = url.set_scheme("http");
        }
        let path = format!("{}/{rest}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url
    }

    /// Checks that the registry accepts this client's credentials (`GET /v2/`, answering
    /// its challenge), as Docker's login does: Ok, or why not (a 401 is FailedPrecondition,
    /// "unauthorized: ...").
    pub async fn check_login(&self) -> Result<()> {
        let ep = self.server()?;
        let url = Self::api_url(ep, "");
        let resp = self
            .send(ep, Method::GET, url.clone(), &[], &HeaderMap::new(), None)
            .await?;
        if resp.status().is_success() {
            return Ok(());
        }
        Err(self
            .status_error(ep, resp, &format!("login attempt to {url}"))
            .await)
    }

    /// The repositories of the registry's catalog (`GET /v2/_catalog?n=N`), where it offers
    /// one.
    pub async fn catalog(&self, limit: u32) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Catalog {
            #[serde(default)]
            repositories: Vec<String>,
        }
        let ep = self.server()?;
        let mut url = Self::api_url(ep, "_catalog");
        url.set_query(Some(&format!("n={limit}")));
        let scopes = vec!["registry:catalog:*".to_string()];
        let resp = self
            .send(
                ep,
                Method::GET,
                url.clone(),
                &scopes,
                &HeaderMap::new(),
                None,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self.status_error(ep, resp, &format!("GET {url}")).await);
        }
        let body = resp.bytes().await.map_err(|e| {
            Error::Unavailable(format!(
                "GET {url}: read the answer: {}",
                describe_reqwest(&e)
            ))
        })?;
        let catalog: Catalog = serde_json::from_slice(&body)
            .map_err(|e| Error::Unavailable(format!("GET {url}: not a catalog: {e}")))?;
        Ok(catalog.repositories)
    }

    /// The registry host this client talks to.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The endpoints in the order they are tried.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.iter().map(|e| &e.endpoint)
    }

    /// Sends one request to an endpoint, answering an auth challenge once and falling back
    /// to plain HTTP for loopback registries that do not speak TLS.
    async fn send(
        &self,
        ep: &Ep,
        method: Method,
        url: Url,
        scopes: &[String],
        headers: &HeaderMap,
        body: Option<&BlobSource>,
    ) -> Result<reqwest::Response> {
        let mut url = url;
        let mut challenged = false;
        let mut fell_back = false;
        loop {
            let mut req = ep.http.request(method.clone(), url.clone());
            for (k, vs) in &ep.endpoint.headers {
                for v in vs {
                    req = req.header(k.as_str(), v.as_str());
                }
            }
            req = req.headers(headers.clone());
            if let Some(a) = self
                .auth
                .authorization(&ep.http, &ep.host(), scopes)
                .await?
            {
                req = req.header(header::AUTHORIZATION, a);
            }
            if let Some(b) = body {
                let (body, len) = b.body().await?;
                req = req.header(header::CONTENT_LENGTH, len).body(body);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    if e.is_connect()
                        && ep.endpoint.http_fallback
                        && !fell_back
                        && url.scheme() == "https"
                    {
                        tracing::debug!(registry = %ep.host(), error = %describe_reqwest(&e), "https failed; trying plain http");
                        ep.plain.store(true, Ordering::Relaxed);
                        let _ = url.set_scheme("http");
                        fell_back = true;
                        continue;
                    }
                    return Err(Error::Unavailable(format!(
                        "{method} {url}: registry {} unreachable: {}",
                        ep.host(),
                        describe_reqwest(&e)
                    )));
                }
            };
            if resp.status() == StatusCode::UNAUTHORIZED && !challenged {
                let www: Vec<String> = resp
                    .headers()
                    .get_all(header::WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok().map(str::to_string))
                    .collect();
                challenged = true;
                if self.auth.challenged(&ep.host(), &www)? {
                    continue;
                }
            }
            return Ok(resp);
        }
    }

    /// Turns a failed answer into an error that names it.
    async fn status_error(&self, ep: &Ep, mut resp: reqwest::Response, what: &str) -> Error {
        let status = resp.status();
        let body = read_limited(&mut resp, MAX_ERROR_BODY)
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let msg = registry_message(&body);
        let host = ep.host();
        let said = if msg.is_empty() {
            String::new()
        } else {
            format!(": {msg}")
        };
        match status.as_u16() {
            401 => {
                let creds = if self.auth.credentials_for(&host).is_some() {
                    "the credentials were rejected"
                } else {
                    "no credentials are configured for it"
                };
                Error::precondition(format!(
                    "unauthorized: {what}: registry {host} answered {status} ({creds}){said}"
                ))
            }
            403 => Error::precondition(format!(
                "denied: {what}: registry {host} answered {status}{said}"
            )),
            404 => Error::not_found(format!("{what}: registry {host} answered {status}{said}")),
            400 => Error::invalid(format!("{what}: registry {host} answered {status}{said}")),
            429 | 500..=599 => {
                Error::Unavailable(format!("{what}: registry {host} answered {status}{said}"))
            }
            _ => Error::precondition(format!("{what}: registry {host} answered {status}{said}")),
        }
    }

    /// The endpoints that can do `need`, in order.
    fn candidates(&self, need: Need) -> Vec<&Ep> {
        self.endpoints
            .iter()
            .filter(|e| need.allows(&e.endpoint.capabilities))
            .collect()
    }

    fn accept_manifests() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static(media::MANIFEST_ACCEPT),
        );
        h
    }

    /// Resolves a tag or digest of `repo` to the descriptor of its manifest or index.
    #[tracing::instrument(level = "debug", skip(self), fields(registry = %self.registry))]
    pub async fn resolve(&self, repo: &str, object: &str) -> Result<Descriptor> {
        let by_digest = object.contains(':');
        if by_digest {
            digest::validate(object)?;
        }
        let need = if by_digest { Need::Pull } else { Need::Resolve };
        let scopes = pull_scope(repo);
        let mut attempts = Attempts::default();
        for ep in self.candidates(need) {
            match self.resolve_at(ep, repo, object, by_digest, &scopes).await {
                Ok(v) => return Ok(v),
                Err(e) => attempts.failed(&self.registry, ep, e),
            }
        }
        Err(attempts.finish(&self.registry, need))
    }

    /// `resolve` against one endpoint: HEAD, and GET when HEAD says too little.
    async fn resolve_at(
        &self,
        ep: &Ep,
        repo: &str,
        object: &str,
        by_digest: bool,
        scopes: &[String],
    ) -> Result<Descriptor> {
        let url = ep.url(&self.registry, repo, &format!("manifests/{object}"))?;
        let sep = if by_digest { '@' } else { ':' };
        let what = format!("resolving {}/{repo}{sep}{object}", self.registry);
        if let Some(desc) = self
            .resolve_head(ep, url.clone(), object, by_digest, scopes, &what)
            .await?
        {
            return Ok(desc);
        }
        // HEAD said too little: GET the manifest and hash it.
        let mut resp = self
            .send(
                ep,
                Method::GET,
                url,
                scopes,
                &Self::accept_manifests(),
                None,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self.status_error(ep, resp, &what).await);
        }
        let mut mt = content_type(resp.headers()).unwrap_or_default();
        let body = read_limited(&mut resp, media::MAX_MANIFEST_SIZE as usize)
            .await
            .map_err(|e| e.context(&what))?;
        let actual = sha256_of(&body);
        if by_digest && actual != object {
            return Err(Error::precondition(format!(
                "{what}: digest mismatch: registry {} sent content with digest {actual}, expected {object}",
                ep.host()
            )));
        }
        if is_generic(&mt) {
            let (sniffed, schema) = media::sniff(&body);
            mt = match (sniffed, schema) {
                (Some(m), _) => m,
                (None, Some(1)) => media::DOCKER_SCHEMA1_SIGNED.to_string(),
                (None, _) => mt,
            };
        }
        Ok(Descriptor {
            media_type: mt,
            digest: actual,
            size: body.len() as i64,
            annotations: Default::default(),
        })
    }

    /// `resolve_at`'s HEAD of the manifest: its descriptor, or None when the answer
    /// says too little (no digest or size, a generic media type) or the registry does not
    /// take HEAD.
    async fn resolve_head(
        &self,
        ep: &Ep,
        url: Url,
        object: &str,
        by_digest: bool,
        scopes: &[String],
        what: &str,
    ) -> Result<Option<Descriptor>> {
        let head = self
            .send(
                ep,
                Method::HEAD,
                url,
                scopes,
                &Self::accept_manifests(),
                None,
            )
            .await?;
        if head.status().is_success() {
            let h = head.headers();
            let dg = docker_content_digest(h).or_else(|| by_digest.then(|| object.to_string()));
            let mt = content_type(h).unwrap_or_default();
            let size = header_str(h, header::CONTENT_LENGTH).and_then(|s| s.parse::<i64>().ok());
            if let (Some(dg), Some(size)) = (dg, size)
                && !is_generic(&mt)
                && size > 0
            {
                if by_digest && dg != object {
                    return Err(Error::precondition(format!(
                        "{what}: registry {} answered with digest {dg}, expected {object}",
                        ep.host()
                    )));
                }
                digest::validate(&dg)?;
                return Ok(Some(Descriptor {
                    media_type: mt,
                    digest: dg,
                    size,
                    annotations: Default::default(),
                }));
            }
        } else if head.status() != StatusCode::METHOD_NOT_ALLOWED
            && head.status() != StatusCode::NOT_IMPLEMENTED
            && head.status() != StatusCode::BAD_REQUEST
        {
            return Err(self.status_error(ep, head, what).await);
        }
        Ok(None)
    }

    /// Fetches a manifest or index by its descriptor and checks size and digest.
    #[tracing::instrument(level = "debug", skip(self, desc), fields(registry = %self.registry, digest = %desc.digest))]
    pub async fn fetch_manifest(&self, repo: &str, desc: &Descriptor) -> Result<Vec<u8>> {
        digest::validate(&desc.digest)?;
        if desc.size > media::MAX_MANIFEST_SIZE {
            return Err(Error::precondition(format!(
                "manifest {} is {} bytes, more than the {} allowed",
                desc.digest,
                desc.size,
                media::MAX_MANIFEST_SIZE
            )));
        }
        let scopes = pull_scope(repo);
        let mut attempts = Attempts::default();
        for ep in self.candidates(Need::Pull) {
            match self.fetch_manifest_at(ep, repo, desc, &scopes).await {
                Ok(v) => return Ok(v),
                Err(e) => attempts.failed(&self.registry, ep, e),
            }
        }
        Err(attempts.finish(&self.registry, Need::Pull))
    }

    /// `fetch_manifest` from one endpoint.
    async fn fetch_manifest_at(
        &self,
        ep: &Ep,
        repo: &str,
        desc: &Descriptor,
        scopes: &[String],
    ) -> Result<Vec<u8>> {
        let what = format!(
            "fetching manifest {} of {}/{repo}",
            desc.digest, self.registry
        );
        let url = ep.url(&self.registry, repo, &format!("manifests/{}", desc.digest))?;
        let mut resp = self
            .send(
                ep,
                Method::GET,
                url,
                scopes,
                &Self::accept_manifests(),
                None,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self.status_error(ep, resp, &what).await);
        }
        let limit = if desc.size > 0 {
            desc.size as usize
        } else {
            media::MAX_MANIFEST_SIZE as usize
        };
        let body = read_limited(&mut resp, limit)
            .await
            .map_err(|e| e.context(&what))?;
        verify(&body, desc).map_err(|e| e.context(&format!("{what} from {}", ep.host())))?;
        Ok(body)
    }

    /// Starts downloading a blob at `offset` (`Range: bytes=<offset>-`). The reader's `start`
    /// says where the body really begins: 0 when the registry ignored the range.
    #[tracing::instrument(level = "debug", skip(self, desc), fields(registry = %self.registry, digest = %desc.digest))]
    pub async fn fetch_blob(
        &self,
        repo: &str,
        desc: &Descriptor,
        offset: u64,
    ) -> Result<BlobReader> {
        digest::validate(&desc.digest)?;
        let scopes = pull_scope(repo);
        let mut attempts = Attempts::default();
        for ep in self.candidates(Need::Pull) {
            match self.fetch_blob_at(ep, repo, desc, offset, &scopes).await {
                Ok(v) => return Ok(v),
                Err(e) => attempts.failed(&self.registry, ep, e),
            }
        }
        Err(attempts.finish(&self.registry, Need::Pull))
    }

    /// `fetch_blob` from one endpoint, starting over when it answers for another range.
    async fn fetch_blob_at(
        &self,
        ep: &Ep,
        repo: &str,
        desc: &Descriptor,
        offset: u64,
        scopes: &[String],
    ) -> Result<BlobReader> {
        let what = format!("fetching blob {} of {}/{repo}", desc.digest, self.registry);
        let url = ep.url(&self.registry, repo, &format!("blobs/{}", desc.digest))?;
        let mut offset = offset;
        loop {
            let mut h = HeaderMap::new();
            if offset > 0
                && let Ok(v) = HeaderValue::from_str(&format!("bytes={offset}-"))
            {
                h.insert(header::RANGE, v);
            }
            let resp = self
                .send(ep, Method::GET, url.clone(), scopes, &h, None)
                .await?;
            let start = match resp.status() {
                StatusCode::OK => 0,
                StatusCode::PARTIAL_CONTENT => {
                    let start = header_str(resp.headers(), header::CONTENT_RANGE)
                        .and_then(|r| {
                            r.strip_prefix("bytes ")
                                .and_then(|r| r.split('-').next())
                                .and_then(|s| s.trim().parse::<u64>().ok())
                        })
                        .unwrap_or(offset);
                    if start != offset {
                        // An answer for another range: start over.
                        offset = 0;
                        continue;
                    }
                    start
                }
                StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 => {
                    offset = 0;
                    continue;
                }
                _ => return Err(self.status_error(ep, resp, &what).await),
            };
            return Ok(BlobReader {
                start,
                response: resp,
                registry: ep.host(),
            });
        }
    }

    /// The size of a blob the repository has, or None.
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<Option<i64>> {
        digest::validate(digest)?;
        let scopes = push_scope(repo);
        let ep = self.push_endpoint()?;
        let what = format!("checking blob {digest} in {}/{repo}", self.registry);
        let url = ep.url(&self.registry, repo, &format!("blobs/{digest}"))?;
        let resp = self
            .send(ep, Method::HEAD, url, &scopes, &HeaderMap::new(), None)
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(Some(
                header_str(resp.headers(), header::CONTENT_LENGTH)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
            )),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.status_error(ep, resp, &what).await),
        }
    }

    /// Whether the repository has a manifest (by digest).
    pub async fn manifest_exists(&self, repo: &str, digest: &str) -> Result<bool> {
        digest::validate(digest)?;
        let scopes = push_scope(repo);
        let ep = self.push_endpoint()?;
        let what = format!("checking manifest {digest} in {}/{repo}", self.registry);
        let url = ep.url(&self.registry, repo, &format!("manifests/{digest}"))?;
        let resp = self
            .send(
                ep,
                Method::HEAD,
                url,
                &scopes,
                &Self::accept_manifests(),
                None,
            )
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.status_error(ep, resp, &what).await),
        }
    }

    fn push_endpoint(&self) -> Result<&Ep> {
        self.endpoints
            .iter()
            .find(|e| e.endpoint.capabilities.push)
            .ok_or_else(|| {
                Error::precondition(format!(
                    "no endpoint of registry {} may push (check its hosts.toml capabilities)",
                    self.registry
                ))
            })
    }

    /// Uploads a blob: POST to open an upload, then one PUT with the content and digest.
    #[tracing::instrument(level = "debug", skip(self, desc, source), fields(registry = %self.registry, digest = %desc.digest))]
    pub async fn push_blob(&self, repo: &str, desc: &Descriptor, source: BlobSource) -> Result<()> {
        digest::validate(&desc.digest)?;
        let scopes = push_scope(repo);
        let ep = self.push_endpoint()?;
        let what = format!("pushing blob {} to {}/{repo}", desc.digest, self.registry);
        let url = ep.url(&self.registry, repo, "blobs/uploads/")?;
        let resp = self
            .send(
                ep,
                Method::POST,
                url.clone(),
                &scopes,
                &HeaderMap::new(),
                None,
            )
            .await?;
        if resp.status() == StatusCode::CREATED {
            return Ok(());
        }
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.status_error(ep, resp, &what).await);
        }
        let location = header_str(resp.headers(), header::LOCATION).ok_or_else(|| {
            Error::Unavailable(format!(
                "{what}: registry {} opened an upload without a Location",
                ep.host()
            ))
        })?;
        let mut put = url.join(&location).map_err(|e| {
            Error::Unavailable(format!(
                "{what}: registry {} gave an invalid upload location {location:?}: {e}",
                ep.host()
            ))
        })?;
        put.query_pairs_mut().append_pair("digest", &desc.digest);
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        let resp = self
            .send(ep, Method::PUT, put, &scopes, &h, Some(&source))
            .await?;
        if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
            return Err(self.status_error(ep, resp, &what).await);
        }
        if let Some(dg) = docker_content_digest(resp.headers())
            && dg != desc.digest
        {
            return Err(Error::precondition(format!(
                "{what}: digest mismatch: registry {} stored {dg}, expected {}",
                ep.host(),
                desc.digest
            )));
        }
        Ok(())
    }

    /// Uploads a manifest or index under a tag or its digest; returns the digest the
    /// registry reports.
    #[tracing::instrument(level = "debug", skip(self, data), fields(registry = %self.registry))]
    pub async fn push_manifest(
        &self,
        repo: &str,
        object: &str,
        media_type: &str,
        data: Vec<u8>,
    ) -> Result<String> {
        let expected = sha256_of(&data);
        if object.contains(':') && object != expected {
            return Err(Error::invalid(format!(
                "manifest content has digest {expected}, not {object}"
            )));
        }
        let scopes = push_scope(repo);
        let ep = self.push_endpoint()?;
        let what = format!(
            "pushing manifest {expected} to {}/{repo}:{object}",
            self.registry
        );
        let url = ep.url(&self.registry, repo, &format!("manifests/{object}"))?;
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(media_type)
                .map_err(|_| Error::invalid(format!("invalid media type {media_type:?}")))?,
        );
        let resp = self
            .send(
                ep,
                Method::PUT,
                url,
                &scopes,
                &h,
                Some(&BlobSource::Bytes(data)),
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self.status_error(ep, resp, &what).await);
        }
        let dg = docker_content_digest(resp.headers()).unwrap_or_else(|| expected.clone());
        if dg != expected {
            return Err(Error::precondition(format!(
                "{what}: digest mismatch: registry {} stored {dg}, expected {expected}",
                ep.host()
            )));
        }
        Ok(dg)
    }
}

/// Checks that `data` is what `desc` describes.
pub fn verify(data: &[u8], desc: &Descriptor) -> Result<()> {
    if desc.size > 0 && data.len() as i64 != desc.size {
        return Err(Error::precondition(format!(
            "size mismatch: got {} bytes, expected {} for {}",
            data.len(),
            desc.size,
            desc.digest
        )));
    }
    let actual = sha256_of(data);
    if actual != desc.digest {
        return Err(Error::precondition(format!(
            "digest mismatch: got {actual}, expected {}",
            desc.digest
        )));
    }
    Ok(())
}

fn build_http(ep: &Endpoint, cas: &[Vec<u8>]) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(300))
        .pool_idle_timeout(Duration::from_secs(90));
    if ep.skip_verify {
        b = b.danger_accept_invalid_certs(true);
    }
    for (pem, path) in cas.iter().zip(&ep.ca) {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
            Error::invalid(format!(
                "CA file {}: {}",
                path.display(),
                describe_reqwest(&e)
            ))
        })?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build()
        .map_err(|e| Error::Internal(format!("building HTTP client: {}", describe_reqwest(&e))))
}

#[cfg(test)]
mod tests;
