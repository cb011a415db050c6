//! Docker's `--format`: Go's text/template (through `gtmpl`, a Rust implementation of it)
//! over the JSON object Docker would show, with Docker's helper functions (`json`, `join`,
//! `split`, `upper`, `lower`, `title`, `pad`, `truncate`, `println`).

use std::collections::HashMap;

use gtmpl::{Context, FuncError, Template, Value};

/// `v` as a template value.
pub fn value(v: &serde_json::Value) -> Value {
    value_of(v, false)
}

/// The fields that are Go maps in Docker's types (their keys are the user's): a missing
/// key there is Go's `<no value>`, where a struct's missing field is an error.
const MAP_FIELDS: &[&str] = &[
    "Labels",
    "Attributes",
    "Networks",
    "Options",
    "DriverOpts",
    "Ports",
    "ExposedPorts",
    "Volumes",
    "Annotations",
    "Sysctls",
    "Tmpfs",
    "StorageOpt",
    "Data",
];

fn value_of(v: &serde_json::Value, map: bool) -> Value {
    match v {
        serde_json::Value::Object(o) if map => Value::Map(
            o.iter()
                .map(|(k, v)| (k.clone(), value(v)))
                .collect::<HashMap<_, _>>(),
        ),
        serde_json::Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), value_of(v, MAP_FIELDS.contains(&k.as_str()))))
                .collect::<HashMap<_, _>>(),
        ),
        _ => plain(v),
    }
}

fn plain(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(u)) => Value::from(u),
            _ => Value::from(n.as_f64().unwrap_or_default()),
        },
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(value).collect()),
        serde_json::Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), value(v)))
                .collect::<HashMap<_, _>>(),
        ),
    }
}

/// A template value back as JSON (for `json`).
fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Nil | Value::NoValue => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Number(n) => n
            .as_i64()
            .map(serde_json::Value::from)
            .or_else(|| n.as_u64().map(serde_json::Value::from))
            .or_else(|| n.as_f64().map(serde_json::Value::from))
            .unwrap_or(serde_json::Value::Null),
        Value::Array(a) => serde_json::Value::Array(a.iter().map(to_json).collect()),
        Value::Object(o) | Value::Map(o) => {
            let sorted: std::collections::BTreeMap<_, _> =
                o.iter().map(|(k, v)| (k.clone(), to_json(v))).collect();
            serde_json::Value::Object(sorted.into_iter().collect())
        }
        Value::Function(_) => serde_json::Value::Null,
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Nil | Value::NoValue => String::new(),
        other => other.to_string(),
    }
}

fn arg<'a>(args: &'a [Value], i: usize, func: &str) -> Result<&'a Value, FuncError> {
    args.get(i)
        .ok_or_else(|| FuncError::Generic(format!("{func}: wants {} argument(s)", i + 1)))
}

fn json(args: &[Value]) -> Result<Value, FuncError> {
    let v = to_json(arg(args, 0, "json")?);
    Ok(Value::String(v.to_string()))
}

fn join(args: &[Value]) -> Result<Value, FuncError> {
    let sep = text(arg(args, 1, "join")?);
    let parts: Vec<String> = match arg(args, 0, "join")? {
        Value::Array(a) => a.iter().map(text).collect(),
        other => vec![text(other)],
    };
    Ok(Value::String(parts.join(&sep)))
}

fn split(args: &[Value]) -> Result<Value, FuncError> {
    let (s, sep) = (text(arg(args, 0, "split")?), text(arg(args, 1, "split")?));
    Ok(Value::Array(
        s.split(sep.as_str())
            .map(|p| Value::String(p.to_string()))
            .collect(),
    ))
}

fn upper(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(text(arg(args, 0, "upper")?).to_uppercase()))
}

fn lower(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(text(arg(args, 0, "lower")?).to_lowercase()))
}

fn title(args: &[Value]) -> Result<Value, FuncError> {
    let s = text(arg(args, 0, "title")?);
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !c.is_alphanumeric();
    }
    Ok(Value::String(out))
}

fn number(v: &Value, func: &str) -> Result<usize, FuncError> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| FuncError::Generic(format!("{func}: wants a count"))),
        other => text(other)
            .parse()
            .map_err(|_| FuncError::Generic(format!("{func}: wants a count"))),
    }
}

/// `pad s left right`: `s` with that many spaces either side.
fn pad(args: &[Value]) -> Result<Value, FuncError> {
    let s = text(arg(args, 0, "pad")?);
    let (l, r) = (
        number(arg(args, 1, "pad")?, "pad")?,
        number(arg(args, 2, "pad")?, "pad")?,
    );
    Ok(Value::String(format!(
        "{}{s}{}",
        " ".repeat(l),
        " ".repeat(r)
    )))
}

