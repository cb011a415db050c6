//! Keeps berthd's memory near its idle size after big transient work.
//!
//! glibc's malloc keeps what a request freed in its arenas, and a big request made of many
//! small allocations (15.6 MB of labels is 3,900 strings of 4 KB, decoded, validated, encoded
//! and answered) leaves them fragmented, so the memory stays resident after the request is
//! done: berthd went from 21 MB to 330 MB after four such requests and stayed there. Two
//! measures, measured on that case:
//! - [`limit_arenas`]: at most [`ARENAS`] malloc arenas instead of glibc's eight per core.
//!   Every thread that allocates may otherwise get an arena of its own, each keeping its own
//!   free memory (after trimming, 70–136 MB stayed in four arenas); with two, the peak halves
//!   and what is freed is reused. berthd has two worker threads and short blocking jobs, so
//!   two arenas cost it no measurable contention.
//! - [`run`]: a background loop looks at how much the allocator holds free every second
//!   and, when that grew by [`GROWTH`] since it last gave memory back (or since the least
//!   it saw after that), returns the free pages to the system (`malloc_trim`). Nothing is
//!   done while the free memory does not grow, so the idle daemon pays one `mallinfo2`
//!   call a second. Starting and removing 100 containers left 3 MB free in the allocator
//!   and berthd at 17.9 MB, 1 MB more than after a trim: what a burst of ordinary calls
//!   frees goes back too, not only what a huge request frees.
//!
//! With both, the daemon is back at 24-40 MB (from 21 MB idle; the rest is the metadata
//! database's page cache, now full) seconds after the requests.
//! The test is `big_label_requests_give_their_memory_back` (tests/tests/bad_input.rs): the
//! allocator's free memory is shared by the whole process, so only a daemon of its own
//! measures it reliably.

use std::time::Duration;

/// The most malloc arenas berthd uses.
const ARENAS: i32 = 2;

/// Limits the allocator to [`ARENAS`] arenas. Call before any thread is started.
#[allow(unsafe_code)]
pub fn limit_arenas() {
    // SAFETY: mallopt only sets an allocator parameter; called from main before the runtime's
    // threads exist. A value glibc refuses leaves its default in place (returns 0).
    let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) };
    if ok == 0 {
        tracing::debug!("the allocator refused M_ARENA_MAX; keeping its default");
    }
}

/// How often the free memory held by the allocator is looked at.
const INTERVAL: Duration = Duration::from_secs(1);

/// How much the allocator's free memory may grow before it is returned.
const GROWTH: usize = 1 << 20;

/// Bytes the allocator holds free (allocated from the system, not in use).
#[allow(unsafe_code)]
fn free_held() -> usize {
    // SAFETY: mallinfo2 takes no arguments, only reads the allocator's statistics under its
    // own locks and returns a plain struct by value.
    let info = unsafe { libc::mallinfo2() };
    info.fordblks
}

/// Returns the allocator's free pages to the system.
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim has no preconditions; it releases free memory of every arena under
    // the allocator's own locks and never touches memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// When to give memory back. Trimming leaves the freed chunks counted as free (only their
/// pages go back), so the measure is growth: the free memory held now against the least
/// held since the last trim.
#[derive(Debug, Default)]
struct GiveBack {
    floor: usize,
}

impl GiveBack {
    /// Whether to trim, with `held` bytes free now.
    fn due(&mut self, held: usize) -> bool {
        if held >= self.floor.saturating_add(GROWTH) {
            return true;
        }
        self.floor = self.floor.min(held);
        false
    }

    /// After a trim that left `held` bytes counted free.
    fn trimmed(&mut self, held: usize) {
        self.floor = held;
    }
}

/// Gives back the allocator's free pages now (on the blocking pool: trimming walks every
/// arena and makes a system call per run of free pages); returns the bytes counted free
/// before and after.
async fn give_back() -> Option<(usize, usize)> {
    tokio::task::spawn_blocking(|| {
        let before = free_held();
        trim();
        (before, free_held())
    })
    .await
    .map_err(|e| tracing::warn!(error = %e, "memory give-back task failed"))
    .ok()
}

/// Gives memory back whenever the allocator's free memory has grown by [`GROWTH`], looking
/// every [`INTERVAL`], until `shutdown` fires.
pub async fn run(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut when = GiveBack::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
        // mallinfo2 only sums the allocator's counters: cheap enough for a worker thread.
        if !when.due(free_held()) {
            continue;
        }
        if let Some((before, after)) = give_back().await {
            tracing::debug!(
                free_bytes = before,
                after,
                "returned free memory to the system"
            );
            when.trimmed(after);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_back_on_growth_since_the_last_trim() {
        let mut when = GiveBack::default();
        assert!(!when.due(GROWTH - 1), "a fresh daemon's little free memory");
        assert!(when.due(3 * GROWTH), "a burst freed memory");
        when.trimmed(3 * GROWTH);
        // The trimmed chunks stay counted as free: no trim again for them.
        assert!(!when.due(3 * GROWTH));
        assert!(!when.due(4 * GROWTH - 1));
        assert!(when.due(4 * GROWTH), "another burst");
        when.trimmed(4 * GROWTH);
        // Memory reused (less free), then freed again: growth from the least seen.
        assert!(!when.due(2 * GROWTH));
        assert!(!when.due(3 * GROWTH - 1));
        assert!(when.due(3 * GROWTH));
    }
}
