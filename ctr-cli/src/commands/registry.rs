//! `berth pull|push|save|load|login|logout`: images in and out of berthd through the
//! Transfer service, with progress and credentials over client-opened streams.

use std::path::PathBuf;

use anyhow::Context;
use berth_proto::containerd::services::transfer::v1 as pb;
use berth_proto::containerd::services::transfer::v1::transfer_client::TransferClient;
use berth_proto::containerd::types::Platform;
use berth_proto::containerd::types::transfer as tt;

use crate::client::transfer::{self, any};
use crate::client::{Client, status};
use crate::credentials;

fn platform(p: &str) -> anyhow::Result<Platform> {
    let mut parts = p.split('/');
    let os = parts.next().filter(|s| !s.is_empty());
    let arch = parts.next().filter(|s| !s.is_empty());
    let (Some(os), Some(arch)) = (os, arch) else {
        anyhow::bail!("invalid platform {p:?}: want os/arch[/variant], e.g. linux/amd64");
    };
    Ok(Platform {
        os: os.to_string(),
        architecture: arch.to_string(),
        variant: parts.next().unwrap_or_default().to_string(),
        ..Default::default()
    })
}

fn resolver(auth_stream: String, plain_http: bool) -> tt::RegistryResolver {
    tt::RegistryResolver {
        auth_stream,
        default_scheme: if plain_http {
            "http".into()
        } else {
            String::new()
        },
        ..Default::default()
    }
}

async fn run_transfer(
    c: &Client,
    source: prost_types::Any,
    destination: prost_types::Any,
) -> anyhow::Result<()> {
    let progress = transfer::open(c).await?;
    let progress_id = progress.id.clone();
    let shown = transfer::show_progress(progress);
    TransferClient::new(c.channel.clone())
        .transfer(c.req(pb::TransferRequest {
            source: Some(source),
            destination: Some(destination),
            options: Some(pb::TransferOptions {
                progress_stream: progress_id,
            }),
        }))
        .await
        .map_err(status)?;
    let _ = shown.await;
    Ok(())
}

async fn auth_stream(c: &Client) -> anyhow::Result<String> {
    let auth = transfer::open(c).await?;
    let id = auth.id.clone();
    let store = credentials::Store::default_location()?;
    transfer::answer_auth(
        auth,
        Box::new(move |host| store.lookup(host).ok().flatten()),
    );
    Ok(id)
}

pub async fn pull(
    c: &Client,
    reference: String,
    platform_arg: Option<String>,
    all_platforms: bool,
    plain_http: bool,
) -> anyhow::Result<()> {
    fetch(
        c,
        reference.clone(),
        platform_arg,
        all_platforms,
        plain_http,
        true,
    )
    .await?;
    println!("{reference}");
    Ok(())
}

/// Fetches an image's content; with `record`, also creates or updates its image record.
pub async fn fetch(
    c: &Client,
    reference: String,
    platform_arg: Option<String>,
    all_platforms: bool,
    plain_http: bool,
    record: bool,
) -> anyhow::Result<()> {
    let source = tt::OciRegistry {
        reference: reference.clone(),
        resolver: Some(resolver(auth_stream(c).await?, plain_http)),
    };
    let destination = tt::ImageStore {
        // No name: the content only.
        name: if record { reference } else { String::new() },
        platforms: platform_arg
            .as_deref()
            .map(platform)
            .transpose()?
            .into_iter()
            .collect(),
        all_metadata: all_platforms,
        ..Default::default()
    };
    run_transfer(c, any(&source), any(&destination)).await
}

pub async fn push(
    c: &Client,
    image: String,
    target: Option<String>,
    plain_http: bool,
) -> anyhow::Result<()> {
    let target = target.unwrap_or_else(|| image.clone());
    let source = tt::ImageStore {
        name: image,
        ..Default::default()
    };
    let destination = tt::OciRegistry {
        reference: target.clone(),
        resolver: Some(resolver(auth_stream(c).await?, plain_http)),
    };
    run_transfer(c, any(&source), any(&destination)).await?;
    println!("pushed {target}");
    Ok(())
}

pub async fn save(
    c: &Client,
    images: Vec<String>,
    output: PathBuf,
    platform_arg: Option<String>,
) -> anyhow::Result<()> {
    if images.is_empty() {
        anyhow::bail!("name at least one image to save");
    }
    let stream = transfer::open(c).await?;
    let stream_id = stream.id.clone();
    let tmp = output.with_extension("berth-partial");
    let received = transfer::receive_file(stream, tmp.clone());
    let source = tt::ImageStore {
        name: images[0].clone(),
        extra_references: images[1..]
            .iter()
            .map(|n| tt::ImageReference {
                name: n.clone(),
                ..Default::default()
            })
            .collect(),
        platforms: platform_arg
            .as_deref()
            .map(platform)
            .transpose()?
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let destination = tt::ImageExportStream {
        stream: stream_id,
        media_type: "application/x-tar".into(),
        platforms: platform_arg
            .as_deref()
            .map(platform)
            .transpose()?
            .into_iter()
            .collect(),
        all_platforms: platform_arg.is_none(),
        ..Default::default()
    };
    let result = run_transfer(c, any(&source), any(&destination)).await;
    let bytes = received.await.context("receive task")?;
    if let Err(e) = result.and(bytes.map(|_| ())) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &output).with_context(|| format!("rename to {}", output.display()))?;
    Ok(())
}

pub async fn load(c: &Client, input: PathBuf, base_name: Option<String>) -> anyhow::Result<()> {
    if !input.is_file() {
        anyhow::bail!("{} is not a file", input.display());
    }
    let stream = transfer::open(c).await?;
    let stream_id = stream.id.clone();
    let sent = transfer::send_file(stream, input);
    let source = tt::ImageImportStream {
        stream: stream_id,
        media_type: "application/x-tar".into(),
        ..Default::default()
    };
    // Unpacked into the default snapshotter, so that a loaded image runs at once.
    let destination = tt::ImageStore {
        name: base_name.unwrap_or_default(),
        unpacks: vec![tt::UnpackConfiguration::default()],
        ..Default::default()
    };
    let result = run_transfer(c, any(&source), any(&destination)).await;
    let sent = sent.await.context("send task")?;
    result?;
    sent?;
    Ok(())
}

pub fn login(
    server: &str,
    username: String,
    password: Option<String>,
    password_stdin: bool,
) -> anyhow::Result<()> {
    let password = match (password, password_stdin) {
        (Some(p), false) => p,
        (None, true) => {
            let mut p = String::new();
            std::io::stdin()
                .read_line(&mut p)
                .context("read password from stdin")?;
            p.trim_end_matches(['\n', '\r']).to_string()
        }
        (Some(_), true) => anyhow::bail!("--password and --password-stdin are mutually exclusive"),
        (None, false) => anyhow::bail!("give the password with --password-stdin (or --password)"),
    };
    if username.is_empty() || password.is_empty() {
        anyhow::bail!("username and password must not be empty");
    }
    let store = credentials::Store::default_location()?;
    store.store(server, &username, &password)?;
    println!("Login Succeeded");
    Ok(())
}

pub fn logout(server: &str) -> anyhow::Result<()> {
    let store = credentials::Store::default_location()?;
    if store.remove(server)? {
        println!("Removing login credentials for {server}");
    } else {
        println!("Not logged in to {server}");
    }
    Ok(())
}
