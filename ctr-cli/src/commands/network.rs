//! `berth network`: Docker's network commands over berthd's networks API — create, ls,
//! inspect, rm, prune. berthd owns the networks; this prints them as Docker does.

use std::collections::BTreeMap;

use berth_proto::berth::services::networks::v1 as pb;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::networks::{self, daemon_error, daemon_message};
use berth_proto::containerd::services::containers::v1::Container;

use crate::client::{Client, containers};
use crate::exit::Exit;
use crate::labels;
use crate::output;

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create a network.
    Create {
        /// Driver to manage the network (only bridge).
        #[arg(short = 'd', long, default_value = "bridge")]
        driver: String,
        /// Subnet in CIDR format (default: a free one of Docker's pools).
        #[arg(long)]
        subnet: Option<String>,
        /// IPv4 gateway for the subnet.
        #[arg(long)]
        gateway: Option<String>,
        /// Allocate container addresses from a sub-range (CIDR).
        #[arg(long = "ip-range")]
        ip_range: Option<String>,
        /// Restrict external access to the network.
        #[arg(long)]
        internal: bool,
        /// Set metadata on the network (KEY=VALUE).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Driver options (com.docker.network.bridge.name=NAME).
        #[arg(short = 'o', long = "opt")]
        opts: Vec<String>,
        name: String,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        /// Only display network IDs.
        #[arg(short, long)]
        quiet: bool,
        /// Do not truncate the output.
        #[arg(long = "no-trunc")]
        no_trunc: bool,
        /// Filter: name=, id=, driver=, label=KEY[=VALUE], type=custom|builtin.
        #[arg(short, long = "filter")]
        filters: Vec<String>,
    },
    /// Display detailed information on one or more networks.
    Inspect {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove one or more networks.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        networks: Vec<String>,
        /// Do not error if the network does not exist.
        #[arg(short, long)]
        force: bool,
    },
    /// Connect a container to a network.
    Connect {
        /// IPv4 address on the network.
        #[arg(long)]
        ip: Option<String>,
        /// Add a network-scoped alias for the container.
        #[arg(long = "alias")]
        aliases: Vec<String>,
        network: String,
        container: String,
    },
    /// Disconnect a container from a network.
    Disconnect {
        /// Force the container to disconnect from a network.
        #[arg(short, long)]
        force: bool,
        network: String,
        container: String,
    },
    /// Remove all unused user-defined networks.
    Prune {
        /// Do not prompt for confirmation.
        #[arg(short, long)]
        force: bool,
        /// Filter: label=KEY[=VALUE], label!=..., until=DURATION.
        #[arg(long = "filter")]
        filters: Vec<String>,
    },
}

pub async fn run(c: &Client, cmd: Cmd, format: &output::Format) -> anyhow::Result<()> {
    match cmd {
        Cmd::Create {
            driver,
            subnet,
            gateway,
            ip_range,
            internal,
            labels,
            opts,
            name,
        } => {
            let created = networks::api(c)
                .create(c.req(pb::CreateNetworkRequest {
                    name,
                    driver,
                    subnet: subnet.unwrap_or_default(),
                    gateway: gateway.unwrap_or_default(),
                    ip_range: ip_range.unwrap_or_default(),
                    internal,
                    labels: output::parse_labels(&labels),
                    options: output::parse_labels(&opts),
                }))
                .await
                .map_err(|s| daemon_error(s, 1))?
                .into_inner()
                .network
                .unwrap_or_default();
            println!("{}", created.id);
            Ok(())
        }
        Cmd::Ls {
            quiet,
            no_trunc,
            filters,
        } => ls(c, quiet, no_trunc, &filters, format).await,
        Cmd::Inspect { networks } => inspect(c, &networks, format).await,
        Cmd::Rm { networks, force } => rm(c, &networks, force).await,
        Cmd::Prune { force, filters } => prune(c, force, filters).await,
        Cmd::Connect {
            ip,
            aliases,
            network,
            container,
        } => connect(c, &network, &container, ip.unwrap_or_default(), aliases).await,
        Cmd::Disconnect {
            force,
            network,
            container,
        } => disconnect(c, &network, &container, force).await,
    }
}

