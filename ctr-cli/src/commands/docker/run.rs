//! `berth create` and `berth run`: a container record with its snapshot and OCI spec, and
//! (for `run`) its task.
//!
//! Output: every task's stdout and stderr go to the container's log file
//! (`file://<log>?format=cri`), so `logs` works with no client attached. A foreground
//! `run` without `-i`/`-t` follows that file while the container runs (the output shows
//! live and stays in `logs` afterwards); with `-i` or `-t` the process talks to this
//! terminal through FIFOs instead, and its output is not in `logs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use berth_proto::containerd::services::containers::v1 as pb;
use berth_proto::containerd::services::images::v1 as ipb;
use berth_proto::containerd::services::introspection::v1 as inpb;
use berth_proto::containerd::services::introspection::v1::introspection_client::IntrospectionClient;
use clap::Args as ClapArgs;
use serde_json::{Value, json};

use crate::client::containers::{
    self, check_name_free, list_all, log_path, name_of, new_id, resolve,
};
use crate::client::docker::{log_stdio, remove, run_attached, start_task};
use crate::client::logs::{Follower, Printer, follow_until_exit};
use crate::client::mounts::{self, Planned};
use crate::client::spec::{self, Accounts, ImageConfig, Options};
use crate::client::{Client, networks, ports, snapshots, status, tasks};
use crate::exit::{Exit, exit_with};
use crate::labels;
use crate::oci;
use crate::oci::normalize;
use berth_oci::restart::{PolicyError, RestartPolicy};

/// Where static init binaries for `--init` are looked for (Debian's `tini` package).
const INIT_CANDIDATES: [&str; 3] = [
    "/usr/bin/tini-static",
    "/usr/bin/docker-init",
    "/usr/libexec/docker/docker-init",
];

