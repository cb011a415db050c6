//! `ADD <url> <dest>`: the http(s) sources of an ADD, downloaded before the step so that
//! their contents key the cache, as the classic builder does. Each file lands in a private
//! directory under the name the copy gives it (the URL's last path segment), with the
//! classic builder's mode 0600 and the mtime of the server's `Last-Modified`; a remote
//! archive is not unpacked.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context;
use sha2::{Digest, Sha256};

use super::super::staging::Staging;

/// Whether an ADD source is a URL.
pub fn is_url(src: &str) -> bool {
    src.starts_with("http://") || src.starts_with("https://")
}

/// The downloaded sources of one ADD.
pub struct Fetched {
    pub dir: Staging,
    /// (the URL, the file's name in `dir`).
    pub files: Vec<(String, String)>,
    /// The files' names and contents hashed, for the step's cache key.
    pub hash: String,
}

impl Fetched {
    /// The name the source `src` was saved under (None when it is not a URL).
    pub fn name_of(&self, src: &str) -> Option<&str> {
        self.files
            .iter()
            .find(|(u, _)| u == src)
            .map(|(_, n)| n.as_str())
    }
}

/// Downloads the URL sources of an ADD (None when it has none). `dir_dest`: the
/// destination is a directory, so each file needs a name from its URL.
pub async fn fetch(srcs: &[String], dir_dest: bool) -> anyhow::Result<Option<Fetched>> {
    let urls: Vec<&String> = srcs.iter().filter(|s| is_url(s)).collect();
    if urls.is_empty() {
        return Ok(None);
    }
    let dir = Staging::new("berth-build-url")?;
    let http = reqwest::Client::builder()
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("make an HTTP client")?;
    let mut files = Vec::new();
    let mut h = Sha256::new();
    for (n, url) in urls.into_iter().enumerate() {
        let name = match file_name(url) {
            Some(name) => name,
            None if dir_dest => {
                anyhow::bail!("cannot determine filename from url: {url}")
            }
            // Copied under the destination's name: any name does here.
            None => format!("download-{n}"),
        };
        if files.iter().any(|(_, f)| f == &name) {
            anyhow::bail!("ADD: two sources download to the same name {name:?}");
        }
        let resp = http
            .get(url.as_str())
            .send()
            .await
            .with_context(|| format!("failed to GET {url}"))?;
        let status = resp.status();
        if !status.is_success() {
            anyhow::bail!("failed to GET {url} with status {status}");
        }
        let modified = resp
            .headers()
            .get(reqwest::header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        let body = resp
            .bytes()
            .await
            .with_context(|| format!("failed to read {url}"))?;
        let path = dir.path().join(&name);
        save(&path, &body, modified).with_context(|| format!("save {url}"))?;
        h.update(name.as_bytes());
        h.update((body.len() as u64).to_le_bytes());
        h.update(&body);
        files.push((url.clone(), name));
    }
    Ok(Some(Fetched {
        dir,
        files,
        hash: format!("url:{}", hex::encode(h.finalize())),
    }))
}

/// The last segment of the URL's path, when it has one (query and fragment left out).
fn file_name(url: &str) -> Option<String> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let path = rest.split_once('/').map(|(_, p)| p)?;
    let last = path.rsplit('/').next().unwrap_or_default();
    (!last.is_empty() && last != "." && last != "..").then(|| last.to_string())
}

fn save(path: &Path, body: &[u8], modified: Option<std::time::SystemTime>) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(body)?;
    if let Some(t) = modified {
        f.set_modified(t)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_urls() {
        assert_eq!(file_name("http://h:1/a/b/c.txt").as_deref(), Some("c.txt"));
        assert_eq!(
            file_name("https://h/x.tar.gz?sig=1#f").as_deref(),
            Some("x.tar.gz")
        );
        assert_eq!(file_name("http://h/"), None);
        assert_eq!(file_name("http://h"), None);
        assert_eq!(file_name("http://h/dir/"), None);
    }
}
