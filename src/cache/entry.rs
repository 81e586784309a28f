//! One cached snapshot with the time the upstream answered, its freshness under a policy,
//! and its byte encoding in Redis (shared by every replica, so the time is wall-clock ms).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

use super::{Fetched, Lookup, Outcome, TtlPolicy};

/// The encoding's version byte, so a later layout can tell old entries apart.
pub(crate) const VERSION: u8 = 1;
const HEADER: usize = 1 + 1 + 8;

/// A snapshot and when the upstream answered with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) bytes: Bytes,
    pub(crate) is_final: bool,
    /// Unix milliseconds when the upstream answered.
    pub(crate) fetched_at_ms: u64,
}

/// Where an entry stands under a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    Fresh,
    Stale,
    Expired,
}

/// The cache's clock: unix milliseconds, as entries record when the upstream answered.
pub fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

impl Entry {
    /// What the upstream answered just now.
    pub(crate) fn fetched_now(fetched: Fetched) -> Entry {
        Entry {
            bytes: fetched.bytes,
            is_final: fetched.is_final,
            fetched_at_ms: now_ms(),
        }
    }

    /// Time since the upstream answered (zero if another replica's clock is ahead).
    pub(crate) fn age(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.fetched_at_ms))
    }

    pub(crate) fn freshness(&self, policy: &TtlPolicy) -> Freshness {
        let age = self.age();
        if age < policy.fresh_for(self.is_final) {
            Freshness::Fresh
        } else if age < policy.keep_for(self.is_final) {
            Freshness::Stale
        } else {
            Freshness::Expired
        }
    }

    /// How much longer this entry is worth keeping (for a store's expiry).
    pub(crate) fn keep_remaining(&self, policy: &TtlPolicy) -> Duration {
        policy.keep_for(self.is_final).saturating_sub(self.age())
    }

    pub(crate) fn lookup(&self, outcome: Outcome) -> Lookup {
        Lookup {
            bytes: self.bytes.clone(),
            outcome,
            age: self.age(),
            is_final: self.is_final,
        }
    }

    /// `version, is_final, fetched_at_ms (big-endian), snapshot bytes`.
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(HEADER + self.bytes.len());
        out.put_u8(VERSION);
        out.put_u8(u8::from(self.is_final));
        out.put_u64(self.fetched_at_ms);
        out.put_slice(&self.bytes);
        out.freeze()
    }

    /// The entry `encode` wrote; `None` for anything else (treated as a miss).
    pub(crate) fn decode(raw: &[u8]) -> Option<Entry> {
        if raw.len() < HEADER || raw[0] != VERSION {
            return None;
        }
        let fetched_at: [u8; 8] = raw[2..HEADER].try_into().ok()?;
        Some(Entry {
            is_final: raw[1] == 1,
            fetched_at_ms: u64::from_be_bytes(fetched_at),
            bytes: Bytes::copy_from_slice(&raw[HEADER..]),
        })
    }
}

/// Expires each entry of an in-process store when it is no longer worth keeping.
pub(crate) struct KeepWhileUseful(pub(crate) TtlPolicy);

impl moka::Expiry<String, Entry> for KeepWhileUseful {
    fn expire_after_create(
        &self,
        _key: &String,
        entry: &Entry,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(entry.keep_remaining(&self.0))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        entry: &Entry,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.keep_remaining(&self.0))
    }
}

/// Stores `entry` at `key` unless that would replace a final entry with a live one, and
/// answers the entry kept. Writes can land out of order (a slow refresh that read RUNNING
/// after a watch poller wrote the FINAL), and a final state never goes back to a live
/// one; an explicit invalidate removes a final entry first.
pub(crate) async fn store_unless_final(
    store: &moka::future::Cache<String, Entry>,
    key: &str,
    entry: Entry,
) -> Entry {
    use moka::ops::compute::{CompResult, Op};
    let computed = store
        .entry(key.to_string())
        .and_compute_with(|current| {
            let op = match current {
                Some(current) if current.value().is_final && !entry.is_final => Op::Nop,
                _ => Op::Put(entry.clone()),
            };
            std::future::ready(op)
        })
        .await;
    match computed {
        CompResult::Inserted(kept)
        | CompResult::ReplacedWith(kept)
        | CompResult::Unchanged(kept) => kept.into_value(),
        CompResult::StillNone(_) | CompResult::Removed(_) => entry,
    }
}

/// The entry at `key` if the upstream answered it at or after `since_ms` (unix ms): read
/// for this tenant since a revalidating caller arrived, so as good as its own read.
pub(crate) async fn answered_since(
    store: &moka::future::Cache<String, Entry>,
    key: &str,
    since_ms: u64,
) -> Option<Entry> {
    let entry = store.get(key).await?;
    (entry.fetched_at_ms >= since_ms).then_some(entry)
}

/// An in-process store of entries, each kept while it is fresh or servable stale.
pub(crate) fn local_store(
    policy: TtlPolicy,
    max_entries: u64,
) -> moka::future::Cache<String, Entry> {
    moka::future::Cache::builder()
        .max_capacity(max_entries)
        .expire_after(KeepWhileUseful(policy))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_refuses_garbage() {
        let entry = Entry {
            bytes: Bytes::from_static(b"\x08\x01snapshot"),
            is_final: true,
            fetched_at_ms: 1_700_000_000_123,
        };
        assert_eq!(Entry::decode(&entry.encode()), Some(entry));
        assert_eq!(Entry::decode(b"\x02\x00short"), None);
        assert_eq!(Entry::decode(b""), None);
    }

    #[test]
    fn freshness_follows_the_state() {
        let policy = TtlPolicy {
            live: Duration::from_secs(1),
            terminal: Duration::from_secs(60),
            stale: Duration::from_secs(1),
        };
        let at = |ago_ms: u64, is_final| Entry {
            bytes: Bytes::new(),
            is_final,
            fetched_at_ms: now_ms() - ago_ms,
        };
        assert_eq!(at(500, false).freshness(&policy), Freshness::Fresh);
        assert_eq!(at(1_500, false).freshness(&policy), Freshness::Stale);
        assert_eq!(at(2_500, false).freshness(&policy), Freshness::Expired);
        assert_eq!(at(2_500, true).freshness(&policy), Freshness::Fresh);
    }
}