/// The flags of `berth create` (and `berth run`).
#[derive(ClapArgs, Debug, Clone)]
pub struct CreateArgs {
    /// Keep stdin open (attach it in the foreground).
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// The container's name (unique in the namespace).
    #[arg(long)]
    pub name: Option<String>,
    /// The runtime (shim) to run it with, from berthd's `runtimes` table.
    #[arg(long, default_value = labels::RUNC_RUNTIME)]
    pub runtime: String,
    /// Environment variables (KEY=VALUE, or KEY to take this shell's value).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Labels of the container (KEY=VALUE, or KEY for an empty value).
    #[arg(short = 'l', long = "label")]
    pub label: Vec<String>,
    /// Read labels from a file of KEY=VALUE lines.
    #[arg(long)]
    pub label_file: Vec<PathBuf>,
    /// Files of environment variables, one KEY=VALUE a line.
    #[arg(long)]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// User (name|uid[:group|gid]).
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Replace the image's entrypoint.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// The container's hostname (default: its short id).
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Every capability, no masked paths, all devices allowed.
    #[arg(long)]
    pub privileged: bool,
    /// Add capabilities (ALL for every one).
    #[arg(long)]
    pub cap_add: Vec<String>,
    /// Drop capabilities (ALL for every one).
    #[arg(long)]
    pub cap_drop: Vec<String>,
    /// Memory limit (e.g. 64m, 1g).
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// CPUs (e.g. 1.5).
    #[arg(long)]
    pub cpus: Option<String>,
    /// Maximum number of processes.
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// Run an init (tini) as PID 1 that forwards signals and reaps zombies.
    #[arg(long)]
    pub init: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Restart policy, enforced by berthd: no, always, on-failure[:max-retries] or
    /// unless-stopped.
    #[arg(long, default_value = "no")]
    pub restart: String,
    /// Connect to networks: bridge (berthd's default bridge network, the default), a
    /// user-defined network (several: repeat the flag), host, none or container:NAME.
    #[arg(long, alias = "net")]
    pub network: Vec<String>,
    /// The container's IPv4 address on its (user-defined) network.
    #[arg(long)]
    pub ip: Option<String>,
    /// Add network-scoped aliases for the container.
    #[arg(long = "network-alias", alias = "net-alias")]
    pub network_alias: Vec<String>,
    /// Publish a container port on the host: [ip:]hostPort:containerPort[/tcp|udp].
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Set custom DNS servers.
    #[arg(long)]
    pub dns: Vec<String>,
    /// Set custom DNS search domains.
    #[arg(long = "dns-search")]
    pub dns_search: Vec<String>,
    /// Set DNS options.
    #[arg(long = "dns-option", alias = "dns-opt")]
    pub dns_option: Vec<String>,
    /// Add a custom host-to-IP mapping (host:ip; ip host-gateway: the network's gateway).
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
    /// The container's NIS domain name.
    #[arg(long)]
    pub domainname: Option<String>,
    /// Add a link to another container (name[:alias]).
    #[arg(long)]
    pub link: Vec<String>,
    /// Pull the image before running: missing (the default), always or never.
    #[arg(long, default_value = "missing")]
    pub pull: String,
    /// Publish every exposed port (the image's EXPOSE and --expose) on a free host port.
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Expose a port or a range of ports (80, 80/udp, 8000-8002).
    #[arg(long)]
    pub expose: Vec<String>,
    /// Mount a volume or a host path: NAME:/path[:ro], /host/path:/path[:ro|rw|z|Z], /path
    /// (a new anonymous volume).
    #[arg(short = 'v', long = "volume")]
    pub volume: Vec<String>,
    /// Mount: type=bind|volume|tmpfs,source=…,target=…[,readonly][,…].
    #[arg(long)]
    pub mount: Vec<String>,
    /// Mount a tmpfs: /path[:size=…,mode=…].
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Mount the volumes of another container: NAME[:ro|rw].
    #[arg(long)]
    pub volumes_from: Vec<String>,
    pub image: String,
    /// The command and its arguments (default: the image's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `berth run`'s flags: create's plus `-d`.
#[derive(ClapArgs, Debug, Clone)]
pub struct RunArgs {
    /// Run in the background and print the container id.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// The key sequence that detaches from `-it` (Docker's format; Ctrl-P Ctrl-Q).
    #[arg(long, default_value = crate::client::attach::DEFAULT_DETACH_KEYS)]
    pub detach_keys: String,
    #[command(flatten)]
    pub create: CreateArgs,
}

/// The image record of `name`: as given, else as Docker would normalize it
/// (`busybox` → `docker.io/library/busybox:latest`).
pub async fn find_image(c: &Client, name: &str) -> anyhow::Result<ipb::Image> {
    // By name (as given, else normalized), else by image ID.
    crate::client::images::find(c, name).await.map_err(|_| {
        Exit::with(
            125,
            format!(
                "Unable to find image '{name}' locally: image {:?} not found (pull it first: berth pull {name})",
                normalize(name)
            ),
        )
    })
}

/// The image a container runs from, pulled first as `--pull` says: `missing` (Docker's
/// default) pulls an image not stored yet, `always` pulls every time, `never` never.
async fn image_to_run(c: &Client, name: &str, pull: &str) -> anyhow::Result<ipb::Image> {
    let fetch = |announce: bool| async move {
        let reference = normalize(name);
        if announce {
            eprintln!(
                "Unable to find image '{}' locally",
                crate::oci::familiar(&reference)
            );
        }
        crate::client::transfer::fetch(c, reference.clone(), None, false, false, true)
            .await
            .map_err(|e| Exit::with(125, format!("Error response from daemon: {e:#}")))?;
        eprintln!(
            "Status: Downloaded newer image for {}",
            crate::oci::familiar(&reference)
        );
        anyhow::Ok(())
    };
    match pull {
        "always" => {
            fetch(false).await?;
            find_image(c, name).await
        }
        "never" => find_image(c, name).await.map_err(|_| {
            Exit::with(
                125,
                format!(
                    "Error response from daemon: No such image: {}",
                    crate::oci::familiar(&normalize(name))
                ),
            )
        }),
        "missing" => match find_image(c, name).await {
            Ok(img) => Ok(img),
            Err(_) => {
                fetch(true).await?;
                find_image(c, name).await
            }
        },
        other => Err(Exit::with(
            125,
            format!(
                "invalid pull option: '{other}': must be one of \"always\", \"missing\" or \"never\""
            ),
        )),
    }
}

/// Docker's name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

const ADJECTIVES: [&str; 16] = [
    "admiring", "brave", "clever", "dazzling", "eager", "focused", "gifted", "happy", "jolly",
    "keen", "lucid", "modest", "nifty", "quirky", "serene", "vibrant",
];
const NAMES: [&str; 16] = [
    "babbage", "curie", "darwin", "euler", "fermat", "gauss", "hopper", "johnson", "kepler",
    "lovelace", "meitner", "noether", "pascal", "ritchie", "thompson", "turing",
];

/// A Docker-like `adjective_surname` not used in `list` (a number appended if need be).
fn generate_name(list: &[pb::Container], id: &str) -> String {
    let taken = |n: &str| {
        list.iter()
            .any(|c| c.labels.get(labels::NAME).is_some_and(|x| x == n))
    };
    let seed = u64::from_str_radix(id.get(..12).unwrap_or("0"), 16).unwrap_or(0);
    let base = format!(
        "{}_{}",
        ADJECTIVES[(seed % 16) as usize],
        NAMES[((seed / 16) % 16) as usize]
    );
    if !taken(&base) {
        return base;
    }
    (2..)
        .map(|i| format!("{base}{i}"))
        .find(|n| !taken(n))
        .unwrap_or(base)
}

/// The environment of `-e` and `--env-file`: `KEY` alone takes this shell's value (and is
/// dropped when unset), as Docker does.
fn user_env(a: &CreateArgs) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut add = |e: &str| {
        if e.contains('=') {
            out.push(e.to_string());
        } else if let Ok(v) = std::env::var(e) {
            out.push(format!("{e}={v}"));
        }
    };
    for f in &a.env_file {
        for line in setting_lines(f, "env file")? {
            add(&line);
        }
    }
    for e in &a.env {
        add(e);
    }
    Ok(out)
}

