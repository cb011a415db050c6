//! Tests of the filter language: containerd's own cases (scanner, parser, matching) and
//! berth's additions.

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
fn filters_clone_and_debug() {
    let f = Filter::parse("name~=^b,labels.bar").expect("parses");
    let g = f.clone();
    assert!(format!("{g:?}").contains("Matches"));
    let c = corpus();
    assert!(g.matches(&c[3]) && !g.matches(&c[1]));
}