/// The container `what` names, or Docker's error.
async fn container(c: &Client, what: &str) -> anyhow::Result<Container> {
    containers::resolve(c, what)
        .await
        .map_err(|e| Exit::with(1, format!("Error response from daemon: {e:#}")))
}

async fn connect(
    c: &Client,
    network: &str,
    what: &str,
    ip: String,
    aliases: Vec<String>,
) -> anyhow::Result<()> {
    let ct = container(c, what).await?;
    let net = networks::get(c, network)
        .await
        .map_err(|s| daemon_error(s, 1))?;
    let mut on = networks::label_networks(&ct);
    let name = containers::name_of(&ct);
    let fail = |m: String| Exit::with(1, format!("Error response from daemon: {m}"));
    match on.first().map(String::as_str) {
        Some("host") => {
            return Err(fail(
                "container cannot be disconnected from host network or connected to host network"
                    .into(),
            ));
        }
        Some("none") => {
            return Err(fail(
                "container cannot be connected to multiple networks with one of the networks in private (none) mode".into(),
            ));
        }
        Some(m) if m.starts_with("container:") => {
            return Err(fail(
                "container sharing network namespace with another container or host cannot be connected to any other network".into(),
            ));
        }
        _ => {}
    }
    if on.iter().any(|n| *n == net.name || *n == net.id) {
        return Err(fail(format!(
            "endpoint with name {name} already exists in network {}",
            net.name
        )));
    }
    networks::api(c)
        .connect_container(c.req(pb::ConnectRequest {
            network: net.name.clone(),
            container_id: ct.id.clone(),
            container_name: name,
            ip: ip.clone(),
            aliases: aliases.clone(),
        }))
        .await
        .map_err(|s| daemon_error(s, 1))?;
    // The next start joins it too.
    on.push(net.name.clone());
    containers::set_label(c, &ct.id, labels::NETWORK, &on.join(",")).await?;
    if !aliases.is_empty() {
        let key = format!("{}.{}", labels::NETWORK_ALIASES, net.name);
        containers::set_label(c, &ct.id, &key, &aliases.join(",")).await?;
    }
    if !ip.is_empty() {
        let key = format!("{}.{}", labels::IP, net.name);
        containers::set_label(c, &ct.id, &key, &ip).await?;
    }
    Ok(())
}

async fn disconnect(c: &Client, network: &str, what: &str, force: bool) -> anyhow::Result<()> {
    let ct = container(c, what).await?;
    let net = match networks::get(c, network).await {
        Ok(n) => n,
        Err(s) if force && s.code() == tonic::Code::NotFound => return Ok(()),
        Err(s) => return Err(daemon_error(s, 1)),
    };
    let on = networks::label_networks(&ct);
    if !on.iter().any(|n| *n == net.name || *n == net.id) {
        if force {
            return Ok(());
        }
        return Err(Exit::with(
            1,
            format!(
                "Error response from daemon: container {} is not connected to network {}",
                ct.id, net.name
            ),
        ));
    }
    networks::api(c)
        .disconnect_container(c.req(pb::DisconnectRequest {
            network: net.name.clone(),
            container_id: ct.id.clone(),
        }))
        .await
        .map_err(|s| daemon_error(s, 1))?;
    let rest: Vec<String> = on
        .into_iter()
        .filter(|n| *n != net.name && *n != net.id)
        .collect();
    let value = if rest.is_empty() {
        "none".to_string()
    } else {
        rest.join(",")
    };
    containers::set_label(c, &ct.id, labels::NETWORK, &value).await?;
    // What `connect` kept for this network goes with it (an empty label is removed).
    for key in [labels::IP, labels::NETWORK_ALIASES] {
        let key = format!("{key}.{}", net.name);
        if ct.labels.contains_key(&key) {
            containers::set_label(c, &ct.id, &key, "").await?;
        }
    }
    Ok(())
}

