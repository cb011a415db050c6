//! `berth compose`: a Compose project run on berthd as Docker Compose runs one on dockerd.
//! Each service becomes one container named `<project>-<service>-1` (labelled with the
//! project and the service, as Compose labels them), on the project's networks
//! (`<project>_default` unless it names others; the service's name is its alias there)
//! with the project's volumes (`<project>_<volume>`). The work is done by berth's own verbs
//! (`run`, `build`, `network create`, `volume create`, `ps`, `logs`...), run as this same
//! binary against the same daemon and namespace, so a project behaves exactly as those
//! commands do by hand.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::client::compose::{self, ONEOFF_LABEL, PROJECT_LABEL, Project, SERVICE_LABEL, Service};
use crate::client::image_config::split_words;
use crate::exit::Exit;

#[derive(Args, Debug)]
pub struct ComposeArgs {
    /// Compose files (merged in order; default: compose.yaml and its other names).
    #[arg(short = 'f', long = "file")]
    pub files: Vec<PathBuf>,
    /// The project name (default: COMPOSE_PROJECT_NAME, `name:`, the directory's).
    #[arg(short = 'p', long = "project-name")]
    pub project: Option<String>,
    /// The project directory (default: the current one).
    #[arg(long)]
    pub project_directory: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create and start the services' containers (and their networks and volumes).
    Up {
        /// Leave them running in the background.
        #[arg(short, long)]
        detach: bool,
        /// Build the images first.
        #[arg(long)]
        build: bool,
        services: Vec<String>,
    },
    /// Stop and remove the containers and networks (`-v`: the volumes too).
    Down {
        #[arg(short = 'v', long)]
        volumes: bool,
    },
    /// List the project's containers.
    Ps {
        /// Stopped ones too.
        #[arg(short, long)]
        all: bool,
        /// IDs only.
        #[arg(short, long)]
        quiet: bool,
        services: Vec<String>,
    },
    /// Show the services' output.
    Logs {
        #[arg(short, long)]
        follow: bool,
        services: Vec<String>,
    },
    /// Build the services that have a `build` section.
    Build { services: Vec<String> },
    /// Pull the services' images.
    Pull { services: Vec<String> },
    /// Start the services' existing containers.
    Start { services: Vec<String> },
    /// Stop the services' containers.
    Stop {
        #[arg(short, long, default_value_t = 10)]
        timeout: u64,
        services: Vec<String>,
    },
    /// Restart the services' containers.
    Restart {
        #[arg(short, long, default_value_t = 10)]
        timeout: u64,
        services: Vec<String>,
    },
    /// Run a command in a service's running container.
    Exec {
        /// No pseudo-terminal (berth allocates none by default here).
        #[arg(short = 'T')]
        no_tty: bool,
        service: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Run a one-off container of a service.
    Run {
        /// Remove it when it exits.
        #[arg(long)]
        rm: bool,
        service: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Show the project as it is read (variables interpolated, files merged).
    Config {
        /// Only check it.
        #[arg(short, long)]
        quiet: bool,
        /// The service names only.
        #[arg(long)]
        services: bool,
    },
}

/// How this binary is run again for a step.
struct Berth {
    exe: PathBuf,
    address: PathBuf,
    namespace: String,
}

impl Berth {
    fn cmd(&self, args: &[String]) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg("--address")
            .arg(&self.address)
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args);
        c
    }

