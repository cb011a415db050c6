//! The daemon-side status of a task's init process and the rules it sets.
//!
//! The daemon learns the status from its own calls (create, start, pause, resume, wait),
//! from the shim's answers (state) and from the shim's `/tasks/exit` events. Its view can
//! lag the shim's in one direction only: a process it thinks runs may have stopped, but one
//! it knows stopped never runs again. So a rule that passes lets the call go to the shim
//! (which has the last word), and a rule that fails on a status that is not final is
//! checked once more against the shim's own answer before the call is refused.

use crate::error::Error;
use crate::runtime::ProcessStatus;

/// What the daemon knows of a task's init process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskStatus {
    pub status: ProcessStatus,
    /// The init process's pid (0 before it is known).
    pub pid: u32,
}

/// A rule: whether an operation is possible in a status.
pub type Rule = fn(ProcessStatus) -> bool;

impl TaskStatus {
    pub fn created(pid: u32) -> TaskStatus {
        TaskStatus {
            status: ProcessStatus::Created,
            pid,
        }
    }

    /// Whether the status can no longer change (the process has exited).
    pub fn is_final(self) -> bool {
        self.status == ProcessStatus::Stopped
    }

    /// `rule` applied, as the FailedPrecondition the shim itself would answer (the same
    /// words, so a client sees one message whichever side refused).
    pub fn check(self, op: &str, id: &str, rule: Rule) -> Result<(), Error> {
        if rule(self.status) {
            return Ok(());
        }
        Err(Error::precondition(format!(
            "cannot {op} container {id} in state {}",
            self.status.name()
        )))
    }
}

/// The rules, per operation on the init process (the shim's own, from its state machine).
pub mod rules {
    use super::ProcessStatus as S;

    pub fn can_start(s: S) -> bool {
        matches!(s, S::Created | S::Unknown)
    }

    pub fn can_exec(s: S) -> bool {
        matches!(s, S::Created | S::Running | S::Unknown)
    }

    pub fn can_pause(s: S) -> bool {
        matches!(s, S::Running | S::Unknown)
    }

    pub fn can_resume(s: S) -> bool {
        matches!(s, S::Paused | S::Pausing | S::Unknown)
    }

    pub fn can_update(s: S) -> bool {
        s != S::Stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_refuse_with_the_shims_words() {
        let stopped = TaskStatus {
            status: ProcessStatus::Stopped,
            pid: 9,
        };
        assert!(stopped.is_final());
        let e = stopped
            .check("start", "c1", rules::can_start)
            .expect_err("stopped");
        assert!(matches!(e, Error::FailedPrecondition(_)));
        assert_eq!(
            e.to_string(),
            "cannot start container c1 in state stopped: failed precondition"
        );
        let created = TaskStatus::created(9);
        assert!(created.check("start", "c1", rules::can_start).is_ok());
        assert!(created.check("exec in", "c1", rules::can_exec).is_ok());
        assert!(created.check("pause", "c1", rules::can_pause).is_err());
        let paused = TaskStatus {
            status: ProcessStatus::Paused,
            pid: 9,
        };
        assert!(paused.check("resume", "c1", rules::can_resume).is_ok());
        assert!(paused.check("exec in", "c1", rules::can_exec).is_err());
        assert!(!paused.is_final());
    }
}
