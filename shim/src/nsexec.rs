//! `runc exec` of a process into a running runc container, done by the shim when nothing
//! of it needs runc: starting runc (its Go runtime twice, the parent and `runc init`) is
//! most of an exec's time. What runc 1.1 does for an exec, in its order:
//!
//! 1. a helper process (forked from the shim, made non-dumpable) joins the container's
//!    cgroups (every path in runc's `state.json`), writes the container's
//!    `oom_score_adj`, and joins the init's namespaces of the types the container has, in
//!    runc's order (ipc, uts, net, pid, mnt, cgroup); then forks the process, which is in
//!    the container's PID namespace, tells the shim its pid and exits (the process becomes
//!    the shim's child: the shim is a subreaper);
//! 2. the process starts a session, joins the container's session keyring (`_ses.<id>`),
//!    takes its rlimits and stdio, sets `no_new_privs`, drops what the bounding set does
//!    not list, changes to the spec's user (groups, gid, uid: `additionalGids` only, as
//!    runc's `uid:gid` form), gives the user its stdio (runc's `fixStdioPermissions`),
//!    changes directory, sets its capabilities and finds the program as Go's `LookPath`
//!    does with the process's `PATH`; then execs it with the process's environment (the
//!    last of a repeated name wins, `HOME` from the container's `/etc/passwd` when unset).
//!
//! Anything else goes through `runc exec` ([`Plan::new`] says why): a terminal, a user
//! namespace, seccomp, AppArmor or SELinux, rootless runc, Intel RDT, a relative `PATH`
//! entry, process fields runc 1.1 does not know, or a spec runc would refuse (runc then
//! says why). Failures in the process are reported over a pipe, in runc's words where a
//! client looks at them ("executable file not found in $PATH", "permission denied").
//!
//! Between the forks and the exec only system calls run: nothing allocates or locks.

use std::ffi::{CStr, CString};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use serde_json::Value;

use crate::runc::ChildStdio;

/// The namespace types runc joins for an exec, in its order (the user namespace, first in
/// runc's, is left to runc), with their `/proc/<pid>/ns` names and `setns` flags.
const NAMESPACES: [(&str, &str, libc::c_int); 6] = [
    ("NEWIPC", "ipc", libc::CLONE_NEWIPC),
    ("NEWUTS", "uts", libc::CLONE_NEWUTS),
    ("NEWNET", "net", libc::CLONE_NEWNET),
    ("NEWPID", "pid", libc::CLONE_NEWPID),
    ("NEWNS", "mnt", libc::CLONE_NEWNS),
    ("NEWCGROUP", "cgroup", libc::CLONE_NEWCGROUP),
];

/// Linux's capabilities by number.
const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The rlimits runc knows, by number.
const RLIMITS: [&str; 16] = [
    "RLIMIT_CPU",
    "RLIMIT_FSIZE",
    "RLIMIT_DATA",
    "RLIMIT_STACK",
    "RLIMIT_CORE",
    "RLIMIT_RSS",
    "RLIMIT_NPROC",
    "RLIMIT_NOFILE",
    "RLIMIT_MEMLOCK",
    "RLIMIT_AS",
    "RLIMIT_LOCKS",
    "RLIMIT_SIGPENDING",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
];

/// The process spec's fields runc 1.1 reads for an exec (or ignores, as `consoleSize`
/// without a terminal, `oomScoreAdj` and `user.umask`); any other goes to runc.
const PROCESS_FIELDS: [&str; 12] = [
    "terminal",
    "consoleSize",
    "oomScoreAdj",
    "user",
    "args",
    "env",
    "cwd",
    "capabilities",
    "rlimits",
    "noNewPrivileges",
    "apparmorProfile",
    "selinuxLabel",
];
const USER_FIELDS: [&str; 4] = ["uid", "gid", "additionalGids", "umask"];

/// The capability sets of the process, as masks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Caps {
    bounding: u64,
    effective: u64,
    permitted: u64,
    inheritable: u64,
    ambient: u64,
}

/// What runc's `state.json` says of a container the process joins, when it can join it
/// here.
#[derive(Debug, PartialEq)]
struct Container {
    init_pid: i32,
    init_start: u64,
    /// Indexes into [`NAMESPACES`], in runc's order.
    namespaces: Vec<usize>,
    cgroup_procs: Vec<String>,
    oom_score_adj: Option<i64>,
    keyring: bool,
    /// The container's capabilities and rlimits, for a process spec without its own.
    caps: Option<Caps>,
    rlimits: Vec<(u32, u64, u64)>,
}

/// What the process spec asks for, checked as runc checks it.
#[derive(Debug, PartialEq)]
struct Process {
    args: Vec<String>,
    /// Deduplicated as runc's `os.Setenv` does: first place, last value.
    env: Vec<(String, String)>,
    cwd: String,
    uid: u32,
    gid: u32,
    additional_gids: Vec<u32>,
    caps: Option<Caps>,
    /// (resource, soft, hard)
    rlimits: Vec<(u32, u64, u64)>,
    no_new_privileges: bool,
}

/// Where the program may be, as Go's `exec.LookPath` looks.
#[derive(Debug, PartialEq)]
enum Program {
    /// A name with a slash: that file.
    Path(String),
    /// A bare name: the first executable file of these (`PATH`'s entries joined with it).
    Search(Vec<String>),
}

