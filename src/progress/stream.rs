//! One subscriber's view of a watch: the snapshot, each change, heartbeats while
//! nothing changes, the final value, and UNAVAILABLE when the gateway shuts down.

use futures_util::Stream;
use tokio::sync::watch;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::{WatchState, WatchTiming};

/// Why a watch message is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The first message.
    Snapshot,
    /// Something changed.
    Progress,
    /// Nothing changed for a heartbeat interval.
    Heartbeat,
    /// The last message.
    Final,
}

/// Waits for the watcher's first read. A watch that cannot start (unknown resource,
/// bad key) fails here, so the call itself fails instead of an empty stream.
pub async fn first_state<T>(rx: &mut watch::Receiver<WatchState<T>>) -> Result<(), Status> {
    let state = rx
        .wait_for(|state| !matches!(state, WatchState::Connecting))
        .await
        .map_err(|_| Status::unavailable("the watcher stopped before it started"))?;
    if let WatchState::Failed(error) = &*state {
        return Err(Status::from(error));
    }
    Ok(())
}

/// The messages of one subscriber, built by `message` from each value and the time
/// the watcher observed it.
pub fn watcher_stream<T, M, F>(
    mut rx: watch::Receiver<WatchState<T>>,
    timing: WatchTiming,
    shutdown: CancellationToken,
    rpc: &'static str,
    message: F,
) -> impl Stream<Item = Result<M, Status>> + Send + 'static
where
    T: Clone + Send + Sync + 'static,
    M: Send + 'static,
    F: Fn(EventKind, T, prost_types::Timestamp) -> M + Send + 'static,
{
    async_stream::stream! {
        let mut first = true;
        let mut last_sent = Instant::now();
        loop {
            let state = rx.borrow_and_update().clone();
            match state {
                WatchState::Connecting => {}
                WatchState::Failed(error) => {
                    yield Err(Status::from(error));
                    return;
                }
                WatchState::Live { value, done: true, observed_at } => {
                    yield Ok(message(EventKind::Final, value, observed_at));
                    return;
                }
                WatchState::Live { value, done: false, observed_at } => {
                    let kind = if first { EventKind::Snapshot } else { EventKind::Progress };
                    first = false;
                    yield Ok(message(kind, value, observed_at));
                    last_sent = Instant::now();
                }
            }
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => {
                        yield Err(Status::unavailable(format!("batchgate is shutting down; call {rpc} again to resume")));
                        return;
                    }
                    changed = timeout(timing.heartbeat, rx.changed()) => match changed {
                        Ok(Ok(())) => {
                            // The last message never waits: it comes once per watcher,
                            // and with thousands of watchers per replica an interval
                            // here was most of FINAL's delay after the upstream finished.
                            let last = matches!(
                                &*rx.borrow(),
                                WatchState::Failed(_) | WatchState::Live { done: true, .. }
                            );
                            if last {
                                break;
                            }
                            // A change sooner than `min_interval` after the last message
                            // waits out the rest of it, and whatever changes meanwhile
                            // merges in (the latest wins). A plain sleep, not a wait on
                            // the channel: waking every watcher on every change is the
                            // cost this bounds. So FINAL can wait one interval at most.
                            let since = last_sent.elapsed();
                            if since < timing.min_interval {
                                tokio::select! {
                                    () = tokio::time::sleep(timing.min_interval - since) => {}
                                    () = shutdown.cancelled() => {}
                                }
                            }
                            break;
                        }
                        Ok(Err(_)) => {
                            yield Err(Status::unavailable(format!("the watcher stopped; call {rpc} again to resume")));
                            return;
                        }
                        Err(_) => {
                            let current = match &*rx.borrow() {
                                WatchState::Live { value, observed_at, .. } => Some((value.clone(), *observed_at)),
                                _ => None,
                            };
                            if let Some((value, observed_at)) = current {
                                yield Ok(message(EventKind::Heartbeat, value, observed_at));
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::StreamExt;

    use super::*;
    use crate::progress::Publisher;

    #[tokio::test]
    async fn the_final_message_does_not_wait_out_the_min_interval() {
        let (tx, rx) = watch::channel(WatchState::Connecting);
        let publisher = Publisher::new(tx);
        publisher.publish(1_u64, false);
        let timing = WatchTiming {
            heartbeat: Duration::from_secs(60),
            min_interval: Duration::from_secs(5),
            poll: Duration::from_secs(1),
            call_timeout: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        let stream = watcher_stream(
            rx,
            timing,
            CancellationToken::new(),
            "Watch",
            |kind, value, _| (kind, value),
        );
        let mut stream = std::pin::pin!(stream);
        let first = stream.next().await.map(|m| m.ok());
        assert_eq!(first, Some(Some((EventKind::Snapshot, 1))));
        publisher.publish(2, true);
        let last = tokio::time::timeout(Duration::from_secs(1), stream.next())
            .await
            .expect("FINAL without waiting out the min interval")
            .map(|m| m.ok());
        assert_eq!(last, Some(Some((EventKind::Final, 2))));
    }
}
