//! `berth images` / `berth image ls|rm|tag|inspect|history`: docker-style views of the
//! images berthd holds.

use berth_proto::containerd::services::images::v1 as pb;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::images::{api, find, image_json, list};
use crate::client::{Client, containers, gone_ok, snapshots, status};
use crate::labels;
use crate::oci::{self, human_size, repo_tag};
use crate::output::{self, Format};

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// List images.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Remove images.
    #[command(alias = "remove", alias = "delete")]
    Rm {
        names: Vec<String>,
        /// Remove images containers use too.
        #[arg(short, long)]
        force: bool,
        /// Wait until what the images held is released.
        #[arg(long)]
        sync: bool,
    },
    /// Give an image another name.
    Tag { source: String, target: String },
    /// Make an image of a filesystem tarball (a file, or `-` for stdin).
    Import(crate::client::image_import::ImportArgs),
    /// Show images as JSON.
    Inspect { names: Vec<String> },
    /// Show the layers' history of an image.
    History(HistoryArgs),
    /// Mount an image's filesystem on a directory (read-only unless --rw).
    Mount {
        name: String,
        target: PathBuf,
        /// A writable snapshot instead of a read-only view.
        #[arg(long)]
        rw: bool,
        #[arg(long, env = "BERTH_SNAPSHOTTER", default_value = "")]
        snapshotter: String,
    },
    /// Unmount an image mounted by `image mount` and release its snapshot.
    Unmount {
        target: PathBuf,
        #[arg(long, env = "BERTH_SNAPSHOTTER", default_value = "")]
        snapshotter: String,
    },
    /// Remove unused images: dangling ones (no tag), or with --all every image no container
    /// uses.
    Prune {
        #[arg(short, long)]
        all: bool,
        /// Don't ask for confirmation.
        #[arg(short, long)]
        force: bool,
    },
}

/// The lease (and snapshot key) an image mount on `target` runs under, as ctr names it.
fn mount_key(target: &std::path::Path) -> anyhow::Result<String> {
    let abs =
        std::path::absolute(target).with_context(|| format!("resolve {}", target.display()))?;
    Ok(abs.to_string_lossy().into_owned())
}

/// What `history` (and `image history`) takes.
#[derive(clap::Args, Debug)]
pub struct HistoryArgs {
    pub name: String,
    /// Don't truncate the commands.
    #[arg(long)]
    pub no_trunc: bool,
    /// Print only the IDs (`<missing>` for steps of no image here).
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(clap::Args, Debug, Default)]
pub struct LsArgs {
    /// Every image, the build cache's intermediate images too.
    #[arg(short, long)]
    pub all: bool,
    /// Print only image IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show digests.
    #[arg(long)]
    pub digests: bool,
    /// Don't truncate image IDs.
    #[arg(long)]
    pub no_trunc: bool,
    /// Docker's filters: dangling=true|false, reference=PATTERN, label=KEY[=VALUE].
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
    /// REPOSITORY[:TAG] to list, or containerd filters (name~=..., labels.k==v).
    pub filters: Vec<String>,
}

/// One of Docker's `images --filter`s.
enum ImageFilter {
    Dangling(bool),
    Reference(String),
    Label(String, Option<String>),
}

impl ImageFilter {
    fn parse(f: &str) -> anyhow::Result<ImageFilter> {
        let (k, v) = f.split_once('=').ok_or_else(|| {
            crate::exit::Exit::with(
                125,
                format!("bad format of filter (expected name=value): {f}"),
            )
        })?;
        Ok(match k {
            "dangling" => match v {
                "true" | "1" => ImageFilter::Dangling(true),
                "false" | "0" => ImageFilter::Dangling(false),
                _ => {
                    return Err(crate::exit::Exit::with(
                        1,
                        format!("Error response from daemon: Invalid filter 'dangling=[{v}]'"),
                    ));
                }
            },
            "reference" => ImageFilter::Reference(v.to_string()),
            "label" => match v.split_once('=') {
                Some((k, v)) => ImageFilter::Label(k.to_string(), Some(v.to_string())),
                None => ImageFilter::Label(v.to_string(), None),
            },
            _ => {
                return Err(crate::exit::Exit::with(
                    1,
                    format!("Error response from daemon: Invalid filter '{k}'"),
                ));
            }
        })
    }

