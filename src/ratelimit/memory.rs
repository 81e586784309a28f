//! The in-process limiter: a `governor` GCRA bucket per tenant, class and limit; a
//! tenant's bucket is dropped once it is full again.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::{StateInformationMiddleware, StateSnapshot};
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota, RateLimiter as Governor};

use super::{Class, Decision, Limit, RateLimiter};

/// Tokio's clock, so that tests with paused time move buckets too; outside tests it is
/// the monotonic clock.
#[derive(Debug, Clone)]
struct TokioClock {
    start: tokio::time::Instant,
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.start.elapsed())
    }
}

/// One tenant's GCRA bucket: governor's direct limiter (its state is one atomic).
type Bucket = Governor<NotKeyed, InMemoryState, TokioClock, StateInformationMiddleware>;

/// What a limit's buckets are found by: the limit is part of it, so a bucket never
/// outlives a changed limit (a tenant override is a limit of its own).
type LimitKey = (Class, u64, u32);

struct TenantBucket {
    bucket: Bucket,
    /// When (clock nanos) it was last checked: a bucket left alone for a whole refill
    /// is full, the same as a new one, and can be dropped.
    used_at: AtomicU64,
}

/// The buckets of one class and limit, by tenant. Found under a read lock by the
/// tenant's `&str` (no allocation, no waiting on the other cores); the write lock is
/// taken only for a tenant's first call and for the sweep (docs/BENCHMARKS.md, "What
/// caller rate limits cost").
struct Limited {
    quota: Quota,
    tenants: RwLock<HashMap<String, TenantBucket>>,
    /// When (clock nanos) idle buckets were last dropped.
    swept_at: AtomicU64,
}

/// GCRA buckets in this process, per tenant and class.
#[derive(Clone)]
pub struct MemoryLimiter {
    limits: Arc<RwLock<HashMap<LimitKey, Arc<Limited>>>>,
    clock: TokioClock,
    /// How long a bucket may stay unchecked before it is dropped, and how often that
    /// is looked at: at least the longest time any configured bucket takes to fill up.
    sweep_every: Duration,
}

impl MemoryLimiter {
    /// A limiter that drops the state of tenants whose buckets are full again, looking
    /// every `refill` (the longest time any configured bucket takes to fill up).
    pub fn new(refill: Duration) -> Self {
        Self {
            limits: Arc::default(),
            clock: TokioClock {
                start: tokio::time::Instant::now(),
            },
            sweep_every: refill.max(Duration::from_secs(1)),
        }
    }

    fn limited(&self, class: Class, limit: Limit) -> Option<Arc<Limited>> {
        let key = (class, limit.per_second.to_bits(), limit.burst);
        let read = self.limits.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(limited) = read.get(&key) {
            return Some(limited.clone());
        }
        drop(read);
        let quota =
            Quota::with_period(limit.interval())?.allow_burst(NonZeroU32::new(limit.burst)?);
        let mut write = self.limits.write().unwrap_or_else(PoisonError::into_inner);
        let limited = write.entry(key).or_insert_with(|| {
            Arc::new(Limited {
                quota,
                tenants: RwLock::default(),
                swept_at: AtomicU64::new(0),
            })
        });
        Some(limited.clone())
    }

    /// Counts one call against `tenant`'s bucket of `limited`.
    fn check_bucket(
        &self,
        limited: &Limited,
        tenant: &str,
        now: u64,
    ) -> Result<StateSnapshot, NotUntil<Nanos>> {
        let check = |bucket: &TenantBucket| {
            bucket.used_at.store(now, Ordering::Relaxed);
            bucket.bucket.check()
        };
        let read = limited
            .tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = read.get(tenant) {
            return check(bucket);
        }
        drop(read);
        let mut write = limited
            .tenants
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let bucket = write
            .entry(tenant.to_owned())
            .or_insert_with(|| TenantBucket {
                bucket: Governor::direct_with_clock(limited.quota, self.clock.clone())
                    .with_middleware(),
                used_at: AtomicU64::new(now),
            });
        check(bucket)
    }