/// Whether network `n` passes every filter (Docker's: each key ORs its values, keys AND).
fn selected(n: &pb::Network, filters: &[String]) -> anyhow::Result<bool> {
    let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for f in filters {
        let (k, v) = f.split_once('=').ok_or_else(|| {
            Exit::with(
                125,
                format!("bad format of filter (expected name=value): {f}"),
            )
        })?;
        by_key.entry(k).or_default().push(v);
    }
    for (key, values) in by_key {
        let builtin = matches!(n.name.as_str(), "bridge" | "host" | "none");
        let one = |v: &str| -> anyhow::Result<bool> {
            Ok(match key {
                "name" => n.name.contains(v),
                "id" => n.id.starts_with(v),
                "driver" => n.driver == v,
                "label" => match v.split_once('=') {
                    Some((k, val)) => n.labels.get(k).is_some_and(|x| x == val),
                    None => n.labels.contains_key(v),
                },
                "type" => match v {
                    "custom" => !builtin,
                    "builtin" => builtin,
                    _ => {
                        return Err(Exit::with(
                            1,
                            format!("Error response from daemon: invalid filter: 'type'='{v}'"),
                        ));
                    }
                },
                "scope" => v == "local",
                _ => {
                    return Err(Exit::with(
                        1,
                        format!("Error response from daemon: invalid filter '{key}'"),
                    ));
                }
            })
        };
        let mut any = false;
        for v in values {
            any |= one(v)?;
        }
        if !any {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn ls(
    c: &Client,
    quiet: bool,
    no_trunc: bool,
    filters: &[String],
    format: &output::Format,
) -> anyhow::Result<()> {
    let list = networks::list(c).await.map_err(|s| daemon_error(s, 1))?;
    let mut rows = Vec::new();
    for n in &list {
        if !selected(n, filters)? {
            continue;
        }
        let id = if no_trunc {
            n.id.clone()
        } else {
            n.id.chars().take(12).collect()
        };
        if quiet {
            println!("{id}");
        } else {
            let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            rows.push(json!({
                "ID": id, "Name": n.name, "Driver": n.driver, "Scope": "local",
                "IPv6": "false", "Internal": n.internal.to_string(),
                "Labels": labels.join(","),
                "CreatedAt": output::rfc3339_nanos(n.created_at.as_ref()),
            }));
        }
    }
    if !quiet {
        let columns = [
            ("ID", "NETWORK ID"),
            ("Name", "NAME"),
            ("Driver", "DRIVER"),
            ("Scope", "SCOPE"),
        ];
        output::docker_list(
            format,
            &columns,
            &[
                ("IPv6", "IPV6"),
                ("Internal", "INTERNAL"),
                ("Labels", "LABELS"),
                ("CreatedAt", "CREATED AT"),
            ],
            &rows,
        )?;
    }
    Ok(())
}

/// Docker's `network inspect` object of `n`; `names` gives the attached containers' names.
fn inspect_json(n: &pb::Network, names: &BTreeMap<String, String>) -> Value {
    let mut ipam = Vec::new();
    if !n.subnet.is_empty() {
        let mut cfg = json!({ "Subnet": n.subnet, "Gateway": n.gateway });
        if !n.ip_range.is_empty() {
            cfg["IPRange"] = json!(n.ip_range);
        }
        ipam.push(cfg);
    }
    let containers: serde_json::Map<String, Value> = n
        .endpoints
        .iter()
        .map(|e| {
            (
                e.container_id.clone(),
                json!({
                    "Name": names.get(&e.container_id).cloned().unwrap_or_default(),
                    "EndpointID": networks::endpoint_id(&e.container_id, &n.id),
                    "MacAddress": e.mac_address,
                    "IPv4Address": e.address,
                    "IPv6Address": "",
                }),
            )
        })
        .collect();
    json!({
        "Name": n.name,
        "Id": n.id,
        "Created": output::rfc3339_nanos(n.created_at.as_ref()),
        "Scope": "local",
        "Driver": n.driver,
        "EnableIPv6": false,
        "IPAM": { "Driver": "default", "Options": if n.name == "bridge" { Value::Null } else { json!({}) }, "Config": ipam },
        "Internal": n.internal,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": { "Network": "" },
        "ConfigOnly": false,
        "Containers": containers,
        "Options": n.options,
        "Labels": n.labels,
    })
}

async fn inspect(c: &Client, keys: &[String], format: &output::Format) -> anyhow::Result<()> {
    let names: BTreeMap<String, String> = containers::list_all(c)
        .await?
        .into_iter()
        .map(|ct| {
            let name = ct.labels.get(labels::NAME).cloned().unwrap_or_default();
            (ct.id, name)
        })
        .collect();
    let mut out = Vec::new();
    let mut failed = false;
    for key in keys {
        match networks::get(c, key).await {
            Ok(n) => out.push(inspect_json(&n, &names)),
            Err(s) => {
                eprintln!("Error response from daemon: {}", daemon_message(&s));
                failed = true;
            }
        }
    }
    output::inspected(format, out)?;
    if failed {
        return Err(Exit::with(1, ""));
    }
    Ok(())
}

async fn rm(c: &Client, keys: &[String], force: bool) -> anyhow::Result<()> {
    let mut failed = false;
    for key in keys {
        let r = networks::api(c)
            .delete(c.req(pb::DeleteNetworkRequest { name: key.clone() }))
            .await;
        match r {
            Ok(_) => println!("{key}"),
            Err(s) if force && s.code() == tonic::Code::NotFound => {}
            Err(s) => {
                eprintln!("Error response from daemon: {}", daemon_message(&s));
                failed = true;
            }
        }
    }
    if failed {
        return Err(Exit::with(1, ""));
    }
    Ok(())
}

async fn prune(c: &Client, force: bool, filters: Vec<String>) -> anyhow::Result<()> {
    let warning =
        "WARNING! This will remove all custom networks not used by at least one container.";
    if !force && !output::confirm(warning)? {
        return Ok(());
    }
    let deleted = networks::prune_unused(c, filters).await?;
    if !deleted.is_empty() {
        println!("Deleted Networks:");
        for n in deleted {
            println!("{n}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str) -> pb::Network {
        pb::Network {
            id: format!("{name:0<64}"),
            name: name.to_string(),
            driver: "bridge".into(),
            labels: [("team".to_string(), "a".to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn ls_filters_as_docker() {
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let n = net("front");
        assert!(selected(&n, &f(&["name=fro"])).expect("ok"));
        assert!(selected(&n, &f(&["name=x", "name=front"])).expect("ok"));
        assert!(!selected(&n, &f(&["name=front", "driver=host"])).expect("ok"));
        assert!(selected(&n, &f(&["label=team=a", "type=custom"])).expect("ok"));
        assert!(!selected(&net("bridge"), &f(&["type=custom"])).expect("ok"));
        assert!(selected(&n, &f(&["bogus=1"])).is_err());
    }

    #[test]
    fn inspect_shows_the_ipam_config_and_containers() {
        let mut n = net("front");
        n.subnet = "10.5.0.0/24".into();
        n.gateway = "10.5.0.1".into();
        n.endpoints.push(pb::Endpoint {
            container_id: "c1".into(),
            address: "10.5.0.2/24".into(),
            ..Default::default()
        });
        let names = [("c1".to_string(), "web".to_string())].into();
        let v = inspect_json(&n, &names);
        assert_eq!(v["IPAM"]["Config"][0]["Subnet"], "10.5.0.0/24");
        assert_eq!(v["Containers"]["c1"]["Name"], "web");
        assert_eq!(v["Containers"]["c1"]["IPv4Address"], "10.5.0.2/24");
        assert_eq!(v["Labels"]["team"], "a");
    }
}
