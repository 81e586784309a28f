//! The tower layer that applies caller limits before a call reaches its service: refuses
//! calls over a limit with RESOURCE_EXHAUSTED, and stamps `x-ratelimit-*` on the rest.

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tower::{Layer, Service};

use super::future::{Guarded, RateLimitFuture, trace_decision};
use super::{Class, Decision, Method, RateLimiter, RateLimits, Streams, classify};
use crate::context::CallContext;
use crate::error::Error;
use crate::metrics::Metrics;
/// The tenant of callers without credentials (where allowed): they share one set of buckets.
pub use crate::tenant::ANONYMOUS_TENANT as ANONYMOUS;

/// Everything the layer needs once limits are on.
struct Limits {
    policy: RateLimits,
    limiter: Option<Arc<dyn RateLimiter>>,
    streams: Option<Streams>,
}

/// Applies caller limits; with none configured it is a pass-through.
#[derive(Clone, Default)]
pub struct RateLimitLayer {
    limits: Option<Arc<Limits>>,
    metrics: Metrics,
}

impl RateLimitLayer {
    /// A layer enforcing `policy` through `limiter`, on the tenants the caller layer
    /// (outside it) identified.
    pub fn new(policy: RateLimits, limiter: Option<Arc<dyn RateLimiter>>) -> Self {
        if !policy.enabled() {
            return Self::default();
        }
        let streams = policy.max_streams_per_tenant.map(Streams::new);
        Self {
            limits: Some(Arc::new(Limits {
                policy,
                limiter,
                streams,
            })),
            metrics: Metrics::disabled(),
        }
    }

    /// The same layer, counting its decisions on `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            limits: self.limits.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// The service of [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimitService<S> {
    inner: S,
    limits: Option<Arc<Limits>>,
    metrics: Metrics,
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
    type Future = RateLimitFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        // Limits off, or a call no limit applies to: straight through, nothing allocated.
        let (Some(limits), Some(method)) = (&self.limits, classify(request.uri().path())) else {
            return RateLimitFuture::Through {
                inner: self.inner.call(request),
            };
        };
        let context = request.extensions().get::<CallContext>();
        // The tenant the caller layer (outside) identified; a call it refused never gets here.
        let tenant = context.map_or(ANONYMOUS, |context| context.caller.tenant.as_str());
        let judge = Judge {
            metrics: &self.metrics,
            who: crate::metrics::tenant_class(context),
            method,
        };
        let limit = limits.policy.limit(tenant, method.class);
        // An in-process limiter decides here, so the common call costs no allocation and
        // no extra future; Redis, and a stream's place under the cap, are awaited below.
        let now = match (&limits.limiter, limit) {
            (Some(limiter), Some(limit)) => {
                limiter.check_now(tenant, method.class, limit).map(Some)
            }
            _ => Some(None),
        };
        let capped = method.stream && limits.streams.is_some();
        match now {
            Some(decision) if !capped => match judge.rate(decision) {
                Verdict::Refused(decision) => RateLimitFuture::Refused {
                    answer: Some(refused(tenant, method.class, &decision)),
                    decision,
                    class: method.class,
                },
                Verdict::Unlimited => RateLimitFuture::Through {
                    inner: self.inner.call(request),
                },
                Verdict::Admitted(decision) => {
                    judge.decided("admitted");
                    RateLimitFuture::Stamped {
                        inner: self.inner.call(request),
                        decision,
                        class: method.class,
                        traced: false,
                    }
                }
            },
            now => {
                let (limits, metrics, who) = (limits.clone(), self.metrics.clone(), judge.who);
                let tenant = tenant.to_owned();
                // The ready service goes with the call; its clone waits for the next poll_ready.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                RateLimitFuture::Waiting {
                    future: Box::pin(async move {
                        let judge = Judge {
                            metrics: &metrics,
                            who,
                            method,
                        };
                        let decision = match (now, &limits.limiter, limit) {
                            (Some(decision), _, _) => decision,
                            (None, Some(limiter), Some(limit)) => {
                                Some(limiter.check(&tenant, method.class, limit).await)
                            }
                            (None, _, _) => None,
                        };
                        if let Some(decision) = &decision {
                            trace_decision(method.class, decision);
                        }
                        let decision = match judge.rate(decision) {
                            Verdict::Unlimited => None,
                            Verdict::Admitted(decision) => Some(decision),
                            Verdict::Refused(decision) => {
                                return Ok(refused(&tenant, method.class, &decision));
                            }
                        };
                        let guard = match (&limits.streams, method.stream) {
                            (Some(streams), true) => match streams.try_open(&tenant) {
                                Some(guard) => Some(guard),
                                None => {
                                    judge.decided("stream_cap");
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
                        if decision.is_some() || guard.is_some() {
                            judge.decided("admitted");
                        }
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
                    }),
                }
            }
        }
    }
}

/// Counts and traces one call's limiter outcomes.
struct Judge<'a> {
    metrics: &'a Metrics,
    who: &'static str,
    method: Method,
}