    /// Whether image `name` with `labels` passes.
    fn matches(&self, name: &str, labels: &std::collections::BTreeMap<String, String>) -> bool {
        match self {
            ImageFilter::Dangling(d) => crate::client::images::is_dangling(name) == *d,
            ImageFilter::Reference(pattern) => reference_matches(pattern, name),
            ImageFilter::Label(k, v) => match v {
                Some(v) => labels.get(k) == Some(v),
                None => labels.contains_key(k),
            },
        }
    }
}

/// Docker's `reference=` match: the pattern (with `*` wildcards) against the image's
/// familiar name (`busybox:latest`) or its repository alone.
fn reference_matches(pattern: &str, name: &str) -> bool {
    let familiar = oci::familiar(name);
    let (repo, _) = repo_tag(familiar);
    glob(pattern, familiar) || glob(pattern, &repo)
}

/// `*` matches any run of characters but `/`, as Go's path.Match.
fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len())
                .take_while(|&i| i == 0 || t[i - 1] != '/')
                .any(|i| go(rest, &t[i..])),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    go(&p, &t)
}

pub async fn ls(c: &Client, args: LsArgs, format: Format) -> anyhow::Result<()> {
    let filters: Vec<ImageFilter> = args
        .filter
        .iter()
        .map(|f| ImageFilter::parse(f))
        .collect::<anyhow::Result<_>>()?;
    // Positional words: containerd filters, or Docker's REPOSITORY[:TAG].
    let (containerd, references): (Vec<String>, Vec<String>) = args
        .filters
        .into_iter()
        .partition(|f| ["==", "!=", "~="].iter().any(|op| f.contains(op)));
    let images: Vec<pb::Image> = list(c, containerd)
        .await?
        .into_iter()
        .filter(|i| filters.iter().all(|f| f.matches(&i.name, &i.labels)))
        // The build cache's steps are intermediate images: shown with -a only.
        .filter(|i| args.all || !i.labels.contains_key(crate::labels::BUILD_CACHE))
        .filter(|i| {
            references.iter().all(|r| {
                let (repo, tag) = repo_tag(oci::familiar(&i.name));
                let r = oci::familiar(r);
                match r.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
                    Some((rr, rt)) => glob(rr, &repo) && glob(rt, &tag),
                    None => glob(r, &repo),
                }
            })
        })
        .collect();
    let mut items = Vec::new();
    let mut json_rows = Vec::new();
    for img in &images {
        let target = img.target.clone().unwrap_or_default();
        let (repo, tag) = repo_tag(&img.name);
        let (id, created_at, created, size) = match oci::resolve(c, &target).await {
            Ok(r) => {
                let created = r.config["created"].as_str().map(str::to_string);
                (
                    r.config_digest.clone(),
                    created.clone().unwrap_or_default(),
                    created
                        .as_deref()
                        .map(output::ago_rfc3339)
                        .unwrap_or_else(|| "N/A".into()),
                    r.size(),
                )
            }
            Err(_) => (
                target.digest.clone(),
                String::new(),
                "N/A".into(),
                target.size,
            ),
        };
        let shown_id = if args.no_trunc {
            id.clone()
        } else {
            crate::client::images::short_image_id(&id)
        };
        if args.quiet {
            println!("{shown_id}");
            continue;
        }
        json_rows.push(json!({
            "name": img.name, "repository": repo, "tag": tag, "id": id,
            "digest": target.digest, "size": size, "labels": img.labels,
        }));
        let created_at = humantime::parse_rfc3339_weak(&created_at)
            .map(output::go_time)
            .unwrap_or(created_at);
        items.push(json!({
            "Repository": repo,
            "Tag": tag,
            "ID": shown_id,
            "Digest": target.digest,
            "CreatedSince": created,
            "CreatedAt": created_at,
            "Size": human_size(size),
            "VirtualSize": human_size(size),
            "Containers": "N/A",
            "SharedSize": "N/A",
            "UniqueSize": "N/A",
        }));
    }
    if args.quiet {
        return Ok(());
    }
    // `--format json` before templates: the ctr-style array berth printed first (kept for
    // the scripts that read it).
    if format == Format::Json {
        return output::json(&Value::Array(json_rows));
    }
    let mut columns = vec![("Repository", "REPOSITORY"), ("Tag", "TAG")];
    if args.digests {
        columns.push(("Digest", "DIGEST"));
    }
    columns.extend([
        ("ID", "IMAGE ID"),
        ("CreatedSince", "CREATED"),
        ("Size", "SIZE"),
    ]);
    output::docker_list(
        &format,
        &columns,
        &[
            ("Digest", "DIGEST"),
            ("CreatedAt", "CREATED AT"),
            ("VirtualSize", "VIRTUAL SIZE"),
            ("Containers", "CONTAINERS"),
            ("SharedSize", "SHARED SIZE"),
            ("UniqueSize", "UNIQUE SIZE"),
        ],
        &items,
    )
}