    /// Runs a step quietly: its output, or its error text.
    fn quiet(&self, args: &[String]) -> anyhow::Result<String> {
        let out = self
            .cmd(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run berth {}", args.join(" ")))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let err = err.trim().trim_start_matches("berth: ");
            return Err(Exit::with(
                out.status.code().unwrap_or(1).clamp(1, 255) as u8,
                err.to_string(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs a step with our stdio; its exit code.
    fn attached(&self, args: &[String]) -> anyhow::Result<i32> {
        let status = self
            .cmd(args)
            .status()
            .with_context(|| format!("run berth {}", args.join(" ")))?;
        Ok(status.code().unwrap_or(1))
    }

    fn output(&self, args: &[String]) -> anyhow::Result<Output> {
        self.cmd(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run berth {}", args.join(" ")))
    }
}

fn s(v: &str) -> String {
    v.to_string()
}

pub async fn run(address: PathBuf, namespace: String, a: ComposeArgs) -> anyhow::Result<()> {
    let dir = match &a.project_directory {
        Some(d) => d.clone(),
        None => std::env::current_dir().context("the current directory")?,
    };
    let project = compose::load(&dir, &a.files, a.project.as_deref())?;
    let b = Berth {
        exe: std::env::current_exe().context("berth's own path")?,
        address,
        namespace,
    };
    // The steps block (child processes, polling): off the async workers.
    tokio::task::spawn_blocking(move || dispatch(&b, &project, a.cmd)).await?
}

fn dispatch(b: &Berth, p: &Project, cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Config { quiet, services } => config(p, quiet, services),
        Cmd::Up {
            detach,
            build,
            services,
        } => up(b, p, detach, build, &services),
        Cmd::Down { volumes } => down(b, p, volumes),
        Cmd::Ps {
            all,
            quiet,
            services,
        } => ps(b, p, all, quiet, &services),
        Cmd::Logs { follow, services } => logs(b, p, follow, &services),
        Cmd::Build { services } => {
            for svc in p.selected(&services)? {
                if !svc.spec["build"].is_null() {
                    build(b, p, svc)?;
                }
            }
            Ok(())
        }
        Cmd::Pull { services } => {
            for svc in p.selected(&services)? {
                if svc.spec["image"].is_string() {
                    let image = svc.image(&p.name);
                    println!(" {} Pulling", svc.name);
                    b.quiet(&[s("pull"), image])?;
                    println!(" {} Pulled", svc.name);
                }
            }
            Ok(())
        }
        Cmd::Start { services } => each_container(b, p, &services, "start", None, "Started"),
        Cmd::Stop { timeout, services } => {
            each_container(b, p, &services, "stop", Some(timeout), "Stopped")
        }
        Cmd::Restart { timeout, services } => {
            each_container(b, p, &services, "restart", Some(timeout), "Started")
        }
        Cmd::Exec {
            no_tty: _,
            service,
            command,
        } => {
            let svc = p.service(&service)?;
            let mut args = vec![s("exec"), p.container_name(svc)];
            args.extend(command);
            let code = b.attached(&args)?;
            if code != 0 {
                return Err(Exit::with(code.clamp(1, 255) as u8, ""));
            }
            Ok(())
        }
        Cmd::Run {
            rm,
            service,
            command,
        } => one_off(b, p, &service, rm, command),
    }
}

fn config(p: &Project, quiet: bool, services: bool) -> anyhow::Result<()> {
    if quiet {
        return Ok(());
    }
    if services {
        for s in &p.services {
            println!("{}", s.name);
        }
        return Ok(());
    }
    let mut out = String::new();
    yaml_rust2::YamlEmitter::new(&mut out)
        .dump(&compose::to_yaml(&p.model))
        .map_err(|e| anyhow::anyhow!("write the model: {e}"))?;
    println!("{}", out.trim_start_matches("---\n"));
    Ok(())
}

/// The containers of the project (or of its services `only`), by name, with their state.
fn containers(
    b: &Berth,
    p: &Project,
    only: &[String],
) -> anyhow::Result<Vec<(String, String, String)>> {
    let out = b.quiet(&[
        s("ps"),
        s("-a"),
        s("--filter"),
        format!("label={PROJECT_LABEL}={}", p.name),
        s("--format"),
        format!("{{{{.Names}}}}\t{{{{.Label \"{SERVICE_LABEL}\"}}}}\t{{{{.State}}}}"),
    ])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let (name, svc, state) = (f.next()?, f.next()?, f.next()?);
            (only.is_empty() || only.iter().any(|o| o == svc))
                .then(|| (name.to_string(), svc.to_string(), state.to_string()))
        })
        .collect())
}

fn each_container(
    b: &Berth,
    p: &Project,
    services: &[String],
    verb: &str,
    timeout: Option<u64>,
    done: &str,
) -> anyhow::Result<()> {
    for (name, _, _) in containers(b, p, services)? {
        let mut args = vec![s(verb)];
        if let Some(t) = timeout {
            args.extend([s("-t"), t.to_string()]);
        }
        args.push(name.clone());
        b.quiet(&args)?;
        println!(" Container {name}  {done}");
    }
    Ok(())
}

fn build(b: &Berth, p: &Project, svc: &Service) -> anyhow::Result<()> {
    let spec = &svc.spec["build"];
    let (context, dockerfile, args) = match spec {
        Value::String(c) => (c.clone(), None, BTreeMap::new()),
        _ => (
            spec["context"].as_str().unwrap_or(".").to_string(),
            spec["dockerfile"].as_str().map(str::to_string),
            match &spec["args"] {
                Value::Object(m) => m
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| v.to_string()),
                        )
                    })
                    .collect(),
                Value::Array(a) => a
                    .iter()
                    .filter_map(|x| x.as_str())
                    .filter_map(|x| {
                        x.split_once('=')
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                    })
                    .collect(),
                _ => BTreeMap::new(),
            },
        ),
    };
    let context = p.dir.join(context);
    let mut cmd = vec![s("build"), s("-q"), s("-t"), svc.image(&p.name)];
    if let Some(f) = dockerfile {
        cmd.extend([s("-f"), context.join(f).display().to_string()]);
    }
    if let Some(t) = spec["target"].as_str() {
        cmd.extend([s("--target"), t.to_string()]);
    }
    for (k, v) in args {
        cmd.extend([s("--build-arg"), format!("{k}={v}")]);
    }
    cmd.push(context.display().to_string());
    println!(" {} Building", svc.name);
    b.quiet(&cmd)?;
    println!(" {} Built", svc.name);
    Ok(())
}

