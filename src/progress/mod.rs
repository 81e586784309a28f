//! Progress fan-out: one upstream watcher per watched resource, any number of local
//! subscribers, latest value wins so a slow subscriber never holds anyone back.

mod follower;
mod hints;
mod memory;
mod pace;

pub use self::pace::Pace;
mod redis;
mod scripts;
mod stream;
mod wire;

pub use memory::MemoryHub;
pub use redis::{HubTiming, RedisHub, new_replica_id};
pub use stream::{EventKind, first_state, watcher_stream};

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::watch;

use crate::config::Config;
use crate::error::Error;
use crate::keys::ResourceKey;
use crate::metrics::Metrics;
use crate::shared_redis::SharedRedis;

/// Timing of watches.
#[derive(Debug, Clone, Copy)]
pub struct WatchTiming {
    /// Heartbeat interval per watcher.
    pub heartbeat: Duration,
    /// Upstream poll interval (also the longest silence tolerated on a stream).
    pub poll: Duration,
    /// Cap on each upstream call a watcher makes.
    pub call_timeout: Duration,
    /// Longest one resource is watched.
    pub max: Duration,
}

impl WatchTiming {
    /// The timing the configuration asks for.
    pub fn from_config(config: &Config) -> Self {
        Self {
            heartbeat: config.watch_heartbeat,
            poll: config.watch_poll,
            call_timeout: config.upstream_timeout,
            max: config.watch_max,
        }
    }
}

/// What the watcher of one resource has published. The value is a prost message so
/// a backend can carry it between replicas.
#[derive(Debug, Clone)]
pub enum WatchState<T> {
    /// The first upstream read has not come back yet.
    Connecting,
    /// The resource as last read; `done` once it reached its final state.
    Live {
        /// The resource.
        value: T,
        /// True for the last value a watcher will publish.
        done: bool,
        /// When the watcher first read this value (heartbeats repeat it unchanged).
        observed_at: prost_types::Timestamp,
    },
    /// The resource cannot be watched (unknown, bad key, gave up).
    Failed(Error),
}

/// Starts the poller of one resource: given where to publish, the future that polls.
/// `Fn`, not `FnOnce`: a replica may have to poll again and again (after each Redis
/// outage, each dead holder) for subscribers that subscribed once.
pub type StartPoller<T> = Arc<dyn Fn(Publisher<T>) -> BoxFuture<'static, ()> + Send + Sync>;

/// Shares one upstream watcher per resource among all its subscribers.
pub trait ProgressHub<T>: Send + Sync + 'static
where
    T: prost::Message + Default + Clone + PartialEq + 'static,
{
    /// Subscribes to `key`. If nobody follows the resource yet, `start` is kept for as
    /// long as the resource is followed here and called whenever this replica must poll;
    /// otherwise the running watcher is shared and `start` is dropped. The poller stops when the last
    /// subscriber leaves (or when it is done).
    fn subscribe(&self, key: &ResourceKey, start: StartPoller<T>)
    -> watch::Receiver<WatchState<T>>;

    /// How many resources this replica follows right now.
    fn active(&self) -> usize;

    /// Lets go of everything this replica follows, for a graceful shutdown: its leases
    /// and interest are released at once (not left to lapse, which would stall each
    /// resource for a lease), its pollers stop and its subscribers see their watches
    /// end. Bounded by about a lease when Redis does not answer. Nothing to release in
    /// memory.
    fn release(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Forgets `key`'s final value, if it has one, so the next subscriber polls again
    /// instead of reading it: for a resource that can come back to life (an xAI batch
    /// that gets more requests). A value still live is kept. Errors are logged, never
    /// returned: the final value lapses with its TTL anyway. In memory a finished
    /// poller is forgotten already.
    fn forget(&self, key: &ResourceKey) -> BoxFuture<'_, ()> {
        let _ = key;
        Box::pin(async {})
    }
}

/// The hub `config` and `redis` call for: one poller per resource per cluster through
/// Redis when there is one, else one per replica in memory. Must run inside a Tokio
/// runtime (the Redis hub starts its hint listener). Each call makes a new hub, with a
/// new replica id and its own subscriber connection: make one per progress type. The
/// leases it takes are counted on `metrics`.
pub fn hub<T>(
    config: &Config,
    redis: Option<&SharedRedis>,
    metrics: &Metrics,
) -> Arc<dyn ProgressHub<T>>
where
    T: prost::Message + Default + Clone + PartialEq + 'static,
{
    match redis {
        Some(redis) => Arc::new(RedisHub::with_metrics(
            redis.clone(),
            HubTiming::from_config(config),
            new_replica_id(),
            metrics.clone(),
        )),
        None => Arc::new(MemoryHub::new(Pace::from_config(config))),
    }
}

/// Where a poller publishes what it reads.
pub struct Publisher<T> {
    tx: watch::Sender<WatchState<T>>,
}

impl<T: PartialEq> Publisher<T> {
    /// A publisher into `tx`, for hub backends.
    pub fn new(tx: watch::Sender<WatchState<T>>) -> Self {
        Self { tx }
    }

    /// Publishes `value` unless it equals what subscribers already have, so that
    /// subscribers wake only for real changes.
    pub fn publish(&self, value: T, done: bool) {
        self.tx.send_if_modified(|state| {
            let unchanged = matches!(state, WatchState::Live { value: old, done: was, .. } if *was == done && *old == value);
            if !unchanged {
                *state = WatchState::Live {
                    value,
                    done,
                    observed_at: crate::convert::now_timestamp(),
                };
            }
            !unchanged
        });
    }

    /// Ends the watch with `error`, for every subscriber.
    pub fn fail(&self, error: Error) {
        self.tx.send_replace(WatchState::Failed(error));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_wake_subscribers() {
        let (tx, mut rx) = watch::channel(WatchState::Connecting);
        let publisher = Publisher::new(tx);
        publisher.publish(1_u64, false);
        assert!(rx.has_changed().unwrap());
        let first = match &*rx.borrow_and_update() {
            WatchState::Live { observed_at, .. } => *observed_at,
            other => panic!("{other:?}"),
        };
        assert!(first.seconds > 0);
        publisher.publish(1, false);
        assert!(!rx.has_changed().unwrap(), "the same value is no change");
        publisher.publish(1, true);
        match &*rx.borrow_and_update() {
            WatchState::Live {
                value: 1,
                done: true,
                ..
            } => {}
            other => panic!("{other:?}"),
        }
        publisher.fail(Error::Unavailable("gone".into()));
        assert!(matches!(
            &*rx.borrow_and_update(),
            WatchState::Failed(Error::Unavailable(_))
        ));
    }
}
