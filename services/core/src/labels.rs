//! Validation of object labels.
//!
//! containerd limits each label to 4096 bytes of key and value together and names the
//! offending key (cut to its first 64 bytes) in the error, which is `InvalidArgument`.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// The largest accepted size of a label's key plus its value, in bytes.
pub const MAX_SIZE: usize = 4096;

/// How many bytes of an oversized label's key the error message shows.
const KEY_SHOWN: usize = 64;

/// Checks that one label is small enough.
pub fn validate(key: &str, value: &str) -> Result<()> {
    let total = key.len() + value.len();
    if total > MAX_SIZE {
        return Err(Error::invalid(format!(
            "label key and value length ({total} bytes) greater than maximum size \
             ({MAX_SIZE} bytes), key: {}",
            cut_bytes(key, KEY_SHOWN)
        )));
    }
    Ok(())
}

/// The comma-separated values of label `key` (berth's list labels: networks, aliases,
/// volumes...), trimmed, empty ones dropped; none when the label is absent.
pub fn list(labels: &BTreeMap<String, String>, key: &str) -> Vec<String> {
    labels
        .get(key)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Checks every label, reporting the first offender in key order.
pub fn validate_all(labels: &BTreeMap<String, String>) -> Result<()> {
    labels.iter().try_for_each(|(k, v)| validate(k, v))
}

/// The first `max` bytes of `s`. containerd cuts bytes, not characters; a character split by
/// the cut reaches its clients as one U+FFFD per remaining byte (that is how gRPC-Go sends
/// invalid UTF-8), so the same text is produced here.
fn cut_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = s[..end].to_owned();
    out.extend(std::iter::repeat_n('\u{fffd}', max - end));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(key: &str, value: &str) -> Option<String> {
        validate(key, value).map_err(|e| e.to_string()).err()
    }

    #[test]
    fn accepts_labels_up_to_the_limit() {
        assert!(validate("some", "value").is_ok());
        assert!(validate("s", &"s".repeat(MAX_SIZE - 1)).is_ok());
        assert!(validate("", "").is_ok());
        // Upstream's long-key cases that stay within the limit.
        for key_len in [KEY_SHOWN + 1, KEY_SHOWN - 1] {
            let key = "s".repeat(key_len);
            assert!(validate(&key, &"v".repeat(MAX_SIZE - key_len)).is_ok());
            assert!(validate(&key, &"v".repeat(MAX_SIZE - key_len - 1)).is_ok());
        }
    }

    #[test]
    fn rejects_oversized_labels() {
        let err = validate(&"s".repeat(MAX_SIZE), "s");
        assert!(matches!(err, Err(Error::InvalidArgument(_))));

        let key = "s".repeat(KEY_SHOWN + 12);
        let err = validate(&key, &"v".repeat(MAX_SIZE - key.len() + 1));
        assert!(matches!(err, Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn message_matches_containerd() {
        assert_eq!(
            message("short", &"v".repeat(MAX_SIZE)).as_deref(),
            Some(
                "label key and value length (4101 bytes) greater than maximum size \
                 (4096 bytes), key: short: invalid argument"
            )
        );
        let key = format!("{}{}", "k".repeat(KEY_SHOWN), "tail");
        assert_eq!(
            message(&key, &"v".repeat(MAX_SIZE)),
            Some(format!(
                "label key and value length (4164 bytes) greater than maximum size \
                 (4096 bytes), key: {}: invalid argument",
                "k".repeat(KEY_SHOWN)
            ))
        );
    }

    #[test]
    fn key_cut_inside_a_character() {
        // 63 ASCII bytes then a three-byte character: the cut keeps one byte of it.
        let key = format!("{}\u{725b}", "k".repeat(63));
        let msg = message(&key, &"v".repeat(MAX_SIZE)).unwrap_or_default();
        assert!(msg.ends_with(&format!(
            "key: {}\u{fffd}: invalid argument",
            "k".repeat(63)
        )));
        // 62 ASCII bytes: two bytes of it are kept, each shown as U+FFFD.
        let key = format!("{}\u{725b}", "k".repeat(62));
        let msg = message(&key, &"v".repeat(MAX_SIZE)).unwrap_or_default();
        assert!(msg.ends_with(&format!(
            "key: {}\u{fffd}\u{fffd}: invalid argument",
            "k".repeat(62)
        )));
    }

    #[test]
    fn validate_all_reports_the_first_bad_label() {
        let mut labels = BTreeMap::new();
        labels.insert("a".to_owned(), "ok".to_owned());
        assert!(validate_all(&labels).is_ok());
        assert!(validate_all(&BTreeMap::new()).is_ok());
        labels.insert("z".to_owned(), "v".repeat(MAX_SIZE));
        labels.insert("m".to_owned(), "v".repeat(MAX_SIZE));
        let msg = validate_all(&labels).map_err(|e| e.to_string()).err();
        assert!(msg.is_some_and(|m| m.ends_with("key: m: invalid argument")));
    }
}
