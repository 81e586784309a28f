//! Job records on Redis, so every replica knows what any replica created: one key per
//! resource holding its JSON record, each written with the store's TTL.

use std::time::Duration;

use super::{JobRecord, RecordStore};
use crate::error::{Error, Result};
use crate::keys::ResourceKey;
use crate::shared_redis::SharedRedis;

/// Job records kept in Redis for `ttl`.
#[derive(Clone, Debug)]
pub struct RedisRecords {
    redis: SharedRedis,
    ttl: Duration,
}

impl RedisRecords {
    /// A store on `redis` keeping each record for `ttl` after it was last written.
    pub fn new(redis: SharedRedis, ttl: Duration) -> Self {
        Self { redis, ttl }
    }

    fn unreachable(&self, error: &redis::RedisError) -> Error {
        Error::Unavailable(format!(
            "the record store (Redis) is unreachable: {}",
            self.redis.describe(error)
        ))
    }
}

#[tonic::async_trait]
impl RecordStore for RedisRecords {
    async fn put(&self, key: &ResourceKey, record: JobRecord) -> Result<()> {
        let json = serde_json::to_string(&record)
            .map_err(|e| Error::Internal(format!("cannot encode a job record: {e}")))?;
        // Redis refuses a zero expiry; a TTL under a millisecond is no TTL anyway.
        let ttl_ms = self.ttl.as_millis().max(1).to_string();
        let set = redis::cmd("SET")
            .arg(key.to_string())
            .arg(json)
            .arg("PX")
            .arg(ttl_ms)
            .to_owned();
        self.redis
            .query::<()>(&set)
            .await
            .map_err(|e| self.unreachable(&e))
    }

    async fn get(&self, key: &ResourceKey) -> Result<Option<JobRecord>> {
        let held: Option<String> = self
            .redis
            .query(redis::cmd("GET").arg(key.to_string()))
            .await
            .map_err(|e| self.unreachable(&e))?;
        held.map(|json| {
            serde_json::from_str(&json)
                .map_err(|e| Error::Internal(format!("a stored job record is unreadable: {e}")))
        })
        .transpose()
    }
}
