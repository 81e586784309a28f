//! The in-process idempotency store: a moka cache with a TTL holding, per key, the one
//! create that runs for it (detached, so a caller that leaves cannot cancel it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use moka::future::Cache;
use moka::ops::compute::Op;

use super::{IdempotencyStore, Outcome};
use crate::error::{Error, Result};

/// The create of one key: its content's fingerprint and its (shared) result.
#[derive(Clone)]
struct Slot {
    /// Tells this slot from a later one under the same key.
    serial: u64,
    fingerprint: String,
    result: Shared<BoxFuture<'static, Result<String>>>,
}

/// Request ids remembered in this process for `ttl`.
#[derive(Clone)]
pub struct MemoryIdempotency {
    cache: Cache<String, Slot>,
    serials: Arc<std::sync::atomic::AtomicU64>,
}

impl MemoryIdempotency {
    /// A store that remembers each key for `ttl`, holding at most `capacity` keys.
    pub fn new(ttl: Duration, capacity: u64) -> Self {
        Self {
            cache: Cache::builder()
                .time_to_live(ttl)
                .max_capacity(capacity)
                .build(),
            serials: Arc::default(),
        }
    }

    /// Starts `create` on its own task. A create that certainly did not happen (the
    /// upstream refused it, or it never left) frees its key so the caller can retry
    /// with the same request id; any other outcome stays, successes and doubts alike.
    fn start(
        &self,
        key: String,
        fingerprint: String,
        create: BoxFuture<'static, Result<String>>,
    ) -> Slot {
        let serial = self.serials.fetch_add(1, Ordering::Relaxed);
        let cache = self.cache.clone();
        let task = tokio::spawn(async move {
            let result = create.await;
            if let Err(error) = &result
                && !error.outcome_unknown()
            {
                cache
                    .entry(key)
                    .and_compute_with(|slot| async move {
                        match slot {
                            Some(slot) if slot.value().serial == serial => Op::Remove,
                            _ => Op::Nop,
                        }
                    })
                    .await;
            }
            result
        });
        let result = async move {
            task.await
                .unwrap_or_else(|e| Err(Error::Internal(format!("the create task failed: {e}"))))
        };
        Slot {
            serial,
            fingerprint,
            result: result.boxed().shared(),
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
        let created_here = AtomicBool::new(false);
        let slot = self
            .cache
            .get_with(key.clone(), async {
                created_here.store(true, Ordering::SeqCst);
                self.start(key, fingerprint.clone(), create)
            })
            .await;
        if slot.fingerprint != fingerprint {
            return Err(Error::FailedPrecondition(
                "request_id was already used for a different request; use a new request_id".into(),
            ));
        }
        let replayed = !created_here.load(Ordering::SeqCst);
        match slot.result.await {
            Ok(id) => Ok(Outcome { id, replayed }),
            // The first call was told what happened; a retry learns that the create
            // may exist, so that it does not make a second one under a new id unawares.
            Err(error) if replayed && error.outcome_unknown() => {
                Err(Error::FailedPrecondition(format!(
                    "an earlier create with this request_id ended without a clear answer ({error}); it may \
                 have been created upstream: list to check before creating again with a new request_id"
                )))
            }
            Err(error) => Err(error),
        }
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

    fn failing_create(
        counter: Arc<AtomicUsize>,
        error: Error,
    ) -> BoxFuture<'static, Result<String>> {
        Box::pin(async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Err(error)
        })
    }

    #[tokio::test]
    async fn a_create_that_may_have_happened_is_never_run_again() {
        let store = MemoryIdempotency::new(Duration::from_secs(60), 100);
        let creates = Arc::new(AtomicUsize::new(0));
        let lost_answer = Error::DeadlineExceeded {
            upstream: Some(crate::error::UpstreamId {
                provider: "sutro",
                host: "h".into(),
            }),
        };
        let first = store
            .run_once(
                "t:k".into(),
                "fp".into(),
                failing_create(creates.clone(), lost_answer),
            )
            .await
            .unwrap_err();
        assert_eq!(first.code(), tonic::Code::DeadlineExceeded);
        let retry = store
            .run_once(
                "t:k".into(),
                "fp".into(),
                counting_create(creates.clone(), "job-2"),
            )
            .await
            .unwrap_err();
        assert_eq!(retry.code(), tonic::Code::FailedPrecondition, "{retry}");
        assert!(retry.to_string().contains("may"), "{retry}");
        assert_eq!(creates.load(Ordering::SeqCst), 1, "no second create");
    }

    #[tokio::test]
    async fn a_caller_that_leaves_does_not_cancel_the_create() {
        let store = MemoryIdempotency::new(Duration::from_secs(60), 100);
        let creates = Arc::new(AtomicUsize::new(0));
        let leaving = store.run_once(
            "t:k".into(),
            "fp".into(),
            counting_create(creates.clone(), "job-1"),
        );
        // The caller gives up long before the 50 ms create is done.
        assert!(
            tokio::time::timeout(Duration::from_millis(5), leaving)
                .await
                .is_err()
        );
        let retry = store
            .run_once(
                "t:k".into(),
                "fp".into(),
                counting_create(creates.clone(), "job-2"),
            )
            .await
            .unwrap();
        assert_eq!(
            retry,
            Outcome {
                id: "job-1".into(),
                replayed: true
            }
        );
        assert_eq!(creates.load(Ordering::SeqCst), 1);
    }
}
