//! Image references, parsed and normalised as Docker's `distribution/reference` package
//! (`ParseNormalizedNamed` followed by `TagNameOnly`) does:
//!
//! ```text
//! busybox                      → docker.io/library/busybox:latest
//! user/app:1.0                 → docker.io/user/app:1.0
//! localhost:5000/app           → localhost:5000/app:latest
//! app@sha256:<hex>             → docker.io/library/app@sha256:<hex>
//! app:1.0@sha256:<hex>         → docker.io/library/app:1.0@sha256:<hex>
//! ```
//!
//! Errors are `InvalidArgument` with the package's texts ("invalid reference format", ...).

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;

use crate::digest;
use crate::error::{Error, Result};

/// The registry that names without a domain belong to.
pub const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";
/// The longest accepted name (domain and path), as in `distribution/reference`.
pub const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// The grammar of `distribution/reference` (`reference.go`/`regexp.go`), anchored.
/// Groups: 1 = name, 2 = tag, 3 = digest.
static REFERENCE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    let alnum = "[a-z0-9]+";
    let separator = "(?:[._]|__|[-]+)";
    let path_component = format!("{alnum}(?:{separator}{alnum})*");
    let domain_component = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
    let domain_name = format!("{domain_component}(?:\\.{domain_component})*");
    let ipv6 = r"\[(?:[a-fA-F0-9:]+)\]";
    let host = format!("(?:{domain_name}|{ipv6})");
    let domain = format!("{host}(?::[0-9]+)?");
    let name = format!("(?:{domain}/)?{path_component}(?:/{path_component})*");
    let tag = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}";
    let digest = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";
    Regex::new(&format!("^({name})(?::({tag}))?(?:@({digest}))?$")).ok()
});

static IDENTIFIER: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new("^[a-f0-9]{64}$").ok());

/// A normalised, fully qualified image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::invalid(msg)
}

fn regex(r: &LazyLock<Option<Regex>>) -> Result<&Regex> {
    r.as_ref()
        .ok_or_else(|| Error::Internal("reference grammar failed to compile".into()))
}

/// Splits a name into its registry domain and the rest, adding Docker Hub's defaults.
fn split_docker_domain(name: &str) -> (String, String) {
    let (mut domain, mut remainder) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    if domain == LEGACY_DEFAULT_DOMAIN {
        domain = DEFAULT_DOMAIN.to_string();
    }
    if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        remainder = format!("{OFFICIAL_REPO_PREFIX}{remainder}");
    }
    (domain, remainder)
}

