//! containerd's registry hosts directory: `<config_path>/<host>/hosts.toml`, falling back to
//! `<config_path>/_default/hosts.toml`.
//!
//! ```toml
//! server = "https://registry-1.docker.io"   # the upstream, tried last
//!
//! [host."https://mirror.example"]           # tried first, in file order
//!   capabilities = ["pull", "resolve"]
//!   ca = "mirror.crt"                       # or a list; relative to the host's directory
//!   skip_verify = false
//!   override_path = false                   # true: the URL path is the API root (no /v2)
//!   [host."https://mirror.example".header]
//!     x-custom = "value"                    # or a list of values
//! ```
//!
//! The top-level `capabilities`, `ca`, `skip_verify`, `header` and `override_path` apply to
//! `server`. Without a file the registry itself is the only endpoint, over HTTPS
//! (`https://registry-1.docker.io` for `docker.io`). Plain HTTP is used only when asked for:
//! an `http://` URL in the file, the `plain_http` option (ctr's `--plain-http`), or a
//! loopback registry (`localhost`, `127.0.0.0/8`, `::1`) that does not speak TLS — for those
//! HTTPS is tried first and HTTP is the fallback, as in containerd 2.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use reqwest::Url;
use serde::Deserialize;

use crate::error::{Error, Result};

/// docker.io's API endpoint.
pub const DOCKER_HUB_SERVER: &str = "https://registry-1.docker.io";

/// What an endpoint may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Fetch manifests and blobs by digest.
    pub pull: bool,
    /// Resolve a tag to a digest.
    pub resolve: bool,
    /// Upload blobs and manifests.
    pub push: bool,
}

impl Capabilities {
    pub const ALL: Capabilities = Capabilities {
        pull: true,
        resolve: true,
        push: true,
    };

    fn parse(names: &[String], file: &Path) -> Result<Capabilities> {
        let mut c = Capabilities {
            pull: false,
            resolve: false,
            push: false,
        };
        for n in names {
            match n.as_str() {
                "pull" => c.pull = true,
                "resolve" => c.resolve = true,
                "push" => c.push = true,
                other => {
                    return Err(Error::invalid(format!(
                        "{}: unknown capability {other:?} (want pull, resolve or push)",
                        file.display()
                    )));
                }
            }
        }
        Ok(c)
    }
}

/// One place to send registry requests to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The API root, e.g. `https://registry-1.docker.io/v2` (no trailing slash).
    pub url: Url,
    pub capabilities: Capabilities,
    pub skip_verify: bool,
    /// PEM files of extra CAs to trust.
    pub ca: Vec<PathBuf>,
    /// Extra request headers.
    pub headers: BTreeMap<String, Vec<String>>,
    /// `https` that may fall back to plain `http` (loopback registries without TLS).
    pub http_fallback: bool,
    /// Not the registry itself: requests carry `?ns=<registry host>`, as containerd's do.
    pub mirror: bool,
}

impl Endpoint {
    /// `host[:port]` of the endpoint.
    pub fn host(&self) -> String {
        match (self.url.host_str(), self.url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => String::new(),
        }
    }
}

/// Options that come from the caller rather than the hosts directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostOptions {
    /// Talk plain HTTP to the registry's default server (ctr's `--plain-http`).
    pub plain_http: bool,
    /// Do not verify TLS certificates (ctr's `--skip-verify`).
    pub skip_verify: bool,
    /// The daemon lists the registry as insecure (Docker's `insecure-registries`): TLS
    /// unverified, and plain HTTP when HTTPS fails, as for loopback registries.
    pub insecure: bool,
    /// The daemon's mirrors of this registry (Docker's `registry-mirrors`, for Docker Hub),
    /// tried before it when no hosts file configures it.
    pub mirrors: Vec<String>,
}

