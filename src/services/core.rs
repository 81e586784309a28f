//! What both services share: the upstream each one fronts (`Provider`), and the
//! `ServiceCore` holding the shared state, which runs keyed creates, watches and cached Gets.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::cache::StatusCache;
use crate::config::Config;
use crate::context::CallContext;
use crate::deadline::Deadline;
use crate::error::{Error, Result, UpstreamId};
use crate::idempotency::{self, IdempotencyStore, Outcome};
use crate::keys::{ResourceKey, kind};
use crate::metrics::Metrics;
use crate::progress::{
    EventKind, ProgressHub, Publisher, StartPoller, WatchTiming, first_state, watcher_stream,
};
use crate::records::{JobRecord, RecordStore};
use crate::services::read_through::{AuthGate, CacheWriter, Wait, read_through};
use crate::upstream::reply::Reply;

/// A server stream of gRPC messages.
pub type ServerStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The upstream client a service fronts, and how its resources are watched.
pub trait Provider: Clone + Send + Sync + 'static {
    /// What the watcher of one resource publishes.
    type Progress: prost::Message + Default + Clone + PartialEq + 'static;
    /// One message of the service's Watch RPC.
    type WatchMessage: Send + 'static;

    /// The upstream, as named in errors and keys.
    fn upstream(&self) -> &UpstreamId;

    /// Follows resource `id` until it is final or the watch fails, publishing each
    /// change and writing what it reads to `cache`; dropped when the last subscriber leaves.
    fn poll(
        self,
        ctx: CallContext,
        id: String,
        timing: WatchTiming,
        publisher: Publisher<Self::Progress>,
        cache: CacheWriter,
    ) -> impl Future<Output = ()> + Send + 'static;

    /// The watch message for `value`, observed by the watcher at `observed_at`.
    fn watch_message(
        kind: EventKind,
        value: Self::Progress,
        observed_at: prost_types::Timestamp,
    ) -> Self::WatchMessage;
}

/// Everything a service needs, shared by all its calls.
#[derive(Clone)]
pub struct ServiceCore<P: Provider> {
    /// The upstream client.
    pub client: P,
    /// The gateway's configuration.
    pub config: Arc<Config>,
    idempotency: Arc<dyn IdempotencyStore>,
    records: Arc<dyn RecordStore>,
    watches: Arc<dyn ProgressHub<P::Progress>>,
    cache: Arc<dyn StatusCache>,
    /// Keyed by tenant and provider: the tenant `managed` holds a different key for
    /// each upstream, and one caller's key may be good for one upstream only.
    auth: AuthGate,
    metrics: Metrics,
    shutdown: CancellationToken,
}

/// The shared state a service keeps its calls' state in; whoever builds the service
/// picks the backends (in memory or on Redis), nothing in the service knows which.
pub struct Backends<Progress> {
    /// Keyed creates' records.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// The gateway's own notes on resources it created.
    pub records: Arc<dyn RecordStore>,
    /// Watches: one upstream poller per resource.
    pub watches: Arc<dyn ProgressHub<Progress>>,
    /// Cached status reads.
    pub cache: Arc<dyn StatusCache>,
    /// Whose credentials the upstream accepted lately.
    pub auth: AuthGate,
    /// Where watchers and pollers are counted.
    pub metrics: Metrics,
}

/// A record to keep once the resource it belongs to has an id.
pub struct Remember {
    records: Arc<dyn RecordStore>,
    key: ResourceKey,
    record: JobRecord,
}

impl Remember {
    /// Keeps the record of the created resource `id`. A failure is logged, not
    /// returned: the resource exists, and its caller must learn its id.
    pub async fn keep(mut self, id: &str) {
        if self.record.is_empty() {
            return;
        }
        self.key.id = id.to_owned();
        if let Err(error) = self.records.put(&self.key, self.record).await {
            tracing::warn!(%error, id, "cannot keep the resource's record");
        }
    }
}