/// Everything the forked processes need, prepared before the fork.
pub(crate) struct Plan {
    container_id: String,
    program_name: String,
    namespaces: Vec<(OwnedFd, libc::c_int)>,
    cgroup_procs: Vec<CString>,
    oom_score_adj: Option<CString>,
    keyring: Option<CString>,
    rlimits: Vec<(u32, libc::rlimit)>,
    caps: Caps,
    last_cap: u32,
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
    no_new_privileges: bool,
    cwd: CString,
    candidates: Vec<CString>,
    searched: bool,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

/// How an exec started here went.
pub(crate) struct Spawned {
    /// The helper process, which has exited (the caller collects its exit).
    pub helper: u32,
    /// The process's pid, or why it did not start (with its pid when it was forked and
    /// has exited).
    pub outcome: std::result::Result<u32, Failure>,
}

pub(crate) struct Failure {
    pub pid: Option<u32>,
    pub message: String,
}

impl Plan {
    /// Reads runc's state of container `id` (in `state_dir`) and the process spec; Err
    /// says why runc should do the exec instead.
    pub(crate) fn new(state_dir: &Path, id: &str, spec: &[u8]) -> Result<Plan, String> {
        let state: Value = std::fs::read(state_dir.join("state.json"))
            .map_err(|e| format!("runc's state: {e}"))
            .and_then(|d| serde_json::from_slice(&d).map_err(|e| format!("runc's state: {e}")))?;
        let spec: Value =
            serde_json::from_slice(spec).map_err(|e| format!("the process spec: {e}"))?;
        let container = container(&state)?;
        let process = process(&spec)?;
        let last_cap = last_cap();

        // The init, checked to be the container's before and after its namespaces open.
        let init = container.init_pid;
        let alive = || start_time(init) == Some(container.init_start);
        if !alive() {
            return Err(format!("init {init} is not the container's"));
        }
        let mut namespaces = Vec::with_capacity(container.namespaces.len());
        for &i in &container.namespaces {
            let (_, name, flag) = NAMESPACES[i];
            let path = format!("/proc/{init}/ns/{name}");
            let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
            namespaces.push((OwnedFd::from(file), flag));
        }
        if !alive() {
            return Err(format!("init {init} is gone"));
        }

        let caps = process
            .caps
            .or(container.caps)
            .unwrap_or_default()
            .limited_to(last_cap);
        let rlimits = if process.rlimits.is_empty() {
            container.rlimits
        } else {
            process.rlimits
        };
        let mut env = process.env;
        if !env.iter().any(|(k, v)| k == "HOME" && !v.is_empty()) {
            let passwd = read_in_root(init, "etc/passwd");
            let home = home_of(passwd.as_deref(), process.uid);
            match env.iter_mut().find(|(k, _)| k == "HOME") {
                Some(entry) => entry.1 = home,
                None => env.push(("HOME".into(), home)),
            }
        }
        let groups = if process.additional_gids.is_empty() {
            Vec::new()
        } else {
            let group = read_in_root(init, "etc/group");
            additional_groups(group.as_deref(), &process.additional_gids)
        };
        let program_name = process.args[0].clone();
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str());
        let (candidates, searched) = match program(&program_name, path)? {
            Program::Path(p) => (vec![p], false),
            Program::Search(list) => (list, true),
        };
        let c = |s: String| CString::new(s).map_err(|_| "a NUL byte".to_string());
        Ok(Plan {
            container_id: id.to_string(),
            program_name,
            namespaces,
            cgroup_procs: container
                .cgroup_procs
                .into_iter()
                .map(c)
                .collect::<Result<_, _>>()?,
            oom_score_adj: container
                .oom_score_adj
                .map(|v| c(v.to_string()))
                .transpose()?,
            keyring: container
                .keyring
                .then(|| c(format!("_ses.{id}")))
                .transpose()?,
            rlimits: rlimits
                .into_iter()
                .map(|(r, soft, hard)| {
                    (
                        r,
                        libc::rlimit {
                            rlim_cur: soft,
                            rlim_max: hard,
                        },
                    )
                })
                .collect(),
            caps,
            last_cap,
            uid: process.uid,
            gid: process.gid,
            groups,
            no_new_privileges: process.no_new_privileges,
            cwd: c(process.cwd)?,
            candidates: candidates.into_iter().map(c).collect::<Result<_, _>>()?,
            searched,
            argv: process.args.into_iter().map(c).collect::<Result<_, _>>()?,
            envp: env
                .into_iter()
                .map(|(k, v)| c(format!("{k}={v}")))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Forks the helper (which forks the process) with `stdio` as the process's; waits
    /// until the process has exec'd its program or failed. Blocks: call off the runtime's
    /// thread. Err when the shim could not fork or talk to its children.
    pub(crate) fn spawn(self, stdio: ChildStdio) -> std::io::Result<Spawned> {
        let null = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map(OwnedFd::from)
        };
        // Above 2, so that placing one on 0-2 in the child never closes another.
        let above_stdio = |fd: Option<OwnedFd>| -> std::io::Result<OwnedFd> {
            let fd = match fd {
                Some(fd) => fd,
                None => null()?,
            };
            if fd.as_raw_fd() > 2 {
                return Ok(fd);
            }
            nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
                .map(crate::io::own_fd)
                .map_err(std::io::Error::from)
        };
        let stdio = [
            above_stdio(stdio.stdin)?,
            above_stdio(stdio.stdout)?,
            above_stdio(stdio.stderr)?,
        ];
        let (mut report_rx, report_tx) = report_pipe()?;
        let args = ChildArgs::new(&self, &stdio, report_tx.as_raw_fd());
        let helper = fork_helper(&args)?;
        drop(report_tx);
        drop(stdio);
        let mut report = Vec::new();
        report_rx.read_to_end(&mut report)?;
        Ok(Spawned {
            helper,
            outcome: self.outcome(&report),
        })
    }

    /// The records of the report pipe: `P` + the process's pid (from the helper), `E` +
    /// step + index + errno (from whichever failed).
    fn outcome(&self, report: &[u8]) -> std::result::Result<u32, Failure> {
        let (mut pid, mut failed) = (None, None);
        let mut rest = report;
        while let Some((&kind, tail)) = rest.split_first() {
            match kind {
                b'P' if tail.len() >= 4 => {
                    pid = Some(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
                    rest = &tail[4..];
                }
                b'E' if tail.len() >= 6 => {
                    let errno = i32::from_le_bytes([tail[2], tail[3], tail[4], tail[5]]);
                    failed.get_or_insert_with(|| self.describe(tail[0], tail[1] as usize, errno));
                    rest = &tail[6..];
                }
                _ => break,
            }
        }
        match (pid, failed) {
            (Some(pid), None) => Ok(pid),
            (pid, Some(why)) => Err(Failure {
                pid,
                message: format!("exec failed: unable to start container process: {why}"),
            }),
            (None, None) => Err(Failure {
                pid: None,
                message: format!(
                    "exec failed: the helper ended without starting the process in {}",
                    self.container_id
                ),
            }),
        }
    }

    /// A failed step in runc's words where it has them.
    fn describe(&self, step: u8, index: usize, errno: i32) -> String {
        let err = errno_text(errno);
        let candidate = |i: usize| {
            self.candidates
                .get(i)
                .map(|c| c.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        match step {
            STEP_CGROUP => format!(
                "error adding pid to cgroups: write {}: {err}",
                self.cgroup_procs
                    .get(index)
                    .map(|c| c.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
            STEP_OOM => format!("failed to update /proc/self/oom_score_adj: {err}"),
            STEP_SETNS => format!(
                "failed to setns into {} namespace: {err}",
                NAMESPACES
                    .iter()
                    .find(|n| Some(n.2) == self.namespaces.get(index).map(|n| n.1))
                    .map(|n| n.1)
                    .unwrap_or("a")
            ),
            STEP_FORK => format!("fork: {err}"),
            STEP_SETSID => format!("setsid: {err}"),
            STEP_KEYRING => format!("unable to join session keyring: {err}"),
            STEP_RLIMIT => format!(
                "error setting rlimit type {}: {err}",
                self.rlimits.get(index).map(|r| r.0).unwrap_or_default()
            ),
            STEP_STDIO => format!("dup2 of stdio {index}: {err}"),
            STEP_NO_NEW_PRIVS => format!("prctl(PR_SET_NO_NEW_PRIVS): {err}"),
            STEP_CHDIR => format!(
                "chdir to cwd ({:?}) set in config.json failed: {err}",
                self.cwd.to_string_lossy()
            ),
            STEP_BOUNDING => format!("unable to apply bounding set: {err}"),
            STEP_KEEPCAPS => format!("prctl(PR_SET_KEEPCAPS): {err}"),
            STEP_STDIO_OWNER => format!("unable to setup user: fchown of stdio {index}: {err}"),
            STEP_SETGROUPS => format!("unable to setup user: setgroups: {err}"),
            STEP_SETGID => format!("unable to setup user: setgid: {err}"),
            STEP_SETUID => format!("unable to setup user: setuid: {err}"),
            STEP_CAPSET => format!("unable to apply caps: {err}"),
            STEP_NOT_FOUND => format!(
                "exec: {:?}: executable file not found in $PATH",
                self.program_name
            ),
            STEP_STAT => format!(
                "exec: {:?}: stat {}: {err}",
                self.program_name,
                candidate(0)
            ),
            STEP_NOT_EXECUTABLE => {
                format!("exec: {:?}: permission denied", self.program_name)
            }
            STEP_EXEC => format!("exec {}: {err}", candidate(index)),
            _ => format!("step {step}: {err}"),
        }
    }
}

impl Caps {
    /// Without the capabilities this kernel does not have (runc ignores them).
    fn limited_to(self, last_cap: u32) -> Caps {
        let mask = if last_cap >= 63 {
            u64::MAX
        } else {
            (1u64 << (last_cap + 1)) - 1
        };
        Caps {
            bounding: self.bounding & mask,
            effective: self.effective & mask,
            permitted: self.permitted & mask,
            inheritable: self.inheritable & mask,
            ambient: self.ambient & mask,
        }
    }
}

/// The container as runc's `state.json` records it, when an exec can join it here.
fn container(state: &Value) -> Result<Container, String> {
    let config = state.get("config").ok_or("runc's state has no config")?;
    let init_pid = state
        .get("init_process_pid")
        .and_then(Value::as_i64)
        .and_then(|p| i32::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or("runc's state has no init pid")?;
    let init_start = state
        .get("init_process_start")
        .and_then(Value::as_u64)
        .ok_or("runc's state has no init start time")?;
    let set = |key: &str| match config.get(key) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    };
    for key in [
        "seccomp",
        "apparmor_profile",
        "process_label",
        "rootless_euid",
        "rootless_cgroups",
    ] {
        if set(key) {
            return Err(format!("the container has {key}"));
        }
    }
    if crate::runc::has_rdt(state) {
        return Err("the container has an Intel RDT group".into());
    }
    let mut kinds = Vec::new();
    for ns in config
        .get("namespaces")
        .and_then(Value::as_array)
        .ok_or("runc's state lists no namespaces")?
    {
        let kind = ns.get("type").and_then(Value::as_str).unwrap_or_default();
        match NAMESPACES.iter().position(|n| n.0 == kind) {
            Some(i) => kinds.push(i),
            None => return Err(format!("the container has a {kind} namespace")),
        }
    }
    kinds.sort_unstable();
    kinds.dedup();
    if !kinds.contains(&3) || !kinds.contains(&4) {
        return Err("the container shares the host's PID or mount namespace".into());
    }
    let cgroup_procs = crate::runc::state_cgroups(state)
        .ok_or("a cgroup path is not a directory below /sys/fs/cgroup")?
        .into_iter()
        .map(|path| format!("{path}/cgroup.procs"))
        .collect();
    let oom_score_adj = match config.get("oom_score_adj") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_i64().ok_or("oom_score_adj is not a number")?),
    };
    let caps = config
        .get("capabilities")
        .filter(|c| !c.is_null())
        .map(|c| {
            caps_of(
                c,
                [
                    "Bounding",
                    "Effective",
                    "Permitted",
                    "Inheritable",
                    "Ambient",
                ],
            )
        })
        .transpose()?;
    let mut rlimits = Vec::new();
    for r in list(config, "rlimits") {
        let field = |k: &str| r.get(k).and_then(Value::as_u64);
        match (field("type"), field("soft"), field("hard")) {
            (Some(t), Some(soft), Some(hard)) if t < RLIMITS.len() as u64 => {
                rlimits.push((t as u32, soft, hard));
            }
            _ => return Err(format!("the container's rlimit {r}")),
        }
    }
    Ok(Container {
        init_pid,
        init_start,
        namespaces: kinds,
        cgroup_procs,
        oom_score_adj,
        keyring: !set("no_new_keyring"),
        caps,
        rlimits,
    })
}

/// The process spec, when it is one runc 1.1 would exec as this module does.
fn process(spec: &Value) -> Result<Process, String> {
    let obj = spec
        .as_object()
        .ok_or("the process spec is not an object")?;
    if let Some(key) = obj.keys().find(|k| !PROCESS_FIELDS.contains(&k.as_str())) {
        return Err(format!("the process spec has {key}"));
    }
    if obj
        .get("terminal")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        return Err("the process has a terminal".into());
    }
    for key in ["apparmorProfile", "selinuxLabel"] {
        if obj
            .get(key)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(format!("the process has {key}"));
        }
    }
    let strings = |key: &str| -> Result<Vec<String>, String> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(list)) => list
                .iter()
                .map(|v| {
                    v.as_str()
                        .filter(|s| !s.contains('\0'))
                        .map(String::from)
                        .ok_or_else(|| format!("process {key}: {v}"))
                })
                .collect(),
            Some(v) => Err(format!("process {key}: {v}")),
        }
    };
    let args = strings("args")?;
    if args.is_empty() || args[0].is_empty() {
        return Err("the process has no args".into());
    }
    let mut env: Vec<(String, String)> = Vec::new();
    for pair in strings("env")? {
        let (name, value) = pair
            .split_once('=')
            .filter(|(name, _)| !name.is_empty())
            .ok_or_else(|| format!("environment variable {pair:?}"))?;
        match env.iter_mut().find(|(k, _)| k == name) {
            Some(entry) => entry.1 = value.to_string(),
            None => env.push((name.to_string(), value.to_string())),
        }
    }
    let cwd = obj
        .get("cwd")
        .and_then(Value::as_str)
        .filter(|c| c.starts_with('/') && !c.contains('\0'))
        .ok_or("the process's cwd is not an absolute path")?
        .to_string();
    let user = obj
        .get("user")
        .and_then(Value::as_object)
        .ok_or("the process has no user")?;
    if let Some(key) = user.keys().find(|k| !USER_FIELDS.contains(&k.as_str())) {
        return Err(format!("the process's user has {key}"));
    }
    let id = |key: &str| -> Result<u32, String> {
        match user.get(key) {
            None => Ok(0),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("user {key}: {v}")),
        }
    };
    let (uid, gid) = (id("uid")?, id("gid")?);
    let mut additional_gids = Vec::new();
    for g in list(&spec["user"], "additionalGids") {
        additional_gids.push(
            g.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("additional gid {g}"))?,
        );
    }
    let caps = obj
        .get("capabilities")
        .filter(|c| !c.is_null())
        .map(|c| {
            caps_of(
                c,
                [
                    "bounding",
                    "effective",
                    "permitted",
                    "inheritable",
                    "ambient",
                ],
            )
        })
        .transpose()?;
    let mut rlimits = Vec::new();
    for r in list(spec, "rlimits") {
        let kind = r.get("type").and_then(Value::as_str).unwrap_or_default();
        let resource = RLIMITS
            .iter()
            .position(|n| *n == kind)
            .ok_or_else(|| format!("rlimit {kind:?}"))?;
        let soft = r.get("soft").and_then(Value::as_u64);
        let hard = r.get("hard").and_then(Value::as_u64);
        match (soft, hard) {
            (Some(soft), Some(hard)) => rlimits.push((resource as u32, soft, hard)),
            _ => return Err(format!("rlimit {r}")),
        }
    }
    let no_new_privileges = obj
        .get("noNewPrivileges")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Process {
        args,
        env,
        cwd,
        uid,
        gid,
        additional_gids,
        caps,
        rlimits,
        no_new_privileges,
    })
}

