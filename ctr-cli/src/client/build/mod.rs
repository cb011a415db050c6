//! `build`: a Dockerfile built as Docker's classic builder builds it, on berthd's own
//! content store, snapshots, Diff service and tasks. Each step starts from the image the
//! step before left: metadata instructions change its config (an empty layer in the
//! history); `RUN` runs as a task in a container on a snapshot of it, `COPY`/`ADD` copy from
//! the context (or an earlier stage) into such a snapshot, and what they changed becomes a
//! layer ([`super::commit`]). Every step's image is kept as an intermediate image labelled
//! with the step's cache key ([`labels::BUILD_CACHE`]: the parent image's ID, the
//! instruction, and for COPY/ADD the sources' contents), so a later build that reaches the
//! same step takes it from the cache (printing `CACHED`, BuildKit's word for it). The
//! result is tagged with each `-t`.

pub mod dockerfile;
mod ignore;
mod remote;
mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use berth_proto::containerd::services::containers::v1 as pb;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use self::dockerfile::{Instruction, json_form, substitute};
use super::commit::{self, Layer};
use super::snapshots::{self, Create};
use super::staging::Staging;
use super::{Client, containers, image_config, images, spec, status, tasks, transfer};
use crate::exit::Exit;
use crate::{labels, oci};

/// What `build` takes.
#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// Name the image (several allowed).
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Build-time variables (`NAME=value`, or `NAME` to take it from the environment).
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Build every step again, whatever the cache has.
    #[arg(long)]
    pub no_cache: bool,
    /// Pull the base images even when they are here.
    #[arg(long)]
    pub pull: bool,
    /// Labels of the image (`key=value`).
    #[arg(long)]
    pub label: Vec<String>,
    /// Print only the image ID.
    #[arg(short, long)]
    pub quiet: bool,
    /// The network of RUN steps: default (a bridge), host or none.
    #[arg(long, default_value = "default")]
    pub network: String,
    /// Write the image ID to this file.
    #[arg(long)]
    pub iidfile: Option<PathBuf>,
    /// Build this stage (and what it needs) only.
    #[arg(long)]
    pub target: Option<String>,
    /// This host's platform only.
    #[arg(long)]
    pub platform: Option<String>,
    /// auto, plain or tty (the classic builder's step lines in every case).
    #[arg(long, default_value = "auto")]
    pub progress: String,
    /// The build context: a directory, or `-` for a tar archive on stdin.
    pub context: String,
}

/// The image a stage is at.
#[derive(Debug, Clone)]
struct Stage {
    name: Option<String>,
    /// The whole image config (`config`, `rootfs`, `history`...).
    config: Value,
    /// The manifest's layers.
    layers: Value,
    /// The image's ID ("" for scratch with no step yet).
    id: String,
    /// ARG and ENV values, for substitution.
    vars: BTreeMap<String, String>,
    /// The build args declared in the stage (passed to RUN).
    args: BTreeMap<String, String>,
}

impl Stage {
    fn scratch(name: Option<String>) -> Stage {
        Stage {
            name,
            config: json!({
                "architecture": arch(),
                "os": "linux",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": []},
                "history": [],
            }),
            layers: json!([]),
            id: String::new(),
            vars: BTreeMap::new(),
            args: BTreeMap::new(),
        }
    }

    /// The snapshot of its top layer (None for an empty image).
    fn top(&self) -> Option<String> {
        berth_oci::image::chain_ids(&commit::diff_ids_of(&self.config))
            .last()
            .cloned()
    }

    fn run_config(&mut self) -> &mut Value {
        if !self.config["config"].is_object() {
            self.config["config"] = json!({});
        }
        &mut self.config["config"]
    }

