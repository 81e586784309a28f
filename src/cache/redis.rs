//! The status cache shared by replicas through Redis, with an in-process L1 in front so a
//! hot key costs no round trip while fresh, and a short refresh lock so replicas take turns.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::entry::{Entry, Freshness, VERSION, answered_since, local_store, store_unless_final};
use super::flight::{Filled, Flight, Flights};
use super::{Fetched, Lookup, Outcome, Refresh, StatusCache, TtlPolicy};
use crate::error::Result;
use crate::shared_redis::SharedRedis;

/// How often a replica that lost the refresh lock looks for the winner's entry.
const LOCK_POLL: Duration = Duration::from_millis(20);

/// Deletes the refresh lock only if it is still ours (it may have lapsed and been retaken).
const RELEASE_LOCK: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// Sets KEYS[1] to ARGV[1] for ARGV[2] ms, unless that would replace a final entry (our
/// encoding, version ARGV[4]: byte 2 is 1) with a live one (ARGV[3] is 0); then answers
/// the final entry kept. Writes land out of order; a final state never goes back.
const SET_UNLESS_FINAL: &str = "local cur = redis.call('get', KEYS[1]) \
if cur and ARGV[3] == '0' and string.len(cur) >= 2 and string.byte(cur, 1) == tonumber(ARGV[4]) and string.byte(cur, 2) == 1 then return cur end \
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) return false";

/// The Redis backend of [`StatusCache`]. Redis trouble never fails a lookup: without
/// Redis it behaves as the in-process cache (refreshes still coalesced on this replica).
#[derive(Clone)]
pub struct RedisCache {
    shared: Arc<Shared>,
    flights: Arc<Flights>,
    /// Apart from `flights`, whose answer may be another replica's entry: a
    /// revalidation must read upstream.
    revalidations: Arc<Flights>,
}

/// What a refresh task needs, owned so it can outlive the lookup that started it.
struct Shared {
    redis: SharedRedis,
    l1: moka::future::Cache<String, Entry>,
    policy: TtlPolicy,
    /// How long one replica may refresh a key before others stop waiting for it.
    lock_ttl: Duration,
}

impl RedisCache {
    /// A cache on `redis` with an L1 of at most `l1_entries` snapshots.
    pub fn new(redis: SharedRedis, policy: TtlPolicy, l1_entries: u64) -> RedisCache {
        // At most one refresh per key per live TTL across replicas; bounded so a long
        // TTL does not make the others wait long for a winner that died.
        let lock_ttl = policy
            .live
            .clamp(Duration::from_millis(100), Duration::from_secs(5));
        RedisCache {
            shared: Arc::new(Shared {
                redis,
                l1: local_store(policy, l1_entries),
                policy,
                lock_ttl,
            }),
            flights: Arc::default(),
            revalidations: Arc::default(),
        }
    }

    /// The same cache, counting refreshes it coalesces on `metrics` (before first use).
    pub fn with_metrics(self, metrics: crate::metrics::Metrics) -> RedisCache {
        RedisCache {
            flights: Arc::new(Flights::with_metrics(metrics.clone())),
            revalidations: Arc::new(Flights::with_metrics(metrics)),
            ..self
        }
    }

    async fn lookup(&self, key: &str, refresh: Refresh) -> Result<Lookup> {
        let shared = &self.shared;
        let local = shared.l1.get(key).await;
        if let Some(entry) = &local
            && entry.freshness(&shared.policy) == Freshness::Fresh
        {
            return Ok(entry.lookup(Outcome::Hit));
        }
        // Not fresh here: another replica may have refreshed it; keep the newer one.
        let remote = shared.read(key).await;
        let newest = match (local, remote) {
            (Some(l), Some(r)) if r.fetched_at_ms > l.fetched_at_ms => {
                Some(shared.remember(key, r).await)
            }
            (Some(l), _) => Some(l),
            (None, Some(r)) => Some(shared.remember(key, r).await),
            (None, None) => None,
        };
        if let Some(entry) = newest {
            match entry.freshness(&shared.policy) {
                Freshness::Fresh => return Ok(entry.lookup(Outcome::Hit)),
                Freshness::Stale => {
                    // The refresh runs as a task; this lookup does not wait for it.
                    drop(self.refresh(key, refresh));
                    return Ok(entry.lookup(Outcome::Stale));
                }
                Freshness::Expired => {}
            }
        }
        let filled = self.refresh(key, refresh).await?;
        let outcome = if filled.from_cache {
            Outcome::Hit
        } else {
            Outcome::Miss
        };
        Ok(filled.entry.lookup(outcome))
    }

