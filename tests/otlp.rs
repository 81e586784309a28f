//! Traces as a collector receives them over OTLP: the RPC's SERVER span in the caller's
//! trace, one CLIENT span per upstream attempt, detached work kept in the trace, no secrets.
//! And metrics: pushed when the gateway stops, with the counts known traffic implies and
//! no key in any attribute.
//!
//! One global subscriber per process: each test installs its own, so these tests need
//! a process each, as `cargo nextest` runs them (plain `cargo test` would fail them).

#[path = "otlp/collector.rs"]
mod collector;
mod common;

use batchgate::proto::sutro::v1 as pb;
use batchgate::ratelimit::{Class, LimitSetting};
use batchgate::sim::{self, Fault, FaultRule, RetryAfterForm};
use batchgate::telemetry::Protocol;
use collector::{Received, export_to_collector, wait_for};
use common::spawn_app;
use tonic::Code;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// `message` sent with the caller's `traceparent`.
fn traced<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{CALLER_SPAN}-01")
            .parse()
            .expect("ascii"),
    );
    request
}

/// Makes one traced `GetQuotas` call and waits for its span to reach `collector`.
async fn traced_quotas_call(
    app: &common::TestApp,
    guard: &batchgate::telemetry::TelemetryGuard,
    collector: &collector::Collector,
) -> Vec<Received> {
    app.jobs
        .clone()
        .get_quotas(traced(pb::GetQuotasRequest {}))
        .await
        .expect("quotas");
    wait_for(guard, collector, "the RPC", |spans| {
        !named(spans, GET_QUOTAS).is_empty()
    })
    .await
}

fn named<'a>(spans: &'a [Received], name: &str) -> Vec<&'a Received> {
    spans.iter().filter(|s| s.span.name == name).collect()
}

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const GET_QUOTAS: &str = "batchgate.sutro.v1.JobService/GetQuotas";

/// No attribute, event or status message of any span names a key or token.
fn assert_no_secrets(spans: &[Received]) {
    for span in spans {
        let text = span.all_text();
        for secret in [sim::DEMO_API_KEY, sim::XAI_DEMO_API_KEY, "authorization"] {
            assert!(
                !text.to_lowercase().contains(&secret.to_lowercase()),
                "{secret} in {text}"
            );
        }
    }
}

fn status_fault(route: &str, times: u32, code: u16) -> FaultRule {
    FaultRule {
        route: route.into(),
        times,
        fault: Fault::Status {
            code,
            retry_after_secs: None,
            retry_after_form: RetryAfterForm::Seconds,
        },
    }
}

