//! `berth pull|push|save|load|login|logout`: images in and out of berthd through the
//! Transfer service, with progress and credentials over client-opened streams.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use berth_proto::containerd::types::transfer as tt;

use crate::client::Client;
use crate::client::transfer::{self, any, auth_stream, fetch, platform, resolver, run_transfer};
use crate::credentials;

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
    output: Option<PathBuf>,
    platform_arg: Option<String>,
) -> anyhow::Result<()> {
    if images.is_empty() {
        anyhow::bail!("name at least one image to save");
    }
    // No -o: the archive goes to stdout, unless that is a terminal (as Docker's).
    let output = output.filter(|o| o.as_os_str() != "-");
    if output.is_none() && std::io::stdout().is_terminal() {
        return Err(crate::exit::Exit::with(
            1,
            "cowardly refusing to save to a terminal. Use the -o flag or redirect",
        ));
    }
    let stream = transfer::open(c).await?;
    let stream_id = stream.id.clone();
    let tmp = output.as_ref().map(|o| o.with_extension("berth-partial"));
    let received = transfer::receive_file(
        stream,
        match &tmp {
            Some(t) => transfer::Endpoint::File(t.clone()),
            None => transfer::Endpoint::Std,
        },
    );
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
    if let Err(e) = result.and(bytes.map(|_| Vec::<String>::new())) {
        if let Some(tmp) = &tmp {
            let _ = std::fs::remove_file(tmp);
        }
        return Err(e);
    }
    if let (Some(tmp), Some(output)) = (&tmp, &output) {
        std::fs::rename(tmp, output).with_context(|| format!("rename to {}", output.display()))?;
    }
    Ok(())
}

pub async fn load(
    c: &Client,
    input: Option<PathBuf>,
    base_name: Option<String>,
    quiet: bool,
) -> anyhow::Result<()> {
    // No -i: the archive comes on stdin, which must not be a terminal (as Docker's).
    let input = input.filter(|i| i.as_os_str() != "-");
    let from = match input {
        Some(input) => {
            if !input.is_file() {
                anyhow::bail!("{} is not a file", input.display());
            }
            transfer::Endpoint::File(input)
        }
        None if std::io::stdin().is_terminal() => {
            return Err(crate::exit::Exit::with(
                1,
                "requested load from stdin, but stdin is empty",
            ));
        }
        None => transfer::Endpoint::Std,
    };
    let saved = transfer::load_archive(c, from, base_name.unwrap_or_default()).await?;
    if !quiet {
        for name in saved {
            println!("Loaded image: {}", crate::oci::familiar(&name));
        }
    }
    Ok(())
}

/// `berth login [SERVER]`: asks for what was not given (on a terminal; Docker's refusal
/// otherwise), has berthd check the credentials against the registry, and only then stores
/// them.
pub async fn login(
    c: &Client,
    server: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_stdin: bool,
) -> anyhow::Result<()> {
    let server = server.unwrap_or_default();
    if password.is_some() && password_stdin {
        anyhow::bail!("--password and --password-stdin are mutually exclusive");
    }
    if password.is_some() {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
    }
    let password = if password_stdin {
        if username.is_none() {
            anyhow::bail!("Must provide --username with --password-stdin");
        }
        let mut p = String::new();
        std::io::stdin()
            .read_line(&mut p)
            .context("read password from stdin")?;
        Some(p.trim_end_matches(['\n', '\r']).to_string())
    } else {
        password
    };
    let interactive = std::io::stdin().is_terminal();
    let username = match username {
        Some(u) => u,
        None if interactive => prompt("Username: ", true)?,
        None => anyhow::bail!("Cannot perform an interactive login from a non TTY device"),
    };
    let password = match password {
        Some(p) => p,
        None if interactive => prompt("Password: ", false)?,
        None => anyhow::bail!("Cannot perform an interactive login from a non TTY device"),
    };
    if username.is_empty() {
        anyhow::bail!("Username is required");
    }
    if password.is_empty() {
        anyhow::bail!("Password is required");
    }
    let host = crate::client::registry::login(c, &server, &username, &password)
        .await
        .map_err(|e| {
            crate::exit::Exit::with(1, format!("Error response from daemon: {}", e.message()))
        })?;
    let store = credentials::Store::default_location()?;
    store.store(&host, &username, &password)?;
    println!("Login Succeeded");
    Ok(())
}

/// Asks for one line on the terminal, echoed or not.
fn prompt(question: &str, echo: bool) -> anyhow::Result<String> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    use std::io::Write;
    use std::os::fd::AsFd;
    print!("{question}");
    std::io::stdout().flush()?;
    let stdin = std::io::stdin();
    let saved = if echo {
        None
    } else {
        let saved = tcgetattr(stdin.as_fd()).context("read the terminal's settings")?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        tcsetattr(stdin.as_fd(), OptionalActions::Now, &quiet).context("turn echo off")?;
        Some(saved)
    };
    let mut line = String::new();
    let read = stdin.read_line(&mut line);
    if let Some(saved) = saved {
        let _ = tcsetattr(stdin.as_fd(), OptionalActions::Now, &saved);
        println!();
    }
    read.context("read from the terminal")?;
    Ok(line.trim_end_matches(['\n', '\r']).trim().to_string())
}

/// `berth search [--limit N] [--format …] REGISTRY/TERM`: the registry's v2 catalog
/// (Docker Hub's search API is not reachable here), with the NAME column Docker prints.
pub async fn search(
    c: &Client,
    term: String,
    limit: u32,
    format: &crate::output::Format,
) -> anyhow::Result<()> {
    let (server, what) = match term.split_once('/') {
        Some((host, rest)) if host.contains(['.', ':']) || host == "localhost" => (host, rest),
        _ => ("", term.as_str()),
    };
    let store = credentials::Store::default_location()?;
    let creds = if server.is_empty() {
        None
    } else {
        store.lookup(server)?
    };
    let names = crate::client::registry::search(c, server, what, limit, creds)
        .await
        .map_err(|e| {
            crate::exit::Exit::with(1, format!("Error response from daemon: {}", e.message()))
        })?;
    let rows: Vec<serde_json::Value> = names
        .iter()
        .map(|n| {
            let name = if server.is_empty() {
                n.clone()
            } else {
                format!("{server}/{n}")
            };
            serde_json::json!({
                "Name": name, "Description": "", "StarCount": 0,
                "IsOfficial": false, "IsAutomated": false, "Official": "",
            })
        })
        .collect();
    // A catalog has no descriptions, stars or official marks: Docker's columns, empty.
    let columns = [
        ("Name", "NAME"),
        ("Description", "DESCRIPTION"),
        ("StarCount", "STARS"),
        ("Official", "OFFICIAL"),
    ];
    crate::output::docker_list(format, &columns, &[], &rows)
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
