//! The name server of user-defined networks, as Docker's embedded DNS and Podman's
//! aardvark-dns: berthd answers on each such network's gateway address (UDP port 53) for the
//! names, aliases and short ids of the containers attached to that network — and, for a
//! container on several networks, to any of its networks, as Docker's embedded DNS answers
//! (the asker known by its address) — read from the attachment records at each query, so
//! connects and disconnects count at once; every other question goes to the host's
//! resolvers.
//!
//! The server of a network starts when a container first attaches to it (its bridge has the
//! gateway address from then on), again at daemon start for the networks whose bridge is up,
//! and stops when the network is removed.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redb::ReadableTable;
use tokio::net::UdpSocket;

use super::AttachmentRecord;
use crate::error::{Error, Result};
use crate::metadata::{self, DbContext, NETWORK_ATTACHMENTS, Store};

const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
/// How long an answer for a container may be cached (Docker's embedded DNS says 600 s).
const TTL: u32 = 600;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

/// The running name servers, by network id. Cheap to clone.
#[derive(Clone, Default)]
pub struct Dns {
    servers: Arc<Mutex<HashMap<String, tokio::task::AbortHandle>>>,
}

impl Dns {
    /// Starts the name server of network `id` (CNI name `cni_name`) on `gateway`, unless it
    /// runs. Fails when the address cannot be bound (the bridge does not have it yet).
    pub async fn ensure(
        &self,
        store: &Store,
        id: &str,
        cni_name: &str,
        gateway: Ipv4Addr,
    ) -> Result<()> {
        // Read before the lock, off the worker's blocking path.
        let host = tokio::fs::read_to_string("/etc/resolv.conf")
            .await
            .unwrap_or_default();
        let mut servers = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
        if servers.get(id).is_some_and(|h| !h.is_finished()) {
            return Ok(());
        }
        let addr = SocketAddr::from((gateway, 53));
        let socket = std::net::UdpSocket::bind(addr)
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .and_then(UdpSocket::from_std)
            .map_err(|e| Error::io("bind the network's name server on", addr.to_string(), e))?;
        let server = Server {
            socket: Arc::new(socket),
            store: store.clone(),
            network: cni_name.to_string(),
            upstreams: upstreams(&host, gateway),
        };
        tracing::debug!(network = cni_name, %addr, "name server started");
        let handle = tokio::spawn(server.run()).abort_handle();
        servers.insert(id.to_string(), handle);
        Ok(())
    }

    /// Stops the name server of network `id`, if it runs.
    pub fn stop(&self, id: &str) {
        let mut servers = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = servers.remove(id) {
            h.abort();
        }
    }
}

/// The host's resolvers (loopback ones included: berthd runs in the host's namespace),
/// without the network's own address.
fn upstreams(resolv_conf: &str, own: Ipv4Addr) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        .filter_map(|a| a.parse::<std::net::IpAddr>().ok())
        .filter(|a| *a != std::net::IpAddr::V4(own))
        .map(|a| SocketAddr::new(a, 53))
        .collect()
}

struct Server {
    socket: Arc<UdpSocket>,
    store: Store,
    network: String,
    upstreams: Vec<SocketAddr>,
}

impl Server {
    async fn run(self) {
        let me = Arc::new(self);
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, peer) = match me.socket.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(network = %me.network, error = %e, "name server receive");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let packet = buf[..n].to_vec();
            let me = me.clone();
            tokio::spawn(async move {
                if let Some(reply) = me.reply(&packet, peer).await
                    && let Err(e) = me.socket.send_to(&reply, peer).await
                {
                    tracing::debug!(network = %me.network, %peer, error = %e, "name server send");
                }
            });
        }
    }

    async fn reply(&self, packet: &[u8], peer: SocketAddr) -> Option<Vec<u8>> {
        let q = Query::parse(packet)?;
        let asker = match peer.ip() {
            std::net::IpAddr::V4(ip) => Some(ip),
            std::net::IpAddr::V6(_) => None,
        };
        match self.lookup(&q.name, asker).await {
            Ok(Some(ip)) => Some(q.answer((q.qtype == TYPE_A).then_some(ip), 0)),
            Ok(None) => match self.forward(packet, q.id).await {
                Some(r) => Some(r),
                None => Some(q.answer(None, 2)),
            },
            Err(e) => {
                tracing::warn!(network = %self.network, error = %e, "name server lookup");
                Some(q.answer(None, 2))
            }
        }
    }

    /// The address of the container that answers to `name` on this network, else on
    /// another network the asker (the container at address `asker` on this network) is on.
    async fn lookup(&self, name: &str, asker: Option<Ipv4Addr>) -> Result<Option<Ipv4Addr>> {
        let (network, name) = (self.network.clone(), name.to_string());
        self.store
            .view(move |txn| {
                let t = txn
                    .open_table(NETWORK_ATTACHMENTS)
                    .ctx("open network_attachments")?;
                let mut records = Vec::new();
                for item in t.iter().ctx("scan network_attachments")? {
                    let (k, v) = item.ctx("read attachment")?;
                    let rec: AttachmentRecord =
                        metadata::decode("network attachment", k.value().1, v.value())?;
                    records.push(rec);
                }
                let ip_of = |address: &str| address.split('/').next().and_then(|a| a.parse().ok());
                // This network first, then the asker's other networks.
                let mut networks = vec![network.clone()];
                if let Some(asker) = asker
                    && let Some(rec) = records.iter().find(|r| {
                        r.networks
                            .iter()
                            .any(|n| n.network == network && ip_of(&n.address) == Some(asker))
                    })
                {
                    networks.extend(
                        rec.networks
                            .iter()
                            .map(|n| n.network.clone())
                            .filter(|n| *n != network),
                    );
                }
                for net in &networks {
                    for rec in &records {
                        let found = rec.networks.iter().find(|n| {
                            n.network == *net
                                && n.aliases.iter().any(|a| a.eq_ignore_ascii_case(&name))
                        });
                        if let Some(ip) = found.and_then(|n| ip_of(&n.address)) {
                            return Ok(Some(ip));
                        }
                    }
                }
                Ok(None)
            })
            .await
    }

    /// Asks the host's resolvers in turn; the first answer with the question's id.
    async fn forward(&self, packet: &[u8], id: u16) -> Option<Vec<u8>> {
        for upstream in &self.upstreams {
            let bind: SocketAddr = if upstream.is_ipv4() {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let Ok(sock) = UdpSocket::bind(bind).await else {
                continue;
            };
            if sock.send_to(packet, upstream).await.is_err() {
                continue;
            }
            let mut buf = vec![0u8; 4096];
            let got = tokio::time::timeout(UPSTREAM_TIMEOUT, sock.recv(&mut buf)).await;
            if let Ok(Ok(n)) = got
                && n >= 12
                && u16::from_be_bytes([buf[0], buf[1]]) == id
            {
                buf.truncate(n);
                return Some(buf);
            }
        }
        None
    }
}

