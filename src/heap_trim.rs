//! Gives freed heap back to the OS after a burst of large requests: mimalloc returns
//! freed spans only when some thread calls into it later, so an idle gateway kept them.

use std::time::Duration;

/// How often the trimmer looks.
pub const TRIM_EVERY: Duration = Duration::from_secs(1);

/// Starts the trimmer on the current Tokio runtime.
///
/// mimalloc (the binary's allocator, see src/main.rs) purges freed memory a second
/// after it was freed, but only on a later call into the allocator; after a burst of
/// 60 MB creates the gateway goes quiet and kept 380 MiB resident. `mi_collect(false)`
/// once a second runs those due purges and nothing more (no forced return of memory
/// still cached for reuse), so steady load pays one cheap call a second.
pub fn spawn_trimmer() {
    tokio::spawn(async {
        let mut tick = tokio::time::interval(TRIM_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Returning pages is a syscall per span: off the async threads.
            let _ = tokio::task::spawn_blocking(collect).await;
        }
    });
}

fn collect() {
    // SAFETY: mi_collect only works on mimalloc's own state and is thread-safe.
    unsafe { libmimalloc_sys::mi_collect(false) };
}
