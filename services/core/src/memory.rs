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
//! - [`run`]: a background loop looks at the allocator twice a second and returns its free
//!   pages to the system (`malloc_trim`) at the first quiet look after a burst of work, and
//!   every few seconds while more than a threshold is held free. An idle daemon pays one
//!   `mallinfo2` call per look; the quiet trim brings berthd back near its idle size a
//!   second after, say, fifty containers were started and removed.
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

/// How often the allocator's statistics are looked at.
const INTERVAL: Duration = Duration::from_millis(500);

/// Free memory the allocator may keep before it is asked to return it, busy or not.
const THRESHOLD: usize = 8 << 20;

/// How long a trim for [`THRESHOLD`] waits after the last one (the free count keeps
/// counting what a trim returned, so past it every look would trim).
const THRESHOLD_EVERY: Duration = Duration::from_secs(3);

/// A change of the bytes in use or free between two looks that counts as work going on.
const CHURN: usize = 64 << 10;

/// Free memory worth a trim once the work is over.
const QUIET_MIN: usize = 1 << 20;

/// What the allocator holds: bytes in use and bytes free.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Held {
    used: usize,
    free: usize,
}

#[allow(unsafe_code)]
fn held() -> Held {
    // SAFETY: mallinfo2 takes no arguments, only reads the allocator's statistics under its
    // own locks and returns a plain struct by value.
    let info = unsafe { libc::mallinfo2() };
    Held {
        used: info.uordblks,
        free: info.fordblks,
    }
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

/// When to trim, from one look to the next: after a burst of work, at the first look that
/// finds the allocator quiet (a container started and removed, a pull: what it freed is
/// returned within a second of its end), and, busy or not, whenever more than
/// [`THRESHOLD`] is held free (a big request that goes on).
#[derive(Debug, Default)]
struct Policy {
    last: Held,
    /// Work went on since the last trim.
    churned: bool,
    since_threshold_trim: Duration,
}

impl Policy {
    /// Takes one look, `elapsed` after the previous; whether to trim now.
    fn look(&mut self, now: Held, elapsed: Duration) -> bool {
        let moved = now.used.abs_diff(self.last.used) + now.free.abs_diff(self.last.free);
        self.last = now;
        self.since_threshold_trim += elapsed;
        if now.free >= THRESHOLD && self.since_threshold_trim >= THRESHOLD_EVERY {
            self.since_threshold_trim = Duration::ZERO;
            self.churned = false;
            return true;
        }
        if moved >= CHURN {
            self.churned = true;
            return false;
        }
        if self.churned && now.free >= QUIET_MIN {
            self.churned = false;
            return true;
        }
        false
    }
}

/// Looks at the allocator every [`INTERVAL`] (on the blocking pool) and trims as
/// [`Policy`] says, until `shutdown` fires.
pub async fn run(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut policy = Policy::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
        let now = match tokio::task::spawn_blocking(held).await {
            Ok(now) => now,
            Err(e) => {
                tracing::warn!(error = %e, "memory look failed");
                continue;
            }
        };
        if policy.look(now, INTERVAL) {
            match tokio::task::spawn_blocking(trim).await {
                Ok(()) => tracing::debug!(
                    free_bytes = now.free,
                    in_use = now.used,
                    "returned free memory to the system"
                ),
                Err(e) => tracing::warn!(error = %e, "memory trim failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = INTERVAL;

    fn h(used_kib: usize, free_kib: usize) -> Held {
        Held {
            used: used_kib << 10,
            free: free_kib << 10,
        }
    }

    #[test]
    fn a_burst_is_trimmed_at_the_first_quiet_look() {
        let mut p = Policy::default();
        assert!(!p.look(h(1500, 300), TICK), "the first look is a change");
        assert!(!p.look(h(1500, 300), TICK), "quiet, but little free");
        // A burst of container starts and removals.
        assert!(!p.look(h(4000, 500), TICK));
        assert!(!p.look(h(2500, 2000), TICK));
        assert!(!p.look(h(1600, 2900), TICK));
        assert!(p.look(h(1600, 2900), TICK), "quiet after the burst");
        // The free count keeps what was trimmed: no trim again until more work.
        for _ in 0..20 {
            assert!(!p.look(h(1600, 2900), TICK));
        }
        assert!(!p.look(h(1700, 2800), TICK));
        assert!(p.look(h(1700, 2800), TICK));
    }

    #[test]
    fn small_changes_are_not_work() {
        let mut p = Policy::default();
        p.look(h(1500, 1500), TICK);
        p.look(h(1500, 1500), TICK);
        for i in 0..20 {
            assert!(!p.look(h(1500 + i % 2 * 16, 1500), TICK), "look {i}");
        }
    }

    #[test]
    fn much_free_memory_is_trimmed_even_while_busy() {
        let mut p = Policy::default();
        let mut trims = 0;
        for i in 0..24 {
            // Busy all along (a big request after another), 100+ MB free.
            if p.look(h(50_000 + i * 1000, 100_000 + i * 500), TICK) {
                trims += 1;
            }
        }
        // Every THRESHOLD_EVERY (3 s at 500 ms looks): 12 s of looks.
        assert_eq!(trims, 4);
    }
}
