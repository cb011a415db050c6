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
//! - [`run`]: a background loop looks at how much the allocator holds free every few seconds
//!   and, past a threshold, returns the free pages to the system (`malloc_trim`). Nothing
//!   is done while little is held free, so the idle daemon pays one `mallinfo2` call per
//!   interval.
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
const INTERVAL: Duration = Duration::from_secs(3);

/// Free memory the allocator may keep before it is asked to return it.
const THRESHOLD: usize = 8 << 20;

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

/// Gives back what the allocator holds free past [`THRESHOLD`]; returns the bytes it held
/// free before, if it trimmed.
pub fn give_back() -> Option<usize> {
    let held = free_held();
    if held < THRESHOLD {
        return None;
    }
    trim();
    Some(held)
}

/// Runs [`give_back`] every [`INTERVAL`] (on the blocking pool) until `shutdown` fires.
pub async fn run(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
        match tokio::task::spawn_blocking(give_back).await {
            Ok(Some(held)) => {
                tracing::debug!(
                    free_bytes = held,
                    after = free_held(),
                    "returned free memory to the system"
                );
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "memory give-back task failed"),
        }
    }
}
