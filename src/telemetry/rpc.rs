//! The SERVER span of one RPC, after the stable OpenTelemetry RPC conventions (semconv
//! 1.40+), and how the call's gRPC status is recorded on it when the call ends.

use std::sync::atomic::{AtomicBool, Ordering};

use tonic::Code;
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
/// `tenant` field is recorded by the caller layer, the status by the call-end layer
/// ([`crate::call_end`]).
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

/// The status attributes, and span status Error for the codes the conventions name
/// as server errors (the others are the caller's doing, not the server's).
pub(crate) fn record_status(span: &tracing::Span, code: Code) {
    if span.is_none() {
        return;
    }
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
