//! User-defined networks (`berth network create/ls/inspect/rm/prune`, `run --network NAME
//! --ip --network-alias`), owned by berthd: containers on one network find each other by
//! name, alias and short id through berthd's name server on the network's gateway; a
//! container on another network neither resolves nor reaches them; a container may be on
//! several networks, or share another's namespace (`container:NAME`). Each test's networks
//! take a subnet and bridge name no other test holds (`TestNetwork`), which also takes away
//! whatever a failed test leaves.

use std::process::Command;

use berth_tests::{Daemon, TestNetwork, fails, ok};

const IMAGE: &str = "example.com/busybox:latest";

fn start() -> (Daemon, tempfile::TempDir) {
    Daemon::with_busybox()
}

fn berth(d: &Daemon, args: &[&str]) -> String {
    ok(&d.berth(args), &format!("berth {args:?}"))
}

/// `berth network create` of `name` on `net`'s subnet and bridge; returns the id.
fn create(d: &Daemon, name: &str, net: &TestNetwork, extra: &[&str]) -> String {
    let bridge = format!("com.docker.network.bridge.name={}", net.bridge);
    let mut args = vec!["network", "create", "--subnet", &net.subnet, "-o", &bridge];
    args.extend_from_slice(extra);
    args.push(name);
    berth(d, &args).trim().to_string()
}

/// The iptables rules that name bridge `bridge`.
fn rules_naming(bridge: &str) -> Vec<String> {
    let out = Command::new("iptables-save")
        .output()
        .expect("iptables-save");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == bridge))
        .map(str::to_string)
        .collect()
}

fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

#[test]
fn user_networks_resolve_names_and_keep_apart() {
    let (d, _work) = start();
    let (na, nb) = (TestNetwork::claim(), TestNetwork::claim());
    let front = create(&d, "front", &na, &["--label", "team=a"]);
    assert_eq!(front.len(), 64, "an id: {front}");
    assert!(front.chars().all(|c| c.is_ascii_hexdigit()), "{front}");
    create(&d, "back", &nb, &[]);

    let ls = berth(&d, &["network", "ls"]);
    assert!(ls.starts_with("NETWORK ID"), "{ls}");
    for name in ["bridge", "host", "none", "front", "back"] {
        assert!(
            ls.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(name)),
            "{name}: {ls}"
        );
    }
    let q = berth(&d, &["network", "ls", "-q", "--filter", "label=team=a"]);
    assert_eq!(q.trim(), &front[..12]);
    let dup = d.berth(&["network", "create", "front"]);
    assert_eq!(dup.status.code(), Some(1), "{dup:?}");
    let err = String::from_utf8_lossy(&dup.stderr);
    assert!(
        err.contains("Error response from daemon: network with name front already exists"),
        "{err}"
    );
    let overlap = fails(
        &d.berth(&["network", "create", "--subnet", &na.subnet, "again"]),
        "an overlapping subnet",
    );
    assert!(overlap.contains("Pool overlaps"), "{overlap}");

    // web on front, at an address of our choosing, with an alias.
    let ip = format!("{}10", na.prefix);
    let script = "mkdir -p /www && echo web > /www/index.html && exec httpd -f -p 80 -h /www";
    let id = berth(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "front",
            "--network-alias",
            "www",
            "--ip",
            &ip,
            IMAGE,
            "sh",
            "-c",
            script,
        ],
    )
    .trim()
    .to_string();
    let on_front = |args: &[&str]| {
        let mut all = vec!["run", "--rm", "--network", "front", IMAGE];
        all.extend_from_slice(args);
        d.berth(&all)
    };
    for name in ["web", "www", &id[..12]] {
        let out = ok(&on_front(&["nslookup", name]), &format!("nslookup {name}"));
        assert!(out.contains(&ip), "{name} is {ip}: {out}");
    }
    let page = ok(&on_front(&["wget", "-qO-", "http://www/"]), "wget www");
    assert_eq!(page, "web\n");
    let resolv = ok(&on_front(&["cat", "/etc/resolv.conf"]), "resolv.conf");
    assert!(
        resolv.starts_with(&format!("nameserver {}1\n", na.prefix)),
        "berthd's name server on the gateway: {resolv}"
    );

    // From the other network: no name, no route.
    let on_back = |args: &[&str]| {
        let mut all = vec!["run", "--rm", "--network", "back", IMAGE];
        all.extend_from_slice(args);
        d.berth(&all)
    };
    let out = on_back(&["nslookup", "web"]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&ip),
        "web resolves on back: {out:?}"
    );
    let out = on_back(&["wget", "-T", "3", "-qO-", &format!("http://{ip}/")]);
    assert!(!out.status.success(), "back reaches web: {out:?}");

    // inspect, on both sides.
    let v: serde_json::Value =
        serde_json::from_str(&berth(&d, &["inspect", "web"])).expect("inspect json");
    let net = &v[0]["NetworkSettings"]["Networks"]["front"];
    assert_eq!(net["IPAddress"], ip.as_str(), "{net}");
    assert_eq!(net["Gateway"], format!("{}1", na.prefix), "{net}");
    assert!(net["Aliases"].to_string().contains("www"), "{net}");
    assert_eq!(v[0]["HostConfig"]["NetworkMode"], "front");
    let v: serde_json::Value =
        serde_json::from_str(&berth(&d, &["network", "inspect", "front"])).expect("json");
    assert_eq!(v[0]["Name"], "front");
    assert_eq!(v[0]["IPAM"]["Config"][0]["Subnet"], na.subnet.as_str());
    assert_eq!(v[0]["Containers"][&id]["Name"], "web");
    assert_eq!(v[0]["Labels"]["team"], "a");

    // Removal: refused while web is attached, and for the predefined networks.
    let busy = fails(
        &d.berth(&["network", "rm", "front"]),
        "rm of a busy network",
    );
    assert!(busy.contains("has active endpoints"), "{busy}");
    let predefined = fails(&d.berth(&["network", "rm", "bridge"]), "rm bridge");
    assert!(
        predefined.contains("bridge is a pre-defined network and cannot be removed"),
        "{predefined}"
    );
    berth(&d, &["rm", "-f", "web"]);
    assert!(link_exists(&na.bridge));
    assert!(!rules_naming(&na.bridge).is_empty(), "isolation rules");
    assert_eq!(
        berth(&d, &["network", "rm", "front", "back"]),
        "front\nback\n"
    );
    for n in [&na, &nb] {
        assert!(!link_exists(&n.bridge), "bridge {} left", n.bridge);
        let left = rules_naming(&n.bridge);
        assert!(left.is_empty(), "rules left: {left:#?}");
        assert!(n.iptables_rules().is_empty(), "{:#?}", n.iptables_rules());
    }
    let gone = fails(&d.berth(&["network", "inspect", "front"]), "inspect gone");
    assert!(gone.contains("network front not found"), "{gone}");
}

