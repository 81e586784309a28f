//! Paces what one resource's local subscribers see: at most one change per interval,
//! changes in between merged (latest wins), the last value and failures passed at once.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::WatchState;

/// Stands between a resource's poller (or the snapshots read from Redis) and the
/// channel all its local subscribers read. Pacing here, once per resource, rather than
/// in each subscriber's stream means a change wakes every subscriber at most once per
/// interval, and the FINAL never waits behind a subscriber's sleep.
pub(super) struct Pacer<T> {
    out: watch::Sender<WatchState<T>>,
    every: Duration,
    sent_at: Option<Instant>,
    held: Option<WatchState<T>>,
}

impl<T> Pacer<T> {
    /// Paces `out` to one change per `every` (zero: every change passes at once).
    pub(super) fn new(out: watch::Sender<WatchState<T>>, every: Duration) -> Self {
        Self {
            out,
            every,
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
        let ready = self.sent_at.is_none_or(|at| at.elapsed() >= self.every);
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
            (Some(_), Some(at)) => tokio::time::sleep_until(at + self.every).await,
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
        let mut pacer = Pacer::new(tx, Duration::from_millis(100));
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

    #[tokio::test(start_paused = true)]
    async fn nothing_held_is_never_due() {
        let (tx, _rx) = watch::channel(WatchState::<u32>::Connecting);
        let mut pacer = Pacer::new(tx, Duration::from_millis(100));
        pacer.offer(live(1, false));
        let due = tokio::time::timeout(Duration::from_secs(5), pacer.due()).await;
        assert!(due.is_err());
    }
}
