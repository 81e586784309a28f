//! The once-only create every backend shares: claim the request id, run the create
//! detached, record how it ended; a caller that finds the id claimed waits for that record.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::Instrument;

use super::{Claim, Entry, IdempotencyStore, Record};
use crate::deadline::Deadline;
use crate::error::{Error, Result, UpstreamId};
use crate::keys::ResourceKey;

/// What a create with a request id resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<R> {
    /// This call ran the create, which made `id` and answered `reply`.
    Created {
        /// The id of the created resource.
        id: String,
        /// What the create returned beside the id (e.g. the upstream's reply).
        reply: R,
    },
    /// An earlier call with the same request id made `id`; nothing was sent upstream.
    Replayed {
        /// The id of the resource the earlier call created.
        id: String,
    },
}

impl<R> Outcome<R> {
    /// The id of the resource, created now or before.
    pub fn id(&self) -> &str {
        match self {
            Outcome::Created { id, .. } | Outcome::Replayed { id } => id,
        }
    }
}

/// Time a `Pending` record is given past its creator's bound before the creator counts
/// as gone: replicas' clocks differ a little, and recording the end takes a moment.
pub const PENDING_GRACE: Duration = Duration::from_secs(2);

/// Runs `create` at most once per `key`, the caller waiting until `deadline`.
///
/// Claim, create and record run as one task, the create bounded by its own context
/// (`create_bound`, not the caller's deadline), so a caller that gives up, even
/// mid-claim, cannot cut a claim off from its create or release, and a retry
/// learns how it ended: `Created` is replayed; a create that certainly did not happen
/// frees the key for a retry; one whose outcome is unknown, or whose creator never
/// reported, is FAILED_PRECONDITION "may exist" from then on, never a second create.
/// `fingerprint` identifies the request's content: reusing a key for different
/// content is FAILED_PRECONDITION. A store that cannot be reached fails the call with
/// its error (UNAVAILABLE, saying why) before anything runs: once-only fails closed.
pub async fn create_once<R, Fut>(
    store: &Arc<dyn IdempotencyStore>,
    key: ResourceKey,
    fingerprint: String,
    deadline: Deadline,
    create_bound: Duration,
    upstream: &UpstreamId,
    create: Fut,
) -> Result<Outcome<R>>
where
    R: Send + 'static,
    Fut: Future<Output = Result<(String, R)>> + Send + 'static,
{
    let once = resolve(store, key, fingerprint, create_bound, create);
    tokio::time::timeout_at(deadline.at(), once)
        .await
        .unwrap_or_else(|_| {
            Err(Error::DeadlineExceeded {
                upstream: Some(upstream.clone()),
            })
        })
}

async fn resolve<R, Fut>(
    store: &Arc<dyn IdempotencyStore>,
    key: ResourceKey,
    fingerprint: String,
    create_bound: Duration,
    create: Fut,
) -> Result<Outcome<R>>
where
    R: Send + 'static,
    Fut: Future<Output = Result<(String, R)>> + Send + 'static,
{
    let mut create = create;
    loop {
        let pending = Entry {
            fingerprint: fingerprint.clone(),
            record: Record::Pending {
                until_ms: unix_ms().saturating_add(millis(create_bound)),
            },
        };
        // Claim, create and settle run as one detached task that this caller only
        // awaits: a caller cut off by its deadline anywhere in between (even after the
        // claim reached the store) never leaves a claim without its create or release.
        // In the caller's trace, though it may outlive the caller.
        let attempt = tokio::spawn(
            claim_then_create(store.clone(), key.clone(), pending, create)
                .instrument(crate::telemetry::detached_span("keyed create")),
        );
        let existing = match attempt
            .await
            .map_err(|e| Error::Internal(format!("the create task failed: {e}")))??
        {
            Attempt::Created((id, reply)) => return Ok(Outcome::Created { id, reply }),
            Attempt::Existing(entry, unused) => {
                create = unused;
                entry
            }
        };
        if existing.fingerprint != fingerprint {
            return Err(Error::FailedPrecondition(
                "request_id was already used for a different request; use a new request_id".into(),
            ));
        }
        match existing.record {
            Record::Created { id } => return Ok(Outcome::Replayed { id }),
            Record::Unknown => return Err(may_exist("ended without a clear answer")),
            Record::Pending { until_ms } => {
                let gone_at = until_ms.saturating_add(millis(PENDING_GRACE));
                let left = Duration::from_millis(gone_at.saturating_sub(unix_ms()));
                if left.is_zero() {
                    return Err(may_exist("never said how it ended"));
                }
                // Settled, released or expired: the next claim says which.
                tokio::time::timeout(left, store.wait_settled(&key))
                    .await
                    .map_err(|_| may_exist("never said how it ended"))??;
            }
        }
    }
}

/// What one claim led to: this caller's create ran (and how it ended), or the key held
/// another's entry, and the create, not run, comes back for the next attempt.
enum Attempt<R, Fut> {
    Created((String, R)),
    Existing(Entry, Fut),
}

