//! containerd's filter language, used by every `List` call (`ctr images ls name==redis`).
//!
//! A filter string is a comma-separated list of selectors, all of which must hold:
//!
//! ```text
//! selectors := selector ("," selector)*
//! selector  := fieldpath (operator value)?
//! fieldpath := field ("." field)*
//! field     := quoted | [A-Za-z0-9_]+
//! operator  := "==" | "!=" | "~="
//! value     := quoted | [^\s,]+
//! quoted    := a Go string literal in "..." (for "~=" also /.../ or |...|)
//! ```
//!
//! A selector without an operator tests that the field is present; `~=` matches a regular
//! expression with Go's `regexp` syntax (`goregex` translates it for the `regex` crate).
//! Several filter strings given to one call are OR-ed.
//!
//! The scanner and parser reproduce containerd's token by token, including its quirks
//! (trailing blanks after a value are an error, `.` separates fields so `labels.a.b` names
//! the label `a.b`) and its error messages, which clients show verbatim.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;

use crate::error::{Error, Result};

mod goregex;

/// Maps field paths of one object to values, e.g. `["labels", "a.b"]` to a label's value.
pub trait Adaptor {
    /// `Some(value)` when the field is present; `None` counts as the empty string for `!=`
    /// and `~=`, as containerd's adaptors return `""` for absent fields.
    fn field(&self, path: &[String]) -> Option<String>;
}

/// A parsed filter: true when any of its clauses holds, and a clause holds when all of its
/// selectors do.
#[derive(Clone, Debug)]
pub struct Filter {
    clauses: Vec<Vec<Selector>>,
}

impl Filter {
    /// Parses one filter string; the empty string matches everything. A syntax error is
    /// `InvalidArgument` with containerd's message (`filters: parse error: [...]: ...`).
    pub fn parse(s: &str) -> Result<Filter> {
        if s.is_empty() {
            return Ok(Filter::always());
        }
        let selectors = Parser::new(s)
            .selectors()
            .map_err(|msg| Error::InvalidArgument(format!("filters: {msg}")))?;
        Ok(Filter {
            clauses: vec![selectors],
        })
    }

    /// Parses the filters of a request: the object matches when any of them matches, and an
    /// empty list matches everything.
    pub fn parse_all<S: AsRef<str>>(filters: &[S]) -> Result<Filter> {
        if filters.is_empty() {
            return Ok(Filter::always());
        }
        let mut clauses = Vec::with_capacity(filters.len());
        for f in filters {
            clauses.extend(Filter::parse(f.as_ref())?.clauses);
        }
        Ok(Filter { clauses })
    }

    /// The filter that matches every object.
    pub fn always() -> Filter {
        Filter {
            clauses: vec![Vec::new()],
        }
    }

    /// Whether `obj` passes the filter.
    pub fn matches(&self, obj: &dyn Adaptor) -> bool {
        self.clauses
            .iter()
            .any(|clause| clause.iter().all(|s| s.matches(obj)))
    }
}

/// The label lookup of containerd's adaptors: the rest of the field path, joined with `.`,
/// is the key, so `labels.a.b` and `labels."a.b"` both name the label `a.b`. Like upstream, an
/// empty rest looks up the empty key.
pub fn map_field(map: &BTreeMap<String, String>, rest: &[String]) -> Option<String> {
    map.get(&rest.join(".")).cloned()
}

#[derive(Clone, Debug)]
struct Selector {
    /// `None` when a quoted field decoded to bytes that are not UTF-8 (`"\xff"`): no object
    /// has such a field.
    fieldpath: Option<Vec<String>>,
    op: Operator,
}

#[derive(Clone, Debug)]
enum Operator {
    Present,
    /// `None` when the value decoded to bytes that are not UTF-8: it equals nothing.
    Equal(Option<String>),
    NotEqual(Option<String>),
    /// `None` when the expression does not compile: containerd logs and matches nothing.
    Matches(Option<Regex>),
}

