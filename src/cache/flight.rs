//! Single-flight: at most one refresh per key per replica at a time; every concurrent
//! lookup of the key awaits the same one. Refreshes run as tasks, so they always finish.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::entry::Entry;
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// What a flight produced: the entry, and whether it was found in the shared cache
/// (another replica refreshed it) rather than read upstream by this flight.
#[derive(Debug, Clone)]
pub(crate) struct Filled {
    pub(crate) entry: Entry,
    pub(crate) from_cache: bool,
}

/// A flight in progress, awaited by any number of lookups. The gateway's `Error` is
/// `Clone`, so every waiter gets the refresh's own error, status code and details intact.
pub(crate) type Flight = Shared<BoxFuture<'static, Result<Filled>>>;

/// One flight, with what tells it apart from a newer flight of its key, and its span.
struct InFlight {
    id: u64,
    flight: Flight,
    /// A call that joins the flight links its span to this one: the refresh is a child
    /// of the call that started it only.
    span: SpanContext,
}

impl InFlight {
    fn join(&self) -> Flight {
        tracing::Span::current().add_link(self.span.clone());
        self.flight.clone()
    }
}

/// The flights in progress on this replica, by key.
#[derive(Default)]
pub(crate) struct Flights {
    in_progress: Mutex<HashMap<String, InFlight>>,
    next_id: AtomicU64,
    metrics: Metrics,
}

impl Flights {
    /// No flights yet; each lookup that joins one is counted on `metrics`.
    pub(crate) fn with_metrics(metrics: Metrics) -> Flights {
        Flights {
            metrics,
            ..Flights::default()
        }
    }

    /// Joins the flight for `key`, or starts `work` as that flight.
    pub(crate) fn join(
        self: &Arc<Self>,
        key: &str,
        work: impl FnOnce() -> BoxFuture<'static, Result<Filled>>,
    ) -> Flight {
        let mut in_progress = self
            .in_progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(in_flight) = in_progress.get(key) {
            self.metrics.refresh_coalesced();
            return in_flight.join();
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // The upstream call is counted in the access line of the call that started it.
        // In the trace of the call that started it, without holding that call's span open.
        let span = crate::telemetry::detached_span("cache refresh");
        let span_context = span.context().span().span_context().clone();
        let work = crate::access_log::carry_note(work()).instrument(span);
        let flights = Arc::clone(self);
        let owned_key = key.to_string();
        // A task, not a future polled by the callers: if they all leave (deadline,
        // disconnect), the upstream answer already paid for still fills the cache.
        let task = tokio::spawn(async move {
            let filled = work.await;
            // The cache is written by `work`, so a lookup arriving after this sees it.
            flights.finish(&owned_key, id);
            filled
        });
        let flight = async move {
            task.await
                .unwrap_or_else(|e| Err(Error::Internal(format!("cache refresh task failed: {e}"))))
        }
        .boxed()
        .shared();
        in_progress.insert(
            key.to_string(),
            InFlight {
                id,
                flight: flight.clone(),
                span: span_context,
            },
        );
        flight
    }

    /// The flight of `key` in progress, if any, for a lookup that joins it (counted).
    pub(crate) fn current(&self, key: &str) -> Option<Flight> {
        let flight = self
            .in_progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .map(InFlight::join);
        if flight.is_some() {
            self.metrics.refresh_coalesced();
        }
        flight
    }

    /// Forgets the flight of `key`, so the next lookup starts a new one (after a cancel).
    pub(crate) fn forget(&self, key: &str) {
        self.in_progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }

    fn finish(&self, key: &str, id: u64) {
        let mut in_progress = self
            .in_progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Only our own flight: a `forget` may have let a newer one start meanwhile.
        if in_progress.get(key).is_some_and(|current| current.id == id) {
            in_progress.remove(key);
        }
    }
}
