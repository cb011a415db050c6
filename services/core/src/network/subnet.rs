//! IPv4 subnets: parsing, overlap, and choosing a default bridge subnet that collides with
//! none of the host's networks (as Docker picks its default bridge's).

use std::net::Ipv4Addr;

use crate::error::{Error, Result};

/// An IPv4 network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    /// Parses `a.b.c.d/n`; the address is masked to the network's.
    pub fn parse(text: &str) -> Result<Subnet> {
        let bad = |why: &str| Error::invalid(format!("subnet {text:?}: {why}"));
        let (addr, prefix) = text.split_once('/').ok_or_else(|| bad("want a.b.c.d/n"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("bad prefix length"))?;
        if prefix > 32 {
            return Err(bad("prefix length over 32"));
        }
        Ok(Subnet::new(addr, prefix))
    }

    fn new(addr: Ipv4Addr, prefix: u8) -> Subnet {
        Subnet {
            addr: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        }
    }

    /// Whether the two share an address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        let m = mask(self.prefix.min(other.prefix));
        u32::from(self.addr) & m == u32::from(other.addr) & m
    }

    /// The first host address (the usual gateway).
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | 1)
    }

    /// The last host address (the one before the broadcast address).
    pub fn last_host(&self) -> Ipv4Addr {
        let broadcast = u32::from(self.addr) | !mask(self.prefix);
        Ipv4Addr::from(broadcast.saturating_sub(1).max(u32::from(self.addr)))
    }

    /// Whether `ip` is in the subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }

    /// Whether `other` lies wholly inside this subnet.
    pub fn covers(&self, other: &Subnet) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

/// The networks the host routes to, from `/proc/net/route`: the default route left out, and
/// the routes through interface `own` (the bridge itself, still there from an earlier run:
/// its subnet is the one to keep, not to avoid).
pub fn host_networks(own: &str) -> Vec<Subnet> {
    std::fs::read_to_string("/proc/net/route")
        .map(|t| parse_routes(&t, own))
        .unwrap_or_default()
}

/// Parses `/proc/net/route`: destination and mask are little-endian hex.
fn parse_routes(text: &str, own: &str) -> Vec<Subnet> {
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.first() == Some(&own) {
                return None;
            }
            let (dst, m) = (hex(f.get(1)?)?, hex(f.get(7)?)?);
            let prefix = u8::try_from(m.count_ones()).ok()?;
            (prefix > 0).then(|| Subnet::new(Ipv4Addr::from(dst.swap_bytes()), prefix))
        })
        .collect()
}

/// Where a default bridge subnet is looked for, in order (Docker's default pools first).
const CANDIDATES: [&str; 17] = [
    "172.17.0.0/16",
    "172.18.0.0/16",
    "172.19.0.0/16",
    "172.20.0.0/16",
    "172.21.0.0/16",
    "172.22.0.0/16",
    "172.23.0.0/16",
    "172.24.0.0/16",
    "172.25.0.0/16",
    "172.26.0.0/16",
    "172.27.0.0/16",
    "172.28.0.0/16",
    "172.29.0.0/16",
    "172.30.0.0/16",
    "172.31.0.0/16",
    "10.88.0.0/16",
    "192.168.250.0/24",
];

/// The subnet of a bridge network: `configured` when set, else the first candidate that
/// overlaps none of `used` (the host's networks and the other bridges').
pub fn choose(configured: &str, used: &[Subnet]) -> Result<Subnet> {
    if !configured.is_empty() {
        return Subnet::parse(configured);
    }
    CANDIDATES
        .iter()
        .filter_map(|c| Subnet::parse(c).ok())
        .find(|c| !used.iter().any(|u| u.overlaps(c)))
        .ok_or_else(|| {
            Error::Unavailable(
                "no free subnet for the bridge network: every default pool overlaps a host network; set network.subnet in berthd's config".into(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_masks_and_overlaps() {
        let s = Subnet::parse("172.17.3.4/16").expect("parse");
        assert_eq!(s.to_string(), "172.17.0.0/16");
        assert_eq!(s.first_host().to_string(), "172.17.0.1");
        assert!(s.overlaps(&Subnet::parse("172.17.200.0/24").expect("parse")));
        assert!(!s.overlaps(&Subnet::parse("172.18.0.0/24").expect("parse")));
        assert!(Subnet::parse("172.17.0.0").is_err());
        assert!(Subnet::parse("300.1.1.1/8").is_err());
        assert!(Subnet::parse("10.0.0.0/33").is_err());
    }

    #[test]
    fn chooses_the_first_free_pool() {
        let used = [
            Subnet::parse("172.16.0.0/15").expect("parse"),
            Subnet::parse("172.18.5.0/24").expect("parse"),
            Subnet::parse("172.19.0.0/16").expect("parse"),
        ];
        assert_eq!(
            choose("", &used).expect("choose").to_string(),
            "172.20.0.0/16"
        );
        assert_eq!(
            choose("10.9.0.0/24", &used)
                .expect("configured")
                .to_string(),
            "10.9.0.0/24"
        );
        let all = [
            Subnet::parse("0.0.0.0/1").expect("parse"),
            Subnet::parse("128.0.0.0/1").expect("parse"),
        ];
        assert!(choose("", &all).is_err());
    }

    #[test]
    fn reads_proc_net_route() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
eth0\t0000A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n\
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        let got: Vec<String> = parse_routes(text, "berth0")
            .iter()
            .map(Subnet::to_string)
            .collect();
        assert_eq!(got, ["192.168.0.0/24", "172.17.0.0/16"]);
        let got: Vec<String> = parse_routes(text, "docker0")
            .iter()
            .map(Subnet::to_string)
            .collect();
        assert_eq!(got, ["192.168.0.0/24"]);
    }
}
