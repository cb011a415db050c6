//! Registry credentials and authentication.
//!
//! Credentials live in a JSON file in Docker's `config.json` format:
//!
//! ```json
//! {"auths": {"localhost:5000": {"auth": "<base64 of user:password>"}}}
//! ```
//!
//! [`load`], [`store`] and [`remove`] read and change it (`berth login`/`logout`); writes
//! are atomic (temp file, fsync, rename) with mode 0600, and keep every other key of the file
//! as it was. They block: call them from the blocking pool inside the daemon.
//!
//! [`Authorizer`] answers a registry's `WWW-Authenticate` challenge: `Bearer` (fetch a token
//! from the realm, with basic credentials when there are some, cached per scope) or `Basic`.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;

use super::http::{describe_reqwest, registry_message};
use crate::error::{Error, Result};

/// The key Docker uses for Docker Hub in `config.json`.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            BASE64.encode(format!("{}:{}", self.username, self.password))
        )
    }
}

/// The registry host a `config.json` key stands for: scheme and path dropped, Docker Hub's
/// aliases folded into `docker.io`.
pub fn normalize_host(key: &str) -> String {
    let k = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let k = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    match k.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => k,
    }
}

/// The credentials of a `config.json`-style file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialFile {
    by_host: BTreeMap<String, Credentials>,
}

impl CredentialFile {
    /// The credentials for a registry host (`docker.io`, `localhost:5000`).
    pub fn get(&self, host: &str) -> Option<&Credentials> {
        self.by_host.get(&normalize_host(host))
    }

    /// The hosts that have credentials.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.by_host.keys().map(String::as_str)
    }

    /// Parses the file's text; entries that cannot be decoded are skipped with a warning.
    pub fn parse(text: &str, origin: &Path) -> Result<CredentialFile> {
        #[derive(Deserialize)]
        struct Entry {
            #[serde(default)]
            auth: String,
            #[serde(default)]
            username: String,
            #[serde(default)]
            password: String,
        }
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            auths: BTreeMap<String, Entry>,
        }
        let file: File = serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("credentials file {}: {e}", origin.display())))?;
        let mut by_host = BTreeMap::new();
        for (key, entry) in file.auths {
            let creds = if !entry.auth.is_empty() {
                match decode_auth(&entry.auth) {
                    Some(c) => c,
                    None => {
                        tracing::warn!(file = %origin.display(), registry = %key, "credentials entry has an undecodable \"auth\"; ignored");
                        continue;
                    }
                }
            } else if !entry.username.is_empty() {
                Credentials {
                    username: entry.username,
                    password: entry.password,
                }
            } else {
                continue;
            };
            by_host.insert(normalize_host(&key), creds);
        }
        Ok(CredentialFile { by_host })
    }
}

fn decode_auth(auth: &str) -> Option<Credentials> {
    let raw = BASE64.decode(auth.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some(Credentials {
        username: user.to_string(),
        password: pass.trim_end_matches('\n').to_string(),
    })
}

/// Reads the credentials file; a missing file has no credentials. Blocking.
pub fn load(path: &Path) -> Result<CredentialFile> {
    match std::fs::read_to_string(path) {
        Ok(text) => CredentialFile::parse(&text, path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CredentialFile::default()),
        Err(e) => Err(Error::io("read credentials", path, e)),
    }
}

fn read_json(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Ok(serde_json::Map::new()),
        Ok(text) => match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Object(m)) => Ok(m),
            Ok(_) => Err(Error::invalid(format!(
                "credentials file {}: not a JSON object",
                path.display()
            ))),
            Err(e) => Err(Error::invalid(format!(
                "credentials file {}: {e}",
                path.display()
            ))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::Map::new()),
        Err(e) => Err(Error::io("read credentials", path, e)),
    }
}

/// The key an entry for `host` is stored under (Docker's own for Docker Hub).
fn key_for(host: &str) -> String {
    let h = normalize_host(host);
    if h == "docker.io" {
        DOCKER_HUB_KEY.to_string()
    } else {
        h
    }
}

