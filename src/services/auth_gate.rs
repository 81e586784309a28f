//! Which tenants' credentials an upstream accepted within the auth TTL: only they may be
//! answered from the status cache. Kept per replica, and shared through Redis when there is one.

use std::time::Duration;

use tokio::time::Instant;

use crate::keys::{ResourceKey, kind};
use crate::shared_redis::SharedRedis;

/// Tenants whose credential an upstream accepted within the auth TTL. A key revoked
/// upstream stops getting cached answers once its last acceptance is older than the
/// TTL, and its next read goes upstream. With Redis, an acceptance seen by one replica
/// vouches on all of them for what is left of its TTL (not a fresh one), so a replica
/// joining a busy key does not read upstream just to learn what another already knows.
#[derive(Clone)]
pub struct AuthGate {
    /// Rendered auth key → until when it vouches.
    accepted: moka::future::Cache<String, Instant>,
    ttl: Duration,
    redis: Option<SharedRedis>,
}

impl AuthGate {
    /// Vouches for a tenant for `ttl` after each upstream acceptance; shares
    /// acceptances through `redis` when given.
    pub fn new(ttl: Duration, redis: Option<SharedRedis>) -> AuthGate {
        // Tenants are few next to cache entries; the bound only caps a key-spraying caller.
        const MAX_TENANTS: u64 = 100_000;
        AuthGate {
            accepted: moka::future::Cache::builder()
                .max_capacity(MAX_TENANTS)
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .build(),
            ttl,
            redis,
        }
    }

    /// Whether the upstream accepted the credential of `key`'s tenant (for `key`'s
    /// provider) within the TTL, on this replica or, with Redis, on any.
    pub async fn vouches_for(&self, key: &ResourceKey) -> bool {
        let name = auth_key(key);
        if self
            .accepted
            .get(&name)
            .await
            .is_some_and(|until| until > Instant::now())
        {
            return true;
        }
        let Some(redis) = &self.redis else {
            return false;
        };
        // What is left of another replica's acceptance; Redis away means "not known".
        let left: i64 = match redis.query(redis::cmd("PTTL").arg(&name)).await {
            Ok(ms) => ms,
            Err(_) => return false,
        };
        let Ok(left) = u64::try_from(left) else {
            return false;
        };
        let left = Duration::from_millis(left).min(self.ttl);
        if left.is_zero() {
            return false;
        }
        self.accepted.insert(name, Instant::now() + left).await;
        true
    }

    /// The upstream just answered `key`'s tenant successfully.
    pub async fn accepted(&self, key: &ResourceKey) {
        let name = auth_key(key);
        self.accepted
            .insert(name.clone(), Instant::now() + self.ttl)
            .await;
        if let Some(redis) = &self.redis {
            let ms = u64::try_from(self.ttl.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            // A lost write costs another replica one upstream read, nothing more.
            let _ = redis
                .query::<()>(redis::cmd("SET").arg(&name).arg(1).arg("PX").arg(ms))
                .await;
        }
    }

    /// The upstream just refused `key`'s tenant's credential: no cached answers until it
    /// accepts it again, however recent its last acceptance, on any replica.
    pub async fn refused(&self, key: &ResourceKey) {
        let name = auth_key(key);
        self.accepted.invalidate(&name).await;
        if let Some(redis) = &self.redis {
            // Redis away: the other replicas trust the acceptance for what is left of
            // its TTL, as they would without Redis.
            let _ = redis.query::<()>(redis::cmd("DEL").arg(&name)).await;
        }
    }
}

/// One entry per tenant and provider (a managed tenant has a key for each upstream).
fn auth_key(key: &ResourceKey) -> String {
    ResourceKey::new(key.tenant.clone(), key.provider, kind::AUTH, "credential").to_string()
}