/// The RPC's span and its one upstream attempt, after a call with a caller's trace.
async fn check_a_traced_call(protocol: Protocol) {
    let (collector, guard) = export_to_collector(protocol, false).await;
    let mut app = spawn_app().await;
    app.jobs
        .get_quotas(traced(pb::GetQuotasRequest {}))
        .await
        .expect("quotas");
    let spans = wait_for(
        &guard,
        &collector,
        "the RPC and its upstream span",
        |spans| {
            !named(spans, GET_QUOTAS).is_empty() && !named(spans, "GET /v1/get-quotas").is_empty()
        },
    )
    .await;

    let rpc = named(&spans, GET_QUOTAS)[0];
    assert_eq!(rpc.span.kind, SERVER);
    assert_eq!(rpc.trace_id(), TRACE_ID);
    assert_eq!(
        rpc.parent_id(),
        CALLER_SPAN,
        "the caller's span is the parent"
    );
    assert_eq!(rpc.attr("rpc.system.name").as_deref(), Some("grpc"));
    assert_eq!(rpc.attr("rpc.method").as_deref(), Some(GET_QUOTAS));
    assert_eq!(rpc.attr("rpc.response.status_code").as_deref(), Some("OK"));
    assert_eq!(rpc.attr("server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(
        rpc.attr("server.port"),
        Some(app.addr.port().to_string()),
        "{rpc:?}"
    );
    assert!(rpc.attr("tenant").is_some(), "{rpc:?}");
    assert!(!rpc.is_error());
    // The older names only with OTEL_SEMCONV_STABILITY_OPT_IN=rpc/dup.
    assert_eq!(rpc.attr("rpc.system"), None);
    assert_eq!(rpc.attr("rpc.grpc.status_code"), None);
    let service = rpc
        .resource
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| collector::attr(std::slice::from_ref(kv), "service.name"));
    assert_eq!(service.as_deref(), Some("batchgate"));

    let upstream = named(&spans, "GET /v1/get-quotas");
    assert_eq!(upstream.len(), 1, "one attempt: {upstream:?}");
    let upstream = upstream[0];
    assert_eq!(upstream.span.kind, CLIENT);
    assert_eq!(upstream.trace_id(), TRACE_ID);
    assert_eq!(
        upstream.parent_id(),
        rpc.span_id(),
        "a child of the RPC's span"
    );
    assert_eq!(upstream.attr("http.request.method").as_deref(), Some("GET"));
    assert_eq!(
        upstream.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    let sim_addr = app.sim.addr();
    assert_eq!(
        upstream.attr("url.full"),
        Some(format!("http://{sim_addr}/v1/get-quotas"))
    );
    assert_eq!(
        upstream.attr("server.address"),
        Some(sim_addr.ip().to_string())
    );
    assert_eq!(
        upstream.attr("server.port"),
        Some(sim_addr.port().to_string())
    );
    assert_eq!(upstream.attr("http.request.resend_count"), None);
    assert!(!upstream.is_error());

    // The upstream was told the attempt's span, in the caller's trace.
    let sent = app
        .sim
        .last_header("GET /v1/get-quotas", "traceparent")
        .expect("a traceparent upstream");
    assert_eq!(
        sent,
        format!("00-{TRACE_ID}-{}-01", upstream.span_id()),
        "the upstream's parent is the attempt's span"
    );
    assert_no_secrets(&spans);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_trace_is_exported_over_grpc() {
    check_a_traced_call(Protocol::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_trace_is_exported_over_http_protobuf() {
    check_a_traced_call(Protocol::HttpProtobuf).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_attempt_is_a_client_span_and_a_failing_call_is_an_error() {
    let (collector, guard) = export_to_collector(Protocol::Grpc, false).await;
    let mut app = spawn_app().await;
    // More 503s than attempts: the call fails UNAVAILABLE after its retries.
    app.sim.inject(status_fault("GET /v1/get-quotas", 10, 503));
    let err = app
        .jobs
        .get_quotas(traced(pb::GetQuotasRequest {}))
        .await
        .expect_err("every attempt failed");
    assert_eq!(err.code(), Code::Unavailable);
    let attempts = app.sim.calls("GET /v1/get-quotas") as usize;
    assert!(attempts > 1, "the read was retried");
    let spans = wait_for(&guard, &collector, "every attempt", |spans| {
        named(spans, "GET /v1/get-quotas").len() == attempts && !named(spans, GET_QUOTAS).is_empty()
    })
    .await;

    let rpc = named(&spans, GET_QUOTAS)[0];
    assert!(rpc.is_error(), "UNAVAILABLE is a server error: {rpc:?}");
    assert_eq!(
        rpc.attr("rpc.response.status_code").as_deref(),
        Some("UNAVAILABLE")
    );
    assert_eq!(rpc.attr("error.type").as_deref(), Some("UNAVAILABLE"));

    let mut resends: Vec<Option<String>> = Vec::new();
    for attempt in named(&spans, "GET /v1/get-quotas") {
        assert_eq!(attempt.span.kind, CLIENT);
        assert_eq!(attempt.trace_id(), TRACE_ID);
        assert_eq!(attempt.parent_id(), rpc.span_id());
        assert!(attempt.is_error(), "a 503 is an error: {attempt:?}");
        assert_eq!(attempt.attr("error.type").as_deref(), Some("503"));
        assert_eq!(
            attempt.attr("http.response.status_code").as_deref(),
            Some("503")
        );
        resends.push(attempt.attr("http.request.resend_count"));
    }
    resends.sort();
    let expected: Vec<Option<String>> = std::iter::once(None)
        .chain((1..attempts).map(|n| Some(n.to_string())))
        .collect();
    assert_eq!(
        resends, expected,
        "a retry is a new span with its resend count"
    );
    let retried = named(&spans, "GET /v1/get-quotas")
        .iter()
        .filter(|s| s.events().contains(&"retrying upstream call"))
        .count();
    assert_eq!(
        retried,
        attempts - 1,
        "every retry is an event on its attempt"
    );
    assert_no_secrets(&spans);

    // A caller's own key, refused upstream, is in no span either (another route: the
    // quota reads are still faulted).
    let err = app
        .jobs
        .list_jobs(with_key_in_trace(pb::ListJobsRequest::default()))
        .await
        .expect_err("a wrong key");
    assert_eq!(err.code(), Code::Unauthenticated);
    let spans = wait_for(&guard, &collector, "the refused call", |spans| {
        spans
            .iter()
            .any(|s| s.trace_id() == OTHER_TRACE && s.span.kind == SERVER)
    })
    .await;
    let refused: Vec<&Received> = spans
        .iter()
        .filter(|s| s.trace_id() == OTHER_TRACE)
        .collect();
    assert!(
        refused
            .iter()
            .any(|s| s.span.kind == CLIENT && s.attr("error.type").as_deref() == Some("401")),
        "{refused:?}"
    );
    for span in &spans {
        assert!(!span.all_text().contains(CALLER_KEY), "{span:?}");
    }
}

const CALLER_KEY: &str = "sk_caller_secret_key_123";
const OTHER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

/// `message` with the caller's own (wrong) key, in a trace of its own.
fn with_key_in_trace<T>(message: T) -> tonic::Request<T> {
    let mut request = common::with_key(message, CALLER_KEY);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{OTHER_TRACE}-{CALLER_SPAN}-01")
            .parse()
            .expect("ascii"),
    );
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_create_and_its_reads_stay_in_the_callers_trace() {
    let (collector, guard) = export_to_collector(Protocol::Grpc, false).await;
    let mut app = spawn_app().await;
    let created = app
        .jobs
        .create_job(traced(pb::CreateJobRequest {
            model: "gpt-oss-20b".into(),
            inputs: Some(pb::create_job_request::Inputs::Prompts(pb::StringInputs {
                values: vec!["hello".into()],
            })),
            request_id: "traced-create-1".into(),
            ..Default::default()
        }))
        .await
        .expect("created")
        .into_inner();
    for _ in 0..2 {
        app.jobs
            .get_job(traced(pb::GetJobRequest {
                job_id: created.job_id.clone(),
            }))
            .await
            .expect("read");
    }
    let create_rpc = "batchgate.sutro.v1.JobService/CreateJob";
    let get_rpc = "batchgate.sutro.v1.JobService/GetJob";
    let spans = wait_for(&guard, &collector, "the create and the reads", |spans| {
        !named(spans, "POST /v1/batch-inference").is_empty()
            && !named(spans, create_rpc).is_empty()
            && named(spans, get_rpc).len() == 2
    })
    .await;
    let upstream = named(&spans, "POST /v1/batch-inference")[0];
    assert_eq!(upstream.span.kind, CLIENT);
    assert_eq!(
        upstream.trace_id(),
        TRACE_ID,
        "the detached create is in the trace"
    );
    let rpc = named(&spans, create_rpc)[0];
    // The create runs in a span of its own, a child of the RPC's.
    let detached = spans
        .iter()
        .find(|s| s.span_id() == upstream.parent_id())
        .expect("the upstream span's parent is exported");
    assert_eq!(detached.span.name, "keyed create");
    assert_eq!(detached.parent_id(), rpc.span_id());

    // Cache outcomes are events on the reads' spans.
    let outcomes: Vec<String> = named(&spans, get_rpc)
        .iter()
        .flat_map(|s| s.span.events.iter())
        .filter(|e| e.name == "status cache")
        .filter_map(|e| collector::attr(&e.attributes, "cache"))
        .collect();
    assert!(outcomes.iter().any(|o| o == "HIT"), "{outcomes:?}");

    // A watch's poller outlives the call, in a span of its own in the caller's trace.
    let mut watch = app
        .jobs
        .watch_job(traced(pb::WatchJobRequest {
            job_id: created.job_id.clone(),
        }))
        .await
        .expect("the watch starts")
        .into_inner();
    while watch.message().await.expect("the watch goes on").is_some() {}
    let watch_rpc = "batchgate.sutro.v1.JobService/WatchJob";
    let spans = wait_for(&guard, &collector, "the watch and its poller", |spans| {
        !named(spans, "watch poller").is_empty() && !named(spans, watch_rpc).is_empty()
    })
    .await;
    let poller = named(&spans, "watch poller")[0];
    assert_eq!(poller.trace_id(), TRACE_ID);
    let watch_rpc = named(&spans, watch_rpc)[0];
    assert_eq!(poller.parent_id(), watch_rpc.span_id());
    assert!(
        spans
            .iter()
            .any(|s| s.span.kind == CLIENT && s.parent_id() == poller.span_id()),
        "the poller's upstream calls are its children"
    );
    assert_no_secrets(&spans);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_joins_anothers_refresh_links_to_it() {
    let (collector, guard) = export_to_collector(Protocol::Grpc, false).await;
    let mut app = spawn_app().await;
    let job_id = common::create_job(&mut app, vec!["x".into()]).await;
    // The next status read is slow, so the second reader finds the first one's refresh.
    app.sim.inject(FaultRule {
        route: "GET /v1/jobs/{job_id}".into(),
        times: 1,
        fault: Fault::Delay(std::time::Duration::from_millis(1000)),
    });
    let read = |trace: &str| {
        let mut jobs = app.jobs.clone();
        let mut request = tonic::Request::new(pb::GetJobRequest {
            job_id: job_id.clone(),
        });
        request.metadata_mut().insert(
            "traceparent",
            format!("00-{trace}-{CALLER_SPAN}-01")
                .parse()
                .expect("ascii"),
        );
        async move { jobs.get_job(request).await }
    };
    let first = tokio::spawn(read(TRACE_ID));
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    read(OTHER_TRACE).await.expect("the second read");
    first.await.expect("task").expect("the first read");

    let get_rpc = "batchgate.sutro.v1.JobService/GetJob";
    let spans = wait_for(&guard, &collector, "both reads and the refresh", |spans| {
        named(spans, get_rpc).len() >= 2 && !named(spans, "cache refresh").is_empty()
    })
    .await;
    let refresh = named(&spans, "cache refresh")
        .into_iter()
        .find(|s| s.trace_id() == TRACE_ID)
        .expect("the first read's refresh, in its trace");
    let joiner = named(&spans, get_rpc)
        .into_iter()
        .find(|s| s.trace_id() == OTHER_TRACE)
        .expect("the second read");
    assert!(
        joiner
            .span
            .links
            .iter()
            .any(|l| hex::encode(&l.span_id) == refresh.span_id()),
        "{joiner:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_dup_adds_the_older_names_health_is_untraced_and_limits_are_events() {
    let (collector, guard) = export_to_collector(Protocol::Grpc, true).await;
    // A rate limit the calls stay under: its decisions are events on their spans.
    let app = common::spawn_app_with(sim::SimConfig::fast(), |settings| {
        let read = LimitSetting {
            per_second: 100.0,
            burst: None,
        };
        settings.rate_limits = Some([(Class::Read, read)].into_iter().collect());
    })
    .await;
    let channel = common::connect(app.addr).await;
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health");
    let spans = traced_quotas_call(&app, &guard, &collector).await;
    let rpc = named(&spans, GET_QUOTAS)[0];
    assert_eq!(rpc.attr("rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        rpc.attr("rpc.service").as_deref(),
        Some("batchgate.sutro.v1.JobService")
    );
    assert_eq!(rpc.attr("rpc.grpc.status_code").as_deref(), Some("0"));
    assert_eq!(rpc.attr("rpc.system.name").as_deref(), Some("grpc"));
    assert!(
        !spans.iter().any(|s| s.span.name.starts_with("grpc.health")),
        "health checks are not traced"
    );
    let decision = rpc
        .span
        .events
        .iter()
        .find(|e| e.name == "rate limit")
        .expect("the limiter's decision is an event");
    assert_eq!(
        collector::attr(&decision.attributes, "admitted").as_deref(),
        Some("true")
    );
}

/// The metrics a collector receives when the gateway stops: the RPC and upstream
/// durations and the cache lookups, with the counts known traffic implies, and no key
/// (the gateway's own or a caller's) in any attribute of any resource, scope or point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_pushed_on_shutdown_with_no_secrets() {
    // No telemetry subscriber: metrics need none, and the push is the gateway's own.
    let (collector, endpoint) = collector::start(Protocol::Grpc).await;
    let mut app = common::spawn_app_with(sim::SimConfig::fast(), |settings| {
        settings.otlp_endpoint = Some(endpoint);
        // No expiry mid-test: the second read is a hit.
        settings.cache_live_ttl_ms = Some(60_000);
    })
    .await;

    let job_id = common::create_job(&mut app, vec!["hello".into()]).await;
    for _ in 0..2 {
        app.jobs
            .get_job(pb::GetJobRequest {
                job_id: job_id.clone(),
            })
            .await
            .expect("the job is read");
    }
    let err = app
        .jobs
        .list_jobs(common::with_key(pb::ListJobsRequest::default(), CALLER_KEY))
        .await
        .expect_err("a wrong key");
    assert_eq!(err.code(), Code::Unauthenticated);

    // An RPC is counted as its body ends, a moment after the caller has its answer:
    // wait until the admin port shows all four, so the push has them too.
    let admin = app.app.as_ref().expect("running").admin_addr();
    let mut settled = false;
    for _ in 0..100 {
        let page = common::metrics::scrape(admin).await;
        if page.sum("rpc_server_call_duration_seconds_count", &[]) == 4.0 {
            settled = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(settled, "the four calls were never counted");
    assert!(
        collector.metric_exports().is_empty(),
        "nothing is pushed before the interval or the shutdown"
    );

    // Stopping the gateway pushes what it has (the periodic reader's interval is 60 s).
    let stopped = app.app.take().expect("running").shutdown();
    tokio::time::timeout(std::time::Duration::from_secs(20), stopped)
        .await
        .expect("shutdown is bounded")
        .expect("clean shutdown");
    let exports = collector.metric_exports();
    assert!(!exports.is_empty(), "no metrics were pushed on shutdown");

    // Calls served, by method and code.
    let rpc = collector
        .last_metric("rpc.server.call.duration")
        .expect("rpc.server.call.duration");
    assert_eq!(rpc.unit, "s");
    let rpc = collector::points(&rpc);
    let calls = |method: &str, code: &str| -> f64 {
        rpc.iter()
            .filter(|p| {
                p.has(&[
                    ("rpc.system.name", "grpc"),
                    ("rpc.method", method),
                    ("rpc.response.status_code", code),
                ])
            })
            .map(|p| p.value)
            .sum()
    };
    let jobs = "batchgate.sutro.v1.JobService";
    assert_eq!(calls(&format!("{jobs}/CreateJob"), "OK"), 1.0, "{rpc:?}");
    assert_eq!(calls(&format!("{jobs}/GetJob"), "OK"), 2.0, "{rpc:?}");
    assert_eq!(
        calls(&format!("{jobs}/ListJobs"), "UNAUTHENTICATED"),
        1.0,
        "{rpc:?}"
    );
    assert_eq!(rpc.iter().map(|p| p.value).sum::<f64>(), 4.0, "{rpc:?}");

    // Upstream attempts: the create, one read (the other is a hit), the refused list.
    let http = collector
        .last_metric("http.client.request.duration")
        .expect("http.client.request.duration");
    let http = collector::points(&http);
    let attempts = |attributes: &[(&str, &str)]| -> f64 {
        http.iter()
            .filter(|p| p.has(attributes))
            .map(|p| p.value)
            .sum()
    };
    let create = [
        ("batchgate.upstream", "sutro"),
        ("http.request.method", "POST"),
        ("http.route", "/batch-inference"),
        ("http.response.status_code", "200"),
    ];
    assert_eq!(attempts(&create), 1.0, "{http:?}");
    let read = [
        ("http.request.method", "GET"),
        ("http.route", "/jobs/{id}"),
        ("http.response.status_code", "200"),
    ];
    assert_eq!(attempts(&read), 1.0, "the second read is a hit: {http:?}");
    assert_eq!(attempts(&[("error.type", "401")]), 1.0, "{http:?}");
    assert!(
        http.iter()
            .all(|p| p.attr("http.route").is_some_and(|r| !r.contains(&job_id))),
        "ids stay out of attributes: {http:?}"
    );

    // The status cache: a miss, then a hit.
    let lookups = collector
        .last_metric("batchgate.cache.lookups")
        .expect("batchgate.cache.lookups");
    let lookups = collector::points(&lookups);
    let lookups_of = |result: &str| -> f64 {
        lookups
            .iter()
            .filter(|p| p.has(&[("batchgate.cache.result", result)]))
            .map(|p| p.value)
            .sum()
    };
    assert_eq!(lookups_of("miss"), 1.0, "{lookups:?}");
    assert_eq!(lookups_of("hit"), 1.0, "{lookups:?}");

    // The resource names the service, and no attribute anywhere holds a key.
    let service = exports
        .iter()
        .flat_map(|r| &r.resource_metrics)
        .filter_map(|r| r.resource.as_ref())
        .find_map(|r| collector::attr(&r.attributes, "service.name"));
    assert_eq!(service.as_deref(), Some("batchgate"));
    for export in &exports {
        let attributes = collector::metric_attributes(export);
        assert!(!attributes.is_empty());
        // The whole export too, names and units included.
        let everything = format!("{export:?}");
        for secret in [
            sim::DEMO_API_KEY,
            sim::XAI_DEMO_API_KEY,
            CALLER_KEY,
            "authorization",
        ] {
            let secret = secret.to_lowercase();
            for attribute in &attributes {
                assert!(
                    !attribute.to_lowercase().contains(&secret),
                    "{secret} in {attribute}"
                );
            }
            assert!(!everything.to_lowercase().contains(&secret), "{secret}");
        }
    }
}

/// Waits until the admin port's Prometheus page counts `calls` RPCs (an RPC is counted
/// as its body ends, a moment after the caller has its answer).
async fn wait_until_counted(app: &common::TestApp, calls: f64) {
    let admin = app.app.as_ref().expect("running").admin_addr();
    for _ in 0..100 {
        let page = common::metrics::scrape(admin).await;
        if page.sum("rpc_server_call_duration_seconds_count", &[]) == calls {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the admin port never counted {calls} calls");
}

/// Stops the gateway, which pushes its metrics one last time.
async fn stop(app: &mut common::TestApp) {
    let stopped = app.app.take().expect("running").shutdown();
    tokio::time::timeout(std::time::Duration::from_secs(20), stopped)
        .await
        .expect("shutdown is bounded")
        .expect("clean shutdown");
}

/// Metrics follow the same settings as traces: the protocol (here `http/protobuf`, to
/// the collector's `/v1/metrics`), and one resource, named by `OTEL_SERVICE_NAME`, with
/// `OTEL_RESOURCE_ATTRIBUTES`, on both signals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_go_over_http_protobuf_with_the_traces_resource() {
    let (collector, settings, guard) = collector::telemetry_to_collector(
        Protocol::HttpProtobuf,
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_SERVICE_NAME", "gateway-under-test"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment.name=test,service.name=overridden",
            ),
        ],
    )
    .await;
    let mut app =
        common::spawn_app_telemetry(sim::SimConfig::fast(), Some(&settings), |_| {}).await;
    let spans = traced_quotas_call(&app, &guard, &collector).await;
    let rpc = named(&spans, GET_QUOTAS)[0];
    assert_eq!(
        collector::attr(&rpc.resource, "service.name").as_deref(),
        Some("gateway-under-test")
    );
    assert_eq!(
        collector::attr(&rpc.resource, "deployment.environment.name").as_deref(),
        Some("test")
    );

    wait_until_counted(&app, 1.0).await;
    stop(&mut app).await;
    let duration = collector
        .last_metric("rpc.server.call.duration")
        .expect("rpc.server.call.duration over http/protobuf");
    let quotas: f64 = collector::points(&duration)
        .iter()
        .filter(|p| {
            p.has(&[
                ("rpc.method", GET_QUOTAS),
                ("rpc.response.status_code", "OK"),
            ])
        })
        .map(|p| p.value)
        .sum();
    assert_eq!(quotas, 1.0, "{duration:?}");
    let names = collector::metrics_resource_attr(&collector, "service.name");
    assert!(!names.is_empty());
    assert!(
        names
            .iter()
            .all(|n| n.as_deref() == Some("gateway-under-test")),
        "{names:?}"
    );
    let environments = collector::metrics_resource_attr(&collector, "deployment.environment.name");
    assert!(
        environments.iter().all(|e| e.as_deref() == Some("test")),
        "{environments:?}"
    );
}

/// `OTEL_METRICS_EXPORTER=none` stops the OTLP push of metrics only: traces still reach
/// the collector, and Prometheus on the admin port still counts the calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_exporter_none_keeps_traces_and_prometheus() {
    let (collector, settings, guard) =
        collector::telemetry_to_collector(Protocol::Grpc, &[("OTEL_METRICS_EXPORTER", "none")])
            .await;
    let mut app =
        common::spawn_app_telemetry(sim::SimConfig::fast(), Some(&settings), |_| {}).await;
    let spans = traced_quotas_call(&app, &guard, &collector).await;
    assert_eq!(named(&spans, GET_QUOTAS)[0].trace_id(), TRACE_ID);
    wait_until_counted(&app, 1.0).await;
    stop(&mut app).await;
    assert!(
        collector.metric_exports().is_empty(),
        "metrics were pushed with OTEL_METRICS_EXPORTER=none"
    );
}
