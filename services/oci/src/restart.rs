//! Restart policies: the `--restart` value the CLI writes into a container's
//! [`RESTART_LABEL`] and berthd's supervisor reads, parsed and validated once, with Docker's
//! words (`no`, `always`, `on-failure[:N]`, `unless-stopped`).

use std::fmt;
use std::str::FromStr;

/// The container label holding its restart policy (`always`, `on-failure:3`...).
pub const RESTART_LABEL: &str = "berth/restart";

/// What berthd does when a container's task exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// Never restarted.
    #[default]
    No,
    /// Restarted on every exit; a user stop holds until berthd restarts.
    Always,
    /// Restarted on a non-zero exit, at most `max` times (0: no limit).
    OnFailure { max: u32 },
    /// Restarted on every exit; a user stop holds, also across berthd restarts.
    UnlessStopped,
}

/// A policy that does not parse, in Docker's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

impl PolicyError {
    /// Whether the value does not even parse (Docker's CLI refuses it: "invalid restart
    /// policy format: ..."), rather than naming a policy the daemon refuses.
    pub fn is_format(&self) -> bool {
        self.0.starts_with("invalid restart policy format")
    }
}

impl RestartPolicy {
    /// Docker's name of the policy (`HostConfig.RestartPolicy.Name`).
    pub fn name(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure { .. } => "on-failure",
            RestartPolicy::UnlessStopped => "unless-stopped",
        }
    }

    /// `HostConfig.RestartPolicy.MaximumRetryCount`.
    pub fn maximum_retry_count(self) -> u32 {
        match self {
            RestartPolicy::OnFailure { max } => max,
            _ => 0,
        }
    }

    pub fn is_none(self) -> bool {
        self == RestartPolicy::No
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::OnFailure { max } if *max > 0 => write!(f, "on-failure:{max}"),
            p => f.write_str(p.name()),
        }
    }
}

impl FromStr for RestartPolicy {
    type Err = PolicyError;

    /// Docker's `ParseRestartPolicy` (the CLI's) then `validateRestartPolicy` (dockerd's,
    /// in the words of Debian's dockerd 20.10): `""` is `no`; a count only with
    /// `on-failure`. [`PolicyError::is_format`] tells the CLI's errors from the daemon's.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Ok(RestartPolicy::No);
        }
        let (name, count) = match s.split_once(':') {
            Some((n, c)) => (n, Some(c)),
            None => (s, None),
        };
        if name.is_empty() {
            return Err(PolicyError(
                "invalid restart policy format: no policy provided before colon".into(),
            ));
        }
        let count: i64 = match count.filter(|c| !c.is_empty()) {
            Some(c) => c.parse().map_err(|_| {
                PolicyError(
                    "invalid restart policy format: maximum retry count must be an integer".into(),
                )
            })?,
            None => 0,
        };
        match name {
            "no" | "always" | "unless-stopped" if count != 0 => Err(PolicyError(format!(
                "maximum retry count cannot be used with restart policy '{name}'"
            ))),
            "no" => Ok(RestartPolicy::No),
            "always" => Ok(RestartPolicy::Always),
            "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
            "on-failure" => {
                let max = u32::try_from(count)
                    .map_err(|_| PolicyError("maximum retry count cannot be negative".into()))?;
                Ok(RestartPolicy::OnFailure { max })
            }
            other => Err(PolicyError(format!("invalid restart policy '{other}'"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<RestartPolicy, String> {
        s.parse::<RestartPolicy>().map_err(|e| e.0)
    }

    #[test]
    fn parses_as_docker() {
        assert_eq!(parse(""), Ok(RestartPolicy::No));
        assert_eq!(parse("no"), Ok(RestartPolicy::No));
        assert_eq!(parse("always"), Ok(RestartPolicy::Always));
        assert_eq!(parse("unless-stopped"), Ok(RestartPolicy::UnlessStopped));
        assert_eq!(parse("on-failure"), Ok(RestartPolicy::OnFailure { max: 0 }));
        assert_eq!(
            parse("on-failure:3"),
            Ok(RestartPolicy::OnFailure { max: 3 })
        );
        assert_eq!(parse("always:"), Ok(RestartPolicy::Always));
        for p in [
            "no",
            "always",
            "on-failure",
            "on-failure:3",
            "unless-stopped",
        ] {
            assert_eq!(parse(p).map(|p| p.to_string()), Ok(p.to_string()));
        }
    }

    #[test]
    fn refuses_as_docker() {
        assert_eq!(
            parse("sometimes"),
            Err("invalid restart policy 'sometimes'".into())
        );
        assert_eq!(
            parse("always:2"),
            Err("maximum retry count cannot be used with restart policy 'always'".into())
        );
        assert_eq!(
            parse("no:-1"),
            Err("maximum retry count cannot be used with restart policy 'no'".into())
        );
        assert_eq!(
            parse("on-failure:-1"),
            Err("maximum retry count cannot be negative".into())
        );
        assert_eq!(
            parse("on-failure:x"),
            Err("invalid restart policy format: maximum retry count must be an integer".into())
        );
        assert_eq!(
            parse(":3"),
            Err("invalid restart policy format: no policy provided before colon".into())
        );
        assert!(
            "on-failure:x"
                .parse::<RestartPolicy>()
                .is_err_and(|e| e.is_format())
        );
        assert!(
            "always:2"
                .parse::<RestartPolicy>()
                .is_err_and(|e| !e.is_format())
        );
    }
}
