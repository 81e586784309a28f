//! How upstream trouble reaches callers: retries of reads, none of creates, rate
//! limits with RetryInfo, deadlines that drop the upstream request.

mod common;

use std::time::Duration;

use batchgate::proto::sutro::v1 as pb;
use batchgate::sim::{Fault, FaultRule, RetryAfterForm};
use common::{spawn_app, spawn_app_with};
use tonic::Code;
use tonic_types::StatusExt;

fn status_fault(route: &str, times: u32, code: u16, retry_after_secs: Option<u64>) -> FaultRule {
    FaultRule {
        route: route.into(),
        times,
        fault: Fault::Status {
            code,
            retry_after_secs,
            retry_after_form: RetryAfterForm::Seconds,
        },
    }
}

fn one_prompt_job() -> pb::CreateJobRequest {
    pb::CreateJobRequest {
        model: "gpt-oss-20b".into(),
        inputs: Some(pb::create_job_request::Inputs::Prompts(pb::StringInputs {
            values: vec!["x".into()],
        })),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_read_is_retried_through_a_503() {
    let mut app = spawn_app().await;
    app.sim
        .inject(status_fault("GET /v1/get-quotas", 1, 503, None));
    let quotas = app
        .jobs
        .get_quotas(pb::GetQuotasRequest {})
        .await
        .expect("retried to success");
    assert_eq!(quotas.into_inner().quotas.len(), 2);
    assert_eq!(app.sim.calls("GET /v1/get-quotas"), 2);
}

#[tokio::test]
async fn a_create_is_never_retried_blindly() {
    let mut app = spawn_app().await;
    app.sim
        .inject(status_fault("POST /v1/batch-inference", 1, 503, None));
    let err = app.jobs.create_job(one_prompt_job()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(app.sim.calls("POST /v1/batch-inference"), 1);
    let info = err
        .get_error_details()
        .error_info()
        .cloned()
        .expect("error info");
    assert_eq!(
        info.metadata.get("upstream_status").map(String::as_str),
        Some("503")
    );
}

#[tokio::test]
async fn rate_limits_past_the_retry_budget_are_resource_exhausted_with_retry_info() {
    let mut app = spawn_app().await;
    // Retry-After 0 on every attempt: the attempt budget (4) runs out.
    app.sim
        .inject(status_fault("GET /v1/get-quotas", 10, 429, Some(0)));
    let err = app
        .jobs
        .get_quotas(pb::GetQuotasRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(app.sim.calls("GET /v1/get-quotas"), 4);
    assert!(err.get_error_details().retry_info().is_some());

    // Retry-After beyond the deadline: no point waiting, answer at once.
    let mut app = spawn_app().await;
    app.sim
        .inject(status_fault("GET /v1/get-quotas", 1, 429, Some(120)));
    let started = std::time::Instant::now();
    let err = app
        .jobs
        .get_quotas(pb::GetQuotasRequest {})
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(err.code(), Code::ResourceExhausted);
    let delay = err
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay);
    assert_eq!(delay, Some(Duration::from_secs(120)));
    assert_eq!(app.sim.calls("GET /v1/get-quotas"), 1);
}

#[tokio::test]
async fn a_short_deadline_is_deadline_exceeded_and_drops_the_upstream_request() {
    let mut app = spawn_app().await;
    app.sim.inject(FaultRule {
        route: "GET /v1/get-quotas".into(),
        times: 1,
        fault: Fault::Delay(Duration::from_secs(3)),
    });
    let mut request = tonic::Request::new(pb::GetQuotasRequest {});
    request.set_timeout(Duration::from_millis(1_000));
    let started = std::time::Instant::now();
    let err = app.jobs.get_quotas(request).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    for _ in 0..100 {
        if app.sim.dropped("GET /v1/get-quotas") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        app.sim.dropped("GET /v1/get-quotas"),
        1,
        "the upstream request must be abandoned"
    );
}

#[tokio::test]
async fn server_errors_map_through_the_table() {
    let mut app = spawn_app_with(batchgate::sim::SimConfig::fast(), |s| {
        s.retry_max_attempts = Some(1)
    })
    .await;
    for (status, code) in [
        (500, Code::Internal),
        (502, Code::Unavailable),
        (524, Code::Unavailable),
        (504, Code::DeadlineExceeded),
    ] {
        app.sim
            .inject(status_fault("GET /v1/get-quotas", 1, status, None));
        let err = app
            .jobs
            .get_quotas(pb::GetQuotasRequest {})
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "HTTP {status}");
    }
}

#[tokio::test]
async fn retry_after_in_every_http_date_form_becomes_retry_info() {
    let mut app = spawn_app().await;
    for form in [
        RetryAfterForm::Imf,
        RetryAfterForm::Rfc850,
        RetryAfterForm::Asctime,
    ] {
        // A create is never retried, so the 429 reaches the caller as it came.
        app.sim.inject(FaultRule {
            route: "POST /v1/batch-inference".into(),
            times: 1,
            fault: Fault::Status {
                code: 429,
                retry_after_secs: Some(90),
                retry_after_form: form,
            },
        });
        let err = app.jobs.create_job(one_prompt_job()).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{form:?}");
        let delay = err
            .get_error_details()
            .retry_info()
            .and_then(|r| r.retry_delay)
            .unwrap_or_else(|| panic!("{form:?}: no RetryInfo in {err:?}"));
        // A date has whole seconds, and the call itself takes a moment.
        assert!(
            delay > Duration::from_secs(85) && delay <= Duration::from_secs(90),
            "{form:?}: {delay:?}"
        );
    }
}
