//! The admin port after known traffic: `/metrics` has each series with the counts the
//! traffic implies, `/healthz` and `/readyz` answer, and each gateway keeps its own series.

use std::time::Duration;

use batchgate::proto::sutro::v1 as pb;
use batchgate::sim::SimConfig;
use batchgate::sim::faults::FaultConfig;
use tonic::Code;

use crate::common::metrics::{Scrape, get, scrape};
use crate::common::{TestApp, create_job, spawn_app, spawn_app_with, watch_job_to_end};

const CREATE: &str = "batchgate.sutro.v1.JobService/CreateJob";
const GET_JOB: &str = "batchgate.sutro.v1.JobService/GetJob";
const WATCH: &str = "batchgate.sutro.v1.JobService/WatchJob";

/// A gateway with every metered part on: caller limits (one create, then refused), a
/// Sutro create budget, the request byte budget, and a long cache TTL (no expiry mid-test).
pub async fn metered_app() -> TestApp {
    spawn_app_with(SimConfig::fast(), |settings| {
        let limits: batchgate::config::ConfigLayer = toml::from_str(
            "[rate_limits.create]\nper_second = 0.001\nburst = 1\n\
             [rate_limits.read]\nper_second = 1000\n",
        )
        .expect("valid limits");
        settings.rate_limits = limits.rate_limits;
        settings.sutro_creates_per_second = Some(1000.0);
        settings.max_request_bytes_in_flight = Some(64 * 1024 * 1024);
        settings.cache_live_ttl_ms = Some(60_000);
    })
    .await
}

fn create_request(prompt: &str, request_id: &str) -> pb::CreateJobRequest {
    pb::CreateJobRequest {
        model: "gpt-oss-20b".into(),
        inputs: Some(pb::create_job_request::Inputs::Prompts(pb::StringInputs {
            values: vec![prompt.into()],
        })),
        request_id: request_id.into(),
        ..Default::default()
    }
}

/// Known traffic: one keyed create admitted and one refused, a cache miss then a hit,
/// an unknown job, and a watch to the end. Returns the job's id.
pub async fn known_traffic(app: &mut TestApp) -> String {
    let job = app
        .jobs
        .create_job(create_request("hello", "req-known-1"))
        .await
        .expect("the job is created")
        .into_inner()
        .job_id;
    let refused = app
        .jobs
        .create_job(create_request("again", ""))
        .await
        .expect_err("the create limit's burst is spent");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    for _ in 0..2 {
        let request = pb::GetJobRequest {
            job_id: job.clone(),
        };
        app.jobs.get_job(request).await.expect("the job is read");
    }
    let missing = app
        .jobs
        .get_job(pb::GetJobRequest {
            job_id: "job-nobody-made".into(),
        })
        .await
        .expect_err("no such job");
    assert_eq!(missing.code(), Code::NotFound);
    watch_job_to_end(app, &job).await;
    job
}