/// `truncate s n`: the first n characters of `s`.
fn truncate(args: &[Value]) -> Result<Value, FuncError> {
    let s = text(arg(args, 0, "truncate")?);
    let n = number(arg(args, 1, "truncate")?, "truncate")?;
    Ok(Value::String(s.chars().take(n).collect()))
}

fn println(args: &[Value]) -> Result<Value, FuncError> {
    let words: Vec<String> = args.iter().map(text).collect();
    Ok(Value::String(format!("{}\n", words.join(" "))))
}

/// `label labels key`: the value of `key` in a list's `Labels` text (`k=v,k2=v2`, as
/// Docker's `ps` shows them); what `.Label "key"` reads as.
fn label(args: &[Value]) -> Result<Value, FuncError> {
    let labels = text(arg(args, 0, "label")?);
    let key = text(arg(args, 1, "label")?);
    Ok(Value::String(
        labels
            .split(',')
            .find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == key).then(|| v.to_string())
            })
            .unwrap_or_default(),
    ))
}

/// Docker's `.Label "key"` method of list rows (Go calls methods with arguments; the
/// template engine here reads fields only): written as `(label .Labels "key")`.
fn label_calls(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(i) = rest.find(".Label \"") {
        let before = &rest[..i];
        let starts_word = before
            .chars()
            .last()
            .is_none_or(|c| c.is_whitespace() || c == '{' || c == '(');
        let after = &rest[i + ".Label \"".len()..];
        match (starts_word, after.find('"')) {
            (true, Some(end)) => {
                out.push_str(before);
                out.push_str(&format!("(label .Labels \"{}\")", &after[..end]));
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str(&rest[..i + 1]);
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A parsed `--format` template with Docker's functions.
pub struct Compiled(Template);

impl Compiled {
    pub fn new(source: &str) -> anyhow::Result<Compiled> {
        let mut t = Template::default();
        t.add_funcs(&[
            ("json", json as gtmpl::Func),
            ("join", join),
            ("split", split),
            ("upper", upper),
            ("lower", lower),
            ("title", title),
            ("pad", pad),
            ("truncate", truncate),
            ("println", println),
            ("label", label),
        ]);
        t.parse(label_calls(source))
            .map_err(|e| anyhow::anyhow!("template parsing error: {e}"))?;
        Ok(Compiled(t))
    }

    /// The template executed on `v`.
    pub fn render(&self, v: &serde_json::Value) -> anyhow::Result<String> {
        self.0
            .render(&Context::from(value(v)))
            .map_err(|e| anyhow::anyhow!("template: executing: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(t: &str, v: &serde_json::Value) -> String {
        Compiled::new(t).expect("parse").render(v).expect("render")
    }

    #[test]
    fn label_method_of_rows() {
        let row = json!({"Labels": "a=1,com.x.project=shop,empty="});
        assert_eq!(render("{{.Label \"com.x.project\"}}", &row), "shop");
        assert_eq!(
            render("{{.Label \"nope\"}}|{{.Label \"empty\"}}", &row),
            "|"
        );
        assert_eq!(label_calls("{{.Labels}}"), "{{.Labels}}");
    }

    #[test]
    fn dockers_templates() {
        let v = json!({
            "State": { "Pid": 42, "Status": "running", "Running": true },
            "Name": "/web",
            "Config": { "Env": ["A=1", "B=2"], "Labels": { "x": "y" } },
            "NetworkSettings": { "IPAddress": "172.17.0.2", "Networks": { "bridge": { "IPAddress": "172.17.0.2" } } },
        });
        assert_eq!(render("{{.State.Pid}}", &v), "42");
        assert_eq!(render("{{.NetworkSettings.IPAddress}}", &v), "172.17.0.2");
        assert_eq!(render("{{json .Config.Labels}}", &v), r#"{"x":"y"}"#);
        assert_eq!(render("{{join .Config.Env \",\"}}", &v), "A=1,B=2");
        assert_eq!(render("{{upper .State.Status}}", &v), "RUNNING");
        assert_eq!(render("{{title \"hello world\"}}", &v), "Hello World");
        assert_eq!(render("{{truncate .Name 3}}", &v), "/we");
        assert_eq!(render("{{index (split \"a:b\" \":\") 1}}", &v), "b");
        assert_eq!(
            render(
                "{{range $k, $n := .NetworkSettings.Networks}}{{$k}} {{$n.IPAddress}}{{end}}",
                &v
            ),
            "bridge 172.17.0.2"
        );
        assert_eq!(render("{{if .State.Running}}up{{end}}", &v), "up");
        assert_eq!(render("{{println .Name}}", &v), "/web\n");
        assert!(Compiled::new("{{.Name").is_err());
    }
}