/// The `run` flags of a service's container (all but the image and command).
fn run_flags(p: &Project, svc: &Service) -> anyhow::Result<Vec<String>> {
    let spec = &svc.spec;
    let mut f = vec![
        s("--label"),
        format!("{PROJECT_LABEL}={}", p.name),
        s("--label"),
        format!("{SERVICE_LABEL}={}", svc.name),
    ];
    match &spec["labels"] {
        Value::Object(m) => {
            for (k, v) in m {
                f.extend([
                    s("--label"),
                    format!(
                        "{k}={}",
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string())
                    ),
                ]);
            }
        }
        Value::Array(a) => {
            for l in a.iter().filter_map(|l| l.as_str()) {
                f.extend([s("--label"), l.to_string()]);
            }
        }
        _ => {}
    }
    for e in svc.environment(&p.dir, &p.vars)? {
        f.extend([s("-e"), e]);
    }
    // Networks: the first joined at run with the service's name as alias.
    if let Some(mode) = spec["network_mode"].as_str() {
        let mode = match mode.strip_prefix("service:") {
            Some(other) => format!("container:{}", p.container_name(p.service(other)?)),
            None => mode.to_string(),
        };
        f.extend([s("--network"), mode]);
    }
    for (net, aliases) in svc.networks() {
        let spec = p.networks.get(&net).cloned().unwrap_or(Value::Null);
        f.extend([s("--network"), p.resource_name(&spec, &net)]);
        for a in std::iter::once(svc.name.clone()).chain(aliases) {
            f.extend([s("--network-alias"), a]);
        }
    }
    for port in spec["ports"].as_array().into_iter().flatten() {
        let text = match port {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Object(m) => {
                let target = m.get("target").map(|t| t.to_string()).unwrap_or_default();
                let published = m.get("published").and_then(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .or_else(|| v.as_u64().map(|n| n.to_string()))
                });
                let proto = m.get("protocol").and_then(|v| v.as_str()).unwrap_or("tcp");
                let ip = m
                    .get("host_ip")
                    .and_then(|v| v.as_str())
                    .map(|i| format!("{i}:"))
                    .unwrap_or_default();
                match published {
                    Some(pb) => format!("{ip}{pb}:{target}/{proto}"),
                    None => format!("{target}/{proto}"),
                }
            }
            _ => continue,
        };
        f.extend([s("-p"), text]);
    }
    for v in spec["volumes"].as_array().into_iter().flatten() {
        f.extend([s("-v"), volume(p, v)?]);
    }
    if let Some(r) = spec["restart"].as_str() {
        f.extend([s("--restart"), r.to_string()]);
    }
    if let Some(u) = spec["user"].as_str() {
        f.extend([s("-u"), u.to_string()]);
    }
    if let Some(w) = spec["working_dir"].as_str() {
        f.extend([s("-w"), w.to_string()]);
    }
    if let Some(h) = spec["hostname"].as_str() {
        f.extend([s("-h"), h.to_string()]);
    }
    if spec["tty"].as_bool() == Some(true) {
        f.push(s("-t"));
    }
    if spec["stdin_open"].as_bool() == Some(true) {
        f.push(s("-i"));
    }
    if spec["init"].as_bool() == Some(true) {
        f.push(s("--init"));
    }
    if spec["read_only"].as_bool() == Some(true) {
        f.push(s("--read-only"));
    }
    if spec["privileged"].as_bool() == Some(true) {
        f.push(s("--privileged"));
    }
    for (key, flag) in [
        ("cap_add", "--cap-add"),
        ("cap_drop", "--cap-drop"),
        ("dns", "--dns"),
    ] {
        for c in spec[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str())
        {
            f.extend([s(flag), c.to_string()]);
        }
    }
    let limits = &spec["deploy"]["resources"]["limits"];
    let memory = limits["memory"]
        .as_str()
        .or_else(|| spec["mem_limit"].as_str());
    if let Some(m) = memory {
        f.extend([s("-m"), m.to_string()]);
    }
    let cpus = limits["cpus"]
        .as_str()
        .map(str::to_string)
        .or_else(|| limits["cpus"].as_f64().map(|c| c.to_string()))
        .or_else(|| spec["cpus"].as_f64().map(|c| c.to_string()));
    if let Some(c) = cpus {
        f.extend([s("--cpus"), c]);
    }
    if let Some(pids) = limits["pids"]
        .as_i64()
        .or_else(|| spec["pids_limit"].as_i64())
    {
        f.extend([s("--pids-limit"), pids.to_string()]);
    }
    match &spec["entrypoint"] {
        Value::String(e) => f.extend([s("--entrypoint"), e.clone()]),
        Value::Array(a) if !a.is_empty() => {
            f.extend([
                s("--entrypoint"),
                a[0].as_str().unwrap_or_default().to_string(),
            ]);
        }
        _ => {}
    }
    Ok(f)
}