/// The array under `key` (none: empty).
fn list<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Capability sets from lists of names under `keys` (bounding, effective, permitted,
/// inheritable, ambient); names this module does not know are ignored, as runc ignores
/// them.
fn caps_of(value: &Value, keys: [&str; 5]) -> Result<Caps, String> {
    let mask = |key: &str| -> Result<u64, String> {
        let mut mask = 0u64;
        match value.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Array(list)) => {
                for name in list {
                    let name = name.as_str().ok_or_else(|| format!("capability {name}"))?;
                    if let Some(bit) = CAPABILITIES.iter().position(|c| *c == name) {
                        mask |= 1 << bit;
                    }
                }
            }
            Some(v) => return Err(format!("capabilities {key}: {v}")),
        }
        Ok(mask)
    };
    Ok(Caps {
        bounding: mask(keys[0])?,
        effective: mask(keys[1])?,
        permitted: mask(keys[2])?,
        inheritable: mask(keys[3])?,
        ambient: mask(keys[4])?,
    })
}

/// Where `name` may be, as Go's `exec.LookPath` looks with `path` (the process's `PATH`).
/// A relative `PATH` entry (Go refuses what it would find there) goes to runc.
fn program(name: &str, path: Option<&str>) -> Result<Program, String> {
    if name.contains('/') {
        return Ok(Program::Path(name.to_string()));
    }
    let path = path.unwrap_or_default();
    if path.is_empty() {
        return Ok(Program::Search(Vec::new()));
    }
    let mut candidates = Vec::new();
    for dir in path.split(':') {
        let clean = Path::new(dir).components().all(|c| {
            matches!(
                c,
                std::path::Component::RootDir | std::path::Component::Normal(_)
            )
        });
        if !dir.starts_with('/') || !clean {
            return Err(format!("PATH entry {dir:?} is not a clean absolute path"));
        }
        let dir = dir.trim_end_matches('/');
        candidates.push(format!("{dir}/{name}"));
    }
    Ok(Program::Search(candidates))
}

