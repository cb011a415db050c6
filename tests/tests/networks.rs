//! Container networks through berthd's network core and the real CNI plugins: each
//! `berth run` container on the default bridge gets a network namespace of its own, its
//! published ports reach it from the host, berth writes its /etc/hosts, /etc/resolv.conf and
//! /etc/hostname; `--network none` has only loopback, `--network host` the host's network;
//! and nothing is left behind — after `rm`, and after a kill -9 of berthd whose container
//! died meanwhile (the start-up sweep). Each berthd has a bridge and subnet of its own.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::fixtures::free_port;
use berth_tests::{Daemon, ok};

const IMAGE: &str = "example.com/busybox:latest";

fn start() -> (Daemon, tempfile::TempDir) {
    Daemon::with_busybox()
}

fn berth(d: &Daemon, args: &[&str]) -> String {
    ok(&d.berth(args), &format!("berth {args:?}"))
}

/// Starts container `name` serving "`name`\n" with httpd on its port 80, published on
/// the host's `port`.
fn web(d: &Daemon, name: &str, port: u16) {
    let script =
        format!("mkdir -p /www && echo {name} > /www/index.html && exec httpd -f -p 80 -h /www");
    let publish = format!("{port}:80");
    berth(
        d,
        &[
            "run", "-d", "--name", name, "-p", &publish, IMAGE, "sh", "-c", &script,
        ],
    );
}

/// The body of `GET /` from 127.0.0.1:`port`, once something answers (or panics).
fn http_get(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1") {
                return buf.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "nothing answers on 127.0.0.1:{port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Nothing of the daemon's network is left: no namespace, no veth on its bridge, no
/// iptables rule naming its subnet but the network's standing one, no address lease.
fn assert_nothing_left(d: &Daemon) {
    let netns = d.state.join("netns");
    let left: Vec<_> = std::fs::read_dir(&netns)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "network namespaces left: {left:?}");
    let veths = run(Command::new("ip").args(["-o", "link", "show", "master", &d.network.bridge]));
    assert!(
        veths.trim().is_empty(),
        "veths left on {}: {veths}",
        d.network.bridge
    );
    // At most the network's own masquerading (made with its first container), which stands
    // while the network exists, as Docker's for docker0: no rule per container.
    let rules = d.network.iptables_rules();
    let standing = format!(
        "-A BERTH-POSTROUTING -s {} ! -o {} -j MASQUERADE",
        d.network.subnet, d.network.bridge
    );
    assert!(
        rules.iter().all(|r| r == &standing),
        "iptables rules left: {rules:#?}"
    );
    let leases = leases(&d.state.join("network/ipam/bridge"));
    assert!(leases.is_empty(), "address leases left: {leases:?}");
}