/// The entrypoint's further words (after the first, which `--entrypoint` takes) and the
/// command: what follows the image on the `run` line.
fn run_args(svc: &Service) -> Vec<String> {
    let mut args: Vec<String> = match &svc.spec["entrypoint"] {
        Value::Array(a) => a
            .iter()
            .skip(1)
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    match &svc.spec["command"] {
        Value::String(c) => args.extend(split_words(c)),
        Value::Array(a) => args.extend(a.iter().filter_map(|x| x.as_str().map(str::to_string))),
        _ => {}
    }
    args
}

/// A `volumes:` entry as `-v` takes it: a project volume by its full name, a bind's host
/// path from the project directory.
fn volume(p: &Project, v: &Value) -> anyhow::Result<String> {
    let (source, target, mode) = match v {
        Value::String(text) => {
            let parts: Vec<&str> = text.splitn(3, ':').collect();
            match parts.as_slice() {
                [t] => return Ok((*t).to_string()),
                [s, t] => (s.to_string(), t.to_string(), None),
                [s, t, m] => (s.to_string(), t.to_string(), Some(m.to_string())),
                _ => anyhow::bail!("invalid volume {text:?}"),
            }
        }
        Value::Object(m) => {
            let target = m
                .get("target")
                .and_then(|t| t.as_str())
                .context("a volume needs a target")?;
            let source = m.get("source").and_then(|t| t.as_str()).unwrap_or_default();
            let ro = m.get("read_only").and_then(|r| r.as_bool()) == Some(true);
            if source.is_empty() {
                return Ok(target.to_string());
            }
            (source.to_string(), target.to_string(), ro.then(|| s("ro")))
        }
        _ => anyhow::bail!("invalid volume {v}"),
    };
    let is_path = source.starts_with(['.', '/', '~']);
    let source = if is_path {
        let path = if let Some(rest) = source.strip_prefix("~/") {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(rest)
        } else {
            p.dir.join(&source)
        };
        std::fs::create_dir_all(&path).ok();
        std::fs::canonicalize(&path)
            .unwrap_or(path)
            .display()
            .to_string()
    } else {
        let spec = p.volumes.get(&source).cloned().with_context(|| {
            format!("service refers to undefined volume {source}: invalid compose project")
        })?;
        p.resource_name(&spec, &source)
    };
    Ok(match mode {
        Some(m) => format!("{source}:{target}:{m}"),
        None => format!("{source}:{target}"),
    })
}

fn network_exists(b: &Berth, name: &str) -> anyhow::Result<bool> {
    Ok(b.output(&[s("network"), s("inspect"), name.to_string()])?
        .status
        .success())
}

/// Makes the project's networks and volumes that are not there yet.
fn resources(b: &Berth, p: &Project) -> anyhow::Result<()> {
    for (key, spec) in &p.networks {
        if spec["external"].as_bool() == Some(true) {
            continue;
        }
        let name = p.resource_name(spec, key);
        if network_exists(b, &name)? {
            continue;
        }
        let mut args = vec![
            s("network"),
            s("create"),
            s("--label"),
            format!("{PROJECT_LABEL}={}", p.name),
        ];
        if spec["internal"].as_bool() == Some(true) {
            args.push(s("--internal"));
        }
        for (k, v) in spec["driver_opts"].as_object().into_iter().flatten() {
            let v = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            args.extend([s("-o"), format!("{k}={v}")]);
        }
        for cfg in spec["ipam"]["config"].as_array().into_iter().flatten() {
            if let Some(sub) = cfg["subnet"].as_str() {
                args.extend([s("--subnet"), sub.to_string()]);
            }
            if let Some(gw) = cfg["gateway"].as_str() {
                args.extend([s("--gateway"), gw.to_string()]);
            }
        }
        args.push(name.clone());
        b.quiet(&args)?;
        println!(" Network {name}  Created");
    }
    let existing_vols = b.quiet(&[s("volume"), s("ls"), s("-q")])?;
    for (key, spec) in &p.volumes {
        if spec["external"].as_bool() == Some(true) {
            continue;
        }
        let name = p.resource_name(spec, key);
        if existing_vols.lines().any(|l| l == name) {
            continue;
        }
        b.quiet(&[
            s("volume"),
            s("create"),
            s("--label"),
            format!("{PROJECT_LABEL}={}", p.name),
            name.clone(),
        ])?;
        println!(" Volume \"{name}\"  Created");
    }
    Ok(())
}

fn up(
    b: &Berth,
    p: &Project,
    detach: bool,
    build_first: bool,
    only: &[String],
) -> anyhow::Result<()> {
    let services = p.selected(only)?;
    resources(b, p)?;
    let existing = containers(b, p, &[])?;
    let images = b.quiet(&[s("images"), s("--format"), s("{{.Repository}}:{{.Tag}}")])?;
    for svc in &services {
        let has_build = !svc.spec["build"].is_null();
        let image = svc.image(&p.name);
        let familiar = image.clone();
        let here = images
            .lines()
            .any(|l| l == familiar || l == format!("{familiar}:latest"));
        if has_build && (build_first || !here) {
            build(b, p, svc)?;
        }
        // What it depends on first, in the state asked for.
        for (dep, condition) in svc.depends_on() {
            let dep_svc = p.service(&dep)?;
            wait_for(b, p, dep_svc, &condition)?;
        }
        let name = p.container_name(svc);
        match existing.iter().find(|(n, _, _)| *n == name) {
            Some((_, _, state)) if state == "running" => {
                println!(" Container {name}  Running");
            }
            Some(_) => {
                b.quiet(&[s("start"), name.clone()])?;
                println!(" Container {name}  Started");
            }
            None => {
                let mut args = vec![s("run"), s("-d"), s("--name"), name.clone()];
                args.extend(run_flags(p, svc)?);
                args.push(image);
                args.extend(run_args(svc));
                b.quiet(&args)?;
                println!(" Container {name}  Started");
            }
        }
    }
    if detach {
        return Ok(());
    }
    let names: Vec<String> = services.iter().map(|svc| p.container_name(svc)).collect();
    attached_up(b, &names)
}

/// What an attached `up` waits on.
enum UpEvent {
    /// Ctrl-C or SIGTERM.
    Signal,
    /// Every container exited (their output all shown).
    Done(anyhow::Result<()>),
}

/// `up` without `-d`: everyone's output, prefixed, until all have exited. Ctrl-C (or
/// SIGTERM) stops the containers gracefully, as Compose does; a second one kills them.
fn attached_up(b: &Berth, names: &[String]) -> anyhow::Result<()> {
    println!("Attaching to {}", names.join(", "));
    let (tx, rx) = std::sync::mpsc::channel();
    let signals = tx.clone();
    let listener = tokio::runtime::Handle::current().spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        loop {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            if signals.send(UpEvent::Signal).is_err() {
                return;
            }
        }
    });
    let result = std::thread::scope(|scope| {
        scope.spawn(|| {
            let _ = tx.send(UpEvent::Done(follow(b, names, true)));
        });
        let mut stopping = false;
        loop {
            match rx.recv() {
                Ok(UpEvent::Done(r)) => return r,
                Ok(UpEvent::Signal) if !stopping => {
                    stopping = true;
                    println!("Gracefully stopping... (press Ctrl+C again to force)");
                    scope.spawn(|| {
                        for n in names {
                            match b.quiet(&[s("stop"), n.clone()]) {
                                Ok(_) => println!(" Container {n}  Stopped"),
                                Err(e) => eprintln!("berth: stop {n}: {e:#}"),
                            }
                        }
                    });
                }
                Ok(UpEvent::Signal) => {
                    let mut args = vec![s("kill")];
                    args.extend(names.iter().cloned());
                    let _ = b.quiet(&args);
                    return Err(Exit::with(2, "the containers were killed".to_string()));
                }
                Err(_) => return Ok(()),
            }
        }
    });
    listener.abort();
    result
}

