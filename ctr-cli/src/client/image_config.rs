//! An image's run configuration changed by Dockerfile instructions, as `import -c` and
//! `commit -c` take them: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER,
//! VOLUME, WORKDIR (in JSON or shell form where Docker allows both).

use serde_json::{Map, Value, json};

/// Applies one instruction (`CMD ["sh"]`, `ENV A=1 B=2`, `EXPOSE 80/tcp`...) to the OCI
/// image config's `config` object.
pub fn apply(config: &mut Value, change: &str) -> anyhow::Result<()> {
    let change = change.trim();
    let (instr, rest) = change
        .split_once(char::is_whitespace)
        .map(|(i, r)| (i, r.trim()))
        .unwrap_or((change, ""));
    let instr = instr.to_ascii_uppercase();
    if !config.is_object() {
        *config = json!({});
    }
    let obj = config.as_object_mut().expect("an object");
    match instr.as_str() {
        "CMD" => {
            obj.insert("Cmd".into(), command(rest, true));
        }
        "ENTRYPOINT" => {
            obj.insert("Entrypoint".into(), command(rest, true));
        }
        "ENV" => {
            let env = obj.entry("Env").or_insert_with(|| json!([]));
            for (k, v) in pairs(rest, "ENV")? {
                let list = env
                    .as_array_mut()
                    .ok_or_else(|| anyhow::anyhow!("Env is not a list"))?;
                list.retain(|e| {
                    e.as_str().and_then(|e| e.split_once('=')).map(|(n, _)| n) != Some(k.as_str())
                });
                list.push(json!(format!("{k}={v}")));
            }
        }
        "LABEL" => {
            let labels = map_entry(obj, "Labels");
            for (k, v) in pairs(rest, "LABEL")? {
                labels.insert(k, json!(v));
            }
        }
        "EXPOSE" => {
            let ports = map_entry(obj, "ExposedPorts");
            for p in rest.split_whitespace() {
                let p = if p.contains('/') {
                    p.to_string()
                } else {
                    format!("{p}/tcp")
                };
                let (num, proto) = p.split_once('/').unwrap_or((&p, "tcp"));
                if num.split('-').any(|n| n.parse::<u16>().is_err())
                    || !["tcp", "udp", "sctp"].contains(&proto)
                {
                    anyhow::bail!("invalid containerPort: {num}");
                }
                ports.insert(p.clone(), json!({}));
            }
        }
        "VOLUME" => {
            let volumes = map_entry(obj, "Volumes");
            let list = match serde_json::from_str::<Vec<String>>(rest) {
                Ok(v) => v,
                Err(_) => rest.split_whitespace().map(str::to_string).collect(),
            };
            for v in list {
                volumes.insert(v, json!({}));
            }
        }
        "WORKDIR" => {
            obj.insert("WorkingDir".into(), json!(rest));
        }
        "USER" => {
            obj.insert("User".into(), json!(rest));
        }
        "STOPSIGNAL" => {
            obj.insert("StopSignal".into(), json!(rest));
        }
        "ONBUILD" => {
            let list = obj.entry("OnBuild").or_insert_with(|| json!([]));
            if let Some(l) = list.as_array_mut() {
                l.push(json!(rest));
            }
        }
        "" => anyhow::bail!("empty change"),
        other => anyhow::bail!("{other} is not a valid change command"),
    }
    if rest.is_empty() && instr != "CMD" && instr != "ENTRYPOINT" {
        anyhow::bail!("{instr} requires at least one argument");
    }
    Ok(())
}

fn map_entry<'a>(obj: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = obj.entry(key).or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    slot.as_object_mut().expect("an object")
}

/// A JSON array of strings (exec form), else the shell form (`/bin/sh -c TEXT`).
fn command(rest: &str, shell: bool) -> Value {
    if let Ok(v) = serde_json::from_str::<Vec<String>>(rest) {
        return json!(v);
    }
    if shell {
        json!(["/bin/sh", "-c", rest])
    } else {
        json!([rest])
    }
}

/// `k=v k2="v 2"` (or the old `k v` form of one pair).
fn pairs(rest: &str, instr: &str) -> anyhow::Result<Vec<(String, String)>> {
    let words = split_words(rest);
    if words.is_empty() {
        anyhow::bail!("{instr} requires at least one argument");
    }
    if !words[0].contains('=') {
        let (k, v) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        if v.trim().is_empty() {
            anyhow::bail!("{instr} names must be followed by a value: {k}");
        }
        return Ok(vec![(k.to_string(), v.trim().to_string())]);
    }
    words
        .into_iter()
        .map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow::anyhow!("{instr}: {w:?} is not name=value"))
        })
        .collect()
}

/// Words split on blanks as a shell splits them: double or single quotes group (and are
/// taken off), a backslash escapes the next character outside single quotes.
pub fn split_words(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut quote, mut any) = (Vec::new(), String::new(), None, false);
    let mut chars = s.chars();
    while let Some(ch) = chars.next() {
        match (quote, ch) {
            (None, '"' | '\'') => {
                quote = Some(ch);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('"') | None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    any = true;
                }
            }
            (None, c) if c.is_whitespace() => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (_, c) => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerfile_changes() {
        let mut c = json!({"Env": ["PATH=/bin", "A=0"]});
        for ch in [
            "CMD [\"sh\", \"-c\", \"echo hi\"]",
            "ENTRYPOINT /init --x",
            "ENV A=1 B=\"two words\"",
            "ENV C three",
            "EXPOSE 80 53/udp",
            "LABEL tier=front \"with space\"=yes",
            "VOLUME /data",
            "WORKDIR /srv",
            "USER nobody",
            "STOPSIGNAL SIGINT",
        ] {
            apply(&mut c, ch).unwrap_or_else(|e| panic!("{ch}: {e}"));
        }
        assert_eq!(c["Cmd"], json!(["sh", "-c", "echo hi"]));
        assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c", "/init --x"]));
        assert_eq!(
            c["Env"],
            json!(["PATH=/bin", "A=1", "B=two words", "C=three"])
        );
        assert_eq!(c["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
        assert_eq!(c["Labels"], json!({"tier": "front", "with space": "yes"}));
        assert_eq!(c["Volumes"], json!({"/data": {}}));
        assert_eq!(
            (c["WorkingDir"].as_str(), c["User"].as_str()),
            (Some("/srv"), Some("nobody"))
        );
        assert_eq!(c["StopSignal"], "SIGINT");
        assert!(
            apply(&mut c, "FROM busybox")
                .unwrap_err()
                .to_string()
                .contains("FROM is not a valid change command")
        );
        assert!(apply(&mut c, "EXPOSE http").is_err());
        assert!(apply(&mut c, "ENV").is_err());
    }
}
