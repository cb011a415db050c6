//! The Dockerfile as the classic builder reads it: parser directives (`# escape=`),
//! comments, line continuations, instructions with their JSON or shell form, and the
//! variable substitution Docker does (`$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR:+alt}`).

use std::collections::BTreeMap;

/// One instruction of a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// Upper case: `FROM`, `RUN`...
    pub keyword: String,
    /// The text after the keyword, continuation lines joined.
    pub rest: String,
    /// The line it starts on (1-based), for errors.
    pub line: usize,
    /// Its here-documents (`<<EOF` ... `EOF`), in order.
    pub heredocs: Vec<Heredoc>,
}

/// A here-document of RUN, COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The word after `<<` (quotes off).
    pub name: String,
    /// Its lines, each with its newline.
    pub content: String,
}

/// The here-document words of an instruction's text: `<<EOF`, `<<-EOF`, `<<"EOF"`.
pub fn heredoc_names(rest: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut s = rest;
    while let Some(i) = s.find("<<") {
        let mut after = &s[i + 2..];
        let strip = after.starts_with('-');
        if strip {
            after = &after[1..];
        }
        let quote = after.starts_with(['"', '\'']);
        let word: String = after
            .trim_start_matches(['"', '\''])
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !word.is_empty() {
            out.push((word.clone(), strip));
        }
        let skip = word.len() + usize::from(quote) * 2;
        s = &after[skip.min(after.len())..];
    }
    out
}

/// Parses a Dockerfile's text into its instructions.
pub fn parse(text: &str) -> anyhow::Result<Vec<Instruction>> {
    let mut escape = '\\';
    let mut lines = text.lines().enumerate().peekable();
    // Parser directives: `# key=value` lines at the very top.
    while let Some((_, line)) = lines.peek() {
        let t = line.trim();
        let Some(d) = t.strip_prefix('#') else { break };
        let Some((k, v)) = d.split_once('=') else {
            break;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "escape" => {
                let v = v.trim();
                escape = match v {
                    "\\" => '\\',
                    "`" => '`',
                    _ => anyhow::bail!("invalid escape token '{v}' does not match ` or \\"),
                };
            }
            "syntax" | "check" => {}
            _ => break,
        }
        lines.next();
    }
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    while let Some((i, raw)) = lines.next() {
        let line = raw.trim_end_matches('\r');
        let trimmed = line.trim_start();
        if current.is_none() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        // Comment lines inside a continued instruction are dropped.
        if current.is_some() && trimmed.starts_with('#') {
            continue;
        }
        let (body, continues) = match line.trim_end().strip_suffix(escape) {
            Some(b) => (b.to_string(), true),
            None => (line.to_string(), false),
        };
        match &mut current {
            Some((_, text)) => {
                text.push_str(&body);
            }
            None => current = Some((i + 1, body)),
        }
        if !continues && let Some((n, text)) = current.take() {
            let mut ins = instruction(n, &text)?;
            if ["RUN", "COPY", "ADD"].contains(&ins.keyword.as_str()) {
                for (name, strip) in heredoc_names(&ins.rest) {
                    let mut content = String::new();
                    let mut closed = false;
                    for (_, l) in lines.by_ref() {
                        let l = l.trim_end_matches('\r');
                        let l = if strip { l.trim_start_matches('\t') } else { l };
                        if l == name {
                            closed = true;
                            break;
                        }
                        content.push_str(l);
                        content.push('\n');
                    }
                    if !closed {
                        anyhow::bail!(
                            "dockerfile parse error on line {n}: unterminated heredoc {name}"
                        );
                    }
                    ins.heredocs.push(Heredoc { name, content });
                }
            }
            out.push(ins);
        }
    }
    if let Some((n, text)) = current.take() {
        out.push(instruction(n, &text)?);
    }
    Ok(out)
}

fn instruction(line: usize, text: &str) -> anyhow::Result<Instruction> {
    let text = text.trim();
    let (keyword, rest) = text
        .split_once(char::is_whitespace)
        .map(|(k, r)| (k, r.trim()))
        .unwrap_or((text, ""));
    let keyword = keyword.to_ascii_uppercase();
    const KNOWN: &[&str] = &[
        "FROM",
        "RUN",
        "CMD",
        "ENTRYPOINT",
        "ENV",
        "ARG",
        "LABEL",
        "EXPOSE",
        "VOLUME",
        "USER",
        "WORKDIR",
        "SHELL",
        "STOPSIGNAL",
        "HEALTHCHECK",
        "ONBUILD",
        "COPY",
        "ADD",
        "MAINTAINER",
    ];
    if !KNOWN.contains(&keyword.as_str()) {
        anyhow::bail!("dockerfile parse error on line {line}: unknown instruction: {keyword}");
    }
    Ok(Instruction {
        keyword,
        rest: rest.to_string(),
        line,
        heredocs: Vec::new(),
    })
}