#[test]
fn several_networks_a_shared_namespace_and_prune() {
    let (d, _work) = start();
    let (na, nb) = (TestNetwork::claim(), TestNetwork::claim());
    create(&d, "one", &na, &[]);
    create(&d, "two", &nb, &[]);
    berth(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "both",
            "--network",
            "one",
            "--network",
            "two",
            IMAGE,
            "sleep",
            "600",
        ],
    );
    let addrs = berth(&d, &["exec", "both", "ip", "-4", "-o", "addr"]);
    assert!(
        addrs.contains(&format!("eth0    inet {}", na.prefix))
            || addrs
                .lines()
                .any(|l| l.contains("eth0") && l.contains(&na.prefix)),
        "eth0 on one: {addrs}"
    );
    assert!(
        addrs
            .lines()
            .any(|l| l.contains("eth1") && l.contains(&nb.prefix)),
        "eth1 on two: {addrs}"
    );
    // container:NAME shares both's namespace: the same addresses.
    let shared = berth(
        &d,
        &[
            "run",
            "--rm",
            "--network",
            "container:both",
            IMAGE,
            "ip",
            "-4",
            "-o",
            "addr",
        ],
    );
    assert!(
        shared.contains(&na.prefix) && shared.contains(&nb.prefix),
        "{shared}"
    );
    // Flags Docker refuses before anything starts.
    let out = d.berth(&["run", "--rm", "--ip", "10.1.1.1", IMAGE, "true"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("user specified IP address is supported on user defined networks only"),
        "{out:?}"
    );
    let out = d.berth(&[
        "run",
        "--rm",
        "--network",
        "host",
        "--network",
        "one",
        IMAGE,
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");

    // prune: only what no container is on.
    let nc = TestNetwork::claim();
    create(&d, "spare", &nc, &[]);
    let pruned = berth(&d, &["network", "prune", "-f"]);
    assert_eq!(pruned, "Deleted Networks:\nspare\n");
    berth(&d, &["rm", "-f", "both"]);
    let pruned = berth(&d, &["network", "prune", "-f"]);
    assert!(pruned.contains("one") && pruned.contains("two"), "{pruned}");
    let ls = berth(&d, &["network", "ls", "--filter", "type=custom", "-q"]);
    assert!(ls.trim().is_empty(), "{ls}");
    for n in [&na, &nb, &nc] {
        assert!(!link_exists(&n.bridge), "bridge {} left", n.bridge);
        assert!(rules_naming(&n.bridge).is_empty());
    }
}

/// A stopped container holds no address or name on its network (Docker releases its
/// endpoint); started again, it is back under its name.
#[test]
fn a_stopped_container_gives_back_its_name() {
    let (d, _work) = start();
    let net = TestNetwork::claim();
    create(&d, "n", &net, &[]);
    berth(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "svc",
            "--network",
            "n",
            IMAGE,
            "sleep",
            "600",
        ],
    );
    let lookup = || {
        let out = d.berth(&["run", "--rm", "--network", "n", IMAGE, "nslookup", "svc"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let addr = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("Address") && l.contains(&net.prefix) && !l.ends_with(":53"))
            .count()
    };
    assert_eq!(addr(&lookup()), 1, "svc resolves: {}", lookup());
    berth(&d, &["stop", "-t", "1", "svc"]);
    let out = lookup();
    assert_eq!(addr(&out), 0, "a stopped svc still resolves: {out}");
    let v: serde_json::Value =
        serde_json::from_str(&berth(&d, &["inspect", "svc"])).expect("inspect");
    assert_eq!(v[0]["NetworkSettings"]["Networks"]["n"]["IPAddress"], "");
    berth(&d, &["start", "svc"]);
    assert_eq!(addr(&lookup()), 1, "svc is back: {}", lookup());
    berth(&d, &["rm", "-f", "svc"]);
    berth(&d, &["network", "rm", "n"]);
    assert!(!link_exists(&net.bridge));
}

/// `network connect` gives a running container one more interface at once (and its next
/// start keeps it); `network disconnect` takes it away; Docker's refusals.
#[test]
fn connect_and_disconnect_a_running_container() {
    let (d, _work) = start();
    let (na, nb) = (TestNetwork::claim(), TestNetwork::claim());
    create(&d, "first", &na, &[]);
    create(&d, "second", &nb, &[]);
    berth(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "app",
            "--network",
            "first",
            IMAGE,
            "sleep",
            "600",
        ],
    );
    let ip = format!("{}20", nb.prefix);
    berth(
        &d,
        &[
            "network", "connect", "--ip", &ip, "--alias", "api", "second", "app",
        ],
    );
    let addrs = berth(&d, &["exec", "app", "ip", "-4", "-o", "addr"]);
    assert!(addrs.contains(&format!("{ip}/24")), "{addrs}");
    let out = ok(
        &d.berth(&[
            "run",
            "--rm",
            "--network",
            "second",
            IMAGE,
            "nslookup",
            "api",
        ]),
        "nslookup api",
    );
    assert!(out.contains(&ip), "{out}");
    let again = fails(
        &d.berth(&["network", "connect", "second", "app"]),
        "connect twice",
    );
    assert!(
        again.contains("endpoint with name app already exists in network second"),
        "{again}"
    );
    let host = fails(
        &d.berth(&["network", "connect", "host", "app"]),
        "connect host",
    );
    assert!(host.contains("host network"), "{host}");

    // A restart keeps both networks, and the address asked for on the second.
    berth(&d, &["restart", "-t", "1", "app"]);
    let addrs = berth(&d, &["exec", "app", "ip", "-4", "-o", "addr"]);
    assert!(addrs.contains(&na.prefix), "{addrs}");
    assert!(addrs.contains(&format!("{ip}/24")), "{addrs}");

    berth(&d, &["network", "disconnect", "second", "app"]);
    let addrs = berth(&d, &["exec", "app", "ip", "-4", "-o", "addr"]);
    assert!(!addrs.contains(&nb.prefix), "{addrs}");
    let v: serde_json::Value =
        serde_json::from_str(&berth(&d, &["inspect", "app"])).expect("inspect");
    let labels = &v[0]["Config"]["Labels"];
    assert!(labels.get("berth/ip.second").is_none(), "{labels}");
    assert!(
        labels.get("berth/network-aliases.second").is_none(),
        "{labels}"
    );
    let not = fails(
        &d.berth(&["network", "disconnect", "second", "app"]),
        "twice",
    );
    assert!(not.contains("is not connected to network second"), "{not}");
    berth(&d, &["network", "disconnect", "-f", "second", "app"]);
    berth(&d, &["rm", "-f", "app"]);
    berth(&d, &["network", "rm", "first", "second"]);
    for n in [&na, &nb] {
        assert!(!link_exists(&n.bridge));
        assert!(n.iptables_rules().is_empty(), "{:#?}", n.iptables_rules());
    }
}

/// berthd killed with SIGKILL and started again: the container kept running, its name
/// still resolves (the name server is back on the gateway) and it still reaches the other
/// container by name; afterwards nothing is left.
#[test]
fn names_survive_a_berthd_crash() {
    let (mut d, _work) = start();
    let net = TestNetwork::claim();
    create(&d, "n", &net, &[]);
    let script = "mkdir -p /www && echo kept > /www/index.html && exec httpd -f -p 80 -h /www";
    berth(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "kept",
            "--network",
            "n",
            IMAGE,
            "sh",
            "-c",
            script,
        ],
    );
    berth(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "client",
            "--network",
            "n",
            IMAGE,
            "sleep",
            "600",
        ],
    );
    let before = rules_naming(&net.bridge);
    d.kill9();
    d.restart();
    let page = berth(&d, &["exec", "client", "wget", "-qO-", "http://kept/"]);
    assert_eq!(page, "kept\n");
    // The restart put the network's standing rules back where they were: none twice.
    let mut after = rules_naming(&net.bridge);
    assert_eq!(after, before);
    after.dedup();
    assert_eq!(after.len(), before.len(), "{before:#?}");
    berth(&d, &["rm", "-f", "kept", "client"]);
    berth(&d, &["network", "rm", "n"]);
    assert!(!link_exists(&net.bridge));
    assert!(rules_naming(&net.bridge).is_empty());
    assert!(
        net.iptables_rules().is_empty(),
        "{:#?}",
        net.iptables_rules()
    );
    let netns: Vec<_> = std::fs::read_dir(d.state.join("netns"))
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(netns.is_empty(), "network namespaces left: {netns:?}");
}

