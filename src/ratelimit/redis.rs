//! The limiter on Redis, shared by every replica: one GCRA script per call on the bucket's
//! own key, timed by Redis's clock; while Redis is away, open or a local share (config).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{Class, Decision, Limit, MemoryLimiter, RateLimiter, RedisDown};
use crate::keys::{ResourceKey, kind};
use crate::shared_redis::SharedRedis;

/// GCRA on one key holding the bucket's theoretical arrival time (TAT), in microseconds
/// of Redis's clock, so replicas with drifting clocks share one timeline. ARGV[1] is the
/// emission interval (µs), ARGV[2] the burst. A call is admitted when the TAT after it
/// is at most `burst` intervals ahead of now. Returns {admitted, remaining after it,
/// retry after (µs), until full (µs)}. The key expires once the bucket is full again.
const GCRA: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = tonumber(ARGV[1])
local capacity = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local ahead = tat + interval - now
if ahead > capacity then
  return {0, 0, math.ceil(ahead - capacity), math.ceil(tat - now)}
end
redis.call('SET', KEYS[1], string.format('%.0f', tat + interval), 'PX', math.ceil(ahead / 1000) + 1)
return {1, math.floor((capacity - ahead) / interval), 0, math.ceil(ahead)}
";

/// The `provider` part of a limiter key: limits are the tenant's, whichever upstream.
const GATEWAY: &str = "gateway";

/// GCRA buckets in Redis, the same for every replica on it.
pub struct RedisLimiter {
    redis: SharedRedis,
    down: RedisDown,
    replicas: u32,
    /// This replica's own buckets, used at its share while Redis is away (`local`).
    local: MemoryLimiter,
    /// Whether the last check fell back, so the switch is logged once each way.
    fell_back: AtomicBool,
}

impl RedisLimiter {
    /// A limiter on `redis`; while it is away, `down` decides, with the rate split over
    /// `replicas`. `refill` bounds how long idle local buckets are kept.
    pub fn new(redis: SharedRedis, down: RedisDown, replicas: u32, refill: Duration) -> Self {
        Self {
            redis,
            down,
            replicas,
            local: MemoryLimiter::new(refill),
            fell_back: AtomicBool::new(false),
        }
    }

    /// The key of `tenant`'s bucket of `class`: the tenant and class are the hash tag.
    pub fn key(tenant: &str, class: Class) -> ResourceKey {
        ResourceKey::new(tenant, GATEWAY, kind::RATELIMIT, class.as_str())
    }

    async fn shared(
        &self,
        tenant: &str,
        class: Class,
        limit: Limit,
    ) -> redis::RedisResult<Decision> {
        let interval_us = 1e6 / limit.per_second;
        let cmd = redis::cmd("EVAL")
            .arg(GCRA)
            .arg(1)
            .arg(Self::key(tenant, class).to_string())
            .arg(interval_us.to_string())
            .arg(limit.burst)
            .to_owned();
        let answer: Vec<i64> = self.redis.query(&cmd).await?;
        let [admitted, remaining, retry_us, reset_us] = answer[..] else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "the rate limit script answered an unexpected shape",
            )));
        };
        let micros = |us: i64| Duration::from_micros(u64::try_from(us).unwrap_or(0));
        Ok(Decision {
            admitted: admitted == 1,
            limit,
            remaining: u32::try_from(remaining).unwrap_or(0),
            reset: micros(reset_us),
            retry_after: micros(retry_us),
        })
    }
}

#[tonic::async_trait]
impl RateLimiter for RedisLimiter {
    async fn check(&self, tenant: &str, class: Class, limit: Limit) -> Decision {
        match self.shared(tenant, class, limit).await {
            Ok(decision) => {
                if self.fell_back.swap(false, Ordering::Relaxed) {
                    tracing::info!("rate limits are shared through Redis again");
                }
                decision
            }
            Err(error) => {
                if !self.fell_back.swap(true, Ordering::Relaxed) {
                    let error = self.redis.describe(&error);
                    match self.down {
                        RedisDown::Open => tracing::warn!(
                            %error,
                            "rate limits cannot reach Redis; calls are admitted unlimited until it is back (rate_limit_redis_down = open)"
                        ),
                        RedisDown::Local => tracing::warn!(
                            %error,
                            replicas = self.replicas,
                            "rate limits cannot reach Redis; each replica limits on its own at rate / rate_limit_replicas until it is back"
                        ),
                    }
                }
                match self.down {
                    RedisDown::Open => Decision::unchecked(limit),
                    RedisDown::Local => {
                        self.local
                            .check(tenant, class, limit.share(self.replicas))
                            .await
                    }
                }
            }
        }
    }
}