impl<P: Provider> ServiceCore<P> {
    /// The service over `client`, keeping its state in `backends`.
    pub fn new(
        client: P,
        config: Arc<Config>,
        backends: Backends<P::Progress>,
        shutdown: CancellationToken,
    ) -> Self {
        let Backends {
            idempotency,
            records,
            watches,
            cache,
            auth,
            metrics,
        } = backends;
        Self {
            auth,
            metrics,
            client,
            config,
            idempotency,
            records,
            watches,
            cache,
            shutdown,
        }
    }

    /// Resources being watched right now (one upstream poller each).
    pub fn active_watches(&self) -> usize {
        self.watches.active()
    }

    /// The caller, deadline and request id of `request`, as the caller layer found
    /// them before the handler ran.
    pub fn context<T>(&self, request: &Request<T>) -> Result<CallContext> {
        crate::caller::context_of(request)
    }

    /// Runs `create` at most once per caller `request_id`, `content` telling one
    /// request from another reusing the id. `create` answers the new resource's id and
    /// whatever the caller that ran it should get. It gets its own context, bounded by
    /// the configured upstream timeout rather than the caller's deadline, since it runs
    /// on after a caller that gives up.
    pub async fn create_once<R, F, Fut>(
        &self,
        ctx: &CallContext,
        request_id: &str,
        content: &[u8],
        create: F,
    ) -> Result<Outcome<R>>
    where
        R: Send + 'static,
        F: FnOnce(P, CallContext) -> Fut,
        Fut: Future<Output = Result<(String, R)>> + Send + 'static,
    {
        let bound = self.config.upstream_timeout;
        let create_ctx = ctx.with_deadline(Deadline::after(bound));
        let outcome = idempotency::create_once(
            &self.idempotency,
            self.key(ctx, kind::IDEMPOTENCY, request_id),
            idempotency::fingerprint(content),
            ctx.deadline,
            bound,
            self.client.upstream(),
            create(self.client.clone(), create_ctx),
        )
        .await;
        self.metrics.keyed_create(match &outcome {
            Ok(Outcome::Created { .. }) => "created",
            Ok(Outcome::Replayed { .. }) => "replayed",
            Err(_) => "failed",
        });
        outcome
    }

    /// A Watch RPC: the resource `resource` names (after checking it) is followed by
    /// one poller per tenant and resource, shared by every subscriber.
    pub async fn watch<R>(
        &self,
        request: Request<R>,
        rpc: &'static str,
        resource: impl FnOnce(R) -> Result<String>,
    ) -> Result<Response<ServerStream<P::WatchMessage>>, Status> {
        if self.shutdown.is_cancelled() {
            return Err(Error::Unavailable("batchgate is shutting down".into()).into());
        }
        let ctx = self.context(&request)?;
        let id = resource(request.into_inner())?;
        let key = self.key(&ctx, kind::WATCH, &id);
        let (client, timing) = (self.client.clone(), WatchTiming::from_config(&self.config));
        let cache = CacheWriter::new(self.cache.clone(), self.auth.clone(), key.clone());
        let (metrics, upstream) = (self.metrics.clone(), self.client.upstream().provider);
        // The pollers stay in the trace of the watch that started them, each in a span
        // of its own (a poller outlives that call and may start long after it).
        let cause = crate::telemetry::current_context();
        // Called again each time this replica must poll (Redis outage, dead holder).
        let start: StartPoller<P::Progress> = Arc::new(move |publisher| {
            let (client, ctx, id, cache) = (client.clone(), ctx.clone(), id.clone(), cache.clone());
            let span = crate::telemetry::span_in_context("watch poller", &cause);
            let held = metrics.upstream_watcher_started(upstream);
            let poll = client
                .poll(ctx, id, timing, publisher, cache)
                .instrument(span);
            Box::pin(async move {
                poll.await;
                drop(held);
            })
        });
        let mut rx = self.watches.subscribe(&key, start);
        first_state(&mut rx).await?;
        let open = self.metrics.watcher_opened(upstream);
        let stream = watcher_stream(rx, timing, self.shutdown.clone(), rpc, P::watch_message)
            // The stream owns the count: it goes down when the stream ends or is dropped.
            .map(move |message| {
                let _open = &open;
                message
            });
        Ok(Response::new(Box::pin(stream)))
    }