/// The one question of a standard query.
#[derive(Debug, PartialEq)]
struct Query {
    id: u16,
    flags: u16,
    /// Lower case, no trailing dot.
    name: String,
    qtype: u16,
    /// The question section as received.
    question: Vec<u8>,
}

impl Query {
    fn parse(p: &[u8]) -> Option<Query> {
        if p.len() < 12 {
            return None;
        }
        let id = u16::from_be_bytes([p[0], p[1]]);
        let flags = u16::from_be_bytes([p[2], p[3]]);
        let qdcount = u16::from_be_bytes([p[4], p[5]]);
        // A query (QR clear), opcode QUERY, one question.
        if flags & 0x8000 != 0 || (flags >> 11) & 0xf != 0 || qdcount != 1 {
            return None;
        }
        let mut i = 12;
        let mut labels = Vec::new();
        loop {
            let len = usize::from(*p.get(i)?);
            i += 1;
            if len == 0 {
                break;
            }
            if len > 63 {
                return None;
            }
            labels.push(String::from_utf8_lossy(p.get(i..i + len)?).to_ascii_lowercase());
            i += len;
        }
        let qtype = u16::from_be_bytes([*p.get(i)?, *p.get(i + 1)?]);
        let qclass = u16::from_be_bytes([*p.get(i + 2)?, *p.get(i + 3)?]);
        if qclass != CLASS_IN {
            return None;
        }
        Some(Query {
            id,
            flags,
            name: labels.join("."),
            qtype,
            question: p[12..i + 4].to_vec(),
        })
    }

    /// The response: one A record for `ip` (none: no record of the asked type), `rcode`.
    fn answer(&self, ip: Option<Ipv4Addr>, rcode: u16) -> Vec<u8> {
        // QR, authoritative, recursion desired as asked, recursion available.
        let flags = 0x8000 | 0x0400 | (self.flags & 0x0100) | 0x0080 | (rcode & 0xf);
        let mut out = Vec::with_capacity(12 + self.question.len() + 16);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&u16::from(ip.is_some()).to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&self.question);
        if let Some(ip) = ip {
            // The name: a pointer to the question's (offset 12).
            out.extend_from_slice(&[0xc0, 0x0c]);
            out.extend_from_slice(&TYPE_A.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&TTL.to_be_bytes());
            out.extend_from_slice(&4u16.to_be_bytes());
            out.extend_from_slice(&ip.octets());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            p.push(label.len() as u8);
            p.extend_from_slice(label.as_bytes());
        }
        p.push(0);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&CLASS_IN.to_be_bytes());
        p
    }

    #[test]
    fn a_query_is_answered_with_one_record() {
        let q = Query::parse(&query("Web.example", TYPE_A)).expect("parse");
        assert_eq!(
            (q.id, q.name.as_str(), q.qtype),
            (0x1234, "web.example", TYPE_A)
        );
        let r = q.answer(Some(Ipv4Addr::new(10, 1, 2, 3)), 0);
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(
            u16::from_be_bytes([r[2], r[3]]) & 0x8000,
            0x8000,
            "a response"
        );
        assert_eq!(u16::from_be_bytes([r[2], r[3]]) & 0xf, 0, "NOERROR");
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1, "one answer");
        assert_eq!(&r[r.len() - 4..], &[10, 1, 2, 3]);
        let none = q.answer(None, 2);
        assert_eq!(u16::from_be_bytes([none[2], none[3]]) & 0xf, 2, "SERVFAIL");
        assert_eq!(u16::from_be_bytes([none[6], none[7]]), 0);
    }

    #[test]
    fn responses_and_garbage_are_not_queries() {
        let mut p = query("a", TYPE_A);
        p[2] |= 0x80;
        assert!(Query::parse(&p).is_none());
        assert!(Query::parse(&[0; 5]).is_none());
        let mut cut = query("abc", TYPE_A);
        cut.truncate(15);
        assert!(Query::parse(&cut).is_none());
    }

    #[test]
    fn upstreams_are_the_hosts_resolvers_but_ours() {
        let conf = "search x\nnameserver 127.0.0.53\nnameserver 10.1.0.1\nnameserver ::1\n";
        let got = upstreams(conf, Ipv4Addr::new(10, 1, 0, 1));
        assert_eq!(
            got,
            vec![
                "127.0.0.53:53".parse::<SocketAddr>().expect("addr"),
                "[::1]:53".parse().expect("addr")
            ]
        );
    }
}