impl Reference {
    /// Parses and normalises a reference; a reference with neither tag nor digest gets
    /// `:latest`.
    pub fn parse(s: &str) -> Result<Reference> {
        let mut r = Self::parse_named(s)?;
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some(DEFAULT_TAG.to_string());
        }
        Ok(r)
    }

    /// Parses and normalises a reference without adding a default tag.
    pub fn parse_named(s: &str) -> Result<Reference> {
        if regex(&IDENTIFIER)?.is_match(s) {
            return Err(invalid(format!(
                "invalid repository name ({s}), cannot specify 64-byte hexadecimal strings"
            )));
        }
        let (domain, remainder) = split_docker_domain(s);
        let remote_name = match remainder.find(':') {
            Some(i) => &remainder[..i],
            None => remainder.as_str(),
        };
        if remote_name.to_lowercase() != remote_name {
            return Err(invalid(format!(
                "invalid reference format: repository name ({remote_name}) must be lowercase"
            )));
        }
        let full = format!("{domain}/{remainder}");
        let grammar = regex(&REFERENCE)?;
        let Some(caps) = grammar.captures(&full) else {
            if s.is_empty() {
                return Err(invalid("repository name must have at least one component"));
            }
            if grammar.is_match(&full.to_lowercase()) {
                return Err(invalid(
                    "invalid reference format: repository name must be lowercase",
                ));
            }
            return Err(invalid("invalid reference format"));
        };
        let name = caps.get(1).map(|m| m.as_str()).unwrap_or_default();
        if name.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(invalid(format!(
                "repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"
            )));
        }
        let tag = caps.get(2).map(|m| m.as_str().to_string());
        let digest = match caps.get(3) {
            Some(m) => {
                digest::validate(m.as_str())?;
                Some(m.as_str().to_string())
            }
            None => None,
        };
        let (domain, path) = match name.split_once('/') {
            Some((d, p)) => (d.to_string(), p.to_string()),
            None => return Err(invalid("invalid reference format")),
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// The registry host (`docker.io`, `localhost:5000`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path inside the registry (`library/busybox`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `domain/path`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// What to ask the registry for: the digest when there is one, else the tag.
    pub fn object(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or(DEFAULT_TAG)
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Reference> {
        Reference::parse(&format!("{}:{tag}", self.name()))
    }

    /// The same repository pinned to a digest, keeping the tag.
    pub fn with_digest(&self, digest: &str) -> Result<Reference> {
        digest::validate(digest)?;
        Ok(Reference {
            digest: Some(digest.to_string()),
            ..self.clone()
        })
    }

    /// The short form Docker prints (`busybox:latest`, `user/app:1.0`).
    pub fn familiar(&self) -> String {
        let mut path = self.path.clone();
        let mut out = String::new();
        if self.domain == DEFAULT_DOMAIN {
            if let Some(rest) = path.strip_prefix(OFFICIAL_REPO_PREFIX)
                && !rest.contains('/')
            {
                path = rest.to_string();
            }
        } else {
            out.push_str(&self.domain);
            out.push('/');
        }
        out.push_str(&path);
        if let Some(t) = &self.tag {
            out.push(':');
            out.push_str(t);
        }
        if let Some(d) = &self.digest {
            out.push('@');
            out.push_str(d);
        }
        out
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Reference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    fn norm(s: &str) -> String {
        match Reference::parse(s) {
            Ok(r) => r.to_string(),
            Err(e) => format!("ERR {e}"),
        }
    }

    fn err(s: &str) -> String {
        match Reference::parse(s) {
            Ok(r) => panic!("{s:?} parsed as {r}"),
            Err(Error::InvalidArgument(m)) => m,
            Err(e) => panic!("{s:?}: wrong class: {e}"),
        }
    }

    #[test]
    fn normalizes() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            (
                "index.docker.io/busybox",
                "docker.io/library/busybox:latest",
            ),
            ("index.docker.io/user/app:v1", "docker.io/user/app:v1"),
            ("user/app", "docker.io/user/app:latest"),
            ("user/app/sub:1", "docker.io/user/app/sub:1"),
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/app:tag", "localhost:5000/app:tag"),
            ("127.0.0.1:5000/a/b/c:t", "127.0.0.1:5000/a/b/c:t"),
            ("[::1]:5000/app", "[::1]:5000/app:latest"),
            (
                "ghcr.io/owner/repo:1.0.0-rc.1",
                "ghcr.io/owner/repo:1.0.0-rc.1",
            ),
            ("Example.COM/app", "Example.COM/app:latest"),
            ("EXAMPLE/app", "EXAMPLE/app:latest"),
            ("quay.io/a__b/c-d/e.f:T_ag", "quay.io/a__b/c-d/e.f:T_ag"),
            ("a---b", "docker.io/library/a---b:latest"),
            ("host:5000/app:5000", "host:5000/app:5000"),
        ];
        for (input, want) in cases {
            assert_eq!(norm(input), want, "{input}");
        }
    }

    #[test]
    fn digests() {
        let r = Reference::parse(&format!("busybox@{D}")).expect("parse");
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(D));
        assert_eq!(r.object(), D);
        let r = Reference::parse(&format!("localhost:5000/app:1.0@{D}")).expect("parse");
        assert_eq!(r.to_string(), format!("localhost:5000/app:1.0@{D}"));
        assert_eq!(r.tag(), Some("1.0"));
        assert_eq!(r.object(), D);
        assert_eq!(r.domain(), "localhost:5000");
        assert_eq!(r.path(), "app");
        assert_eq!(r.name(), "localhost:5000/app");
        let named = Reference::parse_named(&format!("app@{D}")).expect("named");
        assert_eq!(named.tag(), None);
        // Digests are checked like go-digest does.
        let short = err("busybox@sha256:ffffffffffffffffffffffffffffffff");
        assert!(short.contains("invalid checksum digest length"), "{short}");
        let unknown = err(&format!("busybox@md5:{}", "f".repeat(32)));
        assert!(
            unknown.contains("unsupported digest algorithm"),
            "{unknown}"
        );
        let upper = err(&format!("busybox@sha256:{}", "F".repeat(64)));
        assert!(upper.contains("invalid checksum digest format"), "{upper}");
    }

    #[test]
    fn rejects_like_distribution() {
        assert_eq!(
            err("Busybox"),
            "invalid reference format: repository name (library/Busybox) must be lowercase"
        );
        assert_eq!(
            err("docker.io/User/app"),
            "invalid reference format: repository name (User/app) must be lowercase"
        );
        assert_eq!(err(""), "repository name must have at least one component");
        for bad in [
            "busybox:",
            ":tag",
            "busybox::tag",
            "-busybox",
            "busybox-",
            "bus..ybox",
            "a/b//c",
            "/busybox",
            "busybox/",
            "busybox:tag with space",
            "busybox@",
            "busybox@sha256",
            "http://localhost/app",
            "localhost:port/app",
            &format!("busybox:{}", "t".repeat(129)),
        ] {
            let m = err(bad);
            assert!(m.starts_with("invalid reference format"), "{bad:?}: {m}");
        }
        assert_eq!(
            err(&"f".repeat(64)),
            format!(
                "invalid repository name ({}), cannot specify 64-byte hexadecimal strings",
                "f".repeat(64)
            )
        );
        let long = format!("example.com/{}", "a".repeat(250));
        assert_eq!(
            err(&long),
            "repository name must not be more than 255 characters"
        );
        // The Display of the error carries the class suffix, like containerd's errdefs.
        let full = Reference::parse("A:B:C").expect_err("bad").to_string();
        assert!(full.ends_with(": invalid argument"), "{full}");
    }

    #[test]
    fn familiar_form_and_retagging() {
        let r = Reference::parse("busybox").expect("parse");
        assert_eq!(r.familiar(), "busybox:latest");
        let r = Reference::parse("user/app:1").expect("parse");
        assert_eq!(r.familiar(), "user/app:1");
        let r = Reference::parse("localhost:5000/app").expect("parse");
        assert_eq!(r.familiar(), "localhost:5000/app:latest");
        let t = r.with_tag("v2").expect("tag");
        assert_eq!(t.to_string(), "localhost:5000/app:v2");
        assert!(r.with_tag("bad tag").is_err());
        let d = r.with_digest(D).expect("digest");
        assert_eq!(d.to_string(), format!("localhost:5000/app:latest@{D}"));
        let parsed: Reference = "alpine:3".parse().expect("from_str");
        assert_eq!(parsed.path(), "library/alpine");
    }
}
