//! Running CNI plugins, as the CNI specification (1.0) has a runtime run them: a network is a
//! configuration list (`.conflist`); ADD runs its plugins in order, each given the previous
//! one's result; DEL runs them in reverse, given the ADD's result. A plugin is a binary found
//! in the plugin directories, called with the `CNI_*` environment and its configuration on
//! stdin; it answers on stdout (a result, or an error object) and with its exit status.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};

/// A network's configuration list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkList {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub name: String,
    /// Each plugin's configuration (its `type` names the binary).
    pub plugins: Vec<Map<String, Value>>,
}

impl NetworkList {
    /// Parses a `.conflist`, refusing one a runtime could not run.
    pub fn parse(text: &str) -> Result<NetworkList> {
        let list: NetworkList = serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("CNI network configuration list: {e}")))?;
        if list.name.is_empty() {
            return Err(Error::invalid("CNI network configuration list has no name"));
        }
        if list.plugins.is_empty() {
            return Err(Error::invalid(format!(
                "CNI network {:?} lists no plugins",
                list.name
            )));
        }
        for p in &list.plugins {
            if plugin_type(p).is_empty() {
                return Err(Error::invalid(format!(
                    "CNI network {:?}: a plugin has no type",
                    list.name
                )));
            }
        }
        Ok(list)
    }
}

fn plugin_type(conf: &Map<String, Value>) -> &str {
    conf.get("type").and_then(Value::as_str).unwrap_or("")
}

/// One container's attachment to a network.
#[derive(Debug, Clone, Default)]
pub struct Attachment {
    /// The container (or pod sandbox) id.
    pub container_id: String,
    /// The network namespace's path.
    pub netns: PathBuf,
    /// The interface name inside the namespace (`eth0`).
    pub ifname: String,
    /// `CNI_ARGS` pairs (`K8S_POD_NAME`, `IgnoreUnknown`...).
    pub args: Vec<(String, String)>,
    /// Runtime configuration (`portMappings`, `dns`...); each plugin gets the keys its
    /// `capabilities` ask for.
    pub runtime_config: Map<String, Value>,
}

/// An interface a plugin reports.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default)]
    pub mac: String,
    /// The namespace path for an interface inside the container; empty on the host.
    #[serde(default)]
    pub sandbox: String,
}

/// An address a plugin reports.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct IpConfig {
    /// CIDR notation (`10.88.0.5/16`).
    pub address: String,
    #[serde(default)]
    pub gateway: Option<String>,
    /// Index into the result's interfaces.
    #[serde(default)]
    pub interface: Option<usize>,
}

/// What an ADD made: the last plugin's result. `raw` is kept for the DEL.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AddResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub raw: Value,
}

impl AddResult {
    fn from_value(raw: Value) -> Result<AddResult> {
        #[derive(Deserialize)]
        struct Parsed {
            #[serde(default)]
            interfaces: Vec<Interface>,
            #[serde(default)]
            ips: Vec<IpConfig>,
        }
        let p: Parsed = serde_json::from_value(raw.clone())
            .map_err(|e| Error::Internal(format!("CNI result: {e}")))?;
        Ok(AddResult {
            interfaces: p.interfaces,
            ips: p.ips,
            raw,
        })
    }

    /// The address (without its prefix length) given to interface `ifname` in the
    /// container, or the first address when no interface is named.
    pub fn address_of(&self, ifname: &str) -> Option<String> {
        let idx = self
            .interfaces
            .iter()
            .position(|i| i.name == ifname && !i.sandbox.is_empty());
        self.ips
            .iter()
            .find(|ip| idx.is_none() || ip.interface == idx)
            .map(|ip| ip.address.split('/').next().unwrap_or_default().to_string())
    }
}

/// The CNI plugin runner: where the plugin binaries are.
#[derive(Debug, Clone)]
pub struct Cni {
    bin_dirs: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Add,
    Del,
}

impl Command {
    fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
        }
    }
}

impl Cni {
    pub fn new(bin_dirs: Vec<PathBuf>) -> Cni {
        Cni { bin_dirs }
    }

    /// Attaches the container to `net`: ADD through every plugin, in order.
    pub async fn add(&self, net: &NetworkList, a: &Attachment) -> Result<AddResult> {
        let mut prev: Option<Value> = None;
        for conf in &net.plugins {
            let out = self.exec(Command::Add, net, conf, a, prev.as_ref()).await?;
            prev = Some(out);
        }
        AddResult::from_value(prev.unwrap_or(Value::Null))
    }