/// Whether `registry` (`host[:port]`) is one of the daemon's insecure registries: an entry
/// that names it (with or without its port), or a CIDR range holding its address.
pub fn is_insecure(insecure: &[String], registry: &str) -> bool {
    let name = host_without_port(registry);
    let ip = name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok();
    insecure.iter().any(|entry| {
        let entry = entry
            .trim()
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/');
        if entry.eq_ignore_ascii_case(registry) || entry.eq_ignore_ascii_case(name) {
            return true;
        }
        match (entry.split_once('/'), ip) {
            (Some((net, bits)), Some(ip)) => in_cidr(net, bits, ip),
            _ => false,
        }
    })
}

/// Whether `ip` lies in `net/bits`.
fn in_cidr(net: &str, bits: &str, ip: IpAddr) -> bool {
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    let prefix = |a: u128, width: u32| {
        let keep = bits.min(width);
        if keep == 0 { 0 } else { a >> (width - keep) }
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) if bits <= 32 => {
            prefix(u32::from(n).into(), 32) == prefix(u32::from(i).into(), 32)
        }
        (IpAddr::V6(n), IpAddr::V6(i)) if bits <= 128 => {
            prefix(u128::from(n), 128) == prefix(u128::from(i), 128)
        }
        _ => false,
    }
}

