//! `import`: a filesystem tarball made into a one-layer image: an OCI image archive is
//! built around it (config with the `-c` changes and a history entry, manifest, index
//! naming it) and loaded through the same archive load as `berth load`.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::Context;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::staging::Staging;
use super::{Client, image_config, transfer};

/// What `import` (and `image import`) takes.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The tarball: a file, or `-` for stdin.
    pub source: String,
    /// REPOSITORY[:TAG] of the new image (none: a dangling image).
    pub reference: Option<String>,
    /// Apply a Dockerfile instruction to the image's config (CMD, ENV, ...).
    #[arg(short = 'c', long = "change")]
    pub changes: Vec<String>,
    /// The history comment of the image's layer.
    #[arg(short, long)]
    pub message: Option<String>,
    /// The image's platform (this host's only).
    #[arg(long)]
    pub platform: Option<String>,
}

/// Makes the image; returns its ID (the config's digest).
pub async fn import(c: &Client, a: ImportArgs) -> anyhow::Result<String> {
    if a.source.starts_with("http://") || a.source.starts_with("https://") {
        anyhow::bail!(
            "importing from a URL is not supported: download {} first",
            a.source
        );
    }
    let arch = berth_oci::image::host_platform().architecture;
    if let Some(p) = a.platform.as_deref()
        && p != format!("linux/{arch}")
        && p != "linux"
    {
        anyhow::bail!("platform {p} is not supported: this host runs linux/{arch}");
    }
    let mut config = json!({});
    for ch in &a.changes {
        image_config::apply(&mut config, ch)?;
    }
    let staging = Staging::new("berth-import")?;
    let blobs = staging.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let source = a.source.clone();
    let layer_dir = blobs.clone();
    let (layer, layer_size) =
        tokio::task::spawn_blocking(move || write_layer(&source, &layer_dir)).await??;
    let now = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    let comment = a
        .message
        .clone()
        .unwrap_or_else(|| format!("Imported from {}", a.source));
    let image = json!({
        "architecture": arch,
        "os": "linux",
        "created": now,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer]},
        "history": [{"created": now, "comment": comment}],
    });
    let (config_digest, config_size) = write_blob(&blobs, &serde_json::to_vec(&image)?)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest, "size": config_size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer, "size": layer_size,
        }],
    });
    let (manifest_digest, manifest_size) = write_blob(&blobs, &serde_json::to_vec(&manifest)?)?;
    // Without a name the image is dangling (`<none>`), as Docker's import leaves it.
    let name = match &a.reference {
        Some(r) => crate::oci::normalize(r),
        None => format!("import@{manifest_digest}"),
    };
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "annotations": {"io.containerd.image.name": name},
        }],
    });
    std::fs::write(
        staging.path().join("index.json"),
        serde_json::to_vec(&index)?,
    )?;
    std::fs::write(
        staging.path().join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let archive = staging.path().join("image.tar");
    let status = std::process::Command::new("tar")
        .arg("-C")
        .arg(staging.path())
        .args(["-cf"])
        .arg(&archive)
        .args(["oci-layout", "index.json", "blobs"])
        .status()
        .context("run tar")?;
    if !status.success() {
        anyhow::bail!("pack the image archive: tar {status}");
    }
    transfer::load_archive(c, transfer::Endpoint::File(archive), String::new()).await?;
    Ok(config_digest)
}

/// Copies the tarball (a file or stdin; gzip is taken off) into `blobs` under its digest:
/// the layer's digest and size.
fn write_layer(source: &str, blobs: &Path) -> anyhow::Result<(String, u64)> {
    let mut input: Box<dyn Read + Send> = if source == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(source).with_context(|| format!("open {source}"))?)
    };
    let mut head = [0u8; 2];
    let n = read_full(&mut input, &mut head)?;
    let head = head[..n].to_vec();
    let mut child = None;
    let mut reader: Box<dyn Read> = if head == [0x1f, 0x8b] {
        // A gzip'd tarball: gunzip it on the way.
        let mut gz = std::process::Command::new("gzip")
            .arg("-dc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("run gzip")?;
        let mut stdin = gz.stdin.take().context("gzip stdin")?;
        let out = gz.stdout.take().context("gzip stdout")?;
        std::thread::spawn(move || {
            let _ = stdin.write_all(&head);
            let _ = std::io::copy(&mut input, &mut stdin);
        });
        child = Some(gz);
        Box::new(out)
    } else {
        Box::new(std::io::Cursor::new(head).chain(input))
    };
    let tmp = blobs.join("layer.partial");
    let mut file = std::fs::File::create(&tmp)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])?;
        size += n as u64;
    }
    if let Some(mut gz) = child {
        let status = gz.wait()?;
        if !status.success() {
            anyhow::bail!("{source}: not a valid gzip archive");
        }
    }
    if size == 0 {
        anyhow::bail!("{source}: empty archive");
    }
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    std::fs::rename(&tmp, blobs.join(&digest["sha256:".len()..]))?;
    Ok((digest, size))
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn write_blob(blobs: &Path, data: &[u8]) -> anyhow::Result<(String, u64)> {
    let digest = berth_oci::image::sha256_digest(data);
    std::fs::write(blobs.join(&digest["sha256:".len()..]), data)?;
    Ok((digest, data.len() as u64))
}
