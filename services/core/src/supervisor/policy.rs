//! The supervisor's rules, pure: whether an exit is restarted, whether a stopped container
//! is started when berthd starts, Docker's back-off, and the stdio a restarted task gets.

use std::time::Duration;

use berth_oci::restart::RestartPolicy;

use crate::tasks::Stdio;

/// The first back-off (Docker's `defaultTimeout`).
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The back-off never grows past this (Docker's `maxRestartTimeout`).
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// A container that ran this long starts over at [`FIRST_DELAY`].
pub const RESET_AFTER: Duration = Duration::from_secs(10);

/// Whether an exit seen while berthd runs is restarted (Docker's `ShouldRestart`, with a
/// user's stop never fought).
pub fn restart_on_exit(
    policy: RestartPolicy,
    exit_status: u32,
    manually_stopped: bool,
    restart_count: u32,
) -> bool {
    if manually_stopped {
        return false;
    }
    match policy {
        RestartPolicy::No => false,
        RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        RestartPolicy::OnFailure { max } => exit_status != 0 && (max == 0 || restart_count < max),
    }
}

/// Whether a container found stopped when berthd starts is started again: `always` even
/// after a user's stop (Docker: "restarted when the daemon restarts"), `unless-stopped`
/// unless a user stopped it, `on-failure` as for an exit.
pub fn start_at_boot(
    policy: RestartPolicy,
    exit_status: u32,
    manually_stopped: bool,
    restart_count: u32,
) -> bool {
    match policy {
        RestartPolicy::Always => true,
        p => restart_on_exit(p, exit_status, manually_stopped, restart_count),
    }
}

/// Docker's restart back-off: 100 ms, doubling each time up to a minute, and back to
/// 100 ms once the container ran [`RESET_AFTER`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backoff {
    delay: Duration,
}

impl Backoff {
    /// The wait before the next restart of a container that ran for `ran_for`.
    pub fn next(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= RESET_AFTER {
            self.delay = Duration::ZERO;
        }
        self.delay = if self.delay.is_zero() {
            FIRST_DELAY
        } else {
            (self.delay * 2).min(MAX_DELAY)
        };
        self.delay
    }

    pub fn reset(&mut self) {
        self.delay = Duration::ZERO;
    }
}

/// The stdio of a restarted task: the previous task's, where it does not depend on a client
/// (a URI such as `file://…` or `binary://…`, or nothing); streams that were FIFOs of a
/// client (`run -it`, `start -a`) go to the container's log file instead (`log`, the path
/// its log label names; nothing without one), and stdin is kept as a URI, else is the
/// container's own stdin FIFO (`stdin_fifo`, made with `-i`) or nothing.
pub fn restart_stdio(prev: &Stdio, log: Option<&str>, stdin_fifo: Option<&str>) -> Stdio {
    let uri = |s: &str| s.contains("://");
    let log = log
        .filter(|l| !l.is_empty())
        .map(|l| format!("file://{l}?format=cri"));
    let out = |s: &str| {
        if s.is_empty() || uri(s) {
            s.to_string()
        } else {
            log.clone().unwrap_or_default()
        }
    };
    Stdio {
        // A client's FIFO went with the client: the container's own (`-i`) instead.
        stdin: if uri(&prev.stdin) {
            prev.stdin.clone()
        } else {
            stdin_fifo.unwrap_or_default().to_string()
        },
        stdout: out(&prev.stdout),
        stderr: out(&prev.stderr),
        terminal: prev.terminal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_failure_counts_and_ignores_success() {
        let p = RestartPolicy::OnFailure { max: 3 };
        assert!(restart_on_exit(p, 1, false, 0));
        assert!(restart_on_exit(p, 1, false, 2));
        assert!(!restart_on_exit(p, 1, false, 3));
        assert!(!restart_on_exit(p, 0, false, 0));
        let unlimited = RestartPolicy::OnFailure { max: 0 };
        assert!(restart_on_exit(unlimited, 137, false, 1000));
    }

    #[test]
    fn a_user_stop_is_not_fought() {
        for p in [
            RestartPolicy::Always,
            RestartPolicy::UnlessStopped,
            RestartPolicy::OnFailure { max: 0 },
        ] {
            assert!(restart_on_exit(p, 1, false, 0), "{p}");
            assert!(!restart_on_exit(p, 1, true, 0), "{p}");
        }
        assert!(!restart_on_exit(RestartPolicy::No, 1, false, 0));
        assert!(restart_on_exit(RestartPolicy::Always, 0, false, 0));
    }

    #[test]
    fn at_boot_always_comes_back_unless_stopped_remembers() {
        assert!(start_at_boot(RestartPolicy::Always, 0, true, 0));
        assert!(!start_at_boot(RestartPolicy::UnlessStopped, 0, true, 0));
        assert!(start_at_boot(RestartPolicy::UnlessStopped, 0, false, 0));
        assert!(!start_at_boot(RestartPolicy::No, 1, false, 0));
        assert!(start_at_boot(
            RestartPolicy::OnFailure { max: 2 },
            255,
            false,
            1
        ));
        assert!(!start_at_boot(
            RestartPolicy::OnFailure { max: 2 },
            0,
            false,
            0
        ));
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::default();
        let short = Duration::from_millis(5);
        let delays: Vec<u128> = (0..4).map(|_| b.next(short).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800]);
        for _ in 0..20 {
            b.next(short);
        }
        assert_eq!(b.next(short), MAX_DELAY);
        assert_eq!(b.next(RESET_AFTER), FIRST_DELAY);
        assert_eq!(b.next(short), Duration::from_millis(200));
        b.reset();
        assert_eq!(b.next(short), FIRST_DELAY);
    }

    #[test]
    fn restarted_stdio_never_waits_for_a_client() {
        let log = Some("/var/lib/berth/runtime/default/x.log");
        let file = "file:///var/lib/berth/runtime/default/x.log?format=cri";
        let detached = Stdio {
            stdin: String::new(),
            stdout: file.into(),
            stderr: file.into(),
            terminal: false,
        };
        assert_eq!(restart_stdio(&detached, log, None), detached);
        let attached = Stdio {
            stdin: "/run/fifo/x-stdin".into(),
            stdout: "/run/fifo/x-stdout".into(),
            stderr: String::new(),
            terminal: true,
        };
        let s = restart_stdio(&attached, log, None);
        assert_eq!(s.stdin, "");
        assert_eq!(s.stdout, file);
        assert_eq!(s.stderr, "");
        assert!(s.terminal);
        assert_eq!(restart_stdio(&attached, None, None).stdout, "");
        assert_eq!(
            restart_stdio(&Stdio::default(), log, None),
            Stdio::default()
        );
        // A container made with -i reads its own FIFO again.
        let fifo = "/var/lib/berth/runtime/default/x.stdin";
        assert_eq!(restart_stdio(&attached, log, Some(fifo)).stdin, fifo);
    }
}