/// Whether a registry host is on this machine: `localhost`, `127.0.0.0/8` or `::1`, with or
/// without a port.
pub fn is_loopback(host: &str) -> bool {
    let name = host_without_port(host);
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    name.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// The settings of one endpoint, at the top level (for `server`) or in a `[host."…"]` table.
#[derive(Debug, Clone, Default, Deserialize)]
struct HostFields {
    capabilities: Option<Vec<String>>,
    ca: Option<OneOrMany>,
    skip_verify: Option<bool>,
    header: Option<BTreeMap<String, OneOrMany>>,
    override_path: Option<bool>,
    /// Client certificates: not supported yet; reported when present.
    client: Option<toml::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct HostsFile {
    server: Option<String>,
    #[serde(flatten)]
    fields: HostFields,
    #[serde(default)]
    host: BTreeMap<String, HostFields>,
}

/// The directory that configures `host`: `<dir>/<host>`, `<dir>/<host>_<port>_` (the form
/// containerd uses where `:` is not allowed in paths) or `<dir>/_default`.
pub fn host_directory(config_dir: &Path, host: &str) -> Option<PathBuf> {
    let mut candidates = vec![config_dir.join(host)];
    if let Some((h, p)) = host.rsplit_once(':') {
        candidates.push(config_dir.join(format!("{h}_{p}_")));
    }
    candidates.push(config_dir.join("_default"));
    candidates
        .into_iter()
        .find(|d| d.join("hosts.toml").is_file())
}

/// The endpoints to try for `host`, in order: the mirrors of the hosts file, then the server.
/// Blocking: reads the hosts directory.
pub fn endpoints(
    config_dir: Option<&Path>,
    host: &str,
    opts: &HostOptions,
) -> Result<Vec<Endpoint>> {
    if host.is_empty() {
        return Err(Error::invalid("registry host must not be empty"));
    }
    let file = config_dir
        .and_then(|d| host_directory(d, host))
        .map(|d| d.join("hosts.toml"));
    let Some(file) = file else {
        let mut eps = Vec::new();
        for m in &opts.mirrors {
            eps.push(mirror_endpoint(m, host, opts)?);
        }
        eps.push(default_endpoint(host, opts)?);
        return Ok(eps);
    };
    let text = std::fs::read_to_string(&file).map_err(|e| Error::io("read", &file, e))?;
    parse_hosts(&text, &file, host, opts)
}

/// The registry's own endpoint when no hosts file names a server.
fn default_endpoint(host: &str, opts: &HostOptions) -> Result<Endpoint> {
    let loopback = is_loopback(host);
    let (scheme, server) = if host == "docker.io" {
        ("https", "registry-1.docker.io".to_string())
    } else if opts.plain_http {
        ("http", host.to_string())
    } else {
        ("https", host.to_string())
    };
    let url = parse_url(&format!("{scheme}://{server}/v2"), host)?;
    // containerd skips verification for loopback registries it falls back for; Docker
    // treats its insecure registries the same way.
    let lenient = loopback || opts.insecure;
    Ok(Endpoint {
        url,
        capabilities: Capabilities::ALL,
        skip_verify: opts.skip_verify || lenient,
        ca: Vec::new(),
        headers: BTreeMap::new(),
        http_fallback: lenient && scheme == "https",
        mirror: false,
    })
}

/// A mirror of the daemon's configuration (`https://mirror.example`, `http://127.0.0.1:5001`
/// or a bare host): pull and resolve only, its API root `/v2`; TLS as for its own host.
fn mirror_endpoint(mirror: &str, host: &str, opts: &HostOptions) -> Result<Endpoint> {
    let with_scheme = if mirror.starts_with("http://") || mirror.starts_with("https://") {
        mirror.to_string()
    } else {
        format!("https://{mirror}")
    };
    let context = format!("registry mirror of {host}");
    let mut url = parse_url(&with_scheme, &context)?;
    if url.host_str().is_none() {
        return Err(Error::invalid(format!("{context}: {mirror:?} has no host")));
    }
    let path = clean_path(url.path());
    if !path.ends_with("/v2") {
        url.set_path(&format!("{}/v2", path.trim_end_matches('/')));
    }
    url.set_query(None);
    url.set_fragment(None);
    let mut e = Endpoint {
        url,
        capabilities: Capabilities {
            pull: true,
            resolve: true,
            push: false,
        },
        skip_verify: opts.skip_verify,
        ca: Vec::new(),
        headers: BTreeMap::new(),
        http_fallback: false,
        mirror: true,
    };
    let mirror_host = e.host();
    if e.url.scheme() == "https" && is_loopback(&mirror_host) {
        e.skip_verify = true;
        e.http_fallback = true;
    }
    Ok(e)
}

fn parse_url(s: &str, context: &str) -> Result<Url> {
    Url::parse(s).map_err(|e| Error::invalid(format!("{context}: invalid registry URL {s:?}: {e}")))
}

/// Parses a hosts file's text; `file` names it in errors and anchors relative CA paths.
pub fn parse_hosts(
    text: &str,
    file: &Path,
    host: &str,
    opts: &HostOptions,
) -> Result<Vec<Endpoint>> {
    let bad = |e: &dyn std::fmt::Display| Error::invalid(format!("{}: {e}", file.display()));
    let parsed: HostsFile = toml::from_str(text).map_err(|e| bad(&e))?;
    let order = host_table_order(text).map_err(|e| bad(&e))?;
    let base = file.parent().unwrap_or(Path::new("/"));

    let mut mirrors: Vec<(usize, String, HostFields)> = parsed
        .host
        .into_iter()
        .map(|(url, fields)| {
            let pos = order.iter().position(|u| *u == url).unwrap_or(usize::MAX);
            (pos, url, fields)
        })
        .collect();
    mirrors.sort_by_key(|(pos, url, _)| (*pos, url.clone()));

    let mut out = Vec::new();
    for (_, url, fields) in mirrors {
        out.push(endpoint_from(&url, &fields, base, file, host, opts)?);
    }
    match parsed.server.as_deref().filter(|s| !s.is_empty()) {
        Some(server) => out.push(endpoint_from(
            server,
            &parsed.fields,
            base,
            file,
            host,
            opts,
        )?),
        None => {
            let mut e = default_endpoint(host, opts)?;
            apply_fields(&mut e, &parsed.fields, base, file, opts)?;
            out.push(e);
        }
    }
    Ok(out)
}

/// The `[host."…"]` keys in the order the file lists them (serde's map loses it).
fn host_table_order(text: &str) -> std::result::Result<Vec<String>, toml::de::Error> {
    let doc = toml::de::DeTable::parse(text)?;
    let mut keys = Vec::new();
    for (k, v) in doc.get_ref().iter() {
        if k.get_ref() != "host" {
            continue;
        }
        if let toml::de::DeValue::Table(t) = v.get_ref() {
            let mut ks: Vec<(usize, String)> = t
                .iter()
                .map(|(k, _)| (k.span().start, k.get_ref().to_string()))
                .collect();
            ks.sort();
            keys.extend(ks.into_iter().map(|(_, k)| k));
        }
    }
    Ok(keys)
}

fn endpoint_from(
    server: &str,
    fields: &HostFields,
    base: &Path,
    file: &Path,
    host: &str,
    opts: &HostOptions,
) -> Result<Endpoint> {
    let with_scheme = if server.starts_with("http://") || server.starts_with("https://") {
        server.to_string()
    } else {
        format!("https://{server}")
    };
    let mut url = parse_url(&with_scheme, &file.display().to_string())?;
    if url.host_str().is_none() {
        return Err(Error::invalid(format!(
            "{}: registry URL {server:?} has no host",
            file.display()
        )));
    }
    let override_path = fields.override_path.unwrap_or(false);
    let mut path = clean_path(url.path());
    if !override_path && !path.ends_with("/v2") {
        path = format!("{}/v2", path.trim_end_matches('/'));
    }
    url.set_path(&path);
    url.set_query(None);
    url.set_fragment(None);
    let mut e = Endpoint {
        url,
        capabilities: Capabilities::ALL,
        skip_verify: opts.skip_verify,
        ca: Vec::new(),
        headers: BTreeMap::new(),
        http_fallback: false,
        mirror: false,
    };
    e.mirror = !same_host(&e.url, host);
    apply_fields(&mut e, fields, base, file, opts)?;
    Ok(e)
}

/// Whether `url` points at the registry `host` itself (ports compared with defaults;
/// `registry-1.docker.io` is docker.io itself), as containerd's `isProxy` decides.
fn same_host(url: &Url, host: &str) -> bool {
    if host == "docker.io" && url.host_str() == Some("registry-1.docker.io") {
        return true;
    }
    let name = host_without_port(host);
    let port = host
        .strip_prefix('[')
        .and_then(|r| r.split_once("]:"))
        .map(|(_, p)| p)
        .or_else(|| match host.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => Some(p),
            _ => None,
        })
        .and_then(|p| p.parse::<u16>().ok());
    let url_host = url
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    url_host.eq_ignore_ascii_case(name.trim_start_matches('[').trim_end_matches(']'))
        && match port {
            Some(p) => Some(p) == url.port_or_known_default(),
            None => url.port().is_none(),
        }
}

fn clean_path(p: &str) -> String {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("/{}", parts.join("/"))
    }
}

