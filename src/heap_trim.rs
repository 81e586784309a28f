//! Gives freed heap back to the OS after a burst of large requests: glibc keeps freed
//! arena memory resident (686 MB after eight 60 MB creates), so the binary trims it.

use std::time::Duration;

/// How often the trimmer looks.
pub const TRIM_EVERY: Duration = Duration::from_secs(1);

/// Resident memory the allocator may keep beyond what is in use before it is trimmed.
pub const TRIM_SLACK_BYTES: usize = 64 * 1024 * 1024;

/// Starts the trimmer on the current Tokio runtime (a no-op off glibc).
///
/// Why `malloc_trim` rather than swapping in jemalloc or mimalloc: it is glibc's own
/// call, already reachable through `libc`, adds no C library to build, and changes
/// nothing about how the gateway allocates; it only returns pages that are free. The
/// check is cheap (one `mallinfo2` and one read of `/proc/self/statm` a second), and
/// trimming only happens after something large was freed, so steady load never pays it.
pub fn spawn_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async {
        let mut tick = tokio::time::interval(TRIM_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if glibc::retained_free_bytes().is_some_and(|free| free > TRIM_SLACK_BYTES) {
                // Walking the arenas takes a few ms: off the async threads.
                let _ = tokio::task::spawn_blocking(glibc::trim).await;
            }
        }
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    /// Resident bytes that are not heap in use: free arena memory glibc still holds,
    /// plus the binary, stacks and the like (a few tens of MiB, under the slack).
    pub fn retained_free_bytes() -> Option<usize> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: sysconf and mallinfo2 only read process-wide state.
        let (page, info) = unsafe { (libc::sysconf(libc::_SC_PAGESIZE), libc::mallinfo2()) };
        let resident = pages * usize::try_from(page).ok()?;
        Some(resident.saturating_sub(info.uordblks + info.hblkhd))
    }

    /// Returns every free page of every arena to the OS.
    pub fn trim() {
        // SAFETY: malloc_trim is thread-safe; it takes each arena's lock in turn.
        let released = unsafe { libc::malloc_trim(0) };
        tracing::debug!(released = released != 0, "trimmed the heap after a burst");
    }
}