fn find_init() -> anyhow::Result<String> {
    INIT_CANDIDATES
        .iter()
        .find(|p| Path::new(p).exists())
        .map(|p| p.to_string())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--init: no static init binary found (looked for {}): install Debian's tini package",
                INIT_CANDIDATES.join(", ")
            )
        })
}

/// The directory the log files live in: the `root` export of the runtime plugin
/// (`io.containerd.runtime.v2`/`task`), else `<daemon root>/runtime`, else
/// `/var/lib/berth/runtime`.
async fn log_root(c: &Client) -> PathBuf {
    let plugins = IntrospectionClient::new(c.channel.clone())
        .plugins(c.req(inpb::PluginsRequest::default()))
        .await
        .map(|r| r.into_inner().plugins)
        .unwrap_or_default();
    let export = |kind: &str, id: &str| {
        plugins
            .iter()
            .find(|p| p.r#type == kind && p.id == id)
            .and_then(|p| p.exports.get("root").cloned())
    };
    if let Some(root) = export(labels::RUNTIME_PLUGIN, "task") {
        return PathBuf::from(root);
    }
    if let Some(root) = export(labels::METADATA_PLUGIN, "redb") {
        return Path::new(&root).join("runtime");
    }
    PathBuf::from("/var/lib/berth/runtime")
}

/// Creates the container: snapshot (under a short lease until the record holds it), spec,
/// record. Errors are [`Exit`] 125 (Docker's code for "the container did not start").
pub async fn create(c: &Client, a: &CreateArgs) -> anyhow::Result<pb::Container> {
    create_inner(c, a)
        .await
        .map_err(|e| match e.downcast::<Exit>() {
            Ok(x) => anyhow::Error::new(x),
            Err(e) => Exit::with(125, format!("{e:#}")),
        })
}

/// The snapshotter of the client's namespace: the one its
/// [`labels::DEFAULT_SNAPSHOTTER`] label names, else [`labels::SNAPSHOTTER`].
async fn namespace_snapshotter(c: &Client) -> anyhow::Result<String> {
    use berth_proto::containerd::services::namespaces::v1 as nspb;
    use berth_proto::containerd::services::namespaces::v1::namespaces_client::NamespacesClient;
    let got = NamespacesClient::new(c.channel.clone())
        .get(c.req(nspb::GetNamespaceRequest {
            name: c.namespace.clone(),
        }))
        .await;
    let labelled = match got {
        Ok(r) => r
            .into_inner()
            .namespace
            .and_then(|n| n.labels.get(labels::DEFAULT_SNAPSHOTTER).cloned())
            .filter(|s| !s.is_empty()),
        Err(s) if s.code() == tonic::Code::NotFound => None,
        Err(s) => return Err(s.into()),
    };
    Ok(labelled.unwrap_or_else(|| labels::SNAPSHOTTER.to_string()))
}

/// What `create` works out before it touches anything: the image, the names, the options
/// of the spec (checked), where the log goes.
struct Plan {
    id: String,
    name: String,
    image: String,
    /// The chain ID of the image's top layer: the container's snapshot's parent.
    top: String,
    snapshotter: String,
    img_cfg: ImageConfig,
    opts: Options,
    all_caps: Vec<berth_oci::spec::Capability>,
    log: PathBuf,
    /// The [`labels::NETWORK`] value.
    network: String,
    /// The ports to publish, as berthd takes them ([`labels::PORTS`]).
    ports: Vec<String>,
    /// `--add-host` entries, checked (`name:ip`).
    extra_hosts: Vec<String>,
    /// `--link`s, resolved (`id:name:alias`).
    links: Vec<String>,
    /// The mounts asked for (volumes not made yet).
    mounts: Vec<mounts::Request>,
}

async fn create_inner(c: &Client, a: &CreateArgs) -> anyhow::Result<pb::Container> {
    let mut plan = plan(c, a).await?;
    let planned = mounts::realize(c, &plan.mounts).await?;
    plan.opts.mounts = planned.oci.clone();
    let resource = format!("snapshots/{}", plan.snapshotter);
    let lease = match c
        .create_lease(None, Duration::from_secs(300), &[(&resource, &plan.id)])
        .await
    {
        Ok(l) => l,
        Err(e) => {
            mounts::discard(c, &planned).await;
            return Err(e);
        }
    };
    let made = make(c, a, &plan, &planned, &lease).await;
    if made.is_err() {
        let _ = snapshots::remove(c, &plan.snapshotter, &plan.id).await;
        mounts::discard(c, &planned).await;
    }
    c.end_lease(&lease).await;
    made
}

/// The mounts the flags and the image ask for, checked (nothing made yet).
fn mount_requests(
    a: &CreateArgs,
    img: &ImageConfig,
    list: &[pb::Container],
) -> anyhow::Result<Vec<mounts::Request>> {
    let mut out = Vec::new();
    for spec in &a.volumes_from {
        let (name, mode) = match spec.rsplit_once(':') {
            Some((n, m)) => (n, Some(m)),
            None => (spec.as_str(), None),
        };
        let other = list
            .iter()
            .find(|c| c.id == name || c.labels.get(labels::NAME).is_some_and(|n| n == name))
            .or_else(|| {
                let mut by_prefix = list.iter().filter(|c| c.id.starts_with(name));
                match (by_prefix.next(), by_prefix.next()) {
                    (Some(c), None) => Some(c),
                    _ => None,
                }
            })
            .ok_or_else(|| {
                anyhow::anyhow!("Error response from daemon: No such container: {name}")
            })?;
        out.extend(mounts::volumes_from(other, mode)?);
    }
    for v in &a.volume {
        let r = mounts::parse_volume_flag(v)?;
        // A mount of the same destination given with -v replaces the one --volumes-from
        // gave (as Docker's).
        out.retain(|o: &mounts::Request| o.destination != r.destination);
        out.push(r);
    }
    for m in &a.mount {
        out.push(mounts::parse_mount_flag(m)?);
    }
    for t in &a.tmpfs {
        out.push(mounts::parse_tmpfs_flag(t)?);
    }
    mounts::check_duplicates(&out)?;
    let image = mounts::image_volumes(&img.volumes, &out);
    out.extend(image);
    Ok(out)
}

async fn plan(c: &Client, a: &CreateArgs) -> anyhow::Result<Plan> {
    let img = image_to_run(c, &a.image, &a.pull).await?;
    let resolved = oci::resolve(c, &img.target.clone().unwrap_or_default()).await?;
    let top = resolved
        .chain_ids()
        .last()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("image {} has no layers", img.name))?;
    let img_cfg = ImageConfig::from_image(&resolved.config);
    let snapshotter = namespace_snapshotter(c).await?;

    let list = list_all(c).await?;
    let id = new_id();
    let name = match &a.name {
        Some(n) => {
            let n = n.trim_start_matches('/');
            if !valid_name(n) {
                anyhow::bail!(
                    "Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                );
            }
            check_name_free(&list, n, "")?;
            n.to_string()
        }
        None => generate_name(&list, &id),
    };
    let network = network_label(c, a).await?;
    let ports = published_ports(a, &img_cfg)?;
    let extra_hosts = extra_hosts(a)?;
    let links = links(c, a).await?;
    let opts = options(a, &id, &c.namespace, &network)?;
    restart_policy(a)?;
    let mounts = mount_requests(a, &img_cfg, &list)?;
    // Fail on flags before touching anything.
    let all_caps = spec::host_capabilities();
    spec::build(&img_cfg, &opts, &Accounts::default(), &all_caps).or_else(|e| match e {
        spec::SpecError::UnknownUser(_) | spec::SpecError::UnknownGroup(_) => Ok(Value::Null),
        e => Err(e),
    })?;
    let log = log_root(c)
        .await
        .join(&c.namespace)
        .join(format!("{id}.log"));
    Ok(Plan {
        id,
        name,
        image: img.name,
        top,
        snapshotter,
        img_cfg,
        opts,
        all_caps,
        log,
        network,
        ports,
        extra_hosts,
        links,
        mounts,
    })
}

/// The `--restart` policy, checked as Docker checks it: its format (the CLI's words), its
/// validity (the daemon's), and not together with `--rm`.
fn restart_policy(a: &CreateArgs) -> anyhow::Result<RestartPolicy> {
    let policy: RestartPolicy = a.restart.parse().map_err(|e: PolicyError| {
        if e.is_format() {
            Exit::with(125, e)
        } else {
            Exit::with(125, format!("Error response from daemon: {e}"))
        }
    })?;
    if a.rm && !policy.is_none() {
        return Err(Exit::with(
            125,
            "conflicting options: cannot specify both --restart and --rm",
        ));
    }
    Ok(policy)
}

/// `--add-host name:ip` (or `name=ip`) entries, checked, as `name:ip`.
fn extra_hosts(a: &CreateArgs) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for h in &a.add_host {
        let (name, ip) = h
            .split_once('=')
            .or_else(|| h.split_once(':'))
            .ok_or_else(|| Exit::with(125, format!("bad format for add-host: {h:?}")))?;
        if ip != "host-gateway" && ip.parse::<std::net::IpAddr>().is_err() {
            return Err(Exit::with(
                125,
                format!("invalid IP address in add-host: {ip:?}"),
            ));
        }
        out.push(format!("{name}:{ip}"));
    }
    if a.dns_search
        .iter()
        .chain(&a.dns_option)
        .any(|d| d.contains(','))
    {
        return Err(Exit::with(125, "a DNS search domain or option has a comma"));
    }
    for d in &a.dns {
        if d.parse::<std::net::IpAddr>().is_err() {
            return Err(Exit::with(125, format!("{d} is not an ip address")));
        }
    }
    Ok(out)
}