    /// A Get of resource `id` answered through the status cache as entry `kind`: `fetch`
    /// reads it upstream with the caller's credentials, `is_final` tells a terminal state.
    pub async fn read_through<M, F, Fut>(
        &self,
        ctx: &CallContext,
        kind: &'static str,
        id: &str,
        fetch: F,
        is_final: fn(&M) -> bool,
    ) -> Result<Response<M>>
    where
        M: prost::Message + Default + 'static,
        F: FnOnce(P, CallContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Reply<M>>> + Send + 'static,
    {
        // A refresh is shared by every concurrent caller of the key and outlives the one
        // that started it: it gets the upstream bound, not that caller's deadline (as a
        // keyed create does); each caller bounds its own wait by its own deadline.
        let refresh_ctx = ctx.with_deadline(Deadline::after(self.config.upstream_timeout));
        let client = self.client.clone();
        let fetch = move || fetch(client, refresh_ctx);
        let wait = Wait {
            deadline: ctx.deadline,
            upstream: self.client.upstream().clone(),
        };
        read_through(
            &self.cache,
            &self.auth,
            &self.key(ctx, kind, id),
            fetch,
            is_final,
            wait,
        )
        .await
    }

    /// Forgets the cached entries of `kinds` for resource `id` (its state just changed).
    pub async fn invalidate(&self, ctx: &CallContext, kinds: &[&'static str], id: &str) {
        for &kind in kinds {
            self.cache
                .invalidate(&self.key(ctx, kind, id).to_string())
                .await;
        }
        // A resource that changed may be live again (an xAI batch takes more requests
        // after it was done): a later watch must poll it, not replay its old FINAL.
        self.watches.forget(&self.key(ctx, kind::WATCH, id)).await;
    }

    /// Lets go of this replica's upstream watches at shutdown, so another replica
    /// takes them over at once instead of after a lease.
    pub async fn release_watches(&self) {
        self.watches.release().await;
    }

    /// What to keep of a resource this call is about to create, once it has an id.
    pub fn remember(&self, ctx: &CallContext, record: JobRecord) -> Remember {
        Remember {
            records: self.records.clone(),
            key: self.key(ctx, kind::RECORD, ""),
            record,
        }
    }

    /// The gateway's record of resource `id`, if it created it for this tenant. A
    /// record that cannot be read costs what it holds, never the call.
    pub async fn recall(&self, ctx: &CallContext, id: &str) -> Option<JobRecord> {
        match self.records.get(&self.key(ctx, kind::RECORD, id)).await {
            Ok(record) => record,
            Err(error) => {
                tracing::warn!(%error, id, "cannot read the resource's record");
                None
            }
        }
    }

    /// The key of `kind` for `id`: per tenant, so tenants never share state.
    fn key(&self, ctx: &CallContext, kind: &'static str, id: &str) -> ResourceKey {
        ResourceKey::new(
            ctx.caller.tenant.clone(),
            self.client.upstream().provider,
            kind,
            id,
        )
    }
}

/// Each proto's `WatchEventKind` from an [`EventKind`]; both services name them alike.
macro_rules! watch_event_kinds {
    ($($proto:ty),+) => {$(
        impl From<EventKind> for $proto {
            fn from(kind: EventKind) -> Self {
                match kind {
                    EventKind::Snapshot => Self::Snapshot,
                    EventKind::Progress => Self::Progress,
                    EventKind::Heartbeat => Self::Heartbeat,
                    EventKind::Final => Self::Final,
                }
            }
        }
    )+};
}

watch_event_kinds!(
    crate::proto::sutro::v1::WatchEventKind,
    crate::proto::xai::v1::WatchEventKind
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{sutro, xai};

    #[test]
    fn event_kinds_map_to_both_protos() {
        let kinds = [
            EventKind::Snapshot,
            EventKind::Progress,
            EventKind::Heartbeat,
            EventKind::Final,
        ];
        let sutro: Vec<i32> = kinds
            .iter()
            .map(|&k| sutro::v1::WatchEventKind::from(k).into())
            .collect();
        let xai: Vec<i32> = kinds
            .iter()
            .map(|&k| xai::v1::WatchEventKind::from(k).into())
            .collect();
        assert_eq!(sutro, [1, 2, 3, 4]);
        assert_eq!(xai, sutro);
    }
}
