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

fn check(table: &str, args: &[&str]) -> Result<()> {
    let out = iptables(table, args)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Internal(format!(
            "iptables -t {table} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
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

    /// Appends the rule unless it is there.
    fn ensure(&self) -> Result<()> {
        if iptables(self.table, &self.with("-C"))?.status.success() {
            return Ok(());
        }
        check(self.table, &self.with("-A"))
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

/// berth's chains, and the jumps to them: isolation first thing in FORWARD, forwarding
/// after it, masquerading from POSTROUTING.
fn ensure_chains() -> Result<()> {
    for (table, chain) in [
        ("filter", STAGE1),
        ("filter", STAGE2),
        ("filter", FORWARD),
        ("nat", POSTROUTING),
    ] {
        if !iptables(table, &["-S", chain])?.status.success() {
            // Another daemon may make it at the same moment: fine if it exists after.
            let _ = iptables(table, &["-N", chain]);
            check(table, &["-S", chain])?;
        }
    }
    if !iptables("filter", &["-C", "FORWARD", "-j", STAGE1])?
        .status
        .success()
    {
        check("filter", &["-I", "FORWARD", "1", "-j", STAGE1])?;
    }
    Rule::new("filter", "FORWARD", &["-j", FORWARD]).ensure()?;
    Rule::new("nat", "POSTROUTING", &["-j", POSTROUTING]).ensure()
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
/// (isolated from everything when `internal`).
pub fn add(bridge: &str, subnet: &str, internal: bool) -> Result<()> {
    ensure_chains()?;
    for rule in rules(bridge, subnet, internal) {
        rule.ensure()?;
    }
    Ok(())
}

/// Takes the rules of the network whose bridge is `bridge` away.
pub fn remove(bridge: &str, subnet: &str, internal: bool) -> Result<()> {
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
