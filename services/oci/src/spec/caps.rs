//! Linux capabilities: their names and numbers, the default set, and the set a container
//! gets from `privileged`, `cap_add` and `cap_drop` (Docker's and the CRI's rule).

use oci_spec::runtime::Capability;

use super::Error;

/// Every Linux capability, by number (bit `i` of a `CapBnd` mask is `CAPABILITIES[i]`).
pub const CAPABILITIES: [(&str, Capability); 41] = [
    ("CAP_CHOWN", Capability::Chown),
    ("CAP_DAC_OVERRIDE", Capability::DacOverride),
    ("CAP_DAC_READ_SEARCH", Capability::DacReadSearch),
    ("CAP_FOWNER", Capability::Fowner),
    ("CAP_FSETID", Capability::Fsetid),
    ("CAP_KILL", Capability::Kill),
    ("CAP_SETGID", Capability::Setgid),
    ("CAP_SETUID", Capability::Setuid),
    ("CAP_SETPCAP", Capability::Setpcap),
    ("CAP_LINUX_IMMUTABLE", Capability::LinuxImmutable),
    ("CAP_NET_BIND_SERVICE", Capability::NetBindService),
    ("CAP_NET_BROADCAST", Capability::NetBroadcast),
    ("CAP_NET_ADMIN", Capability::NetAdmin),
    ("CAP_NET_RAW", Capability::NetRaw),
    ("CAP_IPC_LOCK", Capability::IpcLock),
    ("CAP_IPC_OWNER", Capability::IpcOwner),
    ("CAP_SYS_MODULE", Capability::SysModule),
    ("CAP_SYS_RAWIO", Capability::SysRawio),
    ("CAP_SYS_CHROOT", Capability::SysChroot),
    ("CAP_SYS_PTRACE", Capability::SysPtrace),
    ("CAP_SYS_PACCT", Capability::SysPacct),
    ("CAP_SYS_ADMIN", Capability::SysAdmin),
    ("CAP_SYS_BOOT", Capability::SysBoot),
    ("CAP_SYS_NICE", Capability::SysNice),
    ("CAP_SYS_RESOURCE", Capability::SysResource),
    ("CAP_SYS_TIME", Capability::SysTime),
    ("CAP_SYS_TTY_CONFIG", Capability::SysTtyConfig),
    ("CAP_MKNOD", Capability::Mknod),
    ("CAP_LEASE", Capability::Lease),
    ("CAP_AUDIT_WRITE", Capability::AuditWrite),
    ("CAP_AUDIT_CONTROL", Capability::AuditControl),
    ("CAP_SETFCAP", Capability::Setfcap),
    ("CAP_MAC_OVERRIDE", Capability::MacOverride),
    ("CAP_MAC_ADMIN", Capability::MacAdmin),
    ("CAP_SYSLOG", Capability::Syslog),
    ("CAP_WAKE_ALARM", Capability::WakeAlarm),
    ("CAP_BLOCK_SUSPEND", Capability::BlockSuspend),
    ("CAP_AUDIT_READ", Capability::AuditRead),
    ("CAP_PERFMON", Capability::Perfmon),
    ("CAP_BPF", Capability::Bpf),
    ("CAP_CHECKPOINT_RESTORE", Capability::CheckpointRestore),
];

/// containerd's (and Docker's) default capability set.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// The capabilities whose bits are set in `mask` (a `CapBnd`/`CapEff` value), by number.
pub fn capabilities_from_mask(mask: u64) -> Vec<Capability> {
    CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1u64 << i) != 0)
        .map(|(_, (_, c))| *c)
        .collect()
}

/// The bounding set a `/proc/<pid>/status` text names (`CapBnd:`); every capability when
/// it names none. The caller reads the file (this crate reads no host state).
pub fn bounding_set(status: &str) -> Vec<Capability> {
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(u64::MAX);
    capabilities_from_mask(mask)
}

/// The number of `cap` (its bit in a capability mask).
pub fn capability_number(cap: Capability) -> usize {
    CAPABILITIES
        .iter()
        .position(|(_, c)| *c == cap)
        .unwrap_or(CAPABILITIES.len())
}