/// Waits (bounded) until `svc`'s container is in the state `condition` asks for.
fn wait_for(b: &Berth, p: &Project, svc: &Service, condition: &str) -> anyhow::Result<()> {
    let name = p.container_name(svc);
    match condition {
        "service_started" => Ok(()),
        "service_completed_successfully" => {
            let code = b.quiet(&[s("wait"), name.clone()])?;
            if code.trim() != "0" {
                anyhow::bail!(
                    "service {:?} didn't complete successfully: exit {}",
                    svc.name,
                    code.trim()
                );
            }
            Ok(())
        }
        "service_healthy" => wait_healthy(b, svc, &name),
        other => anyhow::bail!("unknown depends_on condition {other:?}"),
    }
}

/// A `healthcheck`'s test run in the container until it passes (its interval between
/// tries, its retries after its start period), as the daemon's health checks would.
fn wait_healthy(b: &Berth, svc: &Service, name: &str) -> anyhow::Result<()> {
    let hc = &svc.spec["healthcheck"];
    let test: Vec<String> = match &hc["test"] {
        Value::String(t) => vec![s("sh"), s("-c"), t.clone()],
        Value::Array(a) => {
            let words: Vec<String> = a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect();
            match words.first().map(String::as_str) {
                Some("CMD-SHELL") => vec![s("sh"), s("-c"), words[1..].join(" ")],
                Some("CMD") => words[1..].to_vec(),
                Some("NONE") | None => anyhow::bail!("service {:?} has no healthcheck", svc.name),
                Some(_) => words,
            }
        }
        _ => anyhow::bail!("service {:?} has no healthcheck to be healthy by", svc.name),
    };
    let dur = |k: &str, default: u64| {
        hc[k]
            .as_str()
            .and_then(|d| humantime::parse_duration(d).ok())
            .unwrap_or(Duration::from_secs(default))
    };
    let interval = dur("interval", 30).min(Duration::from_secs(30));
    let start_period = dur("start_period", 0);
    let retries = hc["retries"].as_u64().unwrap_or(3);
    let began = Instant::now();
    let mut failures = 0;
    loop {
        let mut args = vec![s("exec"), name.to_string()];
        args.extend(test.clone());
        let out = b.output(&args)?;
        if out.status.success() {
            println!(" Container {name}  Healthy");
            return Ok(());
        }
        if began.elapsed() >= start_period {
            failures += 1;
        }
        if failures > retries {
            anyhow::bail!("dependency failed to start: container {name} is unhealthy");
        }
        std::thread::sleep(interval);
    }
}