impl Selector {
    fn matches(&self, obj: &dyn Adaptor) -> bool {
        let found = self.fieldpath.as_deref().and_then(|p| obj.field(p));
        let text = found.as_deref().unwrap_or("");
        match &self.op {
            Operator::Present => found.is_some(),
            Operator::Equal(want) => found.is_some() && want.as_deref() == Some(text),
            Operator::NotEqual(want) => want.as_deref() != Some(text),
            Operator::Matches(re) => re.as_ref().is_some_and(|re| re.is_match(text)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Scanner

/// One step of the scanner's input: a character, the end, or a character it refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ch {
    Char(char),
    Eof,
    /// NUL, or U+FFFD (which Go's decoder cannot tell apart from invalid UTF-8).
    Illegal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Eof,
    Quoted,
    Value,
    Field,
    Separator,
    Operator,
    Illegal,
    /// A character that starts no token in the current state.
    Other(char),
}

struct Scanner<'a> {
    input: &'a str,
    /// Start of the character read last.
    pos: usize,
    /// End of the character read last.
    ppos: usize,
    /// After an operator, the next run of characters is a value.
    value: bool,
    /// The first error met, kept for the message of an `Illegal` token.
    err: Option<&'static str>,
}

impl<'a> Scanner<'a> {
    fn new(input: &'a str) -> Self {
        Scanner {
            input,
            pos: 0,
            ppos: 0,
            value: false,
            err: None,
        }
    }

    fn error(&mut self, msg: &'static str) {
        self.err.get_or_insert(msg);
    }

    fn next(&mut self) -> Ch {
        if self.pos >= self.input.len() {
            return Ch::Eof;
        }
        self.pos = self.ppos;
        let Some(c) = self.input[self.ppos..].chars().next() else {
            return Ch::Eof;
        };
        self.ppos += c.len_utf8();
        match c {
            '\u{fffd}' => {
                self.error("rune error");
                Ch::Illegal
            }
            '\0' => {
                self.error("unexpected null");
                Ch::Illegal
            }
            c => Ch::Char(c),
        }
    }

    /// The next character without consuming it. Errors it meets are still recorded.
    fn peek(&mut self) -> Ch {
        let (pos, ppos) = (self.pos, self.ppos);
        let ch = self.next();
        self.pos = pos;
        self.ppos = ppos;
        ch
    }

    /// The next token: its position, kind and text.
    fn scan(&mut self) -> (usize, Token, &'a str) {
        let mut ch = self.next();
        let mut pos = self.pos;
        loop {
            let c = match ch {
                Ch::Eof => return (self.pos, Token::Eof, ""),
                Ch::Illegal => return (self.pos, Token::Illegal, ""),
                Ch::Char(c) => c,
            };
            let kind = if is_quote(c) {
                if self.scan_quoted(c) {
                    Token::Quoted
                } else {
                    Token::Illegal
                }
            } else if c == ',' || c == '.' {
                self.value = false;
                Token::Separator
            } else if is_operator(c) {
                self.skip_while(is_operator);
                self.value = true;
                Token::Operator
            } else if c.is_whitespace() {
                ch = self.next();
                pos = self.pos;
                continue;
            } else if self.value {
                self.skip_while(is_value_char);
                self.value = false;
                Token::Value
            } else if is_field_char(c) {
                self.skip_while(is_field_char);
                Token::Field
            } else {
                return (self.pos, Token::Other(c), "");
            };
            return (pos, kind, &self.input[pos..self.ppos]);
        }
    }

    fn skip_while(&mut self, accept: fn(char) -> bool) {
        while let Ch::Char(c) = self.peek() {
            if !accept(c) {
                break;
            }
            self.next();
        }
    }

    /// Reads up to the closing `quote`; false when the literal is unterminated or holds a
    /// bad escape (the whole literal is then one `Illegal` token).
    fn scan_quoted(&mut self, quote: char) -> bool {
        let mut legal = true;
        let mut ch = self.next();
        while ch != Ch::Char(quote) {
            match ch {
                Ch::Char('\n') | Ch::Eof | Ch::Illegal => {
                    self.error("quoted literal not terminated");
                    return false;
                }
                Ch::Char('\\') => {
                    let (after, ok) = self.scan_escape(quote);
                    ch = after;
                    legal &= ok;
                }
                Ch::Char(_) => ch = self.next(),
            }
        }
        legal
    }

    /// Checks the escape after a backslash; returns the character following it.
    fn scan_escape(&mut self, quote: char) -> (Ch, bool) {
        let ch = self.next();
        match ch {
            Ch::Char('a' | 'b' | 'f' | 'n' | 'r' | 't' | 'v' | '\\') => (self.next(), true),
            Ch::Char(c) if c == quote => (self.next(), true),
            Ch::Char('0'..='7') => self.scan_digits(ch, 8, 3),
            Ch::Char('x') => {
                let first = self.next();
                self.scan_digits(first, 16, 2)
            }
            Ch::Char('u') => {
                let first = self.next();
                self.scan_digits(first, 16, 4)
            }
            Ch::Char('U') => {
                let first = self.next();
                self.scan_digits(first, 16, 8)
            }
            _ => {
                self.error("illegal escape sequence");
                (ch, false)
            }
        }
    }

    fn scan_digits(&mut self, mut ch: Ch, base: u32, mut n: u32) -> (Ch, bool) {
        while n > 0 && matches!(ch, Ch::Char(c) if c.is_digit(base)) {
            ch = self.next();
            n -= 1;
        }
        if n > 0 {
            self.error("illegal numeric escape sequence");
            return (ch, false);
        }
        (ch, true)
    }
}

fn is_quote(c: char) -> bool {
    matches!(c, '"' | '/' | '|')
}

fn is_operator(c: char) -> bool {
    matches!(c, '=' | '!' | '~')
}

fn is_field_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

/// Go's test for value characters: graphic (letter, mark, number, punctuation, symbol),
/// neither a blank nor a comma.
fn is_value_char(c: char) -> bool {
    static GRAPHIC: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"\A[\p{L}\p{M}\p{N}\p{P}\p{S}]\z")
            .expect("the Unicode category pattern is a valid regex")
    });
    if c.is_ascii() {
        return c != ',' && c.is_ascii_graphic();
    }
    let mut buf = [0u8; 4];
    GRAPHIC.is_match(c.encode_utf8(&mut buf))
}