/// The home of `uid` in a `passwd` file's text, `/` without one (runc's default): the
/// first entry with that uid, as runc's user lookup takes it (a uid that does not parse
/// counts as 0, as there).
fn home_of(passwd: Option<&str>, uid: u32) -> String {
    passwd
        .into_iter()
        .flat_map(str::lines)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let entry_uid = fields.get(2).and_then(|u| u.parse::<i64>().ok());
            (entry_uid.unwrap_or(0) == i64::from(uid))
                .then(|| fields.get(5).copied().unwrap_or_default().to_string())
        })
        .unwrap_or_else(|| "/".into())
}

/// runc's supplementary groups for `additionalGids` (given as numbers): each the gid of
/// the first `group` entry named or numbered so whose gid is not taken yet, else the
/// number itself; without repeats.
fn additional_groups(group: Option<&str>, gids: &[u32]) -> Vec<libc::gid_t> {
    let entries: Vec<(&str, i64)> = group
        .into_iter()
        .flat_map(str::lines)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut fields = line.split(':');
            let name = fields.next().unwrap_or_default();
            let gid = fields.nth(1).and_then(|g| g.parse().ok()).unwrap_or(0);
            (name, gid)
        })
        .collect();
    let mut out: Vec<libc::gid_t> = Vec::new();
    for &gid in gids {
        let wanted = gid.to_string();
        let found = entries.iter().find_map(|&(name, g)| {
            let g = u32::try_from(g).ok()?;
            ((name == wanted || g == gid) && !out.contains(&g)).then_some(g)
        });
        let chosen = found.unwrap_or(gid);
        if !out.contains(&chosen) {
            out.push(chosen);
        }
    }
    out
}

