//! The tower layer that applies caller limits before a call reaches its service: refuses
//! calls over a limit with RESOURCE_EXHAUSTED, and stamps `x-ratelimit-*` on the rest.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, Either};
use http::header::AUTHORIZATION;
use http_body::{Frame, SizeHint};
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tower::{Layer, Service};

use super::{
    Class, Decision, Method, RateLimiter, RateLimits, Service as Upstream, StreamGuard, Streams,
    classify,
};
use crate::error::Error;
use crate::tenant::{Secret, identify};

/// The tenant of callers with no usable credentials: they share one set of buckets.
pub const ANONYMOUS: &str = "anonymous";

/// Everything the layer needs once limits are on.
struct Limits {
    policy: RateLimits,
    limiter: Option<Arc<dyn RateLimiter>>,
    streams: Option<Streams>,
    sutro_key: Option<Secret>,
    xai_key: Option<Secret>,
}

/// Applies caller limits; with none configured it is a pass-through.
#[derive(Clone, Default)]
pub struct RateLimitLayer {
    limits: Option<Arc<Limits>>,
}

impl RateLimitLayer {
    /// A layer enforcing `policy` through `limiter`. The managed keys decide the tenant of
    /// callers that send no credentials (the managed tenant, or [`ANONYMOUS`]).
    pub fn new(
        policy: RateLimits,
        limiter: Option<Arc<dyn RateLimiter>>,
        sutro_key: Option<Secret>,
        xai_key: Option<Secret>,
    ) -> Self {
        if !policy.enabled() {
            return Self::default();
        }
        let streams = policy.max_streams_per_tenant.map(Streams::new);
        Self {
            limits: Some(Arc::new(Limits {
                policy,
                limiter,
                streams,
                sutro_key,
                xai_key,
            })),
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            limits: self.limits.clone(),
        }
    }
}

/// The service of [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimitService<S> {
    inner: S,
    limits: Option<Arc<Limits>>,
}

impl<S, ReqBody> Service<http::Request<ReqBody>> for RateLimitService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<http::Response<Body>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        // Limits off, or a call no limit applies to: straight through, nothing allocated.
        let (Some(limits), Some(method)) = (&self.limits, classify(request.uri().path())) else {
            return Either::Left(self.inner.call(request));
        };
        let limits = limits.clone();
        // The ready service goes with the call; its clone waits for the next poll_ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Either::Right(Box::pin(async move {
            let tenant = tenant_of(&request, &limits, method);
            let decision = match (&limits.limiter, limits.policy.limit(&tenant, method.class)) {
                (Some(limiter), Some(limit)) => {
                    Some(limiter.check(&tenant, method.class, limit).await)
                }
                _ => None,
            };
            if let Some(decision) = decision.filter(|d| !d.admitted) {
                return Ok(refused(&tenant, method.class, &decision));
            }
            let guard = match (&limits.streams, method.stream) {
                (Some(streams), true) => match streams.try_open(&tenant) {
                    Some(guard) => Some(guard),
                    None => {
                        return Ok(too_many_streams(
                            &tenant,
                            method.class,
                            streams.cap(),
                            decision,
                        ));
                    }
                },
                _ => None,
            };
            let mut response = inner.call(request).await?;
            if let Some(decision) = decision {
                decision.annotate(response.headers_mut());
            }
            Ok(match guard {
                Some(guard) => response.map(|body| {
                    Body::new(Guarded {
                        body,
                        _guard: guard,
                    })
                }),
                None => response,
            })
        }))
    }
}

/// The tenant a call is limited as: the one place that knows how, so it can read the
/// caller layer's `CallContext` from the request's extensions once there is one.
fn tenant_of<B>(request: &http::Request<B>, limits: &Limits, method: Method) -> String {
    let managed = match method.service {
        Upstream::Sutro => limits.sutro_key.as_ref(),
        Upstream::Xai => limits.xai_key.as_ref(),
    };
    // Only the credentials matter: copy the one header rather than every header.
    let mut headers = http::HeaderMap::new();
    if let Some(value) = request.headers().get(AUTHORIZATION) {
        headers.insert(AUTHORIZATION, value.clone());
    }
    identify(&MetadataMap::from_headers(headers), managed)
        .map_or_else(|_| ANONYMOUS.to_owned(), |caller| caller.tenant)
}

/// The answer to a call over its rate limit: the gateway's error, plus the headers.
fn refused(tenant: &str, class: Class, decision: &Decision) -> http::Response<Body> {
    let error = Error::RateLimited {
        subject: subject(tenant, class),
        description: format!(
            "over the {class} limit of {} calls per second (burst {}); retry in {} ms",
            decision.limit.per_second,
            decision.limit.burst,
            decision.retry_after.as_millis().max(1)
        ),
        retry_after: Some(decision.retry_after),
    };
    let mut response = tonic::Status::from(&error).into_http::<Body>();
    decision.annotate(response.headers_mut());
    response
}

/// The answer to a stream over the tenant's cap (with the rate headers, if any: the
/// call was counted).
fn too_many_streams(
    tenant: &str,
    class: Class,
    cap: u32,
    decision: Option<Decision>,
) -> http::Response<Body> {
    let error = Error::RateLimited {
        subject: subject(tenant, class),
        description: format!(
            "{cap} streams are open for this tenant, the most allowed (max_streams_per_tenant); close one first"
        ),
        retry_after: None,
    };
    let mut response = tonic::Status::from(&error).into_http::<Body>();
    if let Some(decision) = decision {
        decision.annotate(response.headers_mut());
    }
    response
}

/// QuotaFailure's subject: `tenant:<id>/class:<class>`.
fn subject(tenant: &str, class: Class) -> String {
    format!("tenant:{tenant}/class:{class}")
}

/// A stream's body holding its place under the stream cap until it is dropped.
struct Guarded {
    body: Body,
    _guard: StreamGuard,
}

impl http_body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