/// Saves credentials for a registry host, replacing any it had. Blocking.
pub fn store(path: &Path, host: &str, creds: &Credentials) -> Result<()> {
    if host.trim().is_empty() {
        return Err(Error::invalid("registry host must not be empty"));
    }
    if creds.username.contains(':') {
        return Err(Error::invalid("user name must not contain \":\""));
    }
    let mut doc = read_json(path)?;
    let auths = doc
        .entry("auths")
        .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
    let serde_json::Value::Object(auths) = auths else {
        return Err(Error::invalid(format!(
            "credentials file {}: \"auths\" is not an object",
            path.display()
        )));
    };
    // Drop other spellings of the same host so one entry remains.
    let norm = normalize_host(host);
    auths.retain(|k, _| normalize_host(k) != norm);
    let mut entry = serde_json::Map::new();
    entry.insert(
        "auth".into(),
        serde_json::Value::String(BASE64.encode(format!("{}:{}", creds.username, creds.password))),
    );
    auths.insert(key_for(host), serde_json::Value::Object(entry));
    write_atomic(path, &doc)
}

/// Removes the credentials of a registry host; `false` when it had none. Blocking.
pub fn remove(path: &Path, host: &str) -> Result<bool> {
    let mut doc = read_json(path)?;
    let Some(serde_json::Value::Object(auths)) = doc.get_mut("auths") else {
        return Ok(false);
    };
    let norm = normalize_host(host);
    let before = auths.len();
    auths.retain(|k, _| normalize_host(k) != norm);
    if auths.len() == before {
        return Ok(false);
    }
    write_atomic(path, &doc)?;
    Ok(true)
}

/// Writes the document to a temp file beside `path` (mode 0600), fsyncs it, renames it over
/// `path` and fsyncs the directory.
fn write_atomic(path: &Path, doc: &serde_json::Map<String, serde_json::Value>) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config.json".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", uuid::Uuid::new_v4().simple()));
    let mut text = serde_json::to_vec_pretty(doc)
        .map_err(|e| Error::Internal(format!("encode credentials: {e}")))?;
    text.push(b'\n');
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(&text)
            .map_err(|e| Error::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("fsync", &dir, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// One authentication challenge from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lower-cased: `bearer`, `basic`.
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

/// Parses a `WWW-Authenticate` header value (one or more challenges).
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut rest = header.trim();
    while !rest.is_empty() {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        if rest.is_empty() {
            break;
        }
        // A token: either a new scheme or a parameter name.
        let end = rest
            .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
            .unwrap_or(rest.len());
        let token = &rest[..end];
        let after = rest[end..].trim_start_matches([' ', '\t']);
        if let Some(value_part) = after.strip_prefix('=')
            && !out.is_empty()
        {
            let value_part = value_part.trim_start();
            let (value, remaining) = if let Some(q) = value_part.strip_prefix('"') {
                let mut v = String::new();
                let mut chars = q.char_indices();
                let mut consumed = q.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                v.push(n);
                            }
                        }
                        '"' => {
                            consumed = i + 1;
                            break;
                        }
                        c => v.push(c),
                    }
                }
                (v, &q[consumed..])
            } else {
                let e = value_part.find(',').unwrap_or(value_part.len());
                (value_part[..e].trim().to_string(), &value_part[e..])
            };
            if let Some(c) = out.last_mut() {
                c.params.insert(token.to_ascii_lowercase(), value);
            }
            rest = remaining;
        } else {
            out.push(Challenge {
                scheme: token.to_ascii_lowercase(),
                params: BTreeMap::new(),
            });
            rest = after;
        }
    }
    out
}

/// How a registry host wants to be authenticated, learnt from its last challenge.
#[derive(Debug, Clone)]
enum HostScheme {
    Basic,
    Bearer {
        realm: String,
        service: String,
        /// Scopes the registry asked for in its challenge.
        scopes: Vec<String>,
    },
}

