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
//! expression with Go's `regexp` syntax. Several filter strings given to one call are OR-ed.
//!
//! The scanner and parser reproduce containerd's token by token, including its quirks
//! (trailing blanks after a value are an error, `.` separates fields so `labels.a.b` names
//! the label `a.b`) and its error messages, which clients show verbatim.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;

use crate::error::{Error, Result};

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

// ---------------------------------------------------------------------------------------
// Regular expressions

/// Go `regexp` syntax on top of the `regex` crate.
///
/// Both descend from RE2, but they differ in ways a user would notice: Go's `\d`, `\w`, `\s`
/// and `\b` are ASCII-only, `a**` and `x{1001}` are errors in Go, Go reads `{,3}` and `\<`
/// as literals, and inside `[...]` the `regex` crate gives `[`, `&&`, `--` and `~~` meanings
/// Go does not. So the Go pattern is parsed here, with Go's rules, and rewritten into an
/// equivalent pattern for the `regex` crate: every literal character becomes a `\x{..}`
/// escape, Perl classes become explicit ASCII classes, named groups become plain groups
/// (names do not matter for matching), and anything Go rejects is rejected.
///
/// Left as they are: the two libraries' Unicode versions, and their limits on size and nesting
/// (the regex crate nests at most 250 deep, Go 1000; its compiled form of large Unicode classes
/// is bigger, so `\pL{1000}\pL{1000}\pL{1000}\pL{1000}` fits Go's budget but not ours).
mod goregex {
    use regex::{Regex, RegexBuilder};

    /// Go budgets 128 MiB for a compiled expression. The regex crate's default of 10 MiB would
    /// refuse patterns Go takes, such as `\pL{1000}`.
    const SIZE_LIMIT: usize = 128 << 20;

    pub(super) fn compile(pattern: &str) -> Option<Regex> {
        RegexBuilder::new(&translate(pattern)?)
            .size_limit(SIZE_LIMIT)
            .build()
            .ok()
    }

    /// The `regex` crate pattern equivalent to Go `pattern`, or `None` if Go rejects it.
    pub(super) fn translate(pattern: &str) -> Option<String> {
        let mut t = Translator {
            chars: pattern.chars().collect(),
            i: 0,
            out: String::with_capacity(pattern.len() * 2),
            pending_flags: String::new(),
            ends_with_repeat: false,
            groups: vec![Group::default()],
        };
        t.run()?;
        Some(t.out)
    }

    /// Matches no character: stands in for a surrogate, which no `str` contains.
    const NOTHING: &str = r"[^\x{0}-\x{10FFFF}]";

    const DIGIT: &str = "0-9";
    const WORD: &str = "0-9A-Za-z_";
    const SPACE: &str = r"\t\n\x0C\r\x20";

    const POSIX_NAMES: [&str; 14] = [
        "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct",
        "space", "upper", "word", "xdigit",
    ];

    const CATEGORIES: [&str; 38] = [
        "C", "Cc", "Cf", "Cn", "Co", "Cs", "L", "Ll", "Lm", "Lo", "Lt", "Lu", "M", "Mc", "Me",
        "Mn", "N", "Nd", "Nl", "No", "P", "Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps", "S", "Sc",
        "Sk", "Sm", "So", "Z", "Zl", "Zp", "Zs", "Lc",
    ];

    /// Go's long category names, in its canonical spelling.
    const CATEGORY_ALIASES: [(&str, &str); 42] = [
        ("Casedletter", "Lc"),
        ("Closepunctuation", "Pe"),
        ("Combiningmark", "M"),
        ("Connectorpunctuation", "Pc"),
        ("Control", "Cc"),
        ("Currencysymbol", "Sc"),
        ("Dashpunctuation", "Pd"),
        ("Decimalnumber", "Nd"),
        ("Enclosingmark", "Me"),
        ("Finalpunctuation", "Pf"),
        ("Format", "Cf"),
        ("Initialpunctuation", "Pi"),
        ("Letter", "L"),
        ("Letternumber", "Nl"),
        ("Lineseparator", "Zl"),
        ("Lowercaseletter", "Ll"),
        ("Mark", "M"),
        ("Mathsymbol", "Sm"),
        ("Modifierletter", "Lm"),
        ("Modifiersymbol", "Sk"),
        ("Nonspacingmark", "Mn"),
        ("Number", "N"),
        ("Openpunctuation", "Ps"),
        ("Other", "C"),
        ("Otherletter", "Lo"),
        ("Othernumber", "No"),
        ("Otherpunctuation", "Po"),
        ("Othersymbol", "So"),
        ("Paragraphseparator", "Zp"),
        ("Privateuse", "Co"),
        ("Punctuation", "P"),
        ("Separator", "Z"),
        ("Spaceseparator", "Zs"),
        ("Spacingmark", "Mc"),
        ("Surrogate", "Cs"),
        ("Symbol", "S"),
        ("Titlecaseletter", "Lt"),
        ("Unassigned", "Cn"),
        ("Uppercaseletter", "Lu"),
        ("Cntrl", "Cc"),
        ("Digit", "Nd"),
        ("Punct", "P"),
    ];

    struct Translator {
        chars: Vec<char>,
        i: usize,
        out: String,
        /// Flag changes `(?i)` not yet written. Go lets a repetition right after one apply to
        /// the item before it (`a(?i)*`); the regex crate does not, so they are written after
        /// any repetitions that follow. Flags do not change what a repetition matches.
        pending_flags: String,
        /// The output ends with a repetition operator, so a `?` written next would make it
        /// lazy instead of optional.
        ends_with_repeat: bool,
        /// The groups open at the cursor, outermost (the whole pattern) first.
        groups: Vec<Group>,
    }

    /// What Go's nested-repetition limit needs to know about an open group: how many copies
    /// of their innermost part the items in it would expand to. Go refuses a counted
    /// repetition when this exceeds 1000 (`(a{100}){20}`), though each count is allowed.
    #[derive(Default)]
    struct Group {
        /// The most copies among the items before the last one.
        before: i64,
        /// The item a repetition would apply to.
        last: Option<i64>,
    }

    impl Group {
        fn copies(&self) -> i64 {
            self.before.max(self.last.unwrap_or(0))
        }
    }

    impl Translator {
        fn at(&self, k: usize) -> Option<char> {
            self.chars.get(k).copied()
        }

        fn peek(&self, ahead: usize) -> Option<char> {
            self.at(self.i + ahead)
        }

