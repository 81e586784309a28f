//! Hints that a resource's snapshot changed: one pub/sub subscription per replica and
//! resource, shared by that resource's follower, waking it to re-read at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::shared_redis::SharedRedis;

/// The channels this replica follows, each with the follower to wake.
pub(crate) struct Hints {
    wake: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
}

impl Hints {
    /// Starts listening through `redis` until `stop`.
    pub(crate) fn start(_redis: &SharedRedis, _stop: CancellationToken) -> Self {
        Self {
            wake: Arc::default(),
        }
    }

    /// What wakes the follower of `channel`.
    pub(crate) async fn follow(&self, channel: &str) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        self.lock().insert(channel.to_string(), notify.clone());
        notify
    }

    /// The follower of `channel` is gone.
    pub(crate) async fn unfollow(&self, channel: &str, notify: &Arc<Notify>) {
        let mut wake = self.lock();
        if wake.get(channel).is_some_and(|n| Arc::ptr_eq(n, notify)) {
            wake.remove(channel);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        self.wake
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
