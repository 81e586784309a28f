//! The in-process status cache: the default when no Redis is configured, and each
//! replica's own view when it runs alone. Entries live in moka, refreshes are single-flight.

use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::entry::{Entry, Freshness, answered_since, local_store, store_unless_final};
use super::flight::{Filled, Flights};
use super::{Fetched, Lookup, Outcome, Refresh, StatusCache, TtlPolicy};
use crate::error::Result;

/// The in-process backend of [`StatusCache`].
#[derive(Clone)]
pub struct MemoryCache {
    entries: moka::future::Cache<String, Entry>,
    flights: Arc<Flights>,
    policy: TtlPolicy,
}

impl MemoryCache {
    /// A cache of at most `max_entries` snapshots, fresh and stale as `policy` says.
    pub fn new(policy: TtlPolicy, max_entries: u64) -> MemoryCache {
        MemoryCache {
            entries: local_store(policy, max_entries),
            flights: Arc::default(),
            policy,
        }
    }

    /// The same cache, counting refreshes it coalesces on `metrics` (before first use).
    pub fn with_metrics(self, metrics: crate::metrics::Metrics) -> MemoryCache {
        MemoryCache {
            flights: Arc::new(Flights::with_metrics(metrics)),
            ..self
        }
    }

    async fn lookup(&self, key: &str, refresh: Refresh) -> Result<Lookup> {
        if let Some(entry) = self.entries.get(key).await {
            match entry.freshness(&self.policy) {
                Freshness::Fresh => return Ok(entry.lookup(Outcome::Hit)),
                Freshness::Stale => {
                    // Joining starts the refresh as a task; nobody needs to wait for it.
                    drop(self.refresh(key, refresh, None));
                    return Ok(entry.lookup(Outcome::Stale));
                }
                Freshness::Expired => {}
            }
        }
        let filled = self.refresh(key, refresh, None).await?;
        Ok(filled.entry.lookup(Outcome::Miss))
    }

    /// Joins or starts the refresh of `key`. A revalidation starting one passes its
    /// arrival (`answered_since`): a read that finished just before this flight was
    /// registered has stored its entry, which answers it with no second read.
    fn refresh(
        &self,
        key: &str,
        refresh: Refresh,
        answered_since_ms: Option<u64>,
    ) -> super::flight::Flight {
        let entries = self.entries.clone();
        let owned_key = key.to_string();
        self.flights.join(key, move || {
            async move {
                if let Some(since) = answered_since_ms
                    && let Some(entry) = answered_since(&entries, &owned_key, since).await
                {
                    return Ok(Filled {
                        entry,
                        from_cache: false,
                    });
                }
                let fetched = Entry::fetched_now(refresh.await?);
                let entry = store_unless_final(&entries, &owned_key, fetched).await;
                Ok(Filled {
                    entry,
                    from_cache: false,
                })
            }
            .boxed()
        })
    }
}

