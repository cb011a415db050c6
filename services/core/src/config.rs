//! berthd's configuration: embedded defaults, then a TOML file, then flags.
//!
//! `berthd config default` prints [`Config::default`] as TOML; `deploy/config.toml` is that
//! output (a unit test keeps the two equal), so the daemon runs the same with or without it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where the daemon looks for its config file when `--config` is not given. A missing file
/// at this default path is not an error: the embedded defaults apply.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/berth/config.toml";

/// The whole daemon configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Config format version; only 1 exists.
    pub version: u32,
    /// Persistent state: metadata database, content, snapshots.
    pub root: PathBuf,
    /// Runtime state: sockets, task bundles. Lost at reboot.
    pub state: PathBuf,
    pub grpc: GrpcConfig,
    pub log: LogConfig,
    /// Snapshotter used when a request names none.
    pub default_snapshotter: String,
    /// Runtime used when a container names none.
    pub default_runtime: String,
    /// Runtime name (as in `Container.runtime.name`) → how to run it.
    pub runtimes: BTreeMap<String, RuntimeConfig>,
    pub registry: RegistryConfig,
    pub content: ContentConfig,
    pub network: NetworkConfig,
    pub cri: CriConfig,
}

/// Kubernetes' CRI (`runtime.v1`) on the daemon's socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CriConfig {
    /// Serve the CRI RuntimeService and ImageService.
    pub enable: bool,
    /// The image of pod sandboxes' init process; empty: berth's own pause, built in (no
    /// image to pull).
    pub sandbox_image: String,
    /// The CNI network configurations of pods (the first `*.conflist`/`*.conf` by name).
    pub cni_conf_dir: PathBuf,
    /// Where the CNI plugins are; empty: `network.cni_bin_dirs`.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// The streaming server's (exec, attach, port-forward) address and port (0: any free).
    pub stream_address: String,
    pub stream_port: u16,
    /// A container's log line longer than this is split into partial records.
    pub max_container_log_line_size: usize,
    /// The runtime of pods whose RuntimeHandler is empty; empty: `default_runtime`.
    pub default_runtime: String,
}

impl Default for CriConfig {
    fn default() -> Self {
        CriConfig {
            enable: true,
            sandbox_image: String::new(),
            cni_conf_dir: PathBuf::from("/etc/cni/net.d"),
            cni_bin_dirs: Vec::new(),
            stream_address: "127.0.0.1".to_string(),
            stream_port: 0,
            max_container_log_line_size: 16 * 1024,
            default_runtime: String::new(),
        }
    }
}

/// Container networking through CNI plugins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Where the CNI plugin binaries are, searched in order.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// The default bridge network's interface on the host.
    pub bridge: String,
    /// The default bridge network's IPv4 subnet; empty: the first of Docker's default pools
    /// (172.17.0.0/16, 172.18.0.0/16, ...) that overlaps no network the host routes to.
    pub subnet: String,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            cni_bin_dirs: vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")],
            bridge: "berth0".to_string(),
            subnet: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContentConfig {
    /// How long an abandoned ingest is kept: one no lease holds, untouched for this long, is
    /// removed; a failed pull keeps its lease (ingests and fetched blobs, for a resumed
    /// pull) this long. A duration such as "1h" or "90s".
    pub ingest_expiry: String,
}

impl ContentConfig {
    /// [`ContentConfig::ingest_expiry`] as a duration.
    pub fn ingest_expiry(&self) -> Result<std::time::Duration> {
        humantime::parse_duration(&self.ingest_expiry).map_err(|e| {
            Error::invalid(format!(
                "config content.ingest_expiry {:?} is not a duration (e.g. \"1h\"): {e}",
                self.ingest_expiry
            ))
        })
    }
}

