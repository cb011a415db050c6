//! The OCI runtime spec of a docker-style container: `berth run`'s flags turned into the
//! plain inputs of [`berth_oci::spec::build`], which writes the spec.
//!
//! What stays here is what only the CLI knows: the flags' syntax (`-m 512m`, `--cpus 1.5`),
//! the image config's JSON, Docker's defaults for a container (hostname: the short id;
//! cgroups path `/<namespace>/<id>`; `noNewPrivileges` false), resolving `-u user[:group]`
//! against the rootfs' `/etc/passwd` and `/etc/group`, and reading the host's capabilities.
//!
//! Mounts (`-v`, `--mount`, `--tmpfs`, `--volumes-from`, the image's VOLUMEs) come made
//! (see `client::mounts`) and replace a default mount at the same destination.
//!
//! Networking: a container with a network of its own (`--network bridge|none`) gets a
//! network namespace whose path berthd fills in when it attaches the container at task
//! create; `--network host` shares the host's.

use anyhow::Context;
use berth_oci::spec::{self as oci, Capability, ContainerConfig, Resources};
use serde_json::Value;

use super::{Client, snapshots, status};

/// Why a spec could not be made; each names what the user gave.
#[derive(Debug)]
pub enum SpecError {
    UnknownUser(String),
    UnknownGroup(String),
    BadMemory(String),
    BadCpus(String),
    /// The builder refused the inputs (no command, an unknown capability, ...).
    Spec(berth_oci::Error),
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpecError::UnknownUser(u) => {
                write!(
                    f,
                    "unable to find user {u}: no matching entries in passwd file"
                )
            }
            SpecError::UnknownGroup(g) => {
                write!(
                    f,
                    "unable to find group {g}: no matching entries in group file"
                )
            }
            SpecError::BadMemory(m) => write!(f, "invalid memory limit {m:?}: minimum is 6MB"),
            SpecError::BadCpus(c) => write!(f, "invalid --cpus {c:?}: must be a positive number"),
            SpecError::Spec(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SpecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SpecError::Spec(e) => e.source(),
            _ => None,
        }
    }
}

impl From<berth_oci::Error> for SpecError {
    fn from(e: berth_oci::Error) -> SpecError {
        SpecError::Spec(e)
    }
}

/// The parts of an image config (`config` in the image's JSON) a container runs from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub stop_signal: String,
    /// The image's `EXPOSE`d ports (`80/tcp`).
    pub exposed_ports: Vec<String>,
    /// The image's VOLUMEs (each gets an anonymous volume unless a mount covers it).
    pub volumes: Vec<String>,
}

impl ImageConfig {
    /// From the whole image config blob (its `config` object).
    pub fn from_image(image: &Value) -> ImageConfig {
        let c = &image["config"];
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let string = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let keys = |v: &Value| -> Vec<String> {
            v.as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default()
        };
        ImageConfig {
            entrypoint: strings(&c["Entrypoint"]),
            cmd: strings(&c["Cmd"]),
            env: strings(&c["Env"]),
            working_dir: string(&c["WorkingDir"]),
            user: string(&c["User"]),
            stop_signal: string(&c["StopSignal"]),
            exposed_ports: keys(&c["ExposedPorts"]),
            volumes: keys(&c["Volumes"]),
        }
    }

    /// What the spec builder takes of it (the user is resolved here, the stop signal is not
    /// part of the spec).
    fn runtime(&self) -> oci::ImageConfig {
        oci::ImageConfig {
            entrypoint: self.entrypoint.clone(),
            cmd: self.cmd.clone(),
            env: self.env.clone(),
            working_dir: self.working_dir.clone(),
        }
    }
}

/// The user's flags, as `berth run` / `berth create` take them.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub id: String,
    pub namespace: String,
    /// Arguments after the image (replace the image's Cmd when given).
    pub args: Vec<String>,
    /// `--entrypoint` (replaces the image's Entrypoint and drops its Cmd; "" clears it).
    pub entrypoint: Option<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub tty: bool,
    pub read_only: bool,
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub memory: Option<i64>,
    pub cpus: Option<f64>,
    pub pids_limit: Option<i64>,
    /// A network namespace of its own (its path set by berthd), not the host's.
    pub own_network: bool,
    /// The host path of the init binary to bind-mount at [`oci::INIT_PATH`] (`--init`).
    pub init: Option<String>,
    /// Volumes, binds and tmpfs mounts (`-v`, `--mount`, `--tmpfs`...), parents first.
    pub mounts: Vec<oci::Mount>,
}