/// `--link name[:alias]`: the linked containers, as `id:name:alias`.
async fn links(c: &Client, a: &CreateArgs) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for l in &a.link {
        let (name, alias) = l.split_once(':').unwrap_or((l, l));
        let ct = resolve(c, name).await.map_err(|_| {
            Exit::with(
                125,
                format!("Error response from daemon: could not get container for {name}"),
            )
        })?;
        out.push(format!("{}:{}:{alias}", ct.id, name_of(&ct)));
    }
    Ok(out)
}

/// The ports `-p` and `-P` publish, each `ip:host:container/proto` (host 0: any).
fn published_ports(a: &CreateArgs, img: &ImageConfig) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for p in &a.publish {
        out.extend(ports::parse_publish(p)?);
    }
    if a.publish_all {
        let mut exposed = Vec::new();
        for e in img.exposed_ports.iter().chain(&a.expose) {
            exposed.extend(ports::parse_expose(e)?);
        }
        exposed.sort();
        exposed.dedup();
        for (port, proto) in exposed {
            let already = out.iter().any(|o| o.ends_with(&format!(":{port}/{proto}")));
            if !already {
                out.push(format!("0:{port}/{proto}"));
            }
        }
    } else {
        for e in &a.expose {
            ports::parse_expose(e)?;
        }
    }
    Ok(out)
}

