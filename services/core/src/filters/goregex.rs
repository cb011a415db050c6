//! Go `regexp` syntax on top of the `regex` crate, for the filter language's `~=`.
//!
//! Both descend from RE2, but they differ in ways a user would notice: Go's `\d`, `\w`, `\s`
//! and `\b` are ASCII-only, `a**` and `x{1001}` are errors in Go, Go reads `{,3}` and `\<`
//! as literals, and inside `[...]` the `regex` crate gives `[`, `&&`, `--` and `~~` meanings
//! Go does not. So the Go pattern is parsed here, with Go's rules, and rewritten into an
//! equivalent pattern for the `regex` crate: every literal character becomes a `\x{..}`
//! escape, Perl classes become explicit ASCII classes, named groups become plain groups
//! (names do not matter for matching), and anything Go rejects is rejected.
//!
//! Left as they are: the two libraries' Unicode versions, and their limits on size and nesting
//! (the regex crate nests at most 250 deep, Go 1000; its compiled form of large Unicode classes
//! is bigger, so `\pL{1000}\pL{1000}\pL{1000}\pL{1000}` fits Go's budget but not ours).

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
fn translate(pattern: &str) -> Option<String> {
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
    "C", "Cc", "Cf", "Cn", "Co", "Cs", "L", "Ll", "Lm", "Lo", "Lt", "Lu", "M", "Mc", "Me", "Mn",
    "N", "Nd", "Nl", "No", "P", "Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps", "S", "Sc", "Sk", "Sm",
    "So", "Z", "Zl", "Zp", "Zs", "Lc",
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
            let pending = std::mem::take(&mut self.pending_flags);
            if matches!(c, '*' | '+' | '?') || counted.is_some() {
                // Go: no repetition directly after another, nor with nothing to repeat.
                if after_repeat {
                    return None;
                }
                self.repetition(c, counted)?;
                self.pending_flags.insert_str(0, &pending);
                after_repeat = true;
                continue;
            }
            let written = self.out.len();
            self.atom(c)?;
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

    /// The repetition operator `c` at the cursor (`counted` when it is `{n}`, `{n,}` or
    /// `{n,m}`): checks Go's limits on it and writes it.
    fn repetition(&mut self, c: char, counted: Option<(i64, i64, usize)>) -> Option<()> {
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
        Some(())
    }

    /// Anything but a repetition at the cursor: a group's start or end, an alternation, a
    /// class, an escape or a literal.
    fn atom(&mut self, c: char) -> Option<()> {
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
                let written = self.out.len();
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

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn regex_translation() {
        let t = |p: &str| translate(p);
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
        let t = |p: &str| translate(p);
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
        let m = |p: &str, s: &str| compile(p).is_some_and(|re| re.is_match(s));
        assert!(m("]{2}(?i)?", ""));
        assert!(m("a*(?i)?", ""));
        assert!(!m("b(?i){1,3}", "B"));
        assert!(m("b(?i){1,3}x", "bbX"));
    }

    #[test]
    fn regexes_follow_go() {
        let m = |p: &str, s: &str| compile(p).is_some_and(|re| re.is_match(s));
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
}
