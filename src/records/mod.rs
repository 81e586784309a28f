//! What the gateway remembers of the resources it created, beyond what the upstream
//! keeps: a Sutro job's id column, which Sutro's job object does not name.

mod memory;
mod redis;

pub use memory::MemoryRecords;
pub use redis::RedisRecords;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::keys::ResourceKey;
use crate::shared_redis::SharedRedis;

/// The gateway's own notes on one job it created.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The `id_column_name` the job was created with.
    pub id_column_name: Option<String>,
}

impl JobRecord {
    /// Whether there is anything worth keeping.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// Where job records are kept. One trait; backends beside it.
#[tonic::async_trait]
pub trait RecordStore: Send + Sync + 'static {
    /// Keeps `record` under `key`, replacing what was there.
    async fn put(&self, key: &ResourceKey, record: JobRecord) -> Result<()>;
    /// The record under `key`, if one is kept.
    async fn get(&self, key: &ResourceKey) -> Result<Option<JobRecord>>;
}

/// The record store to use: on `redis` when there is one (so any replica finds what
/// another created), else in this process; each record is kept for `ttl`.
pub fn store(redis: Option<&SharedRedis>, ttl: Duration) -> Arc<dyn RecordStore> {
    // One small record per created job within the TTL: this bounds memory only.
    const MAX_RECORDS: u64 = 1_000_000;
    match redis {
        Some(redis) => Arc::new(RedisRecords::new(redis.clone(), ttl)),
        None => Arc::new(MemoryRecords::new(ttl, MAX_RECORDS)),
    }
}
