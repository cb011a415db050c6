//! The names the CLI shares with berthd, containerd and Docker: labels, record extensions,
//! type URLs, runtime and plugin ids. Every such string of the CLI is written here once.
//!
//! A container made by `berth run` / `berth create` is an ordinary containerd container (so
//! `ctr` sees it too) whose id is 64 hex digits and whose docker-level facts live in labels:
//!
//! - [`NAME`]: its name, unique in the namespace (given with `--name`, or generated);
//! - [`LOG_PATH`]: the file its output goes to in the CRI log format, written by the shim
//!   (`file://<path>?format=cri` for both stdout and stderr), read by `berth logs`;
//! - [`STARTED_AT`]: when its task was last started (RFC 3339), for `ps`' "Up 3 minutes"
//! - [`OOM_KILLED`]: set by berthd when the kernel OOM-killed one of its processes
//!   and inspect's `State.StartedAt` (the task API reports no start time; berthd's
//!   supervisor sets it too when it restarts the container);
//! - [`RESTART`] (`--restart`): the restart policy berthd's supervisor enforces;
//! - [`AUTO_REMOVE`] (`run --rm`): berthd itself removes the container (task, record, log
//!   file) when its task exits, so `run -d --rm` needs no client to stay around.
//!
//! The docker-level facts that `inspect` shows and `start`/`stop` need later (the image as
//! the user named it, Path/Args, Config, HostConfig, StopSignal) live in the record's
//! `extensions` map under [`DOCKER_EXT`]: an `Any` whose type URL is [`DOCKER_EXT_TYPE`]
//! and whose value is that JSON object, written once at create.
//!
//! Everything else lives in the record itself (spec, image, snapshot = the container id
//! in overlayfs) or in its task. Once a container exited for good (no restart follows),
//! berthd records the exit on it ([`EXIT_CODE`], [`FINISHED_AT`]) and deletes its task, so
//! no process is kept for it (as with Docker); `ps -a` shows "Exited (N) … ago" from those
//! labels, and the next `start` makes a new task. `rm` deletes record, snapshot and log.

// berth's own container labels. berthd reads AUTO_REMOVE and LOG_PATH too (its
// `autoremove` module defines the same strings): they are a contract with the daemon.

