//! The registry client: Docker/OCI distribution (registry v2) over HTTP(S).
//!
//! - [`reference`] parses and normalises image references (`busybox` →
//!   `docker.io/library/busybox:latest`), as the `distribution/reference` package does.
//! - [`hosts`] reads containerd's hosts directory (`<config_path>/<host>/hosts.toml`) and
//!   orders the endpoints to try for a registry: mirrors first, then the server.
//! - [`auth`] keeps credentials (a Docker-style `config.json`) and answers the registry's
//!   `WWW-Authenticate` challenges (bearer tokens, basic).
//! - [`client`] resolves, fetches and pushes manifests and blobs.
//! - `http` reads what a registry's HTTP answers say (transport errors, error bodies,
//!   headers), for `client` and `auth` alike.
//!
//! The pull and push flows that use them live in `crate::pull` and `crate::push`.
//! Nothing here knows about gRPC; errors are `crate::error::Error`.

use crate::images::Descriptor;

pub mod auth;
pub mod client;
pub mod hosts;
mod http;
pub mod reference;
#[cfg(test)]
pub(crate) mod testutil;

pub use client::{ClientOptions, Hosts, Registries, RegistryClient};
pub use reference::Reference;

/// What happens to one blob during a pull or a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    /// Known, not started yet.
    Waiting,
    /// Bytes are coming in from the registry.
    Downloading,
    /// Bytes are going out to the registry.
    Uploading,
    /// Fetched (or pushed) completely.
    Done,
    /// Nothing to do: the namespace (or, for a push, the registry) already has it.
    Exists,
    /// Being unpacked into a snapshotter (layers, after they were fetched).
    Unpacking,
}

impl ProgressState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProgressState::Waiting => "waiting",
            ProgressState::Downloading => "downloading",
            ProgressState::Uploading => "uploading",
            ProgressState::Done => "done",
            ProgressState::Exists => "exists",
            ProgressState::Unpacking => "unpacking",
        }
    }
}

/// A progress report for one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub digest: String,
    pub media_type: String,
    /// Bytes transferred so far (for a resumed download, counting what was already there).
    pub offset: i64,
    pub total: i64,
    pub state: ProgressState,
}

impl Progress {
    /// A report on the blob `desc`: `offset` of its bytes transferred.
    pub fn new(desc: &Descriptor, offset: i64, state: ProgressState) -> Progress {
        Progress {
            digest: desc.digest.clone(),
            media_type: desc.media_type.clone(),
            offset,
            total: desc.size,
            state,
        }
    }
}