fn apply_fields(
    e: &mut Endpoint,
    fields: &HostFields,
    base: &Path,
    file: &Path,
    opts: &HostOptions,
) -> Result<()> {
    if let Some(caps) = &fields.capabilities {
        e.capabilities = Capabilities::parse(caps, file)?;
    }
    if let Some(skip) = fields.skip_verify {
        e.skip_verify = skip || opts.skip_verify;
    }
    if let Some(ca) = &fields.ca {
        e.ca = ca
            .clone()
            .into_vec()
            .into_iter()
            .map(|p| {
                let p = PathBuf::from(p);
                if p.is_absolute() { p } else { base.join(p) }
            })
            .collect();
    }
    if let Some(headers) = &fields.header {
        for (k, v) in headers {
            e.headers.insert(k.clone(), v.clone().into_vec());
        }
    }
    if fields.client.is_some() {
        tracing::warn!(file = %file.display(), endpoint = %e.url, "client certificates in hosts.toml are not supported yet; ignored");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> PathBuf {
        PathBuf::from("/etc/berth/certs.d/docker.io/hosts.toml")
    }

    fn urls(eps: &[Endpoint]) -> Vec<String> {
        eps.iter().map(|e| e.url.to_string()).collect()
    }

    #[test]
    fn defaults_without_a_file() {
        let o = HostOptions::default();
        let eps = endpoints(None, "docker.io", &o).expect("eps");
        assert_eq!(urls(&eps), ["https://registry-1.docker.io/v2"]);
        assert!(!eps[0].http_fallback && !eps[0].skip_verify && !eps[0].mirror);
        assert_eq!(eps[0].capabilities, Capabilities::ALL);

        let eps = endpoints(None, "ghcr.io", &o).expect("eps");
        assert_eq!(urls(&eps), ["https://ghcr.io/v2"]);
        assert!(!eps[0].http_fallback);

        for h in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "localhost",
        ] {
            let eps = endpoints(None, h, &o).expect("eps");
            assert!(eps[0].url.as_str().starts_with("https://"), "{h}");
            assert!(eps[0].http_fallback, "{h}: loopback may fall back to http");
        }
        let eps = endpoints(None, "10.0.0.1:5000", &o).expect("eps");
        assert!(!eps[0].http_fallback);

        let plain = HostOptions {
            plain_http: true,
            ..Default::default()
        };
        let eps = endpoints(None, "myregistry:5000", &plain).expect("eps");
        assert_eq!(urls(&eps), ["http://myregistry:5000/v2"]);
        assert!(endpoints(None, "", &o).is_err());
    }

    #[test]
    fn insecure_registries_by_name_or_range() {
        let list = vec![
            "reg.test:5000".to_string(),
            "plain.test".to_string(),
            "10.1.0.0/16".to_string(),
            "fd00::/8".to_string(),
        ];
        assert!(is_insecure(&list, "reg.test:5000"));
        assert!(!is_insecure(&list, "reg.test:5001"));
        assert!(is_insecure(&list, "plain.test:443"));
        assert!(is_insecure(&list, "10.1.200.3:5000"));
        assert!(!is_insecure(&list, "10.2.0.1"));
        assert!(is_insecure(&list, "[fd12::1]:5000"));
        assert!(!is_insecure(&list, "example.com"));
        // Insecure: TLS unverified, and plain HTTP when HTTPS fails.
        let o = HostOptions {
            insecure: true,
            ..Default::default()
        };
        let eps = endpoints(None, "10.1.0.9:5000", &o).expect("eps");
        assert!(eps[0].http_fallback && eps[0].skip_verify);
    }

    #[test]
    fn daemon_mirrors_come_first() {
        let o = HostOptions {
            mirrors: vec![
                "https://mirror.test".to_string(),
                "http://127.0.0.1:5001/".to_string(),
            ],
            ..Default::default()
        };
        let eps = endpoints(None, "docker.io", &o).expect("eps");
        assert_eq!(
            urls(&eps),
            [
                "https://mirror.test/v2",
                "http://127.0.0.1:5001/v2",
                "https://registry-1.docker.io/v2"
            ]
        );
        assert!(eps[0].mirror && eps[1].mirror && !eps[2].mirror);
        assert!(!eps[0].capabilities.push);
        assert!(
            endpoints(
                None,
                "docker.io",
                &HostOptions {
                    mirrors: vec!["https://".to_string()],
                    ..Default::default()
                }
            )
            .is_err()
        );
    }

    #[test]
    fn loopback_detection() {
        for h in [
            "localhost",
            "LOCALHOST:80",
            "127.0.0.1",
            "127.9.9.9:5000",
            "::1",
            "[::1]:443",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "example.com",
            "10.0.0.1:5000",
            "128.0.0.1",
            "localhost.example.com",
            "[::2]",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn mirrors_first_in_file_order_then_server() {
        let text = r#"
server = "https://registry-1.docker.io"
capabilities = ["pull", "resolve"]

[host."https://z-mirror.example"]
  capabilities = ["pull"]
  ca = "z.crt"
  skip_verify = true

[host."http://a-mirror.internal:5000/prefix"]
  capabilities = ["pull", "resolve", "push"]
  ca = ["/abs/one.pem", "two.pem"]
  [host."http://a-mirror.internal:5000/prefix".header]
    x-one = "1"
    x-many = ["a", "b"]

[host."https://raw.example/custom/api"]
  override_path = true
"#;
        let eps = parse_hosts(text, &file(), "docker.io", &HostOptions::default()).expect("parse");
        assert_eq!(
            urls(&eps),
            [
                "https://z-mirror.example/v2",
                "http://a-mirror.internal:5000/prefix/v2",
                "https://raw.example/custom/api",
                "https://registry-1.docker.io/v2",
            ]
        );
        let z = &eps[0];
        assert!(z.capabilities.pull && !z.capabilities.resolve && !z.capabilities.push);
        assert!(z.skip_verify && z.mirror);
        assert_eq!(z.ca, [PathBuf::from("/etc/berth/certs.d/docker.io/z.crt")]);
        let a = &eps[1];
        assert_eq!(a.capabilities, Capabilities::ALL);
        assert_eq!(
            a.ca,
            [
                PathBuf::from("/abs/one.pem"),
                PathBuf::from("/etc/berth/certs.d/docker.io/two.pem")
            ]
        );
        assert_eq!(a.headers["x-one"], ["1"]);
        assert_eq!(a.headers["x-many"], ["a", "b"]);
        assert_eq!(eps[2].capabilities, Capabilities::ALL);
        let server = &eps[3];
        assert!(!server.mirror);
        assert!(
            server.capabilities.pull && server.capabilities.resolve && !server.capabilities.push
        );
    }

    #[test]
    fn server_forms() {
        let o = HostOptions::default();
        // No server: the registry itself, with the top-level settings.
        let eps = parse_hosts("skip_verify = true\n", &file(), "docker.io", &o).expect("parse");
        assert_eq!(urls(&eps), ["https://registry-1.docker.io/v2"]);
        assert!(eps[0].skip_verify);
        // A plain-HTTP server and a bare host name.
        let eps = parse_hosts(
            "server = \"http://reg.local:5000\"\n",
            &file(),
            "reg.local:5000",
            &o,
        )
        .expect("parse");
        assert_eq!(urls(&eps), ["http://reg.local:5000/v2"]);
        assert!(!eps[0].mirror);
        let eps = parse_hosts("server = \"reg.local\"\n", &file(), "reg.local", &o).expect("parse");
        assert_eq!(urls(&eps), ["https://reg.local/v2"]);
        let eps = parse_hosts(
            "server = \"https://reg.local/v2/\"\n",
            &file(),
            "reg.local",
            &o,
        )
        .expect("parse");
        assert_eq!(urls(&eps), ["https://reg.local/v2"]);
        // Errors name the file.
        let err =
            parse_hosts("capabilities = [\"fly\"]\n", &file(), "docker.io", &o).expect_err("cap");
        assert!(matches!(err, Error::InvalidArgument(_)));
        assert!(err.to_string().contains("hosts.toml"), "{err}");
        let err = parse_hosts("server = [\n", &file(), "docker.io", &o).expect_err("toml");
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }

    #[test]
    fn directory_lookup() {
        let dir = tempfile::tempdir().expect("tmp");
        let o = HostOptions::default();
        // Nothing configured: the default endpoint.
        let eps = endpoints(Some(dir.path()), "example.com", &o).expect("eps");
        assert_eq!(urls(&eps), ["https://example.com/v2"]);

        std::fs::create_dir_all(dir.path().join("_default")).expect("mkdir");
        std::fs::write(
            dir.path().join("_default/hosts.toml"),
            "[host.\"https://everything-mirror\"]\ncapabilities = [\"pull\"]\n",
        )
        .expect("write");
        let eps = endpoints(Some(dir.path()), "example.com", &o).expect("eps");
        assert_eq!(
            urls(&eps),
            ["https://everything-mirror/v2", "https://example.com/v2"]
        );

        std::fs::create_dir_all(dir.path().join("example.com:5000")).expect("mkdir");
        std::fs::write(
            dir.path().join("example.com:5000/hosts.toml"),
            "server = \"http://example.com:5000\"\n",
        )
        .expect("write");
        let eps = endpoints(Some(dir.path()), "example.com:5000", &o).expect("eps");
        assert_eq!(urls(&eps), ["http://example.com:5000/v2"]);

        std::fs::create_dir_all(dir.path().join("other.io_443_")).expect("mkdir");
        std::fs::write(
            dir.path().join("other.io_443_/hosts.toml"),
            "server = \"https://other.io:443/x\"\n",
        )
        .expect("write");
        let eps = endpoints(Some(dir.path()), "other.io:443", &o).expect("eps");
        assert_eq!(urls(&eps), ["https://other.io/x/v2"]);
    }
}
