//! The cluster-wide hub: a Redis lease elects one replica per resource to run the poller;
//! it writes snapshots to Redis and hints; every replica fans them out locally.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::follower::Follower;
use super::hints::Hints;
use super::pace::Pace;
use super::scripts::{Names, Scripts};
use super::{ProgressHub, StartPoller, WatchState};
use crate::config::Config;
use crate::error::Error;
use crate::keys::ResourceKey;
use crate::metrics::Metrics;
use crate::shared_redis::SharedRedis;
use futures_util::future::BoxFuture;
use tracing::Instrument;

/// Timing of the Redis hub.
#[derive(Debug, Clone, Copy)]
pub struct HubTiming {
    /// Lifetime of the lease that elects a resource's poller; a dead holder is replaced
    /// within about this long.
    pub lease: Duration,
    /// How long the poller outlives the last subscriber in the cluster.
    pub grace: Duration,
    /// How often a replica re-reads the snapshot (and renews lease and interest)
    /// without a hint: the most a lost hint delays an update.
    pub reread: Duration,
    /// How long a snapshot outlives its last write, so late subscribers read a final
    /// value instead of starting a poller.
    pub snapshot_ttl: Duration,
    /// Least time between two changes a replica's subscribers see (and the holder
    /// writes): `watch_min_interval_ms`.
    pub pace: Pace,
}

impl HubTiming {
    /// The timing `config` asks for; renews and re-reads every third of the lease.
    pub fn from_config(config: &Config) -> Self {
        Self {
            pace: Pace::from_config(config),
            ..Self::new(config.watch_lease, config.watch_grace)
        }
    }

    /// Timing for `lease` and `grace`, the other knobs derived from them; changes
    /// unpaced.
    pub fn new(lease: Duration, grace: Duration) -> Self {
        Self {
            lease,
            grace,
            // One EVAL per resource and replica every lease/3 (5 s lease: 0.6/s, was
            // 5/s at 200 ms) renews lease and interest with two renewals to spare and
            // doubles as the safety re-read: changes arrive by hint (tested within
            // 150 ms), so a lost hint delays an update by lease/3 at most, never loses
            // it (the snapshot holds the FINAL); a dead holder is replaced within
            // about lease + lease/3.
            reread: (lease / 3).max(Duration::from_millis(10)),
            snapshot_ttl: (lease * 12).max(Duration::from_secs(60)),
            pace: Pace::NONE,
        }
    }

    pub(super) fn lease_ms(&self) -> u64 {
        u64::try_from(self.lease.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// One poller per resource per cluster, elected by a Redis lease, fanned out on each
/// replica through `tokio::sync::watch`. With Redis unreachable each replica polls on
/// its own, as [`super::MemoryHub`] does, and rejoins when Redis is back.
pub struct RedisHub<T> {
    inner: Arc<Inner<T>>,
}

pub(super) struct Inner<T> {
    pub(super) redis: SharedRedis,
    pub(super) timing: HubTiming,
    /// This replica's name in leases and interest sets (random, never a secret).
    pub(super) replica: String,
    locals: Mutex<HashMap<String, Local<T>>>,
    /// Stops every task at once, as a crash would.
    pub(super) stop: CancellationToken,
    /// Asks every follower to leave cleanly (release its lease and interest).
    pub(super) leaving: CancellationToken,
    /// Followers running, so `release` can wait for them to have left.
    pub(super) running: watch::Sender<usize>,
    /// True while this replica watches without Redis (so the change is logged once).
    degraded: AtomicBool,
    pub(super) scripts: Scripts,
    pub(super) hints: Hints,
    /// Where the leases this replica takes are counted.
    pub(super) metrics: Metrics,
}

/// The local fan-out of one resource.
pub(super) struct Local<T> {
    pub(super) out: watch::Sender<WatchState<T>>,
}

impl<T> RedisHub<T>
where
    T: prost::Message + Default + Clone + PartialEq + 'static,
{
    /// A hub sharing pollers through `redis`; `replica` names this replica (unique in
    /// the cluster; [`new_replica_id`] makes one). Must run inside a Tokio runtime.
    pub fn new(redis: SharedRedis, timing: HubTiming, replica: impl Into<String>) -> Self {
        Self::with_metrics(redis, timing, replica, Metrics::disabled())
    }

    /// Like [`RedisHub::new`], counting the leases it takes on `metrics`.
    pub fn with_metrics(
        redis: SharedRedis,
        timing: HubTiming,
        replica: impl Into<String>,
        metrics: Metrics,
    ) -> Self {
        let stop = CancellationToken::new();
        let hints = Hints::start(&redis, stop.child_token());
        Self {
            inner: Arc::new(Inner {
                scripts: Scripts::new(redis.is_cluster()),
                redis,
                timing,
                replica: replica.into(),
                locals: Mutex::default(),
                stop,
                leaving: CancellationToken::new(),
                running: watch::channel(0).0,
                degraded: AtomicBool::new(false),
                hints,
                metrics,
            }),
        }
    }

    /// Stops every task of this hub at once, as a crash would: its leases are not
    /// released (they lapse) and its local subscribers see the watch end.
    pub fn shutdown(&self) {
        self.inner.stop.cancel();
        self.inner.lock().clear();
    }
}

impl<T> Drop for RedisHub<T> {
    fn drop(&mut self) {
        self.inner.stop.cancel();
    }
}

/// A replica id unique enough for leases: random, so restarts never inherit a lease.
pub fn new_replica_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl<T> ProgressHub<T> for RedisHub<T>
where
    T: prost::Message + Default + Clone + PartialEq + 'static,
{
    fn subscribe(
        &self,
        key: &ResourceKey,
        start: StartPoller<T>,
    ) -> watch::Receiver<WatchState<T>> {
        if self.inner.leaving.is_cancelled() {
            // Released: a new follower would take leases nobody releases any more.
            let failed =
                WatchState::Failed(Error::Unavailable("batchgate is shutting down".into()));
            return watch::channel(failed).1;
        }
        let name = key.to_string();
        let mut locals = self.inner.lock();
        if let Some(local) = locals.get(&name) {
            return local.out.subscribe();
        }
        let (out, receiver) = watch::channel(WatchState::Connecting);
        locals.insert(name.clone(), Local { out: out.clone() });
        drop(locals);
        let follower = Follower::new(self.inner.clone(), name, out, start);
        // Its lease changes are events in the trace of the watch that started it.
        tokio::spawn(
            follower
                .run()
                .instrument(crate::telemetry::detached_span("watch follower")),
        );
        receiver
    }

    fn active(&self) -> usize {
        self.inner.lock().len()
    }

    fn release(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.inner.leaving.cancel();
            let mut running = self.inner.running.subscribe();
            // Bounded: with Redis not answering, what could not be released lapses.
            let timed_out =
                tokio::time::timeout(self.inner.timing.lease, running.wait_for(|n| *n == 0))
                    .await
                    .is_err();
            if timed_out {
                tracing::warn!("some watches could not be released in time; their leases lapse");
            }
            self.inner.stop.cancel();
        })
    }

    fn forget(&self, key: &ResourceKey) -> BoxFuture<'_, ()> {
        let names = Names::new(&key.to_string());
        Box::pin(async move {
            if let Err(error) = self.inner.scripts.forget(&self.inner, &names).await {
                tracing::warn!(error = %self.inner.redis.describe(&error), "cannot forget a final watch value; it lapses with its TTL");
            }
        })
    }
}

