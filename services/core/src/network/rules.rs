//! The host's iptables rules of a network, standing as long as the network exists, as
//! Docker's are for its bridges (so that a container's start and removal run no iptables at
//! all: the CNI bridge plugin is used without `ipMasq`, and no firewall plugin is chained):
//!
//! - isolation, as Docker's `DOCKER-ISOLATION-STAGE-1/2` chains: a packet leaving one
//!   network's bridge for another berth network's bridge is dropped, so containers on
//!   different networks cannot reach each other; an internal network's bridge exchanges
//!   nothing with any other interface;
//! - forwarding (`BERTH-FORWARD`): what leaves the bridge is accepted, and what comes back
//!   to it on a connection it opened, whatever the FORWARD chain's policy;
//! - masquerading (`BERTH-POSTROUTING`, nat): what the subnet sends out of another
//!   interface leaves with the host's address (not for an internal network).
//!
//! The rules name the bridge and the subnet; they are added when a network is created (and
//! again when it is first used after start-up: they are idempotent) and taken away when it
//! is removed. Blocking: run these on the blocking pool.

use std::process::Command;

use crate::error::{Error, Result};

const STAGE1: &str = "BERTH-ISOLATION-STAGE-1";
const STAGE2: &str = "BERTH-ISOLATION-STAGE-2";
const FORWARD: &str = "BERTH-FORWARD";
const POSTROUTING: &str = "BERTH-POSTROUTING";

fn iptables(table: &str, args: &[&str]) -> Result<std::process::Output> {
    Command::new("iptables")
        .args(["-w", "-t", table])
        .args(args)
        .output()
        .map_err(|e| Error::io("run iptables", "iptables", e))
}

/// One rule: its table, its chain, the rest of it.
struct Rule {
    table: &'static str,
    chain: &'static str,
    args: Vec<String>,
}

impl Rule {
    fn new(table: &'static str, chain: &'static str, args: &[&str]) -> Rule {
        Rule {
            table,
            chain,
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn with(&self, op: &'static str) -> Vec<&str> {
        let mut v = vec![op, self.chain];
        v.extend(self.args.iter().map(String::as_str));
        v
    }

    /// Deletes every copy of the rule.
    fn delete(&self) -> Result<()> {
        for _ in 0..16 {
            if !iptables(self.table, &self.with("-D"))?.status.success() {
                break;
            }
        }
        Ok(())
    }
}

/// Where berthds on one host take turns at their rules.
const LOCK: &str = "/run/berth-iptables.lock";

/// Held while this process changes berth's rules (released on drop).
fn host_lock() -> Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK)
        .map_err(|e| Error::io("open", LOCK, e))?;
    f.lock().map_err(|e| Error::io("lock", LOCK, e))?;
    Ok(f)
}

/// berth's chains, by table.
const CHAINS: [(&str, &str); 4] = [
    ("filter", STAGE1),
    ("filter", STAGE2),
    ("filter", FORWARD),
    ("nat", POSTROUTING),
];

