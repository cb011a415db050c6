//! The layering of docs/ARCHITECTURE.md, checked: which crate may depend on which, what
//! the front doors may not touch, and no import cycle between the core's domains.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The names in a crate's `[dependencies]` table.
fn dependencies(manifest: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(workspace().join(manifest)).expect("read manifest");
    let mut deps = BTreeSet::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == "[dependencies]";
            continue;
        }
        if inside && let Some((name, _)) = line.split_once('=') {
            let name = name.trim().trim_end_matches(".workspace").trim();
            if !name.is_empty() && !name.starts_with('#') {
                deps.insert(name.to_string());
            }
        }
    }
    deps
}

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read source");
                out.push((path, text));
            }
        }
    }
    out.sort();
    out
}

/// The code of a file without its comments (so a doc comment naming a type is no use).
fn code(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn crates_depend_downwards_only() {
    let core = dependencies("services/core/Cargo.toml");
    for banned in ["tonic", "berth-services", "berth-cli", "tonic-prost"] {
        assert!(!core.contains(banned), "berth-core depends on {banned}");
    }
    let oci = dependencies("services/oci/Cargo.toml");
    for banned in [
        "tonic",
        "tokio",
        "berth-core",
        "berth-services",
        "berth-proto",
    ] {
        assert!(!oci.contains(banned), "berth-oci depends on {banned}");
    }
    let cli = dependencies("ctr-cli/Cargo.toml");
    for banned in ["berth-core", "berth-services"] {
        assert!(
            !cli.contains(banned),
            "the CLI depends on the daemon's {banned}"
        );
    }
    let shim = dependencies("shim/Cargo.toml");
    for banned in ["berth-core", "berth-services", "tonic"] {
        assert!(!shim.contains(banned), "the shim depends on {banned}");
    }
}

#[test]
fn front_doors_do_not_touch_tables_or_shims() {
    let api = workspace().join("services/src/api");
    for (path, text) in sources(&api) {
        let code = code(&text);
        for banned in [
            "redb::",
            "TaskClient",
            "runtime::Shim",
            ".shim.",
            "ttrpc::api::StateRequest",
            "metadata::CONTAINERS",
            "metadata::IMAGES",
            "metadata::LEASES",
        ] {
            assert!(
                !code.contains(banned),
                "{} (a front door) uses {banned}",
                path.display()
            );
        }
    }
}

/// Events and garbage collection are the core's: an adapter neither publishes a daemon
/// event nor asks for a collection, nor holds leases itself. (The Events service's own job
/// is publishing what its clients send: it is left out of the `publish` check.)
#[test]
fn front_doors_publish_no_events_and_collect_nothing() {
    let api = workspace().join("services/src/api");
    for (path, text) in sources(&api) {
        let code = code(&text);
        let events_service = path.ends_with("events.rs");
        if !events_service {
            assert!(
                !code.contains("publish("),
                "{} (a front door) publishes an event",
                path.display()
            );
        }
        for banned in [
            "events::publish",
            "topics::",
            ".gc.",
            "Collector",
            ".leases.add_resource",
            ".leases.delete_resource",
        ] {
            assert!(
                !code.contains(banned),
                "{} (a front door) uses {banned}",
                path.display()
            );
        }
    }
}

#[test]
fn the_core_knows_no_transport() {
    let core = workspace().join("services/core/src");
    for (path, text) in sources(&core) {
        let code = code(&text);
        for banned in [
            "tonic::",
            "berth_services",
            "crate::api",
            "_server::",
            "_client::",
        ] {
            assert!(
                !code.contains(banned),
                "{} (the core) uses {banned}",
                path.display()
            );
        }
    }
}

/// The top-level module of the core a source file belongs to.
fn module_of(core: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(core).ok()?;
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib").then_some(name)
}

/// Which top-level modules each module of the core names (`crate::x`).
fn core_imports() -> BTreeMap<String, BTreeSet<String>> {
    let core = workspace().join("services/core/src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in sources(&core) {
        let Some(from) = module_of(&core, &path) else {
            continue;
        };
        // Tests may reach anywhere; only what ships counts.
        let shipped = text.split("#[cfg(test)]").next().unwrap_or("");
        let is_test_file = path
            .file_name()
            .is_some_and(|n| n == "tests.rs" || n == "testutil.rs");
        let edges = graph.entry(from.clone()).or_default();
        if is_test_file {
            continue;
        }
        for piece in code(shipped).split("crate::").skip(1) {
            let to: String = piece
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !to.is_empty() && to != from {
                edges.insert(to);
            }
        }
    }
    graph
}

/// The strongly connected components with more than one module (Tarjan's algorithm).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        let graph = s.graph;
        for w in graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !graph.contains_key(w) {
                continue;
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low[v];
                s.low.insert(v, lv.min(lw));
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low[v];
                s.low.insert(v, lv.min(iw));
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found
}

#[test]
fn no_import_cycle_between_the_cores_domains() {
    let graph = core_imports();
    assert!(graph.contains_key("tasks") && graph.contains_key("content"));
    let found = cycles(&graph);
    assert!(found.is_empty(), "import cycles in berth-core: {found:?}");
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(str::to_string).collect()))
    .collect();
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
}

#[test]
fn cli_commands_do_not_import_each_other() {
    let commands = workspace().join("ctr-cli/src/commands");
    for (path, text) in sources(&commands) {
        let dir = path.parent().expect("dir");
        let siblings: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".rs")
                    .map(str::to_string)
                    .or_else(|| e.path().is_dir().then_some(name))
            })
            .filter(|n| n != "mod")
            .collect();
        let code = code(&text);
        let is_mod = path.file_name().is_some_and(|n| n == "mod.rs");
        assert!(
            !code.contains("crate::commands::"),
            "{} imports another command",
            path.display()
        );
        if is_mod {
            continue; // a group's mod.rs declares and dispatches to its commands
        }
        for s in &siblings {
            for pattern in [
                format!("super::{s}::"),
                format!("super::{s};"),
                format!("super::{{{s}"),
            ] {
                assert!(
                    !code.contains(&pattern),
                    "{} imports the command {s}",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn only_the_server_mounts_the_front_doors() {
    let src = workspace().join("services/src");
    for (path, text) in sources(&src) {
        let rel = path.strip_prefix(&src).expect("under src");
        if rel.starts_with("api") || rel == Path::new("server.rs") {
            continue;
        }
        assert!(
            !code(&text).contains("crate::api"),
            "{} imports the gRPC adapters",
            path.display()
        );
    }
}