/// `CAP_X` for `cap`.
pub fn capability_name(cap: Capability) -> &'static str {
    CAPABILITIES
        .iter()
        .find(|(_, c)| *c == cap)
        .map_or("", |(n, _)| n)
}

/// What a `cap_add`/`cap_drop` entry names: every capability, or one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Named {
    All,
    One(Capability),
}

/// `x`, `X`, `CAP_X` or `cap_x`; `all` in any case means every capability.
fn parse_named(name: &str) -> Result<Named, Error> {
    let up = name.to_ascii_uppercase();
    if up == "ALL" {
        return Ok(Named::All);
    }
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    CAPABILITIES
        .iter()
        .find(|(n, _)| *n == full)
        .map(|(_, c)| Named::One(*c))
        .ok_or_else(|| Error::UnknownCapability(name.to_string()))
}

/// The capability set after `privileged`, `add` and `drop`, as Docker and the CRI compute
/// it: privileged gets `host` (every capability the host can grant); otherwise
/// [`DEFAULT_CAPABILITIES`] without `drop`, then `add`; `ALL` in `add` starts from `host`
/// instead, `ALL` in `drop` from nothing.
pub fn capabilities(
    privileged: bool,
    add: &[String],
    drop: &[String],
    host: &[Capability],
) -> Result<Vec<Capability>, Error> {
    if privileged {
        return Ok(host.to_vec());
    }
    let add = add
        .iter()
        .map(|c| parse_named(c))
        .collect::<Result<Vec<_>, _>>()?;
    let drop = drop
        .iter()
        .map(|c| parse_named(c))
        .collect::<Result<Vec<_>, _>>()?;
    let dropped = |c: &Capability| drop.contains(&Named::One(*c));
    if add.contains(&Named::All) {
        return Ok(host.iter().filter(|c| !dropped(c)).copied().collect());
    }
    let mut caps: Vec<Capability> = if drop.contains(&Named::All) {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .filter(|c| !dropped(c))
            .copied()
            .collect()
    };
    for c in add {
        if let Named::One(c) = c
            && !caps.contains(&c)
        {
            caps.push(c);
        }
    }
    Ok(caps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn all() -> Vec<Capability> {
        CAPABILITIES.iter().map(|(_, c)| *c).collect()
    }

    #[test]
    fn names_and_numbers_agree_with_serde() {
        for (i, (name, cap)) in CAPABILITIES.iter().enumerate() {
            assert_eq!(serde_json::to_value(cap).unwrap(), *name);
            assert_eq!(capability_number(*cap), i);
            assert_eq!(capability_name(*cap), *name);
        }
        assert_eq!(
            capabilities_from_mask(0b1_0000_0001),
            [Capability::Chown, Capability::Setpcap]
        );
        assert_eq!(capabilities_from_mask(u64::MAX).len(), CAPABILITIES.len());
    }

    #[test]
    fn add_and_drop() {
        let caps = capabilities(
            false,
            &strings(&["net_admin"]),
            &strings(&["CAP_CHOWN", "kill"]),
            &all(),
        )
        .unwrap();
        assert!(caps.contains(&Capability::NetAdmin));
        assert!(!caps.contains(&Capability::Chown));
        assert!(!caps.contains(&Capability::Kill));
        assert_eq!(caps.len(), 13);
        let only = capabilities(false, &strings(&["CHOWN"]), &strings(&["ALL"]), &all());
        assert_eq!(only.unwrap(), [Capability::Chown]);
        let most = capabilities(false, &strings(&["ALL"]), &strings(&["SYS_ADMIN"]), &all());
        assert_eq!(most.unwrap().len(), CAPABILITIES.len() - 1);
        assert_eq!(capabilities(true, &[], &[], &all()).unwrap(), all());
        let bad = capabilities(false, &strings(&["NOPE"]), &[], &all());
        assert!(matches!(bad, Err(Error::UnknownCapability(c)) if c == "NOPE"));
        let twice = capabilities(false, &strings(&["CAP_CAP_CHOWN"]), &[], &all());
        assert!(twice.is_err());
    }
}
