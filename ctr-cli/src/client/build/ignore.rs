//! The build context as COPY sees it: `.dockerignore` patterns (Docker's rules: `*`, `?`,
//! `**` for any number of directories, `!` to take a path back, the last matching pattern
//! deciding, a matched directory taking its contents with it), and the sources a COPY names
//! (wildcards in their last parts).

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The patterns of a context's `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct Patterns(Vec<(bool, Vec<String>)>);

impl Patterns {
    pub fn read(context: &Path) -> anyhow::Result<Patterns> {
        match std::fs::read_to_string(context.join(".dockerignore")) {
            Ok(text) => Ok(Patterns::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Patterns::default()),
            Err(e) => Err(e).context("read .dockerignore"),
        }
    }

    pub fn parse(text: &str) -> Patterns {
        let mut out = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keep, pat) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let segs = split(pat);
            if !segs.is_empty() {
                out.push((keep, segs));
            }
        }
        Patterns(out)
    }

    /// Whether `rel` (a path in the context, `/`-separated) is left out.
    pub fn excluded(&self, rel: &str) -> bool {
        let path = split(rel);
        let mut out = false;
        for (keep, pat) in &self.0 {
            // A pattern matching the path or one of its parents.
            let hit = (1..=path.len()).any(|n| matches(pat, &path[..n]));
            if hit {
                out = !keep;
            }
        }
        out
    }
}

fn split(p: &str) -> Vec<String> {
    p.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .map(str::to_string)
        .collect()
}

/// Whether pattern segments match path segments (`**` any number of them).
fn matches(pat: &[String], path: &[String]) -> bool {
    match pat.first() {
        None => path.is_empty(),
        Some(p) if p == "**" => (0..=path.len()).any(|n| matches(&pat[1..], &path[n..])),
        Some(p) => {
            !path.is_empty()
                && wildcard(p.as_bytes(), path[0].as_bytes())
                && matches(&pat[1..], &path[1..])
        }
    }
}

/// `*` and `?` within one path segment.
fn wildcard(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => wildcard(&p[1..], s) || (!s.is_empty() && wildcard(p, &s[1..])),
        (Some(b'?'), Some(_)) => wildcard(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => wildcard(&p[1..], &s[1..]),
        _ => false,
    }
}

fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The top-level entries (paths relative to `root`) a COPY source names: the path itself,
/// or what its wildcards match, less what is ignored.
pub fn top_entries(root: &Path, src: &str, ignore: &Patterns) -> anyhow::Result<Vec<String>> {
    let segs = split(src);
    if segs.is_empty() {
        return Ok(vec![String::new()]);
    }
    let mut found = vec![String::new()];
    for seg in &segs {
        let mut next = Vec::new();
        for base in &found {
            let dir = root.join(base);
            if is_pattern(seg) {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                let mut names: Vec<String> = entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| wildcard(seg.as_bytes(), n.as_bytes()))
                    .collect();
                names.sort();
                next.extend(names.into_iter().map(|n| join(base, &n)));
            } else if std::fs::symlink_metadata(dir.join(seg)).is_ok() {
                next.push(join(base, seg));
            }
        }
        found = next;
    }
    Ok(found.into_iter().filter(|r| !ignore.excluded(r)).collect())
}

fn join(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}/{name}")
    }
}

/// Every path under `rel` (itself included; "" for the whole root), relative to `root`,
/// sorted, less what is ignored (an ignored directory takes its contents along unless a
/// later `!` pattern takes them back).
pub fn files_under(root: &Path, rel: &str, ignore: &Patterns) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![rel.to_string()];
    while let Some(r) = stack.pop() {
        let path = root.join(&r);
        let meta =
            std::fs::symlink_metadata(&path).with_context(|| format!("stat {}", path.display()))?;
        if !r.is_empty() && !ignore.excluded(&r) {
            out.push(r.clone());
        }
        if meta.is_dir() {
            for e in std::fs::read_dir(&path)? {
                let name = e?.file_name().to_string_lossy().into_owned();
                stack.push(join(&r, &name));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The files a COPY source takes, with their paths (for the cache key).
pub fn expand(root: &Path, src: &str, ignore: &Patterns) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for top in top_entries(root, src, ignore)? {
        for rel in files_under(root, &top, ignore)? {
            let p = root.join(&rel);
            out.push((rel, p));
        }
        if top.is_empty() {
            continue;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_rules() {
        let p = Patterns::parse("# comment\n*.log\nbuild/\n**/secret\n!keep.log\ntmp*\n");
        assert!(p.excluded("a.log"));
        assert!(!p.excluded("keep.log"));
        assert!(
            !p.excluded("sub/a.log"),
            "a pattern is anchored at the root"
        );
        assert!(p.excluded("build/x/y"));
        assert!(p.excluded("deep/down/secret"));
        assert!(p.excluded("tmpfile"));
        assert!(!p.excluded("src/main.rs"));
    }

    #[test]
    fn sources_with_wildcards() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("src/sub")).unwrap();
        for f in [
            "a.txt",
            "b.txt",
            "c.md",
            "src/x.rs",
            "src/sub/y.rs",
            "skip.log",
        ] {
            std::fs::write(root.join(f), f).unwrap();
        }
        let ignore = Patterns::parse("*.log\n");
        assert_eq!(
            top_entries(root, "*.txt", &ignore).unwrap(),
            ["a.txt", "b.txt"]
        );
        assert_eq!(top_entries(root, "./src", &ignore).unwrap(), ["src"]);
        assert_eq!(
            top_entries(root, "*.log", &ignore).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            files_under(root, "src", &ignore).unwrap(),
            ["src", "src/sub", "src/sub/y.rs", "src/x.rs"]
        );
        let all = files_under(root, "", &ignore).unwrap();
        assert!(!all.contains(&"skip.log".to_string()), "{all:?}");
    }
}
