//! The OCI runtime spec (`config.json`) of a container: a pure function of plain inputs
//! ([`ContainerConfig`]) to `oci_spec`'s typed [`Spec`], for the `berth` CLI and the daemon
//! alike. The caller does everything that needs the host or the rootfs (the host's
//! capability mask, user names resolved to ids, devices' numbers) and passes the results.
//!
//! The base is what containerd's `oci.WithDefaultSpec` + `WithImageConfig` produce: the
//! default mounts, capabilities, masked and read-only paths, `RLIMIT_NOFILE` 1024, the
//! pid/ipc/uts/mount namespaces, the image's Env (or a default `PATH`), its Entrypoint and
//! Cmd and its WorkingDir; with Docker's differences: `noNewPrivileges` is false unless
//! asked for, `/sys/fs/cgroup` is mounted read-only, and `HOSTNAME` (and `TERM` with a
//! terminal) is set unless the environment has it. `privileged` grants every host
//! capability, mounts sysfs and cgroupfs read-write, allows every device and drops the
//! masked and read-only paths.
//!
//! Only what is given is written: no field comes from `oci_spec`'s own defaults (its
//! `Default` impls carry youki's choices, e.g. hostname `youki`). Capabilities are sets in
//! `oci_spec`; [`to_value`] writes them in capability-number order so equal specs encode
//! equally.

mod caps;
mod linux;
mod process;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use oci_spec::OciSpecError;
pub use oci_spec::runtime::{Capability, LinuxDeviceType, LinuxNamespaceType, Spec};
use oci_spec::runtime::{RootBuilder, SpecBuilder};
use serde_json::Value;

use crate::Error;

pub use caps::{
    CAPABILITIES, DEFAULT_CAPABILITIES, bounding_set, capabilities, capabilities_from_mask,
    capability_name, capability_number,
};
pub use linux::{default_mounts, default_namespaces};
pub use process::{command, merge_env};

/// The runtime spec version written.
pub const OCI_VERSION: &str = "1.0.2-dev";

/// `PATH` when the image sets no environment.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where [`ContainerConfig::init`] puts the init binary inside the container (Docker's path).
pub const INIT_PATH: &str = "/sbin/docker-init";

/// The rootfs directory, relative to the bundle.
pub const ROOTFS: &str = "rootfs";

/// `oci_spec` builder errors, named by the part of the spec being built.
fn oci(part: &'static str) -> impl FnOnce(OciSpecError) -> Error {
    move |source| Error::InvalidSpec { part, source }
}

/// The parts of an image's config (`config` in its JSON) a container runs from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
}

impl From<&oci_spec::image::Config> for ImageConfig {
    fn from(c: &oci_spec::image::Config) -> ImageConfig {
        ImageConfig {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().unwrap_or_default(),
        }
    }
}

/// The process' credentials, as ids (resolving names is the caller's job: it needs the
/// rootfs). `additional_gids` is written only when not empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// A mount, added after the default ones; it replaces a default mount at the same
/// destination.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mount {
    pub destination: String,
    /// `bind`, `tmpfs`, ...
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// A resource limit; it replaces the default (or an earlier) limit of the same kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rlimit {
    /// `nofile` or `RLIMIT_NOFILE` (any case).
    pub kind: String,
    pub soft: u64,
    pub hard: u64,
}

/// A namespace the container gets: a new one, or the one at `path` joined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub kind: LinuxNamespaceType,
    pub path: Option<String>,
}

/// cgroup limits; `None` leaves a limit unset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// Bytes.
    pub memory_limit: Option<i64>,
    pub cpu_shares: Option<u64>,
    /// Microseconds per `cpu_period`.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub pids_limit: Option<i64>,
}

/// A device node created in the container and allowed by the device cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// Its path inside the container.
    pub path: String,
    pub kind: LinuxDeviceType,
    pub major: i64,
    pub minor: i64,
    pub file_mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// The cgroup permissions, e.g. `rwm`.
    pub access: String,
}

/// Everything a container's spec is made from. `Default` is a container of `image` with
/// nothing overridden.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerConfig {
    pub image: ImageConfig,
    /// Replaces the image's Entrypoint and drops its Cmd; an empty list clears both.
    pub entrypoint: Option<Vec<String>>,
    /// Replace the image's Cmd when not empty.
    pub args: Vec<String>,
    /// The host path of an init binary, bind-mounted read-only at [`INIT_PATH`] and run as
    /// `INIT_PATH -- <command>`.
    pub init: Option<String>,
    /// `KEY=VALUE` entries replacing the image's entry of the same key, or appended.
    pub env: Vec<String>,
    /// Overrides the image's WorkingDir when not empty; `/` when both are empty.
    pub cwd: Option<String>,
    pub user: User,
    pub terminal: bool,
    pub hostname: Option<String>,
    pub readonly_rootfs: bool,
    pub privileged: bool,
    pub no_new_privileges: bool,
    /// Capability names (`NET_ADMIN`, `cap_net_admin`, `ALL`).
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// Every capability the host can grant (what `privileged` and `ALL` mean).
    pub host_capabilities: Vec<Capability>,
    pub mounts: Vec<Mount>,
    pub rlimits: Vec<Rlimit>,
    /// `None`: [`default_namespaces`].
    pub namespaces: Option<Vec<Namespace>>,
    pub resources: Resources,
    pub devices: Vec<Device>,
    pub sysctls: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub cgroups_path: Option<String>,
    /// `None`: containerd's masked paths, none when privileged.
    pub masked_paths: Option<Vec<String>>,
    /// `None`: containerd's read-only paths, none when privileged.
    pub readonly_paths: Option<Vec<String>>,
}

/// The runtime spec of the container `c` describes.
pub fn build(c: &ContainerConfig) -> Result<Spec, Error> {
    let root = RootBuilder::default()
        .path(ROOTFS)
        .readonly(c.readonly_rootfs)
        .build()
        .map_err(oci("root"))?;
    let mut spec = SpecBuilder::default()
        .version(OCI_VERSION)
        .root(root)
        .mounts(linux::mounts(c)?)
        .process(process::process(c)?)
        .linux(linux::linux(c)?)
        .build()
        .map_err(oci("spec"))?;
    // Unset fields of a built Spec come from oci_spec's Default (hostname "youki", empty
    // annotations): say what they are.
    spec.set_hostname(c.hostname.clone());
    spec.set_domainname(None);
    spec.set_hooks(None);
    spec.set_annotations(non_empty_map(&c.annotations));
    Ok(spec)
}

/// `spec` as JSON, capability sets in capability-number order.
pub fn to_value(spec: &Spec) -> Result<Value, Error> {
    let mut v = serde_json::to_value(spec).map_err(Error::EncodeSpec)?;
    if let Some(caps) = v
        .pointer_mut("/process/capabilities")
        .and_then(Value::as_object_mut)
    {
        for set in caps.values_mut() {
            if let Some(list) = set.as_array_mut() {
                list.sort_by_key(|c| {
                    c.as_str().map_or(usize::MAX, |n| {
                        CAPABILITIES
                            .iter()
                            .position(|(name, _)| *name == n)
                            .unwrap_or(usize::MAX)
                    })
                });
            }
        }
    }
    Ok(v)
}

/// `map` as `oci_spec` wants it, absent when empty.
fn non_empty_map(
    map: &BTreeMap<String, String>,
) -> Option<std::collections::HashMap<String, String>> {
    (!map.is_empty()).then(|| map.clone().into_iter().collect())
}