pub async fn run(c: &Client, cmd: Cmd, format: Format) -> anyhow::Result<()> {
    match cmd {
        Cmd::Ls(args) => ls(c, args, format).await,
        Cmd::Rm { names, force, sync } => rm(c, names, force, sync).await,
        Cmd::Tag { source, target } => tag(c, &source, target).await,
        Cmd::Import(args) => {
            println!("{}", crate::client::image_import::import(c, args).await?);
            Ok(())
        }
        Cmd::Mount {
            name,
            target,
            rw,
            snapshotter,
        } => mount(c, &name, target, rw, snapshotter).await,
        Cmd::Unmount {
            target,
            snapshotter,
        } => unmount(c, target, snapshotter).await,
        Cmd::Prune { all, force } => prune(c, all, force).await,
        Cmd::Inspect { names } => inspect(c, names, &format).await,
        Cmd::History(a) => history(c, &a.name, a.no_trunc, a.quiet).await,
    }
}

async fn rm(c: &Client, names: Vec<String>, force: bool, sync: bool) -> anyhow::Result<()> {
    let containers = if force {
        Vec::new()
    } else {
        containers::list_all(c).await?
    };
    output::remove_each_telling(
        names,
        |name| {
            let containers = &containers;
            async move { remove_image(c, &name, force, sync, containers).await }
        },
        |name| format!("unable to remove {name}"),
    )
    .await?;
    Ok(())
}

