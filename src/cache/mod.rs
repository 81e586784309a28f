//! The status cache: encoded snapshots (prost bytes) by resource key, read through with one
//! coalesced refresh per key and stale-while-revalidate; `memory` and `redis` are its backends.

mod entry;
mod flight;
pub mod memory;
mod metered;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tonic::metadata::{MetadataMap, MetadataValue};

use crate::config::Config;
use crate::error::Result;
use crate::metrics::Metrics;
use crate::shared_redis::SharedRedis;

pub use self::entry::now_ms;
pub use self::memory::MemoryCache;
pub use self::metered::Metered;
pub use self::redis::RedisCache;

/// What a refresh read from the upstream: the encoded snapshot, and whether its state is
/// terminal (which decides how long it stays fresh).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The encoded prost message.
    pub bytes: Bytes,
    /// True for a terminal state (completed, failed, cancelled…).
    pub is_final: bool,
}

/// The upstream read that fills an entry. `'static` because it may finish after the call
/// that started it has gone: its answer still fills the cache for everyone else.
pub type Refresh = BoxFuture<'static, Result<Fetched>>;

/// How a lookup was answered, rendered as the `x-cache` metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// From a fresh entry (this replica's, or one another replica wrote).
    Hit,
    /// From a refresh this lookup waited for.
    Miss,
    /// From an entry past its freshness, while one refresh runs in the background.
    Stale,
}

impl Outcome {
    /// `HIT`, `MISS` or `STALE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "HIT",
            Outcome::Miss => "MISS",
            Outcome::Stale => "STALE",
        }
    }
}

/// The answer to one lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The encoded snapshot.
    pub bytes: Bytes,
    /// Whether it came from the cache, fresh or stale, or from a refresh.
    pub outcome: Outcome,
    /// Time since the upstream answered with it.
    pub age: Duration,
    /// Whether its state is terminal.
    pub is_final: bool,
}

impl Lookup {
    /// Adds HTTP's `x-cache: HIT|MISS|STALE` and `age: <whole seconds>` to response metadata.
    pub fn annotate(&self, metadata: &mut MetadataMap) {
        metadata.insert("x-cache", MetadataValue::from_static(self.outcome.as_str()));
        metadata.insert("age", MetadataValue::from(self.age.as_secs()));
    }
}

/// How long entries stay fresh, by state, and how long past that they may be served stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlPolicy {
    /// Freshness of a running or queued state.
    pub live: Duration,
    /// Freshness of a terminal state.
    pub terminal: Duration,
    /// How long past its freshness an entry is still served, as STALE, while it is refreshed.
    pub stale: Duration,
}

impl TtlPolicy {
    /// The configured TTLs; a stale window as long as the live TTL, so a polled running
    /// job never waits on the upstream twice in a row.
    pub fn from_config(config: &Config) -> TtlPolicy {
        TtlPolicy {
            live: config.cache_live_ttl,
            terminal: config.cache_final_ttl,
            stale: config.cache_live_ttl,
        }
    }

    /// How long an entry of this kind is fresh.
    pub fn fresh_for(&self, is_final: bool) -> Duration {
        if is_final { self.terminal } else { self.live }
    }

    /// How long an entry of this kind is worth keeping at all.
    pub fn keep_for(&self, is_final: bool) -> Duration {
        self.fresh_for(is_final) + self.stale
    }
}

/// A cache of encoded snapshots, read through by handlers. Both backends coalesce
/// concurrent refreshes of one key into one, and never fail a lookup for their own
/// trouble: only the refresh's error reaches the caller.
pub trait StatusCache: Send + Sync + 'static {
    /// The entry for `key`: fresh (HIT), stale while one background refresh runs
    /// (STALE), or from `refresh`, shared with every concurrent lookup of `key` (MISS).
    fn get_or_refresh<'a>(
        &'a self,
        key: &'a str,
        refresh: Refresh,
    ) -> BoxFuture<'a, Result<Lookup>>;

    /// Reads `key` upstream now, whatever is cached, and stores the answer (MISS). For a
    /// caller whose credential nobody vouched for lately: a cached entry proves nothing
    /// about it. Concurrent revalidations of `key` on this replica share one read, and an
    /// entry the upstream answered after `not_before_ms` (unix ms; the caller's
    /// arrival) is used as it is: it was read for this tenant since the caller came, so a
    /// caller that lost the race with a finished read does not read again.
    fn revalidate<'a>(
        &'a self,
        key: &'a str,
        refresh: Refresh,
        not_before_ms: u64,
    ) -> BoxFuture<'a, Result<Lookup>>;

    /// Stores what was just read upstream (watch pollers write what they see).
    fn put<'a>(&'a self, key: &'a str, fetched: Fetched) -> BoxFuture<'a, ()>;

    /// Forgets `key` (a cancel changes the state, so the next lookup refreshes). Other
    /// replicas' L1 copies live out their freshness: the live TTL for a live entry, the
    /// final TTL for a final one, which is why callers mark an entry final only when
    /// its resource can never change again. A refresh already in flight may still store
    /// the live state it read before; that too is bounded by the live TTL.
    fn invalidate<'a>(&'a self, key: &'a str) -> BoxFuture<'a, ()>;
}

/// The status cache `config` asks for: on `redis` when there is one, else in process;
/// its lookups and coalesced refreshes counted on `metrics`.
pub fn status_cache(
    config: &Config,
    redis: Option<&SharedRedis>,
    metrics: &Metrics,
) -> Arc<dyn StatusCache> {
    // Snapshots are small (a status message); this bounds memory, not hit rates.
    const MAX_ENTRIES: u64 = 100_000;
    let policy = TtlPolicy::from_config(config);
    let backend: Arc<dyn StatusCache> = match redis {
        Some(redis) => Arc::new(
            RedisCache::new(redis.clone(), policy, MAX_ENTRIES).with_metrics(metrics.clone()),
        ),
        None => Arc::new(MemoryCache::new(policy, MAX_ENTRIES).with_metrics(metrics.clone())),
    };
    Arc::new(Metered::new(backend, metrics.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_render_http_cache_metadata() {
        let lookup = Lookup {
            bytes: Bytes::new(),
            outcome: Outcome::Stale,
            age: Duration::from_millis(2_900),
            is_final: false,
        };
        let mut metadata = MetadataMap::new();
        lookup.annotate(&mut metadata);
        assert_eq!(metadata.get("x-cache").unwrap(), "STALE");
        assert_eq!(metadata.get("age").unwrap(), "2");
    }

    #[test]
    fn terminal_states_stay_fresh_longer() {
        let policy = TtlPolicy::from_config(&Config::embedded());
        assert_eq!(policy.fresh_for(false), Duration::from_secs(1));
        assert_eq!(policy.fresh_for(true), Duration::from_secs(3_600));
        assert_eq!(policy.keep_for(false), Duration::from_secs(2));
    }
}
