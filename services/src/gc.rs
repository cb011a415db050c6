//! Garbage collection (to be written): mark from roots, sweep content and snapshots.

use crate::error::Result;

/// What one collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub content: usize,
    pub snapshots: usize,
}

/// Runs collections: scheduled after deletions, or at once (`sync`). Cheap to clone.
#[derive(Clone, Default)]
pub struct Collector {}

impl Collector {
    /// Asks for a collection soon (after deletions); returns at once.
    pub fn schedule(&self) {}

    /// Collects now and returns when done.
    pub async fn collect(&self) -> Result<Stats> {
        Ok(Stats::default())
    }
}
