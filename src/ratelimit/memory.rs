//! The in-process limiter: one `governor` GCRA bucket per tenant, class and limit, kept
//! while in use and forgotten once idle long enough to be full again.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter as Governor};
use moka::future::Cache;

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

type Bucket = Governor<NotKeyed, InMemoryState, TokioClock, StateInformationMiddleware>;

/// A bucket's key: the limit is part of it, so a bucket never outlives a changed limit.
type Key = (String, Class, u64, u32);

/// GCRA buckets in this process, per tenant and class.
#[derive(Clone)]
pub struct MemoryLimiter {
    buckets: Cache<Key, Arc<Bucket>>,
    clock: TokioClock,
}

impl MemoryLimiter {
    /// A limiter whose idle buckets are dropped after `refill` (the longest time any
    /// configured bucket takes to fill up; a bucket idle that long is full anyway).
    pub fn new(refill: Duration) -> Self {
        // Tenants are hashes of whatever keys callers send: bound the memory they take.
        const MAX_BUCKETS: u64 = 100_000;
        Self {
            buckets: Cache::builder()
                .time_to_idle(refill + Duration::from_secs(1))
                .max_capacity(MAX_BUCKETS)
                .build(),
            clock: TokioClock {
                start: tokio::time::Instant::now(),
            },
        }
    }

    fn bucket(&self, limit: Limit) -> Option<Bucket> {
        let quota =
            Quota::with_period(limit.interval())?.allow_burst(NonZeroU32::new(limit.burst)?);
        Some(Governor::direct_with_clock(quota, self.clock.clone()).with_middleware())
    }
}

#[tonic::async_trait]
impl RateLimiter for MemoryLimiter {
    async fn check(&self, tenant: &str, class: Class, limit: Limit) -> Decision {
        let key = (
            tenant.to_owned(),
            class,
            limit.per_second.to_bits(),
            limit.burst,
        );
        let bucket = self
            .buckets
            .optionally_get_with(key, async { self.bucket(limit).map(Arc::new) })
            .await;
        // Limits are checked when the config is resolved, so every one makes a quota.
        let Some(bucket) = bucket else {
            return Decision::unchecked(limit);
        };
        let interval = limit.interval();
        match bucket.check() {
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
