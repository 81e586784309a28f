//! The SERVER span of one RPC, after the stable OpenTelemetry RPC conventions (semconv
//! 1.40+), and the layer that records the call's gRPC status on it when the call ends.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body::{Body, Frame, SizeHint};
use tonic::Code;
use tower::{Layer, Service};
use tracing::field::Empty;

use crate::metrics::code_name;

/// Whether spans also carry the older experimental names (`OTEL_SEMCONV_STABILITY_OPT_IN=rpc/dup`).
static DUP: AtomicBool = AtomicBool::new(false);

/// Whether health checks and reflection get spans: they are polled by machines, often,
/// and their spans would drown the traces of real calls, so by default they get none.
static TRACE_HEALTH: AtomicBool = AtomicBool::new(false);
const HEALTH: [&str; 2] = ["/grpc.health.", "/grpc.reflection."];

/// Sets whether the older attribute names are written too, and whether health checks
/// are traced (once, at `init`).
pub(super) fn set_conventions(dup: bool, trace_health: bool) {
    DUP.store(dup, Ordering::Relaxed);
    TRACE_HEALTH.store(trace_health, Ordering::Relaxed);
}

/// The span of one RPC, a child of the caller's W3C trace context if it sent one. The
/// `tenant` field is recorded by the caller layer, the status by [`RpcStatusLayer`].
pub fn rpc_span(request: &http::Request<()>) -> tracing::Span {
    let path = request.uri().path();
    if !TRACE_HEALTH.load(Ordering::Relaxed) && HEALTH.iter().any(|p| path.starts_with(p)) {
        return tracing::Span::none();
    }
    let method = path.trim_start_matches('/');
    let (address, port) = server_address(request);
    let span = tracing::info_span!(
        "rpc",
        otel.name = method,
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system.name = "grpc",
        rpc.method = method,
        rpc.response.status_code = Empty,
        error.type = Empty,
        server.address = address,
        server.port = port,
        tenant = Empty,
        rpc.system = Empty,
        rpc.service = Empty,
        rpc.grpc.status_code = Empty,
    );
    if DUP.load(Ordering::Relaxed) {
        span.record("rpc.system", "grpc");
        if let Some((service, _)) = method.rsplit_once('/') {
            span.record("rpc.service", service);
        }
    }
    super::set_parent_from_headers(&span, request.headers());
    span
}

/// The server's name and port as the client addressed it (`:authority`, or `Host`).
fn server_address(request: &http::Request<()>) -> (Option<&str>, Option<u16>) {
    if let Some(authority) = request.uri().authority() {
        return (Some(authority.host()), authority.port_u16());
    }
    let host = request
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok());
    match host.and_then(|h| h.parse::<http::uri::Authority>().ok()) {
        Some(authority) => {
            let host = host.map(|h| &h[..authority.host().len()]);
            (host, authority.port_u16())
        }
        None => (None, None),
    }
}

/// Records the gRPC status of each call on its span, once the status is known (a
/// stream's ends with its body).
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcStatusLayer;

impl<S> Layer<S> for RpcStatusLayer {
    type Service = RpcStatusService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcStatusService { inner }
    }
}

/// The service of [`RpcStatusLayer`].
#[derive(Debug, Clone)]
pub struct RpcStatusService<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for RpcStatusService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = self.inner.call(request);
        Box::pin(async move {
            // Polled inside the RPC's span (tonic enters it around this future).
            let span = tracing::Span::current();
            let response = call.await?;
            if span.is_none() {
                return Ok(response);
            }
            let (parts, body) = response.into_parts();
            let mut status = StatusBody {
                inner: body,
                span,
                done: false,
            };
            if let Some(code) = crate::access_log::code_in_head(&parts) {
                status.finish(code);
            }
            Ok(http::Response::from_parts(
                parts,
                tonic::body::Body::new(status),
            ))
        })
    }
}

/// The response body, holding the span open until the status is sent.
struct StatusBody {
    inner: tonic::body::Body,
    span: tracing::Span,
    done: bool,
}

impl StatusBody {
    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        record_status(&self.span, code);
        // Let go of the span: it ends (and is exported) with the last reference.
        self.span = tracing::Span::none();
    }
}

impl Drop for StatusBody {
    fn drop(&mut self) {
        // Dropped before a status was sent: the caller went away.
        self.finish(Code::Cancelled);
    }
}

impl Body for StatusBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame
                    .trailers_ref()
                    .and_then(crate::access_log::code_in_headers)
                {
                    this.finish(code);
                }
            }
            Poll::Ready(Some(Err(status))) => this.finish(status.code()),
            // An end without a status is a cut call: `Drop` says CANCELLED.
            Poll::Ready(None) | Poll::Pending => {}
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

/// The status attributes, and span status Error for the codes the conventions name
/// as server errors (the others are the caller's doing, not the server's).
fn record_status(span: &tracing::Span, code: Code) {
    let name = code_name(code);
    span.record("rpc.response.status_code", name);
    if DUP.load(Ordering::Relaxed) {
        span.record("rpc.grpc.status_code", code as i64);
    }
    if is_server_error(code) {
        span.record("error.type", name);
        span.record("otel.status_code", "ERROR");
    }
}

/// The codes semconv's RPC spans treat as errors on the server side.
pub fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_server_side_codes_are_errors() {
        assert!(is_server_error(Code::Unavailable));
        assert!(is_server_error(Code::DeadlineExceeded));
        assert!(!is_server_error(Code::NotFound));
        assert!(!is_server_error(Code::InvalidArgument));
        assert_eq!(code_name(Code::DeadlineExceeded), "DEADLINE_EXCEEDED");
    }

    #[test]
    fn the_server_address_is_the_one_the_client_used() {
        let request = http::Request::builder()
            .uri("http://gw.example:8443/batchgate.sutro.v1.JobService/GetJob")
            .body(())
            .expect("request");
        assert_eq!(server_address(&request), (Some("gw.example"), Some(8443)));
        let request = http::Request::builder()
            .uri("/x")
            .header("host", "gw.example:50051")
            .body(())
            .expect("request");
        assert_eq!(server_address(&request), (Some("gw.example"), Some(50051)));
    }
}
