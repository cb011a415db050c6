//! Signals as the user names them and as the task API carries them (a plain number).
//!
//! One parser serves `berth kill`, `berth tasks kill` and the stop signals of images: it
//! takes what ctr's and Docker's clients take — `SIGKILL`, `KILL`, `kill`, `sigkill` or
//! `9` — and any number of a Linux signal, real-time ones (32 to 64) included.

use nix::sys::signal::Signal;

use crate::labels;
use berth_proto::containerd::services::containers::v1::Container;

/// SIGKILL's number.
pub const SIGKILL: u32 = Signal::SIGKILL as u32;
/// SIGTERM's number: the stop signal when an image names none.
pub const SIGTERM: u32 = Signal::SIGTERM as u32;
/// The highest signal number Linux has (SIGRTMAX).
const MAX_SIGNAL: u32 = 64;

/// Parses a signal: a number from 1 to 64, or a name with or without `SIG`, in any case.
pub fn parse_signal(s: &str) -> anyhow::Result<u32> {
    let invalid = || anyhow::anyhow!("invalid signal: {s}");
    if let Ok(n) = s.parse::<u32>() {
        return if (1..=MAX_SIGNAL).contains(&n) {
            Ok(n)
        } else {
            Err(invalid())
        };
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map(|sig| sig as u32)
        .map_err(|_| invalid())
}

/// Whether a kill reaches every process of the container rather than one process: a
/// SIGKILL to the task itself (no exec id), as ctr's and Docker's clients send it.
pub fn kills_all(exec_id: &str, signal: u32) -> bool {
    exec_id.is_empty() && signal == SIGKILL
}

/// The signal ctr sends to stop container `ct`: its image's stop signal label, else
/// SIGTERM.
pub fn label_stop_signal(ct: &Container) -> anyhow::Result<u32> {
    match ct.labels.get(labels::STOP_SIGNAL) {
        Some(s) if !s.is_empty() => parse_signal(s),
        _ => Ok(SIGTERM),
    }
}

/// The signal `berth stop` sends: the `StopSignal` of the container's docker-level config
/// (`docker_config`), else SIGTERM.
pub fn docker_stop_signal(docker_config: &serde_json::Value) -> anyhow::Result<u32> {
    Ok(docker_config["Config"]["StopSignal"]
        .as_str()
        .map(parse_signal)
        .transpose()?
        .unwrap_or(SIGTERM))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_signals_like_ctr_and_docker() {
        assert_eq!(parse_signal("SIGKILL").unwrap(), 9);
        assert_eq!(parse_signal("kill").unwrap(), 9);
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("TERM").unwrap(), 15);
        assert_eq!(parse_signal("sigterm").unwrap(), 15);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), 10);
        assert_eq!(parse_signal("2").unwrap(), 2);
        assert_eq!(parse_signal("SIGPWR").unwrap(), 30);
        assert_eq!(parse_signal("40").unwrap(), 40);
        assert!(parse_signal("SIGNOPE").is_err());
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("65").is_err());
        assert!(parse_signal("-9").is_err());
        assert!(parse_signal("SIG").is_err());
    }

    #[test]
    fn stop_signals() {
        let mut ct = Container::default();
        assert_eq!(label_stop_signal(&ct).unwrap(), SIGTERM);
        ct.labels
            .insert(labels::STOP_SIGNAL.into(), "SIGQUIT".into());
        assert_eq!(label_stop_signal(&ct).unwrap(), 3);
        assert_eq!(docker_stop_signal(&serde_json::Value::Null).unwrap(), 15);
        let cfg = serde_json::json!({"Config": {"StopSignal": "SIGINT"}});
        assert_eq!(docker_stop_signal(&cfg).unwrap(), 2);
        assert!(kills_all("", SIGKILL));
        assert!(!kills_all("", SIGTERM));
        assert!(!kills_all("exec-1", SIGKILL));
    }
}
