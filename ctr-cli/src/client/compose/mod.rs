//! A Compose project as the Compose Specification describes it: `compose.yaml` (or
//! `compose.yml`, `docker-compose.yml`, `docker-compose.yaml`, or `-f` files merged in
//! order), `.env` and the environment for `${VAR}` interpolation, the project name (`-p`,
//! `COMPOSE_PROJECT_NAME`, `name:`, else the directory's), and each service in the order its
//! `depends_on` asks for. The commands that act on a project live in `commands/compose`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{Map, Value, json};
use yaml_rust2::{Yaml, YamlLoader};

/// The files looked for when none is named, in order.
pub const DEFAULT_FILES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
];

/// The label naming a container's project (Docker Compose's).
pub const PROJECT_LABEL: &str = "com.docker.compose.project";
/// The label naming a container's service.
pub const SERVICE_LABEL: &str = "com.docker.compose.service";
/// The label of a one-off (`compose run`) container.
pub const ONEOFF_LABEL: &str = "com.docker.compose.oneoff";

/// A loaded project.
#[derive(Debug, Clone)]
pub struct Project {
    pub name: String,
    /// The project directory (relative paths in the files are from here).
    pub dir: PathBuf,
    /// The services, each after the services it depends on.
    pub services: Vec<Service>,
    /// Top-level networks by their key (`default` included when a service uses it).
    pub networks: BTreeMap<String, Value>,
    /// Top-level volumes by their key.
    pub volumes: BTreeMap<String, Value>,
    /// The whole interpolated model (for `config`).
    pub model: Value,
    /// The variables it was interpolated with (ours, then `.env`'s).
    pub vars: BTreeMap<String, String>,
}

/// One service, its keys as the file has them (interpolated, short forms kept).
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub spec: Value,
}

