//! The idempotency store on Redis, shared by every replica: one key per request id holding
//! its JSON entry; each operation is one command or script on that key, so Cluster works.

use std::time::Duration;

use redis::RedisError;

use super::{Claim, Entry, IdempotencyStore, Record};
use crate::error::{Error, Result};
use crate::keys::ResourceKey;
use crate::shared_redis::SharedRedis;

/// Returns what the key holds, or stores ARGV[1] for ARGV[2] ms and returns nil. One
/// script rather than `SET NX` then `GET`: a key expiring between the two would
/// otherwise read as nothing, neither claimed nor held.
const CLAIM: &str = r"
local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
";

/// Replaces the entry by ARGV[2], keeping its expiry, only while it is still ARGV[1]
/// (the caller's claim): a settle that comes too late never overwrites a newer claim.
const SETTLE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return 1
end
return 0
";

/// Deletes the key only while it still holds ARGV[1] (the caller's claim).
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// How often a waiter first looks at a pending key, and how far the interval grows:
/// creates usually end within a second, and many waiters must not hammer Redis.
const FIRST_POLL: Duration = Duration::from_millis(25);
const MAX_POLL: Duration = Duration::from_millis(250);

/// Request ids remembered in Redis for `ttl`, the same for every replica on it.
#[derive(Clone, Debug)]
pub struct RedisIdempotency {
    redis: SharedRedis,
    ttl: Duration,
}

impl RedisIdempotency {
    /// A store on `redis` that remembers each request id for `ttl`.
    pub fn new(redis: SharedRedis, ttl: Duration) -> Self {
        Self { redis, ttl }
    }

    /// Why a keyed create cannot go ahead: the caller must learn it is not their fault,
    /// and how to get on (later, or without the once-only promise).
    fn unreachable(&self, error: &RedisError) -> Error {
        Error::Unavailable(format!(
            "the idempotency store (Redis) is unreachable ({}), so a create with \
             request_id cannot be guaranteed to run once; retry later, or send no request_id",
            self.redis.describe(error)
        ))
    }

    async fn eval(&self, script: &str, key: &ResourceKey, args: &[&str]) -> Result<i64> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script).arg(1).arg(key.to_string());
        for arg in args {
            cmd.arg(*arg);
        }
        self.redis
            .query::<i64>(&cmd)
            .await
            .map_err(|e| self.unreachable(&e))
    }

    async fn get(&self, key: &ResourceKey) -> Result<Option<Entry>> {
        let held: Option<String> = self
            .redis
            .query(redis::cmd("GET").arg(key.to_string()))
            .await
            .map_err(|e| self.unreachable(&e))?;
        held.map(|json| parse(&json)).transpose()
    }
}

#[tonic::async_trait]
impl IdempotencyStore for RedisIdempotency {
    async fn claim(&self, key: &ResourceKey, entry: &Entry) -> Result<Claim> {
        let json = to_json(entry)?;
        // Redis refuses a zero expiry; a TTL under a millisecond is no TTL anyway.
        let ttl_ms = self.ttl.as_millis().max(1).to_string();
        let cmd = redis::cmd("EVAL")
            .arg(CLAIM)
            .arg(1)
            .arg(key.to_string())
            .arg(&json)
            .arg(&ttl_ms)
            .to_owned();
        let held: Option<String> = self
            .redis
            .query(&cmd)
            .await
            .map_err(|e| self.unreachable(&e))?;
        match held {
            None => Ok(Claim::Claimed),
            Some(held) => parse(&held).map(Claim::Existing),
        }
    }

    async fn settle(&self, key: &ResourceKey, claimed: &Entry, settled: &Entry) -> Result<()> {
        let (claimed, settled) = (to_json(claimed)?, to_json(settled)?);
        self.eval(SETTLE, key, &[&claimed, &settled]).await?;
        Ok(())
    }

    async fn release(&self, key: &ResourceKey, claimed: &Entry) -> Result<()> {
        let claimed = to_json(claimed)?;
        self.eval(RELEASE, key, &[&claimed]).await?;
        Ok(())
    }

    async fn wait_settled(&self, key: &ResourceKey) -> Result<()> {
        // Polling, not pub/sub: a settle is one write, and a lost notification would
        // strand a waiter until its deadline; the caller bounds this loop.
        let mut interval = FIRST_POLL;
        loop {
            match self.get(key).await? {
                Some(Entry {
                    record: Record::Pending { .. },
                    ..
                }) => {}
                _ => return Ok(()),
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 3 / 2).min(MAX_POLL);
        }
    }
}

fn to_json(entry: &Entry) -> Result<String> {
    serde_json::to_string(entry)
        .map_err(|e| Error::Internal(format!("cannot encode an idempotency entry: {e}")))
}

/// A held entry; one that does not parse (another version's format, a stray write)
/// stops the create rather than risking a second one.
fn parse(json: &str) -> Result<Entry> {
    serde_json::from_str(json).map_err(|e| {
        Error::Internal(format!(
            "the idempotency record of this request_id is unreadable ({e}); \
             use a new request_id"
        ))
    })
}