impl Default for ContentConfig {
    fn default() -> Self {
        ContentConfig {
            ingest_expiry: "1h".to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// The gRPC unix socket; ttrpc is served on `<address>.ttrpc`.
    pub address: PathBuf,
    /// Owner of the socket files (they are created mode 0660).
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// trace, debug, info, warn or error (or any `tracing` env-filter directive). A bare
    /// `debug` or `trace` is berth's own: the wire stacks underneath (HTTP/2, gRPC, ttrpc)
    /// stay at `info`, as containerd's `--log-level debug` leaves grpc-go's frames out; a
    /// directive names them to see them (`debug,h2=debug`).
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// The shim binary (name on `PATH` or absolute path) that implements this runtime.
    pub shim: String,
    /// The OCI runtime binary the shim drives.
    pub runtime: String,
    /// The OCI runtime's `--root`; unset for `<state>/runc` (one runc state per daemon).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_root: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// A directory of `<host>/hosts.toml` files, in containerd's format.
    pub config_path: PathBuf,
    /// Mirrors of Docker Hub, tried in order before it (Docker's `registry-mirrors`), when
    /// no hosts file configures `docker.io`: `https://mirror.example` or `http://host:port`.
    pub mirrors: Vec<String>,
    /// Registries reached without verifying TLS, over plain HTTP when HTTPS fails (Docker's
    /// `insecure-registries`): `host[:port]` or a CIDR range (`10.0.0.0/8`). Loopback
    /// registries always are.
    pub insecure_registries: Vec<String>,
}

/// The file name of berth's shim binary, the default runtime's shim.
pub const BERTH_SHIM: &str = "containerd-shim-berth-v2";

impl Default for Config {
    fn default() -> Self {
        let mut runtimes = BTreeMap::new();
        runtimes.insert(
            "io.containerd.runc.v2".to_string(),
            RuntimeConfig {
                shim: BERTH_SHIM.to_string(),
                runtime: "runc".to_string(),
                runtime_root: None,
            },
        );
        Config {
            version: 1,
            root: PathBuf::from("/var/lib/berth"),
            state: PathBuf::from("/run/berth"),
            grpc: GrpcConfig::default(),
            log: LogConfig::default(),
            default_snapshotter: "overlayfs".to_string(),
            default_runtime: "io.containerd.runc.v2".to_string(),
            runtimes,
            registry: RegistryConfig::default(),
            content: ContentConfig::default(),
            network: NetworkConfig::default(),
            cri: CriConfig::default(),
        }
    }
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            address: PathBuf::from("/run/berth/berth.sock"),
            uid: 0,
            gid: 0,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
            format: LogFormat::Text,
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            shim: BERTH_SHIM.to_string(),
            runtime: "runc".to_string(),
            runtime_root: None,
        }
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            config_path: PathBuf::from("/etc/berth/certs.d"),
            mirrors: Vec::new(),
            insecure_registries: Vec::new(),
        }
    }
}

/// Flags that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub root: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub address: Option<PathBuf>,
    pub log_level: Option<String>,
    pub log_format: Option<LogFormat>,
}

/// The crates of the wire underneath berth: a frame or a poll per line at `debug`.
const WIRE_CRATES: &[&str] = &[
    "h2",
    "hyper",
    "hyper_util",
    "loona_hpack",
    "tonic",
    "tower",
    "ttrpc",
    "mio",
    "want",
];

impl LogConfig {
    /// The `tracing` env-filter directives for `level`: a bare `debug` or `trace` keeps the
    /// wire crates at `info` (each 16 KiB HTTP/2 frame of a layer write would otherwise be
    /// two log lines); any other level or directive is taken as written.
    pub fn filter(&self) -> String {
        let level = self.level.trim();
        if level.eq_ignore_ascii_case("debug") || level.eq_ignore_ascii_case("trace") {
            let mut filter = level.to_ascii_lowercase();
            for c in WIRE_CRATES {
                filter.push_str(&format!(",{c}=info"));
            }
            filter
        } else {
            self.level.clone()
        }
    }
}

