//! The network core against the real CNI plugins (Debian's containernetworking-plugins):
//! a namespace made and removed, a bridge network attached and detached with nothing left.

use std::process::Command;

use serde_json::json;

use super::cni::{Attachment, Cni, NetworkList};
use super::netns;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run command");
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a test that fails half-way would leave on the host, taken away when dropped: the
/// namespaces mounted under `dir`, iptables rules naming the subnet (`prefix`), the bridge.
struct Leftovers {
    dir: std::path::PathBuf,
    prefix: String,
    bridge: String,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let under = self.dir.display().to_string();
        for m in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)) {
            if m.starts_with(&under) {
                let _ = netns::remove(std::path::Path::new(m));
            }
        }
        let saved = Command::new("iptables-save").output();
        let text = saved.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        let mut table = String::new();
        for line in text.unwrap_or_default().lines() {
            if let Some(t) = line.strip_prefix('*') {
                table = t.to_string();
            } else if let Some(rule) = line.strip_prefix("-A ")
                && (line.contains(&self.prefix)
                    || line.split_whitespace().any(|w| w == self.bridge))
            {
                let _ = Command::new("sh")
                    .arg("-c")
                    .arg(format!("iptables -t {table} -D {rule}"))
                    .output();
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

/// A /24 of 10.251.0.0/16 and a bridge name of this test run's own, so that parallel runs
/// do not meet.
fn unique() -> (String, String) {
    let n = std::process::id() % 250 + 1;
    (
        format!("10.251.{n}.0/24"),
        format!("bt{n}x{}", std::process::id() % 10_000),
    )
}

#[test]
fn a_namespace_is_made_and_removed() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = netns::create(dir.path(), "berth-test-ns").expect("create");
    assert!(netns::exists(&path));
    let err = netns::create(dir.path(), "berth-test-ns").expect_err("twice");
    assert!(err.is_already_exists(), "{err}");
    // Only a loopback device, down, in a fresh namespace.
    let links = run(Command::new("nsenter")
        .arg(format!("--net={}", path.display()))
        .args(["ip", "-o", "link"]));
    assert_eq!(links.lines().count(), 1, "{links}");
    netns::remove(&path).expect("remove");
    assert!(!path.exists());
    netns::remove(&path).expect("removing twice is no error");
}

#[tokio::test]
async fn a_bridge_network_is_attached_and_detached_leaving_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let (subnet, bridge) = unique();
    let ipam_dir = dir.path().join("ipam");
    let _leftovers = Leftovers {
        dir: dir.path().to_path_buf(),
        prefix: subnet.trim_end_matches("0/24").to_string(),
        bridge: bridge.clone(),
    };
    let net = NetworkList::parse(
        &json!({
            "cniVersion": "1.0.0",
            "name": "berth-test",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{ "subnet": subnet }]],
                        "dataDir": ipam_dir,
                    }
                }
            ]
        })
        .to_string(),
    )
    .expect("conflist");
    let path = netns::create(&dir.path().join("netns"), "berth-test-cni").expect("netns");
    let cni = Cni::new(crate::config::NetworkConfig::default().cni_bin_dirs);
    let a = Attachment {
        container_id: "berth-test-cni".into(),
        netns: path.clone(),
        ifname: "eth0".into(),
        ..Default::default()
    };
    let added = cni.add(&net, &a).await;
    let cleanup = || {
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        let _ = netns::remove(&path);
    };
    let added = match added {
        Ok(r) => r,
        Err(e) => {
            cleanup();
            panic!("CNI ADD: {e}");
        }
    };
    let ip = added.address_of("eth0").expect("an address for eth0");
    let inside = run(Command::new("nsenter")
        .arg(format!("--net={}", path.display()))
        .args(["ip", "-4", "-o", "addr", "show", "eth0"]));
    assert!(inside.contains(&format!("{ip}/24")), "{inside}");
    let leases: Vec<_> = std::fs::read_dir(ipam_dir.join("berth-test"))
        .expect("ipam dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
        .collect();
    assert_eq!(leases.len(), 1, "one IPAM lease while attached");

    let deleted = cni.del(&net, &a, Some(&added.raw)).await;
    let veths = run(Command::new("ip").args(["-o", "link", "show", "master", &bridge]));
    cleanup();
    deleted.expect("CNI DEL");
    assert!(
        veths.trim().is_empty(),
        "no veth left on the bridge: {veths}"
    );
    let leases = std::fs::read_dir(ipam_dir.join("berth-test"))
        .expect("ipam dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
        .count();
    assert_eq!(leases, 0, "the IPAM lease is released");
    // DEL again (after a crash, say) is no error.
    let again = netns::create(&dir.path().join("netns"), "berth-test-cni").expect("netns");
    cni.del(&net, &a, None).await.expect("second DEL");
    let _ = Command::new("ip").args(["link", "del", &bridge]).output();
    netns::remove(&again).expect("remove");
}

#[tokio::test]
async fn a_failing_plugin_is_reported_with_its_message() {
    let net = NetworkList::parse(
        &json!({"cniVersion": "1.0.0", "name": "broken", "plugins": [{"type": "bridge"}]})
            .to_string(),
    )
    .expect("conflist");
    let cni = Cni::new(crate::config::NetworkConfig::default().cni_bin_dirs);
    let a = Attachment {
        container_id: "c1".into(),
        netns: "/nonexistent/netns".into(),
        ifname: "eth0".into(),
        ..Default::default()
    };
    let err = cni.add(&net, &a).await.expect_err("no netns");
    let text = err.to_string();
    assert!(
        text.starts_with("CNI plugin bridge ADD for network \"broken\" of c1: "),
        "{text}"
    );
    let missing = NetworkList::parse(
        &json!({"cniVersion": "1.0.0", "name": "m", "plugins": [{"type": "nope"}]}).to_string(),
    )
    .expect("conflist");
    let err = cni.add(&missing, &a).await.expect_err("no plugin");
    assert!(
        err.to_string().contains("plugin not found in /usr/lib/cni"),
        "{err}"
    );
    assert!(NetworkList::parse(r#"{"cniVersion":"1.0.0","name":"x","plugins":[]}"#).is_err());
}

fn iptables_save() -> String {
    run(&mut Command::new("iptables-save"))
}

/// A container attached to a bridge network with a published port: its address inside its
/// namespace, the port's DNAT rule on the host; detached, nothing is left — no namespace, no
/// veth, no rule naming its address, no IPAM lease, no record. A sweep after a "crash" does
/// the same for an attachment nobody detached.
#[tokio::test]
async fn networks_attach_detach_and_sweep_leave_nothing() {
    use super::{BridgeNetwork, NetworkDirs, Networks, PortMapping};
    let dir = tempfile::tempdir().expect("tmp");
    let store = crate::metadata::Store::open(&dir.path().join("meta.redb")).expect("db");
    let (subnet, bridge) = unique();
    let subnet = subnet.replace("10.251.", "10.252.");
    let bridge = format!("{bridge}n");
    let _leftovers = Leftovers {
        dir: dir.path().to_path_buf(),
        prefix: subnet.trim_end_matches("0/24").to_string(),
        bridge: bridge.clone(),
    };
    let net = BridgeNetwork {
        name: format!("bt-{}", std::process::id()),
        bridge: bridge.clone(),
        subnet,
        gateway: None,
        internal: false,
        ip_range: None,
        dns: false,
    };
    let networks = Networks::new(
        store,
        NetworkDirs {
            cni_bin_dirs: crate::config::NetworkConfig::default().cni_bin_dirs,
            netns_dir: dir.path().join("netns"),
            ipam_dir: dir.path().join("ipam"),
            files_dir: dir.path().join("files"),
        },
        net.clone(),
    );
    assert_eq!(networks.default_network(), &net);
    let host_port = 20_000 + (std::process::id() % 20_000) as u16;
    let ports = [PortMapping {
        host_port,
        container_port: 80,
        protocol: "tcp".into(),
        host_ip: String::new(),
    }];
    let attached = networks
        .attach("ns", "web", &[net.clone().into()], &ports)
        .await;
    let rec = match attached {
        Ok(r) => r,
        Err(e) => {
            let _ = Command::new("ip").args(["link", "del", &bridge]).output();
            panic!("attach: {e}");
        }
    };
    let ip = rec.networks[0].address.clone();
    assert!(!ip.is_empty(), "{rec:?}");
    let inside = run(Command::new("nsenter")
        .arg(format!("--net={}", rec.netns))
        .args(["ip", "-4", "-o", "addr"]));
    assert!(inside.contains("127.0.0.1/8"), "loopback is up: {inside}");
    assert!(inside.contains(&format!("{ip}/24")), "{inside}");
    let rules = iptables_save();
    assert!(
        rules.contains(&format!("--dport {host_port}")) && rules.contains(&format!("{ip}:80")),
        "the port's DNAT rule: {rules}"
    );
    let again = networks
        .attach("ns", "web", &[net.clone().into()], &[])
        .await;
    assert!(again.expect_err("attached twice").is_already_exists());

    networks.detach("ns", "web").await.expect("detach");
    // `alone`: no other container is attached to the bridge.
    let check_gone = |ip: &str, netns: &str, alone: bool| {
        assert!(!std::path::Path::new(netns).exists(), "netns {netns} left");
        let veths = run(Command::new("ip").args(["-o", "link", "show", "master", &bridge]));
        assert_eq!(veths.lines().count(), usize::from(!alone), "veths: {veths}");
        let rules = iptables_save();
        assert!(
            !rules.contains(&format!("{ip}/32")) && !rules.contains(&format!("{ip}:80")),
            "rule left for {ip}: {rules}"
        );
        let lease = dir.path().join("ipam").join(&net.name).join(ip);
        assert!(!lease.exists(), "IPAM lease {} left", lease.display());
    };
    check_gone(&ip, &rec.netns, true);
    assert!(networks.get("ns", "web").await.expect("get").is_none());
    networks.detach("ns", "web").await.expect("detach twice");

    // A "crash": attached, never detached; the sweep keeps what it is told to keep.
    let a = networks
        .attach("ns", "a", &[net.clone().into()], &[])
        .await
        .expect("attach a");
    let b = networks
        .attach("ns", "b", &[net.clone().into()], &[])
        .await
        .expect("attach b");
    let swept = networks.sweep(|_, id| id == "b").await.expect("sweep");
    assert_eq!(swept, 1);
    check_gone(&a.networks[0].address, &a.netns, false);
    assert!(networks.get("ns", "b").await.expect("get").is_some());
    networks.detach("ns", "b").await.expect("detach b");
    check_gone(&b.networks[0].address, &b.netns, true);
    let _ = Command::new("ip").args(["link", "del", &bridge]).output();
}

/// portmap is in a container's configuration list only when it publishes ports.
#[test]
fn portmap_only_for_published_ports() {
    let net = super::BridgeNetwork {
        name: "n".into(),
        bridge: "b".into(),
        subnet: "10.9.0.0/24".into(),
        gateway: None,
        internal: false,
        ip_range: Some("10.9.0.128/25".into()),
        dns: false,
    };
    let types = |publishes: bool| -> Vec<String> {
        net.conflist(std::path::Path::new("/x"), publishes)
            .plugins
            .iter()
            .map(|p| p["type"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(types(false), ["bridge"]);
    assert_eq!(types(true), ["bridge", "portmap"]);
    let list = net.conflist(std::path::Path::new("/x"), false);
    let range = &list.plugins[0]["ipam"]["ranges"][0][0];
    assert_eq!(range["rangeStart"], "10.9.0.129");
    assert_eq!(range["rangeEnd"], "10.9.0.254");
    assert_eq!(list.plugins[0]["capabilities"]["ips"], true);
    // Masquerading is the network's standing rule, not one per container.
    assert_eq!(list.plugins[0]["ipMasq"], false);
}

#[test]
fn the_host_ends_of_an_attachment_are_its_veths() {
    let n = super::NetworkAttachment {
        network: "n".into(),
        ifname: "eth0".into(),
        conflist: json!({
            "cniVersion": "1.0.0",
            "name": "n",
            "plugins": [{ "type": "bridge", "bridge": "br9" }],
        })
        .to_string(),
        result: json!({
            "interfaces": [
                { "name": "br9", "mac": "aa" },
                { "name": "veth1234", "mac": "bb" },
                { "name": "eth0", "mac": "cc", "sandbox": "/run/netns/x" },
            ],
        })
        .to_string(),
        ..Default::default()
    };
    let rec = super::AttachmentRecord {
        netns: "/run/netns/x".into(),
        networks: vec![n],
        created_at: 0,
    };
    assert_eq!(super::host_veths(&rec), ["veth1234"]);
}
