//! Registry authentication: [`Authorizer`] answers a registry's `WWW-Authenticate`
//! challenge: `Bearer` (fetch a token from the realm, with basic credentials when there are
//! some, cached per scope) or `Basic`.
//!
//! The credentials come from a Docker-style `config.json`, whose format (and the atomic
//! writes of `berth login`) is `berth_oci::credentials`, shared with the CLI; it is
//! re-exported here, with a [`load`] that logs the entries it had to skip.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use berth_oci::credentials::{
    CredentialFile, Credentials, DOCKER_HUB_KEY, normalize_host, remove, store,
};
use serde::Deserialize;

use super::http::{describe_reqwest, registry_message};
use crate::error::{Error, Result};

/// Reads the credentials file (a missing file has none), warning about each entry whose
/// `auth` could not be decoded. Blocking: call it from the blocking pool.
pub fn load(path: &Path) -> Result<CredentialFile> {
    let file = berth_oci::credentials::load(path)?;
    for registry in file.undecodable() {
        tracing::warn!(file = %path.display(), %registry, "credentials entry has an undecodable \"auth\"; ignored");
    }
    Ok(file)
}

/// The `Authorization` value of HTTP Basic for `creds`.
fn basic_header(creds: &Credentials) -> String {
    format!("Basic {}", creds.encoded())
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
            Some(HostScheme::Basic) => Ok(self.credentials_for(endpoint_host).map(basic_header)),
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
            req = req.header(reqwest::header::AUTHORIZATION, basic_header(c));
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
    fn credential_file_errors_keep_their_class_and_text() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("config.json");
        let bad = Credentials {
            username: "a:b".into(),
            password: "x".into(),
        };
        let err = Error::from(store(&path, "h", &bad).expect_err("colon"));
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "user name must not contain \":\": invalid argument"
        );
        std::fs::write(&path, "{").expect("write");
        let err = load(&path).expect_err("bad json");
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        assert!(err.to_string().starts_with("credentials file "), "{err}");
        let err = load(dir.path()).expect_err("a directory");
        assert!(
            matches!(
                err,
                Error::Io {
                    op: "read credentials",
                    ..
                }
            ),
            "{err:?}"
        );
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

        let creds = CredentialFile::parse(
            r#"{"auths": {"reg:5000": {"username": "u", "password": "p"}}}"#,
            Path::new("config.json"),
        )
        .expect("parse");
        let a = Authorizer::new("reg:5000", creds);
        assert!(
            a.challenged("mirror:443", &["Basic realm=\"r\"".into()])
                .expect("ok")
        );
        let h = a
            .authorization(&http, "mirror:443", &[])
            .await
            .expect("basic");
        assert_eq!(h, Some("Basic dTpw".to_string()));
    }
}