/// The networks `--network` names, checked with berthd, as the [`labels::NETWORK`] value:
/// `host`, `none`, `container:<id>`, or networks by commas (`bridge` when none is named).
async fn network_label(c: &Client, a: &CreateArgs) -> anyhow::Result<String> {
    let names: Vec<&str> = if a.network.is_empty() {
        vec!["bridge"]
    } else {
        a.network.iter().map(String::as_str).collect()
    };
    let daemon = |m: String| Exit::with(125, format!("Error response from daemon: {m}"));
    let special = |n: &str| n == "host" || n == "none" || n.starts_with("container:");
    if let [one] = names.as_slice()
        && special(one)
    {
        if a.ip.is_some() || !a.network_alias.is_empty() {
            return Err(daemon(
                "user specified IP address and aliases are supported on user defined networks only"
                    .into(),
            ));
        }
        return match one.strip_prefix("container:") {
            Some(other) => {
                let ct = resolve(c, other)
                    .await
                    .map_err(|e| daemon(format!("{e:#}")))?;
                Ok(format!("container:{}", ct.id))
            }
            None => Ok(one.to_string()),
        };
    }
    if names.iter().any(|n| special(n)) {
        return Err(Exit::with(
            125,
            "conflicting options: cannot attach both user-defined and non-user-defined network-modes",
        ));
    }
    if names[0] == "bridge" {
        if a.ip.is_some() {
            return Err(daemon(
                "user specified IP address is supported on user defined networks only".into(),
            ));
        }
        if !a.network_alias.is_empty() {
            return Err(daemon(
                "network-scoped alias is supported only for containers in user defined networks"
                    .into(),
            ));
        }
    }
    if let Some(ip) = &a.ip
        && ip.parse::<std::net::Ipv4Addr>().is_err()
    {
        return Err(Exit::with(125, format!("invalid IPv4 address: {ip}")));
    }
    for n in &names {
        networks::get(c, n)
            .await
            .map_err(|s| networks::daemon_error(s, 125))?;
    }
    Ok(names.join(","))
}

/// The options of the container's spec, from the flags.
fn options(a: &CreateArgs, id: &str, namespace: &str, network: &str) -> anyhow::Result<Options> {
    let mut opts = Options {
        id: id.to_string(),
        namespace: namespace.to_string(),
        args: a.command.clone(),
        entrypoint: a.entrypoint.clone(),
        env: user_env(a)?,
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        hostname: a.hostname.clone(),
        tty: a.tty,
        read_only: a.read_only,
        privileged: a.privileged,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        memory: a.memory.as_deref().map(spec::parse_memory).transpose()?,
        cpus: a.cpus.as_deref().map(spec::parse_cpus).transpose()?,
        pids_limit: a.pids_limit,
        init: None,
        own_network: network != "host",
        mounts: Vec::new(),
    };
    if a.init {
        opts.init = Some(find_init()?);
    }
    Ok(opts)
}