/// Removes the image `name` names, or every name of the image an ID names (with `force`
/// when it has several, as Docker's): Docker's `Untagged:` and `Deleted:` lines.
async fn remove_image(
    c: &Client,
    name: &str,
    force: bool,
    sync: bool,
    containers: &[berth_proto::containerd::services::containers::v1::Container],
) -> Result<Vec<String>, tonic::Status> {
    let gone = || tonic::Status::not_found(format!("No such image: {name}"));
    let records = match crate::client::images::find_by_name(c, name).await {
        Ok(img) => vec![img],
        Err(_) => {
            let by_id = crate::client::images::by_id(c, name)
                .await
                .map_err(|e| tonic::Status::internal(format!("{e:#}")))?;
            if by_id.is_empty() {
                return Err(gone());
            }
            if by_id.len() > 1 && !force {
                return Err(tonic::Status::failed_precondition(format!(
                    "conflict: unable to delete {name} (must be forced) - image is referenced in multiple repositories"
                )));
            }
            by_id
        }
    };
    let mut lines = Vec::new();
    for found in records {
        // An image a container was made from stays, unless forced (as Docker).
        if let Some(ct) = containers.iter().find(|ct| ct.image == found.name) {
            let id = found
                .target
                .as_ref()
                .map(|t| crate::client::images::short_image_id(&t.digest))
                .unwrap_or_default();
            return Err(tonic::Status::failed_precondition(format!(
                "conflict: unable to remove repository reference \"{name}\" (must force) - container {} is using its referenced image {id}",
                crate::client::containers::short_id(&ct.id)
            )));
        }
        // What goes with the last name of an image (Docker's "Deleted:" lines) is known
        // before it goes.
        let before = crate::client::images::layers_of(c, &found).await.ok();
        api(c)
            .delete(c.req(pb::DeleteImageRequest {
                name: found.name.clone(),
                sync,
                target: None,
            }))
            .await?;
        // A dangling image has no name to untag.
        if !crate::client::images::is_dangling(&found.name) {
            lines.push(format!("Untagged: {}", crate::oci::familiar(&found.name)));
        }
        if let Some(b) = before {
            lines.extend(
                crate::client::images::deleted_lines(c, &b)
                    .await
                    .unwrap_or_default(),
            );
        }
    }
    Ok(lines)
}

/// `image tag`: a record named `target` for the source's image (its target moved there
/// when `target` exists already).
async fn tag(c: &Client, source: &str, target: String) -> anyhow::Result<()> {
    let src = find(c, source).await?;
    // Docker's normalization: `zz` is `docker.io/library/zz:latest`, shown as `zz:latest`.
    let target = crate::oci::normalize(&target);
    let image = pb::Image {
        name: target,
        labels: src.labels.clone(),
        target: src.target.clone(),
        ..Default::default()
    };
    crate::client::images::put(c, image, false).await
}

/// `image inspect`: the images as Docker's inspect shows them, one JSON array.
async fn inspect(c: &Client, names: Vec<String>, format: &Format) -> anyhow::Result<()> {
    let mut out = Vec::new();
    for name in names {
        out.push(image_json(c, &name).await?);
    }
    output::inspected(format, out)
}