        /// First index at or after `from` holding `c`.
        fn find(&self, from: usize, c: char) -> Option<usize> {
            (from..self.chars.len()).find(|&k| self.chars[k] == c)
        }

        fn literal(&mut self, c: u32) {
            if (0xD800..0xE000).contains(&c) {
                self.out.push_str(NOTHING);
            } else {
                self.out.push_str(&format!(r"\x{{{c:X}}}"));
            }
        }

        fn run(&mut self) -> Option<()> {
            let mut after_repeat = false;
            while let Some(c) = self.peek(0) {
                let counted = if c == '{' {
                    self.counted_repeat()
                } else {
                    None
                };
                let repetition = matches!(c, '*' | '+' | '?') || counted.is_some();
                let written = self.out.len();
                let pending = std::mem::take(&mut self.pending_flags);
                if repetition {
                    // Go: no repetition directly after another, nor with nothing to repeat.
                    if after_repeat {
                        return None;
                    }
                    let last = self.groups.last_mut()?.last.as_mut()?;
                    if let Some((min, max, end)) = counted {
                        let copies = if max < 0 { min } else { max };
                        if !(0..=1000).contains(&min) || max > 1000 || (max >= 0 && min > max) {
                            return None;
                        }
                        *last = if copies == 0 {
                            0
                        } else {
                            copies * (*last).max(1)
                        };
                        if (min >= 2 || max >= 2) && *last > 1000 {
                            return None;
                        }
                        let text: String = self.chars[self.i..end].iter().collect();
                        self.out.push_str(&text);
                        self.i = end;
                    } else if c == '?' && self.ends_with_repeat {
                        self.out.push_str("{0,1}");
                        self.i += 1;
                    } else {
                        self.out.push(c);
                        self.i += 1;
                    }
                    self.lazy_suffix();
                    self.ends_with_repeat = true;
                    self.pending_flags.insert_str(0, &pending);
                    after_repeat = true;
                    continue;
                }
                match c {
                    '(' if self.peek(1) == Some('?') => self.group()?,
                    '(' => {
                        self.out.push('(');
                        self.i += 1;
                        self.groups.push(Group::default());
                    }
                    ')' => {
                        self.out.push(')');
                        self.i += 1;
                        let inner = self.groups.pop()?;
                        if self.groups.is_empty() {
                            return None;
                        }
                        self.item(inner.copies());
                    }
                    '|' => {
                        self.out.push('|');
                        self.i += 1;
                        let group = self.groups.last_mut()?;
                        group.before = group.copies();
                        group.last = None;
                    }
                    '^' | '$' | '.' => {
                        self.out.push(c);
                        self.i += 1;
                        self.item(0);
                    }
                    '[' => {
                        self.class()?;
                        self.item(0);
                    }
                    '\\' => {
                        self.escape_outside_class()?;
                        if self.out.len() > written {
                            self.item(0);
                        }
                    }
                    _ => {
                        self.literal(u32::from(c));
                        self.i += 1;
                        self.item(0);
                    }
                }
                if self.out.len() > written {
                    // The flags take effect before whatever this item wrote.
                    self.out.insert_str(written, &pending);
                    self.ends_with_repeat = false;
                } else {
                    // A flag group, `(?)` or an empty `\Q\E`: nothing written yet.
                    self.pending_flags.insert_str(0, &pending);
                }
                after_repeat = false;
            }
            if self.groups.len() != 1 {
                return None;
            }
            self.out.push_str(&self.pending_flags);
            Some(())
        }

        /// Records a new item (an atom or a closed group) in the innermost group.
        fn item(&mut self, copies: i64) {
            if let Some(group) = self.groups.last_mut() {
                group.before = group.copies();
                group.last = Some(copies);
            }
        }

        fn lazy_suffix(&mut self) {
            if self.peek(0) == Some('?') {
                self.out.push('?');
                self.i += 1;
            }
        }

        /// `{n}`, `{n,}` or `{n,m}` at the cursor: (min, max or -1, index after `}`). Go
        /// reads anything else, including `{,m}` and leading zeros, as a literal `{`.
        fn counted_repeat(&self) -> Option<(i64, i64, usize)> {
            let mut k = self.i + 1;
            let mut min = self.decimal(&mut k)?;
            let max = if self.at(k)? == ',' {
                k += 1;
                if self.at(k)? == '}' {
                    -1
                } else {
                    let max = self.decimal(&mut k)?;
                    if max < 0 {
                        min = -1;
                    }
                    max
                }
            } else {
                min
            };
            if self.at(k)? != '}' {
                return None;
            }
            Some((min, max, k + 1))
        }

        /// Digits at `k` without a leading zero; -1 for a number too large to matter.
        fn decimal(&self, k: &mut usize) -> Option<i64> {
            let first = self.at(*k)?;
            if !first.is_ascii_digit() {
                return None;
            }
            if first == '0' && self.at(*k + 1).is_some_and(|c| c.is_ascii_digit()) {
                return None;
            }
            let mut n: i64 = 0;
            let mut big = false;
            while let Some(d) = self.at(*k).and_then(|c| c.to_digit(10)) {
                if n >= 100_000_000 {
                    big = true;
                }
                if !big {
                    n = n * 10 + i64::from(d);
                }
                *k += 1;
            }
            Some(if big { -1 } else { n })
        }

        /// `(?` at the cursor: a named group or a flag group.
        fn group(&mut self) -> Option<()> {
            let start = self.i;
            let name_start = match (self.peek(2), self.peek(3)) {
                (Some('P'), Some('<')) => Some(start + 4),
                (Some('<'), _) => Some(start + 3),
                _ => None,
            };
            if let Some(name_start) = name_start {
                let end = self.find(start, '>')?;
                let name = self.chars.get(name_start..end)?;
                if name.is_empty() || !name.iter().all(|c| c.is_ascii_alphanumeric() || *c == '_') {
                    return None;
                }
                self.out.push('(');
                self.groups.push(Group::default());
                self.i = end + 1;
                return Some(());
            }

            let mut on = String::new();
            let mut off = String::new();
            let mut negated = false;
            let mut saw_flag = false;
            let mut k = start + 2;
            loop {
                let c = self.at(k)?;
                k += 1;
                match c {
                    'i' | 'm' | 's' | 'U' => {
                        let set = if negated { &mut off } else { &mut on };
                        if !set.contains(c) {
                            set.push(c);
                        }
                        saw_flag = true;
                    }
                    '-' if !negated => {
                        negated = true;
                        saw_flag = false;
                    }
                    ':' | ')' => {
                        if negated && !saw_flag {
                            return None;
                        }
                        // Later flags win in Go; the regex crate rejects repeats.
                        on.retain(|f| !off.contains(f));
                        let mut group = String::new();
                        if !on.is_empty() || !off.is_empty() {
                            group = format!("(?{on}");
                            if !off.is_empty() {
                                group.push('-');
                                group.push_str(&off);
                            }
                            group.push(c);
                        } else if c == ':' {
                            group.push_str("(?:");
                        }
                        if c == ')' {
                            self.pending_flags.push_str(&group);
                        } else {
                            self.out.push_str(&group);
                            self.groups.push(Group::default());
                        }
                        self.i = k;
                        return Some(());
                    }
                    _ => return None,
                }
            }
        }