/// Makes the container's snapshot (under `lease`), its spec and its record.
async fn make(
    c: &Client,
    a: &CreateArgs,
    p: &Plan,
    planned: &Planned,
    lease: &str,
) -> anyhow::Result<pb::Container> {
    snapshots::create(
        c,
        &p.snapshotter,
        snapshots::Create::Active,
        &p.id,
        Some(p.top.clone()),
        Default::default(),
        Some(lease),
    )
    .await
    .map_err(|e| {
        if e.code() == tonic::Code::NotFound {
            anyhow::anyhow!(
                "image {} is not unpacked ({} missing): pull it again",
                p.image,
                p.top
            )
        } else {
            status(e)
        }
    })?;
    let user = a.user.clone().unwrap_or_else(|| p.img_cfg.user.clone());
    let accounts = if user.is_empty() {
        Accounts::default()
    } else {
        spec::read_accounts(c, &p.snapshotter, &p.top, &p.id, lease).await?
    };
    let mut spec = spec::build(&p.img_cfg, &p.opts, &accounts, &p.all_caps)?;
    if let Some(d) = a.domainname.as_deref().filter(|d| !d.is_empty()) {
        spec["domainname"] = json!(d);
    }
    let mut config = docker_config(a, &p.img_cfg, &p.opts, &spec, &p.network);
    add_mounts_config(&mut config, a, planned);
    record(c, a, p, planned, &spec, &config).await
}

/// The lines of an `--env-file` or `--label-file` (`what`), as Docker reads them: blank and
/// `#` lines skipped, leading blanks taken off.
fn setting_lines(path: &Path, what: &str) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("read {what} {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// The labels of `-l` and `--label-file`, as Docker reads them (a file's `#` lines and blank
/// lines skipped; `KEY` alone is an empty value).
fn user_labels(a: &CreateArgs) -> anyhow::Result<BTreeMap<String, String>> {
    let mut lines: Vec<String> = Vec::new();
    for f in &a.label_file {
        lines
            .extend(setting_lines(f, "label file").map_err(|e| Exit::with(125, format!("{e:#}")))?);
    }
    lines.extend(a.label.iter().cloned());
    Ok(lines
        .into_iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l, String::new()),
        })
        .collect())
}

/// Creates the container record: its spec, its names and log path as labels, its
/// docker-level config as an extension.
async fn record(
    c: &Client,
    a: &CreateArgs,
    p: &Plan,
    planned: &Planned,
    spec: &Value,
    config: &Value,
) -> anyhow::Result<pb::Container> {
    let mut record_labels = BTreeMap::from([
        (labels::NAME.to_string(), p.name.clone()),
        (labels::LOG_PATH.to_string(), p.log.display().to_string()),
        (labels::NETWORK.to_string(), p.network.clone()),
    ]);
    // The user's labels; berth's own (`berth/...`) are not theirs to set.
    for (k, v) in user_labels(a)? {
        if k.starts_with("berth/") {
            return Err(Exit::with(
                125,
                format!("label {k:?}: the berth/ prefix is berth's own"),
            ));
        }
        record_labels.insert(k, v);
    }
    if a.interactive {
        let fifo = p.log.with_extension("stdin");
        crate::client::stdio::make_fifo(&fifo)?;
        record_labels.insert(labels::STDIN_PATH.to_string(), fifo.display().to_string());
    }
    if !p.ports.is_empty() && p.network != "host" {
        record_labels.insert(labels::PORTS.to_string(), p.ports.join(","));
    }
    if let Some(ip) = &a.ip {
        record_labels.insert(labels::IP.to_string(), ip.clone());
    }
    for (key, values) in [
        (labels::DNS, &a.dns),
        (labels::DNS_SEARCH, &a.dns_search),
        (labels::DNS_OPTIONS, &a.dns_option),
        (labels::EXTRA_HOSTS, &p.extra_hosts),
        (labels::LINKS, &p.links),
    ] {
        if !values.is_empty() {
            record_labels.insert(key.to_string(), values.join(","));
        }
    }
    if !a.network_alias.is_empty() {
        record_labels.insert(
            labels::NETWORK_ALIASES.to_string(),
            a.network_alias.join(","),
        );
    }
    let policy = restart_policy(a)?;
    if !policy.is_none() {
        record_labels.insert(labels::RESTART.to_string(), policy.to_string());
    }
    if !planned.volumes.is_empty() {
        record_labels.insert(labels::VOLUMES.to_string(), planned.volumes.join(","));
    }
    if !planned.nocopy.is_empty() {
        record_labels.insert(labels::VOLUMES_NOCOPY.to_string(), planned.nocopy.join(","));
    }
    if !planned.anonymous.is_empty() {
        record_labels.insert(
            labels::ANONYMOUS_VOLUMES.to_string(),
            planned.anonymous.join(","),
        );
    }
    let extensions = BTreeMap::from([(
        labels::DOCKER_EXT.to_string(),
        prost_types::Any {
            type_url: labels::DOCKER_EXT_TYPE.to_string(),
            value: serde_json::to_vec(config)?,
        },
    )]);
    Ok(containers::api(c)
        .create(c.req(pb::CreateContainerRequest {
            container: Some(pb::Container {
                id: p.id.clone(),
                labels: record_labels,
                image: p.image.clone(),
                runtime: Some(pb::container::Runtime {
                    name: a.runtime.clone(),
                    options: None,
                }),
                spec: Some(prost_types::Any {
                    type_url: labels::SPEC_TYPE_URL.to_string(),
                    value: serde_json::to_vec(spec)?,
                }),
                snapshotter: p.snapshotter.clone(),
                snapshot_key: p.id.clone(),
                extensions,
                ..Default::default()
            }),
        }))
        .await
        .map_err(status)?
        .into_inner()
        .container
        .unwrap_or_default())
}