/// Claims `key` with `pending`; if claimed, runs `create` and records how it ended.
async fn claim_then_create<R, Fut>(
    store: Arc<dyn IdempotencyStore>,
    key: ResourceKey,
    pending: Entry,
    create: Fut,
) -> Result<Attempt<R, Fut>>
where
    Fut: Future<Output = Result<(String, R)>>,
{
    match store.claim(&key, &pending).await {
        // Only a key that was released is claimed again, and a release means the
        // create certainly did not run; ours is still here.
        Ok(Claim::Claimed) => Ok(Attempt::Created(
            run_and_record(store, key, pending, create).await?,
        )),
        Ok(Claim::Existing(entry)) => Ok(Attempt::Existing(entry, create)),
        Err(error) => {
            // Fail closed: without the store, once-only cannot be promised, so the
            // create does not run. The claim may have landed with its answer lost;
            // take back exactly ours, or its request_id reads "may exist" for a day.
            tokio::spawn(release(store, key, pending));
            Err(error)
        }
    }
}

/// Releases `claimed`, retrying a few times with backoff: a claim left behind reads
/// "may exist" until it expires.
async fn release(store: Arc<dyn IdempotencyStore>, key: ResourceKey, claimed: Entry) -> Result<()> {
    const ATTEMPTS: u32 = 4;
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match store.release(&key, &claimed).await {
            Ok(()) => return Ok(()),
            Err(error) if attempt >= ATTEMPTS => return Err(error),
            Err(error) => {
                tracing::debug!(%error, %key, attempt, "could not release a keyed create's claim; retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
                attempt += 1;
            }
        }
    }
}

/// Runs a claimed create and records how it ended, in place of its `claimed` entry.
async fn run_and_record<R, Fut>(
    store: Arc<dyn IdempotencyStore>,
    key: ResourceKey,
    claimed: Entry,
    create: Fut,
) -> Result<(String, R)>
where
    Fut: Future<Output = Result<(String, R)>>,
{
    let result = create.await;
    let record = match &result {
        Ok((id, _)) => Some(Record::Created { id: id.clone() }),
        Err(error) if error.outcome_unknown() => Some(Record::Unknown),
        // The upstream refused it, or it never left: free the key for a retry.
        Err(_) => None,
    };
    let recorded = match record {
        Some(record) => {
            let settled = Entry {
                fingerprint: claimed.fingerprint.clone(),
                record,
            };
            store.settle(&key, &claimed, &settled).await
        }
        None => release(store.clone(), key.clone(), claimed.clone()).await,
    };
    if let Err(error) = recorded {
        // The key stays Pending, which turns into "may exist": never a second create.
        tracing::warn!(%error, %key, "could not record how a keyed create ended");
    }
    result
}

