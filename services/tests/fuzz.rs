//! Property tests over the parsers that take client and file input: containerd's filter
//! language, image references, and `hosts.toml`. Bounded runs (fixed case counts), so CI
//! runs them every time: no input may panic, and what parses must parse the same again.

use std::path::Path;

use berth_services::filters::Filter;
use berth_services::registry::Reference;
use berth_services::registry::hosts::{HostOptions, parse_hosts};
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Strings made of the filter language's own pieces, so that most get past the lexer.
fn filter_like() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        "[a-z]{1,6}(\\.[a-z]{1,6}){0,2}",
        Just("labels.\"a.b\"".to_string()),
        Just("==".to_string()),
        Just("!=".to_string()),
        Just("~=".to_string()),
        Just(",".to_string()),
        Just("|".to_string()),
        "\"[^\"\\\\]{0,6}\"",
        "/[^/]{0,6}/",
        Just("\\".to_string()),
        Just(" ".to_string()),
        Just("(".to_string()),
        Just("[".to_string()),
    ];
    proptest::collection::vec(atom, 0..12).prop_map(|v| v.concat())
}

/// Reference-shaped strings: domains, ports, paths, tags and digests, some of them wrong.
fn reference_like() -> impl Strategy<Value = String> {
    (
        proptest::option::of("[a-zA-Z0-9.-]{1,12}(:[0-9]{1,6})?/"),
        "[a-z0-9]{1,8}([._-]{1,2}[a-z0-9]{1,4}){0,2}(/[a-z0-9_.-]{1,8}){0,3}",
        proptest::option::of(":[A-Za-z0-9_.-]{0,130}"),
        proptest::option::of("@sha256:[0-9a-f]{60,66}"),
    )
        .prop_map(|(d, p, t, g)| {
            format!(
                "{}{p}{}{}",
                d.unwrap_or_default(),
                t.unwrap_or_default(),
                g.unwrap_or_default()
            )
        })
}

/// TOML in the shape of hosts files, with wrong types and values mixed in.
fn hosts_like() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        "\"[a-z:/.0-9]{0,20}\"",
        Just("true".to_string()),
        Just("[\"pull\", \"resolve\"]".to_string()),
        Just("[\"push\"]".to_string()),
        Just("12".to_string()),
        Just("{}".to_string()),
        Just("[[\"a\"]]".to_string()),
    ];
    let key = prop_oneof![
        Just("server"),
        Just("capabilities"),
        Just("skip_verify"),
        Just("ca"),
        Just("client"),
        Just("override_path"),
        Just("header"),
        Just("plain_http"),
    ];
    let line = (key, value).prop_map(|(k, v)| format!("{k} = {v}\n"));
    let table = prop_oneof![
        Just("[host.\"https://mirror.example:5000\"]\n".to_string()),
        Just("[host.\"http://127.0.0.1:5001\"]\n".to_string()),
        Just("[host.\"not a url\"]\n".to_string()),
        Just("[host]\n".to_string()),
    ];
    proptest::collection::vec(prop_oneof![line.clone(), line, table], 0..10)
        .prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(config(4000))]

    #[test]
    fn filters_never_panic_and_reparse(s in prop_oneof![filter_like(), "\\PC{0,60}"]) {
        if let Ok(f) = Filter::parse(&s) {
            // A filter that parsed is usable.
            let _ = format!("{f:?}");
        }
    }

    #[test]
    fn references_never_panic_and_are_stable(s in prop_oneof![reference_like(), "\\PC{0,80}"]) {
        if let Ok(r) = Reference::parse(&s) {
            let printed = r.to_string();
            let again = Reference::parse(&printed);
            prop_assert!(again.is_ok(), "{s:?} → {printed:?} does not parse again");
            prop_assert_eq!(again.map(|a| a.to_string()).unwrap_or_default(), printed);
        }
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn hosts_files_never_panic(s in prop_oneof![hosts_like(), "\\PC{0,200}"]) {
        let file = Path::new("/etc/berth/certs.d/registry.example/hosts.toml");
        let _ = parse_hosts(&s, file, "registry.example", &HostOptions::default());
    }
}