fn leases(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("10."))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn two_web_servers_on_port_80_side_by_side() {
    let (d, _work) = start();
    let (p1, p2) = (free_port(), free_port());
    web(&d, "web1", p1);
    web(&d, "web2", p2);
    assert_eq!(http_get(p1), "web1\n");
    assert_eq!(http_get(p2), "web2\n");

    // berth's /etc files: the container's name resolves to its own address; localhost too.
    let hosts = berth(&d, &["exec", "web1", "cat", "/etc/hosts"]);
    assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"), "{hosts}");
    let hostname = berth(&d, &["exec", "web1", "hostname"]);
    let own = hosts
        .lines()
        .find(|l| l.ends_with(hostname.trim()))
        .unwrap_or_else(|| panic!("no line for {hostname} in {hosts}"));
    assert!(
        own.starts_with(&d.network.prefix),
        "{own} is on {}",
        d.network.subnet
    );
    assert_eq!(
        berth(&d, &["exec", "web1", "cat", "/etc/hostname"]),
        hostname
    );
    let page = berth(&d, &["exec", "web1", "wget", "-qO-", "http://localhost/"]);
    assert_eq!(page, "web1\n");
    let resolv = berth(&d, &["exec", "web1", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver "), "{resolv}");
    assert!(!resolv.contains("nameserver 127."), "{resolv}");
    // The two reach each other on the bridge.
    let ip2 = berth(&d, &["exec", "web2", "cat", "/etc/hosts"])
        .lines()
        .last()
        .and_then(|l| l.split('\t').next())
        .expect("web2's address")
        .to_string();
    let page = berth(
        &d,
        &["exec", "web1", "wget", "-qO-", &format!("http://{ip2}/")],
    );
    assert_eq!(page, "web2\n");

    berth(&d, &["rm", "-f", "web1", "web2"]);
    assert_nothing_left(&d);
}

#[test]
fn none_and_host_networks() {
    let (d, _work) = start();
    let links = berth(
        &d,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            IMAGE,
            "ip",
            "-o",
            "link",
        ],
    );
    assert_eq!(links.lines().count(), 1, "only lo: {links}");
    assert!(links.contains(": lo:"), "{links}");
    // The host's interface of its default route (other tests add and remove veths meanwhile).
    let routes = std::fs::read_to_string("/proc/net/route").expect("routes");
    let uplink = routes
        .lines()
        .skip(1)
        .find(|l| l.split_whitespace().nth(1) == Some("00000000"))
        .and_then(|l| l.split_whitespace().next())
        .expect("a default route")
        .to_string();
    let links = berth(
        &d,
        &[
            "run",
            "--rm",
            "--network",
            "host",
            IMAGE,
            "ip",
            "-o",
            "link",
        ],
    );
    assert!(
        links.contains(&format!(": {uplink}:")),
        "the host's {uplink}: {links}"
    );
    let out = d.berth(&["run", "--rm", "--network", "nope", IMAGE, "true"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("network nope not found"),
        "{out:?}"
    );
    assert_nothing_left(&d);
}

/// berthd killed with a published container whose task then dies too: the next berthd's
/// start-up takes its network down. A container that lives through the restart keeps its
/// port, and its network goes with its `rm`.
#[test]
fn networks_survive_restarts_and_leak_nothing_after_a_crash() {
    let (mut d, _work) = start();
    let (p1, p2) = (free_port(), free_port());
    web(&d, "stays", p1);
    web(&d, "dies", p2);
    assert_eq!(http_get(p2), "dies\n");
    let inspect: serde_json::Value =
        serde_json::from_str(&berth(&d, &["inspect", "dies"])).expect("inspect JSON");
    let id = inspect[0]["Id"].as_str().expect("Id").to_string();
    let pid = inspect[0]["State"]["Pid"].as_i64().expect("Pid");
    d.kill9();
    // The container and its shim die while berthd is down (a crash, an OOM kill).
    let kill = |pid: i32| {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    };
    for (shim, args) in berth_tests::shim_processes() {
        if args.iter().any(|a| a == &id) {
            kill(shim);
        }
    }
    kill(i32::try_from(pid).expect("pid"));
    d.restart();
    assert_eq!(http_get(p1), "stays\n");
    let deadline = Instant::now() + Duration::from_secs(20);
    while leases(&d.state.join("network/ipam/bridge")).len() != 1 {
        assert!(
            Instant::now() < deadline,
            "the dead container's network is still up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    berth(&d, &["rm", "-f", "stays", "dies"]);
    assert_nothing_left(&d);
}

/// Containers started at once each get their network (the plugins' locks hold), and all of
/// it goes with them.
#[test]
fn parallel_runs_each_get_a_network() {
    let (d, _work) = start();
    let outs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| d.berth(&["run", "--rm", IMAGE, "sh", "-c", "ip -4 -o addr show eth0"]))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut addresses = Vec::new();
    for out in &outs {
        let text = ok(out, "parallel run");
        let addr = text
            .split_whitespace()
            .nth(3)
            .unwrap_or_else(|| panic!("no address in {text}"))
            .to_string();
        assert!(addr.starts_with(&d.network.prefix), "{addr}");
        addresses.push(addr);
    }
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 8, "one address each: {addresses:?}");
    assert_nothing_left(&d);
}

/// `-P` publishes the image's EXPOSEd ports on host ports berthd picks, `-p 80` too;
/// `berth port`, `ps` and `inspect` show them as Docker does; a host port another container
/// or a host process holds is refused with Docker's error.
#[test]
fn exposed_random_and_taken_ports() {
    use berth_tests::fixtures::{busybox_image_with, pack_layout};
    let (d, work) = start();
    let img = busybox_image_with(
        &work.path().join("exposed"),
        "latest",
        serde_json::json!({"ExposedPorts": {"80/tcp": {}, "8081/udp": {}}}),
    );
    let archive = work.path().join("exposed.tar");
    pack_layout(&img.layout, &archive);
    let archive = archive.display().to_string();
    ok(
        &d.ctr(&[
            "images",
            "import",
            "--base-name",
            "example.com/exposed",
            &archive,
        ]),
        "import",
    );
    let script = "mkdir -p /www && echo pub > /www/index.html && exec httpd -f -p 80 -h /www";
    berth(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "pub",
            "-P",
            "example.com/exposed:latest",
            "sh",
            "-c",
            script,
        ],
    );
    let host = berth(&d, &["port", "pub", "80"]);
    let port: u16 = host
        .trim()
        .strip_prefix("0.0.0.0:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("a host port: {host}"));
    assert_eq!(http_get(port), "pub\n");
    let all = berth(&d, &["port", "pub"]);
    assert!(all.contains(&format!("80/tcp -> 0.0.0.0:{port}")), "{all}");
    assert!(all.contains("8081/udp -> 0.0.0.0:"), "{all}");
    let ps = berth(&d, &["ps"]);
    assert!(ps.contains(&format!("0.0.0.0:{port}->80/tcp")), "{ps}");
    let v: serde_json::Value =
        serde_json::from_str(&berth(&d, &["inspect", "pub"])).expect("inspect");
    assert_eq!(
        v[0]["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"],
        port.to_string()
    );
    let none = d.berth(&["port", "pub", "99"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("No public port '99' published for pub"),
        "{none:?}"
    );

    // -p 80: another free port.
    berth(
        &d,
        &[
            "run", "-d", "--name", "rnd", "-p", "80", IMAGE, "sleep", "600",
        ],
    );
    let other = berth(&d, &["port", "rnd", "80"]);
    assert!(other.starts_with("0.0.0.0:"), "{other}");
    assert_ne!(other.trim(), host.trim());

    // Taken: by a container, then by a host process.
    let publish = format!("{port}:80");
    let out = d.berth(&[
        "run", "-d", "--name", "clash", "-p", &publish, IMAGE, "sleep", "600",
    ]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "Bind for 0.0.0.0:{port} failed: port is already allocated"
        )),
        "{err}"
    );
    let held = std::net::TcpListener::bind("0.0.0.0:0").expect("listen");
    let held_port = held.local_addr().expect("addr").port();
    let publish = format!("{held_port}:80");
    let out = d.berth(&[
        "run", "-d", "--name", "clash2", "-p", &publish, IMAGE, "sleep", "600",
    ]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("port is already allocated"),
        "{out:?}"
    );
    drop(held);

    berth(&d, &["rm", "-f", "pub", "rnd", "clash", "clash2"]);
    assert_nothing_left(&d);
}

/// `--link`, `--add-host` (with `host-gateway`), `--dns`, `--dns-search`, `--dns-option`,
/// `--hostname` and `--domainname` reach berth's /etc files as Docker writes them.
#[test]
fn dns_flags_extra_hosts_and_links() {
    let (d, _work) = start();
    let script = "mkdir -p /www && echo db > /www/index.html && exec httpd -f -p 80 -h /www";
    berth(
        &d,
        &["run", "-d", "--name", "db", IMAGE, "sh", "-c", script],
    );
    let out = berth(
        &d,
        &[
            "run",
            "--rm",
            "--link",
            "db:database",
            "--add-host",
            "extra:10.1.2.3",
            "--add-host",
            "gw:host-gateway",
            "--dns",
            "9.9.9.9",
            "--dns-search",
            "corp.example",
            "--dns-option",
            "ndots:3",
            "--hostname",
            "box",
            "--domainname",
            "example.org",
            IMAGE,
            "sh",
            "-c",
            "cat /etc/hosts /etc/resolv.conf; wget -qO- http://database/",
        ],
    );
    assert!(out.contains("10.1.2.3\textra\n"), "{out}");
    assert!(
        out.contains(&format!("{}1\tgw\n", d.network.prefix)),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with(&d.network.prefix)
            && l.contains("\tdatabase ")
            && l.ends_with(" db")),
        "the link's line: {out}"
    );
    assert!(out.contains("\tbox.example.org box\n"), "{out}");
    assert!(out.contains("nameserver 9.9.9.9\n"), "{out}");
    assert!(
        !out.lines()
            .any(|l| l.starts_with("nameserver ") && l != "nameserver 9.9.9.9"),
        "{out}"
    );
    assert!(out.contains("search corp.example\n"), "{out}");
    assert!(out.contains("options ndots:3\n"), "{out}");
    assert!(out.ends_with("db\n"), "reached db as database: {out}");
    let bad = d.berth(&["run", "--rm", "--add-host", "nope", IMAGE, "true"]);
    assert_eq!(bad.status.code(), Some(125), "{bad:?}");
    berth(&d, &["rm", "-f", "db"]);
    assert_nothing_left(&d);
}
