//! The in-process hub: a `tokio::sync::watch` channel per key, fed by one poller task
//! that starts with the first subscriber and stops with the last (or when it is done).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

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

impl<T: Clone + Send + Sync + 'static> MemoryHub<T> {
    /// Subscribes to `key`. If nobody watches it yet, `start` is called with the
    /// channel's sender and the future it returns is spawned as the key's poller;
    /// otherwise the running poller is shared. The poller is dropped when its last
    /// subscriber leaves, and the key is forgotten when the poller ends.
    pub fn subscribe<F, Fut>(&self, key: &str, initial: T, start: F) -> watch::Receiver<T>
    where
        F: FnOnce(watch::Sender<T>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut channels = self.lock();
        if let Some(sender) = channels.get(key) {
            return sender.subscribe();
        }
        let (sender, receiver) = watch::channel(initial);
        channels.insert(key.to_owned(), sender.clone());
        drop(channels);

        let poller = start(sender.clone());
        let registry = self.channels.clone();
        let key = key.to_owned();
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

    /// How many keys have a running poller.
    pub fn active(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, Channels<T>> {
        lock(&self.channels)
    }
}

type Channels<T> = HashMap<String, watch::Sender<T>>;

fn lock<T>(channels: &Mutex<Channels<T>>) -> MutexGuard<'_, Channels<T>> {
    channels
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Forgets `key` if it still names this poller's channel (a newer poller may own it).
fn forget<T>(channels: &mut Channels<T>, key: &str, sender: &watch::Sender<T>) {
    if channels.get(key).is_some_and(|s| s.same_channel(sender)) {
        channels.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn many_subscribers_share_one_poller_which_stops_with_the_last() {
        let hub = MemoryHub::<u64>::default();
        let started = Arc::new(AtomicUsize::new(0));
        let mut receivers = Vec::new();
        for _ in 0..1000 {
            let started = started.clone();
            receivers.push(hub.subscribe("job-1", 0, move |tx| {
                started.fetch_add(1, Ordering::SeqCst);
                async move {
                    for n in 1.. {
                        if tx.send(n).is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }));
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
        let hub = MemoryHub::<&'static str>::default();
        let mut rx = hub.subscribe("job-2", "starting", |tx| async move {
            let _ = tx.send("done");
        });
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow(), "done");
    }
}
