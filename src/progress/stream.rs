//! One subscriber's view of a watch: the snapshot, each change, heartbeats while
//! nothing changes, the final value, and UNAVAILABLE when the gateway shuts down.

use futures_util::Stream;
use tokio::sync::watch;
use tokio::time::timeout;
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
                }
            }
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => {
                        yield Err(Status::unavailable(format!("batchgate is shutting down; call {rpc} again to resume")));
                        return;
                    }
                    changed = timeout(timing.heartbeat, rx.changed()) => match changed {
                        // Changes come paced by the hub (one per `watch_min_interval`
                        // per resource), so each one is sent as it comes.
                        Ok(Ok(())) => break,
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
