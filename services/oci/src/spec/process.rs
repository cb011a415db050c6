//! The container's process: its command, environment, working directory, credentials,
//! capabilities and resource limits.

use std::str::FromStr;

use oci_spec::runtime::{
    Capabilities, LinuxCapabilities, LinuxCapabilitiesBuilder, PosixRlimit, PosixRlimitBuilder,
    PosixRlimitType, Process, ProcessBuilder, UserBuilder,
};

use super::{
    ContainerConfig, DEFAULT_PATH, Error, INIT_PATH, ImageConfig, Rlimit, capabilities, oci,
};

/// The command a container runs: the image's Entrypoint and Cmd as Docker and the CRI
/// combine them with an `entrypoint` override (which drops the image's Cmd; empty clears
/// both) and `args` (which replace the Cmd).
pub fn command(
    image: &ImageConfig,
    entrypoint: Option<&[String]>,
    args: &[String],
) -> Result<Vec<String>, Error> {
    let (entrypoint, default_cmd) = match entrypoint {
        Some(e) => (e, &[][..]),
        None => (&image.entrypoint[..], &image.cmd[..]),
    };
    let cmd = if args.is_empty() { default_cmd } else { args };
    let all: Vec<String> = entrypoint.iter().chain(cmd).cloned().collect();
    if all.is_empty() {
        return Err(Error::NoCommand);
    }
    Ok(all)
}

/// The key of a `KEY=VALUE` (or bare `KEY`) entry.
fn env_key(e: &str) -> &str {
    e.split('=').next().unwrap_or(e)
}

/// `base` with each `KEY=VALUE` (or bare `KEY`) of `over` replacing the entry of the same
/// key, or appended.
pub fn merge_env(base: &[String], over: &[String]) -> Vec<String> {
    let mut out: Vec<String> = base.to_vec();
    for e in over {
        match out.iter_mut().find(|b| env_key(b) == env_key(e)) {
            Some(b) => *b = e.clone(),
            None => out.push(e.clone()),
        }
    }
    out
}

/// The image's environment (with [`DEFAULT_PATH`] first when it sets no `PATH`, as Docker's
/// daemon does) with `c.env` merged in, then `HOSTNAME` and, with a terminal, `TERM=xterm`
/// put first unless already set.
fn environment(c: &ContainerConfig) -> Vec<String> {
    let mut base = c.image.env.clone();
    if !base.iter().any(|e| env_key(e) == "PATH") {
        base.insert(0, DEFAULT_PATH.to_string());
    }
    let mut env = merge_env(&base, &c.env);
    let mut extra = Vec::new();
    if let Some(h) = &c.hostname {
        extra.push(format!("HOSTNAME={h}"));
    }
    if c.terminal {
        extra.push("TERM=xterm".to_string());
    }
    for e in extra {
        if !env.iter().any(|x| env_key(x) == env_key(&e)) {
            env.insert(0, e);
        }
    }
    env
}

/// `c.cwd` when not empty, else the image's WorkingDir when not empty, else `/`.
fn working_dir(c: &ContainerConfig) -> String {
    c.cwd.clone().filter(|w| !w.is_empty()).unwrap_or_else(|| {
        if c.image.working_dir.is_empty() {
            "/".to_string()
        } else {
            c.image.working_dir.clone()
        }
    })
}

/// `RLIMIT_NOFILE` 1024/1024 (containerd's default) with `given` replacing the limit of the
/// same kind, or appended.
fn rlimits(given: &[Rlimit]) -> Result<Vec<PosixRlimit>, Error> {
    let mut out = vec![rlimit(PosixRlimitType::RlimitNofile, 1024, 1024)?];
    for r in given {
        let up = r.kind.to_ascii_uppercase();
        let name = if up.starts_with("RLIMIT_") {
            up
        } else {
            format!("RLIMIT_{up}")
        };
        let kind =
            PosixRlimitType::from_str(&name).map_err(|_| Error::UnknownRlimit(r.kind.clone()))?;
        let limit = rlimit(kind, r.soft, r.hard)?;
        match out.iter_mut().find(|l| l.typ() == kind) {
            Some(l) => *l = limit,
            None => out.push(limit),
        }
    }
    Ok(out)
}

fn rlimit(kind: PosixRlimitType, soft: u64, hard: u64) -> Result<PosixRlimit, Error> {
    PosixRlimitBuilder::default()
        .typ(kind)
        .soft(soft)
        .hard(hard)
        .build()
        .map_err(oci("rlimit"))
}

/// The bounding, effective and permitted sets (no inheritable or ambient ones, as
/// containerd and Docker).
fn capability_sets(c: &ContainerConfig) -> Result<LinuxCapabilities, Error> {
    let caps: Capabilities =
        capabilities(c.privileged, &c.cap_add, &c.cap_drop, &c.host_capabilities)?
            .into_iter()
            .collect();
    let mut sets = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()
        .map_err(oci("process capabilities"))?;
    sets.set_inheritable(None);
    sets.set_ambient(None);
    Ok(sets)
}

/// The container's process.
pub(super) fn process(c: &ContainerConfig) -> Result<Process, Error> {
    let mut args = command(&c.image, c.entrypoint.as_deref(), &c.args)?;
    if c.init.is_some() {
        let mut with_init = vec![INIT_PATH.to_string(), "--".to_string()];
        with_init.append(&mut args);
        args = with_init;
    }
    let mut user = UserBuilder::default()
        .uid(c.user.uid)
        .gid(c.user.gid)
        .build()
        .map_err(oci("process user"))?;
    if !c.user.additional_gids.is_empty() {
        user.set_additional_gids(Some(c.user.additional_gids.clone()));
    }
    ProcessBuilder::default()
        .terminal(c.terminal)
        .user(user)
        .args(args)
        .env(environment(c))
        .cwd(working_dir(c))
        .capabilities(capability_sets(c)?)
        .rlimits(rlimits(&c.rlimits)?)
        .no_new_privileges(c.no_new_privileges)
        .build()
        .map_err(oci("process"))
}