/// The answer to a retry whose earlier create may have made a resource, so that it
/// does not make a second one under a new id unawares.
fn may_exist(how: &str) -> Error {
    Error::FailedPrecondition(format!(
        "an earlier create with this request_id {how}; it may have been created upstream: \
         list to check before creating again with a new request_id"
    ))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idempotency::MemoryIdempotency;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn upstream() -> UpstreamId {
        UpstreamId {
            provider: "sutro",
            host: "h".into(),
        }
    }

    fn store() -> Arc<dyn IdempotencyStore> {
        Arc::new(MemoryIdempotency::new(Duration::from_secs(60), 100))
    }

    fn key() -> ResourceKey {
        ResourceKey::new("t", "sutro", crate::keys::kind::IDEMPOTENCY, "k")
    }

    type Create = std::pin::Pin<Box<dyn Future<Output = Result<(String, ())>> + Send>>;

    async fn once(
        store: &Arc<dyn IdempotencyStore>,
        fp: &str,
        create: Create,
    ) -> Result<Outcome<()>> {
        let deadline = Deadline::after(Duration::from_secs(5));
        let bound = Duration::from_secs(5);
        create_once(
            store,
            key(),
            fp.into(),
            deadline,
            bound,
            &upstream(),
            create,
        )
        .await
    }

    /// Counts the creates that ran.
    #[derive(Clone, Default)]
    struct Creates(Arc<AtomicUsize>);

    impl Creates {
        /// A create that takes 50 ms and makes `id`.
        fn making(&self, id: &str) -> Create {
            let (count, id) = (self.0.clone(), id.to_owned());
            Box::pin(async move {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok((id, ()))
            })
        }

        /// A create that fails with `error` after `after`.
        fn failing(&self, error: Error, after: Duration) -> Create {
            let count = self.0.clone();
            Box::pin(async move {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(after).await;
                Err(error)
            })
        }

        fn count(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn assert_may_exist(error: &Error) {
        assert_eq!(error.code(), tonic::Code::FailedPrecondition, "{error}");
        assert!(error.to_string().contains("may"), "{error}");
    }

    #[tokio::test]
    async fn racing_creates_with_one_key_create_once() {
        let (store, creates) = (store(), Creates::default());
        let calls = (0..8).map(|i| once(&store, "fp", creates.making(&format!("job-{i}"))));
        let outcomes: Vec<_> = futures_util::future::join_all(calls)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(creates.count(), 1);
        let ids: std::collections::HashSet<_> = outcomes.iter().map(Outcome::id).collect();
        assert_eq!(ids.len(), 1);
        let created = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Created { .. }))
            .count();
        assert_eq!(created, 1);
    }

    #[tokio::test]
    async fn failures_are_not_remembered_and_reuse_with_other_content_is_refused() {
        let (store, creates) = (store(), Creates::default());
        let down = creates.failing(Error::Unavailable("down".into()), Duration::ZERO);
        assert!(once(&store, "fp", down).await.is_err());
        let ok = once(&store, "fp", creates.making("job-1")).await.unwrap();
        let job_1 = Outcome::Created {
            id: "job-1".into(),
            reply: (),
        };
        assert_eq!(ok, job_1);
        let other = once(&store, "other", creates.making("job-2")).await;
        assert_eq!(other.unwrap_err().code(), tonic::Code::FailedPrecondition);
        assert_eq!(creates.count(), 2, "the failed create and job-1");
    }

    #[tokio::test]
    async fn a_create_that_may_have_happened_is_never_run_again() {
        let (store, creates) = (store(), Creates::default());
        let lost_answer = Error::DeadlineExceeded {
            upstream: Some(upstream()),
        };
        let first = once(&store, "fp", creates.failing(lost_answer, Duration::ZERO)).await;
        assert_eq!(first.unwrap_err().code(), tonic::Code::DeadlineExceeded);
        let retry = once(&store, "fp", creates.making("job-2")).await;
        assert_may_exist(&retry.unwrap_err());
        assert_eq!(creates.count(), 1, "no second create");
    }

    #[tokio::test]
    async fn a_caller_that_leaves_does_not_cancel_the_create() {
        let (store, creates) = (store(), Creates::default());
        let leaving = once(&store, "fp", creates.making("job-1"));
        // The caller gives up long before the 50 ms create is done.
        let left = tokio::time::timeout(Duration::from_millis(5), leaving).await;
        assert!(left.is_err());
        let retry = once(&store, "fp", creates.making("job-2")).await.unwrap();
        assert_eq!(retry, Outcome::Replayed { id: "job-1".into() });
        assert_eq!(creates.count(), 1);
    }

    /// A store whose claims reach it, then take a while to answer (a slow Redis).
    struct SlowClaims(Arc<dyn IdempotencyStore>);

    #[tonic::async_trait]
    impl IdempotencyStore for SlowClaims {
        async fn claim(&self, key: &ResourceKey, entry: &Entry) -> Result<Claim> {
            let claimed = self.0.claim(key, entry).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            claimed
        }
        async fn settle(&self, key: &ResourceKey, claimed: &Entry, settled: &Entry) -> Result<()> {
            self.0.settle(key, claimed, settled).await
        }
        async fn release(&self, key: &ResourceKey, claimed: &Entry) -> Result<()> {
            self.0.release(key, claimed).await
        }
        async fn wait_settled(&self, key: &ResourceKey) -> Result<()> {
            self.0.wait_settled(key).await
        }
    }

    #[tokio::test]
    async fn a_caller_cut_off_mid_claim_still_gets_its_claim_created() {
        let store: Arc<dyn IdempotencyStore> = Arc::new(SlowClaims(store()));
        let creates = Creates::default();
        let hasty = create_once(
            &store,
            key(),
            "fp".into(),
            Deadline::after(Duration::from_millis(30)),
            Duration::from_secs(5),
            &upstream(),
            creates.making("job-1"),
        )
        .await;
        assert_eq!(hasty.unwrap_err().code(), tonic::Code::DeadlineExceeded);
        // The claim landed before the deadline fired; its create runs all the same.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let retry = once(&store, "fp", creates.making("job-2")).await.unwrap();
        assert_eq!(retry, Outcome::Replayed { id: "job-1".into() });
        assert_eq!(creates.count(), 1);
    }

    #[tokio::test]
    async fn a_pending_record_whose_creator_died_may_exist() {
        let (store, creates) = (store(), Creates::default());
        let dead = Entry {
            fingerprint: "fp".into(),
            record: Record::Pending { until_ms: 1 },
        };
        assert_eq!(store.claim(&key(), &dead).await.unwrap(), Claim::Claimed);
        let retry = once(&store, "fp", creates.making("job-1")).await;
        assert_may_exist(&retry.unwrap_err());
        assert_eq!(creates.count(), 0);
    }

    #[tokio::test]
    async fn a_waiter_whose_first_create_certainly_failed_creates_itself() {
        let (store, creates) = (store(), Creates::default());
        let refused = Error::InvalidArgument(Vec::new());
        let slow_refusal = creates.failing(refused, Duration::from_millis(50));
        let (first, second) = tokio::join!(once(&store, "fp", slow_refusal), async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            once(&store, "fp", creates.making("job-1")).await
        });
        assert_eq!(first.unwrap_err().code(), tonic::Code::InvalidArgument);
        assert_eq!(second.unwrap().id(), "job-1");
        assert_eq!(creates.count(), 2);
    }
}