impl Judge<'_> {
    fn decided(&self, outcome: &'static str) {
        self.metrics
            .limiter_decision(self.who, self.method.class.as_str(), outcome);
    }

    /// What the rate decision, if a limit applied, makes of the call. A refusal is
    /// counted here; an admission by the caller, once nothing else refuses the call.
    fn rate(&self, decision: Option<Decision>) -> Verdict {
        let Some(decision) = decision else {
            return Verdict::Unlimited;
        };
        if decision.admitted {
            Verdict::Admitted(decision)
        } else {
            self.decided("rejected");
            Verdict::Refused(decision)
        }
    }
}

/// A call's rate decision, as the layer acts on it.
enum Verdict {
    /// No rate limit applies.
    Unlimited,
    /// Admitted: the decision is stamped on the answer.
    Admitted(Decision),
    /// Over the limit: answered with RESOURCE_EXHAUSTED.
    Refused(Decision),
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::time::Duration;

    use http_body::Frame;
    use tonic::Code;
    use tonic_types::StatusExt;
    use tower::ServiceExt;

    use super::*;
    use crate::ratelimit::{LimitSetting, MemoryLimiter};

    const READ: &str = "/batchgate.sutro.v1.JobService/GetJobStatus";
    const WATCH: &str = "/batchgate.sutro.v1.JobService/WatchJob";
    const HEALTH: &str = "/grpc.health.v1.Health/Check";

    /// A stream body that never ends: the stream stays open while it is held.
    struct Open;

