//! Published ports as Docker's CLI takes them (`-p [ip:][hostPort:]containerPort[/proto]`,
//! ranges, `-P` over the exposed ports) and shows them (`0.0.0.0:8080->80/tcp`). berthd
//! picks the host port of a mapping that names none, when the container starts.

use berth_proto::berth::services::networks::v1::PortBinding;

use crate::exit::Exit;

fn bad(msg: String) -> anyhow::Error {
    Exit::with(125, msg)
}

/// `a` or `a-b` as an inclusive range of ports.
fn range(text: &str, what: &str) -> anyhow::Result<(u16, u16)> {
    let num = |s: &str| {
        s.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad(format!("invalid {what}: {text}")))
    };
    match text.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (num(a)?, num(b)?);
            if b < a {
                return Err(bad(format!("invalid range specified for {what}: {text}")));
            }
            Ok((a, b))
        }
        None => num(text).map(|p| (p, p)),
    }
}

/// One `-p` value as the mappings berthd takes (`ip:host:container/proto`, host 0 for any).
pub fn parse_publish(spec: &str) -> anyhow::Result<Vec<String>> {
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, p.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if proto != "tcp" && proto != "udp" {
        return Err(bad(format!("invalid proto: {proto}")));
    }
    let parts: Vec<&str> = rest.rsplitn(3, ':').collect();
    let (container, host, ip) = match parts.as_slice() {
        [c] => (*c, "", ""),
        [c, h] => (*c, *h, ""),
        [c, h, ip] => (*c, *h, ip.trim_matches(|c| c == '[' || c == ']')),
        _ => return Err(bad(format!("invalid port format: {spec}"))),
    };
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(bad(format!("invalid IP address: {ip}")));
    }
    let (c0, c1) = range(container, "containerPort")?;
    let hosts = if host.is_empty() || host == "0" {
        None
    } else {
        Some(range(host, "hostPort")?)
    };
    let count = c1 - c0;
    if let Some((h0, h1)) = hosts
        && h1 - h0 != count
        && count != 0
    {
        return Err(bad(format!(
            "invalid ranges specified for container and host Ports: {container} and {host}"
        )));
    }
    let mut out = Vec::new();
    for i in 0..=count {
        let host_port = match hosts {
            // One container port, a host range: the first of the range (berthd refuses a
            // taken one, as Docker may pick another in the range).
            Some((h0, _)) if count == 0 => h0,
            Some((h0, _)) => h0 + i,
            None => 0,
        };
        let ip_part = if ip.is_empty() {
            String::new()
        } else if ip.contains(':') {
            format!("[{ip}]:")
        } else {
            format!("{ip}:")
        };
        out.push(format!("{ip_part}{host_port}:{}/{proto}", c0 + i));
    }
    Ok(out)
}

/// An `EXPOSE`/`--expose` entry (`80`, `80/udp`, `8000-8002/tcp`) as its ports.
pub fn parse_expose(text: &str) -> anyhow::Result<Vec<(u16, String)>> {
    let (ports, proto) = match text.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (text, "tcp".to_string()),
    };
    let (a, b) = range(ports, "containerPort")?;
    Ok((a..=b).map(|p| (p, proto.clone())).collect())
}

/// Docker's display of one binding: `0.0.0.0:8080->80/tcp`.
pub fn display(p: &PortBinding) -> String {
    let ip = if p.host_ip.is_empty() {
        "0.0.0.0"
    } else {
        &p.host_ip
    };
    format!("{ip}:{}->{}/{}", p.host_port, p.container_port, p.protocol)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_specs_as_docker_takes_them() {
        let p = |s: &str| parse_publish(s).expect(s);
        assert_eq!(p("80"), ["0:80/tcp"]);
        assert_eq!(p("8080:80"), ["8080:80/tcp"]);
        assert_eq!(p("127.0.0.1:8080:80/udp"), ["127.0.0.1:8080:80/udp"]);
        assert_eq!(p("127.0.0.1::80"), ["127.0.0.1:0:80/tcp"]);
        assert_eq!(p("8000-8001:80-81"), ["8000:80/tcp", "8001:81/tcp"]);
        assert_eq!(p("80-81"), ["0:80/tcp", "0:81/tcp"]);
        assert_eq!(p("0:80"), ["0:80/tcp"]);
        for bad in ["x", "8000-8002:80-81", "80/sctp", "1.2.3:80:80", "80:0"] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_expose("8000-8001/udp").expect("expose"),
            [(8000, "udp".to_string()), (8001, "udp".to_string())]
        );
    }

    #[test]
    fn bindings_display_as_docker() {
        let b = PortBinding {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            ..Default::default()
        };
        assert_eq!(display(&b), "0.0.0.0:8080->80/tcp");
    }
}
