//! The Redis side of the hub: the keys of one watched resource (one hash tag, so one
//! Cluster slot) and the Lua scripts that keep lease, interest and snapshot consistent.

use redis::{Cmd, RedisError};

use super::redis::Inner;

/// The keys and channel of one watched resource, all under its hash tag.
pub(crate) struct Names {
    /// Who runs the poller: a replica id, with a TTL of one lease.
    lease: String,
    /// Which replicas watch: a sorted set of replica ids scored by expiry (ms).
    interest: String,
    /// The last state the holder published, versioned bytes (see `wire`).
    snapshot: String,
    /// Where the holder publishes each snapshot it writes (a hint: pub/sub may lose it).
    pub(crate) channel: String,
}

impl Names {
    /// The names for the resource whose key renders as `key`.
    pub(crate) fn new(key: &str) -> Self {
        Self {
            lease: format!("{key}:lease"),
            interest: format!("{key}:interest"),
            snapshot: format!("{key}:snapshot"),
            channel: format!("{key}:hint"),
        }
    }
}

/// Who holds a resource's lease, as a tick found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// This replica (renewed or just taken).
    Me,
    /// Another replica.
    Other,
    /// Nobody, and this replica did not take it.
    Nobody,
}

/// What one tick learnt.
pub(crate) struct Tick {
    pub(crate) role: Role,
    /// Replicas watching the resource, this one included.
    pub(crate) watchers: u64,
    /// The snapshot, unless this replica holds the lease and it is not terminal.
    pub(crate) snapshot: Option<Vec<u8>>,
}

/// Marks (or clears) this replica's interest, drops expired ones, renews the lease if
/// this replica holds it, takes it if nobody does and someone watches a resource that
/// is not over, and reads the snapshot. Time is Redis's, so replicas' clocks may differ.
const TICK: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease_ms = tonumber(ARGV[2])
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[2], now + lease_ms, ARGV[1])
  redis.call('PEXPIRE', KEYS[2], lease_ms * 2)
else
  redis.call('ZREM', KEYS[2], ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local watchers = redis.call('ZCARD', KEYS[2])
local snap = redis.call('GET', KEYS[3])
local terminal = snap and string.byte(snap, 2) >= 2
local holder = redis.call('GET', KEYS[1])
local role = 2
if holder == ARGV[1] then
  role = 1
  redis.call('PEXPIRE', KEYS[1], lease_ms)
elseif not holder then
  role = 0
  if ARGV[4] == '1' and watchers > 0 and not terminal then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', lease_ms)
    role = 1
  end
end
if role == 1 and not terminal then snap = false end
return {role, watchers, snap}
";

/// The holder's write: the snapshot (never over a terminal one) and a hint; a terminal
/// snapshot also frees the lease. A replica that lost the lease writes nothing.
const WRITE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local old = redis.call('GET', KEYS[2])
if old and string.byte(old, 2) >= 2 then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
if ARGV[4] == '1' then redis.call('DEL', KEYS[1]) end
redis.call(ARGV[5], ARGV[6], ARGV[2])
return 1
";

/// Deletes the snapshot if it is terminal; a live one belongs to a running watch.
const FORGET: &str = r"
local snap = redis.call('GET', KEYS[1])
if snap and string.byte(snap, 2) >= 2 then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Frees the lease if this replica holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
";

/// The hub's Redis calls.
pub(crate) struct Scripts {
    /// `SPUBLISH` on Cluster (the hint stays on the resource's shard), else `PUBLISH`.
    publish: &'static str,
}

impl Scripts {
    pub(crate) fn new(cluster: bool) -> Self {
        Self {
            publish: if cluster { "SPUBLISH" } else { "PUBLISH" },
        }
    }

    pub(crate) async fn tick<T>(
        &self,
        hub: &Inner<T>,
        names: &Names,
        interested: bool,
        may_lead: bool,
    ) -> Result<Tick, RedisError> {
        let (role, watchers, snapshot): (i64, u64, Option<Vec<u8>>) = eval(TICK, 3)
            .arg(&names.lease)
            .arg(&names.interest)
            .arg(&names.snapshot)
            .arg(&hub.replica)
            .arg(hub.timing.lease_ms())
            .arg(flag(interested))
            .arg(flag(may_lead))
            .query_async(&mut hub.redis.clone())
            .await?;
        let role = match role {
            1 => Role::Me,
            0 => Role::Nobody,
            _ => Role::Other,
        };
        Ok(Tick {
            role,
            watchers,
            snapshot,
        })
    }

    pub(crate) async fn write<T>(
        &self,
        hub: &Inner<T>,
        names: &Names,
        snapshot: Vec<u8>,
        terminal: bool,
        ttl: std::time::Duration,
    ) -> Result<(), RedisError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let _: i64 = eval(WRITE, 2)
            .arg(&names.lease)
            .arg(&names.snapshot)
            .arg(&hub.replica)
            .arg(snapshot)
            .arg(ttl_ms.max(1))
            .arg(flag(terminal))
            .arg(self.publish)
            .arg(&names.channel)
            .query_async(&mut hub.redis.clone())
            .await?;
        Ok(())
    }

    /// Frees the lease if held (`holder` says whether it may be).
    pub(crate) async fn release<T>(&self, hub: &Inner<T>, names: &Names) -> Result<(), RedisError> {
        let _: i64 = eval(RELEASE, 2)
            .arg(&names.lease)
            .arg(&names.interest)
            .arg(&hub.replica)
            .query_async(&mut hub.redis.clone())
            .await?;
        Ok(())
    }

    /// Deletes the resource's snapshot if it is terminal.
    pub(crate) async fn forget<T>(&self, hub: &Inner<T>, names: &Names) -> Result<(), RedisError> {
        let _: i64 = eval(FORGET, 1)
            .arg(&names.snapshot)
            .query_async(&mut hub.redis.clone())
            .await?;
        Ok(())
    }

    /// This replica stops watching: its interest goes, and its lease if `holder`.
    pub(crate) async fn leave<T>(
        &self,
        hub: &Inner<T>,
        names: &Names,
        holder: bool,
    ) -> Result<(), RedisError> {
        if holder {
            return self.release(hub, names).await;
        }
        let _: i64 = redis::cmd("ZREM")
            .arg(&names.interest)
            .arg(&hub.replica)
            .query_async(&mut hub.redis.clone())
            .await?;
        Ok(())
    }
}

/// `EVAL` of `script` with `keys` keys to follow. Redis caches the script by its hash;
/// sending its few hundred bytes each time spares a NOSCRIPT round trip after restarts.
fn eval(script: &str, keys: usize) -> Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(keys);
    cmd
}

fn flag(on: bool) -> &'static str {
    if on { "1" } else { "0" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{ResourceKey, kind};

    fn tag(name: &str) -> &str {
        let open = name.find('{').expect("a hash tag") + 1;
        &name[open..open + name[open..].find('}').expect("closed")]
    }

    #[test]
    fn every_name_of_a_resource_shares_its_slot() {
        let key = ResourceKey::new("t", "xai", kind::WATCH, "b{1}").to_string();
        let names = Names::new(&key);
        for name in [
            &names.lease,
            &names.interest,
            &names.snapshot,
            &names.channel,
        ] {
            assert_eq!(tag(name), tag(&key), "{name}");
            assert!(name.starts_with(&key));
        }
    }
}