    fn shell(&self) -> Vec<String> {
        self.config["config"]["Shell"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .filter(|v: &Vec<String>| !v.is_empty())
            .unwrap_or_else(|| vec!["/bin/sh".to_string(), "-c".to_string()])
    }

    fn env(&self) -> Vec<String> {
        self.config["config"]["Env"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// This host's OCI architecture (`amd64`...).
fn arch() -> String {
    berth_oci::image::host_platform().architecture
}

/// The build's own state: where the output goes and what the build holds.
struct Builder<'a> {
    c: &'a Client,
    a: &'a BuildArgs,
    context: PathBuf,
    ignore: ignore::Patterns,
    lease: String,
    snapshotter: String,
    build_args: BTreeMap<String, String>,
    stages: Vec<Stage>,
    view: view::View,
}

impl Builder<'_> {
    fn say(&self, line: &str) {
        self.view.say(line);
    }
}

/// Builds; returns the image's ID.
pub async fn build(c: &Client, a: &BuildArgs) -> anyhow::Result<String> {
    if let Some(p) = a.platform.as_deref()
        && p != format!("linux/{}", arch())
        && p != "linux"
    {
        anyhow::bail!(
            "platform {p} is not supported: this host builds linux/{} only",
            arch()
        );
    }
    if !["default", "bridge", "host", "none"].contains(&a.network.as_str()) {
        anyhow::bail!(
            "network mode {:?} not supported: default, host or none",
            a.network
        );
    }
    let (context, _staging) = context_dir(&a.context)?;
    let dockerfile = match &a.file {
        Some(f) if f.is_relative() && !f.exists() => context.join(f),
        Some(f) => f.clone(),
        None => context.join("Dockerfile"),
    };
    let text = std::fs::read_to_string(&dockerfile)
        .with_context(|| format!("read the Dockerfile {}", dockerfile.display()))?;
    let instructions = dockerfile::parse(&text)?;
    if instructions
        .first()
        .is_none_or(|i| i.keyword != "FROM" && i.keyword != "ARG")
    {
        anyhow::bail!("the Dockerfile must start with FROM (or ARG)");
    }
    let ignore = ignore::Patterns::read(&context)?;
    let view = view::View::new(a.quiet, &a.progress)?;
    let mut build_args = BTreeMap::new();
    for b in &a.build_args {
        match b.split_once('=') {
            Some((k, v)) => build_args.insert(k.to_string(), v.to_string()),
            None => build_args.insert(b.clone(), std::env::var(b).unwrap_or_default()),
        };
    }
    let lease = c
        .create_lease(None, std::time::Duration::from_secs(3600), &[])
        .await?;
    let mut b = Builder {
        c,
        a,
        context,
        ignore,
        lease: lease.clone(),
        snapshotter: labels::SNAPSHOTTER.to_string(),
        build_args,
        stages: Vec::new(),
        view,
    };
    let result = b.run(&instructions).await;
    if result.is_err() {
        b.view.failed();
    }
    if let Err(e) = c.delete_lease(&lease).await {
        eprintln!("berth: delete lease {lease}: {e:#}");
    }
    let id = result?;
    if let Some(path) = &a.iidfile {
        std::fs::write(path, &id).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(id)
}

/// The context directory (a tar on stdin unpacked into a private directory, removed with
/// the guard).
fn context_dir(given: &str) -> anyhow::Result<(PathBuf, Option<Staging>)> {
    if given != "-" {
        let dir = PathBuf::from(given);
        if !dir.is_dir() {
            anyhow::bail!("unable to prepare context: path {given:?} not found");
        }
        return Ok((dir, None));
    }
    let staging = Staging::new("berth-build-context")?;
    let status = std::process::Command::new("tar")
        .arg("-C")
        .arg(staging.path())
        .args(["-xf", "-", "--no-same-owner"])
        .stdin(std::process::Stdio::inherit())
        .status()
        .context("run tar")?;
    if !status.success() {
        anyhow::bail!("the context on stdin is not a tar archive: tar {status}");
    }
    Ok((staging.path().to_path_buf(), Some(staging)))
}

impl Builder<'_> {
    async fn run(&mut self, all: &[Instruction]) -> anyhow::Result<String> {
        // ARGs before the first FROM are for the FROM lines.
        let mut global: BTreeMap<String, String> = BTreeMap::new();
        let first_from = all.iter().position(|i| i.keyword == "FROM").unwrap_or(0);
        let declared = first_from;
        let steps: Vec<&Instruction> = all[first_from..].iter().collect();
        // Only the stages up to the target are built.
        let last = match &self.a.target {
            Some(t) => {
                let pos = steps.iter().rposition(|i| {
                    i.keyword == "FROM" && stage_name(&i.rest).is_some_and(|n| n == *t)
                });
                let Some(pos) = pos else {
                    anyhow::bail!("target stage {t:?} could not be found");
                };
                steps[pos + 1..]
                    .iter()
                    .position(|i| i.keyword == "FROM")
                    .map(|n| pos + 1 + n)
                    .unwrap_or(steps.len())
            }
            None => steps.len(),
        };
        let steps = &steps[..last];
        // Only the stages the target needs are built (the target, the stages its FROM and
        // COPY --from name, and theirs).
        let stage_of = stage_indices(steps);
        let needed = needed_stages(steps, &stage_of);
        let wanted = |n: usize| needed.contains(&stage_of[n]);
        // The ARGs before the first FROM count as steps, as the classic builder counts them.
        let total = declared + (0..steps.len()).filter(|n| wanted(*n)).count();
        let mut shown_n = declared;
        for (n, i) in all[..first_from].iter().enumerate() {
            self.view.step(n + 1, total, &format!("ARG {}", i.rest));
            let (k, v) = arg_pair(&i.rest);
            let v = self.build_args.get(&k).cloned().or(v).unwrap_or_default();
            global.insert(k, v);
        }
        for (i, ins) in steps.iter().enumerate() {
            if !wanted(i) {
                // A stage nobody needs: a place kept so that stage indices hold.
                if ins.keyword == "FROM" {
                    self.stages.push(Stage::scratch(stage_name(&ins.rest)));
                }
                continue;
            }
            let n = shown_n;
            shown_n += 1;
            let shown = if ins.keyword == "FROM" {
                substitute(&ins.rest, &global)?
            } else {
                ins.rest.clone()
            };
            self.view
                .step(n + 1, total, &format!("{} {shown}", ins.keyword));
            if ins.keyword == "FROM" {
                let mut stage = self.from(&shown).await?;
                self.say(&format!(" ---> {}", images::short_image_id(&stage.id)));
                // The base image's ONBUILD triggers run first, and are not inherited.
                let triggers: Vec<String> = stage.config["config"]["OnBuild"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect();
                if !triggers.is_empty() {
                    stage.run_config()["OnBuild"] = Value::Null;
                }
                self.stages.push(stage);
                if !triggers.is_empty() {
                    self.say(&format!("# Executing {} build trigger(s)", triggers.len()));
                    for t in &triggers {
                        for trigger in dockerfile::parse(t)? {
                            if ["FROM", "ONBUILD", "MAINTAINER"].contains(&trigger.keyword.as_str())
                            {
                                anyhow::bail!(
                                    "{} isn't allowed as an ONBUILD trigger",
                                    trigger.keyword
                                );
                            }
                            self.step(&trigger).await?;
                        }
                    }
                }
                continue;
            }
            self.step(ins).await?;
        }
        let stage = self.stages.last().cloned().context("no stage was built")?;
        let mut id = stage.id.clone();
        if stage.id.is_empty() || !self.a.label.is_empty() {
            // A label of the command line, or a scratch image with no step: one more image.
            let mut st = stage;
            for l in &self.a.label {
                image_config::apply(st.run_config(), &format!("LABEL {l}"))?;
            }
            id = self.store(&mut st, None, true).await?;
        }
        let mut names = Vec::new();
        for t in &self.a.tags {
            let name = oci::normalize(t);
            self.tag(&id, &name).await?;
            names.push((name.clone(), oci::familiar(&name).to_string()));
        }
        self.view.finish(&id, &images::short_image_id(&id), &names);
        Ok(id)
    }

    /// `FROM image [AS name]`: an earlier stage, `scratch`, or an image (pulled when it is
    /// not here, or always with --pull).
    async fn from(&self, rest: &str) -> anyhow::Result<Stage> {
        let mut words = rest.split_whitespace();
        let image = words.next().context("FROM needs an image")?;
        let name = stage_name(rest);
        if let Some(st) = self
            .stages
            .iter()
            .rev()
            .find(|s| s.name.as_deref() == Some(image))
        {
            let mut st = st.clone();
            st.name = name;
            st.args = BTreeMap::new();
            return Ok(st);
        }
        let mut stage = if image == "scratch" {
            Stage::scratch(name)
        } else {
            let found = match images::find(self.c, image).await {
                Ok(img) if !self.a.pull => img,
                _ => {
                    transfer::fetch(self.c, image.to_string(), None, false, false, true)
                        .await
                        .with_context(|| format!("pull {image}"))?;
                    images::find(self.c, image).await?
                }
            };
            let r = oci::resolve(self.c, &found.target.clone().unwrap_or_default()).await?;
            Stage {
                name,
                config: r.config.clone(),
                layers: r.manifest["layers"].clone(),
                id: r.config_digest.clone(),
                vars: BTreeMap::new(),
                args: BTreeMap::new(),
            }
        };
        // ENV of the image is substituted in later steps; global ARGs are not (unless
        // declared again), as Docker's.
        for e in stage.env() {
            if let Some((k, v)) = e.split_once('=') {
                stage.vars.insert(k.to_string(), v.to_string());
            }
        }
        Ok(stage)
    }

    /// One instruction after FROM.
    async fn step(&mut self, ins: &Instruction) -> anyhow::Result<()> {
        let mut st = self.stages.last().cloned().context("no FROM before")?;
        let subst = |s: &Stage| substitute(&ins.rest, &s.vars);
        let text;
        let mut sources_hash = String::new();
        let mut fetched = None;
        match ins.keyword.as_str() {
            "RUN" => {
                text = ins.rest.clone();
                // A here-document is part of the command (and of its cache key).
                sources_hash = heredocs_hash(&ins.heredocs);
            }
            "CMD" | "ENTRYPOINT" | "SHELL" | "HEALTHCHECK" | "ONBUILD" => text = ins.rest.clone(),
            "COPY" | "ADD" => {
                text = subst(&st)?;
                if ins.keyword == "ADD" && ins.heredocs.is_empty() {
                    // URL sources are fetched first: their contents key the step.
                    let (_, words) = copy_words(&text)?;
                    if let Some((dest, srcs)) = words.split_last() {
                        fetched = remote::fetch(srcs, dest.ends_with('/') || srcs.len() > 1)
                            .await
                            .map_err(|e| anyhow::anyhow!("ADD failed: {e:#}"))?;
                    }
                }
                sources_hash = if ins.heredocs.is_empty() {
                    let local = self.hash_sources(&text)?;
                    match &fetched {
                        Some(f) if local.is_empty() => f.hash.clone(),
                        Some(f) => format!("{local},{}", f.hash),
                        None => local,
                    }
                } else {
                    heredocs_hash(&ins.heredocs)
                };
            }
            _ => text = subst(&st)?,
        }
        // ARG: a variable for the rest of the stage, with the build's value (and a step
        // of its own in the history, as the classic builder makes).
        if ins.keyword == "ARG" {
            let (k, v) = arg_pair(&text);
            let v = self.build_args.get(&k).cloned().or(v).unwrap_or_default();
            st.vars.entry(k.clone()).or_insert_with(|| v.clone());
            st.args.insert(k, v);
        }
        let args_text: Vec<String> = st.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let key = berth_oci::image::sha256_digest(
            format!(
                "{}\n{} {}\n{}\n{}",
                st.id,
                ins.keyword,
                text,
                sources_hash,
                args_text.join(" ")
            )
            .as_bytes(),
        );
        if !self.a.no_cache
            && let Some(cached) = self.cached(&key).await?
        {
            st.config = cached.0;
            st.layers = cached.1;
            st.id = cached.2;
            self.view.cached();
            self.say(&format!(" ---> {}", images::short_image_id(&st.id)));
            self.after(&mut st, ins);
            *self.stages.last_mut().context("stage")? = st;
            return Ok(());
        }
        let created_by;
        let mut layer = None;
        match ins.keyword.as_str() {
            "RUN" => {
                let cmd = match json_form(&text) {
                    Some(v) => v,
                    None => {
                        let mut v = st.shell();
                        v.push(with_heredocs(&text, &ins.heredocs));
                        v
                    }
                };
                created_by = match json_form(&text) {
                    Some(v) => format!("RUN {}", serde_json::to_string(&v)?),
                    None => format!(
                        "{} {}",
                        st.shell().join(" "),
                        with_heredocs(&text, &ins.heredocs)
                    ),
                };
                layer = self.run_step(&st, cmd).await?;
            }
            "COPY" | "ADD" => {
                created_by = format!(
                    "/bin/sh -c #(nop) {} {} in {}",
                    ins.keyword,
                    sources_hash,
                    text.split_whitespace().last().unwrap_or_default()
                );
                layer = self.copy_step(&st, ins, &text, fetched.as_ref()).await?;
            }
            "WORKDIR" => {
                self.apply_meta(&mut st, &ins.keyword, &text)?;
                created_by = format!("/bin/sh -c #(nop) WORKDIR {text}");
                // The directory is made when missing: a layer then, as the classic builder.
                layer = self.workdir_step(&st).await?;
            }
            "ARG" => created_by = format!("/bin/sh -c #(nop)  ARG {text}"),
            _ => {
                self.apply_meta(&mut st, &ins.keyword, &text)?;
                created_by = format!("/bin/sh -c #(nop)  {} {}", ins.keyword, text);
            }
        }
        commit::push(
            &mut st.config["history"],
            json!({
                "created": humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
                "created_by": created_by,
            }),
        );
        match &layer {
            Some(l) => {
                let mut layers = st.layers.clone();
                commit::add_layer(
                    self.c,
                    &self.snapshotter,
                    &mut st.config,
                    &mut layers,
                    l,
                    &self.lease,
                )
                .await?;
                st.layers = layers;
            }
            None => commit::mark_empty(&mut st.config),
        }
        st.id = self.store(&mut st, Some(&key), false).await?;
        self.say(&format!(" ---> {}", images::short_image_id(&st.id)));
        self.after(&mut st, ins);
        *self.stages.last_mut().context("stage")? = st;
        Ok(())
    }

    /// What a step leaves for the next ones besides its image: ENV values to substitute.
    fn after(&self, st: &mut Stage, ins: &Instruction) {
        if ins.keyword == "ENV" {
            for e in st.env() {
                if let Some((k, v)) = e.split_once('=') {
                    st.vars.insert(k.to_string(), v.to_string());
                }
            }
        }
    }

    /// A metadata instruction applied to the stage's config.
    fn apply_meta(&self, st: &mut Stage, keyword: &str, text: &str) -> anyhow::Result<()> {
        match keyword {
            "MAINTAINER" => {
                st.config["author"] = json!(text);
                Ok(())
            }
            "SHELL" => {
                let shell =
                    json_form(text).context("SHELL requires the arguments to be in JSON form")?;
                st.run_config()["Shell"] = json!(shell);
                Ok(())
            }
            "HEALTHCHECK" => {
                st.run_config()["Healthcheck"] = healthcheck(text)?;
                Ok(())
            }
            "CMD" | "ENTRYPOINT" => {
                let v = match json_form(text) {
                    Some(v) => v,
                    None => {
                        let mut v = st.shell();
                        v.push(text.to_string());
                        v
                    }
                };
                let key = if keyword == "CMD" {
                    "Cmd"
                } else {
                    "Entrypoint"
                };
                st.run_config()[key] = json!(v);
                Ok(())
            }
            other => image_config::apply(st.run_config(), &format!("{other} {text}")),
        }
    }

    /// The image of an earlier build's step with this cache key: its config, layers, ID.
    async fn cached(&self, key: &str) -> anyhow::Result<Option<(Value, Value, String)>> {
        let filter = format!("labels.\"{}\"=={key}", labels::BUILD_CACHE);
        for img in images::list(self.c, vec![filter]).await? {
            if let Ok(r) = oci::resolve(self.c, &img.target.clone().unwrap_or_default()).await {
                return Ok(Some((
                    r.config.clone(),
                    r.manifest["layers"].clone(),
                    r.config_digest.clone(),
                )));
            }
        }
        Ok(None)
    }

    /// Stores the stage's image (an intermediate one holding cache `key`); its ID.
    async fn store(
        &self,
        st: &mut Stage,
        key: Option<&str>,
        final_only: bool,
    ) -> anyhow::Result<String> {
        let mut image_labels = BTreeMap::new();
        if let Some(k) = key {
            image_labels.insert(labels::BUILD_CACHE.to_string(), k.to_string());
        } else if final_only {
            image_labels.insert(labels::BUILD_CACHE.to_string(), "final".to_string());
        }
        st.config["created"] =
            json!(humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string());
        let id = commit::store_image(
            self.c,
            None,
            &self.snapshotter,
            st.config.clone(),
            st.layers.clone(),
            image_labels,
            &self.lease,
        )
        .await?;
        st.id = id.clone();
        Ok(id)
    }

    /// Names image `id` `name` (a record of its own, as `tag` makes).
    async fn tag(&self, id: &str, name: &str) -> anyhow::Result<()> {
        let found = images::by_id(self.c, id)
            .await?
            .into_iter()
            .next()
            .with_context(|| format!("image {id} went away"))?;
        let image = berth_proto::containerd::services::images::v1::Image {
            name: name.to_string(),
            target: found.target.clone(),
            ..Default::default()
        };
        images::put(self.c, image, false).await
    }

    /// A snapshot of the stage's image, as a container record would name it (not made).
    async fn scratch_container(&self, st: &Stage, id: &str) -> anyhow::Result<pb::Container> {
        snapshots::create(
            self.c,
            &self.snapshotter,
            Create::Active,
            id,
            st.top(),
            BTreeMap::new(),
            Some(&self.lease),
        )
        .await
        .map_err(status)?;
        Ok(pb::Container {
            id: id.to_string(),
            snapshotter: self.snapshotter.clone(),
            snapshot_key: id.to_string(),
            ..Default::default()
        })
    }

    /// RUN: the command as a task in a container on a snapshot of the stage's image; its
    /// output shown; a failure stops the build with the command's code. Nothing of the
    /// container stays.
    async fn run_step(&self, st: &Stage, cmd: Vec<String>) -> anyhow::Result<Option<Layer>> {
        let c = self.c;
        let id = containers::new_id();
        let mut ct = self.scratch_container(st, &id).await?;
        let img_cfg = spec::ImageConfig::from_image(&st.config);
        let user = img_cfg.user.clone();
        let accounts = match (&st.top(), user.is_empty()) {
            (Some(top), false) => {
                spec::read_accounts(c, &self.snapshotter, top, &format!("{id}-acc"), &self.lease)
                    .await?
            }
            _ => spec::Accounts::default(),
        };
        let network = match self.a.network.as_str() {
            "default" => "bridge",
            other => other,
        };
        // The build's args reach the command as variables (ENV wins).
        let env: Vec<String> = st
            .args
            .iter()
            .filter(|(k, _)| !st.env().iter().any(|e| e.split('=').next() == Some(k)))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let opts = spec::Options {
            id: id.clone(),
            namespace: c.namespace.clone(),
            args: cmd.clone(),
            entrypoint: Some(String::new()),
            env,
            own_network: network != "host",
            ..Default::default()
        };
        let spec_json = spec::build(&img_cfg, &opts, &accounts, &spec::host_capabilities())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        ct.labels = BTreeMap::from([(labels::NETWORK.to_string(), network.to_string())]);
        ct.image = "build".to_string();
        ct.runtime = Some(pb::container::Runtime {
            name: labels::RUNC_RUNTIME.to_string(),
            options: None,
        });
        ct.spec = Some(prost_types::Any {
            type_url: labels::SPEC_TYPE_URL.to_string(),
            value: serde_json::to_vec(&spec_json)?,
        });
        let made = containers::api(c)
            .create(c.leased(
                pb::CreateContainerRequest {
                    container: Some(ct.clone()),
                },
                &self.lease,
            ))
            .await
            .map_err(status);
        let result = async {
            made?;
            self.say(&format!(" ---> Running in {}", &id[..12]));
            let code = super::docker::run_attached_to(c, &ct, false, self.view.output()).await?;
            if code != 0 {
                return Err(Exit::with(
                    code as u8,
                    format!(
                        "The command '{}' returned a non-zero code: {code}",
                        cmd.join(" ")
                    ),
                ));
            }
            commit::container_layer(c, &ct, &self.lease).await
        }
        .await;
        let _ = tasks::delete(c, &id).await;
        let _ = containers::delete(c, &id).await;
        let _ = snapshots::remove(c, &self.snapshotter, &id).await;
        result
    }

    /// COPY/ADD: the sources (from the context, or `--from` an earlier stage or image)
    /// copied into a snapshot of the stage's image.
    async fn copy_step(
        &self,
        st: &Stage,
        ins: &Instruction,
        text: &str,
        fetched: Option<&remote::Fetched>,
    ) -> anyhow::Result<Option<Layer>> {
        let keyword = ins.keyword.as_str();
        let (flags, mut words) = copy_words(text)?;
        // Here-documents are files of their own, in a directory of their own.
        let heredocs = if ins.heredocs.is_empty() {
            None
        } else {
            let dir = Staging::new("berth-build-heredoc")?;
            for h in &ins.heredocs {
                std::fs::write(dir.path().join(&h.name), &h.content)?;
            }
            for w in words.iter_mut() {
                if w.starts_with("<<") {
                    *w = w
                        .trim_start_matches("<<")
                        .trim_start_matches('-')
                        .trim_matches(['"', '\''])
                        .to_string();
                }
            }
            Some(dir)
        };
        if words.len() < 2 {
            anyhow::bail!("{keyword} requires at least two arguments");
        }
        let (srcs, dest) = words.split_at(words.len() - 1);
        let dest = dest[0].clone();
        let workdir = st.config["config"]["WorkingDir"]
            .as_str()
            .unwrap_or("/")
            .to_string();
        let dest_abs = if dest.starts_with('/') {
            dest.clone()
        } else {
            format!("{}/{dest}", workdir.trim_end_matches('/'))
        };
        let dir_dest = dest.ends_with('/') || srcs.len() > 1;
        let id = containers::new_id();
        let ct = self.scratch_container(st, &id).await?;
        let result = async {
            // The source root: the context, or an earlier stage's image mounted here.
            let from = flags.get("from").cloned();
            let job = CopyJob {
                srcs: srcs
                    .iter()
                    .filter(|s| !remote::is_url(s))
                    .cloned()
                    .collect(),
                dest: dest_abs,
                dir_dest,
                chown: flags.get("chown").cloned(),
                chmod: flags.get("chmod").cloned(),
                extract: keyword == "ADD",
            };
            // The downloaded files: copied from where they were saved, never unpacked.
            if let Some(f) = fetched {
                if from.is_some() {
                    anyhow::bail!("{keyword} --from cannot take a URL source");
                }
                let url_job = CopyJob {
                    srcs: srcs
                        .iter()
                        .filter_map(|s| f.name_of(s).map(str::to_string))
                        .collect(),
                    extract: false,
                    ..job.clone()
                };
                let dir = f.dir.path().to_path_buf();
                super::rootfs::with_root(self.c, &ct, move |root| url_job.run(&dir, None, root))
                    .await?;
                if job.srcs.is_empty() {
                    return commit::container_layer(self.c, &ct, &self.lease).await;
                }
            }
            match from {
                None if heredocs.is_some() => {
                    let dir = heredocs
                        .as_ref()
                        .map(|d| d.path().to_path_buf())
                        .unwrap_or_default();
                    super::rootfs::with_root(self.c, &ct, move |root| job.run(&dir, None, root))
                        .await?;
                }
                None => {
                    let context = self.context.clone();
                    let ignore = self.ignore.clone();
                    super::rootfs::with_root(self.c, &ct, move |root| {
                        job.run(&context, Some(&ignore), root)
                    })
                    .await?;
                }
                Some(f) => {
                    let src_top = self.stage_top(&f).await?;
                    let f = f.clone();
                    let view = format!("{id}-from");
                    let mounts = snapshots::create(
                        self.c,
                        &self.snapshotter,
                        Create::View,
                        &view,
                        src_top,
                        BTreeMap::new(),
                        Some(&self.lease),
                    )
                    .await
                    .map_err(status)?;
                    let local = snapshots::to_local(&mounts);
                    let copied = super::rootfs::with_root(self.c, &ct, move |root| {
                        let mut out = None;
                        berth_snapshotter::mount::with_temp_mount(&local, |src| {
                            out = Some(job.run(src, None, root));
                            Ok(())
                        })?;
                        out.unwrap_or_else(|| Err(anyhow::anyhow!("mount of {f} failed")))
                    })
                    .await;
                    let _ = snapshots::remove(self.c, &self.snapshotter, &view).await;
                    copied?;
                }
            }
            commit::container_layer(self.c, &ct, &self.lease).await
        }
        .await;
        let _ = snapshots::remove(self.c, &self.snapshotter, &id).await;
        result
    }

    /// WORKDIR: the directory made in a snapshot of the stage's image when it is missing.
    async fn workdir_step(&self, st: &Stage) -> anyhow::Result<Option<Layer>> {
        let dir = st.config["config"]["WorkingDir"]
            .as_str()
            .unwrap_or("/")
            .to_string();
        let id = containers::new_id();
        let ct = self.scratch_container(st, &id).await?;
        let result = async {
            super::rootfs::with_root(self.c, &ct, move |root| {
                let path = super::rootfs::resolve_in_root(root, Path::new(&dir))?;
                std::fs::create_dir_all(&path)
                    .with_context(|| format!("WORKDIR {dir}: create {}", path.display()))
            })
            .await?;
            commit::container_layer(self.c, &ct, &self.lease).await
        }
        .await;
        let _ = snapshots::remove(self.c, &self.snapshotter, &id).await;
        result
    }

    /// The top snapshot of an earlier stage (by name or index) or an image.
    async fn stage_top(&self, from: &str) -> anyhow::Result<Option<String>> {
        let stage = self
            .stages
            .iter()
            .find(|s| s.name.as_deref() == Some(from))
            .or_else(|| from.parse::<usize>().ok().and_then(|i| self.stages.get(i)));
        if let Some(s) = stage {
            return Ok(s.top());
        }
        let img = images::find(self.c, from)
            .await
            .with_context(|| format!("COPY --from={from}: no such stage or image"))?;
        let r = oci::resolve(self.c, &img.target.clone().unwrap_or_default()).await?;
        Ok(berth_oci::image::chain_ids(&commit::diff_ids_of(&r.config))
            .last()
            .cloned())
    }

    /// The COPY/ADD sources' contents hashed (names, modes, sizes, bytes), for the cache
    /// key; "" for sources from another stage (its ID is in the key's text).
    fn hash_sources(&self, text: &str) -> anyhow::Result<String> {
        let (flags, words) = copy_words(text)?;
        if flags.contains_key("from") || words.len() < 2 {
            return Ok(String::new());
        }
        let local: Vec<&String> = words[..words.len() - 1]
            .iter()
            .filter(|s| !remote::is_url(s))
            .collect();
        if local.is_empty() {
            return Ok(String::new());
        }
        let mut h = Sha256::new();
        for src in local {
            for (rel, path) in ignore::expand(&self.context, src, &self.ignore)? {
                h.update(rel.as_bytes());
                let meta = std::fs::symlink_metadata(&path)?;
                use std::os::unix::fs::MetadataExt;
                h.update(meta.mode().to_le_bytes());
                if meta.is_file() {
                    h.update(std::fs::read(&path)?);
                } else if meta.file_type().is_symlink() {
                    h.update(std::fs::read_link(&path)?.as_os_str().as_encoded_bytes());
                }
            }
        }
        Ok(format!("file:{}", hex::encode(h.finalize())))
    }
}

/// A shell-form RUN with its here-documents after it, as a shell reads them; a RUN that is
/// only a here-document runs it as the script.
fn with_heredocs(text: &str, heredocs: &[dockerfile::Heredoc]) -> String {
    if heredocs.is_empty() {
        return text.to_string();
    }
    let names = dockerfile::heredoc_names(text);
    let only = text.split_whitespace().all(|w| w.starts_with("<<"));
    if only && heredocs.len() == 1 {
        return heredocs[0].content.clone();
    }
    let mut script = format!("{text}\n");
    for (h, (_, _)) in heredocs.iter().zip(names.iter()) {
        script.push_str(&h.content);
        script.push_str(&h.name);
        script.push('\n');
    }
    script
}

/// The here-documents' contents hashed (for the cache key); "" without any.
fn heredocs_hash(heredocs: &[dockerfile::Heredoc]) -> String {
    if heredocs.is_empty() {
        return String::new();
    }
    let mut h = Sha256::new();
    for d in heredocs {
        h.update(d.name.as_bytes());
        h.update([0]);
        h.update(d.content.as_bytes());
    }
    format!("heredoc:{}", hex::encode(h.finalize()))
}

/// The stage (counted from 0) each step belongs to.
fn stage_indices(steps: &[&Instruction]) -> Vec<usize> {
    let mut stage = 0;
    let mut out = Vec::with_capacity(steps.len());
    for (i, s) in steps.iter().enumerate() {
        if s.keyword == "FROM" && i > 0 {
            stage += 1;
        }
        out.push(stage);
    }
    out
}

/// The stages the last one needs, itself included: the earlier stage a FROM starts from
/// and the stages a COPY/ADD `--from` names, and theirs.
fn needed_stages(steps: &[&Instruction], stage_of: &[usize]) -> BTreeSet<usize> {
    let names: Vec<(usize, String)> = steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.keyword == "FROM")
        .filter_map(|(i, s)| stage_name(&s.rest).map(|n| (stage_of[i], n)))
        .collect();
    let by_name = |name: &str, before: usize| {
        names
            .iter()
            .rev()
            .find(|(s, n)| *s < before && n.eq_ignore_ascii_case(name))
            .map(|(s, _)| *s)
    };
    let mut deps: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, s) in steps.iter().enumerate() {
        let stage = stage_of[i];
        let refd = match s.keyword.as_str() {
            "FROM" => s
                .rest
                .split_whitespace()
                .next()
                .and_then(|image| by_name(image, stage)),
            "COPY" | "ADD" => copy_words(&s.rest).ok().and_then(|(flags, _)| {
                let from = flags.get("from")?;
                from.parse::<usize>()
                    .ok()
                    .filter(|n| *n < stage)
                    .or_else(|| by_name(from, stage))
            }),
            _ => None,
        };
        if let Some(d) = refd {
            deps.entry(stage).or_default().push(d);
        }
    }
    let mut needed = BTreeSet::new();
    let mut todo: Vec<usize> = stage_of.last().copied().into_iter().collect();
    while let Some(s) = todo.pop() {
        if needed.insert(s) {
            todo.extend(deps.get(&s).into_iter().flatten().copied());
        }
    }
    needed
}

/// The name a FROM gives its stage (`FROM x AS name`).
fn stage_name(rest: &str) -> Option<String> {
    let words: Vec<&str> = rest.split_whitespace().collect();
    match words.as_slice() {
        [_, kw, name] if kw.eq_ignore_ascii_case("as") => Some(name.to_ascii_lowercase()),
        _ => None,
    }
}

/// `NAME[=default]` of an ARG.
fn arg_pair(rest: &str) -> (String, Option<String>) {
    match rest.trim().split_once('=') {
        Some((k, v)) => (k.to_string(), Some(v.trim_matches('"').to_string())),
        None => (rest.trim().to_string(), None),
    }
}

/// The `--flag=value`s and the words of a COPY/ADD (JSON form too).
fn copy_words(text: &str) -> anyhow::Result<(BTreeMap<String, String>, Vec<String>)> {
    let mut flags = BTreeMap::new();
    let mut rest = text.trim();
    while let Some(f) = rest.strip_prefix("--") {
        let (flag, after) = f.split_once(char::is_whitespace).unwrap_or((f, ""));
        let (k, v) = flag.split_once('=').unwrap_or((flag, ""));
        if !["from", "chown", "chmod", "link"].contains(&k) {
            anyhow::bail!("unknown flag: --{k}");
        }
        flags.insert(k.to_string(), v.to_string());
        rest = after.trim_start();
    }
    let words = match json_form(rest) {
        Some(v) => v,
        None => rest.split_whitespace().map(str::to_string).collect(),
    };
    Ok((flags, words))
}

/// HEALTHCHECK's config (`NONE`, or `[--interval=…] CMD …`), as Docker stores it.
fn healthcheck(text: &str) -> anyhow::Result<Value> {
    if text.trim().eq_ignore_ascii_case("NONE") {
        return Ok(json!({"Test": ["NONE"]}));
    }
    let mut rest = text.trim();
    let mut hc = serde_json::Map::new();
    while let Some(f) = rest.strip_prefix("--") {
        let (flag, after) = f.split_once(char::is_whitespace).unwrap_or((f, ""));
        let (k, v) = flag
            .split_once('=')
            .context("HEALTHCHECK flags are --name=value")?;
        let field = match k {
            "interval" => "Interval",
            "timeout" => "Timeout",
            "start-period" => "StartPeriod",
            "start-interval" => "StartInterval",
            "retries" => "Retries",
            other => anyhow::bail!("unknown flag: --{other}"),
        };
        let value = if field == "Retries" {
            json!(v.parse::<u64>().context("--retries takes a number")?)
        } else {
            let d = humantime::parse_duration(v)
                .with_context(|| format!("--{k}: {v:?} is not a duration"))?;
            json!(d.as_nanos() as u64)
        };
        hc.insert(field.to_string(), value);
        rest = after.trim_start();
    }
    let cmd = rest
        .strip_prefix("CMD")
        .or_else(|| rest.strip_prefix("cmd"))
        .context("HEALTHCHECK requires CMD (or NONE)")?
        .trim();
    let test = match json_form(cmd) {
        Some(v) => {
            let mut t = vec!["CMD".to_string()];
            t.extend(v);
            t
        }
        None => vec!["CMD-SHELL".to_string(), cmd.to_string()],
    };
    hc.insert("Test".to_string(), json!(test));
    Ok(Value::Object(hc))
}

/// One COPY/ADD's work, run with the destination's root mounted.
#[derive(Clone)]
struct CopyJob {
    srcs: Vec<String>,
    dest: String,
    dir_dest: bool,
    chown: Option<String>,
    chmod: Option<String>,
    extract: bool,
}

impl CopyJob {
    fn run(
        &self,
        src_root: &Path,
        ignore: Option<&ignore::Patterns>,
        root: &Path,
    ) -> anyhow::Result<()> {
        let none = ignore::Patterns::default();
        let ignore = ignore.unwrap_or(&none);
        let (uid, gid) = match &self.chown {
            Some(spec) => owner(root, spec)?,
            None => (0, 0),
        };
        let mut any = false;
        for src in &self.srcs {
            let matches = ignore::expand(src_root, src, ignore)?;
            let top = ignore::top_entries(src_root, src, ignore)?;
            if matches.is_empty() && top.is_empty() {
                anyhow::bail!("COPY failed: no source files were specified for {src:?}");
            }
            any = true;
            for entry in top {
                self.copy_one(src_root, &entry, ignore, root, uid, gid)?;
            }
        }
        if !any {
            anyhow::bail!("COPY failed: no source files were specified");
        }
        Ok(())
    }

