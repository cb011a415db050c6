//! Content digests (`algorithm:hex`), validated the way the OCI go-digest package does.

use crate::error::{Error, Result};

/// Checks that `s` is a well-formed digest of a supported algorithm.
pub fn validate(s: &str) -> Result<()> {
    let Some((alg, hex)) = s.split_once(':') else {
        return Err(Error::invalid(format!(
            "{s}: invalid checksum digest format"
        )));
    };
    if alg.is_empty() || hex.is_empty() {
        return Err(Error::invalid(format!(
            "{s}: invalid checksum digest format"
        )));
    }
    let len = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(Error::invalid(format!("{s}: unsupported digest algorithm"))),
    };
    if hex.len() != len {
        return Err(Error::invalid(format!(
            "{s}: invalid checksum digest length"
        )));
    }
    if !hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(Error::invalid(format!(
            "{s}: invalid checksum digest format"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert!(validate(&good).is_ok());
        assert!(
            validate("sha256")
                .unwrap_err()
                .to_string()
                .contains("format")
        );
        assert!(
            validate("md5:abc")
                .unwrap_err()
                .to_string()
                .contains("unsupported")
        );
        assert!(
            validate("sha256:abc")
                .unwrap_err()
                .to_string()
                .contains("length")
        );
        let upper = format!("sha256:{}", "A".repeat(64));
        assert!(validate(&upper).is_err());
    }
}
