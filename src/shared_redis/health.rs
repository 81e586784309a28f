//! Whether Redis is reachable, as seen by the calls this replica makes: one warning when
//! it goes, one info line when it comes back, never a line per call.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::{ErrorKind, RedisError, ServerErrorKind};

/// The up/down state shared by every clone of a handle.
#[derive(Debug)]
pub(crate) struct Health {
    up: AtomicBool,
    /// Milliseconds since `started` of the last call let through while down.
    last_probe_ms: AtomicU64,
    started: Instant,
    /// The target, redacted, for the log lines.
    target: String,
}

impl Health {
    /// Starts as up: the first failed call says it is not.
    pub(crate) fn new(target: String) -> Health {
        Health {
            up: AtomicBool::new(true),
            last_probe_ms: AtomicU64::new(0),
            started: Instant::now(),
            target,
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Whether a call should go to Redis now: always while up; while down, one call per
    /// `every` probes it, so a Redis that hangs does not cost each lookup a full timeout.
    pub(crate) fn may_try(&self, every: Duration) -> bool {
        if self.is_up() {
            return true;
        }
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_probe_ms.load(Ordering::Relaxed);
        let every = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
        now.saturating_sub(last) >= every
            && self
                .last_probe_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Redis answered.
    pub(crate) fn answered(&self) {
        // The swap makes exactly one of many concurrent callers log the change.
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!(redis = %self.target, "Redis is reachable again; shared state is back in use");
        }
    }

    /// A call failed with `error` (already scrubbed of secrets as `shown`).
    pub(crate) fn failed(&self, error: &RedisError, shown: &str) {
        if means_unreachable(error) && self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                redis = %self.target,
                error = %shown,
                "Redis is unreachable; reads go upstream and watches stay per replica until it is back"
            );
        }
    }
}

/// True when the error says Redis could not serve at all, as opposed to an answer that
/// refuses one command (a wrong type, a script error): those mean Redis is there.
pub(crate) fn means_unreachable(error: &RedisError) -> bool {
    !matches!(
        error.kind(),
        ErrorKind::Parse
            | ErrorKind::UnexpectedReturnType
            | ErrorKind::Extension
            | ErrorKind::Server(
                ServerErrorKind::ResponseError
                    | ServerErrorKind::ExecAbort
                    | ServerErrorKind::NoScript
                    | ServerErrorKind::Moved
                    | ServerErrorKind::Ask
                    | ServerErrorKind::CrossSlot
                    | ServerErrorKind::NotBusy
                    | ServerErrorKind::NoSub
            )
    )
}
