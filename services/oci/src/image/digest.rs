//! Digests the image format computes: a blob's `sha256:<hex>` and the chain IDs that name
//! a stack of layers (and so the snapshots an image unpacks to).

use sha2::{Digest as _, Sha256};

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The chain IDs of a stack of layers, bottom first, from their diff IDs (the OCI image
/// spec's definition): chainID(0) = diffID(0); chainID(n) = sha256(chainID(n-1) + " " +
/// diffID(n)).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => sha256_digest(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(s: &str) -> String {
        sha256_digest(s.as_bytes())
    }

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        assert!(chain_ids(&[]).is_empty());
        let a = sha("a");
        let b = sha("b");
        let c = sha("c");
        let ids = chain_ids(&[a.clone(), b.clone(), c.clone()]);
        assert_eq!(ids[0], a);
        let ab = sha(&format!("{a} {b}"));
        assert_eq!(ids[1], ab);
        assert_eq!(ids[2], sha(&format!("{ab} {c}")));
        assert!(ids.iter().all(|i| i.len() == "sha256:".len() + 64));
        assert_eq!(
            sha(""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
