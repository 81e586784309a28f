//! Hints that a resource's snapshot changed, carrying it: one pub/sub subscription per
//! replica and resource, handing the snapshot to that resource's follower at once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::{PushInfo, PushKind, Value};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::shared_redis::{SharedRedis, Subscriber};

type Wake = Arc<Mutex<HashMap<String, Arc<Hint>>>>;

/// What wakes one follower: the latest snapshot published, or a bare wake-up to
/// re-read (after a subscription took, when a hint may have been missed).
#[derive(Default)]
pub(crate) struct Hint {
    notify: Notify,
    snapshot: Mutex<Option<Vec<u8>>>,
}

impl Hint {
    /// Waits for the next hint: the snapshot it carried (the latest, when several
    /// came meanwhile), or None when the follower should read it from Redis.
    pub(crate) async fn next(&self) -> Option<Vec<u8>> {
        self.notify.notified().await;
        lock(&self.snapshot).take()
    }

    fn wake(&self, snapshot: Option<Vec<u8>>) {
        *lock(&self.snapshot) = snapshot;
        self.notify.notify_one();
    }
}

/// The channels this replica follows, each with the follower to wake.
pub(crate) struct Hints {
    wake: Wake,
    /// Subscribe (true) / unsubscribe (false) requests, done in order by one task so
    /// a follower never waits on them and a late UNSUBSCRIBE never undoes a SUBSCRIBE.
    requests: mpsc::UnboundedSender<(String, bool)>,
}

impl Hints {
    /// Starts listening through a subscriber of `redis` until `stop`. Hints only
    /// hasten re-reads: without them (no subscriber, Redis away) the timer still reads.
    pub(crate) fn start(redis: &SharedRedis, stop: CancellationToken) -> Self {
        let wake = Wake::default();
        let (requests, pending) = mpsc::unbounded_channel();
        let (push, pushed) = mpsc::unbounded_channel();
        match redis.subscriber(push) {
            Ok(subscriber) => {
                tokio::spawn(listen(
                    subscriber,
                    redis.clone(),
                    wake.clone(),
                    pending,
                    pushed,
                    stop,
                ));
            }
            Err(error) => tracing::warn!(
                error = %redis.describe(&error),
                "cannot subscribe to watch hints; replicas re-read snapshots on a timer only"
            ),
        }
        Self { wake, requests }
    }

    /// What wakes the follower of `channel`.
    pub(crate) fn follow(&self, channel: &str) -> Arc<Hint> {
        let notify = Arc::new(Hint::default());
        lock(&self.wake).insert(channel.to_string(), notify.clone());
        let _ = self.requests.send((channel.to_string(), true));
        notify
    }

    /// The follower of `channel` is gone.
    pub(crate) fn unfollow(&self, channel: &str, notify: &Arc<Hint>) {
        let mut wake = lock(&self.wake);
        if wake.get(channel).is_some_and(|n| Arc::ptr_eq(n, notify)) {
            wake.remove(channel);
        }
        let _ = self.requests.send((channel.to_string(), false));
    }
}

async fn listen(
    mut subscriber: Subscriber,
    redis: SharedRedis,
    wake: Wake,
    mut requests: mpsc::UnboundedReceiver<(String, bool)>,
    mut pushed: mpsc::UnboundedReceiver<PushInfo>,
    stop: CancellationToken,
) {
    // Followers per channel: a new follower may start before the old one has left.
    let mut followers: HashMap<String, usize> = HashMap::new();
    // Channels whose SUBSCRIBE failed (Redis away): retried until they take, or their
    // followers would wait on the slow re-read timer for good.
    let mut failed: HashSet<String> = HashSet::new();
    let mut retry = tokio::time::interval(RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = retry.tick(), if !failed.is_empty() => {
                for channel in std::mem::take(&mut failed) {
                    if followers.contains_key(&channel) {
                        subscribe(&mut subscriber, &redis, &wake, &mut failed, channel).await;
                    }
                }
            }
            request = requests.recv() => {
                let Some((channel, on)) = request else { return };
                let count = followers.entry(channel.clone()).or_default();
                if on {
                    *count += 1;
                    if *count > 1 { continue }
                    subscribe(&mut subscriber, &redis, &wake, &mut failed, channel).await;
                } else {
                    *count = count.saturating_sub(1);
                    if *count > 0 { continue }
                    followers.remove(&channel);
                    failed.remove(&channel);
                    if let Err(error) = subscriber.unsubscribe(&channel).await {
                        // Scrubbed: connection errors may name the URL, password included.
                        tracing::debug!(error = %redis.describe(&error), "a hint unsubscription failed");
                    }
                }
            }
            push = pushed.recv() => {
                let Some(push) = push else { return };
                if !matches!(push.kind, PushKind::Message | PushKind::SMessage) {
                    continue;
                }
                if let Some(Value::BulkString(channel)) = push.data.first()
                    && let Ok(channel) = std::str::from_utf8(channel)
                    && let Some(hint) = lock(&wake).get(channel)
                {
                    let snapshot = match push.data.get(1) {
                        Some(Value::BulkString(bytes)) => Some(bytes.clone()),
                        _ => None,
                    };
                    hint.wake(snapshot);
                }
            }
        }
    }
}

/// How often SUBSCRIBEs that failed are tried again.
const RETRY: Duration = Duration::from_millis(500);

/// Subscribes to `channel`, then wakes its follower: a hint published before the
/// subscription took was missed, so it re-reads once now rather than on its timer.
async fn subscribe(
    subscriber: &mut Subscriber,
    redis: &SharedRedis,
    wake: &Wake,
    failed: &mut HashSet<String>,
    channel: String,
) {
    match subscriber.subscribe(&channel).await {
        Ok(()) => {
            if let Some(hint) = lock(wake).get(&channel) {
                hint.wake(None);
            }
        }
        Err(error) => {
            // Scrubbed: connection errors may name the URL, password included.
            tracing::debug!(error = %redis.describe(&error), "a hint subscription failed; retrying, the timer still re-reads");
            failed.insert(channel);
        }
    }
}

fn lock<V>(mutex: &Mutex<V>) -> MutexGuard<'_, V> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
