//! The in-process hub: a `tokio::sync::watch` channel per key, fed (paced) by one
//! poller task that starts with the first subscriber and stops with the last or done.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::pace::{Pace, Pacer};
use super::{ProgressHub, Publisher, StartPoller, WatchState};
use crate::keys::ResourceKey;

/// Shares one poller per key among all local subscribers.
pub struct MemoryHub<T> {
    channels: Arc<Mutex<Channels<T>>>,
    pace: Pace,
}

impl<T> MemoryHub<T> {
    /// A hub whose subscribers see changes as `pace` allows.
    pub fn new(pace: Pace) -> Self {
        Self {
            channels: Arc::default(),
            pace,
        }
    }
}

impl<T> ProgressHub<T> for MemoryHub<T>
where
    T: prost::Message + Default + Clone + PartialEq + 'static,
{
    fn subscribe(
        &self,
        key: &ResourceKey,
        start: StartPoller<T>,
    ) -> watch::Receiver<WatchState<T>> {
        let key = key.to_string();
        let mut channels = self.lock();
        if let Some(sender) = channels.get(&key) {
            return sender.subscribe();
        }
        let (sender, receiver) = watch::channel(WatchState::Connecting);
        channels.insert(key.clone(), sender.clone());
        drop(channels);

        let (polled, mut read) = watch::channel(WatchState::Connecting);
        let poller = start(Publisher::new(polled));
        let mut pacer = Pacer::new(sender.clone(), self.pace);
        let registry = self.channels.clone();
        tokio::spawn(async move {
            tokio::pin!(poller);
            loop {
                tokio::select! {
                    () = &mut poller => {
                        // What it published last goes out now, unpaced.
                        let last = read.borrow_and_update();
                        if last.has_changed() {
                            pacer.offer(last.clone());
                        }
                        pacer.release();
                        break;
                    }
                    changed = read.changed() => {
                        if changed.is_err() {
                            pacer.release();
                            break;
                        }
                        pacer.offer(read.borrow_and_update().clone());
                    }
                    () = pacer.due() => {
                        pacer.release();
                    }
                    () = sender.closed() => {
                        // Checked under the registry's lock, which `subscribe` holds while
                        // it joins: nobody can join between the check and the removal.
                        let mut channels = lock(&registry);
                        if sender.receiver_count() == 0 {
                            forget(&mut channels, &key, &sender);
                            return;
                        }
                    }
                }
            }
            forget(&mut lock(&registry), &key, &sender);
        });
        receiver
    }

    fn active(&self) -> usize {
        self.lock().len()
    }
}

impl<T> MemoryHub<T> {
    fn lock(&self) -> MutexGuard<'_, Channels<T>> {
        lock(&self.channels)
    }
}

type Channels<T> = HashMap<String, watch::Sender<WatchState<T>>>;

fn lock<T>(channels: &Mutex<Channels<T>>) -> MutexGuard<'_, Channels<T>> {
    channels
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Forgets `key` if it still names this poller's channel (a newer poller may own it).
fn forget<T>(channels: &mut Channels<T>, key: &str, sender: &watch::Sender<WatchState<T>>) {
    if channels.get(key).is_some_and(|s| s.same_channel(sender)) {
        channels.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn key(id: &str) -> ResourceKey {
        ResourceKey::new("t", "sutro", crate::keys::kind::WATCH, id)
    }

    #[tokio::test]
    async fn many_subscribers_share_one_poller_which_stops_with_the_last() {
        let hub = MemoryHub::<u64>::new(Pace::NONE);
        let started = Arc::new(AtomicUsize::new(0));
        let mut receivers = Vec::new();
        for _ in 0..1000 {
            let started = started.clone();
            receivers.push(hub.subscribe(
                &key("job-1"),
                Arc::new(move |publisher| {
                    started.fetch_add(1, Ordering::SeqCst);
                    Box::pin(async move {
                        for n in 1.. {
                            publisher.publish(n, false);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    })
                }),
            ));
        }
        assert_eq!(started.load(Ordering::SeqCst), 1);
        for rx in &mut receivers {
            rx.changed().await.unwrap();
        }
        assert_eq!(hub.active(), 1);
        drop(receivers);
        for _ in 0..100 {
            if hub.active() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(hub.active(), 0, "the poller must stop when nobody watches");
    }

    #[tokio::test]
    async fn a_finished_poller_keeps_its_last_value_for_late_readers() {
        let hub = MemoryHub::<String>::new(Pace::NONE);
        let mut rx = hub.subscribe(
            &key("job-2"),
            Arc::new(|publisher| Box::pin(async move { publisher.publish("done".into(), true) })),
        );
        rx.changed().await.unwrap();
        assert!(
            matches!(&*rx.borrow(), WatchState::Live { value, done: true, .. } if value == "done")
        );
    }

    #[tokio::test]
    async fn changes_are_paced_but_the_final_value_is_not() {
        let hub = MemoryHub::<u64>::new(Pace {
            min_interval: Duration::from_secs(5),
            fanout_per_second: 0,
        });
        let mut rx = hub.subscribe(
            &key("job-4"),
            Arc::new(|publisher| {
                Box::pin(async move {
                    publisher.publish(1, false);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    publisher.publish(2, false);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    publisher.publish(3, true);
                    std::future::pending::<()>().await;
                })
            }),
        );
        let mut seen = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(1), async {
            while rx.changed().await.is_ok() {
                if let WatchState::Live { value, done, .. } = &*rx.borrow_and_update() {
                    seen.push(*value);
                    if *done {
                        return;
                    }
                }
            }
        })
        .await;
        assert!(
            ended.is_ok(),
            "the final value waited out the pace: {seen:?}"
        );
        assert_eq!(seen, [1, 3], "2 came within the pace of 1 and was merged");
    }

    #[tokio::test]
    async fn tenants_never_share_a_poller() {
        let hub = MemoryHub::<u64>::new(Pace::NONE);
        let idle =
            || -> StartPoller<u64> { Arc::new(|_publisher| Box::pin(std::future::pending())) };
        let a = hub.subscribe(&key("job-3"), idle());
        let other = ResourceKey::new("u", "sutro", crate::keys::kind::WATCH, "job-3");
        let b = hub.subscribe(&other, idle());
        assert_eq!(hub.active(), 2);
        drop((a, b));
    }
}
