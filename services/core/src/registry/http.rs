//! What the registry's HTTP answers say, for the client and the authorizer alike: a
//! transport error with its causes, a distribution error body's messages, a body read up to
//! a limit, and the headers the client reads.

use reqwest::header::{self, HeaderMap};

use crate::error::{Error, Result};

/// Describes a reqwest error with its causes (the top level alone says little).
pub(super) fn describe_reqwest(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    s
}

/// The messages of a distribution error body (`{"errors":[{"code","message"}]}`), Docker's
/// way: `unauthorized: authentication required`. Other bodies are returned trimmed and cut.
pub(super) fn registry_message(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct One {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
        #[serde(default)]
        detail: serde_json::Value,
    }
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<One>,
    }
    if let Ok(e) = serde_json::from_str::<Errors>(body) {
        let parts: Vec<String> = e
            .errors
            .iter()
            .map(|o| {
                let code = o.code.to_ascii_lowercase().replace('_', " ");
                let mut msg = o.message.clone();
                if msg.is_empty()
                    && let serde_json::Value::String(d) = &o.detail
                {
                    msg = d.clone();
                }
                match (code.is_empty(), msg.is_empty()) {
                    (false, false) => format!("{code}: {msg}"),
                    (false, true) => code,
                    _ => msg,
                }
            })
            .collect();
        return parts.join("; ");
    }
    let t = body.trim();
    let mut end = t.len().min(200);
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    t[..end].to_string()
}

/// Reads at most `limit` bytes of a response body.
pub(super) async fn read_limited(resp: &mut reqwest::Response, limit: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(c) = resp
        .chunk()
        .await
        .map_err(|e| Error::Unavailable(format!("reading response: {}", describe_reqwest(&e))))?
    {
        if out.len() + c.len() > limit {
            return Err(Error::precondition(format!(
                "response body larger than {limit} bytes"
            )));
        }
        out.extend_from_slice(&c);
    }
    Ok(out)
}

/// A header's value, trimmed; `None` when absent, empty or not text.
pub(super) fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The media type of a `Content-Type` header, parameters dropped, lower-cased.
pub(super) fn content_type(h: &HeaderMap) -> Option<String> {
    header_str(h, header::CONTENT_TYPE).map(|ct| {
        ct.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    })
}

/// The digest a registry reports in `Docker-Content-Digest`.
pub(super) fn docker_content_digest(h: &HeaderMap) -> Option<String> {
    header_str(h, header::HeaderName::from_static("docker-content-digest"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_messages() {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":[{"Type":"repository"}]}]}"#;
        assert_eq!(
            registry_message(body),
            "unauthorized: authentication required"
        );
        let body = r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"},{"code":"X","detail":"d"}]}"#;
        assert_eq!(
            registry_message(body),
            "manifest unknown: manifest unknown; x: d"
        );
        assert_eq!(
            registry_message("  <html>oops</html>\n"),
            "<html>oops</html>"
        );
        assert_eq!(registry_message(""), "");
    }
}
