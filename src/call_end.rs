//! The end of each call, seen once: its gRPC code and duration go to the RPC's span,
//! the `rpc.server.call.duration` metric and the access log (a stream ends with its body).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Code;
use tower::{Layer, Service};

use crate::access_log::{self, CallNote};
use crate::metrics::Metrics;

/// The tower layer that sees each call end: one box-free future and one body wrapper
/// per call, where a layer per concern cost one of each per concern.
#[derive(Debug, Clone)]
pub struct CallEndLayer {
    access_log: bool,
    metrics: Metrics,
}

impl CallEndLayer {
    /// Records every call's end on its span and `metrics`; writes an access line per
    /// call only when `access_log` is on.
    pub fn new(access_log: bool, metrics: Metrics) -> Self {
        Self {
            access_log,
            metrics,
        }
    }
}

impl<S> Layer<S> for CallEndLayer {
    type Service = CallEndService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallEndService {
            inner,
            access_log: self.access_log,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service of [`CallEndLayer`].
#[derive(Debug, Clone)]
pub struct CallEndService<S> {
    inner: S,
    access_log: bool,
    metrics: Metrics,
}

impl<S, B> Service<http::Request<B>> for CallEndService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = CallEndFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let method = request.uri().path().trim_start_matches('/').to_owned();
        let note = Arc::new(CallNote::default());
        // The caller layer names the tenant in its `call`, before any future runs.
        let inner = access_log::scope_sync(&note, || self.inner.call(request));
        CallEndFuture {
            inner,
            end: Some(End {
                method,
                started,
                span: tracing::Span::none(),
                cache: None,
                code: None,
                note,
                access_log: self.access_log,
                metrics: self.metrics.clone(),
                written: false,
            }),
        }
    }
}

pin_project! {
    /// The inner call, polled with the call's note; its answer's body carries the end.
    pub struct CallEndFuture<F> {
        #[pin]
        inner: F,
        end: Option<End>,
    }
}

impl<F, E> Future for CallEndFuture<F>
where
    F: Future<Output = Result<http::Response<tonic::body::Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(end) = this.end.as_mut() else {
            return Poll::Pending;
        };
        let inner = this.inner;
        let response = ready!(access_log::scope_sync(&end.note, || inner.poll(cx)));
        // `take` cannot miss: `end` was Some above.
        let Some(mut end) = this.end.take() else {
            return Poll::Pending;
        };
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                // Not a call that ended but a connection that failed: nothing to record.
                end.written = true;
                return Poll::Ready(Err(error));
            }
        };
        // Polled inside the RPC's span (tonic enters it around this future), which the
        // line is written in, so it carries the call's trace id.
        end.span = tracing::Span::current();
        let (parts, body) = response.into_parts();
        // Only the access line shows it: no copy per call when lines are off.
        if end.access_log {
            end.cache = parts
                .headers
                .get("x-cache")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
        }
        if let Some(code) = code_in_head(&parts) {
            end.finish(code);
        }
        let body = tonic::body::Body::new(EndBody { inner: body, end });
        Poll::Ready(Ok(http::Response::from_parts(parts, body)))
    }
}

/// The status of a trailers-only answer (an error before or instead of messages).
fn code_in_head(parts: &http::response::Parts) -> Option<Code> {
    code_in_headers(&parts.headers).or_else(|| {
        parts
            .extensions
            .get::<tonic::Status>()
            .map(tonic::Status::code)
    })
}

/// The status in a `grpc-status` header or trailer.
fn code_in_headers(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from_i32)
}

/// One call's end, recorded once: when its status is known, or when it is dropped.
struct End {
    method: String,
    started: Instant,
    span: tracing::Span,
    cache: Option<String>,
    code: Option<Code>,
    note: Arc<CallNote>,
    access_log: bool,
    metrics: Metrics,
    written: bool,
}

impl End {
    fn finish(&mut self, code: Code) {
        self.code = Some(code);
        self.write();
    }

    fn write(&mut self) {
        if std::mem::replace(&mut self.written, true) {
            return;
        }
        // Ended before its status was sent: the caller went away.
        let code = self.code.unwrap_or(Code::Cancelled);
        let elapsed = self.started.elapsed();
        self.metrics.rpc_call(&self.method, code, elapsed);
        crate::telemetry::rpc::record_status(&self.span, code);
        if self.access_log {
            let _entered = self.span.enter();
            access_log::write_line(
                &self.method,
                code,
                elapsed,
                &self.note,
                self.cache.as_deref(),
            );
        }
        // Let go of the span: it ends (and is exported) with its last reference, now
        // rather than when the connection drops the body.
        self.span = tracing::Span::none();
    }
}

impl Drop for End {
    fn drop(&mut self) {
        self.write();
    }
}

/// The response body, timed to its end, polled with the call's note so the upstream
/// calls of a stream count too.
struct EndBody {
    inner: tonic::body::Body,
    end: End,
}

impl Body for EndBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let inner = &mut this.inner;
        let polled = access_log::scope_sync(&this.end.note, || Pin::new(inner).poll_frame(cx));
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(code_in_headers) {
                    this.end.finish(code);
                }
            }
            Poll::Ready(Some(Err(status))) => {
                let code = *this.end.code.get_or_insert(status.code());
                this.end.finish(code);
            }
            // An end without a status is a cut call: CANCELLED.
            Poll::Ready(None) => this.end.write(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