/// Every named container's output, each line after its name, until all exited (or, not
/// `until_exit`, until ^C).
fn follow(b: &Berth, names: &[String], until_exit: bool) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let width = names.iter().map(String::len).max().unwrap_or(0);
    let mut children = Vec::new();
    for n in names {
        let mut args = vec![s("logs")];
        if until_exit {
            args.push(s("-f"));
        }
        args.push(n.clone());
        let mut child = b
            .cmd(&args)
            // A group of its own: the terminal's Ctrl-C is ours to handle, not the
            // followers' (they end when the containers do).
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("run berth logs")?;
        let prefix = format!("{n:width$}  | ");
        let out = child.stdout.take().context("logs stdout")?;
        let err = child.stderr.take().context("logs stderr")?;
        let threads = [prefixed(out, prefix.clone()), prefixed(err, prefix)];
        children.push((n, child, threads));
    }
    // Each container's end told as it comes (with its code, when following to the end).
    std::thread::scope(|scope| {
        for (n, mut child, threads) in children {
            scope.spawn(move || {
                let _ = child.wait();
                for t in threads {
                    let _ = t.join();
                }
                if until_exit
                    && let Ok(code) =
                        b.quiet(&[s("inspect"), s("-f"), s("{{.State.ExitCode}}"), n.clone()])
                {
                    println!("{n} exited with code {}", code.trim());
                }
            });
        }
    });
    Ok(())
}