/// `image history`: one row per history entry, newest first (sizes from the layers, in
/// order, for the entries that made one); the layers alone when the config has no history.
async fn history(c: &Client, name: &str, no_trunc: bool, quiet: bool) -> anyhow::Result<()> {
    let img = find(c, name).await?;
    let r = oci::resolve(c, &img.target.unwrap_or_default()).await?;
    let layers = r.manifest["layers"].as_array().cloned().unwrap_or_default();
    let history = r.config["history"].as_array().cloned().unwrap_or_default();
    let mut rows = history_rows(&history, &layers, no_trunc);
    if rows.is_empty() {
        for l in layers.iter().rev() {
            rows.push(vec![
                crate::client::images::short_image_id(l["digest"].as_str().unwrap_or("")),
                "N/A".into(),
                String::new(),
                human_size(l["size"].as_i64().unwrap_or(0)),
                String::new(),
            ]);
        }
    }
    if let Some(first) = rows.first_mut() {
        first[0] = crate::client::images::short_image_id(&r.config_digest);
    }
    if quiet {
        for row in &rows {
            println!("{}", row[0]);
        }
        return Ok(());
    }
    output::table(
        &["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
        &rows,
    )
}

/// The rows of `image history` from the config's history entries, newest first.
fn history_rows(history: &[Value], layers: &[Value], no_trunc: bool) -> Vec<Vec<String>> {
    // Newest first, as the history is walked.
    let mut layer_sizes = layers.iter().rev().map(|l| l["size"].as_i64().unwrap_or(0));
    let mut rows = Vec::new();
    for h in history.iter().rev() {
        let empty = h["empty_layer"].as_bool().unwrap_or(false);
        let size = if empty {
            0
        } else {
            layer_sizes.next().unwrap_or(0)
        };
        let mut by = h["created_by"].as_str().unwrap_or("").to_string();
        if !no_trunc && by.chars().count() > 45 {
            by = by.chars().take(44).collect::<String>() + "…";
        }
        rows.push(vec![
            "<missing>".to_string(),
            h["created"]
                .as_str()
                .map(output::ago_rfc3339)
                .unwrap_or_else(|| "N/A".into()),
            by,
            human_size(size),
            h["comment"].as_str().unwrap_or("").to_string(),
        ]);
    }
    rows
}

/// `image mount`: a snapshot on top of the image's top layer under a lease named after the
/// target (so `image unmount` finds it and a crashed CLI's lease expires), mounted here.
async fn mount(
    c: &Client,
    name: &str,
    target: PathBuf,
    rw: bool,
    snapshotter: String,
) -> anyhow::Result<()> {
    let img = find(c, name).await?;
    let r = oci::resolve(c, &img.target.unwrap_or_default()).await?;
    let parent = r
        .chain_ids()
        .last()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("image {name} has no layers"))?;
    let key = mount_key(&target)?;
    let sn_name = if snapshotter.is_empty() {
        labels::SNAPSHOTTER.to_string()
    } else {
        snapshotter.clone()
    };
    let resource = format!("snapshots/{sn_name}");
    let lease = c
        .create_lease(
            Some(key.clone()),
            std::time::Duration::from_secs(24 * 3600),
            &[(&resource, &key)],
        )
        .await?;
    let kind = if rw {
        snapshots::Create::Active
    } else {
        snapshots::Create::View
    };
    let created = snapshots::create(
        c,
        &snapshotter,
        kind,
        &key,
        Some(parent.clone()),
        Default::default(),
        Some(&lease),
    )
    .await;
    let mounts = match created {
        Ok(m) => m,
        Err(e) => {
            let _ = c.delete_lease(&lease).await;
            if e.code() == tonic::Code::NotFound {
                anyhow::bail!(
                    "image {name} is not unpacked ({parent} missing): pull it again: {}",
                    e.message()
                );
            }
            return Err(status(e));
        }
    };
    if let Err(e) = snapshots::mount_local(&mounts, target.clone()).await {
        let _ = snapshots::remove(c, &snapshotter, &key).await;
        let _ = c.delete_lease(&lease).await;
        return Err(e.context(format!("mount image {name} on {}", target.display())));
    }
    println!("{}", target.display());
    Ok(())
}

async fn unmount(c: &Client, target: PathBuf, snapshotter: String) -> anyhow::Result<()> {
    let key = mount_key(&target)?;
    let dir = target.clone();
    tokio::task::spawn_blocking(move || berth_snapshotter::mount::unmount(&dir))
        .await?
        .with_context(|| format!("unmount {}", target.display()))?;
    gone_ok(snapshots::remove(c, &snapshotter, &key).await)?;
    match c.delete_lease(&key).await {
        Ok(()) => {}
        Err(e) if e.to_string().contains("not found") => {}
        Err(e) => return Err(e),
    }
    println!("{}", target.display());
    Ok(())
}

/// `image prune`: removes images (dangling = named by digest only, or -a: every image no
/// container uses) and waits for the collector, then reports the space it freed.
async fn prune(c: &Client, all: bool, force: bool) -> anyhow::Result<()> {
    let warning = if all {
        "WARNING! This will remove all images without at least one container associated to them."
    } else {
        "WARNING! This will remove all dangling images."
    };
    if !force && !output::confirm(warning)? {
        return Ok(());
    }
    let (removed, reclaimed) = crate::client::images::prune_unused(c, all).await?;
    let untagged: Vec<String> = removed.iter().map(|n| format!("untagged: {n}")).collect();
    output::deleted("Images", &untagged);
    println!("Total reclaimed space: {}", human_size(reclaimed));
    Ok(())
}