/// A file of the container's root (as the init sees it), its symlinks resolved inside
/// that root; None when it cannot be read (runc's defaults apply then).
fn read_in_root(init: i32, path: &str) -> Option<String> {
    let root = std::fs::File::open(format!("/proc/{init}/root")).ok()?;
    let file = open_in_root(&root, path).ok()?;
    let mut text = String::new();
    std::fs::File::from(file)
        .take(1 << 20)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// openat2's `struct open_how`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

#[allow(unsafe_code)]
fn open_in_root(root: &std::fs::File, path: &str) -> std::io::Result<OwnedFd> {
    let path = CString::new(path).map_err(std::io::Error::other)?;
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 reads the path (a live NUL-terminated string) and `how` (a live
    // struct of the size passed) and returns a new descriptor that nothing else owns.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(crate::io::own_fd(fd as RawFd))
}

/// The start time (in clock ticks since boot) of process `pid`, field 22 of its stat.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// The highest capability this kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(CAPABILITIES.len() as u32 - 1)
}

/// An errno as Go writes it ("no such file or directory").
fn errno_text(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    let text = text.split(" (os error").next().unwrap_or_default();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => format!("errno {errno}"),
    }
}

fn report_pipe() -> std::io::Result<(std::fs::File, OwnedFd)> {
    let (rx, tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((std::fs::File::from(rx), tx))
}

// The steps that can fail in the children, as reported.
const STEP_CGROUP: u8 = 1;
const STEP_OOM: u8 = 2;
const STEP_SETNS: u8 = 3;
const STEP_FORK: u8 = 4;
const STEP_SETSID: u8 = 5;
const STEP_KEYRING: u8 = 6;
const STEP_RLIMIT: u8 = 7;
const STEP_STDIO: u8 = 8;
const STEP_NO_NEW_PRIVS: u8 = 9;
const STEP_CHDIR: u8 = 10;
const STEP_BOUNDING: u8 = 11;
const STEP_KEEPCAPS: u8 = 12;
const STEP_STDIO_OWNER: u8 = 13;
const STEP_SETGROUPS: u8 = 14;
const STEP_SETGID: u8 = 15;
const STEP_SETUID: u8 = 16;
const STEP_CAPSET: u8 = 17;
const STEP_NOT_FOUND: u8 = 18;
const STEP_STAT: u8 = 19;
const STEP_NOT_EXECUTABLE: u8 = 20;
const STEP_EXEC: u8 = 21;

/// The plan as raw values and pointers, built before the fork so that the children only
/// read it.
struct ChildArgs<'a> {
    plan: &'a Plan,
    stdio: [RawFd; 3],
    report: RawFd,
    /// The descriptors the helper keeps above 2 (stdio, report, namespaces), ascending.
    keep: Vec<RawFd>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    dev_null: &'static CStr,
    oom_file: &'static CStr,
}

