//! The access log: one `info` line per call when it ends (a stream: when its body
//! ends), with method, gRPC code, duration, tenant, upstream calls and cache result;
//! the same end of call is recorded as `rpc.server.call.duration`.

use std::future::Future;
use std::pin::Pin;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::future::Either;
use http_body::{Body, Frame, SizeHint};
use tonic::Code;
use tower::{Layer, Service};

use crate::metrics::Metrics;

tokio::task_local! {
    /// The note of the call being served, for the parts that learn its facts
    /// (the caller layer its tenant, the upstream client its calls).
    static NOTE: Arc<CallNote>;
}

/// What the layers and handlers below learn about one call.
#[derive(Debug, Default)]
struct CallNote {
    tenant: OnceLock<String>,
    upstream_calls: AtomicU32,
}

/// Names the tenant of the call being served (no-op outside a logged call).
pub fn note_tenant(tenant: &str) {
    let _ = NOTE.try_with(|note| note.tenant.set(tenant.to_owned()));
}

/// Counts one upstream call for the call being served (no-op outside a logged call).
pub fn note_upstream_call() {
    let _ = NOTE.try_with(|note| note.upstream_calls.fetch_add(1, Ordering::Relaxed));
}

/// `future` with the current call's note, for work spawned on a task of its own
/// (a task-local does not follow `tokio::spawn`).
pub fn carry_note<F: Future>(future: F) -> impl Future<Output = F::Output> {
    match NOTE.try_with(Arc::clone) {
        Ok(note) => Either::Left(NOTE.scope(note, future)),
        Err(_) => Either::Right(future),
    }
}

/// The tower layer that writes the access log (lines only when `enabled`) and records
/// each call's duration on its metrics.
#[derive(Debug, Clone)]
pub struct AccessLogLayer {
    enabled: bool,
    metrics: Metrics,
}

impl AccessLogLayer {
    /// An access log that writes lines only when `enabled`.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            metrics: Metrics::disabled(),
        }
    }

    /// The same layer, recording each call's duration and code on `metrics` (lines or not).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }
}

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLogService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLogService {
            inner,
            enabled: self.enabled,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service of [`AccessLogLayer`].
#[derive(Debug, Clone)]
pub struct AccessLogService<S> {
    inner: S,
    enabled: bool,
    metrics: Metrics,
}

impl<S, B> Service<http::Request<B>> for AccessLogService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, std::result::Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let method = request.uri().path().trim_start_matches('/').to_owned();
        let note = Arc::new(CallNote::default());
        let (log, metrics) = (self.enabled, self.metrics.clone());
        // The caller layer names the tenant in its `call`, before any future runs.
        let call = NOTE.sync_scope(note.clone(), || self.inner.call(request));
        Box::pin(async move {
            // Polled inside the RPC's span (tonic enters it around this future), which
            // the line is written in, so it carries the call's trace id.
            let span = tracing::Span::current();
            let response = NOTE.scope(note.clone(), call).await?;
            let (parts, body) = response.into_parts();
            let entry = Entry {
                method,
                started,
                span,
                cache: parts
                    .headers
                    .get("x-cache")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                code: code_in_head(&parts),
                note,
                log,
                metrics,
                written: false,
            };
            let body = tonic::body::Body::new(LoggedBody { inner: body, entry });
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

/// The status of a trailers-only answer (an error before or instead of messages).
pub(crate) fn code_in_head(parts: &http::response::Parts) -> Option<Code> {
    code_in_headers(&parts.headers).or_else(|| {
        parts
            .extensions
            .get::<tonic::Status>()
            .map(tonic::Status::code)
    })
}

/// The status in a `grpc-status` header or trailer.
pub(crate) fn code_in_headers(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from_i32)
}

/// One call's access line, written once, when its body ends or is dropped.
struct Entry {
    method: String,
    started: Instant,
    span: tracing::Span,
    cache: Option<String>,
    code: Option<Code>,
    note: Arc<CallNote>,
    log: bool,
    metrics: Metrics,
    written: bool,
}

impl Entry {
    fn write(&mut self) {
        if std::mem::replace(&mut self.written, true) {
            return;
        }
        // A body dropped before its status was sent: the caller went away.
        let code = self.code.unwrap_or(Code::Cancelled);
        let elapsed = self.started.elapsed();
        self.metrics.rpc_call(&self.method, code, elapsed);
        if !self.log {
            return;
        }
        let _entered = self.span.enter();
        tracing::info!(
            target: "batchgate::access",
            method = %self.method,
            code = ?code,
            grpc_status = code as i32,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            tenant = self.note.tenant.get().map(String::as_str),
            upstream_calls = self.note.upstream_calls.load(Ordering::Relaxed),
            cache = self.cache.as_deref(),
            "call finished"
        );
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.write();
    }
}

/// The response body, timed to its end, polled with the call's note so the
/// upstream calls of a stream count too.
struct LoggedBody {
    inner: tonic::body::Body,
    entry: Entry,
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let note = this.entry.note.clone();
        let polled = NOTE.sync_scope(note, || Pin::new(&mut this.inner).poll_frame(cx));
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(code_in_headers) {
                    this.entry.code = Some(code);
                    this.entry.write();
                }
            }
            Poll::Ready(Some(Err(status))) => {
                this.entry.code.get_or_insert(status.code());
                this.entry.write();
            }
            Poll::Ready(None) => this.entry.write(),
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
