//! Isolation between user-defined networks, as Docker's `DOCKER-ISOLATION-STAGE-1/2`
//! chains do it: a packet leaving one network's bridge for another berth network's bridge is
//! dropped, so containers on different networks cannot reach each other; an internal
//! network's bridge exchanges nothing with any other interface. The rules name bridges, are
//! added when a network is created (and again at start-up: they are idempotent) and taken
//! away when it is removed. Blocking: run these on the blocking pool.

use std::process::Command;

use crate::error::{Error, Result};

const STAGE1: &str = "BERTH-ISOLATION-STAGE-1";
const STAGE2: &str = "BERTH-ISOLATION-STAGE-2";

fn iptables(args: &[&str]) -> Result<std::process::Output> {
    Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .map_err(|e| Error::io("run iptables", "iptables", e))
}

fn check(args: &[&str]) -> Result<()> {
    let out = iptables(args)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Internal(format!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Appends `rule` to `chain` unless it is there.
fn ensure_rule(chain: &str, rule: &[&str]) -> Result<()> {
    let mut probe = vec!["-C", chain];
    probe.extend_from_slice(rule);
    if iptables(&probe)?.status.success() {
        return Ok(());
    }
    let mut add = vec!["-A", chain];
    add.extend_from_slice(rule);
    check(&add)
}

/// Deletes every copy of `rule` from `chain`.
fn delete_rule(chain: &str, rule: &[&str]) -> Result<()> {
    let mut del = vec!["-D", chain];
    del.extend_from_slice(rule);
    for _ in 0..16 {
        if !iptables(&del)?.status.success() {
            break;
        }
    }
    Ok(())
}

/// The two chains, jumped to first thing from FORWARD.
fn ensure_chains() -> Result<()> {
    for chain in [STAGE1, STAGE2] {
        if !iptables(&["-S", chain])?.status.success() {
            // Another daemon may make it at the same moment: fine if it exists after.
            let _ = iptables(&["-N", chain]);
            check(&["-S", chain])?;
        }
    }
    if !iptables(&["-C", "FORWARD", "-j", STAGE1])?.status.success() {
        check(&["-I", "FORWARD", "1", "-j", STAGE1])?;
    }
    Ok(())
}

/// The rules of the network whose bridge is `bridge`.
fn rules(bridge: &str, internal: bool) -> Vec<(&'static str, Vec<String>)> {
    let b = bridge.to_string();
    let mut out = vec![
        (
            STAGE1,
            vec!["-i", &b, "!", "-o", &b, "-j", STAGE2]
                .into_iter()
                .map(String::from)
                .collect(),
        ),
        (
            STAGE2,
            vec!["-o", &b, "-j", "DROP"]
                .into_iter()
                .map(String::from)
                .collect(),
        ),
    ];
    if internal {
        out.push((
            STAGE1,
            ["-i", &b, "!", "-o", &b, "-j", "DROP"]
                .into_iter()
                .map(String::from)
                .collect(),
        ));
        out.push((
            STAGE1,
            ["!", "-i", &b, "-o", &b, "-j", "DROP"]
                .into_iter()
                .map(String::from)
                .collect(),
        ));
    }
    out
}

/// Isolates the network whose bridge is `bridge` from the other berth networks (and from
/// everything, when `internal`).
pub fn add(bridge: &str, internal: bool) -> Result<()> {
    ensure_chains()?;
    for (chain, rule) in rules(bridge, internal) {
        let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
        ensure_rule(chain, &rule)?;
    }
    Ok(())
}

/// Takes the rules of the network whose bridge is `bridge` away.
pub fn remove(bridge: &str, internal: bool) -> Result<()> {
    for (chain, rule) in rules(bridge, internal) {
        let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
        delete_rule(chain, &rule)?;
    }
    Ok(())
}
