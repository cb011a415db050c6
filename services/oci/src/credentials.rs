//! The registry credential file: what `berth login` writes and berthd reads.
//!
//! It is Docker's `config.json` format:
//!
//! ```json
//! {"auths": {"localhost:5000": {"auth": "<base64 of user:password>"}}}
//! ```
//!
//! [`load`] reads it (a missing file has no credentials); [`store`] and [`remove`] change
//! one host's entry and keep every other key of the file as it was. Writes are atomic: a temp
//! file beside it (mode 0600), fsynced, renamed over it, and the directory fsynced. All of
//! them block.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::Error;

/// The key Docker uses for Docker Hub in `config.json`.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

fn io_error(op: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

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
    /// `base64("user:password")`: the file's `auth` field, and the token of HTTP Basic.
    pub fn encoded(&self) -> String {
        BASE64.encode(format!("{}:{}", self.username, self.password))
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
    /// The keys whose `auth` could not be decoded (skipped).
    undecodable: Vec<String>,
}

impl CredentialFile {
    /// The credentials for a registry host (`docker.io`, `localhost:5000`).
    pub fn get(&self, host: &str) -> Option<&Credentials> {
        self.by_host.get(&normalize_host(host))
    }

    /// Sets the credentials of a registry host (in memory).
    pub fn insert(&mut self, host: &str, creds: Credentials) {
        self.by_host.insert(normalize_host(host), creds);
    }

    /// The hosts that have credentials.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.by_host.keys().map(String::as_str)
    }

    /// The keys of the entries skipped because their `auth` could not be decoded: a reader
    /// that logs says so.
    pub fn undecodable(&self) -> impl Iterator<Item = &str> {
        self.undecodable.iter().map(String::as_str)
    }

    /// Parses the file's text (`origin` names it in errors); entries that cannot be decoded
    /// are skipped and listed in [`CredentialFile::undecodable`].
    pub fn parse(text: &str, origin: &Path) -> Result<CredentialFile, Error> {
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
        let file: File =
            serde_json::from_str(text).map_err(|e| malformed(origin, e.to_string()))?;
        let mut out = CredentialFile::default();
        for (key, entry) in file.auths {
            let creds = if !entry.auth.is_empty() {
                match decode_auth(&entry.auth) {
                    Some(c) => c,
                    None => {
                        out.undecodable.push(key);
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
            out.by_host.insert(normalize_host(&key), creds);
        }
        Ok(out)
    }
}

fn malformed(path: &Path, message: impl Into<String>) -> Error {
    Error::MalformedCredentials {
        path: path.to_path_buf(),
        message: message.into(),
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
pub fn load(path: &Path) -> Result<CredentialFile, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => CredentialFile::parse(&text, path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CredentialFile::default()),
        Err(e) => Err(io_error("read credentials", path, e)),
    }
}

/// The whole document, to change one entry and keep the rest.
fn read_json(path: &Path) -> Result<Map<String, Value>, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Ok(Map::new()),
        Ok(text) => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(malformed(path, "not a JSON object")),
            Err(e) => Err(malformed(path, e.to_string())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Map::new()),
        Err(e) => Err(io_error("read credentials", path, e)),
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
pub fn store(path: &Path, host: &str, creds: &Credentials) -> Result<(), Error> {
    if host.trim().is_empty() {
        return Err(Error::InvalidCredentials(
            "registry host must not be empty".into(),
        ));
    }
    if creds.username.contains(':') {
        return Err(Error::InvalidCredentials(
            "user name must not contain \":\"".into(),
        ));
    }
    let mut doc = read_json(path)?;
    let auths = doc
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(auths) = auths else {
        return Err(malformed(path, "\"auths\" is not an object"));
    };
    // Drop other spellings of the same host so one entry remains.
    let norm = normalize_host(host);
    auths.retain(|k, _| normalize_host(k) != norm);
    let mut entry = Map::new();
    entry.insert("auth".into(), Value::String(creds.encoded()));
    auths.insert(key_for(host), Value::Object(entry));
    write_atomic(path, &doc)
}

/// Removes the credentials of a registry host; `false` when it had none. Blocking.
pub fn remove(path: &Path, host: &str) -> Result<bool, Error> {
    let mut doc = read_json(path)?;
    let Some(Value::Object(auths)) = doc.get_mut("auths") else {
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

/// A temp name beside `path`, unique to this process and call: `.<name>.tmp-<pid>-<n>`.
fn temp_path(dir: &Path, path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config.json".into());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.tmp-{}-{nanos:x}-{n}", std::process::id()))
}

/// Writes the document to a temp file beside `path` (mode 0600), fsyncs it, renames it over
/// `path` and fsyncs the directory; the temp file is removed if any step fails.
fn write_atomic(path: &Path, doc: &Map<String, Value>) -> Result<(), Error> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| io_error("create directory", &dir, e))?;
    let tmp = temp_path(&dir, path);
    let mut text =
        serde_json::to_vec_pretty(doc).map_err(|e| Error::EncodeCredentials(e.to_string()))?;
    text.push(b'\n');
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_error("create", &tmp, e))?;
        f.write_all(&text).map_err(|e| io_error("write", &tmp, e))?;
        f.sync_all().map_err(|e| io_error("fsync", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io_error("rename", path, e))?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error("fsync", &dir, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(f.undecodable().collect::<Vec<_>>(), ["broken.example"]);
        assert!(format!("{hub:?}").contains("redacted"));
        let err = CredentialFile::parse("{", Path::new("c.json")).expect_err("bad json");
        assert!(matches!(err, Error::MalformedCredentials { .. }));
        assert!(
            err.to_string().starts_with("credentials file c.json: ")
                && err.to_string().ends_with(": invalid argument"),
            "{err}"
        );
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
        let mut doc: Value = serde_json::from_str(&raw).expect("json");
        doc["credsStore"] = Value::String("keep-me".into());
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
    }

    #[test]
    fn refusals_say_what_berth_login_always_said() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("config.json");
        let c = Credentials {
            username: "u".into(),
            password: "p".into(),
        };
        let bad = Credentials {
            username: "a:b".into(),
            password: "x".into(),
        };
        let err = store(&path, "h", &bad).expect_err("colon in user");
        assert!(matches!(err, Error::InvalidCredentials(_)));
        assert_eq!(
            err.to_string(),
            "user name must not contain \":\": invalid argument"
        );
        let err = store(&path, " ", &c).expect_err("empty host");
        assert_eq!(
            err.to_string(),
            "registry host must not be empty: invalid argument"
        );
        std::fs::write(&path, "[1]").expect("write");
        let err = store(&path, "h", &c).expect_err("not an object");
        assert_eq!(
            err.to_string(),
            format!(
                "credentials file {}: not a JSON object: invalid argument",
                path.display()
            )
        );
        std::fs::write(&path, r#"{"auths": 3}"#).expect("write");
        let err = store(&path, "h", &c).expect_err("auths not an object");
        assert_eq!(
            err.to_string(),
            format!(
                "credentials file {}: \"auths\" is not an object: invalid argument",
                path.display()
            )
        );
        let err = load(dir.path()).expect_err("a directory");
        assert!(
            err.to_string()
                .starts_with(&format!("read credentials {}: ", dir.path().display())),
            "{err}"
        );
    }
}