/// The exec (JSON) form of an argument list, if it is one.
pub fn json_form(rest: &str) -> Option<Vec<String>> {
    let t = rest.trim();
    if !t.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(t).ok()
}

/// `rest` with variables substituted from `vars`, as Docker substitutes in ENV, ADD,
/// COPY, WORKDIR, EXPOSE, LABEL, USER, VOLUME, STOPSIGNAL and ARG (not in RUN, CMD,
/// ENTRYPOINT: the shell does that). `\$` stays a literal `$`.
pub fn substitute(rest: &str, vars: &BTreeMap<String, String>) -> anyhow::Result<String> {
    let chars: Vec<char> = rest.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let ch = chars[i];
        if ch == '\\' && chars.get(i + 1) == Some(&'$') {
            out.push('$');
            i += 2;
            continue;
        }
        if ch != '$' {
            out.push(ch);
            i += 1;
            continue;
        }
        // `${...}`
        if chars.get(i + 1) == Some(&'{') {
            let Some(end) = chars[i + 2..].iter().position(|c| *c == '}') else {
                anyhow::bail!("missing '}}' in {rest:?}");
            };
            let inner: String = chars[i + 2..i + 2 + end].iter().collect();
            let value = match inner.split_once(':') {
                Some((name, modifier)) if modifier.starts_with('-') => vars
                    .get(name)
                    .filter(|v| !v.is_empty())
                    .cloned()
                    .unwrap_or_else(|| modifier[1..].to_string()),
                Some((name, modifier)) if modifier.starts_with('+') => {
                    if vars.get(name).is_some_and(|v| !v.is_empty()) {
                        modifier[1..].to_string()
                    } else {
                        String::new()
                    }
                }
                Some((_, modifier)) => {
                    anyhow::bail!("unsupported modifier ({modifier}) in substitution {rest:?}")
                }
                None => vars.get(&inner).cloned().unwrap_or_default(),
            };
            out.push_str(&value);
            i += end + 3;
            continue;
        }
        // `$NAME`
        let name: String = chars[i + 1..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
            .collect();
        if name.is_empty() {
            out.push('$');
            i += 1;
            continue;
        }
        out.push_str(vars.get(&name).map(String::as_str).unwrap_or(""));
        i += 1 + name.chars().count();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_comments_and_continuations() {
        let text = "# syntax=docker/dockerfile:1\n\
                    # a comment\n\
                    FROM busybox AS base\n\
                    \n\
                    RUN echo a \\\n\
                    # inside\n\
                      && echo b\n\
                    cmd [\"sh\"]\n";
        let got = parse(text).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].keyword, "FROM");
        assert_eq!(got[0].rest, "busybox AS base");
        assert_eq!(got[1].rest, "echo a && echo b");
        assert_eq!(got[1].line, 5);
        assert_eq!(got[2].keyword, "CMD");
        assert_eq!(json_form(&got[2].rest), Some(vec!["sh".to_string()]));
        assert!(
            parse("BOGUS x\n")
                .unwrap_err()
                .to_string()
                .contains("unknown instruction: BOGUS")
        );
        // Another escape character.
        let got = parse("# escape=`\nRUN a `\n b\n").unwrap();
        assert_eq!(got[0].rest, "a  b");
    }

    #[test]
    fn heredocs() {
        let text = "FROM x\nRUN <<EOF\necho one\necho two\nEOF\nCOPY <<-\"END\" /etc/conf\n\tkey=value\n\tEND\nCMD [\"sh\"]\n";
        let got = parse(text).unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(got[1].heredocs[0].name, "EOF");
        assert_eq!(got[1].heredocs[0].content, "echo one\necho two\n");
        assert_eq!(got[2].heredocs[0].content, "key=value\n");
        assert_eq!(got[3].keyword, "CMD");
        assert!(parse("FROM x\nRUN <<EOF\nnever closed\n").is_err());
    }

    #[test]
    fn variables_as_docker_substitutes_them() {
        let vars = BTreeMap::from([
            ("A".to_string(), "1".to_string()),
            ("EMPTY".to_string(), String::new()),
        ]);
        let s = |t: &str| substitute(t, &vars).unwrap();
        assert_eq!(s("$A-${A}"), "1-1");
        assert_eq!(s("${NOPE:-dflt} ${EMPTY:-e} ${A:-x}"), "dflt e 1");
        assert_eq!(s("${A:+set}${NOPE:+no}"), "set");
        assert_eq!(s("\\$A $ x"), "$A $ x");
        assert_eq!(s("$NOPE/x"), "/x");
        assert!(substitute("${A", &vars).is_err());
    }
}
