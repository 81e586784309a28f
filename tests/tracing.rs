//! Trace context and request ids across the gateway: a caller's W3C `traceparent`
//! reaches the upstream as a child span, and the upstream's `x-request-id` comes back.

mod common;

use batchgate::proto::sutro::v1 as sutro;
use batchgate::proto::xai::v1 as xai;
use common::spawn_app;

#[tokio::test]
async fn a_callers_trace_continues_upstream_and_upstream_request_ids_come_back() {
    // The one subscriber of this test binary, as `batchgate serve` installs it (no
    // OTLP endpoint: trace context must flow without an exporter too).
    let _telemetry = batchgate::telemetry::init(Default::default(), None).expect("telemetry");
    let mut app = spawn_app().await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let mut request = tonic::Request::new(sutro::GetQuotasRequest {});
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span}-01")
            .parse()
            .expect("ascii"),
    );
    app.jobs.get_quotas(request).await.expect("quotas");
    let sent = app
        .sim
        .last_header("GET /v1/get-quotas", "traceparent")
        .expect("the upstream request carries a traceparent");
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts.len(), 4, "{sent}");
    assert_eq!(parts[1], trace_id, "same trace: {sent}");
    assert_ne!(
        parts[2], caller_span,
        "the upstream call is a child span: {sent}"
    );
    assert!(
        app.sim
            .last_header("GET /v1/get-quotas", "x-request-id")
            .is_some_and(|id| !id.is_empty()),
        "the gateway names its upstream request"
    );

    let reply = app
        .batches
        .list_batches(xai::ListBatchesRequest::default())
        .await
        .expect("batches");
    let echoed = reply
        .metadata()
        .get("x-upstream-request-id")
        .expect("xAI's request id is echoed")
        .to_str()
        .expect("ascii");
    assert!(echoed.starts_with("req_"), "{echoed}");
}
