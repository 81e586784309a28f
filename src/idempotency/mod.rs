//! Idempotent creates: a caller's `request_id` maps to the first result for a day, so a
//! retried create never makes a second upstream job. A record store trait; backends beside it.

mod memory;
mod once;
mod redis;

pub use memory::MemoryIdempotency;
pub use once::{Outcome, PENDING_GRACE, create_once};
pub use redis::RedisIdempotency;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::error::Result;
use crate::keys::ResourceKey;
use crate::shared_redis::SharedRedis;

/// A fingerprint of a request's content, to catch a request id reused for other content.
pub fn fingerprint(content: &[u8]) -> String {
    hex::encode(Sha256::digest(content))
}

/// How the create of one request id stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Record {
    /// A create is running. Its creator records how it ended by `until_ms` (Unix
    /// milliseconds) or never will (it died), and then the resource may exist.
    Pending {
        /// When the creator's own bound on the create passes.
        until_ms: u64,
    },
    /// The create made resource `id`.
    Created {
        /// The upstream's id of the created resource.
        id: String,
    },
    /// The create ended without a clear answer: the resource may exist.
    Unknown,
}

/// What a key holds: its record and the fingerprint of the request that claimed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The claiming request's [`fingerprint`].
    pub fingerprint: String,
    /// How its create stands.
    pub record: Record,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key was free and now holds the claimer's entry.
    Claimed,
    /// The key already held this entry; nothing was written.
    Existing(Entry),
}

/// Where idempotency records live, each for the store's TTL. The once-only logic is
/// [`create_once`], shared by every backend; a store only keeps records.
#[tonic::async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Stores `entry` under `key` if the key holds nothing, else returns what it holds
    /// (Redis: one script doing `GET`, then `SET PX` when there was nothing).
    async fn claim(&self, key: &ResourceKey, entry: &Entry) -> Result<Claim>;

    /// Replaces the entry of a key that still holds `claimed` (the entry this caller
    /// claimed it with) by `settled`, keeping its expiry; else does nothing, so a late
    /// settle never overwrites a newer claim (Redis: compare, then `SET KEEPTTL`).
    async fn settle(&self, key: &ResourceKey, claimed: &Entry, settled: &Entry) -> Result<()>;

    /// Forgets `key` if it still holds `claimed`, so that its request id can be used
    /// again; a late release never frees a newer claim (Redis: compare, then `DEL`).
    async fn release(&self, key: &ResourceKey, claimed: &Entry) -> Result<()>;

    /// Returns once `key` holds no `Pending` record: settled, released or expired.
    /// Callers bound the wait (Redis: polls `GET`).
    async fn wait_settled(&self, key: &ResourceKey) -> Result<()>;
}

/// The idempotency store `config` asks for: on `redis` when there is one (shared by
/// every replica, failing closed while Redis is away), else in this process.
pub fn store(config: &Config, redis: Option<&SharedRedis>) -> Arc<dyn IdempotencyStore> {
    // One entry per keyed create within the TTL. This bounds correctness too: a record
    // evicted for room lets a retry of its request_id create again (README, Configuration).
    const MAX_ENTRIES: u64 = 1_000_000;
    match redis {
        Some(redis) => Arc::new(RedisIdempotency::new(redis.clone(), config.idempotency_ttl)),
        None => Arc::new(MemoryIdempotency::new(config.idempotency_ttl, MAX_ENTRIES)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_data_that_round_trip() {
        for record in [
            Record::Pending { until_ms: 42 },
            Record::Created { id: "job-1".into() },
            Record::Unknown,
        ] {
            let entry = Entry {
                fingerprint: fingerprint(b"content"),
                record,
            };
            let json = serde_json::to_string(&entry).unwrap();
            assert_eq!(serde_json::from_str::<Entry>(&json).unwrap(), entry);
        }
        let created = Entry {
            fingerprint: "fp".into(),
            record: Record::Created { id: "b-1".into() },
        };
        assert_eq!(
            serde_json::to_string(&created).unwrap(),
            r#"{"fingerprint":"fp","record":{"state":"created","id":"b-1"}}"#
        );
    }
}