/// The contents of the rootfs' `/etc/passwd` and `/etc/group` (empty when absent).
#[derive(Clone, Debug, Default)]
pub struct Accounts {
    pub passwd: String,
    pub group: String,
}

/// Resolved user: uid, gid, additional gids.
#[derive(Debug, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional: Vec<u32>,
}

/// Resolves `user[:group]` (names or numbers) against the rootfs' accounts, as Docker
/// does: a numeric uid need not exist; a name must. Without a group, the user's primary
/// group from passwd (0 when the uid is not listed). Additional gids: the primary group
/// and the groups listing the user's name as a member (so `id` shows `groups=`, as under
/// Docker).
pub fn resolve_user(spec: &str, acc: &Accounts) -> Result<User, SpecError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd: Vec<Vec<&str>> = acc
        .passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    let groups: Vec<Vec<&str>> = acc
        .group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect();
    let user = if user.is_empty() { "0" } else { user };
    let entry = match user.parse::<u32>() {
        Ok(uid) => passwd
            .iter()
            .find(|f| f[2].parse::<u32>().ok() == Some(uid)),
        Err(_) => passwd.iter().find(|f| f[0] == user),
    };
    let (uid, primary, name) = match (user.parse::<u32>(), entry) {
        (_, Some(f)) => (
            f[2].parse::<u32>()
                .map_err(|_| SpecError::UnknownUser(user.to_string()))?,
            f[3].parse::<u32>().unwrap_or(0),
            Some(f[0]),
        ),
        (Ok(uid), None) => (uid, 0, None),
        (Err(_), None) => return Err(SpecError::UnknownUser(user.to_string())),
    };
    let gid = match group {
        None | Some("") => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse::<u32>().ok())
                .ok_or_else(|| SpecError::UnknownGroup(g.to_string()))?,
        },
    };
    let mut additional = vec![gid];
    if let Some(name) = name {
        for f in &groups {
            let members = f.get(3).copied().unwrap_or_default();
            if members.split(',').any(|m| m == name)
                && let Ok(g) = f[2].parse::<u32>()
                && g != gid
                && !additional.contains(&g)
            {
                additional.push(g);
            }
        }
    }
    Ok(User {
        uid,
        gid,
        additional,
    })
}

/// Parses a Docker memory size (`512m`, `1g`, `1048576`, `100MB`): binary units.
pub fn parse_memory(s: &str) -> Result<i64, SpecError> {
    match parse_size(s) {
        Some(bytes) if bytes >= 6 * 1024 * 1024 => Ok(bytes),
        _ => Err(SpecError::BadMemory(s.to_string())),
    }
}

/// Parses a Docker size in binary units (`64m`, `1g`, `1048576`, `100MB`).
pub fn parse_size(s: &str) -> Option<i64> {
    let lower = s.trim().to_ascii_lowercase();
    let t = lower.strip_suffix('b').unwrap_or(&lower);
    let (num, mult): (&str, i64) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some((v * mult as f64) as i64)
}

/// Parses `--cpus` (a positive decimal).
pub fn parse_cpus(s: &str) -> Result<f64, SpecError> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(SpecError::BadCpus(s.to_string())),
    }
}

/// The CFS period `--cpus` is a quota of.
pub const CPU_PERIOD: u64 = 100_000;

/// The spec builder's inputs for the flags `o`, the image `img`, the rootfs' accounts and
/// every capability the host can grant.
pub fn container_config(
    img: &ImageConfig,
    o: &Options,
    acc: &Accounts,
    all_caps: &[Capability],
) -> Result<ContainerConfig, SpecError> {
    let user_spec = o.user.clone().unwrap_or_else(|| img.user.clone());
    let user = resolve_user(&user_spec, acc)?;
    Ok(ContainerConfig {
        image: img.runtime(),
        entrypoint: o.entrypoint.as_ref().map(|e| {
            if e.is_empty() {
                Vec::new()
            } else {
                vec![e.clone()]
            }
        }),
        args: o.args.clone(),
        init: o.init.clone(),
        env: o.env.clone(),
        cwd: o.workdir.clone(),
        user: oci::User {
            uid: user.uid,
            gid: user.gid,
            additional_gids: user.additional,
        },
        terminal: o.tty,
        hostname: Some(
            o.hostname
                .clone()
                .unwrap_or_else(|| crate::client::containers::short_id(&o.id).to_string()),
        ),
        readonly_rootfs: o.read_only,
        privileged: o.privileged,
        cap_add: o.cap_add.clone(),
        cap_drop: o.cap_drop.clone(),
        host_capabilities: all_caps.to_vec(),
        resources: Resources {
            memory_limit: o.memory,
            cpu_quota: o.cpus.map(|c| (c * CPU_PERIOD as f64).round() as i64),
            cpu_period: o.cpus.map(|_| CPU_PERIOD),
            pids_limit: o.pids_limit,
            ..Default::default()
        },
        cgroups_path: Some(format!("/{}/{}", o.namespace, o.id)),
        mounts: o.mounts.clone(),
        namespaces: o.own_network.then(|| {
            let mut all = oci::default_namespaces();
            all.push(oci::Namespace {
                kind: oci::LinuxNamespaceType::Network,
                path: None,
            });
            all
        }),
        ..Default::default()
    })
}

