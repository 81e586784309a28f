//! Cached reads for the services: a Get answered through the status cache, gated by how
//! recently the upstream accepted the caller's credential; and what watch pollers write.

use futures_util::FutureExt;
use prost::Message;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use tonic::{Code, Response};

use crate::cache::{Fetched, Outcome, StatusCache};
use crate::deadline::Deadline;
use crate::error::{Error, Result, UpstreamId};
use crate::keys::ResourceKey;
use crate::upstream::reply::Reply;

pub use super::auth_gate::AuthGate;

/// How long one caller waits for a lookup: until its own deadline, whatever the deadline
/// of the (shared) refresh it may be waiting for.
#[derive(Debug, Clone)]
pub struct Wait {
    /// The caller's deadline.
    pub deadline: Deadline,
    /// The upstream named in the DEADLINE_EXCEEDED the caller gets past it.
    pub upstream: UpstreamId,
}

impl Wait {
    /// `lookup`, or DEADLINE_EXCEEDED once the caller's deadline passes. Leaving early
    /// drops only this caller's wait: a refresh runs on as its own task.
    async fn bound<T>(&self, lookup: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::time::timeout_at(self.deadline.at(), lookup)
            .await
            .map_err(|_| Error::DeadlineExceeded {
                upstream: Some(self.upstream.clone()),
            })?
    }
}

/// Answers one Get through `cache` at `key`: `fetch` makes the upstream read (with the
/// caller's credentials) and `is_final` tells a terminal state. The response carries
/// `x-cache` and `age`, and on a MISS the upstream's request id when this call's own
/// read answered it (a call that joined another's read has none of its own).
pub async fn read_through<M, F, Fut>(
    cache: &Arc<dyn StatusCache>,
    auth: &AuthGate,
    key: &ResourceKey,
    fetch: F,
    is_final: fn(&M) -> bool,
    wait: Wait,
) -> Result<Response<M>>
where
    M: Message + Default + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<Reply<M>>> + Send + 'static,
{
    let rendered = key.to_string();
    let arrived_ms = crate::cache::now_ms();
    let request_id = Arc::new(Mutex::new(None));
    let refresh = {
        let (auth, gate_key, request_id) = (auth.clone(), key.clone(), request_id.clone());
        async move {
            // An upstream read's future is kilobytes (the HTTP client's states): made and
            // boxed only when a refresh runs, it stays out of every cache hit's future.
            let reply = match Box::pin(fetch()).await {
                Ok(reply) => reply,
                Err(error) => {
                    if error.code() == Code::Unauthenticated {
                        auth.refused(&gate_key).await;
                    }
                    return Err(error);
                }
            };
            auth.accepted(&gate_key).await;
            *request_id.lock().unwrap_or_else(PoisonError::into_inner) = reply.request_id;
            Ok(Fetched {
                is_final: is_final(&reply.body),
                bytes: reply.body.encode_to_vec().into(),
            })
        }
        .boxed()
        // Shared, so that a cached entry that does not decode can still be read upstream
        // once by this same refresh (not polled at all when the cache answered).
        .shared()
    };
    let lookup = if auth.vouches_for(key).await {
        cache.get_or_refresh(&rendered, refresh.clone().boxed())
    } else {
        cache.revalidate(&rendered, refresh.clone().boxed(), arrived_ms)
    };
    let lookup = wait.bound(lookup).await?;
    // An event on the RPC's span; the key is left out (it names the tenant and resource).
    tracing::debug!(
        cache = lookup.outcome.as_str(),
        kind = key.kind,
        age_secs = lookup.age.as_secs(),
        "status cache"
    );
    let (lookup, body) = match M::decode(lookup.bytes.as_ref()) {
        Ok(body) => (lookup, body),
        Err(error) => {
            // A corrupt or foreign entry is a miss, not the caller's failure: forget it
            // (a live answer would not replace it if it claims to be final) and read again.
            tracing::warn!(%error, kind = key.kind, "a cached entry does not decode; reading it upstream");
            cache.invalidate(&rendered).await;
            let lookup = wait
                .bound(cache.revalidate(&rendered, refresh.boxed(), u64::MAX))
                .await?;
            let body = M::decode(lookup.bytes.as_ref()).map_err(|e| {
                Error::Internal(format!("an upstream {} does not re-decode: {e}", key.kind))
            })?;
            (lookup, body)
        }
    };
    let request_id = match lookup.outcome {
        Outcome::Miss => request_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(),
        Outcome::Hit | Outcome::Stale => None,
    };
    let mut response = Reply { body, request_id }.into_response();
    lookup.annotate(response.metadata_mut());
    Ok(response)
}

/// What a watch poller needs to write what it reads into the status cache, so watched
/// resources are always fresh there. Bound to the tenant whose credentials it polls with.
#[derive(Clone)]
pub struct CacheWriter {
    cache: Arc<dyn StatusCache>,
    auth: AuthGate,
    key: ResourceKey,
}

impl CacheWriter {
    /// Writes for the tenant and resource of `key` (its kind is set per write).
    pub fn new(cache: Arc<dyn StatusCache>, auth: AuthGate, key: ResourceKey) -> CacheWriter {
        CacheWriter { cache, auth, key }
    }

