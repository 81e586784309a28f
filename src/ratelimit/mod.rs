//! Caller rate limits: GCRA per tenant and method class, and a cap on open streams per
//! tenant. A limiter trait with `memory` (governor) and `redis` (one Lua script) backends.

mod class;
mod future;
mod layer;
mod memory;
mod policy;
mod redis;
mod streams;

pub use class::{Class, Method, Service, classify};
pub use future::RateLimitFuture;
pub use layer::{RateLimitLayer, RateLimitService};
pub use memory::MemoryLimiter;
pub use policy::{ClassSettings, Limit, LimitSetting, RateLimits, RedisDown};
pub use redis::RedisLimiter;
pub use streams::{StreamGuard, Streams};

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

use crate::config::Config;
use crate::shared_redis::SharedRedis;

/// The answer to one call's check against one limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Whether the call may go ahead.
    pub admitted: bool,
    /// The limit it was checked against.
    pub limit: Limit,
    /// Calls that would be admitted right now, after this one.
    pub remaining: u32,
    /// Time until the bucket is full again (every call of the burst available).
    pub reset: Duration,
    /// For a refused call: the wait until one call would be admitted.
    pub retry_after: Duration,
}

impl Decision {
    /// The decision of a limiter that could not look (Redis away, `open` mode): admitted,
    /// and reported as an untouched bucket.
    pub fn unchecked(limit: Limit) -> Decision {
        Decision {
            admitted: true,
            limit,
            remaining: limit.burst,
            reset: Duration::ZERO,
            retry_after: Duration::ZERO,
        }
    }

    /// Adds Envoy's `x-ratelimit-limit`, `x-ratelimit-remaining` and `x-ratelimit-reset`
    /// (whole seconds until the bucket is full, rounded up) to response headers.
    pub fn annotate(&self, headers: &mut HeaderMap) {
        if let Some(limit) = limit_header(self.limit) {
            headers.insert(X_RATELIMIT_LIMIT, limit);
        }
        // Indexed like any header: these values mostly repeat (a bucket in use is
        // rarely far from full or empty), and never-indexed would send both names as
        // literals in every answer (docs/BENCHMARKS.md, "What caller rate limits cost").
        headers.insert(X_RATELIMIT_REMAINING, HeaderValue::from(self.remaining));
        headers.insert(X_RATELIMIT_RESET, HeaderValue::from(ceil_secs(self.reset)));
    }
}

// Names made once: a name given as a string is parsed and checked on every insert.
const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// `limit`'s `x-ratelimit-limit` value. Kept per thread for the last limit rendered: a
/// gateway has few limits, and formatting the rate (an f64) on every call cost more than
/// the bucket check itself.
fn limit_header(limit: Limit) -> Option<HeaderValue> {
    thread_local! {
        static LAST: RefCell<Option<(Limit, HeaderValue)>> = const { RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((rendered, value)) if *rendered == limit => Some(value.clone()),
        _ => {
            let value = HeaderValue::from_str(&limit.header()).ok()?;
            *last = Some((limit, value.clone()));
            Some(value)
        }
    })
}

fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// Where GCRA buckets live. A check never fails: a backend in trouble decides by its
/// own fallback (see [`RedisDown`]) rather than failing the caller's call.
#[tonic::async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one call of `tenant` in `class` against `limit`, if it is admitted.
    async fn check(&self, tenant: &str, class: Class, limit: Limit) -> Decision;

    /// The same check, when this limiter can make it without waiting (its state is in
    /// this process); `None` when it has to ask elsewhere, and nothing was counted.
    fn check_now(&self, _tenant: &str, _class: Class, _limit: Limit) -> Option<Decision> {
        None
    }
}

/// The limiter `config` asks for: on `redis` when there is one (shared by every
/// replica), else in this process. `None` when no rate limit is configured.
pub fn limiter(config: &Config, redis: Option<&SharedRedis>) -> Option<Arc<dyn RateLimiter>> {
    let limits = &config.rate_limits;
    if !limits.any_rate() {
        return None;
    }
    let idle = limits.longest_refill();
    Some(match redis {
        Some(redis) => Arc::new(RedisLimiter::new(
            redis.clone(),
            limits.redis_down,
            limits.replicas,
            idle,
        )),
        None => Arc::new(MemoryLimiter::new(idle)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_render_envoys_headers() {
        let decision = Decision {
            admitted: true,
            limit: Limit {
                per_second: 50.0,
                burst: 10,
            },
            remaining: 7,
            reset: Duration::from_millis(60),
            retry_after: Duration::ZERO,
        };
        let mut headers = HeaderMap::new();
        decision.annotate(&mut headers);
        assert_eq!(headers["x-ratelimit-limit"], "50, 50;w=1;burst=10");
        assert_eq!(headers["x-ratelimit-remaining"], "7");
        assert_eq!(headers["x-ratelimit-reset"], "1");
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
    }
}