impl Service {
    /// Its `depends_on` services with their condition (`service_started` when none given).
    pub fn depends_on(&self) -> Vec<(String, String)> {
        match &self.spec["depends_on"] {
            Value::Array(a) => a
                .iter()
                .filter_map(|s| s.as_str())
                .map(|s| (s.to_string(), "service_started".to_string()))
                .collect(),
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| {
                    let cond = v["condition"].as_str().unwrap_or("service_started");
                    (k.clone(), cond.to_string())
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The networks it joins (keys of the top-level `networks`), with its aliases there;
    /// `default` when it names none and does not use another network mode.
    pub fn networks(&self) -> Vec<(String, Vec<String>)> {
        if self.spec["network_mode"].is_string() {
            return Vec::new();
        }
        match &self.spec["networks"] {
            Value::Array(a) => a
                .iter()
                .filter_map(|n| n.as_str())
                .map(|n| (n.to_string(), Vec::new()))
                .collect(),
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| {
                    let aliases = v["aliases"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|a| a.as_str().map(str::to_string))
                        .collect();
                    (k.clone(), aliases)
                })
                .collect(),
            _ => vec![("default".to_string(), Vec::new())],
        }
    }

    /// The image it runs: given, else the one its build makes (`<project>-<service>`).
    pub fn image(&self, project: &str) -> String {
        self.spec["image"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{project}-{}", self.name))
    }

    /// Its environment as `KEY=VALUE` lines: `env_file`s first, then `environment` (list
    /// or map; a key without a value takes the project's variable — ours, else `.env`'s —
    /// and is left out when there is none).
    pub fn environment(
        &self,
        dir: &Path,
        vars: &BTreeMap<String, String>,
    ) -> anyhow::Result<Vec<String>> {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        let files: Vec<String> = match &self.spec["env_file"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(|f| f.as_str().or_else(|| f["path"].as_str()))
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        for f in files {
            let path = dir.join(&f);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("env file {} not found", path.display()))?;
            env.extend(dotenv(&text));
        }
        match &self.spec["environment"] {
            Value::Array(a) => {
                for e in a.iter().filter_map(|e| e.as_str()) {
                    match e.split_once('=') {
                        Some((k, v)) => {
                            env.insert(k.to_string(), v.to_string());
                        }
                        None => {
                            if let Some(v) = vars.get(e) {
                                env.insert(e.to_string(), v.clone());
                            }
                        }
                    }
                }
            }
            Value::Object(m) => {
                for (k, v) in m {
                    match v {
                        Value::Null => {
                            if let Some(v) = vars.get(k) {
                                env.insert(k.clone(), v.clone());
                            }
                        }
                        Value::String(s) => {
                            env.insert(k.clone(), s.clone());
                        }
                        other => {
                            env.insert(k.clone(), other.to_string());
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
    }
}

/// Loads the project: `files` (none: the default file of `dir`), merged in order.
pub fn load(dir: &Path, files: &[PathBuf], name: Option<&str>) -> anyhow::Result<Project> {
    let files: Vec<PathBuf> = if files.is_empty() {
        let found = DEFAULT_FILES
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
            .with_context(|| {
                format!(
                    "no configuration file provided: not found (looked for {} in {})",
                    DEFAULT_FILES.join(", "),
                    dir.display()
                )
            })?;
        vec![found]
    } else {
        files
            .iter()
            .map(|f| {
                if f.is_relative() {
                    dir.join(f)
                } else {
                    f.clone()
                }
            })
            .collect()
    };
    let dir = files[0]
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.to_path_buf());
    // Variables: ours first, then the project's .env for what we do not set.
    let mut vars: BTreeMap<String, String> = std::env::vars().collect();
    if let Ok(text) = std::fs::read_to_string(dir.join(".env")) {
        for (k, v) in dotenv(&text) {
            vars.entry(k).or_insert(v);
        }
    }
    let mut model = json!({});
    for f in &files {
        let text = std::fs::read_to_string(f).with_context(|| format!("read {}", f.display()))?;
        let docs = YamlLoader::load_from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        let doc = docs
            .into_iter()
            .next()
            .unwrap_or(Yaml::Hash(Default::default()));
        let v = interpolate(&to_json(&doc), &vars).with_context(|| format!("{}", f.display()))?;
        merge(&mut model, v);
    }
    let services_map = model["services"]
        .as_object()
        .cloned()
        .context("the project has no services")?;
    let project_name = name
        .map(str::to_string)
        .or_else(|| vars.get("COMPOSE_PROJECT_NAME").cloned())
        .or_else(|| model["name"].as_str().map(str::to_string))
        .unwrap_or_else(|| {
            std::fs::canonicalize(&dir)
                .ok()
                .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "default".to_string())
        });
    let project_name = normalize_name(&project_name);
    if project_name.is_empty() {
        anyhow::bail!("project name must not be empty");
    }
    let services: Vec<Service> = services_map
        .into_iter()
        .map(|(name, spec)| Service { name, spec })
        .collect();
    let services = ordered(services)?;
    let mut networks: BTreeMap<String, Value> = model["networks"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    for s in &services {
        for (n, _) in s.networks() {
            if let std::collections::btree_map::Entry::Vacant(slot) = networks.entry(n) {
                if slot.key() != "default" {
                    anyhow::bail!(
                        "service {:?} refers to undefined network {}",
                        s.name,
                        slot.key()
                    );
                }
                slot.insert(Value::Null);
            }
        }
    }
    let volumes = model["volumes"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    model["name"] = json!(project_name);
    Ok(Project {
        name: project_name,
        dir,
        services,
        networks,
        volumes,
        model,
        vars,
    })
}

impl Project {
    pub fn service(&self, name: &str) -> anyhow::Result<&Service> {
        self.services
            .iter()
            .find(|s| s.name == name)
            .with_context(|| format!("no such service: {name}"))
    }

    /// The services named, with what they depend on (all when none is named), in order.
    pub fn selected(&self, names: &[String]) -> anyhow::Result<Vec<&Service>> {
        if names.is_empty() {
            return Ok(self.services.iter().collect());
        }
        let mut wanted: BTreeSet<String> = BTreeSet::new();
        let mut stack: Vec<String> = names.to_vec();
        while let Some(n) = stack.pop() {
            let s = self.service(&n)?;
            if wanted.insert(n) {
                stack.extend(s.depends_on().into_iter().map(|(d, _)| d));
            }
        }
        Ok(self
            .services
            .iter()
            .filter(|s| wanted.contains(&s.name))
            .collect())
    }

    /// The name berth gives a project network or volume: `<project>_<key>`, or the
    /// `name:` it is given; an `external` one keeps its own name.
    pub fn resource_name(&self, spec: &Value, key: &str) -> String {
        if let Some(n) = spec["name"].as_str() {
            return n.to_string();
        }
        if spec["external"].as_bool() == Some(true) {
            return key.to_string();
        }
        format!("{}_{key}", self.name)
    }

    /// The container of a service's first replica.
    pub fn container_name(&self, service: &Service) -> String {
        service.spec["container_name"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}-{}-1", self.name, service.name))
    }
}

/// Project names as Compose makes them: lower case, `[a-z0-9_-]`, starting with a letter
/// or digit.
fn normalize_name(n: &str) -> String {
    n.to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect::<String>()
        .trim_start_matches(['_', '-'])
        .to_string()
}

/// The services ordered so that each comes after those it depends on; a cycle or a
/// dependency on an unknown service is an error.
fn ordered(mut services: Vec<Service>) -> anyhow::Result<Vec<Service>> {
    services.sort_by(|a, b| a.name.cmp(&b.name));
    let names: BTreeSet<String> = services.iter().map(|s| s.name.clone()).collect();
    for s in &services {
        for (d, _) in s.depends_on() {
            if !names.contains(&d) {
                anyhow::bail!("service {:?} depends on undefined service {d:?}", s.name);
            }
        }
    }
    let mut out: Vec<Service> = Vec::new();
    let mut done: BTreeSet<String> = BTreeSet::new();
    while out.len() < services.len() {
        let before = out.len();
        for s in &services {
            if done.contains(&s.name) {
                continue;
            }
            if s.depends_on().iter().all(|(d, _)| done.contains(d)) {
                done.insert(s.name.clone());
                out.push(s.clone());
            }
        }
        if out.len() == before {
            let left: Vec<&str> = services
                .iter()
                .filter(|s| !done.contains(&s.name))
                .map(|s| s.name.as_str())
                .collect();
            anyhow::bail!("dependency cycle between services: {}", left.join(", "));
        }
    }
    Ok(out)
}

/// A YAML document as JSON (keys as strings).
fn to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Real(s) => s
            .parse::<f64>()
            .map(|f| json!(f))
            .unwrap_or_else(|_| json!(s)),
        Yaml::Integer(i) => json!(i),
        Yaml::String(s) => json!(s),
        Yaml::Boolean(b) => json!(b),
        Yaml::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        Yaml::Hash(h) => {
            let mut m = Map::new();
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Real(r) => r.clone(),
                    Yaml::Boolean(b) => b.to_string(),
                    _ => continue,
                };
                m.insert(key, to_json(v));
            }
            Value::Object(m)
        }
        Yaml::Alias(_) | Yaml::Null | Yaml::BadValue => Value::Null,
    }
}

/// JSON as YAML (for `config`).
pub fn to_yaml(v: &Value) -> Yaml {
    match v {
        Value::Null => Yaml::Null,
        Value::Bool(b) => Yaml::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Integer(i),
            None => Yaml::Real(n.to_string()),
        },
        Value::String(s) => Yaml::String(s.clone()),
        Value::Array(a) => Yaml::Array(a.iter().map(to_yaml).collect()),
        Value::Object(m) => Yaml::Hash(
            m.iter()
                .map(|(k, v)| (Yaml::String(k.clone()), to_yaml(v)))
                .collect(),
        ),
    }
}

/// `b` merged over `a` (maps key by key, anything else replaced), as later `-f` files
/// override earlier ones.
fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(am), Value::Object(bm)) => {
            for (k, v) in bm {
                match am.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        am.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// `KEY=VALUE` lines (comments, blank lines and `export ` skipped; quotes taken off).
pub fn dotenv(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

/// Every string of `v` interpolated.
fn interpolate(v: &Value, vars: &BTreeMap<String, String>) -> anyhow::Result<Value> {
    Ok(match v {
        Value::String(s) => Value::String(interpolate_str(s, vars)?),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| interpolate(x, vars))
                .collect::<anyhow::Result<_>>()?,
        ),
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, x) in m {
                out.insert(k.clone(), interpolate(x, vars)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

/// `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`,
/// `${VAR:+alt}`, `${VAR+alt}`; `$$` is a `$`.
pub fn interpolate_str(s: &str, vars: &BTreeMap<String, String>) -> anyhow::Result<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '$' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('$') => {
                out.push('$');
                i += 2;
            }
            Some('{') => {
                let end = chars[i + 2..]
                    .iter()
                    .position(|c| *c == '}')
                    .with_context(|| format!("invalid interpolation format for {s:?}"))?;
                let inner: String = chars[i + 2..i + 2 + end].iter().collect();
                out.push_str(&expand(&inner, vars, s)?);
                i += end + 3;
            }
            Some(c) if c.is_ascii_alphabetic() || *c == '_' => {
                let name: String = chars[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                    .collect();
                out.push_str(vars.get(&name).map(String::as_str).unwrap_or(""));
                i += 1 + name.len();
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    Ok(out)
}

fn expand(inner: &str, vars: &BTreeMap<String, String>, whole: &str) -> anyhow::Result<String> {
    let name_len = inner
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .count();
    let (name, op) = inner.split_at(name_len);
    let value = vars.get(name);
    let set = value.is_some();
    let nonempty = value.is_some_and(|v| !v.is_empty());
    let v = value.cloned().unwrap_or_default();
    Ok(match op {
        "" => v,
        _ if op.starts_with(":-") => {
            if nonempty {
                v
            } else {
                interpolate_str(&op[2..], vars)?
            }
        }
        _ if op.starts_with('-') => {
            if set {
                v
            } else {
                interpolate_str(&op[1..], vars)?
            }
        }
        _ if op.starts_with(":?") => {
            if !nonempty {
                anyhow::bail!("required variable {name} is missing a value: {}", &op[2..]);
            }
            v
        }
        _ if op.starts_with('?') => {
            if !set {
                anyhow::bail!("required variable {name} is missing a value: {}", &op[1..]);
            }
            v
        }
        _ if op.starts_with(":+") => {
            if nonempty {
                interpolate_str(&op[2..], vars)?
            } else {
                String::new()
            }
        }
        _ if op.starts_with('+') => {
            if set {
                interpolate_str(&op[1..], vars)?
            } else {
                String::new()
            }
        }
        _ => anyhow::bail!("invalid interpolation format for {whole:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_as_compose_does_it() {
        let vars = BTreeMap::from([
            ("A".to_string(), "1".to_string()),
            ("E".to_string(), String::new()),
        ]);
        let i = |s: &str| interpolate_str(s, &vars).unwrap();
        assert_eq!(i("$A ${A} $$A"), "1 1 $A");
        assert_eq!(i("${B:-x} ${E:-y} ${E-z} ${B-w}"), "x y  w");
        assert_eq!(i("${A:+set}${E:+no}${E+yes}"), "setyes");
        assert!(
            interpolate_str("${B:?needed}", &vars)
                .unwrap_err()
                .to_string()
                .contains("needed")
        );
        assert!(interpolate_str("${E?}", &vars).is_ok());
    }

    #[test]
    fn a_project_loads_in_dependency_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".env"),
            "TAG=1.2\n# c\nexport PORT='8080'\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("compose.yaml"),
            "services:\n  web:\n    image: \"nginx:${TAG}\"\n    ports: [\"${PORT}:80\"]\n    depends_on:\n      db:\n        condition: service_healthy\n    environment:\n      - A=1\n  db:\n    image: postgres\n    networks: [back]\nnetworks:\n  back: {}\nvolumes:\n  data:\n",
        )
        .unwrap();
        let p = load(dir.path(), &[], Some("My_App")).unwrap();
        assert_eq!(p.name, "my_app");
        let names: Vec<&str> = p.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["db", "web"]);
        let web = p.service("web").unwrap();
        assert_eq!(web.spec["image"], "nginx:1.2");
        assert_eq!(web.spec["ports"][0], "8080:80");
        assert_eq!(
            web.depends_on(),
            [("db".to_string(), "service_healthy".to_string())]
        );
        assert_eq!(
            web.networks(),
            [("default".to_string(), Vec::<String>::new())]
        );
        assert!(p.networks.contains_key("default") && p.networks.contains_key("back"));
        assert_eq!(p.resource_name(&Value::Null, "data"), "my_app_data");
        assert_eq!(p.container_name(web), "my_app-web-1");
        // A cycle is refused.
        std::fs::write(
            dir.path().join("compose.yaml"),
            "services:\n  a: {image: x, depends_on: [b]}\n  b: {image: x, depends_on: [a]}\n",
        )
        .unwrap();
        assert!(
            load(dir.path(), &[], None)
                .unwrap_err()
                .to_string()
                .contains("cycle")
        );
    }
}