    /// Copies one top-level source (a file, or a directory's contents) to the destination.
    fn copy_one(
        &self,
        src_root: &Path,
        rel: &str,
        ignore: &ignore::Patterns,
        root: &Path,
        uid: u32,
        gid: u32,
    ) -> anyhow::Result<()> {
        let src = src_root.join(rel);
        let meta = std::fs::symlink_metadata(&src).with_context(|| format!("stat {rel}"))?;
        let base = Path::new(rel)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // An archive ADDed from the context is unpacked into the destination.
        if self.extract && meta.is_file() && is_archive(&src) {
            let dest = super::rootfs::resolve_in_root(root, Path::new(&self.dest))?;
            std::fs::create_dir_all(&dest)?;
            run_tar(&[
                "-C",
                &dest.to_string_lossy(),
                "-xf",
                &src.to_string_lossy(),
                "--no-same-owner",
            ])?;
            return Ok(());
        }
        let (target_dir, target_name) = if meta.is_dir() {
            (self.dest.clone(), None)
        } else if self.dir_dest || is_dir_in(root, &self.dest) {
            (self.dest.clone(), Some(base.clone()))
        } else {
            let p = Path::new(&self.dest);
            (
                p.parent()
                    .map(|d| d.to_string_lossy().into_owned())
                    .unwrap_or("/".into()),
                p.file_name().map(|n| n.to_string_lossy().into_owned()),
            )
        };
        let dest_dir = super::rootfs::resolve_in_root(root, Path::new(&target_dir))?;
        std::fs::create_dir_all(&dest_dir)
            .with_context(|| format!("create {}", dest_dir.display()))?;
        // The files, by a list (the ignore rules applied), through tar.
        let list = ignore::files_under(src_root, rel, ignore)?;
        let staging = Staging::new("berth-build-copy")?;
        let list_file = staging.path().join("list");
        let (cwd, names): (PathBuf, Vec<String>) = if meta.is_dir() {
            (
                src.clone(),
                list.iter()
                    .map(|p| p.strip_prefix(&format!("{rel}/")).unwrap_or(p).to_string())
                    .filter(|p| !p.is_empty() && p != rel)
                    .collect(),
            )
        } else {
            (
                src.parent().map(Path::to_path_buf).unwrap_or_default(),
                vec![base.clone()],
            )
        };
        std::fs::write(&list_file, names.join("\n") + "\n")?;
        let out = staging.path().join("out.tar");
        run_tar(&[
            "-C",
            &cwd.to_string_lossy(),
            "--no-recursion",
            "-cf",
            &out.to_string_lossy(),
            "-T",
            &list_file.to_string_lossy(),
        ])?;
        let into = match &target_name {
            Some(name) if meta.is_file() && name != &base => {
                // A file copied under another name: unpacked aside, then moved.
                let aside = staging.path().join("aside");
                std::fs::create_dir_all(&aside)?;
                run_tar(&[
                    "-C",
                    &aside.to_string_lossy(),
                    "-xf",
                    &out.to_string_lossy(),
                    "--no-same-owner",
                ])?;
                let to = dest_dir.join(name);
                let _ = std::fs::remove_file(&to);
                std::fs::rename(aside.join(&base), &to)
                    .or_else(|_| std::fs::copy(aside.join(&base), &to).map(drop))
                    .with_context(|| format!("copy {rel} to {}", to.display()))?;
                chown_chmod(&[to], uid, gid, self.chmod.as_deref())?;
                return Ok(());
            }
            _ => dest_dir.clone(),
        };
        run_tar(&[
            "-C",
            &into.to_string_lossy(),
            "-xf",
            &out.to_string_lossy(),
            "--no-same-owner",
        ])?;
        let copied: Vec<PathBuf> = names.iter().map(|n| into.join(n)).collect();
        chown_chmod(&copied, uid, gid, self.chmod.as_deref())?;
        Ok(())
    }
}

fn is_dir_in(root: &Path, path: &str) -> bool {
    super::rootfs::resolve_in_root(root, Path::new(path)).is_ok_and(|p| p.is_dir())
}

fn is_archive(path: &Path) -> bool {
    let name = path.to_string_lossy();
    [".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"]
        .iter()
        .any(|e| name.ends_with(e))
}

fn run_tar(args: &[&str]) -> anyhow::Result<()> {
    let status = std::process::Command::new("tar")
        .args(args)
        .status()
        .context("run tar")?;
    if !status.success() {
        anyhow::bail!("tar {args:?}: {status}");
    }
    Ok(())
}

/// Owner and mode of what was copied.
fn chown_chmod(paths: &[PathBuf], uid: u32, gid: u32, chmod: Option<&str>) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = chmod
        .map(|m| u32::from_str_radix(m, 8).with_context(|| format!("--chmod {m:?} is not octal")))
        .transpose()?;
    for p in paths {
        std::os::unix::fs::lchown(p, Some(uid), Some(gid))
            .with_context(|| format!("chown {}", p.display()))?;
        if let Some(m) = mode
            && !std::fs::symlink_metadata(p)?.file_type().is_symlink()
        {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m))?;
        }
    }
    Ok(())
}