    fn refresh(&self, key: &str, refresh: Refresh) -> Flight {
        // A revalidation in progress is an upstream read for this tenant already: a
        // caller vouched for by the acceptance it just recorded joins it, rather than
        // finding no entry yet and reading a second time.
        if let Some(flight) = self.revalidations.current(key) {
            return flight;
        }
        let shared = self.shared.clone();
        let owned_key = key.to_string();
        self.flights
            .join(key, move || shared.fill(owned_key, refresh).boxed())
    }
}

impl Shared {
    /// The entry in Redis; `None` when absent, unreadable, or Redis is not answering.
    async fn read(&self, key: &str) -> Option<Entry> {
        let raw: Option<Vec<u8>> = self.redis.query(redis::cmd("GET").arg(key)).await.ok()?;
        raw.as_deref().and_then(Entry::decode)
    }

    /// Keeps `entry` in L1 and hands it back.
    async fn remember(&self, key: &str, entry: Entry) -> Entry {
        self.l1.insert(key.to_string(), entry.clone()).await;
        entry
    }

    /// Stores `entry` in Redis (while it is worth keeping) and L1, unless either holds a
    /// final entry and `entry` is live; answers the entry kept.
    async fn store(&self, key: &str, entry: Entry) -> Entry {
        let keep_ms = entry.keep_remaining(&self.policy).as_millis().max(1);
        let set = redis::cmd("EVAL")
            .arg(SET_UNLESS_FINAL)
            .arg(1)
            .arg(key)
            .arg(entry.encode().as_ref())
            .arg(u64::try_from(keep_ms).unwrap_or(u64::MAX))
            .arg(u8::from(entry.is_final))
            .arg(VERSION)
            .to_owned();
        // A lost write costs another replica one refresh, nothing more.
        let kept = match self.redis.query::<Option<Vec<u8>>>(&set).await {
            Ok(Some(final_entry)) => Entry::decode(&final_entry).unwrap_or(entry),
            Ok(None) | Err(_) => entry,
        };
        store_unless_final(&self.l1, key, kept).await
    }