        fn escape_outside_class(&mut self) -> Option<()> {
            match self.peek(1)? {
                'A' => self.out.push_str(r"\A"),
                'z' => self.out.push_str(r"\z"),
                'b' => self.out.push_str(r"(?-u:\b)"),
                'B' => self.out.push_str(r"(?-u:\B)"),
                'Q' => {
                    self.i += 2;
                    while let Some(c) = self.peek(0) {
                        if c == '\\' && self.peek(1) == Some('E') {
                            self.i += 2;
                            break;
                        }
                        self.literal(u32::from(c));
                        self.i += 1;
                    }
                    return Some(());
                }
                'p' | 'P' => {
                    let body = self.unicode_class()?;
                    self.out.push_str(&body);
                    return Some(());
                }
                c @ ('d' | 'D' | 's' | 'S' | 'w' | 'W') => {
                    self.out.push_str(&perl_class(c, false));
                }
                _ => {
                    let c = self.escape()?;
                    self.literal(c);
                    return Some(());
                }
            }
            self.i += 2;
            Some(())
        }

        /// A single-character escape at the cursor (Go's `parseEscape`), consumed.
        fn escape(&mut self) -> Option<u32> {
            let c = self.peek(1)?;
            self.i += 2;
            let value = match c {
                '1'..='7' | '0' => {
                    if c != '0' && !self.peek(0).is_some_and(|d| ('0'..='7').contains(&d)) {
                        return None;
                    }
                    let mut v = c.to_digit(8)?;
                    for _ in 0..2 {
                        match self.peek(0).and_then(|d| d.to_digit(8)) {
                            Some(d) => {
                                v = v * 8 + d;
                                self.i += 1;
                            }
                            None => break,
                        }
                    }
                    v
                }
                'x' => {
                    if self.peek(0)? == '{' {
                        self.i += 1;
                        let mut v: u32 = 0;
                        let mut digits = 0;
                        loop {
                            let d = self.peek(0)?;
                            self.i += 1;
                            if d == '}' {
                                break;
                            }
                            v = v * 16 + d.to_digit(16)?;
                            if v > 0x10FFFF {
                                return None;
                            }
                            digits += 1;
                        }
                        if digits == 0 {
                            return None;
                        }
                        v
                    } else {
                        let hi = self.peek(0)?.to_digit(16)?;
                        let lo = self.peek(1)?.to_digit(16)?;
                        self.i += 2;
                        hi * 16 + lo
                    }
                }
                'a' => 0x07,
                'f' => 0x0C,
                'n' => 0x0A,
                'r' => 0x0D,
                't' => 0x09,
                'v' => 0x0B,
                c if c.is_ascii() && !c.is_ascii_alphanumeric() => u32::from(c),
                _ => return None,
            };
            Some(value)
        }

        /// `\p..` or `\P..` at the cursor, as a bracketed class.
        fn unicode_class(&mut self) -> Option<String> {
            let mut negated = self.peek(1)? == 'P';
            let name: String = match self.peek(2)? {
                '{' => {
                    let end = self.find(self.i, '}')?;
                    let name = self.chars[self.i + 3..end].iter().collect();
                    self.i = end + 1;
                    name
                }
                c => {
                    self.i += 3;
                    c.to_string()
                }
            };
            let mut name = name.as_str();
            if let Some(rest) = name.strip_prefix('^') {
                negated = !negated;
                name = rest;
            }
            let body = unicode_table(&canonical_name(name))?;
            Some(format!("[{}{body}]", if negated { "^" } else { "" }))
        }

        /// `[` at the cursor: a class, rewritten item by item.
        fn class(&mut self) -> Option<()> {
            self.i += 1;
            self.out.push('[');
            if self.peek(0) == Some('^') {
                self.out.push('^');
                self.i += 1;
            }
            let mut first = true;
            loop {
                let c = self.peek(0)?;
                if c == ']' && !first {
                    self.i += 1;
                    self.out.push(']');
                    return Some(());
                }
                first = false;
                if c == '['
                    && self.peek(1) == Some(':')
                    && self.peek(2).is_some()
                    && let Some(close) = self.posix_class_end()
                {
                    let name: String = self.chars[self.i..close].iter().collect();
                    let bare = name[2..name.len() - 2].trim_start_matches('^');
                    if name[2..].starts_with("^^") || !POSIX_NAMES.contains(&bare) {
                        return None;
                    }
                    self.out.push_str(&name);
                    self.i = close;
                    continue;
                }
                if c == '\\' {
                    match self.peek(1) {
                        Some('p' | 'P') => {
                            let body = self.unicode_class()?;
                            self.out.push_str(&body);
                            continue;
                        }
                        Some(p @ ('d' | 'D' | 's' | 'S' | 'w' | 'W')) => {
                            self.out.push_str(&perl_class(p, true));
                            self.i += 2;
                            continue;
                        }
                        _ => {}
                    }
                }
                let lo = self.class_char()?;
                let mut hi = lo;
                if self.peek(0) == Some('-') && self.peek(1).is_some_and(|n| n != ']') {
                    self.i += 1;
                    hi = self.class_char()?;
                    if hi < lo {
                        return None;
                    }
                }
                self.class_range(lo, hi);
            }
        }

        /// For `[:` at the cursor, the index after the next `:]`, if any.
        fn posix_class_end(&self) -> Option<usize> {
            (self.i + 2..self.chars.len().saturating_sub(1))
                .find(|&k| self.chars[k] == ':' && self.chars[k + 1] == ']')
                .map(|k| k + 2)
        }

        fn class_char(&mut self) -> Option<u32> {
            let c = self.peek(0)?;
            if c == '\\' {
                return self.escape();
            }
            self.i += 1;
            Some(u32::from(c))
        }