// ---------------------------------------------------------------------------------------
// Parser

struct Parser<'a> {
    input: &'a str,
    scanner: Scanner<'a>,
}

/// A parse error's message, without the leading `filters: `.
type ParseResult<T> = std::result::Result<T, String>;

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Parser {
            input,
            scanner: Scanner::new(input),
        }
    }

    fn selectors(&mut self) -> ParseResult<Vec<Selector>> {
        let mut all = vec![self.selector()?];
        loop {
            match self.scanner.peek() {
                Ch::Char(',') => {
                    self.scanner.scan();
                    all.push(self.selector()?);
                }
                Ch::Eof => return Ok(all),
                other => {
                    // Go prints the sentinel of an illegal character as U+FFFD.
                    let shown = match other {
                        Ch::Char(c) => c,
                        _ => '\u{fffd}',
                    };
                    return Err(
                        self.error(self.scanner.ppos, &format!("unexpected input: {shown}"))
                    );
                }
            }
        }
    }

    fn selector(&mut self) -> ParseResult<Selector> {
        let fieldpath = self.fieldpath()?;
        let fieldpath = fieldpath
            .into_iter()
            .map(String::from_utf8)
            .collect::<std::result::Result<Vec<_>, _>>()
            .ok();
        if matches!(self.scanner.peek(), Ch::Char(',') | Ch::Eof) {
            return Ok(Selector {
                fieldpath,
                op: Operator::Present,
            });
        }
        let op = self.operator()?;
        let value = self.value(op == "~=")?;
        let value = String::from_utf8(value).ok();
        let op = match op {
            "==" => Operator::Equal(value),
            "!=" => Operator::NotEqual(value),
            _ => Operator::Matches(value.and_then(|v| {
                let re = goregex::compile(&v);
                if re.is_none() {
                    tracing::warn!(pattern = %v, "filter regular expression does not compile; it matches nothing");
                }
                re
            })),
        };
        Ok(Selector { fieldpath, op })
    }

    fn fieldpath(&mut self) -> ParseResult<Vec<Vec<u8>>> {
        let mut path = vec![self.field()?];
        while self.scanner.peek() == Ch::Char('.') {
            self.scanner.scan();
            path.push(self.field()?);
        }
        Ok(path)
    }

    fn field(&mut self) -> ParseResult<Vec<u8>> {
        let (pos, token, text) = self.scanner.scan();
        match token {
            Token::Field => Ok(text.as_bytes().to_vec()),
            Token::Quoted => self.unquote(pos, text, false),
            Token::Illegal => Err(self.scanner_error(pos)),
            _ => Err(self.error(pos, "expected field or quoted")),
        }
    }

    /// One of the three operators, as written.
    fn operator(&mut self) -> ParseResult<&'static str> {
        let (pos, token, text) = self.scanner.scan();
        match token {
            Token::Operator => match text {
                "==" => Ok("=="),
                "!=" => Ok("!="),
                "~=" => Ok("~="),
                // Operator text is only `=!~`, so Go's %q is plain double quotes here.
                _ => Err(self.error(pos, &format!("unsupported operator \"{text}\""))),
            },
            Token::Illegal => Err(self.scanner_error(pos)),
            _ => Err(self.error(pos, r#"expected an operator ("=="|"!="|"~=")"#)),
        }
    }

    fn value(&mut self, alternate_quotes: bool) -> ParseResult<Vec<u8>> {
        let (pos, token, text) = self.scanner.scan();
        match token {
            Token::Value | Token::Field => Ok(text.as_bytes().to_vec()),
            Token::Quoted => self.unquote(pos, text, alternate_quotes),
            Token::Illegal => Err(self.scanner_error(pos)),
            _ => Err(self.error(pos, "expected value or quoted")),
        }
    }

    fn unquote(&self, pos: usize, text: &str, alternate_quotes: bool) -> ParseResult<Vec<u8>> {
        if !alternate_quotes && !text.starts_with('"') {
            return Err(self.error(pos, "invalid quote encountered"));
        }
        unquote(text).ok_or_else(|| self.error(pos, "unquoting failed: quote syntax error"))
    }

    fn scanner_error(&self, pos: usize) -> String {
        self.error(pos, self.scanner.err.unwrap_or(""))
    }

    /// containerd's message: the input with the offending byte marked `>|x|<`.
    fn error(&self, pos: usize, msg: &str) -> String {
        let input = self.input.as_bytes();
        let Some(&at) = input.get(pos) else {
            return format!("parse error: [{}]: {msg}", self.input);
        };
        let mut text = b"parse error: [".to_vec();
        text.extend_from_slice(&input[..pos]);
        text.extend_from_slice(b" >|");
        text.push(at);
        text.extend_from_slice(b"|< ");
        text.extend_from_slice(&input[pos + 1..]);
        text.extend_from_slice(b"]: ");
        text.extend_from_slice(msg.as_bytes());
        replace_invalid_bytes(&text)
    }
}