#[derive(Default)]
struct State {
    schemes: HashMap<String, HostScheme>,
    /// (endpoint host, sorted scopes) → token and when to stop using it.
    tokens: HashMap<(String, String), (String, Instant)>,
}

/// Answers challenges for the endpoints of one client. Cheap to share behind an `Arc`.
pub struct Authorizer {
    credentials: CredentialFile,
    /// The registry the credentials are looked up for when an endpoint (a mirror) has none.
    registry: String,
    state: Mutex<State>,
}

/// A token endpoint's answer.
#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: String,
    #[serde(default)]
    access_token: String,
    #[serde(default)]
    expires_in: u64,
}

impl Authorizer {
    pub fn new(registry: &str, credentials: CredentialFile) -> Authorizer {
        Authorizer {
            credentials,
            registry: registry.to_string(),
            state: Mutex::new(State::default()),
        }
    }

    /// The credentials used for an endpoint host: its own, else the registry's.
    pub fn credentials_for(&self, endpoint_host: &str) -> Option<&Credentials> {
        self.credentials
            .get(endpoint_host)
            .or_else(|| self.credentials.get(&self.registry))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| Error::Internal("registry auth state poisoned".into()))
    }

    /// Records the challenges of a 401 answer. Returns whether asking again can help (false
    /// for an unknown scheme, or Basic without credentials).
    pub fn challenged(&self, endpoint_host: &str, www_authenticate: &[String]) -> Result<bool> {
        let challenges: Vec<Challenge> = www_authenticate
            .iter()
            .flat_map(|h| parse_challenges(h))
            .collect();
        let scheme = challenges
            .iter()
            .find(|c| c.scheme == "bearer" && c.params.contains_key("realm"))
            .map(|c| HostScheme::Bearer {
                realm: c.params.get("realm").cloned().unwrap_or_default(),
                service: c.params.get("service").cloned().unwrap_or_default(),
                scopes: c
                    .params
                    .get("scope")
                    .map(|s| {
                        s.split(' ')
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .or_else(|| {
                challenges
                    .iter()
                    .any(|c| c.scheme == "basic")
                    .then_some(HostScheme::Basic)
            });
        let Some(scheme) = scheme else {
            return Ok(false);
        };
        // Basic without credentials: asking again would get the same answer.
        let answerable = match scheme {
            HostScheme::Basic => self.credentials_for(endpoint_host).is_some(),
            HostScheme::Bearer { .. } => true,
        };
        let mut st = self.lock()?;
        st.schemes.insert(endpoint_host.to_string(), scheme);
        // A token that was just refused must not be reused.
        st.tokens.retain(|(h, _), _| h != endpoint_host);
        Ok(answerable)
    }

    /// The `Authorization` header for a request to `endpoint_host` needing `scopes`, when the
    /// host has challenged before. Fetches a bearer token when none is cached.
    pub async fn authorization(
        &self,
        http: &reqwest::Client,
        endpoint_host: &str,
        scopes: &[String],
    ) -> Result<Option<String>> {
        let scheme = self.lock()?.schemes.get(endpoint_host).cloned();
        match scheme {
            None => Ok(None),
            // Without credentials the request goes out bare and the registry's 401 is
            // reported as it said it.
            Some(HostScheme::Basic) => Ok(self
                .credentials_for(endpoint_host)
                .map(Credentials::basic_header)),
            Some(HostScheme::Bearer {
                realm,
                service,
                scopes: asked,
            }) => {
                let mut all: Vec<String> = scopes.to_vec();
                for s in asked {
                    if !all.contains(&s) {
                        all.push(s);
                    }
                }
                all.sort();
                let key = (endpoint_host.to_string(), all.join(" "));
                if let Some((token, until)) = self.lock()?.tokens.get(&key)
                    && Instant::now() < *until
                {
                    return Ok(Some(format!("Bearer {token}")));
                }
                let (token, ttl) = self
                    .fetch_token(http, endpoint_host, &realm, &service, &all)
                    .await?;
                let until = Instant::now() + ttl;
                self.lock()?.tokens.insert(key, (token.clone(), until));
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    #[tracing::instrument(level = "debug", skip(self, http), fields(registry = %endpoint_host))]
    async fn fetch_token(
        &self,
        http: &reqwest::Client,
        endpoint_host: &str,
        realm: &str,
        service: &str,
        scopes: &[String],
    ) -> Result<(String, Duration)> {
        let mut url = reqwest::Url::parse(realm).map_err(|e| {
            Error::Unavailable(format!(
                "registry {endpoint_host} named an invalid token realm {realm:?}: {e}"
            ))
        })?;
        {
            let mut q = url.query_pairs_mut();
            if !service.is_empty() {
                q.append_pair("service", service);
            }
            for s in scopes {
                q.append_pair("scope", s);
            }
        }
        let creds = self.credentials_for(endpoint_host);
        let mut req = http.get(url.clone());
        if let Some(c) = creds {
            req = req.header(reqwest::header::AUTHORIZATION, c.basic_header());
        }
        let what = if creds.is_some() {
            "token"
        } else {
            "anonymous token"
        };
        let resp = req.send().await.map_err(|e| {
            Error::Unavailable(format!(
                "fetching {what} from {realm}: {}",
                describe_reqwest(&e)
            ))
        })?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            let msg = registry_message(&body);
            let text = format!(
                "fetching {what} from {realm} for {endpoint_host}: {status}{}",
                if msg.is_empty() {
                    String::new()
                } else {
                    format!(": {msg}")
                }
            );
            return Err(match status.as_u16() {
                401 | 403 => Error::precondition(format!("unauthorized: {text}")),
                s if s >= 500 => Error::Unavailable(text),
                _ => Error::precondition(text),
            });
        }
        let body: TokenResponse = resp.json().await.map_err(|e| {
            Error::Unavailable(format!("token from {realm} is not valid JSON: {e}"))
        })?;
        let token = if body.token.is_empty() {
            body.access_token
        } else {
            body.token
        };
        if token.is_empty() {
            return Err(Error::Unavailable(format!(
                "token endpoint {realm} returned no token"
            )));
        }
        // Docker's default lifetime is 60 s; renew a little early.
        let secs = if body.expires_in == 0 {
            60
        } else {
            body.expires_in
        };
        let ttl = Duration::from_secs(secs.saturating_sub(5).max(1));
        Ok((token, ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].params["realm"], "https://auth.docker.io/token");
        assert_eq!(c[0].params["service"], "registry.docker.io");
        assert_eq!(c[0].params["scope"], "repository:library/busybox:pull");

        let c = parse_challenges(r#"Basic realm="Registry Realm""#);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].params["realm"], "Registry Realm");

        let c = parse_challenges(
            r#"Basic realm="a, \"quoted\"", Bearer realm=https://t/token , scope="x y""#,
        );
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].params["realm"], "a, \"quoted\"");
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].params["realm"], "https://t/token");
        assert_eq!(c[1].params["scope"], "x y");
        assert!(parse_challenges("").is_empty());
    }

    #[test]
    fn parses_credential_files() {
        let text = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "LOCALHOST:5000": {{"username": "u2", "password": "p2"}},
                "broken.example": {{"auth": "!!!"}},
                "empty.example": {{}}
            }}, "credsStore": "desktop"}}"#,
            BASE64.encode("hub:sec:ret")
        );
        let f = CredentialFile::parse(&text, Path::new("c.json")).expect("parse");
        let hub = f.get("docker.io").expect("hub");
        assert_eq!(hub.username, "hub");
        assert_eq!(hub.password, "sec:ret");
        assert_eq!(f.get("registry-1.docker.io"), Some(hub));
        assert_eq!(
            f.get("localhost:5000").map(|c| c.username.as_str()),
            Some("u2")
        );
        assert!(f.get("broken.example").is_none());
        assert!(f.get("empty.example").is_none());
        assert_eq!(f.hosts().count(), 2);
        assert!(format!("{hub:?}").contains("redacted"));
        let err = CredentialFile::parse("{", Path::new("c.json")).expect_err("bad json");
        assert!(matches!(err, Error::InvalidArgument(_)));
    }

    #[test]
    fn store_load_remove_round_trip() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("sub/config.json");
        assert_eq!(
            load(&path).expect("missing file"),
            CredentialFile::default()
        );
        assert!(!remove(&path, "localhost:5000").expect("remove nothing"));

        let c = Credentials {
            username: "user".into(),
            password: "pa:ss".into(),
        };
        store(&path, "localhost:5000", &c).expect("store");
        store(&path, "docker.io", &c).expect("store hub");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let raw = std::fs::read_to_string(&path).expect("read");
        assert!(raw.contains(DOCKER_HUB_KEY), "{raw}");
        assert!(raw.contains(&BASE64.encode("user:pa:ss")), "{raw}");

        let f = load(&path).expect("load");
        assert_eq!(f.get("localhost:5000"), Some(&c));
        assert_eq!(f.get("index.docker.io"), Some(&c));

        // Other keys survive; replacing keeps one entry per host.
        let mut doc: serde_json::Value = serde_json::from_str(&raw).expect("json");
        doc["credsStore"] = serde_json::Value::String("keep-me".into());
        doc["auths"]["http://localhost:5000/v2/"] =
            serde_json::json!({"auth": BASE64.encode("old:old")});
        std::fs::write(&path, doc.to_string()).expect("write");
        let c2 = Credentials {
            username: "new".into(),
            password: "pw".into(),
        };
        store(&path, "localhost:5000", &c2).expect("store again");
        let raw = std::fs::read_to_string(&path).expect("read");
        assert!(raw.contains("keep-me"));
        assert!(!raw.contains("http://localhost:5000/v2/"), "{raw}");
        assert_eq!(load(&path).expect("load").get("localhost:5000"), Some(&c2));

        assert!(remove(&path, "localhost:5000").expect("remove"));
        assert!(!remove(&path, "localhost:5000").expect("remove again"));
        assert!(load(&path).expect("load").get("localhost:5000").is_none());
        assert!(load(&path).expect("load").get("docker.io").is_some());
        // No temp files left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
            .expect("ls")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");

        let bad = Credentials {
            username: "a:b".into(),
            password: "x".into(),
        };
        assert!(matches!(
            store(&path, "h", &bad),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            store(&path, " ", &c),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[tokio::test]
    async fn basic_challenge_uses_credentials() {
        let http = reqwest::Client::new();
        let a = Authorizer::new("reg:5000", CredentialFile::default());
        assert_eq!(
            a.authorization(&http, "reg:5000", &[]).await.expect("none"),
            None
        );
        assert!(
            !a.challenged("reg:5000", &["Basic realm=\"r\"".into()])
                .expect("ok")
        );
        assert_eq!(
            a.authorization(&http, "reg:5000", &[]).await.expect("bare"),
            None
        );
        assert!(!a.challenged("reg:5000", &["Negotiate".into()]).expect("ok"));

        let mut creds = CredentialFile::default();
        creds.by_host.insert(
            "reg:5000".into(),
            Credentials {
                username: "u".into(),
                password: "p".into(),
            },
        );
        let a = Authorizer::new("reg:5000", creds);
        assert!(
            a.challenged("mirror:443", &["Basic realm=\"r\"".into()])
                .expect("ok")
        );
        let h = a
            .authorization(&http, "mirror:443", &[])
            .await
            .expect("basic");
        assert_eq!(h, Some(format!("Basic {}", BASE64.encode("u:p"))));
    }
}
