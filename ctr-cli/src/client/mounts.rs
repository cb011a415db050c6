//! The mounts of a docker-style container: `-v`, `--mount`, `--tmpfs`, `--volumes-from` and
//! the image's VOLUMEs, parsed as Docker parses them, then made real — volumes created (or
//! found) in berthd, missing `-v` host directories made — into the spec's mounts, the
//! container's volume labels and inspect's `Mounts`.

use std::collections::BTreeMap;
use std::path::Path;

use berth_oci::spec::Mount as OciMount;
use berth_proto::containerd::services::containers::v1::Container;
use serde_json::{Value, json};

use super::Client;
use super::volumes::{self, daemon_error};

/// What a mount is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Bind,
    Volume,
    Tmpfs,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Bind => "bind",
            Kind::Volume => "volume",
            Kind::Tmpfs => "tmpfs",
        }
    }
}

/// One mount the user (or the image) asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub kind: Kind,
    /// The host path (bind), the volume's name (volume; empty: a new anonymous one).
    pub source: String,
    pub destination: String,
    pub read_only: bool,
    /// Docker's `Mode` text for inspect (`-v`'s mode: `ro`, `z`...).
    pub mode: String,
    /// A bind's propagation (`rprivate` unless told).
    pub propagation: String,
    /// A tmpfs' options (`size=…`, `mode=…`).
    pub tmpfs: Vec<String>,
    /// Options and labels of a volume `--mount` creates.
    pub volume_options: BTreeMap<String, String>,
    pub volume_labels: BTreeMap<String, String>,
    /// `-v` makes a missing host directory; `--mount` refuses it.
    pub create_source: bool,
    /// No copy-up into this volume (`nocopy`, `volume-nocopy`).
    pub nocopy: bool,
    /// Shown in inspect's `Mounts` (`--tmpfs` ones are in `HostConfig.Tmpfs` instead).
    pub listed: bool,
}

impl Request {
    fn new(kind: Kind, source: &str, destination: &str) -> Request {
        Request {
            kind,
            source: source.to_string(),
            destination: destination.to_string(),
            read_only: false,
            mode: String::new(),
            propagation: if kind == Kind::Bind {
                "rprivate".into()
            } else {
                String::new()
            },
            tmpfs: Vec::new(),
            volume_options: BTreeMap::new(),
            volume_labels: BTreeMap::new(),
            create_source: false,
            nocopy: false,
            listed: true,
        }
    }
}

fn daemon(msg: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("Error response from daemon: {msg}")
}

const PROPAGATIONS: [&str; 6] = [
    "shared", "rshared", "slave", "rslave", "private", "rprivate",
];

fn check_destination(spec: &str, kind: Kind, dest: &str) -> anyhow::Result<()> {
    let kind = kind.as_str();
    if !dest.starts_with('/') {
        return Err(daemon(format!(
            "invalid volume specification: '{spec}': invalid mount config for type \"{kind}\": invalid mount path: '{dest}' mount path must be absolute"
        )));
    }
    if Path::new(dest) == Path::new("/") {
        return Err(daemon(format!(
            "invalid volume specification: '{spec}': invalid mount config for type \"{kind}\": invalid specification: destination can't be '/'"
        )));
    }
    Ok(())
}

/// A relative host path (`.`, `./dir`, `../dir`) made absolute against the current
/// directory, as Docker's CLI (≥ 23) does for binds; anything else as it is.
fn absolute_source(source: &str) -> String {
    let relative =
        source == "." || source.starts_with("./") || source.starts_with("../") || source == "..";
    match std::env::current_dir() {
        Ok(cwd) if relative => cwd.join(source).display().to_string(),
        _ => source.to_string(),
    }
}

