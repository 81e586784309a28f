//! The in-process idempotency store: a moka cache with a TTL, whose `try_get_with`
//! coalesces concurrent creates for one key into a single evaluation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use moka::future::Cache;

use super::{IdempotencyStore, Outcome};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
struct Entry {
    fingerprint: String,
    id: String,
}

/// Request ids remembered in this process for `ttl`.
#[derive(Clone)]
pub struct MemoryIdempotency {
    cache: Cache<String, Entry>,
}

impl MemoryIdempotency {
    /// A store that remembers each key for `ttl`, holding at most `capacity` keys.
    pub fn new(ttl: Duration, capacity: u64) -> Self {
        Self {
            cache: Cache::builder()
                .time_to_live(ttl)
                .max_capacity(capacity)
                .build(),
        }
    }
}

#[tonic::async_trait]
impl IdempotencyStore for MemoryIdempotency {
    async fn run_once(
        &self,
        key: String,
        fingerprint: String,
        create: BoxFuture<'static, Result<String>>,
    ) -> Result<Outcome> {
        let created_here = Arc::new(AtomicBool::new(false));
        let flag = created_here.clone();
        let first_fingerprint = fingerprint.clone();
        let entry = self
            .cache
            .try_get_with(key, async move {
                flag.store(true, Ordering::SeqCst);
                let id = create.await?;
                Ok::<_, Error>(Entry {
                    fingerprint: first_fingerprint,
                    id,
                })
            })
            .await
            .map_err(|shared: Arc<Error>| (*shared).clone())?;
        if entry.fingerprint != fingerprint {
            return Err(Error::FailedPrecondition(
                "request_id was already used for a different request; use a new request_id".into(),
            ));
        }
        Ok(Outcome {
            id: entry.id,
            replayed: !created_here.load(Ordering::SeqCst),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn counting_create(counter: Arc<AtomicUsize>, id: &str) -> BoxFuture<'static, Result<String>> {
        let id = id.to_owned();
        Box::pin(async move {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(id)
        })
    }

    #[tokio::test]
    async fn racing_creates_with_one_key_create_once() {
        let store = MemoryIdempotency::new(Duration::from_secs(60), 100);
        let creates = Arc::new(AtomicUsize::new(0));
        let calls = (0..8).map(|i| {
            let store = store.clone();
            let creates = creates.clone();
            async move {
                store
                    .run_once(
                        "t:k".into(),
                        "fp".into(),
                        counting_create(creates, &format!("job-{i}")),
                    )
                    .await
            }
        });
        let outcomes = futures_util::future::join_all(calls).await;
        assert_eq!(creates.load(Ordering::SeqCst), 1);
        let ids: std::collections::HashSet<_> = outcomes
            .iter()
            .map(|o| o.as_ref().unwrap().id.clone())
            .collect();
        assert_eq!(ids.len(), 1);
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| !o.as_ref().unwrap().replayed)
                .count(),
            1
        );
    }

    #[tokio::test]
    async fn failures_are_not_remembered_and_reuse_with_other_content_is_refused() {
        let store = MemoryIdempotency::new(Duration::from_secs(60), 100);
        let failed = store
            .run_once(
                "k".into(),
                "fp".into(),
                Box::pin(async { Err(Error::Unavailable("down".into())) }),
            )
            .await;
        assert!(failed.is_err());
        let creates = Arc::new(AtomicUsize::new(0));
        let ok = store
            .run_once(
                "k".into(),
                "fp".into(),
                counting_create(creates.clone(), "job-1"),
            )
            .await
            .unwrap();
        assert_eq!(
            ok,
            Outcome {
                id: "job-1".into(),
                replayed: false
            }
        );
        let other = store
            .run_once(
                "k".into(),
                "other".into(),
                counting_create(creates.clone(), "job-2"),
            )
            .await
            .unwrap_err();
        assert_eq!(other.code(), tonic::Code::FailedPrecondition);
        assert_eq!(creates.load(Ordering::SeqCst), 1);
    }
}