fn prefixed(r: impl std::io::Read + Send + 'static, prefix: String) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(r).lines().map_while(Result::ok) {
            println!("{prefix}{line}");
        }
    })
}

fn logs(b: &Berth, p: &Project, follow_them: bool, only: &[String]) -> anyhow::Result<()> {
    let names: Vec<String> = containers(b, p, only)?
        .into_iter()
        .map(|(n, _, _)| n)
        .collect();
    follow(b, &names, follow_them)
}

fn ps(b: &Berth, p: &Project, all: bool, quiet: bool, only: &[String]) -> anyhow::Result<()> {
    let mut args = vec![
        s("ps"),
        s("--filter"),
        format!("label={PROJECT_LABEL}={}", p.name),
    ];
    if all {
        args.push(s("-a"));
    }
    for svc in only {
        args.extend([s("--filter"), format!("label={SERVICE_LABEL}={svc}")]);
    }
    if quiet {
        args.push(s("-q"));
        print!("{}", b.quiet(&args)?);
        return Ok(());
    }
    args.extend([
        s("--format"),
        format!("{{{{.Names}}}}\t{{{{.Image}}}}\t{{{{.Command}}}}\t{{{{.Label \"{SERVICE_LABEL}\"}}}}\t{{{{.RunningFor}}}}\t{{{{.Status}}}}\t{{{{.Ports}}}}"),
    ]);
    let out = b.quiet(&args)?;
    let rows: Vec<Vec<String>> = out
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect();
    // Docker Compose's columns.
    crate::output::table(
        &[
            "NAME", "IMAGE", "COMMAND", "SERVICE", "CREATED", "STATUS", "PORTS",
        ],
        &rows,
    )
}