    /// One flight: the entry another replica just wrote, or this replica's refresh if it
    /// wins the lock, waits out a winner that does not deliver, or Redis is not answering.
    async fn fill(self: Arc<Self>, key: String, refresh: Refresh) -> Result<Filled> {
        if let Some(entry) = self.fresh_in_redis(&key).await {
            return Ok(Filled {
                entry,
                from_cache: true,
            });
        }
        let lock = lock_key(&key);
        let token = uuid::Uuid::new_v4().to_string();
        let acquire = redis::cmd("SET")
            .arg(&lock)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(self.lock_ttl.as_millis()).unwrap_or(u64::MAX))
            .to_owned();
        let locked = match self.redis.query::<Option<String>>(&acquire).await {
            Ok(answer) => answer.is_some(),
            // No Redis: refresh on our own, coalesced on this replica only.
            Err(_) => false,
        };
        if !locked
            && self.redis.is_up()
            && let Some(entry) = self.wait_for_winner(&key, &lock).await
        {
            return Ok(Filled {
                entry,
                from_cache: true,
            });
        }
        if !locked {
            tracing::debug!(
                redis_up = self.redis.is_up(),
                "refreshing a cache entry without the refresh lock"
            );
        }
        let fetched = refresh.await;
        let entry = match fetched {
            Ok(fetched) => Entry::fetched_now(fetched),
            Err(error) => {
                if locked {
                    // Let another replica try at once rather than after the lock lapses.
                    let release = redis::cmd("EVAL")
                        .arg(RELEASE_LOCK)
                        .arg(1)
                        .arg(&lock)
                        .arg(&token)
                        .to_owned();
                    let _ = self.redis.query::<i64>(&release).await;
                }
                return Err(error);
            }
        };
        // The lock is left to lapse: the fresh entry now answers everyone until then.
        let entry = self.store(&key, entry).await;
        Ok(Filled {
            entry,
            from_cache: false,
        })
    }

    async fn fresh_in_redis(&self, key: &str) -> Option<Entry> {
        let entry = self.read(key).await?;
        (entry.freshness(&self.policy) == Freshness::Fresh).then_some(())?;
        Some(self.remember(key, entry).await)
    }

    /// Waits while another replica holds the lock, for its fresh entry. `None` when the
    /// lock goes or lapses without one, or Redis stops answering: then we refresh.
    async fn wait_for_winner(&self, key: &str, lock: &str) -> Option<Entry> {
        let give_up = tokio::time::Instant::now() + self.lock_ttl;
        while tokio::time::Instant::now() < give_up {
            tokio::time::sleep(LOCK_POLL).await;
            if let Some(entry) = self.fresh_in_redis(key).await {
                return Some(entry);
            }
            match self
                .redis
                .query::<bool>(redis::cmd("EXISTS").arg(lock))
                .await
            {
                Ok(true) => continue,
                Ok(false) => {
                    tracing::debug!("the refresh lock went without a fresh entry");
                    return None;
                }
                Err(_) => return None,
            }
        }
        None
    }
}

/// The refresh lock of `key`; same hash tag, so the same Cluster slot as the entry.
fn lock_key(key: &str) -> String {
    format!("{key}:refresh")
}

impl StatusCache for RedisCache {
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
        async move {
            if let Some(entry) = answered_since(&self.shared.l1, key, not_before_ms).await {
                return Ok(entry.lookup(Outcome::Miss));
            }
            let shared = self.shared.clone();
            let owned_key = key.to_string();
            let flight = self.revalidations.join(key, move || {
                async move {
                    // Checked again inside the flight: a read that finished between the
                    // check above and this join has stored its entry before leaving.
                    if let Some(entry) = answered_since(&shared.l1, &owned_key, not_before_ms).await
                    {
                        return Ok(Filled {
                            entry,
                            from_cache: false,
                        });
                    }
                    let fetched = Entry::fetched_now(refresh.await?);
                    let entry = shared.store(&owned_key, fetched).await;
                    Ok(Filled {
                        entry,
                        from_cache: false,
                    })
                }
                .boxed()
            });
            Ok(flight.await?.entry.lookup(Outcome::Miss))
        }
        .boxed()
    }

    fn put<'a>(&'a self, key: &'a str, fetched: Fetched) -> BoxFuture<'a, ()> {
        async move {
            self.shared.store(key, Entry::fetched_now(fetched)).await;
        }
        .boxed()
    }

    fn invalidate<'a>(&'a self, key: &'a str) -> BoxFuture<'a, ()> {
        async move {
            self.flights.forget(key);
            self.revalidations.forget(key);
            self.shared.l1.invalidate(key).await;
            // Two commands, not one DEL of two keys: keys without a hash tag may sit in
            // different Cluster slots. The lock goes too, so the next lookup refreshes now.
            let redis = &self.shared.redis;
            let _ = redis.query::<i64>(redis::cmd("DEL").arg(key)).await;
            let _ = redis
                .query::<i64>(redis::cmd("DEL").arg(lock_key(key)))
                .await;
        }
        .boxed()
    }
}