    impl http_body::Body for Open {
        type Data = bytes::Bytes;
        type Error = tonic::Status;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
            Poll::Pending
        }
    }

    fn layer(toml: &str) -> RateLimitLayer {
        #[derive(serde::Deserialize)]
        struct File {
            #[serde(default)]
            rate_limits: BTreeMap<Class, LimitSetting>,
            #[serde(default)]
            tenant_limits: BTreeMap<String, BTreeMap<Class, LimitSetting>>,
            max_streams_per_tenant: Option<u32>,
        }
        let file: File = toml::from_str(toml).unwrap();
        let policy = RateLimits::resolve(
            Some(&file.rate_limits),
            Some(&file.tenant_limits),
            file.max_streams_per_tenant,
            crate::ratelimit::RedisDown::Local,
            1,
        )
        .unwrap();
        let limiter: Arc<dyn RateLimiter> = Arc::new(MemoryLimiter::new(Duration::from_secs(10)));
        RateLimitLayer::new(policy, Some(limiter))
    }

    async fn call(layer: &RateLimitLayer, path: &str, key: Option<&str>) -> http::Response<Body> {
        let service = layer.layer(tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, Infallible>(http::Response::new(Body::new(Open)))
        }));
        let mut request = http::Request::builder().uri(path).body(()).unwrap();
        if let Some(key) = key {
            // What the caller layer, outside this one, leaves for it.
            let mut metadata = tonic::metadata::MetadataMap::new();
            metadata.insert("authorization", format!("Key {key}").parse().unwrap());
            let context = CallContext::from_metadata(
                &metadata,
                None,
                "sutro",
                None,
                &crate::tenant::Admission::default(),
                Duration::from_secs(30),
            )
            .unwrap();
            request.extensions_mut().insert(context);
        }
        service.oneshot(request).await.unwrap()
    }

    fn status_of(response: &http::Response<Body>) -> Option<tonic::Status> {
        tonic::Status::from_header_map(response.headers())
    }

    fn remaining(response: &http::Response<Body>) -> Option<&str> {
        response
            .headers()
            .get("x-ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
    }

    #[tokio::test(start_paused = true)]
    async fn over_the_limit_is_resource_exhausted_with_details_and_headers() {
        let layer = layer("[rate_limits.read]\nper_second = 1\nburst = 2\n");
        let first = call(&layer, READ, None).await;
        assert!(status_of(&first).is_none());
        assert_eq!(remaining(&first), Some("1"));
        assert_eq!(first.headers()["x-ratelimit-limit"], "1, 1;w=1;burst=2");
        assert_eq!(remaining(&call(&layer, READ, None).await), Some("0"));

        let refused = call(&layer, READ, None).await;
        let status = status_of(&refused).expect("a trailers-only status");
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(remaining(&refused), Some("0"));
        assert_eq!(refused.headers()["x-ratelimit-reset"], "2");
        let details = status.get_error_details();
        assert_eq!(
            details.retry_info().and_then(|r| r.retry_delay),
            Some(Duration::from_secs(1))
        );
        let violation = &details.quota_failure().expect("quota failure").violations[0];
        assert_eq!(violation.subject, "tenant:anonymous/class:read");

        // Another tenant, another class, and health are not held back.
        assert_eq!(
            remaining(&call(&layer, READ, Some("sk_other")).await),
            Some("1")
        );
        let watch = call(&layer, WATCH, None).await;
        assert!(status_of(&watch).is_none() && remaining(&watch).is_none());
        let health = call(&layer, HEALTH, None).await;
        assert!(status_of(&health).is_none() && remaining(&health).is_none());

        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(remaining(&call(&layer, READ, None).await), Some("0"));
    }

    #[tokio::test]
    async fn callers_without_credentials_are_one_anonymous_tenant() {
        let layer = layer("[tenant_limits.anonymous.read]\nper_second = 1\nburst = 1\n");
        assert_eq!(remaining(&call(&layer, READ, None).await), Some("0"));
        let refused = call(&layer, READ, None).await;
        let status = status_of(&refused).expect("refused");
        let details = status.get_error_details();
        let subject = &details.quota_failure().unwrap().violations[0].subject;
        assert_eq!(subject, "tenant:anonymous/class:read");
        // A caller with a key is its own tenant, unlimited here.
        let keyed = call(&layer, READ, Some("sk_live")).await;
        assert!(status_of(&keyed).is_none() && remaining(&keyed).is_none());
    }

    #[tokio::test]
    async fn open_streams_are_capped_per_tenant_until_they_end() {
        let layer = layer("max_streams_per_tenant = 1\n");
        let held = call(&layer, WATCH, Some("sk_a")).await;
        assert!(status_of(&held).is_none());
        let second = call(&layer, WATCH, Some("sk_a")).await;
        let refused = status_of(&second).expect("over the cap");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert!(
            refused.message().contains("max_streams_per_tenant"),
            "{}",
            refused.message()
        );
        // Another tenant, and unary calls, are not counted.
        assert!(status_of(&call(&layer, WATCH, Some("sk_b")).await).is_none());
        assert!(status_of(&call(&layer, READ, Some("sk_a")).await).is_none());
        // The stream ends (its body is dropped): its place is free again.
        drop(held);
        assert!(status_of(&call(&layer, WATCH, Some("sk_a")).await).is_none());
    }

    #[tokio::test]
    async fn with_no_limits_the_layer_passes_everything_through() {
        let layer = RateLimitLayer::new(RateLimits::default(), None);
        assert!(layer.limits.is_none());
        for _ in 0..5 {
            let response = call(&layer, WATCH, None).await;
            assert!(status_of(&response).is_none() && remaining(&response).is_none());
        }
    }
}
