//! The in-process hub: a `tokio::sync::watch` channel per key, fed by one poller task
//! that starts with the first subscriber and stops with the last (or when it is done).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::{ProgressHub, Publisher, StartPoller, WatchState};
use crate::keys::ResourceKey;

/// Shares one poller per key among all local subscribers.
pub struct MemoryHub<T> {
    channels: Arc<Mutex<Channels<T>>>,
}

impl<T> Default for MemoryHub<T> {
    fn default() -> Self {
        Self {
            channels: Arc::default(),
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

        let poller = start(Publisher::new(sender.clone()));
        let registry = self.channels.clone();
        tokio::spawn(async move {
            tokio::pin!(poller);
            loop {
                tokio::select! {
                    () = &mut poller => break,
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
        let hub = MemoryHub::<u64>::default();
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
        let hub = MemoryHub::<String>::default();
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
    async fn tenants_never_share_a_poller() {
        let hub = MemoryHub::<u64>::default();
        let idle =
            || -> StartPoller<u64> { Arc::new(|_publisher| Box::pin(std::future::pending())) };
        let a = hub.subscribe(&key("job-3"), idle());
        let other = ResourceKey::new("u", "sutro", crate::keys::kind::WATCH, "job-3");
        let b = hub.subscribe(&other, idle());
        assert_eq!(hub.active(), 2);
        drop((a, b));
    }
}