impl StatusCache for MemoryCache {
    fn get_or_refresh<'a>(
        &'a self,
        key: &'a str,
        refresh: Refresh,
    ) -> BoxFuture<'a, Result<Lookup>> {
        self.lookup(key, refresh).boxed()
    }

    fn revalidate<'a>(
        &'a self,
        key: &'a str,
        refresh: Refresh,
        not_before_ms: u64,
    ) -> BoxFuture<'a, Result<Lookup>> {
        // In process every flight reads upstream, so joining one in progress is enough.
        async move {
            if let Some(entry) = answered_since(&self.entries, key, not_before_ms).await {
                return Ok(entry.lookup(Outcome::Miss));
            }
            let filled = self.refresh(key, refresh, Some(not_before_ms)).await?;
            Ok(filled.entry.lookup(Outcome::Miss))
        }
        .boxed()
    }

    fn put<'a>(&'a self, key: &'a str, fetched: Fetched) -> BoxFuture<'a, ()> {
        async move {
            store_unless_final(&self.entries, key, Entry::fetched_now(fetched)).await;
        }
        .boxed()
    }

    fn invalidate<'a>(&'a self, key: &'a str) -> BoxFuture<'a, ()> {
        async move {
            self.flights.forget(key);
            self.entries.invalidate(key).await;
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use bytes::Bytes;
    use tonic::Code;

    use super::*;
    use crate::error::Error;

    fn policy() -> TtlPolicy {
        TtlPolicy {
            live: Duration::from_millis(150),
            terminal: Duration::from_secs(60),
            stale: Duration::from_millis(300),
        }
    }

    /// A refresh that counts its calls, takes a moment, and answers `body`.
    fn counted(calls: &Arc<AtomicUsize>, body: &'static str, is_final: bool) -> Refresh {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok(Fetched {
                bytes: Bytes::from_static(body.as_bytes()),
                is_final,
            })
        }
        .boxed()
    }

    #[tokio::test]
    async fn a_revalidation_that_lost_the_race_with_a_finished_read_reads_nothing() {
        let cache = MemoryCache::new(policy(), 1_000);
        let calls = Arc::new(AtomicUsize::new(0));
        let arrived = crate::cache::now_ms();
        // Another caller's read finishes after this one arrived, before it joins.
        cache
            .revalidate("job", counted(&calls, "read for us", false), arrived)
            .await
            .unwrap();
        let late = cache
            .revalidate("job", counted(&calls, "again", false), arrived)
            .await
            .unwrap();
        assert_eq!(late.bytes.as_ref(), b"read for us");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A caller that arrived after that read still reads for itself.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let fresh = cache
            .revalidate(
                "job",
                counted(&calls, "later", false),
                crate::cache::now_ms(),
            )
            .await
            .unwrap();
        assert_eq!(fresh.bytes.as_ref(), b"later");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_cold_lookups_refresh_once() {
        let cache = MemoryCache::new(policy(), 1_000);
        let calls = Arc::new(AtomicUsize::new(0));
        let lookups = (0..200).map(|_| {
            let (cache, calls) = (cache.clone(), calls.clone());
            tokio::spawn(async move {
                cache
                    .get_or_refresh("job", counted(&calls, "v1", false))
                    .await
            })
        });
        for lookup in futures_util::future::join_all(lookups).await {
            assert_eq!(lookup.unwrap().unwrap().bytes, "v1");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let again = cache
            .get_or_refresh("job", counted(&calls, "v2", false))
            .await
            .unwrap();
        assert_eq!(
            (again.outcome, again.bytes.as_ref()),
            (Outcome::Hit, &b"v1"[..])
        );
    }

    #[tokio::test]
    async fn live_entries_go_stale_then_refresh_once_in_the_background() {
        let cache = MemoryCache::new(policy(), 1_000);
        let calls = Arc::new(AtomicUsize::new(0));
        let first = cache
            .get_or_refresh("job", counted(&calls, "v1", false))
            .await
            .unwrap();
        assert_eq!(first.outcome, Outcome::Miss);
        tokio::time::sleep(Duration::from_millis(200)).await;
        for _ in 0..5 {
            let stale = cache
                .get_or_refresh("job", counted(&calls, "v2", false))
                .await
                .unwrap();
            assert_eq!(
                (stale.outcome, stale.bytes.as_ref()),
                (Outcome::Stale, &b"v1"[..])
            );
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
        let fresh = cache
            .get_or_refresh("job", counted(&calls, "v3", false))
            .await
            .unwrap();
        assert_eq!(
            (fresh.outcome, fresh.bytes.as_ref()),
            (Outcome::Hit, &b"v2"[..])
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "one background refresh for five stale reads"
        );
        // Past the stale window too: the lookup waits for the upstream again.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let cold = cache
            .get_or_refresh("job", counted(&calls, "v4", false))
            .await
            .unwrap();
        assert_eq!(
            (cold.outcome, cold.bytes.as_ref()),
            (Outcome::Miss, &b"v4"[..])
        );
    }

    #[tokio::test]
    async fn terminal_entries_stay_fresh_and_invalidate_and_put_replace_them() {
        let cache = MemoryCache::new(policy(), 1_000);
        let calls = Arc::new(AtomicUsize::new(0));
        cache
            .get_or_refresh("job", counted(&calls, "done", true))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let hit = cache
            .get_or_refresh("job", counted(&calls, "x", true))
            .await
            .unwrap();
        assert_eq!((hit.outcome, hit.is_final), (Outcome::Hit, true));

        let again = cache
            .revalidate(
                "job",
                counted(&calls, "checked", true),
                crate::cache::now_ms(),
            )
            .await
            .unwrap();
        assert_eq!(
            (again.outcome, again.bytes.as_ref()),
            (Outcome::Miss, &b"checked"[..])
        );

        cache.invalidate("job").await;
        let miss = cache
            .get_or_refresh("job", counted(&calls, "again", true))
            .await
            .unwrap();
        assert_eq!(
            (miss.outcome, miss.bytes.as_ref()),
            (Outcome::Miss, &b"again"[..])
        );

        // A live state read before the final one was written never replaces it (the
        // caller arrives after that write, so it does read)...
        tokio::time::sleep(Duration::from_millis(2)).await;
        let late = cache
            .revalidate(
                "job",
                counted(&calls, "running", false),
                crate::cache::now_ms(),
            )
            .await
            .unwrap();
        assert_eq!((late.bytes.as_ref(), late.is_final), (&b"again"[..], true));
        let seen = || Fetched {
            bytes: Bytes::from_static(b"watched"),
            is_final: false,
        };
        cache.put("job", seen()).await;
        let kept = cache
            .get_or_refresh("job", counted(&calls, "x", true))
            .await
            .unwrap();
        assert_eq!(
            (kept.outcome, kept.bytes.as_ref()),
            (Outcome::Hit, &b"again"[..])
        );
        // ...but after an invalidate, anything goes.
        cache.invalidate("job").await;
        cache.put("job", seen()).await;
        let hit = cache
            .get_or_refresh("job", counted(&calls, "x", true))
            .await
            .unwrap();
        assert_eq!(
            (hit.outcome, hit.bytes.as_ref()),
            (Outcome::Hit, &b"watched"[..])
        );
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn refresh_errors_reach_every_waiter_and_are_not_cached() {
        let cache = MemoryCache::new(policy(), 1_000);
        let failing = || -> Refresh {
            async { Err(Error::FailedPrecondition("job is gone".into())) }.boxed()
        };
        let (a, b) = tokio::join!(
            cache.get_or_refresh("job", failing()),
            cache.get_or_refresh("job", failing())
        );
        for result in [a, b] {
            assert_eq!(result.unwrap_err().code(), Code::FailedPrecondition);
        }
        let calls = Arc::new(AtomicUsize::new(0));
        let ok = cache
            .get_or_refresh("job", counted(&calls, "v1", false))
            .await
            .unwrap();
        assert_eq!(ok.outcome, Outcome::Miss);
    }
}