/// The docker-level facts kept in the record's [`labels::DOCKER_EXT`] extension.
fn docker_config(
    a: &CreateArgs,
    img: &ImageConfig,
    o: &Options,
    spec: &Value,
    network: &str,
) -> Value {
    let args: Vec<String> = spec["process"]["args"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let (entrypoint, cmd) = match &o.entrypoint {
        Some(e) if e.is_empty() => (Vec::new(), o.args.clone()),
        Some(e) => (vec![e.clone()], o.args.clone()),
        None => (
            img.entrypoint.clone(),
            if o.args.is_empty() {
                img.cmd.clone()
            } else {
                o.args.clone()
            },
        ),
    };
    let path = args.first().cloned().unwrap_or_default();
    json!({
        "Path": path,
        "Args": args.get(1..).unwrap_or_default(),
        "Image": a.image,
        "Config": {
            "Hostname": spec["hostname"],
            "User": o.user.clone().unwrap_or_else(|| img.user.clone()),
            "Tty": a.tty,
            "OpenStdin": a.interactive,
            "Env": spec["process"]["env"],
            "Cmd": cmd,
            "Entrypoint": if entrypoint.is_empty() { Value::Null } else { json!(entrypoint) },
            "Image": a.image,
            "WorkingDir": spec["process"]["cwd"],
            "Labels": user_labels(a).unwrap_or_default(),
            "StopSignal": if img.stop_signal.is_empty() { "SIGTERM" } else { &img.stop_signal },
        },
        "HostConfig": {
            "AutoRemove": a.rm,
            "Privileged": a.privileged,
            "ReadonlyRootfs": a.read_only,
            "CapAdd": a.cap_add,
            "CapDrop": a.cap_drop,
            "Memory": o.memory.unwrap_or(0),
            "NanoCpus": o.cpus.map(|c| (c * 1e9) as i64).unwrap_or(0),
            "PidsLimit": o.pids_limit,
            "Init": a.init,
            "NetworkMode": network.split(',').next().unwrap_or("bridge"),
            "Runtime": labels::RUNC_RUNTIME,
        },
    })
}

/// The mounts in the docker-level config: inspect's `Mounts`, `HostConfig.Binds`,
/// `HostConfig.Mounts` (as given), `HostConfig.Tmpfs`, `HostConfig.VolumesFrom` and
/// `Config.Volumes` (the anonymous volumes' destinations).
fn add_mounts_config(config: &mut Value, a: &CreateArgs, planned: &Planned) {
    config["Mounts"] = json!(planned.docker);
    let binds: Vec<&String> = a.volume.iter().filter(|v| v.contains(':')).collect();
    let tmpfs: serde_json::Map<String, Value> = a
        .tmpfs
        .iter()
        .map(|t| {
            let (dest, opts) = t.split_once(':').unwrap_or((t, ""));
            (dest.to_string(), json!(opts))
        })
        .collect();
    let host = &mut config["HostConfig"];
    host["Binds"] = if binds.is_empty() {
        Value::Null
    } else {
        json!(binds)
    };
    host["Mounts"] = if a.mount.is_empty() {
        Value::Null
    } else {
        json!(a.mount)
    };
    host["Tmpfs"] = if tmpfs.is_empty() {
        Value::Null
    } else {
        Value::Object(tmpfs)
    };
    host["VolumesFrom"] = if a.volumes_from.is_empty() {
        Value::Null
    } else {
        json!(a.volumes_from)
    };
    let anonymous: serde_json::Map<String, Value> = planned
        .docker
        .iter()
        .filter(|m| {
            m["Name"]
                .as_str()
                .is_some_and(|n| planned.anonymous.iter().any(|a| a == n))
        })
        .filter_map(|m| {
            m["Destination"]
                .as_str()
                .map(|d| (d.to_string(), json!({})))
        })
        .collect();
    config["Config"]["Volumes"] = if anonymous.is_empty() {
        Value::Null
    } else {
        Value::Object(anonymous)
    };
}

/// `berth create`: prints the new container's id.
pub async fn create_cmd(c: &Client, a: CreateArgs) -> anyhow::Result<()> {
    let ct = create(c, &a).await?;
    println!("{}", ct.id);
    Ok(())
}

/// `berth run`.
pub async fn run(c: &Client, a: RunArgs) -> anyhow::Result<()> {
    let ct = create(c, &a.create).await?;
    if a.detach {
        // Nobody stays to remove it: berthd does, when its task exits. (A foreground run
        // removes it itself, after it has the exit status.)
        if a.create.rm {
            containers::set_label(c, &ct.id, labels::AUTO_REMOVE, "true").await?;
        }
        if let Err(e) = start_task(c, &ct, log_stdio(&ct), 125).await {
            if a.create.rm {
                let _ = remove(c, &ct, true).await;
                let _ = crate::client::volumes::remove_anonymous(c, &ct).await;
            }
            return Err(e);
        }
        println!("{}", ct.id);
        return Ok(());
    }
    let on_terminal = a.create.interactive
        && a.create.tty
        && std::io::IsTerminal::is_terminal(&std::io::stdin())
        && containers::stdin_path(&ct).is_some();
    let result = if on_terminal {
        // Attached as `attach` is: the detach keys leave it running.
        use crate::client::attach::{self, Ended};
        let keys = attach::parse_detach_keys(&a.detach_keys)?;
        let follower = attach::follower(&ct);
        start_task(c, &ct, log_stdio(&ct), 125).await?;
        let opts = attach::Options {
            stdin: true,
            detach_keys: keys,
            sig_proxy: true,
        };
        match attach::attach(c, &ct, follower, opts).await {
            Ok(Ended::Exited(code)) => Ok(code),
            Ok(Ended::Detached) => {
                // Nobody stays to remove it: berthd does, when it exits.
                if a.create.rm {
                    containers::set_label(c, &ct.id, labels::AUTO_REMOVE, "true").await?;
                }
                return Ok(());
            }
            Err(e) => Err(e),
        }
    } else if a.create.interactive || a.create.tty {
        run_attached(c, &ct, a.create.interactive).await
    } else {
        foreground(c, &ct).await
    };
    if a.create.rm {
        remove(c, &ct, true).await?;
        crate::client::volumes::remove_anonymous(c, &ct).await?;
    }
    exit_with(result?)
}

/// Starts the container with its output in the log file and shows that output until the
/// container exits; returns its exit status.
async fn foreground(c: &Client, ct: &pb::Container) -> anyhow::Result<u32> {
    let log = log_path(ct).unwrap_or_default();
    let follower = Follower::at_end(&log);
    start_task(c, ct, log_stdio(ct), 125).await?;
    let mut printer = Printer::new(false);
    let follow = follow_until_exit(c, &ct.id, follower, &mut printer);
    tokio::pin!(follow);
    // As Docker's sig-proxy: ^C and SIGTERM go to the container, which decides to exit.
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    loop {
        let sig = tokio::select! {
            r = &mut follow => return r,
            Some(()) = int.recv() => 2,
            Some(()) = term.recv() => 15,
        };
        if let Err(e) = tasks::kill(c, &ct.id, "", sig, false).await {
            eprintln!("forward signal {sig} to {}: {}", ct.id, e.message());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_docker() {
        assert_eq!(normalize("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(normalize("me/app:1"), "docker.io/me/app:1");
        assert_eq!(
            normalize("127.0.0.1:5000/busybox"),
            "127.0.0.1:5000/busybox:latest"
        );
        assert_eq!(normalize("localhost/x@sha256:ab"), "localhost/x@sha256:ab");
    }

    #[test]
    fn names() {
        assert!(valid_name("web"));
        assert!(valid_name("a.b-c_1"));
        assert!(!valid_name("w"));
        assert!(!valid_name("-web"));
        assert!(!valid_name("we b"));
        let list = vec![pb::Container {
            id: "x".into(),
            labels: [(labels::NAME.to_string(), "web".to_string())].into(),
            ..Default::default()
        }];
        let n = generate_name(&list, &new_id());
        assert!(n.contains('_'), "{n}");
    }
}