impl<'a> ChildArgs<'a> {
    fn new(plan: &'a Plan, stdio: &[OwnedFd; 3], report: RawFd) -> ChildArgs<'a> {
        let pointers = |list: &[CString]| {
            list.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        let mut keep: Vec<RawFd> = stdio.iter().map(AsRawFd::as_raw_fd).collect();
        keep.push(report);
        keep.extend(plan.namespaces.iter().map(|(fd, _)| fd.as_raw_fd()));
        keep.sort_unstable();
        keep.dedup();
        ChildArgs {
            plan,
            keep,
            stdio: [
                stdio[0].as_raw_fd(),
                stdio[1].as_raw_fd(),
                stdio[2].as_raw_fd(),
            ],
            report,
            argv: pointers(&plan.argv),
            envp: pointers(&plan.envp),
            dev_null: c"/dev/null",
            oom_file: c"/proc/self/oom_score_adj",
        }
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;
const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;

/// Forks the helper; returns its pid.
#[allow(unsafe_code)]
fn fork_helper(args: &ChildArgs) -> std::io::Result<u32> {
    // SAFETY: fork has no preconditions; what the child may do after it is below.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        // SAFETY: this is the forked child; `helper` makes only system calls on memory
        // prepared before the fork (no allocation, no lock: the shim's other threads do
        // not exist in the child) and never returns.
        0 => unsafe { helper(args) },
        pid => Ok(pid as u32),
    }
}

/// Writes an error record and exits the child.
///
/// # Safety
/// Only for the forked children.
#[allow(unsafe_code)]
unsafe fn fail(report: RawFd, step: u8, index: usize, errno: i32) -> ! {
    let e = errno.to_le_bytes();
    let record = [b'E', step, index as u8, e[0], e[1], e[2], e[3]];
    // SAFETY: writes from a live local buffer; _exit ends the child without running
    // anything of the parent's (no atexit handlers, no flushing of shared buffers).
    unsafe {
        libc::write(report, record.as_ptr().cast(), record.len());
        libc::_exit(1)
    }
}

#[allow(unsafe_code)]
fn errno() -> i32 {
    // SAFETY: reads this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// The helper: joins the cgroups and namespaces, forks the process, reports its pid.
///
/// # Safety
/// Only in the child of `fork_helper`.
#[allow(unsafe_code)]
unsafe fn helper(args: &ChildArgs) -> ! {
    let plan = args.plan;
    let report = args.report;
    // SAFETY: system calls on the child's own state, with pointers into `args` (alive:
    // the parent's memory, copied by the fork) or into locals.
    unsafe {
        // Nothing in the container may read this process's memory (the shim's).
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        // Nor hold what the shim has open: its sockets, and the ends of pipes other execs
        // of the shim, started at the same time, wait to see closed.
        let mut low: u32 = 3;
        for &fd in &args.keep {
            let fd = fd as u32;
            if fd > low {
                libc::syscall(libc::SYS_close_range, low, fd - 1, 0u32);
            }
            low = low.max(fd + 1);
        }
        libc::syscall(libc::SYS_close_range, low, u32::MAX, 0u32);
        let mut digits = [0u8; 12];
        let pid = decimal(libc::getpid() as u64, &mut digits);
        for (i, path) in plan.cgroup_procs.iter().enumerate() {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, pid.as_ptr().cast(), pid.len()) < 0 {
                fail(report, STEP_CGROUP, i, errno());
            }
            libc::close(fd);
        }
        if let Some(adj) = &plan.oom_score_adj {
            let fd = libc::open(args.oom_file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            let bytes = adj.as_bytes();
            if fd < 0 || libc::write(fd, bytes.as_ptr().cast(), bytes.len()) < 0 {
                fail(report, STEP_OOM, 0, errno());
            }
            libc::close(fd);
        }
        for (i, (fd, flag)) in plan.namespaces.iter().enumerate() {
            if libc::setns(fd.as_raw_fd(), *flag) < 0 {
                fail(report, STEP_SETNS, i, errno());
            }
        }
        match libc::fork() {
            -1 => fail(report, STEP_FORK, 0, errno()),
            0 => process_child(args),
            pid => {
                let p = (pid as u32).to_le_bytes();
                let record = [b'P', p[0], p[1], p[2], p[3]];
                libc::write(report, record.as_ptr().cast(), record.len());
                libc::_exit(0)
            }
        }
    }
}

/// `n` in decimal, in `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 12]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    &buf[i..]
}

/// The process, in the container's namespaces: becomes what the spec says, execs.
///
/// # Safety
/// Only in the child of `helper`.
#[allow(unsafe_code)]
unsafe fn process_child(args: &ChildArgs) -> ! {
    let plan = args.plan;
    let report = args.report;
    // SAFETY: as in `helper`: system calls with pointers into `args` or into locals.
    unsafe {
        if libc::setsid() < 0 {
            fail(report, STEP_SETSID, 0, errno());
        }
        if let Some(name) = &plan.keyring
            && libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) < 0
            && errno() != libc::ENOSYS
        {
            fail(report, STEP_KEYRING, 0, errno());
        }
        // The shim's signal mask and ignored signals are not the process's.
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        for sig in 1..=libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        for (i, (resource, limit)) in plan.rlimits.iter().enumerate() {
            if libc::setrlimit(*resource, limit) < 0 {
                fail(report, STEP_RLIMIT, i, errno());
            }
        }
        for (target, &fd) in args.stdio.iter().enumerate() {
            if libc::dup2(fd, target as libc::c_int) < 0 {
                fail(report, STEP_STDIO, target, errno());
            }
        }
        // Whatever else is open stays out of the container (runc's CloseExecFrom(3)).
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        if plan.no_new_privileges && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
            fail(report, STEP_NO_NEW_PRIVS, 0, errno());
        }
        // runc changes directory before the user changes when it can (a directory the
        // user cannot enter), and after it when that was refused.
        let mut chdir_later = false;
        if libc::chdir(plan.cwd.as_ptr()) < 0 {
            let e = errno();
            if e != libc::EACCES && e != libc::EPERM {
                fail(report, STEP_CHDIR, 0, e);
            }
            chdir_later = true;
        }
        for cap in 0..=plan.last_cap {
            if plan.caps.bounding & (1 << cap) == 0
                && libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) < 0
                && errno() != libc::EINVAL
            {
                fail(report, STEP_BOUNDING, 0, errno());
            }
        }
        if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0 {
            fail(report, STEP_KEEPCAPS, 0, errno());
        }
        give_stdio(args);
        if libc::syscall(libc::SYS_setgroups, plan.groups.len(), plan.groups.as_ptr()) < 0 {
            fail(report, STEP_SETGROUPS, 0, errno());
        }
        if libc::syscall(libc::SYS_setgid, plan.gid) < 0 {
            fail(report, STEP_SETGID, 0, errno());
        }
        if libc::syscall(libc::SYS_setuid, plan.uid) < 0 {
            fail(report, STEP_SETUID, 0, errno());
        }
        if chdir_later && libc::chdir(plan.cwd.as_ptr()) < 0 {
            fail(report, STEP_CHDIR, 0, errno());
        }
        if libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0 {
            fail(report, STEP_KEEPCAPS, 0, errno());
        }
        let caps = &plan.caps;
        let header = CapHeader {
            version: CAP_VERSION_3,
            pid: 0,
        };
        let data = [
            CapData {
                effective: caps.effective as u32,
                permitted: caps.permitted as u32,
                inheritable: caps.inheritable as u32,
            },
            CapData {
                effective: (caps.effective >> 32) as u32,
                permitted: (caps.permitted >> 32) as u32,
                inheritable: (caps.inheritable >> 32) as u32,
            },
        ];
        if libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) < 0 {
            fail(report, STEP_CAPSET, 0, errno());
        }
        // As runc (its capability library drops the error): raised where listed, else
        // lowered; a raise the other sets do not allow leaves the capability out.
        for cap in 0..=plan.last_cap {
            let action = if caps.ambient & (1 << cap) != 0 {
                libc::PR_CAP_AMBIENT_RAISE
            } else {
                libc::PR_CAP_AMBIENT_LOWER
            };
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                action as libc::c_ulong,
                cap as libc::c_ulong,
                0,
                0,
            );
        }
        let chosen = find_program(args);
        libc::execve(
            plan.candidates[chosen].as_ptr(),
            args.argv.as_ptr(),
            args.envp.as_ptr(),
        );
        fail(report, STEP_EXEC, chosen, errno())
    }
}