/// Parses `-v`: `/path` (anonymous volume), `name:/path[:mode]` (named volume),
/// `/host:/path[:mode]` (bind). Modes: `ro`, `rw`, `z`, `Z`, `nocopy` and the propagations,
/// by commas.
pub fn parse_volume_flag(spec: &str) -> anyhow::Result<Request> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, dest, mode) = match parts.as_slice() {
        [src, rest @ ..] if !rest.is_empty() && absolute_source(src) != *src => {
            let src = absolute_source(src);
            let mut again = vec![src.as_str()];
            again.extend(rest);
            return parse_volume_flag(&again.join(":"));
        }
        [dest] => ("", *dest, ""),
        [src, dest] => (*src, *dest, ""),
        [src, dest, mode] => (*src, *dest, *mode),
        _ => {
            return Err(daemon(format!("invalid volume specification: '{spec}'")));
        }
    };
    if source.is_empty() && parts.len() > 1 {
        return Err(daemon(format!("invalid volume specification: '{spec}'")));
    }
    let kind = if source.starts_with('/') {
        Kind::Bind
    } else {
        Kind::Volume
    };
    check_destination(spec, kind, dest)?;
    let mut r = Request::new(kind, source, dest);
    r.create_source = kind == Kind::Bind;
    let mut rw_given = false;
    for m in mode.split(',').filter(|m| !m.is_empty()) {
        match m {
            "ro" | "rw" if rw_given => {
                return Err(daemon(format!("invalid mode: {mode}")));
            }
            "ro" => {
                r.read_only = true;
                rw_given = true;
            }
            "rw" => rw_given = true,
            "z" | "Z" => {}
            "nocopy" if kind == Kind::Volume => r.nocopy = true,
            p if PROPAGATIONS.contains(&p) && kind == Kind::Bind => r.propagation = p.to_string(),
            _ => return Err(daemon(format!("invalid mode: {mode}"))),
        }
    }
    r.mode = if mode.is_empty() && kind == Kind::Volume && !source.is_empty() {
        "z".to_string()
    } else {
        mode.to_string()
    };
    Ok(r)
}

fn boolean(key: &str, value: Option<&str>, spec: &str) -> anyhow::Result<bool> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(v) => Err(anyhow::anyhow!(
            "invalid argument \"{spec}\" for \"--mount\" flag: invalid value for {key}: {v}"
        )),
    }
}

