//! Paces what one resource's local subscribers see: at most one change per interval,
//! changes in between merged (latest wins), the last value and failures passed at once.
//! The interval grows with the subscribers, so a replica's fan-out stays within a budget.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::WatchState;

/// How often a resource's subscribers on one replica may be sent a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Least time between two changes (`watch_min_interval_ms`; zero: every change).
    pub min_interval: Duration,
    /// Change messages per second all of a resource's subscribers on this replica may
    /// be sent together (`watch_fanout_per_second`; 0: no budget). With many watchers a
    /// change goes out less often, so sending one never falls behind the next: a
    /// progress bar loses a few intermediate frames, and the FINAL, which always passes
    /// at once, never queues behind changes still on their way.
    pub fanout_per_second: u32,
}

impl Pace {
    /// No pacing: every change passes at once, whatever the watchers.
    pub const NONE: Pace = Pace {
        min_interval: Duration::ZERO,
        fanout_per_second: 0,
    };

    /// The pace `config` asks for.
    pub fn from_config(config: &crate::config::Config) -> Pace {
        Pace {
            min_interval: config.watch_min_interval,
            fanout_per_second: config.watch_fanout_per_second,
        }
    }

    /// The interval for `subscribers` watchers of one resource.
    pub fn interval(&self, subscribers: usize) -> Duration {
        if self.fanout_per_second == 0 {
            return self.min_interval;
        }
        let fanout =
            Duration::from_secs_f64(subscribers as f64 / f64::from(self.fanout_per_second));
        self.min_interval.max(fanout)
    }
}

/// Stands between a resource's poller (or the snapshots read from Redis) and the
/// channel all its local subscribers read. Pacing here, once per resource, rather than
/// in each subscriber's stream means a change wakes every subscriber at most once per
/// interval, and the FINAL never waits behind a subscriber's sleep.
pub(super) struct Pacer<T> {
    out: watch::Sender<WatchState<T>>,
    pace: Pace,
    sent_at: Option<Instant>,
    held: Option<WatchState<T>>,
}

impl<T> Pacer<T> {
    /// Paces `out` as `pace` says.
    pub(super) fn new(out: watch::Sender<WatchState<T>>, pace: Pace) -> Self {
        Self {
            out,
            pace,
            sent_at: None,
            held: None,
        }
    }

    /// The subscribers' channel.
    pub(super) fn out(&self) -> &watch::Sender<WatchState<T>> {
        &self.out
    }

    /// Passes `state` on now when it is the last one, a failure, the first, or an
    /// interval after the previous; else holds it (replacing what was held) until
    /// [`Self::due`]. True when it passed it on.
    pub(super) fn offer(&mut self, state: WatchState<T>) -> bool {
        let urgent = !matches!(state, WatchState::Live { done: false, .. });
        let ready = self.sent_at.is_none_or(|at| at.elapsed() >= self.every());
        if urgent || ready {
            self.held = None;
            self.send(state);
            true
        } else {
            self.held = Some(state);
            false
        }
    }

    /// Resolves when a held state may go out; never while nothing is held.
    pub(super) async fn due(&self) {
        match (&self.held, self.sent_at) {
            (Some(_), Some(at)) => tokio::time::sleep_until(at + self.every()).await,
            (Some(_), None) => {}
            (None, _) => std::future::pending().await,
        }
    }

    /// Passes on what is held. True when something was.
    pub(super) fn release(&mut self) -> bool {
        match self.held.take() {
            Some(state) => {
                self.send(state);
                true
            }
            None => false,
        }
    }

    /// The interval for the subscribers there are now.
    fn every(&self) -> Duration {
        self.pace.interval(self.out.receiver_count())
    }

    fn send(&mut self, state: WatchState<T>) {
        self.sent_at = Some(Instant::now());
        self.out.send_replace(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(n: u32, done: bool) -> WatchState<u32> {
        WatchState::Live {
            value: n,
            done,
            observed_at: prost_types::Timestamp::default(),
        }
    }

    fn seen(rx: &watch::Receiver<WatchState<u32>>) -> Option<(u32, bool)> {
        match &*rx.borrow() {
            WatchState::Live { value, done, .. } => Some((*value, *done)),
            _ => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn changes_within_an_interval_merge_and_the_last_one_waits_for_nothing() {
        let (tx, rx) = watch::channel(WatchState::Connecting);
        let mut pacer = Pacer::new(tx, every(100));
        assert!(pacer.offer(live(1, false)), "the first value goes at once");
        assert!(!pacer.offer(live(2, false)));
        assert!(!pacer.offer(live(3, false)));
        assert_eq!(seen(&rx), Some((1, false)));
        let started = Instant::now();
        pacer.due().await;
        assert_eq!(started.elapsed(), Duration::from_millis(100));
        assert!(pacer.release());
        assert_eq!(seen(&rx), Some((3, false)), "the latest held value wins");
        assert!(!pacer.offer(live(4, false)));
        assert!(pacer.offer(live(5, true)), "the final value never waits");
        assert_eq!(seen(&rx), Some((5, true)));
        assert!(!pacer.release(), "the final value replaced what was held");
    }

    fn every(ms: u64) -> Pace {
        Pace {
            min_interval: Duration::from_millis(ms),
            fanout_per_second: 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn many_subscribers_stretch_the_interval_to_the_fanout_budget() {
        let pace = Pace {
            min_interval: Duration::from_millis(100),
            fanout_per_second: 10_000,
        };
        assert_eq!(pace.interval(1), Duration::from_millis(100));
        assert_eq!(pace.interval(1_000), Duration::from_millis(100));
        assert_eq!(pace.interval(5_000), Duration::from_millis(500));
        assert_eq!(Pace::NONE.interval(1_000_000), Duration::ZERO);

        let (tx, rx) = watch::channel(WatchState::Connecting);
        let watchers: Vec<_> = (0..2_999).map(|_| rx.clone()).collect();
        let mut pacer = Pacer::new(tx, pace);
        assert!(pacer.offer(live(1, false)));
        assert!(!pacer.offer(live(2, false)));
        let started = Instant::now();
        pacer.due().await;
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(300),
            "3 000 watchers"
        );
        assert!(pacer.release());
        drop(watchers);
        assert!(!pacer.offer(live(3, false)));
        pacer.due().await;
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(400),
            "one watcher left: back to the minimum"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_held_is_never_due() {
        let (tx, _rx) = watch::channel(WatchState::<u32>::Connecting);
        let mut pacer = Pacer::new(tx, every(100));
        pacer.offer(live(1, false));
        let due = tokio::time::timeout(Duration::from_secs(5), pacer.due()).await;
        assert!(due.is_err());
    }
}