/// Scrapes until `ready` holds (gauges settle once streams and pollers have ended).
pub async fn scrape_until(app: &TestApp, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    let admin = app.app.as_ref().expect("running").admin_addr();
    for _ in 0..100 {
        let page = scrape(admin).await;
        if ready(&page) {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = scrape(admin).await;
    panic!("the metrics never settled:\n{}", page.text);
}

fn calls(page: &Scrape, method: &str, code: &str) -> f64 {
    page.sum(
        "rpc_server_call_duration_seconds_count",
        &[
            ("rpc_system_name", "grpc"),
            ("rpc_method", method),
            ("rpc_response_status_code", code),
        ],
    )
}

#[tokio::test]
async fn metrics_count_known_traffic() {
    let mut app = metered_app().await;
    known_traffic(&mut app).await;
    // The watch's access entry is written when its body ends, just after the client
    // saw the end; pollers stop once their watchers are gone.
    let page = scrape_until(&app, |page| {
        calls(page, WATCH, "OK") == 1.0 && page.sum("batchgate_watch_upstream_watchers", &[]) == 0.0
    })
    .await;
    let text = &page.text;

    // Calls served, by method and code.
    assert_eq!(calls(&page, CREATE, "OK"), 1.0, "{text}");
    assert_eq!(calls(&page, CREATE, "RESOURCE_EXHAUSTED"), 1.0, "{text}");
    assert_eq!(calls(&page, GET_JOB, "OK"), 2.0, "{text}");
    assert_eq!(calls(&page, GET_JOB, "NOT_FOUND"), 1.0, "{text}");
    assert!(
        page.has(
            "rpc_server_call_duration_seconds_bucket",
            &[("rpc_method", GET_JOB), ("le", "+Inf")]
        ),
        "{text}"
    );

    // Upstream attempts, by route template (never an id) and status.
    let http = "http_client_request_duration_seconds_count";
    let creates = [
        ("batchgate_upstream", "sutro"),
        ("http_request_method", "POST"),
        ("http_route", "/batch-inference"),
        ("http_response_status_code", "200"),
    ];
    assert_eq!(
        page.sum(http, &creates),
        1.0,
        "the refused create never went up: {text}"
    );
    let lost = [("http_route", "/jobs/{id}"), ("error_type", "404")];
    assert_eq!(page.sum(http, &lost), 1.0, "{text}");
    assert!(!text.contains("job-nobody-made"), "ids stay out of labels");

    // The status cache: a miss (nobody vouched for the caller yet), then a hit.
    let lookups = "batchgate_cache_lookups_total";
    assert_eq!(
        page.sum(lookups, &[("batchgate_cache_result", "miss")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        page.sum(lookups, &[("batchgate_cache_result", "hit")]),
        1.0,
        "{text}"
    );

    // Watches: one stream opened and closed, its poller stopped.
    let open = [("batchgate_upstream", "sutro")];
    assert_eq!(page.sum("batchgate_watch_watchers", &open), 0.0, "{text}");
    assert!(page.has("batchgate_watch_watchers", &open), "{text}");

    // Caller limits: by tenant class and method class, never by tenant.
    let decisions = "batchgate_ratelimit_decisions_total";
    let create = |outcome| {
        page.sum(
            decisions,
            &[
                ("batchgate_tenant_class", "anonymous"),
                ("batchgate_ratelimit_class", "create"),
                ("batchgate_ratelimit_outcome", outcome),
            ],
        )
    };
    assert_eq!(
        (create("admitted"), create("rejected")),
        (1.0, 1.0),
        "{text}"
    );
    let reads = [
        ("batchgate_ratelimit_class", "read"),
        ("batchgate_ratelimit_outcome", "admitted"),
    ];
    assert_eq!(page.sum(decisions, &reads), 3.0, "{text}");

    // The Sutro create budget was waited on once; the byte budget holds nothing now.
    let waits = [
        ("batchgate_upstream", "sutro"),
        ("batchgate_budget", "create"),
    ];
    assert_eq!(
        page.sum("batchgate_upstream_budget_wait_seconds_count", &waits),
        1.0,
        "{text}"
    );
    assert_eq!(
        page.sum("batchgate_request_in_flight_bytes", &[]),
        0.0,
        "{text}"
    );
    assert!(page.has("batchgate_request_in_flight_bytes", &[]), "{text}");

    // Keyed creates, and upstream attempts in flight (none now).
    let keyed = [("batchgate_idempotency_outcome", "created")];
    assert_eq!(
        page.sum("batchgate_idempotency_creates_total", &keyed),
        1.0,
        "{text}"
    );
    let active = [("batchgate_upstream", "sutro")];
    assert!(page.has("http_client_active_requests", &active), "{text}");
    assert_eq!(page.sum("http_client_active_requests", &[]), 0.0, "{text}");

    // Without Redis there is no Redis gauge, and ready means serving.
    assert!(!text.contains("batchgate_redis_up"), "{text}");
    let admin = app.app.as_ref().expect("running").admin_addr();
    assert_eq!(get(admin, "/healthz").await.0, 200);
    assert_eq!(get(admin, "/readyz").await.0, 200);
}

#[tokio::test]
async fn concurrent_refreshes_of_one_job_are_coalesced_and_counted() {
    // A slow upstream: every read below arrives while the first one is still out.
    let slow = SimConfig {
        faults: FaultConfig {
            latency_ms: 300,
            ..FaultConfig::default()
        },
        ..SimConfig::fast()
    };
    let mut app = spawn_app_with(slow, |_| {}).await;
    let job = create_job(&mut app, vec!["hello".into()]).await;
    let reads = (0..8).map(|_| {
        let mut client = app.jobs.clone();
        let job_id = job.clone();
        async move { client.get_job(pb::GetJobRequest { job_id }).await }
    });
    for read in futures_util::future::join_all(reads).await {
        read.expect("the job is read");
    }
    let page = scrape(app.app.as_ref().expect("running").admin_addr()).await;
    let text = &page.text;
    let upstream = [("http_route", "/jobs/{id}")];
    let went_up = page.sum("http_client_request_duration_seconds_count", &upstream);
    assert_eq!(went_up, 1.0, "{text}");
    assert_eq!(
        page.sum("batchgate_cache_refreshes_coalesced_total", &[]),
        7.0,
        "{text}"
    );
    let misses = [("batchgate_cache_result", "miss")];
    assert_eq!(
        page.sum("batchgate_cache_lookups_total", &misses),
        8.0,
        "{text}"
    );
}

#[tokio::test]
async fn each_gateway_keeps_its_own_series_and_closes_its_admin_port() {
    let mut busy = spawn_app().await;
    let quiet = spawn_app().await;
    // A keyed create, then its retry: the second is answered from the first.
    for _ in 0..2 {
        let request = create_request("hello", "req-busy-1");
        busy.jobs.create_job(request).await.expect("created");
    }
    let busy_page = scrape(busy.app.as_ref().expect("running").admin_addr()).await;
    let quiet_admin = quiet.app.as_ref().expect("running").admin_addr();
    let quiet_page = scrape(quiet_admin).await;
    assert_eq!(calls(&busy_page, CREATE, "OK"), 2.0, "{}", busy_page.text);
    let keyed = |outcome| {
        let outcome = [("batchgate_idempotency_outcome", outcome)];
        busy_page.sum("batchgate_idempotency_creates_total", &outcome)
    };
    assert_eq!(
        (keyed("created"), keyed("replayed")),
        (1.0, 1.0),
        "{}",
        busy_page.text
    );
    assert_eq!(calls(&quiet_page, CREATE, "OK"), 0.0, "{}", quiet_page.text);

    let mut quiet = quiet;
    let app = quiet.app.take().expect("running");
    let shutdown = tokio::spawn(app.shutdown());
    shutdown.await.expect("joined").expect("a clean shutdown");
    assert!(
        reqwest::get(format!("http://{quiet_admin}/readyz"))
            .await
            .is_err(),
        "the admin port closes with the gateway"
    );
}

#[tokio::test]
async fn an_upstream_attempt_cut_off_by_the_deadline_is_a_timeout() {
    let slow = SimConfig {
        faults: FaultConfig {
            latency_ms: 2_000,
            ..FaultConfig::default()
        },
        ..SimConfig::fast()
    };
    let mut app = spawn_app_with(slow, |_| {}).await;
    let mut request = tonic::Request::new(pb::ListJobsRequest::default());
    request.set_timeout(Duration::from_millis(200));
    let error = app.jobs.list_jobs(request).await.expect_err("too slow");
    // The client's own timer and the gateway's deadline race: either ends the call.
    let ended = [Code::DeadlineExceeded, Code::Cancelled];
    assert!(ended.contains(&error.code()), "{error:?}");
    let list = "batchgate.sutro.v1.JobService/ListJobs";
    let timeout = [("http_route", "/list-jobs"), ("error_type", "timeout")];
    let page = scrape_until(&app, |page| {
        page.sum(
            "rpc_server_call_duration_seconds_count",
            &[("rpc_method", list)],
        ) == 1.0
            && page.sum("http_client_request_duration_seconds_count", &timeout) == 1.0
    })
    .await;
    assert!(
        !page.has(
            "http_client_request_duration_seconds_count",
            &[
                ("http_route", "/list-jobs"),
                ("http_response_status_code", "200")
            ]
        ),
        "{}",
        page.text
    );
}

#[tokio::test]
async fn a_taken_admin_port_stops_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let sim = batchgate::sim::start(SimConfig::fast(), "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("simulator starts");
    let mut settings = crate::common::test_settings(&sim);
    settings.admin_listen = Some(taken.local_addr().expect("bound"));
    let config = batchgate::config::Config::resolve(settings).expect("valid config");
    let error = batchgate::server::App::start(config)
        .await
        .err()
        .expect("the admin port is taken");
    assert!(error.to_string().contains("cannot listen"), "{error}");
}

#[tokio::test]
async fn readyz_turns_away_traffic_while_the_gateway_drains() {
    // A call held in flight upstream keeps the drain going while /readyz is asked.
    let slow = SimConfig {
        faults: FaultConfig {
            latency_ms: 1_500,
            ..FaultConfig::default()
        },
        ..SimConfig::fast()
    };
    let mut app = spawn_app_with(slow, |_| {}).await;
    let admin = app.app.as_ref().expect("running").admin_addr();
    assert_eq!(get(admin, "/readyz").await.0, 200);
    let mut client = app.jobs.clone();
    let in_flight =
        tokio::spawn(async move { client.list_jobs(pb::ListJobsRequest::default()).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let shutdown = tokio::spawn(app.app.take().expect("running").shutdown());
    let mut answer = get(admin, "/readyz").await;
    for _ in 0..20 {
        if answer.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        answer = get(admin, "/readyz").await;
    }
    assert_eq!(answer, (503, "draining\n".to_owned()));
    assert_eq!(
        get(admin, "/healthz").await.0,
        200,
        "still up while draining"
    );
    in_flight
        .await
        .expect("joined")
        .expect("the call in flight finishes");
    shutdown.await.expect("joined").expect("a clean shutdown");
}