/// Parses `--mount type=bind|volume|tmpfs,source=…,target=…,readonly,…`.
pub fn parse_mount_flag(spec: &str) -> anyhow::Result<Request> {
    let bad =
        |why: String| anyhow::anyhow!("invalid argument \"{spec}\" for \"--mount\" flag: {why}");
    let mut kind = Kind::Volume;
    let mut fields: Vec<(String, Option<String>)> = Vec::new();
    for field in spec.split(',').filter(|f| !f.is_empty()) {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_string())),
            None => (field.to_ascii_lowercase(), None),
        };
        if k == "type" {
            kind = match v.as_deref() {
                Some("bind") => Kind::Bind,
                Some("volume") => Kind::Volume,
                Some("tmpfs") => Kind::Tmpfs,
                other => {
                    return Err(bad(format!(
                        "invalid value for 'type': {}",
                        other.unwrap_or_default()
                    )));
                }
            };
        } else {
            fields.push((k, v));
        }
    }
    let mut r = Request::new(kind, "", "");
    for (k, v) in fields {
        let value = || {
            v.clone()
                .ok_or_else(|| bad(format!("invalid field '{k}' must be a key=value pair")))
        };
        match k.as_str() {
            "source" | "src" if kind == Kind::Bind => r.source = absolute_source(&value()?),
            "source" | "src" => r.source = value()?,
            "target" | "destination" | "dst" => r.destination = value()?,
            "readonly" | "ro" => r.read_only = boolean(&k, v.as_deref(), spec)?,
            "bind-propagation" if kind == Kind::Bind => {
                let p = value()?;
                if !PROPAGATIONS.contains(&p.as_str()) {
                    return Err(bad(format!("invalid value for bind-propagation: {p}")));
                }
                r.propagation = p;
            }
            "volume-nocopy" if kind == Kind::Volume => {
                r.nocopy = boolean(&k, v.as_deref(), spec)?;
            }
            "volume-driver" if kind == Kind::Volume => {
                let d = value()?;
                if d != "local" {
                    return Err(daemon(format!(
                        "create {}: error looking up volume plugin {d}: plugin \"{d}\" not found",
                        r.source
                    )));
                }
            }
            "volume-label" if kind == Kind::Volume => {
                let text = value()?;
                let (lk, lv) = text.split_once('=').unwrap_or((&text, ""));
                r.volume_labels.insert(lk.to_string(), lv.to_string());
            }
            "volume-opt" if kind == Kind::Volume => {
                let text = value()?;
                let (ok, ov) = text.split_once('=').unwrap_or((&text, ""));
                r.volume_options.insert(ok.to_string(), ov.to_string());
            }
            "tmpfs-size" if kind == Kind::Tmpfs => {
                let size = crate::client::spec::parse_size(&value()?)
                    .ok_or_else(|| bad(format!("invalid value for {k}")))?;
                r.tmpfs.push(format!("size={size}"));
            }
            "tmpfs-mode" if kind == Kind::Tmpfs => {
                let mode = value()?;
                u32::from_str_radix(&mode, 8)
                    .map_err(|_| bad(format!("invalid value for {k}: {mode}")))?;
                r.tmpfs.push(format!("mode={mode}"));
            }
            "consistency" => {}
            _ => return Err(bad(format!("unexpected key '{k}' in '{spec}'"))),
        }
    }
    if r.destination.is_empty() {
        return Err(bad("target is required".into()));
    }
    if kind == Kind::Bind && r.source.is_empty() {
        return Err(daemon(
            "invalid mount config for type \"bind\": field Source must not be empty",
        ));
    }
    if kind == Kind::Tmpfs && !r.source.is_empty() {
        return Err(daemon(
            "invalid mount config for type \"tmpfs\": field Source must not be specified",
        ));
    }
    check_destination(spec, kind, &r.destination)?;
    if kind == Kind::Bind && !Path::new(&r.source).exists() {
        return Err(daemon(format!(
            "invalid mount config for type \"bind\": bind source path does not exist: {}",
            r.source
        )));
    }
    Ok(r)
}

/// Parses `--tmpfs /path[:options]` (mount options by commas: `size=64m`, `mode=1777`...).
pub fn parse_tmpfs_flag(spec: &str) -> anyhow::Result<Request> {
    let (dest, options) = spec.split_once(':').unwrap_or((spec, ""));
    check_destination(spec, Kind::Tmpfs, dest)?;
    let mut r = Request::new(Kind::Tmpfs, "", dest);
    r.listed = false;
    for o in options.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => r.read_only = true,
            "rw" => r.read_only = false,
            o => r.tmpfs.push(o.to_string()),
        }
    }
    Ok(r)
}

/// The mounts of container `other` (`--volumes-from other[:ro|rw]`): its volumes and binds,
/// read-only or writable as `mode` says (as they are when it says nothing).
pub fn volumes_from(other: &Container, mode: Option<&str>) -> anyhow::Result<Vec<Request>> {
    let cfg = super::containers::docker_config(other);
    let mut out = Vec::new();
    for m in cfg["Mounts"].as_array().into_iter().flatten() {
        let kind = match m["Type"].as_str() {
            Some("bind") => Kind::Bind,
            Some("volume") => Kind::Volume,
            _ => continue,
        };
        let source = match kind {
            Kind::Volume => m["Name"].as_str(),
            _ => m["Source"].as_str(),
        }
        .unwrap_or_default();
        let dest = m["Destination"].as_str().unwrap_or_default();
        let mut r = Request::new(kind, source, dest);
        r.read_only = match mode {
            Some("ro") => true,
            Some("rw") => false,
            Some(other) => {
                return Err(daemon(format!("invalid mode: {other}")));
            }
            None => m["RW"] == Value::Bool(false),
        };
        r.mode = m["Mode"].as_str().unwrap_or_default().to_string();
        if let Some(p) = m["Propagation"].as_str().filter(|p| !p.is_empty()) {
            r.propagation = p.to_string();
        }
        out.push(r);
    }
    Ok(out)
}

