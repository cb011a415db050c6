//! A container's filesystem as Docker's `diff` and `export` show it, and `import`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;

use crate::client::containers::resolve;
use crate::client::image_import::{self, ImportArgs};
use crate::client::rootfs::with_root;
use crate::client::{Client, changes};

/// `berth diff CONTAINER`: `A`, `C` and `D` lines, by path.
pub async fn diff(c: &Client, name: &str) -> anyhow::Result<()> {
    let ct = resolve(c, name).await?;
    let mut out = std::io::stdout().lock();
    for ch in changes::of_container(c, &ct).await? {
        writeln!(out, "{} {}", ch.kind, ch.path)?;
    }
    Ok(())
}

/// `berth export [-o FILE] CONTAINER`: the container's filesystem as a tar archive (its
/// mounts left out), to FILE or to stdout (never to a terminal, as Docker refuses).
pub async fn export(c: &Client, name: &str, output: Option<PathBuf>) -> anyhow::Result<()> {
    let ct = resolve(c, name).await?;
    let output = output.filter(|o| o.as_os_str() != "-");
    if output.is_none() && std::io::stdout().is_terminal() {
        anyhow::bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
    }
    with_root(c, &ct, move |root| {
        let mut entries: Vec<String> = std::fs::read_dir(root)
            .with_context(|| format!("read {}", root.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        entries.sort();
        let target = output
            .as_ref()
            .map(|o| o.display().to_string())
            .unwrap_or_else(|| "-".to_string());
        let status = std::process::Command::new("tar")
            .arg("-C")
            .arg(root)
            .args([
                "--numeric-owner",
                "--one-file-system",
                "--xattrs",
                "-cf",
                &target,
            ])
            .args(&entries)
            .status()
            .context("run tar")?;
        // 1: a file changed while it was read (a running container): archived all the same.
        if !matches!(status.code(), Some(0 | 1)) {
            anyhow::bail!("tar of the container's filesystem failed: {status}");
        }
        Ok(())
    })
    .await
}

/// `berth import FILE|- [REPOSITORY[:TAG]]`: prints the new image's ID.
pub async fn import(c: &Client, a: ImportArgs) -> anyhow::Result<()> {
    println!("{}", image_import::import(c, a).await?);
    Ok(())
}