        fn class_range(&mut self, lo: u32, hi: u32) {
            // Surrogates cannot occur in a str; drop them from the range.
            let lo = if (0xD800..0xE000).contains(&lo) {
                0xE000
            } else {
                lo
            };
            let hi = if (0xD800..0xE000).contains(&hi) {
                0xD7FF
            } else {
                hi
            };
            if lo > hi {
                self.out.push_str(NOTHING);
            } else if lo == hi {
                self.out.push_str(&format!(r"\x{{{lo:X}}}"));
            } else if lo < 0xD800 && hi >= 0xE000 {
                self.out
                    .push_str(&format!(r"\x{{{lo:X}}}-\x{{D7FF}}\x{{E000}}-\x{{{hi:X}}}"));
            } else {
                self.out.push_str(&format!(r"\x{{{lo:X}}}-\x{{{hi:X}}}"));
            }
        }
    }

    /// Go's ASCII-only `\d`, `\s`, `\w` and their negations, as class items when `inside`.
    fn perl_class(c: char, inside: bool) -> String {
        let body = match c.to_ascii_lowercase() {
            'd' => DIGIT,
            's' => SPACE,
            _ => WORD,
        };
        if c.is_ascii_uppercase() {
            format!("[^{body}]")
        } else if inside {
            body.to_owned()
        } else {
            format!("[{body}]")
        }
    }

    /// Go's spelling-insensitive property name: separators dropped, first letter upper case,
    /// the rest lower case.
    fn canonical_name(name: &str) -> String {
        let mut out = String::with_capacity(name.len());
        for c in name.chars().filter(|c| !matches!(c, '_' | '-' | ' ')) {
            if out.is_empty() {
                out.push(c.to_ascii_uppercase());
            } else {
                out.push(c.to_ascii_lowercase());
            }
        }
        out
    }

    /// Whether a canonical name can be a script's long name, the only spelling Go knows. The
    /// regex crate also takes four-letter codes (`Grek`) and an `Is` prefix, so those are
    /// refused here unless the code is also the long name.
    fn is_script_name(name: &str) -> bool {
        const FOUR_LETTER_NAMES: [&str; 9] = [
            "Ahom", "Cham", "Kawi", "Lisu", "Miao", "Modi", "Newa", "Thai", "Toto",
        ];
        !name.is_empty()
            && !name.starts_with("Is")
            && name.chars().all(|c| c.is_ascii_alphanumeric())
            && (name.len() != 4 || FOUR_LETTER_NAMES.contains(&name))
    }