    /// Stores `message`, just read upstream, as the resource's entry of `kind`.
    pub async fn put(&self, kind: &'static str, message: &impl Message, is_final: bool) {
        let key = ResourceKey {
            kind,
            ..self.key.clone()
        };
        let fetched = Fetched {
            bytes: message.encode_to_vec().into(),
            is_final,
        };
        self.cache.put(&key.to_string(), fetched).await;
        // The upstream just answered the poller, so it accepts the tenant's credential.
        self.auth.accepted(&key).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cache::{MemoryCache, TtlPolicy};
    use crate::keys::kind;
    use crate::proto::sutro::v1::Job;

    fn cache() -> Arc<dyn StatusCache> {
        let policy = TtlPolicy {
            live: Duration::from_secs(60),
            terminal: Duration::from_secs(60),
            stale: Duration::from_secs(60),
        };
        Arc::new(MemoryCache::new(policy, 100))
    }

    fn job(name: &str) -> impl FnOnce() -> std::future::Ready<Result<Reply<Job>>> + Send + 'static {
        let body = Job {
            name: Some(name.into()),
            ..Default::default()
        };
        let request_id = Some(format!("req-{name}"));
        move || std::future::ready(Ok(Reply { body, request_id }))
    }

    fn wait() -> Wait {
        Wait {
            deadline: Deadline::after(Duration::from_secs(5)),
            upstream: UpstreamId {
                provider: "sutro",
                host: "h".into(),
            },
        }
    }

    fn header<T>(response: &Response<T>, name: &str) -> Option<String> {
        let value = response.metadata().get(name)?;
        value.to_str().ok().map(str::to_owned)
    }

    #[tokio::test]
    async fn only_vouched_for_tenants_are_answered_from_the_cache() {
        let (cache, auth) = (cache(), AuthGate::new(Duration::from_secs(60), None));
        let key = ResourceKey::new("t", "sutro", kind::JOB, "job-1");
        let miss = read_through(&cache, &auth, &key, job("a"), |_| false, wait())
            .await
            .unwrap();
        assert_eq!(header(&miss, "x-cache").as_deref(), Some("MISS"));
        assert_eq!(
            header(&miss, "x-upstream-request-id").as_deref(),
            Some("req-a")
        );
        let hit = read_through(&cache, &auth, &key, job("b"), |_| false, wait())
            .await
            .unwrap();
        assert_eq!(header(&hit, "x-cache").as_deref(), Some("HIT"));
        assert_eq!(header(&hit, "age").as_deref(), Some("0"));
        // A hit never makes the upstream read's future (kilobytes, boxed) at all.
        let made = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let fetch = {
            let (made, read) = (made.clone(), job("unused"));
            move || {
                made.store(true, std::sync::atomic::Ordering::SeqCst);
                read()
            }
        };
        read_through(&cache, &auth, &key, fetch, |_| false, wait())
            .await
            .unwrap();
        assert!(!made.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(header(&hit, "x-upstream-request-id"), None);
        assert_eq!(hit.get_ref().name.as_deref(), Some("a"));

        // Another replica's auth gate (or this one's, once its TTL passed) knows nobody.
        let forgetful = AuthGate::new(Duration::from_secs(60), None);
        // Its caller arrives after the cached read, so that read cannot stand for its own.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let checked = read_through(&cache, &forgetful, &key, job("c"), |_| false, wait())
            .await
            .unwrap();
        assert_eq!(header(&checked, "x-cache").as_deref(), Some("MISS"));
        assert_eq!(checked.get_ref().name.as_deref(), Some("c"));
        assert!(forgetful.vouches_for(&key).await);

        // A key refused on any read loses its standing at once, not when the TTL runs out.
        let other = ResourceKey::new("t", "sutro", kind::JOB, "job-2");
        let refused = || std::future::ready(Err(Error::Unauthenticated("revoked".into())));
        let err = read_through::<Job, _, _>(&cache, &auth, &other, refused, |_| false, wait())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        assert!(
            !auth.vouches_for(&key).await,
            "refused on job-2, so for job-1 too"
        );
    }

    #[tokio::test]
    async fn an_entry_that_does_not_decode_is_a_miss() {
        let (cache, auth) = (cache(), AuthGate::new(Duration::from_secs(60), None));
        let key = ResourceKey::new("t", "sutro", kind::JOB, "job-1");
        read_through(&cache, &auth, &key, job("a"), |_| false, wait())
            .await
            .unwrap();
        // Not a Job: field 1 as a varint where Job has a string.
        let garbage = Fetched {
            bytes: bytes::Bytes::from_static(b"\x08\x01\xff"),
            is_final: true,
        };
        cache.put(&key.to_string(), garbage).await;
        let read = read_through(&cache, &auth, &key, job("b"), |_| false, wait())
            .await
            .expect("read upstream instead");
        assert_eq!(header(&read, "x-cache").as_deref(), Some("MISS"));
        assert_eq!(read.get_ref().name.as_deref(), Some("b"));
        let hit = read_through(&cache, &auth, &key, job("c"), |_| false, wait())
            .await
            .unwrap();
        assert_eq!(hit.get_ref().name.as_deref(), Some("b"));
    }
}
