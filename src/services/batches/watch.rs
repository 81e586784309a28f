//! WatchBatch: one poller per (tenant, batch) reads the batch's counters; watchers get
//! the snapshot, each change, heartbeats, and a final message once the batch is done.

use tokio::time::{Instant, sleep};

use super::translate::batch_to_proto;
use crate::context::CallContext;
use crate::convert::now_timestamp;
use crate::deadline::Deadline;
use crate::error::{Error, UpstreamId};
use crate::keys::kind;
use crate::progress::{EventKind, Publisher, WatchTiming};
use crate::proto::xai::v1::{Batch, DoneReason, WatchBatchResponse, WatchEventKind};
use crate::services::core::Provider;
use crate::services::read_through::CacheWriter;
use crate::upstream::xai::XaiClient;

/// Why a batch is done, or UNSPECIFIED while it is not. xAI's own SDK rule: nothing
/// pending, and either at least one request or the batch ended (cancelled, by the caller
/// or by xAI). A cancel is not done while requests are still pending: live, counters
/// kept moving after one. An expired batch is done whatever its counters say, since
/// nothing changes after expiry.
pub fn done_reason(batch: &Batch, now: &prost_types::Timestamp) -> DoneReason {
    if batch
        .expire_time
        .as_ref()
        .is_some_and(|t| (t.seconds, t.nanos) <= (now.seconds, now.nanos))
    {
        return DoneReason::Expired;
    }
    let (requests, pending) = batch
        .state
        .as_ref()
        .map_or((0, 0), |s| (s.num_requests, s.num_pending));
    if pending > 0 {
        return DoneReason::Unspecified;
    }
    if batch.cancel_time.is_some() || batch.cancel_by_xai_message.is_some() {
        return DoneReason::Cancelled;
    }
    if requests > 0 {
        DoneReason::Completed
    } else {
        DoneReason::Unspecified
    }
}

/// Whether `batch` is done now: its watchers get their final message.
pub fn is_done(batch: &Batch) -> bool {
    done_reason(batch, &now_timestamp()) != DoneReason::Unspecified
}

/// Whether `batch` can never change again, so the status cache may keep it as final. A
/// completed batch is done but not settled: adding requests makes it live again, and
/// other replicas' L1 copies of a final entry would not hear of it for the final TTL.
pub fn is_settled(batch: &Batch) -> bool {
    matches!(
        done_reason(batch, &now_timestamp()),
        DoneReason::Expired | DoneReason::Cancelled
    )
}

/// xAI batches are watched by reading the batch until it is done.
impl Provider for XaiClient {
    type Progress = Batch;
    type WatchMessage = WatchBatchResponse;

    fn upstream(&self) -> &UpstreamId {
        XaiClient::upstream(self)
    }

    async fn poll(
        self,
        ctx: CallContext,
        batch_id: String,
        timing: WatchTiming,
        publisher: Publisher<Batch>,
        cache: CacheWriter,
    ) {
        let started = Instant::now();
        let mut first = true;
        loop {
            let call_ctx = ctx.with_deadline(Deadline::after(timing.call_timeout));
            match self.batch(&batch_id, &call_ctx).await {
                Ok(reply) => {
                    let batch = batch_to_proto(reply.body);
                    let done = is_done(&batch);
                    cache.put(kind::BATCH, &batch, is_settled(&batch)).await;
                    publisher.publish(batch, done);
                    if done {
                        return;
                    }
                }
                // Later reads ride out passing trouble; the first one must succeed so
                // that a bad id or key fails the call at once.
                Err(error) if !first && error.is_transient() => {
                    tracing::debug!(%error, batch_id, "batch poll failed; will retry");
                }
                Err(error) => {
                    publisher.fail(error);
                    return;
                }
            }
            first = false;
            if started.elapsed() > timing.max {
                publisher.fail(Error::DeadlineExceeded { upstream: None });
                return;
            }
            sleep(timing.poll).await;
        }
    }

    /// FINAL messages say why the batch is done.
    fn watch_message(
        kind: EventKind,
        batch: Batch,
        observed_at: prost_types::Timestamp,
    ) -> WatchBatchResponse {
        let done_reason = match kind {
            EventKind::Final => done_reason(&batch, &observed_at),
            _ => DoneReason::Unspecified,
        };
        WatchBatchResponse {
            kind: WatchEventKind::from(kind).into(),
            batch: Some(batch),
            done_reason: done_reason.into(),
            observed_at: Some(observed_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::xai::v1::BatchState;

    fn ts(seconds: i64) -> prost_types::Timestamp {
        prost_types::Timestamp { seconds, nanos: 0 }
    }

    #[test]
    fn done_follows_xais_rule() {
        let now = ts(1_000);
        let state = |requests, pending| {
            Some(BatchState {
                num_requests: requests,
                num_pending: pending,
                ..Default::default()
            })
        };
        let empty = Batch {
            state: state(0, 0),
            ..Default::default()
        };
        assert_eq!(
            done_reason(&empty, &now),
            DoneReason::Unspecified,
            "an empty open batch is not done"
        );
        let running = Batch {
            state: state(5, 2),
            ..Default::default()
        };
        assert_eq!(done_reason(&running, &now), DoneReason::Unspecified);
        let finished = Batch {
            state: state(5, 0),
            ..Default::default()
        };
        assert_eq!(done_reason(&finished, &now), DoneReason::Completed);
        let cancelling = Batch {
            cancel_time: Some(ts(900)),
            state: state(5, 3),
            ..Default::default()
        };
        assert_eq!(
            done_reason(&cancelling, &now),
            DoneReason::Unspecified,
            "still pending"
        );
        let cancelled = Batch {
            cancel_time: Some(ts(900)),
            state: state(5, 0),
            ..Default::default()
        };
        assert_eq!(done_reason(&cancelled, &now), DoneReason::Cancelled);
        let by_xai = Batch {
            cancel_by_xai_message: Some("bad file".into()),
            ..Default::default()
        };
        assert_eq!(done_reason(&by_xai, &now), DoneReason::Cancelled);
        let expired = Batch {
            expire_time: Some(ts(999)),
            state: state(5, 3),
            ..Default::default()
        };
        assert_eq!(done_reason(&expired, &now), DoneReason::Expired);
    }

    #[test]
    fn only_batches_that_cannot_change_are_cached_as_final() {
        let state = |requests, pending| {
            Some(BatchState {
                num_requests: requests,
                num_pending: pending,
                ..Default::default()
            })
        };
        let completed = Batch {
            state: state(5, 0),
            ..Default::default()
        };
        assert!(is_done(&completed));
        assert!(!is_settled(&completed), "adding requests revives it");
        let cancelled = Batch {
            cancel_time: Some(ts(900)),
            state: state(5, 0),
            ..Default::default()
        };
        assert!(is_settled(&cancelled));
        let cancelling = Batch {
            cancel_time: Some(ts(900)),
            state: state(5, 3),
            ..Default::default()
        };
        assert!(!is_settled(&cancelling));
        let expired = Batch {
            expire_time: Some(ts(999)),
            state: state(5, 3),
            ..Default::default()
        };
        assert!(is_settled(&expired));
    }
}