    /// The class items for a canonical Go property name, or `None` if Go does not know it.
    fn unicode_table(name: &str) -> Option<String> {
        let category = CATEGORY_ALIASES
            .iter()
            .find(|(alias, _)| *alias == name)
            .map(|(_, cat)| *cat)
            .or_else(|| CATEGORIES.iter().copied().find(|c| *c == name));
        Some(match (name, category) {
            ("Any", _) => r"\x{0}-\x{10FFFF}".to_owned(),
            ("Assigned", _) => r"\P{gc=Cn}".to_owned(),
            ("Ascii", _) => r"\x{0}-\x{7F}".to_owned(),
            (_, Some("Cs")) => NOTHING.to_owned(),
            (_, Some("Lc")) => r"\p{gc=LC}".to_owned(),
            (_, Some(cat)) => format!(r"\p{{gc={cat}}}"),
            // The regex crate would also strip an "is" prefix; Go has no such names.
            (script, None) if is_script_name(script) => format!(r"\p{{sc={script}}}"),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An object like the one in containerd's own filter tests.
    #[derive(Debug, Default)]
    struct Entry {
        name: &'static str,
        other: &'static str,
        labels: BTreeMap<String, String>,
    }

    impl Adaptor for Entry {
        fn field(&self, path: &[String]) -> Option<String> {
            let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
            match path.first().map(String::as_str) {
                Some("name") => non_empty(self.name),
                Some("other") => non_empty(self.other),
                Some("labels") => map_field(&self.labels, &path[1..]),
                _ => None,
            }
        }
    }

    fn entry(name: &'static str, other: &'static str, labels: &[(&str, &str)]) -> Entry {
        Entry {
            name,
            other,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn corpus() -> Vec<Entry> {
        vec![
            entry("foo", "", &[("foo", "true")]),
            entry("bar", "", &[]),
            entry(
                "foo",
                "",
                &[("foo", "present"), ("more complex label", "present")],
            ),
            entry("bar", "", &[("bar", "true")]),
            entry(
                "fooer",
                "",
                &[("more complex label with \\ and \"", "present")],
            ),
            entry(
                "fooer",
                "",
                &[("more complex label with \\ and \".post", "present")],
            ),
            entry("baz", "too complex, yo", &[]),
            entry("bazo", "abc", &[]),
            entry("compound", "", &[("foo", "omg_asdf.asdf-qwer")]),
        ]
    }

    /// Indexes of the corpus entries the filter matches.
    fn matching(input: &str) -> Vec<usize> {
        let filter = match Filter::parse(input) {
            Ok(f) => f,
            Err(e) => panic!("{input:?} should parse: {e}"),
        };
        corpus()
            .iter()
            .enumerate()
            .filter(|(_, e)| filter.matches(*e))
            .map(|(i, _)| i)
            .collect()
    }

    fn parse_error(input: &str) -> String {
        match Filter::parse(input) {
            Ok(f) => panic!("{input:?} should not parse, got {f:?}"),
            Err(Error::InvalidArgument(msg)) => msg,
            Err(other) => panic!("{input:?}: wrong error class {other:?}"),
        }
    }

    #[test]
    fn upstream_matching_cases() {
        let all: Vec<usize> = (0..9).collect();
        let cases: &[(&str, &[usize])] = &[
            ("", &all),
            ("name", &all),
            ("labels.foo", &[0, 2, 8]),
            ("labels.foo,name", &[0, 2, 8]),
            ("labels.foo==true", &[0]),
            ("labels.foo==omg_asdf.asdf-qwer", &[8]),
            ("name==bar", &[1, 3]),
            ("name!=bar", &[0, 2, 4, 5, 6, 7, 8]),
            ("name==bar,labels.bar", &[3]),
            ("other==\"too complex, yo\"", &[6]),
            ("other~=[abc]+,name!=foo", &[6, 7]),
            ("other~=/[abc]+/,name!=foo", &[6, 7]),
            ("other~=/[abc]{1,2}/,name!=foo", &[6, 7]),
            ("other~=/[abc]{0,1}\"\\//,name!=foo", &[]),
            ("name==bar,labels.bar==true", &[3]),
            ("name==bar,labels.bar==wrong", &[]),
            (r#"name==foo,labels."more complex label""#, &[2]),
            (
                r#"labels."more complex label with \\ and \""==present"#,
                &[4],
            ),
            (
                r#"labels."more complex label with \\ and \"".post==present"#,
                &[5],
            ),
        ];
        for (input, want) in cases {
            assert_eq!(matching(input), *want, "filter {input:?}");
        }
    }

    #[test]
    fn upstream_error_cases() {
        let cases = [
            (
                "labels.|foo|==omg_asdf.asdf-qwer",
                "filters: parse error: [labels. >|||< foo|==omg_asdf.asdf-qwer]: invalid quote encountered",
            ),
            (
                r#"labels.?"more complex label with \\ and \"".post==present"#,
                r#"filters: parse error: [labels. >|?|< "more complex label with \\ and \"".post==present]: expected field or quoted"#,
            ),
            (
                "name==foo,",
                "filters: parse error: [name==foo,]: expected field or quoted",
            ),
            (
                "labels.",
                "filters: parse error: [labels.]: expected field or quoted",
            ),
            (
                "image~=,id?=?fbaq",
                "filters: parse error: [image~= >|,|< id?=?fbaq]: expected value or quoted",
            ),
            (
                "labels.ns/key==value",
                "filters: parse error: [labels.ns >|/|< key==value]: quoted literal not terminated",
            ),
            (
                "labels.key==/value",
                "filters: parse error: [labels.key== >|/|< value]: quoted literal not terminated",
            ),
            (
                "labels.==x",
                "filters: parse error: [labels. >|=|< =x]: expected field or quoted",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_error(input), want, "filter {input:?}");
        }
    }

    #[test]
    fn more_error_messages() {
        let cases = [
            (
                "name=foo",
                r#"filters: parse error: [name >|=|< foo]: unsupported operator "=""#,
            ),
            (
                "name==!foo",
                r#"filters: parse error: [name >|=|< =!foo]: unsupported operator "==!""#,
            ),
            (
                "name ",
                r#"filters: parse error: [name ]: expected an operator ("=="|"!="|"~=")"#,
            ),
            (
                "name==",
                "filters: parse error: [name==]: expected value or quoted",
            ),
            // Blanks after a value are not skipped before the next selector.
            (
                "name==foo ",
                "filters: parse error: [name==foo >| |< ]: unexpected input:  ",
            ),
            (
                "name==\"foo\"bar",
                "filters: parse error: [name==\"foo\" >|b|< ar]: unexpected input: b",
            ),
            (
                "foo\u{0}bar",
                "filters: parse error: [foo >|\u{0}|< bar]: unexpected null",
            ),
            (
                "name==a\u{0}",
                "filters: parse error: [name==a >|\u{0}|< ]: unexpected input: \u{fffd}",
            ),
            (
                "a\u{fffd}",
                "filters: parse error: [a >|\u{fffd}|< \u{fffd}\u{fffd}]: rune error",
            ),
            (
                r#"labels."\g""#,
                r#"filters: parse error: [labels. >|"|< \g"]: illegal escape sequence"#,
            ),
            (
                r#"labels."\xaz""#,
                r#"filters: parse error: [labels. >|"|< \xaz"]: illegal numeric escape sequence"#,
            ),
            (
                "labels.\"a\nb\"==c",
                "filters: parse error: [labels. >|\"|< a\nb\"==c]: quoted literal not terminated",
            ),
            (
                r#"labels."\777"==x"#,
                r#"filters: parse error: [labels. >|"|< \777"==x]: unquoting failed: quote syntax error"#,
            ),
            (
                r#"labels."\U00110000"==x"#,
                r#"filters: parse error: [labels. >|"|< \U00110000"==x]: unquoting failed: quote syntax error"#,
            ),
            (
                "name==/x/",
                "filters: parse error: [name== >|/|< x/]: invalid quote encountered",
            ),
            // The marked byte may split a character: each stray byte shows as U+FFFD.
            (
                "name\u{725b}",
                "filters: parse error: [name >|\u{fffd}|< \u{fffd}\u{fffd}]: expected an operator (\"==\"|\"!=\"|\"~=\")",
            ),
            (
                "\u{725b}",
                "filters: parse error: [ >|\u{fffd}|< \u{fffd}\u{fffd}]: expected field or quoted",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_error(input), want, "filter {input:?}");
        }
    }

    #[test]
    fn errors_display_like_parse_all() {
        let err = Filter::parse_all(&["name==a", "labels.==x"])
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "filters: parse error: [labels. >|=|< =x]: expected field or quoted: invalid argument"
            )
        );
    }

    #[test]
    fn parse_all_ors_and_comma_ands() {
        let c = corpus();
        let f = Filter::parse_all(&["name==bar", "labels.foo==true"]).expect("parses");
        let hits: Vec<usize> = (0..c.len()).filter(|&i| f.matches(&c[i])).collect();
        assert_eq!(hits, [0, 1, 3]);

        let none: [&str; 0] = [];
        let f = Filter::parse_all(&none).expect("parses");
        assert!(c.iter().all(|e| f.matches(e)));

        let f = Filter::parse_all(&["name==nothing", ""]).expect("parses");
        assert!(c.iter().all(|e| f.matches(e)));

        let f = Filter::parse_all(&[String::from("name==baz,other~=complex")]).expect("parses");
        let hits: Vec<usize> = (0..c.len()).filter(|&i| f.matches(&c[i])).collect();
        assert_eq!(hits, [6]);

        assert!(c.iter().all(|e| Filter::always().matches(e)));
    }

    #[test]
    fn absent_fields() {
        // Absent fields count as "" for != and ~=.
        assert_eq!(matching("other!=abc"), [0, 1, 2, 3, 4, 5, 6, 8]);
        assert_eq!(matching(r#"other!="""#), [6, 7]);
        assert_eq!(matching(r#"other=="""#), Vec::<usize>::new());
        assert_eq!(matching("other~=^$"), [0, 1, 2, 3, 4, 5, 8]);
        assert_eq!(matching("unknown"), Vec::<usize>::new());
        assert_eq!(matching("unknown!=x"), (0..9).collect::<Vec<_>>());
    }

    #[test]
    fn field_paths_and_quoting() {
        // `labels.more complex label` cannot be written unquoted; dots join segments.
        assert_eq!(matching(r#"labels."foo""#), [0, 2, 8]);
        assert_eq!(matching(r#""labels".foo==true"#), [0]);
        assert_eq!(matching("name == bar"), [1, 3]);
        assert_eq!(matching(r#"name=="b\x61r""#), [1, 3]);
        assert_eq!(matching(r#"name=="\u0062ar""#), [1, 3]);
        assert_eq!(matching(r#"name=="\142ar""#), [1, 3]);
        assert_eq!(matching(r#"name=="\x62\x61\x72""#), [1, 3]);
        // Bytes that are not UTF-8 equal nothing and differ from everything.
        assert_eq!(matching(r#"name=="\xff""#), Vec::<usize>::new());
        assert_eq!(matching(r#"name!="\xff""#), (0..9).collect::<Vec<_>>());
        assert_eq!(matching(r#"labels."\xff""#), Vec::<usize>::new());
        assert_eq!(matching(r#"name~=/\xff/"#), Vec::<usize>::new());
        assert_eq!(matching("name~=|^ba[rz]$|"), [1, 3, 6]);
        assert_eq!(matching(r#"name~="^foo""#), [0, 2, 4, 5]);
        assert_eq!(matching(r"name~=/fo\/o/"), Vec::<usize>::new());
    }

    #[test]
    fn dotted_label_keys() {
        let e = entry("x", "", &[("a.b", "1"), ("", "empty")]);
        for input in ["labels.a.b==1", r#"labels."a.b"==1"#, r#"labels."a".b==1"#] {
            assert!(Filter::parse(input).expect("parses").matches(&e), "{input}");
        }
        // Like upstream, `labels` alone looks up the empty key.
        assert!(Filter::parse("labels==empty").expect("parses").matches(&e));
        assert!(!Filter::parse("labels.a").expect("parses").matches(&e));
        let empty = BTreeMap::new();
        assert_eq!(map_field(&empty, &["a".to_owned()]), None);
    }

    #[test]
    fn invalid_regex_matches_nothing() {
        assert_eq!(matching("name~=[z-a]"), Vec::<usize>::new());
        assert_eq!(matching("name~=/(/"), Vec::<usize>::new());
        // Not even combined with != which would otherwise match.
        assert_eq!(matching("name!=zzz,name~=a**"), Vec::<usize>::new());
    }

    #[test]
    fn unquote_rules() {
        let u = |s: &str| unquote(s);
        assert_eq!(u(r#""abc""#), Some(b"abc".to_vec()));
        assert_eq!(u(r#""a\"b""#), Some(b"a\"b".to_vec()));
        assert_eq!(u(r"/a\/b/"), Some(b"a/b".to_vec()));
        assert_eq!(u(r"|a\|b|"), Some(b"a|b".to_vec()));
        assert_eq!(u(r#"/a\"b/"#), None);
        assert_eq!(u(r#""a\/b""#), None);
        assert_eq!(u(r#""a\'b""#), None);
        assert_eq!(
            u(r#""\a\b\f\n\r\t\v\\""#),
            Some(b"\x07\x08\x0c\n\r\t\x0b\\".to_vec())
        );
        assert_eq!(
            u(r#""\x41\101\u00e9\U0001F600""#),
            Some("AAé😀".as_bytes().to_vec())
        );
        assert_eq!(u(r#""\xff""#), Some(vec![0xff]));
        assert_eq!(u(r#""\ud800""#), Some("\u{fffd}".as_bytes().to_vec()));
        assert_eq!(u(r#""\400""#), None);
        assert_eq!(u(r#""\x4""#), None);
        assert_eq!(u(r#""\12""#), None);
        assert_eq!(u(r#""\U00110000""#), None);
        assert_eq!(u(r#""\U7FFFFFFF""#), None);
        // Values with the top bit set wrap to negative in Go and keep only their low byte.
        assert_eq!(u(r#""\UFFFFFFFF""#), Some(vec![0xff]));
        assert_eq!(u(r#""\U80000041""#), Some(b"A".to_vec()));
        assert_eq!(u(r#""牛""#), Some("牛".as_bytes().to_vec()));
        assert_eq!(u("\""), None);
    }

    /// Every token of `input`, with the scanner's error for illegal ones.
    fn tokens(input: &str) -> Vec<(usize, Token, String, Option<&'static str>)> {
        let mut sc = Scanner::new(input);
        let mut out = Vec::new();
        loop {
            let (pos, token, text) = sc.scan();
            let err = (token == Token::Illegal).then_some(sc.err).flatten();
            out.push((pos, token, text.to_owned(), err));
            if token == Token::Eof {
                assert_eq!(sc.scan().1, Token::Eof, "input must be consumed");
                return out;
            }
        }
    }

    #[test]
    fn upstream_scanner_cases() {
        use Token::*;
        type Expect<'a> = &'a [(usize, Token, &'a str)];
        let cases: &[(&str, Expect)] = &[
            ("name", &[(0, Field, "name"), (4, Eof, "")]),
            (
                "name==value,foo!=bar",
                &[
                    (0, Field, "name"),
                    (4, Operator, "=="),
                    (6, Value, "value"),
                    (11, Separator, ","),
                    (12, Field, "foo"),
                    (15, Operator, "!="),
                    (17, Value, "bar"),
                    (20, Eof, ""),
                ],
            ),
            (
                "name==value,labels.foo=value,other.bar~=match",
                &[
                    (0, Field, "name"),
                    (4, Operator, "=="),
                    (6, Value, "value"),
                    (11, Separator, ","),
                    (12, Field, "labels"),
                    (18, Separator, "."),
                    (19, Field, "foo"),
                    (22, Operator, "="),
                    (23, Value, "value"),
                    (28, Separator, ","),
                    (29, Field, "other"),
                    (34, Separator, "."),
                    (35, Field, "bar"),
                    (38, Operator, "~="),
                    (40, Value, "match"),
                    (45, Eof, ""),
                ],
            ),
            (
                "name~=[abc]+,foo=test",
                &[
                    (0, Field, "name"),
                    (4, Operator, "~="),
                    (6, Value, "[abc]+"),
                    (12, Separator, ","),
                    (13, Field, "foo"),
                    (16, Operator, "="),
                    (17, Value, "test"),
                    (21, Eof, ""),
                ],
            ),
            (
                r"name~=[abc]\+,foo=test",
                &[
                    (0, Field, "name"),
                    (4, Operator, "~="),
                    (6, Value, r"[abc]\+"),
                    (13, Separator, ","),
                    (14, Field, "foo"),
                    (17, Operator, "="),
                    (18, Value, "test"),
                    (22, Eof, ""),
                ],
            ),
            (
                "name~=/[abc]{0,2}/,foo=test",
                &[
                    (0, Field, "name"),
                    (4, Operator, "~="),
                    (6, Quoted, "/[abc]{0,2}/"),
                    (18, Separator, ","),
                    (19, Field, "foo"),
                    (22, Operator, "="),
                    (23, Value, "test"),
                    (27, Eof, ""),
                ],
            ),
            (
                "name~=牛,labels.moo=true",
                &[
                    (0, Field, "name"),
                    (4, Operator, "~="),
                    (6, Value, "牛"),
                    (9, Separator, ","),
                    (10, Field, "labels"),
                    (16, Separator, "."),
                    (17, Field, "moo"),
                    (20, Operator, "="),
                    (21, Value, "true"),
                    (25, Eof, ""),
                ],
            ),
            (
                "name~=|牛|,labels.moo=true",
                &[
                    (0, Field, "name"),
                    (4, Operator, "~="),
                    (6, Quoted, "|牛|"),
                    (11, Separator, ","),
                    (12, Field, "labels"),
                    (18, Separator, "."),
                    (19, Field, "moo"),
                    (22, Operator, "="),
                    (23, Value, "true"),
                    (27, Eof, ""),
                ],
            ),
            (
                r#"name~="asdf\n\tfooo""#,
                &[
                    (0, Field, "name"),
                    (4, Operator, "~="),
                    (6, Quoted, r#""asdf\n\tfooo""#),
                    (20, Eof, ""),
                ],
            ),
            (
                "foo = bar    ",
                &[
                    (0, Field, "foo"),
                    (4, Operator, "="),
                    (6, Value, "bar"),
                    (13, Eof, ""),
                ],
            ),
            (
                "compound.labels==punctuated_value.foo-bar",
                &[
                    (0, Field, "compound"),
                    (8, Separator, "."),
                    (9, Field, "labels"),
                    (15, Operator, "=="),
                    (17, Value, "punctuated_value.foo-bar"),
                    (41, Eof, ""),
                ],
            ),
            (
                "interrupted=",
                &[
                    (0, Field, "interrupted"),
                    (11, Operator, "="),
                    (12, Eof, ""),
                ],
            ),
            (
                "doublevalue=value value",
                &[
                    (0, Field, "doublevalue"),
                    (11, Operator, "="),
                    (12, Value, "value"),
                    (18, Field, "value"),
                    (23, Eof, ""),
                ],
            ),
            (
                r#""leading quote".postquote==value"#,
                &[
                    (0, Quoted, r#""leading quote""#),
                    (15, Separator, "."),
                    (16, Field, "postquote"),
                    (25, Operator, "=="),
                    (27, Value, "value"),
                    (32, Eof, ""),
                ],
            ),
            (
                "input==,id!=ff",
                &[
                    (0, Field, "input"),
                    (5, Operator, "=="),
                    (7, Separator, ","),
                    (8, Field, "id"),
                    (10, Operator, "!="),
                    (12, Value, "ff"),
                    (14, Eof, ""),
                ],
            ),
            (
                r"input~=/foo\/bar/,id!=ff",
                &[
                    (0, Field, "input"),
                    (5, Operator, "~="),
                    (7, Quoted, r"/foo\/bar/"),
                    (17, Separator, ","),
                    (18, Field, "id"),
                    (20, Operator, "!="),
                    (22, Value, "ff"),
                    (24, Eof, ""),
                ],
            ),
            (
                "input~=|foo/bar|,id!=ff",
                &[
                    (0, Field, "input"),
                    (5, Operator, "~="),
                    (7, Quoted, "|foo/bar|"),
                    (16, Separator, ","),
                    (17, Field, "id"),
                    (19, Operator, "!="),
                    (21, Value, "ff"),
                    (23, Eof, ""),
                ],
            ),
        ];
        for (input, want) in cases {
            let got: Vec<(usize, Token, String)> = tokens(input)
                .into_iter()
                .map(|(p, t, s, _)| (p, t, s))
                .collect();
            let want: Vec<(usize, Token, String)> = want
                .iter()
                .map(|(p, t, s)| (*p, *t, (*s).to_owned()))
                .collect();
            assert_eq!(got, want, "scanning {input:?}");
        }
    }

    #[test]
    fn upstream_scanner_illegal_cases() {
        use Token::*;
        type Expect<'a> = &'a [(usize, Token, &'a str, Option<&'static str>)];
        let unterminated = Some("quoted literal not terminated");
        let cases: &[(&str, Expect)] = &[
            (
                "foo\u{0}bar",
                &[
                    (0, Field, "foo", None),
                    (3, Illegal, "", Some("unexpected null")),
                    (4, Field, "bar", None),
                    (7, Eof, "", None),
                ],
            ),
            (
                "labels.containerd.io/key==value",
                &[
                    (0, Field, "labels", None),
                    (6, Separator, ".", None),
                    (7, Field, "containerd", None),
                    (17, Separator, ".", None),
                    (18, Field, "io", None),
                    (20, Illegal, "/key==value", unterminated),
                    (31, Eof, "", None),
                ],
            ),
            (
                "labels.\"containerd.io\nkey\"==value",
                &[
                    (0, Field, "labels", None),
                    (6, Separator, ".", None),
                    (7, Illegal, "\"containerd.io\n", unterminated),
                    (22, Field, "key", None),
                    (25, Illegal, "\"==value", unterminated),
                    (33, Eof, "", None),
                ],
            ),
            (
                r#"labels."\g""#,
                &[
                    (0, Field, "labels", None),
                    (6, Separator, ".", None),
                    (7, Illegal, r#""\g""#, Some("illegal escape sequence")),
                    (11, Eof, "", None),
                ],
            ),
            (
                r#"labels."\xaz""#,
                &[
                    (0, Field, "labels", None),
                    (6, Separator, ".", None),
                    (
                        7,
                        Illegal,
                        r#""\xaz""#,
                        Some("illegal numeric escape sequence"),
                    ),
                    (13, Eof, "", None),
                ],
            ),
        ];
        for (input, want) in cases {
            // The scanner keeps its first error; upstream's test reads it the same way.
            let got = tokens(input);
            let want: Vec<_> = want
                .iter()
                .map(|(p, t, s, e)| (*p, *t, (*s).to_owned(), *e))
                .collect();
            assert_eq!(got, want, "scanning {input:?}");
        }
    }

    #[test]
    fn regex_translation() {
        let t = |p: &str| goregex::translate(p);
        assert_eq!(t("ab").as_deref(), Some(r"\x{61}\x{62}"));
        assert_eq!(t(r"\d+").as_deref(), Some("[0-9]+"));
        assert_eq!(t(r"[\w.]").as_deref(), Some(r"[0-9A-Za-z_\x{2E}]"));
        assert_eq!(t(r"[^\S]").as_deref(), Some(r"[^[^\t\n\x0C\r\x20]]"));
        assert_eq!(t("x{2,}?").as_deref(), Some(r"\x{78}{2,}?"));
        assert_eq!(t("(?P<n>a)(?<m>b)").as_deref(), Some(r"(\x{61})(\x{62})"));
        assert_eq!(t("(?ii-s:a)").as_deref(), Some(r"(?i-s:\x{61})"));
        assert_eq!(t("(?i-i)(?)").as_deref(), Some("(?-i)"));
        assert_eq!(
            t(r"\pL\p{^Greek}").as_deref(),
            Some(r"[\p{gc=L}][^\p{sc=Greek}]")
        );
        for rejected in [
            "a**",
            "a+*",
            "a{2}{3}",
            "a??+",
            "x{1001}",
            "x{2,1}",
            r"\8",
            r"\C",
            r"\e",
            "(?x)a",
            "(?-)a",
            "(?i--s)a",
            "(?P<>a)",
            "(?P<a-b>a)",
            "[[:foo:]]",
            "[z-a]",
            r"[a-\d]",
            r"[\b]",
            "[a--]",
            r"\p{IsGreek}",
            r"\p{L",
            "[a",
            r"\",
            r"\x{110000}",
            r"\xg0",
        ] {
            assert_eq!(t(rejected), None, "{rejected:?} is invalid in Go");
        }
    }

    #[test]
    fn regex_flag_groups_and_repetition_limits() {
        let t = |p: &str| goregex::translate(p);
        // A repetition after a flag group repeats the item before the group.
        assert_eq!(t("b(?i){1,3}").as_deref(), Some(r"\x{62}{1,3}(?i)"));
        assert_eq!(t("]{2}(?i)?").as_deref(), Some(r"\x{5D}{2}{0,1}(?i)"));
        assert_eq!(t(r"a{2}\Q\E{3}").as_deref(), Some(r"\x{61}{2}{3}"));
        assert_eq!(t("(?i)*"), None);
        assert_eq!(t("a|(?i)*"), None);
        // Nested counted repetitions may expand to at most 1000 copies.
        for ok in [
            "(a{100}){10}",
            "(a{10}|b{200}){5}",
            "(a{1000}){0}",
            "(a{1000})*",
            "(a{1000}){1}",
            "(?:a{500}){2}",
        ] {
            assert!(t(ok).is_some(), "{ok:?} is valid in Go");
        }
        for too_big in [
            "(a{100}){11}",
            "(a{10}|b{200}){6}",
            "((a{1000})*){2}",
            "((a{1000}){1}){2}",
            "(?i:a{500}){3}",
        ] {
            assert_eq!(t(too_big), None, "{too_big:?} is too large in Go");
        }
        let m = |p: &str, s: &str| goregex::compile(p).is_some_and(|re| re.is_match(s));
        assert!(m("]{2}(?i)?", ""));
        assert!(m("a*(?i)?", ""));
        assert!(!m("b(?i){1,3}", "B"));
        assert!(m("b(?i){1,3}x", "bbX"));
    }

    #[test]
    fn regexes_follow_go() {
        let m = |p: &str, s: &str| goregex::compile(p).is_some_and(|re| re.is_match(s));
        // Perl classes and word boundaries are ASCII-only in Go.
        assert!(m(r"^\d+$", "123"));
        assert!(!m(r"\d", "\u{663}"));
        assert!(!m(r"\w", "é"));
        assert!(m(r"\W", "é"));
        assert!(!m(r"\s", "\u{b}"));
        assert!(!m(r"\s", "\u{a0}"));
        assert!(m(r"\bfoo\b", "a foo b"));
        assert!(m(r"é\b", "éa"));
        // Literals Go accepts where the regex crate would not, or would differ.
        assert!(m("a{,3}", "a{,3}"));
        assert!(m("x{01}", "x{01}"));
        assert!(m("{", "{"));
        assert!(m(r"\<a\>", "<a>"));
        assert!(m(r"\Q.*\E", ".*"));
        assert!(!m(r"\Q.*\E", "ab"));
        assert!(m(r"\Q.*", ".*"));
        assert!(m(r"\101\0", "A\0"));
        assert!(m("[a&&b]", "&"));
        assert!(m("[--a]", "0"));
        assert!(m("[[]", "["));
        assert!(m("[]a]", "]"));
        assert!(m("[^]a]", "b"));
        assert!(m("[a-]", "-"));
        assert!(m("[~~]", "~"));
        assert!(m("[[:alpha:]]", "q"));
        assert!(m("[[:^alpha:]]", "1"));
        assert!(m(r"[\p{Greek}\d]", "α"));
        assert!(m(r"\p{greek}", "α"));
        assert!(m(r"\p{Letter}", "x"));
        assert!(m(r"\p{uppercase letter}", "X"));
        assert!(m(r"\pN", "5"));
        assert!(m(r"\PL", "5"));
        assert!(m(r"\p{Any}", "x"));
        assert!(!m(r"\p{Cs}", "x"));
        assert!(m(r"(?i)K", "\u{212a}"));
        assert!(m(r"(?i)\w", "\u{212a}"));
        assert!(m("(?s).", "\n"));
        assert!(!m(".", "\n"));
        assert!(m("(?m)^b$", "a\nb\nc"));
        assert!(!m("^b$", "a\nb\nc"));
        assert!(m("(?U)a+", "aa"));
        assert!(m(r"\x{1F600}", "😀"));
        assert!(!m(r"\x{D800}", "x"));
        assert!(m(r"[\x{D000}-\x{E001}]", "\u{e000}"));
        assert!(m("a|b", "b"));
        assert!(m("", "anything"));
    }

    #[test]
    fn filters_clone_and_debug() {
        let f = Filter::parse("name~=^b,labels.bar").expect("parses");
        let g = f.clone();
        assert!(format!("{g:?}").contains("Matches"));
        let c = corpus();
        assert!(g.matches(&c[3]) && !g.matches(&c[1]));
    }
}