/// The OCI runtime spec (config.json) of the container, as JSON.
pub fn build(
    img: &ImageConfig,
    o: &Options,
    acc: &Accounts,
    all_caps: &[Capability],
) -> Result<Value, SpecError> {
    let config = container_config(img, o, acc, all_caps)?;
    Ok(oci::to_value(&oci::build(&config)?)?)
}

/// Every capability this host can grant: the bits of our bounding set.
pub fn host_capabilities() -> Vec<Capability> {
    oci::bounding_set(&std::fs::read_to_string("/proc/self/status").unwrap_or_default())
}

/// Reads the rootfs' /etc/passwd and /etc/group through a read-only view of the image's
/// top snapshot mounted here for a moment.
pub async fn read_accounts(
    c: &Client,
    snapshotter: &str,
    parent: &str,
    id: &str,
    lease: &str,
) -> anyhow::Result<Accounts> {
    let key = format!("{id}-accounts");
    let mounts = snapshots::create(
        c,
        snapshotter,
        snapshots::Create::View,
        &key,
        Some(parent.to_string()),
        Default::default(),
        Some(lease),
    )
    .await
    .map_err(status)?;
    let dir = std::env::temp_dir().join(format!("berth-accounts-{id}"));
    let result = async {
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        snapshots::mount_local(&mounts, dir.clone()).await?;
        let read = |f: &str| {
            let p = dir.join(f);
            // A symlink could point out of the rootfs: treat it as absent.
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_file() => std::fs::read_to_string(&p).unwrap_or_default(),
                _ => String::new(),
            }
        };
        let acc = Accounts {
            passwd: read("etc/passwd"),
            group: read("etc/group"),
        };
        let d = dir.clone();
        tokio::task::spawn_blocking(move || berth_snapshotter::mount::unmount(&d))
            .await?
            .with_context(|| format!("unmount {}", dir.display()))?;
        anyhow::Ok(acc)
    }
    .await;
    let _ = std::fs::remove_dir(&dir);
    let _ = snapshots::remove(c, snapshotter, &key).await;
    result
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn opts() -> Options {
        Options {
            id: "0123456789abcdef".repeat(4),
            namespace: "default".into(),
            ..Default::default()
        }
    }

    fn img() -> ImageConfig {
        ImageConfig::from_image(&json!({"config": {
            "Env": ["PATH=/bin", "A=1"],
            "Entrypoint": ["/entry"],
            "Cmd": ["serve", "--x"],
            "WorkingDir": "/app",
        }}))
    }

    fn all() -> Vec<Capability> {
        oci::CAPABILITIES.iter().map(|(_, c)| *c).collect()
    }

    fn accounts() -> Accounts {
        Accounts {
            passwd: "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33::/var/www:/bin/false\n".into(),
            group: "root:x:0:\nwww-data:x:33:\nstaff:x:50:www-data,other\n".into(),
        }
    }

    fn args(o: &Options) -> Result<Value, SpecError> {
        build(&img(), o, &Accounts::default(), &all()).map(|s| s["process"]["args"].clone())
    }

    #[test]
    fn entrypoint_and_cmd_combine_as_docker_does() {
        let mut o = opts();
        assert_eq!(args(&o).unwrap(), json!(["/entry", "serve", "--x"]));
        o.args = vec!["run".into()];
        assert_eq!(args(&o).unwrap(), json!(["/entry", "run"]));
        o.entrypoint = Some("/bin/sh".into());
        assert_eq!(args(&o).unwrap(), json!(["/bin/sh", "run"]));
        o.args.clear();
        assert_eq!(args(&o).unwrap(), json!(["/bin/sh"]));
        o.entrypoint = Some(String::new());
        let err = args(&o).unwrap_err();
        assert!(matches!(err, SpecError::Spec(berth_oci::Error::NoCommand)));
        assert_eq!(err.to_string(), "No command specified");
    }

    #[test]
    fn default_spec_matches_containerd_defaults() {
        let s = build(&img(), &opts(), &Accounts::default(), &all()).unwrap();
        assert_eq!(s["process"]["cwd"], "/app");
        assert_eq!(s["process"]["noNewPrivileges"], false);
        assert_eq!(s["hostname"], "0123456789ab");
        assert_eq!(
            s["process"]["env"],
            json!(["HOSTNAME=0123456789ab", "PATH=/bin", "A=1"])
        );
        assert_eq!(
            s["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            14
        );
        assert_eq!(s["process"]["rlimits"][0]["hard"], 1024);
        assert_eq!(s["root"], json!({"path": "rootfs", "readonly": false}));
        assert_eq!(
            s["linux"]["cgroupsPath"],
            format!("/default/{}", "0123456789abcdef".repeat(4))
        );
        let ns: Vec<&str> = s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "ipc", "uts", "mount"]);
        let dests: Vec<&str> = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup",
                "/run"
            ]
        );
        assert_eq!(s["linux"]["maskedPaths"].as_array().unwrap().len(), 10);
        assert_eq!(
            s["linux"]["resources"]["devices"],
            json!([{"allow": false, "access": "rwm"}])
        );
        assert!(s["linux"]["resources"].get("memory").is_none());
    }

    #[test]
    fn flags_reach_the_spec() {
        let mut o = opts();
        o.env = vec!["A=2".into(), "B=3".into()];
        o.workdir = Some("/tmp".into());
        o.hostname = Some("box".into());
        o.tty = true;
        o.read_only = true;
        o.memory = Some(parse_memory("64m").unwrap());
        o.cpus = Some(parse_cpus("1.5").unwrap());
        o.pids_limit = Some(20);
        o.init = Some("/usr/bin/tini-static".into());
        let s = build(&img(), &o, &Accounts::default(), &all()).unwrap();
        assert_eq!(
            s["process"]["env"],
            json!(["TERM=xterm", "HOSTNAME=box", "PATH=/bin", "A=2", "B=3"])
        );
        assert_eq!(s["process"]["cwd"], "/tmp");
        assert_eq!(s["process"]["terminal"], true);
        assert_eq!(s["root"]["readonly"], true);
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(
            s["linux"]["resources"]["cpu"],
            json!({"quota": 150_000, "period": 100_000})
        );
        assert_eq!(s["linux"]["resources"]["pids"]["limit"], 20);
        assert_eq!(
            s["process"]["args"],
            json!([oci::INIT_PATH, "--", "/entry", "serve", "--x"])
        );
        let init = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == oci::INIT_PATH)
            .unwrap();
        assert_eq!(init["source"], "/usr/bin/tini-static");
    }

    #[test]
    fn privileged_lifts_restrictions() {
        let mut o = opts();
        o.privileged = true;
        let s = build(&img(), &o, &Accounts::default(), &all()).unwrap();
        assert_eq!(
            s["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            oci::CAPABILITIES.len()
        );
        assert!(s["linux"].get("maskedPaths").is_none());
        assert_eq!(
            s["linux"]["resources"]["devices"],
            json!([{"allow": true, "access": "rwm"}])
        );
    }

    #[test]
    fn unknown_capability() {
        let mut o = opts();
        o.cap_add = vec!["NOPE".into()];
        let err = build(&img(), &o, &Accounts::default(), &all()).unwrap_err();
        assert!(matches!(
            &err,
            SpecError::Spec(berth_oci::Error::UnknownCapability(c)) if c == "NOPE"
        ));
        assert_eq!(err.to_string(), "unknown capability: \"NOPE\"");
    }

    #[test]
    fn users_resolve_against_the_rootfs() {
        let acc = accounts();
        let u = |s: &str| resolve_user(s, &acc);
        assert_eq!(
            u("www-data").unwrap(),
            User {
                uid: 33,
                gid: 33,
                additional: vec![33, 50]
            }
        );
        assert_eq!(
            u("1000").unwrap(),
            User {
                uid: 1000,
                gid: 0,
                additional: vec![0]
            }
        );
        assert_eq!(u("33:staff").unwrap().gid, 50);
        assert_eq!(u("1000:7").unwrap().gid, 7);
        assert_eq!(u("").unwrap().uid, 0);
        assert!(matches!(u("nobody"), Err(SpecError::UnknownUser(n)) if n == "nobody"));
        assert!(matches!(u("0:wheel"), Err(SpecError::UnknownGroup(g)) if g == "wheel"));
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("64m").unwrap(), 64 << 20);
        assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
        assert_eq!(parse_memory("100MB").unwrap(), 100 << 20);
        assert_eq!(parse_memory("10485760").unwrap(), 10 << 20);
        assert!(parse_memory("1k").is_err());
        assert!(parse_memory("lots").is_err());
        assert!(parse_cpus("0").is_err());
    }

    /// `value` with its capability lists sorted by number (they are sets).
    fn caps_sorted(mut value: Value) -> Value {
        for set in ["bounding", "effective", "permitted"] {
            if let Some(list) = value["process"]["capabilities"][set].as_array_mut() {
                list.sort_by_key(|c| {
                    oci::CAPABILITIES
                        .iter()
                        .position(|(n, _)| c == n)
                        .unwrap_or(usize::MAX)
                });
            }
        }
        value
    }

    const ID: &str = "3f2c8a9b7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a";

    /// `berth run` of container [`ID`] with `f` applied to its flags.
    fn run(f: impl Fn(&mut Options)) -> Options {
        let mut o = Options {
            id: ID.into(),
            namespace: "default".into(),
            ..Default::default()
        };
        f(&mut o);
        o
    }

    fn busybox() -> ImageConfig {
        ImageConfig::from_image(&json!({"config": {"Env": [oci::DEFAULT_PATH], "Cmd": ["sh"]}}))
    }

    /// Flags about the process, with the name of the spec the CLI wrote for them before
    /// the builder (berth-oci's test data).
    fn process_cases() -> Vec<(&'static str, ImageConfig, Options)> {
        let mut app = img();
        app.user = "www-data".into();
        let no_env = ImageConfig {
            cmd: vec!["/hello".into()],
            ..Default::default()
        };
        vec![
            ("busybox_default", busybox(), run(|_| {})),
            ("image_without_env", no_env, run(|_| {})),
            ("image_user_entrypoint", app.clone(), run(|_| {})),
            (
                "user_workdir_env",
                busybox(),
                run(|o| {
                    o.user = Some("www-data".into());
                    o.workdir = Some("/tmp".into());
                    o.env = vec!["A=1".into(), "PATH=/x".into(), "HOSTNAME=mine".into()];
                    o.args = vec!["id".into()];
                }),
            ),
            (
                "numeric_user",
                busybox(),
                run(|o| o.user = Some("1000:50".into())),
            ),
            (
                "hostname_tty",
                busybox(),
                run(|o| {
                    o.hostname = Some("box".into());
                    o.tty = true;
                }),
            ),
            (
                "init_entrypoint",
                app,
                run(|o| {
                    o.init = Some("/usr/bin/tini-static".into());
                    o.entrypoint = Some("/bin/echo".into());
                    o.args = vec!["hi".into()];
                }),
            ),
        ]
    }

    /// Flags about privileges and limits, as [`process_cases`].
    fn limit_cases() -> Vec<(&'static str, ImageConfig, Options)> {
        let caps = |add: &[&str], drop: &[&str]| {
            let add: Vec<String> = add.iter().map(|c| c.to_string()).collect();
            let drop: Vec<String> = drop.iter().map(|c| c.to_string()).collect();
            run(move |o| {
                o.cap_add = add.clone();
                o.cap_drop = drop.clone();
            })
        };
        vec![
            ("privileged", busybox(), run(|o| o.privileged = true)),
            (
                "cap_add_drop",
                busybox(),
                caps(&["net_admin", "CAP_SYS_TIME"], &["CHOWN", "kill"]),
            ),
            ("cap_drop_all", busybox(), caps(&["chown"], &["ALL"])),
            ("cap_add_all", busybox(), caps(&["ALL"], &["SYS_ADMIN"])),
            ("read_only", busybox(), run(|o| o.read_only = true)),
            (
                "resources",
                busybox(),
                run(|o| {
                    o.memory = Some(parse_memory("64m").unwrap());
                    o.cpus = Some(parse_cpus("1.5").unwrap());
                    o.pids_limit = Some(20);
                }),
            ),
        ]
    }

    /// The same flags still make the same spec (capability lists are sets).
    #[test]
    fn same_specs_as_before_the_builder() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../services/oci/src/spec/testdata"
        );
        for (name, image, o) in process_cases().into_iter().chain(limit_cases()) {
            let text = std::fs::read_to_string(format!("{dir}/{name}.json")).unwrap();
            let want: Value = serde_json::from_str(&text).unwrap();
            let got = build(&image, &o, &accounts(), &all()).unwrap();
            assert_eq!(caps_sorted(got), caps_sorted(want), "{name}");
        }
    }
}
