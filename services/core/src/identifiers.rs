//! Validation of object identifiers (namespaces, container ids, lease ids, ...).
//!
//! The rules and messages are containerd's: at most 76 bytes of ASCII letters and digits,
//! where single `.`, `_` or `-` may separate runs of letters and digits. Such an identifier
//! is always safe to use as a file name. The messages quote the identifier the way Go's `%q`
//! does, so clients see the same text from berthd as from containerd.

use std::sync::LazyLock;

use regex::Regex;

use crate::error::{Error, Result};

/// The longest identifier accepted, in bytes.
pub const MAX_LENGTH: usize = 76;

/// The pattern every identifier must match; it is also quoted in the error message.
const PATTERN: &str = r"^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$";

static IDENTIFIER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(PATTERN).expect("the identifier pattern is a valid regex"));

/// A fresh random id of 64 hex digits (containers, pods and anonymous volumes name
/// themselves so, as Docker and containerd's CRI do).
pub fn random_id() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Checks that `s` is a valid identifier; the error is `InvalidArgument`.
pub fn validate(s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(Error::invalid("identifier must not be empty"));
    }
    if s.len() > MAX_LENGTH {
        return Err(Error::invalid(format!(
            "identifier {} greater than maximum length ({MAX_LENGTH} characters)",
            go_quote(s)
        )));
    }
    if !IDENTIFIER.is_match(s) {
        return Err(Error::invalid(format!(
            "identifier {} must match {PATTERN}",
            go_quote(s)
        )));
    }
    Ok(())
}

/// Renders `s` as Go's `strconv.Quote` (the `%q` verb) does: printable characters stay as
/// they are, `"` and `\` are backslash-escaped, and everything else becomes `\a`-style,
/// `\xNN`, `\uNNNN` or `\UNNNNNNNN` escapes with lower-case hex digits.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if go_is_print(c) => out.push(c),
            '\u{7}' => out.push_str(r"\a"),
            '\u{8}' => out.push_str(r"\b"),
            '\u{c}' => out.push_str(r"\f"),
            '\n' => out.push_str(r"\n"),
            '\r' => out.push_str(r"\r"),
            '\t' => out.push_str(r"\t"),
            '\u{b}' => out.push_str(r"\v"),
            c if c < ' ' || c == '\u{7f}' => out.push_str(&format!(r"\x{:02x}", u32::from(c))),
            c if u32::from(c) < 0x10000 => out.push_str(&format!(r"\u{:04x}", u32::from(c))),
            c => out.push_str(&format!(r"\U{:08x}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

/// Go's `unicode.IsPrint`: letters, marks, numbers, punctuation, symbols and the ASCII space.
fn go_is_print(c: char) -> bool {
    static GRAPHIC: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"\A[\p{L}\p{M}\p{N}\p{P}\p{S}]\z")
            .expect("the Unicode category pattern is a valid regex")
    });
    if c.is_ascii() {
        return c == ' ' || c.is_ascii_graphic();
    }
    let mut buf = [0u8; 4];
    GRAPHIC.is_match(c.encode_utf8(&mut buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_upstream_valid_identifiers() {
        let longest = "a".repeat(MAX_LENGTH);
        for id in [
            "default",
            "Default",
            "TestValidIdentifiers",
            "default-default",
            "containerd.io",
            "foo.boo",
            "swarmkit.docker.io",
            "0912341234",
            "task.0.0123456789",
            "container.system-75-f19a.00",
            "underscores_are_allowed",
            longest.as_str(),
        ] {
            assert!(validate(id).is_ok(), "{id:?} should be valid");
        }
    }

    #[test]
    fn rejects_upstream_invalid_identifiers() {
        let too_long = "a".repeat(MAX_LENGTH + 1);
        for id in [
            "",
            ".foo..foo",
            "foo/foo",
            "foo/..",
            "foo..foo",
            "foo.-boo",
            "-foo.boo",
            "foo.boo-",
            "but__only_tasteful_underscores",
            "zn--e9.org",
            "default--default",
            too_long.as_str(),
        ] {
            match validate(id) {
                Err(Error::InvalidArgument(_)) => {}
                other => panic!("{id:?}: expected InvalidArgument, got {other:?}"),
            }
        }
    }

    #[test]
    fn messages_match_containerd() {
        let msg = |s: &str| validate(s).map_err(|e| e.to_string()).err();
        assert_eq!(
            msg("").as_deref(),
            Some("identifier must not be empty: invalid argument")
        );
        assert_eq!(
            msg("a..b").as_deref(),
            Some(
                r#"identifier "a..b" must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument"#
            )
        );
        let long = "b".repeat(77);
        assert_eq!(
            msg(&long),
            Some(format!(
                "identifier \"{long}\" greater than maximum length (76 characters): invalid argument"
            ))
        );
    }

    #[test]
    fn length_is_counted_in_bytes() {
        // 38 two-byte characters are 76 bytes: not too long, but not ASCII either.
        let s = "é".repeat(38);
        let err = validate(&s).map_err(|e| e.to_string()).err();
        assert!(err.is_some_and(|m| m.contains("must match")));
        let s = "é".repeat(39);
        let err = validate(&s).map_err(|e| e.to_string()).err();
        assert!(err.is_some_and(|m| m.contains("greater than maximum length")));
    }

    #[test]
    fn quoting_follows_go() {
        assert_eq!(go_quote("plain"), r#""plain""#);
        assert_eq!(go_quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(go_quote("tab\there\nnl"), r#""tab\there\nnl""#);
        assert_eq!(go_quote("\u{7}\u{8}\u{b}\u{c}\r"), r#""\a\b\v\f\r""#);
        assert_eq!(go_quote("\u{0}\u{1b}\u{7f}"), r#""\x00\x1b\x7f""#);
        assert_eq!(go_quote("caf\u{e9} \u{725b}"), "\"caf\u{e9} \u{725b}\"");
        // Non-printable: NBSP, soft hyphen, zero-width space, a private-use plane character.
        assert_eq!(
            go_quote("\u{a0}\u{ad}\u{200b}\u{f0000}"),
            r#""\u00a0\u00ad\u200b\U000f0000""#
        );
        // Combining marks are printable in Go.
        assert_eq!(go_quote("e\u{301}"), "\"e\u{301}\"");
    }
}