/// The network comes up while the container is created; when it cannot (the address asked
/// for is taken), the start fails with the plugin's words, the container stays created (as
/// Docker's does) and holds nothing: no namespace, veth or lease; `rm` takes it away.
#[test]
fn a_taken_address_fails_the_start_and_holds_nothing() {
    let (d, _work) = start();
    let net = TestNetwork::claim();
    create(&d, "n", &net, &[]);
    let ip = format!("{}20", net.prefix);
    let run = |name: &str| {
        d.berth(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "n",
            "--ip",
            &ip,
            IMAGE,
            "sleep",
            "600",
        ])
    };
    ok(&run("first"), "first");
    let out = run("second");
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&ip) && err.contains("CNI plugin"), "{err}");
    let inspect = berth(&d, &["inspect", "second"]);
    assert!(inspect.contains("\"Status\": \"created\""), "{inspect}");
    // One namespace (first's), one veth, one lease.
    let netns: Vec<_> = std::fs::read_dir(d.state.join("netns"))
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert_eq!(netns.len(), 1, "{netns:?}");
    let out = Command::new("ip")
        .args(["-o", "link", "show", "master", &net.bridge])
        .output()
        .expect("ip link");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    // Started again, it fails the same way; once the address is free it runs.
    let again = d.berth(&["start", "second"]);
    assert!(!again.status.success(), "{again:?}");
    berth(&d, &["rm", "-f", "first", "second"]);
    ok(&run("third"), "third");
    let addrs = berth(
        &d,
        &["exec", "third", "ip", "-4", "-o", "addr", "show", "eth0"],
    );
    assert!(addrs.contains(&ip), "{addrs}");
    berth(&d, &["rm", "-f", "third"]);
    berth(&d, &["network", "rm", "n"]);
    assert!(rules_naming(&net.bridge).is_empty());
}