    /// Detaches the container from `net`: DEL through every plugin, in reverse order, each
    /// given the ADD's result when there is one. Every plugin runs even when one fails (so
    /// that a failure leaks as little as possible); the first failure is returned.
    pub async fn del(
        &self,
        net: &NetworkList,
        a: &Attachment,
        added: Option<&Value>,
    ) -> Result<()> {
        let mut first: Option<Error> = None;
        for conf in net.plugins.iter().rev() {
            if let Err(e) = self.exec(Command::Del, net, conf, a, added).await {
                tracing::warn!(network = %net.name, container = %a.container_id, error = %e, "CNI DEL");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn find(&self, plugin: &str) -> Option<PathBuf> {
        if plugin.contains('/') {
            return None;
        }
        self.bin_dirs
            .iter()
            .map(|d| d.join(plugin))
            .find(|p| p.is_file())
    }

    /// The configuration a plugin reads on stdin: its own, with the list's name and
    /// version, the previous result and the runtime configuration its capabilities ask for.
    fn stdin_conf(
        net: &NetworkList,
        conf: &Map<String, Value>,
        a: &Attachment,
        prev: Option<&Value>,
    ) -> Map<String, Value> {
        let mut c = conf.clone();
        c.insert("name".into(), Value::String(net.name.clone()));
        c.insert("cniVersion".into(), Value::String(net.cni_version.clone()));
        if let Some(p) = prev.filter(|p| !p.is_null()) {
            c.insert("prevResult".into(), p.clone());
        }
        let wanted: BTreeMap<&str, bool> = conf
            .get("capabilities")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.as_str(), v.as_bool().unwrap_or(false)))
                    .collect()
            })
            .unwrap_or_default();
        let runtime: Map<String, Value> = a
            .runtime_config
            .iter()
            .filter(|(k, _)| wanted.get(k.as_str()).copied().unwrap_or(false))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !runtime.is_empty() {
            c.insert("runtimeConfig".into(), Value::Object(runtime));
        }
        c
    }

    async fn exec(
        &self,
        command: Command,
        net: &NetworkList,
        conf: &Map<String, Value>,
        a: &Attachment,
        prev: Option<&Value>,
    ) -> Result<Value> {
        let plugin = plugin_type(conf).to_string();
        let fail = |message: String| Error::Cni {
            plugin: plugin.clone(),
            command: command.as_str(),
            network: net.name.clone(),
            container: a.container_id.clone(),
            message,
        };
        let Some(bin) = self.find(&plugin) else {
            return Err(fail(format!(
                "plugin not found in {}",
                join_paths(&self.bin_dirs)
            )));
        };
        let stdin = serde_json::to_vec(&Self::stdin_conf(net, conf, a, prev))
            .map_err(|e| fail(format!("encode configuration: {e}")))?;
        let args: Vec<String> = a.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let began = std::time::Instant::now();
        let mut child = tokio::process::Command::new(&bin)
            .env_clear()
            .env("CNI_COMMAND", command.as_str())
            .env("CNI_CONTAINERID", &a.container_id)
            .env("CNI_NETNS", &a.netns)
            .env("CNI_IFNAME", &a.ifname)
            .env("CNI_ARGS", args.join(";"))
            .env("CNI_PATH", join_paths(&self.bin_dirs))
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail(format!("run {}: {e}", bin.display())))?;
        if let Some(mut input) = child.stdin.take() {
            input
                .write_all(&stdin)
                .await
                .map_err(|e| fail(format!("write configuration: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| fail(format!("wait: {e}")))?;
        tracing::debug!(
            %plugin,
            command = command.as_str(),
            network = %net.name,
            container = %a.container_id,
            ms = began.elapsed().as_secs_f64() * 1000.0,
            "CNI plugin ran"
        );
        if !out.status.success() {
            return Err(fail(plugin_error(&out.stdout, &out.stderr, out.status)));
        }
        if command == Command::Del || out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&out.stdout).map_err(|e| fail(format!("result is not JSON: {e}")))
    }
}

fn join_paths(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// The message of a failed plugin: its error object's `msg` (and `details`), else what it
/// printed.
fn plugin_error(stdout: &[u8], stderr: &[u8], status: std::process::ExitStatus) -> String {
    #[derive(Deserialize)]
    struct ErrorObject {
        #[serde(default)]
        code: u32,
        #[serde(default)]
        msg: String,
        #[serde(default)]
        details: String,
    }
    if let Ok(e) = serde_json::from_slice::<ErrorObject>(stdout)
        && !e.msg.is_empty()
    {
        let details = if e.details.is_empty() {
            String::new()
        } else {
            format!(": {}", e.details)
        };
        return format!("{}{details} (code {})", e.msg, e.code);
    }
    let text = String::from_utf8_lossy(if stdout.is_empty() { stderr } else { stdout });
    format!("{status}: {}", text.trim())
}
