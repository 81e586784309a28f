//! Idempotent creates: a caller's `request_id` maps to the first result for a day, so a
//! retried create never makes a second upstream job. One trait; backends beside it.

mod memory;

pub use memory::MemoryIdempotency;

use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};

use crate::deadline::Deadline;
use crate::error::{Error, Result, UpstreamId};

/// A fingerprint of a request's content, to catch a request id reused for other content.
pub fn fingerprint(content: &[u8]) -> String {
    hex::encode(Sha256::digest(content))
}

/// What a create with a request id resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The id of the resource the first call created.
    pub id: String,
    /// True when this call replayed an earlier one instead of creating.
    pub replayed: bool,
}

/// Runs a keyed create through `store`, the caller waiting until `deadline`. The
/// create itself is bounded by its own context (the services give it the configured
/// upstream bound, not the caller's deadline) and runs on after the caller gives up,
/// so that a retry with the same request id learns how it ended.
pub async fn create_once(
    store: &dyn IdempotencyStore,
    key: String,
    fingerprint: String,
    deadline: Deadline,
    upstream: &UpstreamId,
    create: BoxFuture<'static, Result<String>>,
) -> Result<Outcome> {
    tokio::time::timeout_at(deadline.at(), store.run_once(key, fingerprint, create))
        .await
        .unwrap_or_else(|_| {
            Err(Error::DeadlineExceeded {
                upstream: Some(upstream.clone()),
            })
        })
}

/// Runs a create at most once per key.
#[tonic::async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Runs `create` unless `key` was seen; concurrent calls with the same key wait for
    /// the first and share its result. `fingerprint` identifies the request's content:
    /// reusing a key for different content is FAILED_PRECONDITION. Failed creates are
    /// not remembered, so they can be retried.
    async fn run_once(
        &self,
        key: String,
        fingerprint: String,
        create: BoxFuture<'static, Result<String>>,
    ) -> Result<Outcome>;
}