    /// Drops buckets left unchecked for `sweep_every` (they are full again) once per
    /// `sweep_every`, so tenants that stopped calling take no memory: one caller's
    /// check pays for the scan.
    fn sweep(&self, limited: &Limited, now: u64) {
        let last = limited.swept_at.load(Ordering::Relaxed);
        let every = u64::try_from(self.sweep_every.as_nanos()).unwrap_or(u64::MAX);
        if now.saturating_sub(last) >= every
            && limited
                .swept_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            limited
                .tenants
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|_, bucket| {
                    now.saturating_sub(bucket.used_at.load(Ordering::Relaxed)) < every
                });
        }
    }

    /// Counts one call against the tenant's bucket: a lookup under a read lock and one
    /// atomic update, never a wait.
    pub(super) fn decide(&self, tenant: &str, class: Class, limit: Limit) -> Decision {
        // Limits are checked when the config is resolved, so every one makes a quota.
        let Some(limited) = self.limited(class, limit) else {
            return Decision::unchecked(limit);
        };
        let interval = limit.interval();
        let now = self.clock.now().as_u64();
        let outcome = self.check_bucket(&limited, tenant, now);
        self.sweep(&limited, now);
        match outcome {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                Decision {
                    admitted: true,
                    limit,
                    remaining,
                    // The bucket is full once the calls it lacks have been earned back
                    // (governor does not expose its TAT; this is at most one interval late).
                    reset: interval * limit.burst.saturating_sub(remaining),
                    retry_after: Duration::ZERO,
                }
            }
            Err(not_until) => {
                let retry_after = not_until.wait_time_from(self.clock.now());
                Decision {
                    admitted: false,
                    limit,
                    remaining: 0,
                    reset: retry_after + interval * limit.burst.saturating_sub(1),
                    retry_after,
                }
            }
        }
    }
}

#[tonic::async_trait]
impl RateLimiter for MemoryLimiter {
    async fn check(&self, tenant: &str, class: Class, limit: Limit) -> Decision {
        self.decide(tenant, class, limit)
    }

    fn check_now(&self, tenant: &str, class: Class, limit: Limit) -> Option<Decision> {
        Some(self.decide(tenant, class, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: f64, burst: u32) -> Limit {
        Limit { per_second, burst }
    }

    /// Admitted calls among `n` checks made at once.
    async fn admitted(
        limiter: &MemoryLimiter,
        tenant: &str,
        class: Class,
        l: Limit,
        n: usize,
    ) -> usize {
        let mut count = 0;
        for _ in 0..n {
            count += usize::from(limiter.check(tenant, class, l).await.admitted);
        }
        count
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_bucket_admits_the_burst_then_the_rate() {
        let limiter = MemoryLimiter::new(Duration::from_secs(1));
        let l = limit(50.0, 10);
        // The burst at once, counting down, then a refusal that says when to retry.
        for expected in (0..10).rev() {
            let d = limiter.check("t", Class::Read, l).await;
            assert!(d.admitted);
            assert_eq!(d.remaining, expected);
        }
        let refused = limiter.check("t", Class::Read, l).await;
        assert!(!refused.admitted);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after, Duration::from_millis(20));
        assert!(
            refused.reset >= Duration::from_millis(200),
            "{:?}",
            refused.reset
        );
        // Every 20 ms one more call; 5 s at 50/s after the burst is 250 calls.
        let mut total = 10;
        for _ in 0..250 {
            tokio::time::advance(Duration::from_millis(20)).await;
            total += admitted(&limiter, "t", Class::Read, l, 3).await;
        }
        assert_eq!(total, 10 + 250);
    }

    #[tokio::test(start_paused = true)]
    async fn tenants_and_classes_have_their_own_buckets() {
        let limiter = MemoryLimiter::new(Duration::from_secs(1));
        let l = limit(1.0, 2);
        assert_eq!(admitted(&limiter, "a", Class::Read, l, 5).await, 2);
        assert_eq!(admitted(&limiter, "b", Class::Read, l, 5).await, 2);
        assert_eq!(admitted(&limiter, "a", Class::Create, l, 5).await, 2);
        // A second later one call is back, and the bucket reports when it is full.
        tokio::time::advance(Duration::from_secs(1)).await;
        let d = limiter.check("a", Class::Read, l).await;
        assert!(d.admitted);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.reset, Duration::from_secs(2));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(admitted(&limiter, "a", Class::Read, l, 5).await, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn tenants_whose_buckets_are_full_again_are_forgotten() {
        let limiter = MemoryLimiter::new(Duration::from_secs(1));
        let l = limit(10.0, 5);
        for tenant in ["a", "b", "c"] {
            assert_eq!(admitted(&limiter, tenant, Class::Read, l, 1).await, 1);
        }
        let limited = limiter.limited(Class::Read, l).expect("a limit");
        assert_eq!(limited.tenants.read().unwrap().len(), 3);
        // Past the sweep interval, with every bucket refilled: the next check sweeps.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(admitted(&limiter, "d", Class::Read, l, 6).await, 5);
        assert_eq!(
            limited.tenants.read().unwrap().len(),
            1,
            "only the busy tenant is kept"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn fractional_rates_wait_whole_intervals() {
        let limiter = MemoryLimiter::new(Duration::from_secs(2));
        let l = limit(0.5, 1);
        assert!(limiter.check("t", Class::Create, l).await.admitted);
        let refused = limiter.check("t", Class::Create, l).await;
        assert!(!refused.admitted);
        assert_eq!(refused.retry_after, Duration::from_secs(2));
        tokio::time::advance(Duration::from_millis(1_999)).await;
        assert!(!limiter.check("t", Class::Create, l).await.admitted);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(limiter.check("t", Class::Create, l).await.admitted);
    }
}