/// The host's rules as `iptables-save` prints them: (table, line) of each chain
/// declaration (`:NAME`, the name only) and rule (`-A ...`).
fn saved() -> Result<std::collections::HashSet<(String, String)>> {
    let out = Command::new("iptables-save")
        .output()
        .map_err(|e| Error::io("run iptables-save", "iptables-save", e))?;
    if !out.status.success() {
        return Err(Error::Internal(format!(
            "iptables-save: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let mut table = String::new();
    let mut lines = std::collections::HashSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.to_string();
        } else if let Some(chain) = line.strip_prefix(':') {
            let name = chain.split_whitespace().next().unwrap_or_default();
            lines.insert((table.clone(), format!(":{name}")));
        } else if line.starts_with("-A ") {
            lines.insert((table.clone(), line.to_string()));
        }
    }
    Ok(lines)
}

/// Applies `lines` (table, line) in one `iptables-restore --noflush`, a table at a time
/// in one transaction each.
fn restore(lines: &[(&str, String)]) -> Result<()> {
    use std::io::Write;
    let mut text = String::new();
    for table in ["filter", "nat"] {
        let of: Vec<&String> = lines
            .iter()
            .filter(|(t, _)| *t == table)
            .map(|(_, l)| l)
            .collect();
        if of.is_empty() {
            continue;
        }
        text.push_str(&format!("*{table}\n"));
        for l in of {
            text.push_str(l);
            text.push('\n');
        }
        text.push_str("COMMIT\n");
    }
    let mut child = Command::new("iptables-restore")
        .args(["-w", "--noflush"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("run iptables-restore", "iptables-restore", e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| Error::io("write to iptables-restore", "iptables-restore", e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io("run iptables-restore", "iptables-restore", e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Internal(format!(
            "iptables-restore of\n{text}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The rules of the network whose bridge is `bridge` and subnet `subnet`.
fn rules(bridge: &str, subnet: &str, internal: bool) -> Vec<Rule> {
    let b = bridge;
    let mut out = vec![
        Rule::new("filter", STAGE1, &["-i", b, "!", "-o", b, "-j", STAGE2]),
        Rule::new("filter", STAGE2, &["-o", b, "-j", "DROP"]),
    ];
    if internal {
        out.push(Rule::new(
            "filter",
            STAGE1,
            &["-i", b, "!", "-o", b, "-j", "DROP"],
        ));
        out.push(Rule::new(
            "filter",
            STAGE1,
            &["!", "-i", b, "-o", b, "-j", "DROP"],
        ));
    }
    out.push(Rule::new(
        "filter",
        FORWARD,
        &[
            "-o",
            b,
            "-m",
            "conntrack",
            "--ctstate",
            "RELATED,ESTABLISHED",
            "-j",
            "ACCEPT",
        ],
    ));
    out.push(Rule::new("filter", FORWARD, &["-i", b, "-j", "ACCEPT"]));
    if !internal {
        out.push(Rule::new(
            "nat",
            POSTROUTING,
            &["-s", subnet, "!", "-o", b, "-j", "MASQUERADE"],
        ));
    }
    out
}

/// Puts the rules of the network whose bridge is `bridge` and subnet `subnet` in place
/// (isolated from everything when `internal`), with berth's chains and the jumps to them
/// (isolation first thing in FORWARD, forwarding after whatever is there, masquerading
/// from POSTROUTING): what is missing, in one `iptables-restore` (two execs in all, where a
/// check and an append of each rule would take twenty).
pub fn add(bridge: &str, subnet: &str, internal: bool) -> Result<()> {
    // Another berthd may be adding its own: the save and the restore are one step.
    let _held = host_lock()?;
    let have = saved()?;
    let missing = |table: &str, line: &str| !have.contains(&(table.to_string(), line.to_string()));
    let mut plan: Vec<(&str, String)> = Vec::new();
    for (table, chain) in CHAINS {
        if missing(table, &format!(":{chain}")) {
            plan.push((table, format!(":{chain} - [0:0]")));
        }
    }
    if missing("filter", &format!("-A FORWARD -j {STAGE1}")) {
        plan.push(("filter", format!("-I FORWARD 1 -j {STAGE1}")));
    }
    for (table, chain, to) in [
        ("filter", "FORWARD", FORWARD),
        ("nat", "POSTROUTING", POSTROUTING),
    ] {
        let jump = format!("-A {chain} -j {to}");
        if missing(table, &jump) {
            plan.push((table, jump));
        }
    }
    for rule in rules(bridge, subnet, internal) {
        let line = rule.with("-A").join(" ");
        if missing(rule.table, &line) {
            plan.push((rule.table, line));
        }
    }
    if plan.is_empty() {
        return Ok(());
    }
    restore(&plan)
}

/// Takes the rules of the network whose bridge is `bridge` away.
pub fn remove(bridge: &str, subnet: &str, internal: bool) -> Result<()> {
    let _held = host_lock()?;
    for rule in rules(bridge, subnet, internal) {
        rule.delete()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(bridge: &str, subnet: &str, internal: bool) -> Vec<String> {
        rules(bridge, subnet, internal)
            .iter()
            .map(|r| format!("-t {} {}", r.table, r.with("-A").join(" ")))
            .collect()
    }

    #[test]
    fn a_network_forwards_and_masquerades_and_is_kept_apart() {
        assert_eq!(
            lines("br1", "10.9.0.0/24", false),
            [
                "-t filter -A BERTH-ISOLATION-STAGE-1 -i br1 ! -o br1 -j BERTH-ISOLATION-STAGE-2",
                "-t filter -A BERTH-ISOLATION-STAGE-2 -o br1 -j DROP",
                "-t filter -A BERTH-FORWARD -o br1 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                "-t filter -A BERTH-FORWARD -i br1 -j ACCEPT",
                "-t nat -A BERTH-POSTROUTING -s 10.9.0.0/24 ! -o br1 -j MASQUERADE",
            ]
        );
    }

    #[test]
    fn an_internal_network_talks_to_nothing_and_is_not_masqueraded() {
        let l = lines("br2", "10.9.1.0/24", true);
        assert!(
            l.contains(&"-t filter -A BERTH-ISOLATION-STAGE-1 -i br2 ! -o br2 -j DROP".to_string())
        );
        assert!(
            l.contains(&"-t filter -A BERTH-ISOLATION-STAGE-1 ! -i br2 -o br2 -j DROP".to_string())
        );
        assert!(!l.iter().any(|r| r.contains("MASQUERADE")), "{l:#?}");
    }
}