/// The label holding a container's name.
pub const NAME: &str = "berth/name";
/// The label holding the path of a container's log file (CRI log format).
pub const LOG_PATH: &str = "berth/log-path";
/// The FIFO the container's stdin is read from, for a container made with `-i` (Docker's
/// `OpenStdin`): made with the container beside its log, opened by the shim at each start
/// (read and write, so that no client's leaving ends the stream), written by `attach`;
/// removed with the container (berthd's `autoremove` reads it too).
pub const STDIN_PATH: &str = "berth/stdin-path";
/// The label holding when the container's task was last started (RFC 3339, nanoseconds).
pub const STARTED_AT: &str = "berth/started-at";
/// "true" once berthd saw the kernel kill one of the container's processes for want of
/// memory (Docker's `State.OOMKilled`); cleared at the next start.
pub const OOM_KILLED: &str = "berth/oom-killed";
/// The exit status of the container's last run, set by berthd when it retires the exited
/// task (Docker's `State.ExitCode`; berthd's supervisor defines the same string).
pub const EXIT_CODE: &str = "berth/exit-code";
/// When the container's last run ended (RFC 3339), set with [`EXIT_CODE`].
pub const FINISHED_AT: &str = "berth/finished-at";
/// On the intermediate images `build` leaves (one per step, dangling): the step's cache
/// key, what a later build looks its cache up by. `images` shows them with `-a` only.
pub const BUILD_CACHE: &str = "berth/build-cache";
/// Set to "true" on containers that berthd removes when their task exits.
pub const AUTO_REMOVE: &str = "berth/auto-remove";
/// The network a container asks berthd for: `bridge`, `none` or `host` (berthd attaches it
/// at task create: its `network` module reads this label).
pub const NETWORK: &str = "berth/network";
/// The ports a container publishes, `[ip:]host:container[/proto]` by commas (read by
/// berthd's `network` module with [`NETWORK`]).
pub const PORTS: &str = "berth/ports";
/// The address a container asks for on its first network (`--ip`; read by berthd).
pub const IP: &str = "berth/ip";
/// A container's aliases on its first network, by commas (`--network-alias`; read by
/// berthd's name server).
pub const NETWORK_ALIASES: &str = "berth/network-aliases";
/// A container's name servers (`--dns`), by commas (berthd writes its resolv.conf).
pub const DNS: &str = "berth/dns";
/// A container's DNS search domains (`--dns-search`), by commas.
pub const DNS_SEARCH: &str = "berth/dns-search";
/// A container's resolver options (`--dns-option`), by commas.
pub const DNS_OPTIONS: &str = "berth/dns-options";
/// A container's extra `/etc/hosts` lines (`--add-host`), `name:ip` by commas.
pub const EXTRA_HOSTS: &str = "berth/extra-hosts";
/// A container's links (`--link`), `id:name:alias` by commas.
pub const LINKS: &str = "berth/links";
/// The container's restart policy (`always`, `on-failure:3`...), enforced by berthd's
/// supervisor (which reads the same constant).
pub use berth_oci::restart::RESTART_LABEL as RESTART;
/// The volumes a container mounts (named and anonymous), by commas: berthd's `volumes`
/// module counts them in use while the container exists, and fills new ones from the
/// image at task create (copy-up).
pub const VOLUMES: &str = "berth/volumes";
/// The anonymous volumes made for a container, by commas: removed with it by `rm -v` and
/// `run --rm` (berthd's auto-remove too).
pub const ANONYMOUS_VOLUMES: &str = "berth/anonymous-volumes";
/// The destinations of volume mounts that asked for no copy-up (`nocopy`), by commas
/// (read by berthd's `volumes` module with [`VOLUMES`]).
pub const VOLUMES_NOCOPY: &str = "berth/volumes-nocopy";
/// The extension holding the container's docker-level config (see the module docs).
pub const DOCKER_EXT: &str = "berth/docker";
/// The type URL of [`DOCKER_EXT`]'s value (JSON).
pub const DOCKER_EXT_TYPE: &str = "types.berth.dev/docker/v1/Container";

// containerd's labels.

/// The container label holding an image's stop signal.
pub const STOP_SIGNAL: &str = "io.containerd.image.config.stop-signal";
/// The namespace label that names its default snapshotter (as containerd's client reads it).
pub const DEFAULT_SNAPSHOTTER: &str = "containerd.io/defaults/snapshotter";
/// When a lease expires (RFC 3339).
pub const GC_EXPIRE: &str = "containerd.io/gc.expire";
/// Keeps an object from the garbage collector (the snapshotter crate's constant).
pub use berth_snapshotter::GC_ROOT_LABEL as GC_ROOT;

// gRPC metadata headers.

/// The header carrying the namespace of a request.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";
/// The header carrying the lease a request works under.
pub const LEASE_HEADER: &str = "containerd-lease";

// Type URLs of `Any` values.

/// An OCI runtime spec stored as JSON (a container's spec).
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// An OCI process spec stored as JSON (an exec's spec).
pub const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
/// A task's cgroup v1 metrics.
pub const CGROUPS_V1_METRICS: &str = "io.containerd.cgroups.v1.Metrics";
/// A task's cgroup v2 metrics.
pub const CGROUPS_V2_METRICS: &str = "io.containerd.cgroups.v2.Metrics";

// Runtimes, snapshotters and plugins.

/// The runtime (shim) containers run with unless told otherwise.
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
/// The snapshotter containers are made on, unless their namespace names another.
pub const SNAPSHOTTER: &str = "overlayfs";
/// The plugin type of the task runtime (its `root` export is the log directory's parent).
pub const RUNTIME_PLUGIN: &str = "io.containerd.runtime.v2";
/// The plugin type of the metadata store (its `root` export is the daemon's root).
pub const METADATA_PLUGIN: &str = "io.containerd.metadata.v1";