/// `--chown=user[:group]` as numbers, names looked up in the image's passwd and group.
fn owner(root: &Path, spec: &str) -> anyhow::Result<(u32, u32)> {
    let (u, g) = spec.split_once(':').unwrap_or((spec, ""));
    let lookup = |file: &str, name: &str, field: usize| -> anyhow::Result<u32> {
        if let Ok(n) = name.parse() {
            return Ok(n);
        }
        let text = std::fs::read_to_string(root.join(file)).unwrap_or_default();
        text.lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.first() == Some(&name)).then(|| f.get(field).and_then(|n| n.parse().ok()))
            })
            .flatten()
            .with_context(|| format!("unable to find {name} in /{file}"))
    };
    let uid = lookup("etc/passwd", u, 2)?;
    let gid = if g.is_empty() {
        if u.parse::<u32>().is_ok() {
            uid
        } else {
            let text = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
            text.lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.first() == Some(&u)).then(|| f.get(3).and_then(|n| n.parse().ok()))
                })
                .flatten()
                .unwrap_or(uid)
        }
    } else {
        lookup("etc/group", g, 2)?
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_stages_the_target_needs() {
        let text = "FROM a AS base\nRUN x\nFROM b AS unused\nRUN y\nFROM base AS mid\nRUN z\nFROM c\nCOPY --from=mid /x /x\nCOPY --from=0 /y /y\n";
        let all = dockerfile::parse(text).unwrap();
        let steps: Vec<&Instruction> = all.iter().collect();
        let stage_of = stage_indices(&steps);
        assert_eq!(stage_of, [0, 0, 1, 1, 2, 2, 3, 3, 3]);
        let needed: Vec<usize> = needed_stages(&steps, &stage_of).into_iter().collect();
        assert_eq!(needed, [0, 2, 3]);
    }
}
