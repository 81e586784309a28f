//! The cluster-wide hub: a Redis lease elects one replica per resource to run the poller;
//! it writes snapshots to Redis and hints; every replica fans them out locally.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::hints::Hints;
use super::scripts::{Names, Role, Scripts};
use super::wire;
use super::{ProgressHub, Publisher, StartPoller, WatchState};
use crate::config::Config;
use crate::keys::ResourceKey;
use crate::shared_redis::SharedRedis;

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
}

impl HubTiming {
    /// The timing `config` asks for; re-reads every 200 ms (or a third of the lease).
    pub fn from_config(config: &Config) -> Self {
        Self::new(config.watch_lease, config.watch_grace)
    }

    /// Timing for `lease` and `grace`, the other knobs derived from them.
    pub fn new(lease: Duration, grace: Duration) -> Self {
        Self {
            lease,
            grace,
            reread: Duration::from_millis(200).min(lease / 3),
            snapshot_ttl: (lease * 12).max(Duration::from_secs(60)),
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
    stop: CancellationToken,
    /// True while this replica watches without Redis (so the change is logged once).
    degraded: AtomicBool,
    pub(super) scripts: Scripts,
    hints: Hints,
}

/// The local fan-out of one resource.
struct Local<T> {
    out: watch::Sender<WatchState<T>>,
    /// The latest subscriber's `start`, for a follower that must poll after its own
    /// was used (a poller cannot be restarted from a spent `start`).
    spare: Option<StartPoller<T>>,
}

impl<T> RedisHub<T>
where
    T: prost::Message + Default + Clone + PartialEq + 'static,
{
    /// A hub sharing pollers through `redis`; `replica` names this replica (unique in
    /// the cluster; [`new_replica_id`] makes one). Must run inside a Tokio runtime.
    pub fn new(redis: SharedRedis, timing: HubTiming, replica: impl Into<String>) -> Self {
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
                degraded: AtomicBool::new(false),
                hints,
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
        let name = key.to_string();
        let mut locals = self.inner.lock();
        if let Some(local) = locals.get_mut(&name) {
            local.spare = Some(start);
            return local.out.subscribe();
        }
        let (out, receiver) = watch::channel(WatchState::Connecting);
        locals.insert(
            name.clone(),
            Local {
                out: out.clone(),
                spare: None,
            },
        );
        drop(locals);
        let follower = Follower {
            names: Names::new(&name),
            hub: self.inner.clone(),
            name,
            out,
            start: Some(start),
            poller: None,
            mode: Mode::Follower,
            failures: 0,
            last_watched: Instant::now(),
            last_read: None,
        };
        tokio::spawn(follower.run());
        receiver
    }

    fn active(&self) -> usize {
        self.inner.lock().len()
    }
}

impl<T> Inner<T> {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Local<T>>> {
        self.locals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn redis_failed(&self, error: &redis::RedisError) {
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = %self.redis.describe(error),
                "watches fall back to a poller per replica until Redis answers again"
            );
        }
    }

    fn redis_answered(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!("watches share one poller per resource through Redis again");
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Reads the holder's snapshots.
    Follower,
    /// Holds the lease: runs the poller and writes snapshots.
    Holder,
    /// Redis is unreachable: runs a poller of its own, for this replica only.
    Fallback,
}

/// A poller this replica runs, publishing into a channel the follower forwards.
struct Poller<T> {
    rx: watch::Receiver<WatchState<T>>,
    task: JoinHandle<()>,
}

impl<T> Drop for Poller<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The one task per resource and replica: keeps the lease or follows the holder, and
/// feeds the local channel every subscriber of this replica reads.
struct Follower<T> {
    hub: Arc<Inner<T>>,
    name: String,
    names: Names,
    out: watch::Sender<WatchState<T>>,
    start: Option<StartPoller<T>>,
    poller: Option<Poller<T>>,
    mode: Mode,
    /// Redis calls failed in a row.
    failures: u32,
    /// When the holder last saw a watcher anywhere in the cluster.
    last_watched: Instant,
    /// The snapshot last applied, so an unchanged one wakes nobody.
    last_read: Option<Vec<u8>>,
}

impl<T> Follower<T>
where
    T: prost::Message + Default + Clone + PartialEq + 'static,
{
    async fn run(mut self) {
        let hint: Arc<Notify> = self.hub.hints.follow(&self.names.channel);
        let mut tick = tokio::time::interval(self.hub.timing.reread);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let finished = tokio::select! {
                () = self.hub.stop.cancelled() => return,
                _ = tick.tick() => self.tick().await,
                // The holder's own hint tells it nothing new.
                () = hint.notified(), if self.mode != Mode::Holder => self.tick().await,
                polled = changed(&mut self.poller) => self.forward(polled.is_ok()).await,
            };
            if finished || self.idle() {
                break;
            }
        }
        self.forget();
        self.poller = None;
        self.hub.hints.unfollow(&self.names.channel, &hint);
        let holder = self.mode == Mode::Holder;
        if let Err(error) = self.hub.scripts.leave(&self.hub, &self.names, holder).await {
            tracing::debug!(error = %self.hub.redis.describe(&error), "cannot leave a watch cleanly; it lapses");
        }
    }

    /// One round trip: says this replica still watches, renews or takes the lease,
    /// and reads the snapshot. Returns true when the watch is over.
    async fn tick(&mut self) -> bool {
        let interested = self.out.receiver_count() > 0;
        let may_lead = self.poller.is_some() || self.start.is_some() || self.has_spare();
        let read = self
            .hub
            .scripts
            .tick(&self.hub, &self.names, interested, may_lead)
            .await;
        let tick = match read {
            Ok(tick) => tick,
            Err(error) => {
                self.failed(&error);
                return false;
            }
        };
        self.failures = 0;
        self.hub.redis_answered();
        if let Some(bytes) = tick.snapshot
            && self.apply(bytes)
        {
            return true;
        }
        match tick.role {
            Role::Me => {
                if self.mode != Mode::Holder {
                    self.mode = Mode::Holder;
                    self.last_watched = Instant::now();
                    if self.poller.is_none() {
                        if !self.start_poller() {
                            self.resign().await;
                        }
                    } else if let Some(poller) = &self.poller {
                        // A poller run while Redis was away becomes the cluster's.
                        let state = poller.rx.borrow().clone();
                        if !matches!(state, WatchState::Connecting) {
                            return self.write(&state).await;
                        }
                    }
                }
                if tick.watchers > 0 {
                    self.last_watched = Instant::now();
                } else if self.last_watched.elapsed() >= self.hub.timing.grace {
                    self.resign().await;
                }
            }
            Role::Other | Role::Nobody => {
                if self.mode != Mode::Follower {
                    self.poller = None;
                    self.mode = Mode::Follower;
                }
            }
        }
        false
    }

    /// The poller published (or ended, when `alive` is false). Returns true when over.
    async fn forward(&mut self, alive: bool) -> bool {
        let Some(poller) = &mut self.poller else {
            return false;
        };
        if !alive {
            // It ended without a final value (e.g. it gave up): so does this watch
            // here; elsewhere the lapsed lease lets another replica try.
            return true;
        }
        let state = poller.rx.borrow_and_update().clone();
        self.out.send_replace(state.clone());
        if self.mode == Mode::Holder {
            return self.write(&state).await;
        }
        wire::is_terminal(&state)
    }

    /// The holder writes `state` for the cluster. Returns true when it was the last.
    async fn write(&mut self, state: &WatchState<T>) -> bool {
        let bytes = wire::encode(state);
        let terminal = wire::is_terminal(state);
        if let Err(error) = self
            .hub
            .scripts
            .write(&self.hub, &self.names, bytes, terminal)
            .await
        {
            self.failed(&error);
        }
        terminal
    }

    /// Applies a snapshot read from Redis. Returns true when it is terminal.
    fn apply(&mut self, bytes: Vec<u8>) -> bool {
        if self.last_read.as_ref() == Some(&bytes) {
            return false;
        }
        let Some(state) = wire::decode::<T>(&bytes) else {
            return false;
        };
        let terminal = wire::is_terminal(&state);
        // The holder's own snapshot only echoes what it published; a terminal one
        // written by anyone ends the watch everywhere.
        if self.mode != Mode::Holder || terminal {
            self.out.send_replace(state);
        }
        self.last_read = Some(bytes);
        terminal
    }

    /// A Redis call failed: after two in a row (or at once when Redis is known to be
    /// down) this replica polls for itself.
    fn failed(&mut self, error: &redis::RedisError) {
        self.failures += 1;
        if self.mode == Mode::Fallback || (self.failures < 2 && self.hub.redis.is_up()) {
            return;
        }
        self.hub.redis_failed(error);
        self.mode = Mode::Fallback;
        if self.poller.is_none() {
            self.start_poller();
        }
    }

    fn start_poller(&mut self) -> bool {
        let Some(start) = self.start.take().or_else(|| self.take_spare()) else {
            return false;
        };
        let (tx, rx) = watch::channel(WatchState::Connecting);
        let task = tokio::spawn(start(Publisher::new(tx)));
        self.poller = Some(Poller { rx, task });
        true
    }

    /// Stops polling and frees the lease for whoever comes next.
    async fn resign(&mut self) {
        self.poller = None;
        self.mode = Mode::Follower;
        if let Err(error) = self.hub.scripts.release(&self.hub, &self.names).await {
            tracing::debug!(error = %self.hub.redis.describe(&error), "cannot release a lease; it lapses");
        }
    }

    fn has_spare(&self) -> bool {
        self.hub
            .lock()
            .get(&self.name)
            .is_some_and(|local| local.spare.is_some())
    }

    fn take_spare(&self) -> Option<StartPoller<T>> {
        let mut locals = self.hub.lock();
        let local = locals.get_mut(&self.name)?;
        if !local.out.same_channel(&self.out) {
            return None;
        }
        local.spare.take()
    }

    /// True (and forgotten) when nobody here watches and nothing here must go on.
    fn idle(&self) -> bool {
        if self.mode == Mode::Holder {
            return false;
        }
        // Checked under the registry's lock, which `subscribe` holds while it joins.
        let mut locals = self.hub.lock();
        if self.out.receiver_count() > 0 {
            return false;
        }
        forget(&mut locals, &self.name, &self.out);
        true
    }

    fn forget(&self) {
        forget(&mut self.hub.lock(), &self.name, &self.out);
    }
}

/// Waits for the running poller's next value; never returns without one.
async fn changed<T>(poller: &mut Option<Poller<T>>) -> Result<(), watch::error::RecvError> {
    match poller {
        Some(poller) => poller.rx.changed().await,
        None => std::future::pending().await,
    }
}

fn forget<T>(
    locals: &mut HashMap<String, Local<T>>,
    name: &str,
    out: &watch::Sender<WatchState<T>>,
) {
    if locals.get(name).is_some_and(|l| l.out.same_channel(out)) {
        locals.remove(name);
    }
}
