//! Published ports: which host ports the containers hold, a free one for `-p 80` (any host
//! port), and Docker's refusal of a host port that is taken — by another container (from
//! the attachment records, all namespaces) or by a process of the host (a probe bind).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};

use redb::ReadableTable;
use serde_json::Value;

use super::{AttachmentRecord, Networks, PortMapping};
use crate::error::{Error, Result};
use crate::metadata::{self, DbContext, NETWORK_ATTACHMENTS};

/// The ports an attachment's runtime configuration publishes.
pub fn published(runtime_config: &str) -> Vec<PortMapping> {
    let Ok(v) = serde_json::from_str::<Value>(runtime_config) else {
        return Vec::new();
    };
    let Some(list) = v.get("portMappings").and_then(Value::as_array) else {
        return Vec::new();
    };
    let port = |m: &Value, k: &str| {
        m.get(k)
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(0)
    };
    list.iter()
        .map(|m| PortMapping {
            host_port: port(m, "hostPort"),
            container_port: port(m, "containerPort"),
            protocol: m
                .get("protocol")
                .and_then(Value::as_str)
                .unwrap_or("tcp")
                .to_string(),
            host_ip: m
                .get("hostIP")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        })
        .collect()
}

/// Whether the two publish on the same host port (same protocol, overlapping addresses).
fn clash(a: &PortMapping, b: &PortMapping) -> bool {
    a.host_port == b.host_port
        && a.protocol == b.protocol
        && (a.host_ip.is_empty() || b.host_ip.is_empty() || a.host_ip == b.host_ip)
}

fn host_addr(p: &PortMapping) -> IpAddr {
    p.host_ip
        .parse()
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// Binds the host port for a moment: taken by a process of the host when it fails. Port 0:
/// returns the port the kernel picked.
fn probe(p: &PortMapping) -> std::io::Result<u16> {
    let addr = SocketAddr::new(host_addr(p), p.host_port);
    if p.protocol == "udp" {
        UdpSocket::bind(addr)?.local_addr().map(|a| a.port())
    } else {
        TcpListener::bind(addr)?.local_addr().map(|a| a.port())
    }
}

fn taken_error(container: &str, p: &PortMapping) -> Error {
    let ip = if p.host_ip.is_empty() {
        "0.0.0.0"
    } else {
        &p.host_ip
    };
    Error::precondition(format!(
        "driver failed programming external connectivity on endpoint of container {container}: Bind for {ip}:{} failed: port is already allocated",
        p.host_port
    ))
}

/// The mappings of `wanted` with every host port chosen: a given one checked free, an
/// unspecified one picked free. `taken`: what the other containers hold.
pub fn claim(
    container: &str,
    wanted: &[PortMapping],
    taken: &[PortMapping],
) -> Result<Vec<PortMapping>> {
    let mut out: Vec<PortMapping> = Vec::new();
    for w in wanted {
        let mut p = w.clone();
        if p.host_port == 0 {
            let mut tries = 0;
            p.host_port = loop {
                tries += 1;
                let port = probe(&p).map_err(|e| {
                    Error::Unavailable(format!(
                        "no free host port for {}/{} of container {container}: {e}",
                        p.container_port, p.protocol
                    ))
                })?;
                let candidate = PortMapping {
                    host_port: port,
                    ..p.clone()
                };
                let used = taken.iter().chain(out.iter()).any(|t| clash(t, &candidate));
                if !used || tries > 64 {
                    break port;
                }
            };
        } else {
            if taken.iter().chain(out.iter()).any(|t| clash(t, &p)) {
                return Err(taken_error(container, &p));
            }
            if let Err(e) = probe(&p) {
                if e.kind() == std::io::ErrorKind::AddrInUse {
                    return Err(taken_error(container, &p));
                }
                if e.kind() == std::io::ErrorKind::AddrNotAvailable {
                    return Err(Error::invalid(format!(
                        "published port {p} of container {container}: the host has no address {}",
                        p.host_ip
                    )));
                }
            }
        }
        out.push(p);
    }
    Ok(out)
}

impl Networks {
    /// Every host port the attached containers publish (all namespaces), but `except`'s.
    pub(super) async fn ports_in_use(&self, except: (&str, &str)) -> Result<Vec<PortMapping>> {
        let (ens, eid) = (except.0.to_string(), except.1.to_string());
        self.store
            .view(move |txn| {
                let t = txn
                    .open_table(NETWORK_ATTACHMENTS)
                    .ctx("open network_attachments")?;
                let mut out = Vec::new();
                for item in t.iter().ctx("scan network_attachments")? {
                    let (k, v) = item.ctx("read attachment")?;
                    let (ns, id) = k.value();
                    if (ns, id) == (ens.as_str(), eid.as_str()) {
                        continue;
                    }
                    let rec: AttachmentRecord =
                        metadata::decode("network attachment", id, v.value())?;
                    for n in &rec.networks {
                        out.extend(published(&n.runtime_config));
                    }
                }
                Ok(out)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm(text: &str) -> PortMapping {
        PortMapping::parse(text).expect("parse")
    }

    #[test]
    fn any_host_port_is_picked_free_and_a_taken_one_refused() {
        let got = claim("c", &[pm("80"), pm("81/udp")], &[]).expect("claim");
        assert!(got.iter().all(|p| p.host_port != 0), "{got:?}");
        // Held by another container: refused as Docker refuses it.
        let err = claim("c", &[pm("18000:80")], &[pm("18000:90")]).expect_err("taken");
        assert!(
            err.to_string()
                .contains("Bind for 0.0.0.0:18000 failed: port is already allocated"),
            "{err}"
        );
        // Other protocol, or another address: no clash.
        assert!(!clash(&pm("18000:80/udp"), &pm("18000:80")));
        assert!(!clash(&pm("127.0.0.1:18000:80"), &pm("127.0.0.2:18000:80")));
        assert!(clash(&pm("127.0.0.1:18000:80"), &pm("18000:80")));
        // Held by a process of the host.
        let l = TcpListener::bind("0.0.0.0:0").expect("listen");
        let port = l.local_addr().expect("addr").port();
        let err = claim("c", &[pm(&format!("{port}:80"))], &[]).expect_err("host-held");
        assert!(
            err.to_string().contains("port is already allocated"),
            "{err}"
        );
    }

    #[test]
    fn published_ports_read_back_from_the_runtime_config() {
        let text = r#"{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"127.0.0.1"}],"ips":["10.0.0.2"]}"#;
        assert_eq!(published(text), vec![pm("127.0.0.1:8080:80")]);
        assert!(published("").is_empty());
    }
}