impl<T> Inner<T> {
    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<String, Local<T>>> {
        self.locals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn redis_failed(&self, error: &redis::RedisError) {
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = %self.redis.describe(error),
                "watches fall back to a poller per replica until Redis answers again"
            );
        }
    }

    pub(super) fn redis_answered(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!("watches share one poller per resource through Redis again");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::keys::kind;
    use crate::shared_redis::RedisTarget;
    use crate::test_logs::Captured;

    #[tokio::test]
    async fn without_redis_every_resource_is_still_watched_and_it_is_logged_once() {
        let logs = Captured::default();
        let _guard = logs.install();

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let target = RedisTarget::from_settings(Some(&format!("redis://127.0.0.1:{port}")), None)
            .unwrap()
            .unwrap();
        let redis = SharedRedis::connect(&target, Duration::from_millis(100)).unwrap();
        let hub = RedisHub::<u64>::new(
            redis,
            HubTiming::new(Duration::from_millis(300), Duration::ZERO),
            new_replica_id(),
        );
        let starts = Arc::new(AtomicUsize::new(0));
        let mut receivers = Vec::new();
        for job in ["job-1", "job-2", "job-3"] {
            for _ in 0..5 {
                let starts = starts.clone();
                receivers.push(hub.subscribe(
                    &ResourceKey::new("t", "sutro", kind::WATCH, job),
                    Arc::new(move |publisher| {
                        starts.fetch_add(1, Ordering::SeqCst);
                        Box::pin(async move {
                            publisher.publish(1, false);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            publisher.publish(2, true);
                        })
                    }),
                ));
            }
        }
        for rx in &mut receivers {
            let state = tokio::time::timeout(
                Duration::from_secs(5),
                rx.wait_for(|s| matches!(s, WatchState::Live { done: true, .. })),
            )
            .await
            .expect("done in time")
            .expect("done");
            assert!(matches!(&*state, WatchState::Live { value: 2, .. }));
        }
        assert_eq!(
            starts.load(Ordering::SeqCst),
            3,
            "one local poller per resource"
        );
        let text = logs.text();
        assert_eq!(
            text.matches("watches fall back to a poller per replica")
                .count(),
            1,
            "{text}"
        );
    }

    #[tokio::test]
    async fn without_redis_configured_the_hub_is_in_memory() {
        let hub = super::super::hub::<u64>(&Config::embedded(), None, &Metrics::disabled());
        let mut rx = hub.subscribe(
            &ResourceKey::new("t", "xai", kind::WATCH, "b"),
            Arc::new(|publisher| Box::pin(async move { publisher.publish(7, true) })),
        );
        rx.changed().await.unwrap();
        assert!(matches!(&*rx.borrow(), WatchState::Live { value: 7, .. }));
    }
}