impl Config {
    /// Parses a TOML document over the defaults.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config> {
        toml::from_str(text).map_err(|e| {
            Error::invalid(format!("config file {}: {}", origin.display(), e.message()))
        })
    }

    /// Loads the configuration: defaults, then `path` (if given it must exist; the default
    /// path may be absent), then the flags. The result is validated.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config> {
        let mut config = match path {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|e| Error::io("read config file", p, e))?;
                Config::from_toml(&text, p)?
            }
            None => {
                let p = Path::new(DEFAULT_CONFIG_PATH);
                match std::fs::read_to_string(p) {
                    Ok(text) => Config::from_toml(&text, p)?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
                    Err(e) => return Err(Error::io("read config file", p, e)),
                }
            }
        };
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    /// Applies command-line flags over the file's values.
    pub fn apply(&mut self, o: &Overrides) {
        if let Some(root) = &o.root {
            self.root = root.clone();
        }
        if let Some(state) = &o.state {
            self.state = state.clone();
        }
        if let Some(address) = &o.address {
            self.grpc.address = address.clone();
        }
        if let Some(level) = &o.log_level {
            self.log.level = level.clone();
        }
        if let Some(format) = o.log_format {
            self.log.format = format;
        }
    }

    /// Checks what can be checked before anything is started.
    pub fn validate(&self) -> Result<()> {
        if self.version != 1 {
            return Err(Error::invalid(format!(
                "config version {} is not supported (only 1)",
                self.version
            )));
        }
        for (name, path) in [
            ("root", &self.root),
            ("state", &self.state),
            ("grpc.address", &self.grpc.address),
        ] {
            if !path.is_absolute() {
                return Err(Error::invalid(format!(
                    "config {name} must be an absolute path, got {:?}",
                    path.display().to_string()
                )));
            }
        }
        if self.root == self.state {
            return Err(Error::invalid(
                "config root and state must be different directories",
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(self.log.filter()).is_err() {
            return Err(Error::invalid(format!(
                "config log.level {:?} is not a valid level (trace, debug, info, warn, error)",
                self.log.level
            )));
        }
        if !self.runtimes.contains_key(&self.default_runtime) {
            return Err(Error::invalid(format!(
                "config default_runtime {:?} has no entry in [runtimes]",
                self.default_runtime
            )));
        }
        for (name, rt) in &self.runtimes {
            if rt.shim.is_empty() {
                return Err(Error::invalid(format!(
                    "config runtimes.{name:?}.shim must be set"
                )));
            }
        }
        if self.default_snapshotter.is_empty() {
            return Err(Error::invalid("config default_snapshotter must be set"));
        }
        self.content.ingest_expiry()?;
        Ok(())
    }

    /// The ttrpc socket, served next to the gRPC one.
    pub fn ttrpc_address(&self) -> PathBuf {
        let mut s = self.grpc.address.clone().into_os_string();
        s.push(".ttrpc");
        PathBuf::from(s)
    }

    /// The defaults as a TOML document (what `berthd config default` prints).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::Internal(format!("render config: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_toml() {
        let text = Config::default().to_toml().expect("render");
        let parsed = Config::from_toml(&text, Path::new("x")).expect("parse");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn a_bare_debug_level_leaves_the_wire_crates_at_info() {
        let filter = |level: &str| {
            LogConfig {
                level: level.into(),
                ..LogConfig::default()
            }
            .filter()
        };
        for level in ["debug", "TRACE", " debug "] {
            let f = filter(level);
            assert!(f.starts_with(&level.trim().to_ascii_lowercase()), "{f}");
            for c in ["h2=info", "hyper=info", "tonic=info", "ttrpc=info"] {
                assert!(f.split(',').any(|d| d == c), "{c} missing from {f}");
            }
            assert!(tracing_subscriber::EnvFilter::try_new(&f).is_ok(), "{f}");
        }
        // Quieter levels and directives are taken as written: nothing is raised to info.
        for level in [
            "info",
            "warn",
            "error",
            "debug,h2=debug",
            "berth_core=trace",
        ] {
            assert_eq!(filter(level), level);
        }
    }

    #[test]
    fn deploy_config_is_the_default() {
        let deployed = include_str!("../../../deploy/config.toml");
        let parsed = Config::from_toml(deployed, Path::new("deploy/config.toml")).expect("parse");
        assert_eq!(
            parsed,
            Config::default(),
            "deploy/config.toml drifted from the defaults"
        );
    }

    #[test]
    fn empty_file_is_defaults_and_partial_file_overrides() {
        assert_eq!(
            Config::from_toml("", Path::new("x")).expect("parse"),
            Config::default()
        );
        let c = Config::from_toml(
            "root = \"/tmp/r\"\n[log]\nlevel = \"debug\"\n",
            Path::new("x"),
        )
        .expect("parse");
        assert_eq!(c.root, PathBuf::from("/tmp/r"));
        assert_eq!(c.log.level, "debug");
        assert_eq!(c.state, PathBuf::from("/run/berth"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        let err = Config::from_toml("rooot = \"/x\"", Path::new("/etc/c.toml")).unwrap_err();
        assert!(err.to_string().contains("/etc/c.toml"), "{err}");
        assert!(err.to_string().contains("rooot"), "{err}");
        let c = Config {
            root: PathBuf::from("relative"),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("absolute"));
        let c = Config {
            default_runtime: "nope".into(),
            ..Default::default()
        };
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.log.level = "berth=notalevel".into();
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.content.ingest_expiry = "soon".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("content.ingest_expiry"), "{err}");
    }

    #[test]
    fn flags_override_file() {
        let mut c = Config::default();
        c.apply(&Overrides {
            root: Some("/a".into()),
            address: Some("/b/s.sock".into()),
            ..Default::default()
        });
        assert_eq!(c.root, PathBuf::from("/a"));
        assert_eq!(c.ttrpc_address(), PathBuf::from("/b/s.sock.ttrpc"));
    }
}
