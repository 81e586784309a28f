//! The one task per watched resource and replica: holds the lease and runs the poller,
//! or follows the holder's snapshots, or (Redis away) polls for this replica alone.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::hints::Hint;
use super::pace::Pacer;
use super::redis::{Inner, Local};
use super::scripts::{Names, Role};
use super::wire;
use super::{Publisher, StartPoller, WatchState};

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
pub(super) struct Follower<T> {
    hub: Arc<Inner<T>>,
    name: String,
    names: Names,
    /// Feeds the channel every local subscriber reads.
    pacer: Pacer<T>,
    start: StartPoller<T>,
    poller: Option<Poller<T>>,
    mode: Mode,
    /// Redis calls failed in a row.
    failures: u32,
    /// Since when Redis calls have failed (each only by being slow), if they do.
    slow_since: Option<Instant>,
    /// When the holder last saw a watcher anywhere in the cluster.
    last_watched: Instant,
    /// The snapshot last applied, so an unchanged one wakes nobody.
    last_read: Option<Vec<u8>>,
    /// When the holder observed the live value last applied: a hint overtaken by a
    /// re-read of a newer snapshot must not take subscribers back.
    last_observed: Option<(i64, i32)>,
}

impl<T> Follower<T>
where
    T: prost::Message + Default + Clone + PartialEq + 'static,
{
    /// The follower of `name` on `hub`, feeding `out`; `start` is its first subscriber's
    /// and serves every poller this replica runs for the resource.
    pub(super) fn new(
        hub: Arc<Inner<T>>,
        name: String,
        out: watch::Sender<WatchState<T>>,
        start: StartPoller<T>,
    ) -> Self {
        hub.running.send_modify(|n| *n += 1);
        Self {
            names: Names::new(&name),
            pacer: Pacer::new(out, hub.timing.pace),
            hub,
            name,
            start,
            poller: None,
            mode: Mode::Follower,
            failures: 0,
            slow_since: None,
            last_watched: Instant::now(),
            last_read: None,
            last_observed: None,
        }
    }

    pub(super) async fn run(mut self) {
        let hint: Arc<Hint> = self.hub.hints.follow(&self.names.channel);
        // `interval` panics on zero; a re-read more often than this only costs Redis.
        let every = self
            .hub
            .timing
            .reread
            .max(std::time::Duration::from_millis(10));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let finished = tokio::select! {
                () = self.hub.stop.cancelled() => return,
                () = self.hub.leaving.cancelled() => break,
                _ = tick.tick() => self.tick().await,
                // The holder's own hint tells it nothing new. A hint that carries the
                // snapshot saves a round trip; one that does not asks for a re-read.
                snapshot = hint.next(), if self.mode != Mode::Holder => match snapshot {
                    Some(bytes) => self.apply(bytes),
                    None => self.tick().await,
                },
                polled = changed(&mut self.poller) => self.forward(polled.is_ok()).await,
                () = self.pacer.due() => self.release_held().await,
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
        let interested = self.pacer.out().receiver_count() > 0;
        // Only a replica with watchers of its own takes the lease (a holder keeps it).
        let may_lead = interested || self.poller.is_some();
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
        self.slow_since = None;
        self.hub.redis_answered();
        if let Some(bytes) = tick.snapshot
            && self.apply(bytes)
        {
            return true;
        }
        match tick.role {
            Role::Me => {
                if self.mode != Mode::Holder {
                    // Operators (and the multi-replica tests) see who follows what.
                    tracing::info!(resource = %self.names.channel.trim_end_matches(":hint"), "took the watch lease");
                    self.hub.metrics.lease_taken();
                    self.mode = Mode::Holder;
                    self.last_watched = Instant::now();
                    if self.poller.is_none() {
                        self.start_poller();
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
        let terminal = wire::is_terminal(&state);
        if self.pacer.offer(state) && self.mode == Mode::Holder {
            return self.write_passed().await;
        }
        terminal
    }

    /// A held value's interval is over: it goes to local subscribers and, from the
    /// holder, to the cluster. Returns true when the watch is over (never: only live
    /// values are held).
    async fn release_held(&mut self) -> bool {
        if self.pacer.release() && self.mode == Mode::Holder {
            return self.write_passed().await;
        }
        false
    }

    /// The holder writes what its subscribers were just given: the cluster's
    /// snapshots are paced like the local fan-out.
    async fn write_passed(&mut self) -> bool {
        let state = self.pacer.out().borrow().clone();
        self.write(&state).await
    }

    /// The holder writes `state` for the cluster. Returns true when it was the last.
    async fn write(&mut self, state: &WatchState<T>) -> bool {
        let bytes = wire::encode(state);
        let terminal = wire::is_terminal(state);
        // A failure may be passing (the upstream was away): it is kept only long
        // enough for every follower to read it, so the next watch tries again.
        let ttl = match state {
            WatchState::Failed(_) => self.hub.timing.lease,
            _ => self.hub.timing.snapshot_ttl,
        };
        if let Err(error) = self
            .hub
            .scripts
            .write(&self.hub, &self.names, bytes, terminal, ttl)
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
        if let WatchState::Live { observed_at, .. } = &state {
            let observed = (observed_at.seconds, observed_at.nanos);
            if !terminal && self.last_observed.is_some_and(|last| observed < last) {
                return false;
            }
            self.last_observed = Some(observed);
        }
        // The holder's own snapshot only echoes what it published; a terminal one
        // written by anyone ends the watch everywhere.
        if self.mode != Mode::Holder || terminal {
            self.pacer.offer(state);
        }
        self.last_read = Some(bytes);
        terminal
    }

    /// A Redis call failed: after two in a row (or at once when Redis is known to be
    /// down) this replica polls for itself. Calls that only timed out must go on failing
    /// for half a lease first: a replica starved of CPU sees its own calls time out while
    /// the holder polls on, and a second poller would be a second upstream stream.
    fn failed(&mut self, error: &redis::RedisError) {
        self.failures += 1;
        if self.mode == Mode::Fallback || (self.failures < 2 && self.hub.redis.is_up()) {
            return;
        }
        if error.is_timeout() {
            let since = *self.slow_since.get_or_insert_with(Instant::now);
            if since.elapsed() < self.hub.timing.lease / 2 {
                return;
            }
        }
        self.hub.redis_failed(error);
        self.mode = Mode::Fallback;
        if self.poller.is_none() {
            self.start_poller();
        }
    }

    fn start_poller(&mut self) {
        let (tx, rx) = watch::channel(WatchState::Connecting);
        let task = tokio::spawn((self.start)(Publisher::new(tx)));
        self.poller = Some(Poller { rx, task });
    }

    /// Stops polling and frees the lease for whoever comes next.
    async fn resign(&mut self) {
        tracing::debug!(resource = %self.names.channel.trim_end_matches(":hint"), "gave up the watch lease");
        self.poller = None;
        self.mode = Mode::Follower;
        if let Err(error) = self.hub.scripts.release(&self.hub, &self.names).await {
            tracing::debug!(error = %self.hub.redis.describe(&error), "cannot release a lease; it lapses");
        }
    }

    /// True (and forgotten) when nobody here watches and nothing here must go on.
    fn idle(&self) -> bool {
        if self.mode == Mode::Holder {
            return false;
        }
        // Checked under the registry's lock, which `subscribe` holds while it joins.
        let mut locals = self.hub.lock();
        if self.pacer.out().receiver_count() > 0 {
            return false;
        }
        forget(&mut locals, &self.name, self.pacer.out());
        true
    }

    fn forget(&self) {
        forget(&mut self.hub.lock(), &self.name, self.pacer.out());
    }
}

impl<T> Drop for Follower<T> {
    fn drop(&mut self) {
        self.hub.running.send_modify(|n| *n = n.saturating_sub(1));
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
