//! The status cache with its lookups counted by result: wraps either backend, so neither
//! needs to know about metrics and every lookup is counted exactly once.

use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::{Fetched, Lookup, Refresh, StatusCache};
use crate::error::Result;
use crate::metrics::Metrics;

/// `inner`, counting each answered lookup as hit, miss or stale.
pub struct Metered {
    inner: Arc<dyn StatusCache>,
    metrics: Metrics,
}

impl Metered {
    /// Counts the lookups of `inner` on `metrics`.
    pub fn new(inner: Arc<dyn StatusCache>, metrics: Metrics) -> Metered {
        Metered { inner, metrics }
    }
}

impl StatusCache for Metered {
    fn get_or_refresh<'a>(
        &'a self,
        key: &'a str,
        refresh: Refresh,
    ) -> BoxFuture<'a, Result<Lookup>> {
        let lookup = self.inner.get_or_refresh(key, refresh);
        lookup
            .inspect(|l| {
                if let Ok(l) = l {
                    self.metrics.cache_lookup(l.outcome);
                }
            })
            .boxed()
    }

    fn revalidate<'a>(
        &'a self,
        key: &'a str,
        refresh: Refresh,
        not_before_ms: u64,
    ) -> BoxFuture<'a, Result<Lookup>> {
        let lookup = self.inner.revalidate(key, refresh, not_before_ms);
        lookup
            .inspect(|l| {
                if let Ok(l) = l {
                    self.metrics.cache_lookup(l.outcome);
                }
            })
            .boxed()
    }

    fn put<'a>(&'a self, key: &'a str, fetched: Fetched) -> BoxFuture<'a, ()> {
        self.inner.put(key, fetched)
    }

    fn invalidate<'a>(&'a self, key: &'a str) -> BoxFuture<'a, ()> {
        self.inner.invalidate(key)
    }
}