/// runc's `fixStdioPermissions`: stdio the user does not own (and that is not /dev/null)
/// becomes the user's, so that it can reopen it (`/dev/stdout`); where the kernel refuses
/// (read-only, unmapped), it is left as it is.
///
/// # Safety
/// Only in the process child.
#[allow(unsafe_code)]
unsafe fn give_stdio(args: &ChildArgs) {
    let plan = args.plan;
    // SAFETY: stat/fstat/fchown into and from live locals.
    unsafe {
        let mut null: libc::stat = std::mem::zeroed();
        if libc::stat(args.dev_null.as_ptr(), &mut null) < 0 {
            fail(args.report, STEP_STDIO_OWNER, 9, errno());
        }
        for fd in 0..3 {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(fd, &mut st) < 0 {
                fail(args.report, STEP_STDIO_OWNER, fd as usize, errno());
            }
            if st.st_uid == plan.uid || st.st_rdev == null.st_rdev {
                continue;
            }
            if libc::fchown(fd, plan.uid, st.st_gid) < 0 {
                let e = errno();
                if e != libc::EINVAL && e != libc::EPERM && e != libc::EROFS {
                    fail(args.report, STEP_STDIO_OWNER, fd as usize, e);
                }
            }
        }
    }
}

/// Go's `exec.LookPath`: a name with a slash must be an executable file; a bare name is
/// the first executable file of `PATH`'s. Returns the index of the candidate.
///
/// # Safety
/// Only in the process child.
#[allow(unsafe_code)]
unsafe fn find_program(args: &ChildArgs) -> usize {
    let plan = args.plan;
    // SAFETY: stat into a live local.
    unsafe {
        for (i, candidate) in plan.candidates.iter().enumerate() {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::stat(candidate.as_ptr(), &mut st) < 0 {
                if plan.searched {
                    continue;
                }
                fail(args.report, STEP_STAT, 0, errno());
            }
            let executable = st.st_mode & libc::S_IFMT != libc::S_IFDIR && st.st_mode & 0o111 != 0;
            if executable {
                return i;
            }
            if !plan.searched {
                fail(args.report, STEP_NOT_EXECUTABLE, 0, libc::EACCES);
            }
        }
        fail(args.report, STEP_NOT_FOUND, 0, libc::ENOENT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state() -> Value {
        json!({
            "id": "c1",
            "init_process_pid": 4242,
            "init_process_start": 27773,
            "cgroup_paths": {
                "": "/sys/fs/cgroup/unified/c1",
                "cpu": "/sys/fs/cgroup/cpu/c1",
            },
            "intel_rdt_path": "",
            "config": {
                "namespaces": [
                    {"type": "NEWNS", "path": ""},
                    {"type": "NEWPID", "path": ""},
                    {"type": "NEWNET", "path": "/var/run/netns/x"},
                    {"type": "NEWIPC", "path": ""},
                    {"type": "NEWUTS", "path": ""},
                ],
                "seccomp": null,
                "no_new_keyring": false,
                "capabilities": {
                    "Bounding": ["CAP_KILL"], "Effective": ["CAP_KILL"],
                    "Permitted": ["CAP_KILL"], "Inheritable": null, "Ambient": null,
                },
                "rlimits": [{"type": 7, "hard": 1024, "soft": 512}],
                "cgroups": {"Systemd": false},
            },
        })
    }

    fn spec() -> Value {
        json!({
            "terminal": false,
            "user": {"uid": 1000, "gid": 100, "additionalGids": [10, 20]},
            "args": ["sh", "-c", "true"],
            "env": ["PATH=/usr/bin:/bin/", "A=1", "A=2", "B=x=y"],
            "cwd": "/work",
            "capabilities": {
                "bounding": ["CAP_CHOWN", "CAP_NOT_A_CAP", "CAP_BPF"],
                "effective": ["CAP_CHOWN"],
                "permitted": ["CAP_CHOWN"],
                "inheritable": [],
                "ambient": null,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 2048}],
            "noNewPrivileges": true,
        })
    }

    #[test]
    fn a_plain_container_is_joined_in_runcs_namespace_order() {
        let c = container(&state()).expect("joinable");
        let names: Vec<&str> = c.namespaces.iter().map(|&i| NAMESPACES[i].1).collect();
        assert_eq!(names, ["ipc", "uts", "net", "pid", "mnt"]);
        let mut procs = c.cgroup_procs.clone();
        procs.sort();
        assert_eq!(
            procs,
            [
                "/sys/fs/cgroup/cpu/c1/cgroup.procs",
                "/sys/fs/cgroup/unified/c1/cgroup.procs"
            ]
        );
        assert_eq!((c.init_pid, c.init_start), (4242, 27773));
        assert!(c.keyring);
        assert_eq!(c.oom_score_adj, None);
        assert_eq!(c.caps.expect("caps").bounding, 1 << 5);
        assert_eq!(c.rlimits, [(7, 512, 1024)]);
    }

    #[test]
    fn what_needs_runc_goes_to_runc() {
        let changed = |pointer: &str, value: Value| {
            let mut s = state();
            *s.pointer_mut(pointer).expect(pointer) = value;
            container(&s)
        };
        assert!(
            changed(
                "/config/seccomp",
                json!({"defaultAction": "SCMP_ACT_ERRNO"})
            )
            .is_err()
        );
        assert!(changed("/intel_rdt_path", json!("/sys/fs/resctrl/c1")).is_err());
        assert!(changed("/cgroup_paths/cpu", json!("/sys/fs/cgroup/../../etc")).is_err());
        assert!(changed("/cgroup_paths/cpu", json!("/elsewhere/c1")).is_err());
        assert!(changed("/config/namespaces/0/type", json!("NEWUSER")).is_err());
        // Without a PID namespace of its own (the first entry is the mount namespace).
        assert!(changed("/config/namespaces/1/type", json!("NEWCGROUP")).is_err());
        let mut s = state();
        s["config"]["apparmor_profile"] = json!("docker-default");
        assert!(container(&s).is_err());
        let mut s = state();
        s["config"]["rootless_euid"] = json!(true);
        assert!(container(&s).is_err());
        let mut s = state();
        s["config"]["no_new_keyring"] = json!(true);
        s["config"]["oom_score_adj"] = json!(-500);
        let c = container(&s).expect("joinable");
        assert!(!c.keyring);
        assert_eq!(c.oom_score_adj, Some(-500));

        let spec_with = |key: &str, value: Value| {
            let mut s = spec();
            s[key] = value;
            process(&s)
        };
        assert!(spec_with("terminal", json!(true)).is_err());
        assert!(spec_with("apparmorProfile", json!("p")).is_err());
        assert!(spec_with("selinuxLabel", json!("l")).is_err());
        assert!(spec_with("scheduler", json!({"policy": "SCHED_OTHER"})).is_err());
        assert!(spec_with("cwd", json!("relative")).is_err());
        assert!(spec_with("args", json!([])).is_err());
        assert!(spec_with("env", json!(["NOEQUALS"])).is_err());
        assert!(spec_with("env", json!(["=empty"])).is_err());
        assert!(
            spec_with(
                "rlimits",
                json!([{"type": "RLIMIT_NOPE", "hard": 1, "soft": 1}])
            )
            .is_err()
        );
        assert!(spec_with("user", json!({"uid": 0, "gid": 0, "username": "x"})).is_err());
        // Fields runc 1.1 ignores for an exec are ignored.
        assert!(spec_with("apparmorProfile", json!("")).is_ok());
        assert!(spec_with("consoleSize", json!({"height": 1, "width": 2})).is_ok());
        assert!(spec_with("oomScoreAdj", json!(-998)).is_ok());
        assert!(spec_with("user", json!({"uid": 0, "gid": 0, "umask": 18})).is_ok());
    }

    #[test]
    fn the_process_is_read_as_runc_reads_it() {
        let p = process(&spec()).expect("plain");
        assert_eq!(p.args, ["sh", "-c", "true"]);
        assert_eq!(
            p.env,
            [
                ("PATH".to_string(), "/usr/bin:/bin/".to_string()),
                ("A".into(), "2".into()),
                ("B".into(), "x=y".into())
            ]
        );
        assert_eq!(
            (p.uid, p.gid, p.additional_gids.as_slice()),
            (1000, 100, &[10, 20][..])
        );
        let caps = p.caps.expect("caps").limited_to(40);
        // Unknown names are left out; CAP_BPF (39) is known.
        assert_eq!(caps.bounding, 1 | 1 << 39);
        assert_eq!(caps.limited_to(38).bounding, 1);
        assert_eq!(
            (caps.effective, caps.permitted, caps.inheritable),
            (1, 1, 0)
        );
        assert_eq!(p.rlimits, [(7, 2048, 4096)]);
        assert!(p.no_new_privileges);
        assert_eq!(p.cwd, "/work");
    }

    #[test]
    fn programs_are_looked_up_as_go_looks_them_up() {
        assert_eq!(
            program("sh", Some("/usr/bin:/bin/")),
            Ok(Program::Search(vec![
                "/usr/bin/sh".into(),
                "/bin/sh".into()
            ]))
        );
        assert_eq!(
            program("sh", Some("/")),
            Ok(Program::Search(vec!["/sh".into()]))
        );
        assert_eq!(program("sh", None), Ok(Program::Search(vec![])));
        assert_eq!(program("sh", Some("")), Ok(Program::Search(vec![])));
        assert_eq!(program("./x", Some("")), Ok(Program::Path("./x".into())));
        assert_eq!(
            program("/bin/sh", Some("/usr/bin")),
            Ok(Program::Path("/bin/sh".into()))
        );
        assert!(program("sh", Some("/bin:.")).is_err());
        assert!(program("sh", Some("/bin::/usr/bin")).is_err());
        assert!(program("sh", Some("/usr/../bin")).is_err());
    }

    #[test]
    fn home_and_groups_come_from_the_containers_files() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\n\nweird:x:notanumber:0::/odd:\nu:x:1000:1000::/home/u:/bin/sh\nu2:x:1000:1::/second:\n";
        assert_eq!(home_of(Some(passwd), 0), "/root");
        assert_eq!(home_of(Some(passwd), 1000), "/home/u");
        assert_eq!(home_of(Some(passwd), 7), "/");
        assert_eq!(home_of(None, 0), "/");
        // A uid field that does not parse counts as 0, as runc's reader has it.
        assert_eq!(
            home_of(Some("weird:x:zz:0::/odd:\nroot:x:0:0::/root:"), 0),
            "/odd"
        );

        let group = "root:x:0:\nwheel:x:10:u\n20:x:30:\n";
        // 10 is wheel's gid; "20" is the name of group 30 (runc matches names too); 99 is
        // nobody's: the number itself; repeats once.
        assert_eq!(
            additional_groups(Some(group), &[10, 20, 99, 10]),
            [10, 30, 99]
        );
        assert_eq!(additional_groups(None, &[5, 5, 6]), [5, 6]);
    }

    #[test]
    fn errnos_read_as_go_writes_them() {
        assert_eq!(errno_text(libc::ENOENT), "no such file or directory");
        assert_eq!(errno_text(libc::EACCES), "permission denied");
        assert_eq!(decimal(0, &mut [0; 12]), b"0");
        assert_eq!(decimal(4_194_304, &mut [0; 12]), b"4194304");
    }

    #[test]
    fn start_times_are_read_past_the_command_name() {
        let me = std::process::id() as i32;
        let t = start_time(me).expect("own start time");
        assert!(t > 0);
        assert_eq!(start_time(i32::MAX), None);
    }
}
