//! What moving images in and out of the content store shares — pull, push, unpack and
//! image archives: how many blobs travel at once, and reading a whole (small) blob.

use std::io::Read;

use berth_oci::image::{self as oci, Platform};

use crate::content::ContentStore;
use crate::error::{Error, Result};
use crate::images::Descriptor;

/// Blobs fetched (pull) or uploaded (push) at once unless told otherwise.
pub const DEFAULT_CONCURRENCY: usize = 3;

/// `n`, or [`DEFAULT_CONCURRENCY`] for 0 (a request that did not say).
pub fn concurrency(n: usize) -> usize {
    match n {
        0 => DEFAULT_CONCURRENCY,
        n => n,
    }
}

/// The whole blob `digest` of the namespace (a manifest, an index, a config), read on the
/// blocking pool.
pub async fn read_blob(content: &ContentStore, namespace: &str, digest: &str) -> Result<Vec<u8>> {
    let (mut file, _) = content.open_blob(namespace, digest).await?;
    let d = digest.to_string();
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        file.read_to_end(&mut out)
            .map_err(|e| Error::io("read blob", &d, e))?;
        Ok(out)
    })
    .await
    .map_err(|e| Error::Internal(format!("read blob task: {e}")))?
}

/// The manifest an image's `target` stands for on platform `want`: the target itself, or
/// the best match of its index.
pub async fn platform_manifest(
    content: &ContentStore,
    namespace: &str,
    target: &Descriptor,
    want: &Platform,
) -> Result<Descriptor> {
    if oci::MediaType::from(&target.media_type).kind()? != oci::Kind::Index {
        return Ok(target.clone());
    }
    let data = read_blob(content, namespace, &target.digest).await?;
    let index = oci::parse_index(&target.digest, &data)?;
    let candidates = index
        .manifests
        .iter()
        .filter(|m| m.media_type.is_manifest_or_index())
        .map(|m| (m.platform.as_ref(), m));
    oci::best_match(want, candidates)
        .map(Descriptor::from)
        .ok_or_else(|| {
            Error::not_found(format!(
                "no manifest for platform {want} in index {}",
                target.digest
            ))
        })
}