/// Checks that no two mounts share a destination (Docker's `Duplicate mount point`).
pub fn check_duplicates(requests: &[Request]) -> anyhow::Result<()> {
    let mut seen = std::collections::HashSet::new();
    for r in requests {
        let clean = Path::new(&r.destination)
            .components()
            .collect::<std::path::PathBuf>();
        if !seen.insert(clean) {
            return Err(daemon(format!("Duplicate mount point: {}", r.destination)));
        }
    }
    Ok(())
}

/// Anonymous volumes for the image's VOLUMEs that no other mount covers.
pub fn image_volumes(image: &[String], requests: &[Request]) -> Vec<Request> {
    image
        .iter()
        .filter(|dest| {
            !requests
                .iter()
                .any(|r| Path::new(&r.destination) == Path::new(dest))
        })
        .map(|dest| Request::new(Kind::Volume, "", dest))
        .collect()
}

/// The mounts made real.
#[derive(Debug, Default)]
pub struct Planned {
    /// The spec's mounts, parents before children.
    pub oci: Vec<OciMount>,
    /// inspect's `Mounts`.
    pub docker: Vec<Value>,
    /// Every volume the container uses.
    pub volumes: Vec<String>,
    /// The anonymous volumes made for it.
    pub anonymous: Vec<String>,
    /// The destinations of the volume mounts that asked for no copy-up.
    pub nocopy: Vec<String>,
}

/// Creates (or finds) the volumes and makes missing `-v` host directories. On an error,
/// the anonymous volumes made so far are removed again.
pub async fn realize(c: &Client, requests: &[Request]) -> anyhow::Result<Planned> {
    let mut planned = Planned::default();
    let result = realize_into(c, requests, &mut planned).await;
    if result.is_err() {
        discard(c, &planned).await;
    }
    result.map(|()| planned)
}

/// Removes the anonymous volumes `planned` made (a create that failed after them).
pub async fn discard(c: &Client, planned: &Planned) {
    for name in &planned.anonymous {
        let _ = volumes::delete(c, name, true).await;
    }
}

