//! Seccomp for the pods' containers: `RuntimeDefault` is berth's own default profile,
//! `Localhost` a profile file on the host, `Unconfined` none (and none when privileged).
//!
//! berth's default profile allows every system call but the ones Docker's default profile
//! keeps from unprivileged containers whatever their capabilities: kernel modules and
//! kexec, new namespaces (`unshare`, `setns`, `clone3`), mounting and pivoting, keyrings,
//! BPF and perf, process memory access across processes and `ptrace`, clock and swap
//! changes, reboot, `userfaultfd` and the obsolete calls. They fail with EPERM.

use berth_proto::runtime::v1 as cri;
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// The calls berth's default profile refuses.
const BLOCKED: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "sysfs",
    "_sysctl",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
];

/// berth's default profile (the OCI spec's `linux.seccomp`).
pub fn default_profile() -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "syscalls": [{
            "names": BLOCKED,
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 1,
        }],
    })
}

/// The profile a container's security context asks for (None: unconfined). Older
/// kubelets still send the deprecated `seccomp_profile_path`: it is read when `seccomp`
/// is not set.
#[allow(deprecated)]
pub fn profile_for(sc: &cri::LinuxContainerSecurityContext) -> Result<Option<Value>> {
    if sc.privileged {
        return Ok(None);
    }
    use cri::security_profile::ProfileType;
    let (kind, localhost) = match &sc.seccomp {
        Some(p) => (
            ProfileType::try_from(p.profile_type).ok(),
            p.localhost_ref.clone(),
        ),
        // The older string form: runtime/default, docker/default, unconfined,
        // localhost/<path>; empty is unconfined (as containerd 1.6).
        None => match sc.seccomp_profile_path.as_str() {
            "" | "unconfined" => (Some(ProfileType::Unconfined), String::new()),
            "runtime/default" | "docker/default" => {
                (Some(ProfileType::RuntimeDefault), String::new())
            }
            p => match p.strip_prefix("localhost/") {
                Some(path) => (Some(ProfileType::Localhost), path.to_string()),
                None => {
                    return Err(Error::invalid(format!("unsupported seccomp profile {p:?}")));
                }
            },
        },
    };
    match kind {
        Some(ProfileType::Unconfined) => Ok(None),
        Some(ProfileType::RuntimeDefault) => Ok(Some(default_profile())),
        Some(ProfileType::Localhost) => {
            let text = std::fs::read_to_string(&localhost).map_err(|e| {
                Error::invalid(format!("failed to load seccomp profile {localhost:?}: {e}"))
            })?;
            let v: Value = serde_json::from_str(&text).map_err(|e| {
                Error::invalid(format!("failed to load seccomp profile {localhost:?}: {e}"))
            })?;
            Ok(Some(v))
        }
        None => Err(Error::invalid("unknown seccomp profile type")),
    }
}
