//! `berth port`: the public ports of a container, as Docker prints them.

use crate::client::containers::{name_of, resolve};
use crate::client::{Client, networks};
use crate::exit::Exit;

pub async fn run(c: &Client, container: &str, private: Option<&str>) -> anyhow::Result<()> {
    let ct = resolve(c, container)
        .await
        .map_err(|e| Exit::with(1, format!("Error response from daemon: {e:#}")))?;
    let ports = networks::ports_of(c, &ct).await;
    let host = |p: &berth_proto::berth::services::networks::v1::PortBinding| {
        let ip = if p.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            &p.host_ip
        };
        format!("{ip}:{}", p.host_port)
    };
    match private {
        None => {
            for p in &ports {
                println!("{}/{} -> {}", p.container_port, p.protocol, host(p));
            }
        }
        Some(want) => {
            let (port, proto) = want.split_once('/').unwrap_or((want, "tcp"));
            let matching: Vec<_> = ports
                .iter()
                .filter(|p| p.container_port.to_string() == port && p.protocol == proto)
                .collect();
            if matching.is_empty() {
                return Err(Exit::with(
                    1,
                    format!(
                        "Error: No public port '{want}' published for {}",
                        name_of(&ct)
                    ),
                ));
            }
            for p in matching {
                println!("{}", host(p));
            }
        }
    }
    Ok(())
}