async fn realize_into(
    c: &Client,
    requests: &[Request],
    planned: &mut Planned,
) -> anyhow::Result<()> {
    let mut sorted: Vec<&Request> = requests.iter().collect();
    sorted.sort_by_key(|r| Path::new(&r.destination).components().count());
    for r in sorted {
        let mut options = Vec::new();
        let (kind, source, name) = match r.kind {
            Kind::Bind => {
                if r.create_source && !Path::new(&r.source).exists() {
                    std::fs::create_dir_all(&r.source).map_err(|e| {
                        daemon(format!(
                            "error while creating mount source path '{}': {e}",
                            r.source
                        ))
                    })?;
                }
                options.extend(["rbind".to_string(), r.propagation.clone()]);
                ("bind", r.source.clone(), String::new())
            }
            Kind::Volume => {
                let anonymous = r.source.is_empty();
                let v = volumes::create(
                    c,
                    &r.source,
                    "local",
                    r.volume_labels.clone(),
                    r.volume_options.clone(),
                    anonymous,
                )
                .await
                .map_err(daemon_error)?;
                if anonymous {
                    planned.anonymous.push(v.name.clone());
                }
                if !planned.volumes.contains(&v.name) {
                    planned.volumes.push(v.name.clone());
                }
                if r.nocopy {
                    planned.nocopy.push(r.destination.clone());
                }
                options.extend(["rbind".to_string(), "rprivate".to_string()]);
                ("bind", v.mountpoint.clone(), v.name)
            }
            Kind::Tmpfs => {
                options.extend(["nosuid", "nodev", "noexec"].map(String::from));
                options.extend(r.tmpfs.iter().cloned());
                ("tmpfs", "tmpfs".to_string(), String::new())
            }
        };
        if r.read_only {
            options.push("ro".to_string());
        }
        planned.oci.push(OciMount {
            destination: r.destination.clone(),
            kind: kind.to_string(),
            source: source.clone(),
            options,
        });
        if !r.listed {
            continue;
        }
        let mut m = json!({
            "Type": r.kind.as_str(),
            "Source": if r.kind == Kind::Tmpfs { String::new() } else { source },
            "Destination": r.destination,
            "Mode": r.mode,
            "RW": !r.read_only,
            "Propagation": r.propagation,
        });
        if r.kind == Kind::Volume {
            m["Name"] = json!(name);
            m["Driver"] = json!("local");
        }
        planned.docker.push(m);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_flags_parse_as_docker() {
        let r = parse_volume_flag("/data").unwrap();
        assert_eq!((r.kind, r.source.as_str()), (Kind::Volume, ""));
        let r = parse_volume_flag("db:/var/lib/db:ro").unwrap();
        assert_eq!(
            (r.kind, r.source.as_str(), r.read_only),
            (Kind::Volume, "db", true)
        );
        let r = parse_volume_flag("db:/x").unwrap();
        assert_eq!(r.mode, "z");
        let r = parse_volume_flag("/srv:/srv:rw,z,rslave").unwrap();
        assert_eq!(
            (r.kind, r.read_only, r.propagation.as_str()),
            (Kind::Bind, false, "rslave")
        );
        assert!(r.create_source);
        let r = parse_volume_flag("./here:/y:ro").unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(r.kind, Kind::Bind);
        assert_eq!(r.source, cwd.join("./here").display().to_string());
        assert!(r.read_only);
        for bad in [
            "rel",
            "db:rel",
            "db:/",
            "/a:/b:xx",
            "/a:/b:ro,rw",
            "a:b:c:d",
            ":/x",
        ] {
            assert!(parse_volume_flag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mount_flags_parse_as_docker() {
        let r = parse_mount_flag("type=volume,source=db,target=/db,readonly").unwrap();
        assert_eq!(
            (r.kind, r.source.as_str(), r.read_only),
            (Kind::Volume, "db", true)
        );
        let r = parse_mount_flag("type=tmpfs,dst=/t,tmpfs-size=64m,tmpfs-mode=1770").unwrap();
        assert_eq!(r.tmpfs, ["size=67108864", "mode=1770"]);
        let r = parse_mount_flag("type=bind,src=/tmp,dst=/t,bind-propagation=shared").unwrap();
        assert_eq!(r.propagation, "shared");
        let err = parse_mount_flag("type=bind,src=/no/such/dir,dst=/t").unwrap_err();
        assert!(
            err.to_string().contains("bind source path does not exist"),
            "{err}"
        );
        for bad in [
            "type=nfs,dst=/t",
            "type=volume,src=x",
            "type=tmpfs,src=x,dst=/t",
            "dst=/t,colour=red",
        ] {
            assert!(parse_mount_flag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tmpfs_flags_and_duplicates() {
        let r = parse_tmpfs_flag("/run/x:size=1m,mode=1777").unwrap();
        assert_eq!(r.tmpfs, ["size=1m", "mode=1777"]);
        assert!(!r.listed);
        let a = parse_volume_flag("/data").unwrap();
        let b = parse_tmpfs_flag("/data/").unwrap();
        assert!(check_duplicates(&[a.clone(), b]).is_err());
        let image = image_volumes(&["/data".into(), "/logs".into()], &[a]);
        assert_eq!(image.len(), 1);
        assert_eq!(image[0].destination, "/logs");
    }
}