fn down(b: &Berth, p: &Project, volumes: bool) -> anyhow::Result<()> {
    for (name, _, state) in containers(b, p, &[])? {
        if state == "running" || state == "paused" || state == "restarting" {
            b.quiet(&[s("stop"), name.clone()])?;
            println!(" Container {name}  Stopped");
        }
        let mut rm = vec![s("rm")];
        if volumes {
            rm.push(s("-v"));
        }
        rm.push(name.clone());
        b.quiet(&rm)?;
        println!(" Container {name}  Removed");
    }
    for (key, spec) in &p.networks {
        if spec["external"].as_bool() == Some(true) {
            continue;
        }
        let name = p.resource_name(spec, key);
        if network_exists(b, &name)? {
            b.quiet(&[s("network"), s("rm"), name.clone()])?;
            println!(" Network {name}  Removed");
        }
    }
    if volumes {
        let vols = b.quiet(&[s("volume"), s("ls"), s("-q")])?;
        for (key, spec) in &p.volumes {
            if spec["external"].as_bool() == Some(true) {
                continue;
            }
            let name = p.resource_name(spec, key);
            if vols.lines().any(|l| l == name) {
                b.quiet(&[s("volume"), s("rm"), name.clone()])?;
                println!(" Volume {name}  Removed");
            }
        }
    }
    Ok(())
}

/// `compose run`: a one-off container of the service, attached, on its networks.
fn one_off(
    b: &Berth,
    p: &Project,
    service: &str,
    rm: bool,
    command: Vec<String>,
) -> anyhow::Result<()> {
    let svc = p.service(service)?;
    resources(b, p)?;
    for (dep, condition) in svc.depends_on() {
        wait_for(b, p, p.service(&dep)?, &condition)?;
    }
    let name = format!(
        "{}-{}-run-{}",
        p.name,
        svc.name,
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let mut args = vec![s("run"), s("--name"), name];
    if rm {
        args.push(s("--rm"));
    }
    args.extend([s("--label"), format!("{ONEOFF_LABEL}=True")]);
    // Ports are not published by a one-off container (Compose's default).
    let mut flags = run_flags(p, svc)?;
    let mut i = 0;
    while i < flags.len() {
        if flags[i] == "-p" {
            flags.drain(i..i + 2);
        } else {
            i += 1;
        }
    }
    args.extend(flags);
    args.push(svc.image(&p.name));
    if command.is_empty() {
        args.extend(run_args(svc));
    } else {
        args.extend(command);
    }
    let code = b.attached(&args)?;
    if code != 0 {
        return Err(Exit::with(code.clamp(1, 255) as u8, ""));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_as_compose_splits_them() {
        assert_eq!(
            split_words("sh -c 'echo hi; exit 3'"),
            ["sh", "-c", "echo hi; exit 3"]
        );
        assert_eq!(split_words("a \"b c\" d\\ e"), ["a", "b c", "d e"]);
    }

    #[test]
    fn volumes_as_run_takes_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("compose.yaml"),
            "services:\n  a: {image: x}\nvolumes:\n  data: {}\n",
        )
        .unwrap();
        let p = compose::load(dir.path(), &[], Some("proj")).unwrap();
        assert_eq!(
            volume(&p, &Value::String(s("data:/d"))).unwrap(),
            "proj_data:/d"
        );
        assert_eq!(volume(&p, &Value::String(s("/anon"))).unwrap(), "/anon");
        let bind = volume(&p, &Value::String(s("./site:/usr/share:ro"))).unwrap();
        assert!(
            bind.ends_with("/site:/usr/share:ro") && bind.starts_with('/'),
            "{bind}"
        );
        assert!(volume(&p, &Value::String(s("nope:/x"))).is_err());
    }
}
