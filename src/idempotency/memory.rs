//! The in-process idempotency store: a moka cache with a TTL holding each key's entry
//! in a watch channel, so callers waiting on a running create wake as soon as it ends.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use moka::ops::compute::{CompResult, Op};
use tokio::sync::watch;

use super::{Claim, Entry, IdempotencyStore, Record};
use crate::error::{Error, Result};
use crate::keys::ResourceKey;

/// One key's entry; `None` once released, which wakes its waiters.
type Slot = Arc<watch::Sender<Option<Entry>>>;

/// Request ids remembered in this process for `ttl`.
#[derive(Clone)]
pub struct MemoryIdempotency {
    cache: Cache<String, Slot>,
}

impl MemoryIdempotency {
    /// A store that remembers each key for `ttl`, holding at most `capacity` keys.
    pub fn new(ttl: Duration, capacity: u64) -> Self {
        Self {
            cache: Cache::builder()
                .time_to_live(ttl)
                .max_capacity(capacity)
                .build(),
        }
    }
}

#[tonic::async_trait]
impl IdempotencyStore for MemoryIdempotency {
    async fn claim(&self, key: &ResourceKey, entry: &Entry) -> Result<Claim> {
        let fresh: Slot = Arc::new(watch::channel(Some(entry.clone())).0);
        let result = self
            .cache
            .entry(key.to_string())
            .and_compute_with(|slot| {
                let op = match slot {
                    Some(slot) if slot.value().borrow().is_some() => Op::Nop,
                    _ => Op::Put(fresh),
                };
                std::future::ready(op)
            })
            .await;
        match result {
            CompResult::Unchanged(slot) => slot
                .into_value()
                .borrow()
                .clone()
                .map(Claim::Existing)
                .ok_or_else(|| Error::Internal("an idempotency slot emptied while locked".into())),
            _ => Ok(Claim::Claimed),
        }
    }

    async fn settle(&self, key: &ResourceKey, claimed: &Entry, settled: &Entry) -> Result<()> {
        if let Some(slot) = self.cache.get(&key.to_string()).await {
            slot.send_if_modified(|held| {
                let ours = held.as_ref() == Some(claimed);
                if ours {
                    *held = Some(settled.clone());
                }
                ours
            });
        }
        Ok(())
    }

    async fn release(&self, key: &ResourceKey, claimed: &Entry) -> Result<()> {
        let result = self
            .cache
            .entry(key.to_string())
            .and_compute_with(|slot| {
                let op = match slot {
                    Some(slot) if slot.value().borrow().as_ref() == Some(claimed) => Op::Remove,
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
        if let CompResult::Removed(slot) = result {
            slot.into_value().send_replace(None);
        }
        Ok(())
    }

    async fn wait_settled(&self, key: &ResourceKey) -> Result<()> {
        let Some(slot) = self.cache.get(&key.to_string()).await else {
            return Ok(());
        };
        let mut entry = slot.subscribe();
        drop(slot);
        // A closed channel means the slot left the cache: settled as far as we know.
        let _ = entry
            .wait_for(|entry| {
                !matches!(
                    entry,
                    Some(Entry {
                        record: Record::Pending { .. },
                        ..
                    })
                )
            })
            .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ResourceKey {
        ResourceKey::new("t", "xai", crate::keys::kind::IDEMPOTENCY, "r-1")
    }

    fn entry(record: Record) -> Entry {
        Entry {
            fingerprint: "fp".into(),
            record,
        }
    }

    #[tokio::test]
    async fn a_claim_holds_until_released_and_settling_keeps_it() {
        let store = MemoryIdempotency::new(Duration::from_secs(60), 100);
        let pending = entry(Record::Pending { until_ms: 10 });
        assert_eq!(store.claim(&key(), &pending).await.unwrap(), Claim::Claimed);
        assert_eq!(
            store.claim(&key(), &pending).await.unwrap(),
            Claim::Existing(pending.clone())
        );
        let created = entry(Record::Created { id: "b-1".into() });
        store.settle(&key(), &pending, &created).await.unwrap();
        assert_eq!(
            store.claim(&key(), &pending).await.unwrap(),
            Claim::Existing(created.clone())
        );
        // Neither a late settle nor a late release touches what is no longer its claim.
        let unknown = entry(Record::Unknown);
        store.settle(&key(), &pending, &unknown).await.unwrap();
        store.release(&key(), &pending).await.unwrap();
        assert_eq!(
            store.claim(&key(), &pending).await.unwrap(),
            Claim::Existing(created.clone())
        );
        store.release(&key(), &created).await.unwrap();
        assert_eq!(store.claim(&key(), &pending).await.unwrap(), Claim::Claimed);
    }

    #[tokio::test]
    async fn waiters_wake_when_the_create_settles_or_is_released() {
        let store = MemoryIdempotency::new(Duration::from_secs(60), 100);
        let pending = entry(Record::Pending { until_ms: 10 });
        store.claim(&key(), &pending).await.unwrap();
        let waiting = tokio::spawn({
            let store = store.clone();
            async move { store.wait_settled(&key()).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "a pending key keeps its waiters");
        let unknown = entry(Record::Unknown);
        store.settle(&key(), &pending, &unknown).await.unwrap();
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("woken by the settle")
            .unwrap()
            .unwrap();

        store.release(&key(), &unknown).await.unwrap();
        store.claim(&key(), &pending).await.unwrap();
        let waiting = tokio::spawn({
            let store = store.clone();
            async move { store.wait_settled(&key()).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        store.release(&key(), &pending).await.unwrap();
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("woken by the release")
            .unwrap()
            .unwrap();
        // A key nobody holds is settled at once.
        store.wait_settled(&key()).await.unwrap();
    }
}