/// Text with each byte that is not part of valid UTF-8 replaced by U+FFFD. containerd marks a
/// single byte of the input, which can split a character; gRPC-Go sends those bytes this way.
fn replace_invalid_bytes(mut bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    loop {
        match std::str::from_utf8(bytes) {
            Ok(valid) => {
                out.push_str(valid);
                return out;
            }
            Err(e) => {
                let (valid, rest) = bytes.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                out.push('\u{fffd}');
                bytes = rest.get(1..).unwrap_or_default();
            }
        }
    }
}

/// Decodes a quoted literal as containerd does: Go string syntax, where `/` and `|` may also
/// delimit (and then be escaped). `\x` and octal escapes produce single bytes, so the result
/// may not be UTF-8. `None` is Go's "quote syntax error".
///
/// Only `"`, `/` and `|` literals reach this: the scanner knows no other quotes.
fn unquote(text: &str) -> Option<Vec<u8>> {
    let quote = text.chars().next()?;
    let inner = text.strip_prefix(quote)?.strip_suffix(quote)?;
    if !matches!(quote, '"' | '/' | '|') || inner.contains('\n') {
        return None;
    }
    let mut out = Vec::with_capacity(inner.len());
    let mut rest = inner;
    while let Some(c) = rest.chars().next() {
        if c == quote {
            return None;
        }
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let esc = rest.as_bytes().get(1).copied()?;
        rest = &rest[2..];
        match esc {
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'\\' => out.push(b'\\'),
            b'\'' | b'"' | b'|' | b'/' if char::from(esc) == quote => out.push(esc),
            b'x' | b'u' | b'U' => {
                let n = match esc {
                    b'x' => 2,
                    b'u' => 4,
                    _ => 8,
                };
                let digits = rest.get(..n)?;
                if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                let v = u32::from_str_radix(digits, 16).ok()?;
                rest = &rest[n..];
                if esc == b'x' {
                    out.push(u8::try_from(v).ok()?);
                } else if v >= 0x8000_0000 {
                    // Go holds the value in an int32: it turns negative, passes the range
                    // check and is written as its low byte.
                    out.push(v.to_le_bytes()[0]);
                } else if v > 0x10ffff {
                    return None;
                } else {
                    // Go encodes a surrogate code point as U+FFFD.
                    let c = char::from_u32(v).unwrap_or('\u{fffd}');
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
            b'0'..=b'7' => {
                let digits = rest.get(..2)?;
                if !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                    return None;
                }
                let v = u32::from(esc - b'0') * 64 + u32::from_str_radix(digits, 8).ok()?;
                out.push(u8::try_from(v).ok()?);
                rest = &rest[2..];
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests;
