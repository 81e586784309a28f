//! Every JobService RPC through a real tonic client → gateway → simulator over HTTP.

mod common;

use std::time::Duration;

use batchgate::proto::sutro::v1::{self as pb, create_job_request::Inputs};
use common::{bad_fields, spawn_app, spawn_app_with, with_key};
use tonic::Code;

fn prompts(values: &[&str]) -> Option<Inputs> {
    Some(Inputs::Prompts(pb::StringInputs {
        values: values.iter().map(|s| s.to_string()).collect(),
    }))
}

fn create(values: &[&str]) -> pb::CreateJobRequest {
    pb::CreateJobRequest {
        model: "gpt-oss-20b".into(),
        inputs: prompts(values),
        name: Some("tests".into()),
        ..Default::default()
    }
}

async fn wait_for_status(
    app: &mut common::TestApp,
    job_id: &str,
    want: pb::JobStatus,
) -> pb::GetJobStatusResponse {
    for _ in 0..400 {
        let reply = app
            .jobs
            .get_job_status(pb::GetJobStatusRequest {
                job_id: job_id.into(),
            })
            .await
            .expect("status")
            .into_inner();
        if reply.status() == want {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("job {job_id} never reached {want:?}");
}

/// A gateway whose simulated jobs stay QUEUED for a minute.
async fn spawn_queued_app() -> common::TestApp {
    let sim = batchgate::sim::SimConfig {
        queue_ms: 60_000,
        ..batchgate::sim::SimConfig::fast()
    };
    spawn_app_with(sim, |_| {}).await
}

#[tokio::test]
async fn a_job_runs_from_create_to_results() {
    let mut app = spawn_app().await;
    let created = app
        .jobs
        .create_job(create(&["one", "two", "three"]))
        .await
        .unwrap()
        .into_inner();
    assert!(created.job_id.starts_with("job-"), "{}", created.job_id);
    assert!(!created.replayed);

    wait_for_status(&mut app, &created.job_id, pb::JobStatus::Succeeded).await;
    let job = app
        .jobs
        .get_job(pb::GetJobRequest {
            job_id: created.job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.status(), pb::JobStatus::Succeeded);
    assert_eq!(job.raw_status, "SUCCEEDED");
    assert_eq!(job.num_rows, Some(3));
    assert_eq!(job.name.as_deref(), Some("tests"));
    assert!(job.datetime_created.is_some() && job.datetime_completed.is_some());
    assert!(job.input_tokens.unwrap_or(0) > 0 && job.output_tokens.unwrap_or(0) > 0);

    let mut stream = app
        .jobs
        .get_job_results(pb::GetJobResultsRequest {
            job_id: created.job_id.clone(),
            include_inputs: true,
            include_cumulative_logprobs: true,
            max_rows_per_chunk: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut rows = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        assert_eq!(chunk.total_rows, 3);
        rows.extend(chunk.rows);
    }
    assert_eq!(rows.len(), 3);
    let inputs: Vec<_> = rows
        .iter()
        .map(|r| batchgate::convert::value_to_json(r.input.clone().unwrap()))
        .collect();
    assert_eq!(inputs, ["one", "two", "three"]);
    assert!(
        rows.iter()
            .all(|r| r.output.is_some() && r.cumulative_logprob.is_some())
    );
    assert_eq!(rows.iter().map(|r| r.index).collect::<Vec<_>>(), [0, 1, 2]);

    let url = app
        .jobs
        .get_job_results_url(pb::GetJobResultsUrlRequest {
            job_id: created.job_id.clone(),
            include_inputs: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(url.format, "parquet");
    assert!(url.include_inputs);
    assert_eq!(url.expires_in_seconds, 3600);
    assert!(!url.get_url.is_empty() && !url.head_url.is_empty());
    assert!(url.artifact.unwrap().filename.ends_with(".parquet"));
}

#[tokio::test]
async fn results_of_an_unfinished_job_are_a_failed_precondition() {
    let mut app = spawn_queued_app().await;
    let created = app
        .jobs
        .create_job(create(&["x"]))
        .await
        .unwrap()
        .into_inner();
    let err = app
        .jobs
        .get_job_results_url(pb::GetJobResultsUrlRequest {
            job_id: created.job_id,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
}

#[tokio::test]
async fn cancel_moves_a_job_to_cancelled() {
    let mut app = spawn_queued_app().await;
    let created = app
        .jobs
        .create_job(create(&["x", "y"]))
        .await
        .unwrap()
        .into_inner();
    let cancel = app
        .jobs
        .cancel_job(pb::CancelJobRequest {
            job_id: created.job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(cancel.cancelled);
    assert!(cancel.message.contains(&created.job_id));
    wait_for_status(&mut app, &created.job_id, pb::JobStatus::Cancelled).await;
}

#[tokio::test]
async fn list_jobs_pages_through_every_job_once() {
    let mut app = spawn_app().await;
    let mut created = Vec::new();
    for i in 0..7 {
        let reply = app
            .jobs
            .create_job(create(&[&format!("p{i}")]))
            .await
            .unwrap()
            .into_inner();
        created.push(reply.job_id);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .jobs
            .list_jobs(pb::ListJobsRequest {
                page_size: 3,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.jobs.len() <= 3);
        seen.extend(page.jobs.into_iter().map(|j| j.job_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    created.reverse(); // newest first
    assert_eq!(seen, created);
}

#[tokio::test]
async fn quotas_and_auth_checks() {
    let mut app = spawn_app().await;
    let quotas = app
        .jobs
        .get_quotas(pb::GetQuotasRequest {})
        .await
        .unwrap()
        .into_inner()
        .quotas;
    assert_eq!(quotas.len(), 2);
    assert_eq!(
        (
            quotas[0].priority,
            quotas[0].row_quota,
            quotas[0].token_quota
        ),
        (0, 1000, 1_000_000)
    );
    assert_eq!(quotas[1].priority, 1);

    for scope in [pb::AuthScope::Deployment, pb::AuthScope::BatchService] {
        let reply = app
            .jobs
            .check_auth(pb::CheckAuthRequest {
                scope: scope.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(reply.authenticated, "{scope:?}");
    }
    assert_eq!(app.sim.calls("GET /v1/auth/check"), 1);
    assert_eq!(app.sim.calls("GET /v1/try-authentication"), 1);
}

#[tokio::test]
async fn unknown_job_is_not_found_and_bad_key_is_unauthenticated() {
    let mut app = spawn_app().await;
    let err = app
        .jobs
        .get_job(pb::GetJobRequest {
            job_id: "job-00000000-0000-0000-0000-000000000000".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let err = app
        .jobs
        .get_quotas(with_key(pb::GetQuotasRequest {}, "sk_wrong_key_123"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        !err.message().contains("sk_wrong_key_123"),
        "{}",
        err.message()
    );
    let err = app
        .jobs
        .check_auth(with_key(
            pb::CheckAuthRequest::default(),
            "sk_wrong_key_123",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn invalid_input_names_each_field_and_sends_nothing_upstream() {
    let mut app = spawn_app().await;
    let bad = pb::CreateJobRequest {
        model: "gpt-oss-20b".into(),
        inputs: prompts(&[]),
        job_priority: 2,
        name: Some("n".repeat(46)),
        description: Some("d".repeat(513)),
        json_schema: Some(prost_types::Struct::default()),
        request_id: "r".repeat(300),
        ..Default::default()
    };
    let err = app.jobs.create_job(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields = bad_fields(&err);
    for field in [
        "prompts.values",
        "job_priority",
        "name",
        "description",
        "json_schema",
        "request_id",
    ] {
        assert!(
            fields.contains(&field.to_string()),
            "{field} missing from {fields:?}"
        );
    }

    let url = pb::CreateJobRequest {
        model: "gpt-oss-20b".into(),
        inputs: Some(Inputs::Url(pb::UrlInput {
            url: "http://bucket.example/in.csv".into(),
            column_name: None,
            id_column_name: Some(String::new()),
        })),
        ..Default::default()
    };
    let err = app.jobs.create_job(url).await.unwrap_err();
    assert_eq!(bad_fields(&err), ["url.url", "url.id_column_name"]);

    let no_inputs = pb::CreateJobRequest {
        model: "m".into(),
        ..Default::default()
    };
    assert_eq!(
        bad_fields(&app.jobs.create_job(no_inputs).await.unwrap_err()),
        ["inputs"]
    );

    for id in [
        "",
        ".",
        "../etc",
        "a:b",
        "a/b",
        "a?b",
        "a#b",
        "a\u{7}b",
        &"x".repeat(257),
    ] {
        let err = app
            .jobs
            .get_job(pb::GetJobRequest { job_id: id.into() })
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), bad_fields(&err)),
            (Code::InvalidArgument, vec!["job_id".to_string()]),
            "{id:?}"
        );
    }
    let err = app
        .jobs
        .list_jobs(pb::ListJobsRequest {
            page_size: 101,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), ["page_size"]);
    let err = app
        .jobs
        .get_job_results_url(pb::GetJobResultsUrlRequest {
            job_id: "job-1".into(),
            format: "csv".into(),
            expires_in_seconds: 604_801,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), ["format", "expires_in_seconds"]);

    assert_eq!(app.sim.total_calls(), 0, "nothing may reach the upstream");
}

#[tokio::test]
async fn a_retried_create_with_a_request_id_makes_one_job() {
    let mut app = spawn_app().await;
    let request = pb::CreateJobRequest {
        request_id: "nightly-2026-11-24".into(),
        ..create(&["a", "b"])
    };
    let racing = (0..5).map(|_| {
        let mut client = app.jobs.clone();
        let request = request.clone();
        tokio::spawn(async move { client.create_job(request).await.map(|r| r.into_inner()) })
    });
    let replies: Vec<_> = futures_util::future::join_all(racing)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    let again = app
        .jobs
        .create_job(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(again.replayed);
    assert!(replies.iter().all(|r| r.job_id == again.job_id));
    assert_eq!(replies.iter().filter(|r| !r.replayed).count(), 1);
    assert_eq!(app.sim.calls("POST /v1/batch-inference"), 1);

    let different = pb::CreateJobRequest {
        request_id: request.request_id.clone(),
        ..create(&["other"])
    };
    let err = app.jobs.create_job(different).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(app.sim.calls("POST /v1/batch-inference"), 1);

    // Another tenant's identical request id is its own key.
    let other_tenant = app
        .jobs
        .create_job(with_key(request, batchgate::sim::DEMO_API_KEY))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(other_tenant.job_id, again.job_id);
}

#[tokio::test]
async fn a_cost_estimate_succeeds_with_an_estimate_and_no_results() {
    let mut app = spawn_app().await;
    let created = app
        .jobs
        .create_job(pb::CreateJobRequest {
            cost_estimate: true,
            ..create(&["how much", "would this cost"])
        })
        .await
        .unwrap()
        .into_inner();
    wait_for_status(&mut app, &created.job_id, pb::JobStatus::Succeeded).await;
    let job = app
        .jobs
        .get_job(pb::GetJobRequest {
            job_id: created.job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(job.cost_estimate.is_some_and(|usd| usd > 0.0), "{job:?}");
    assert_eq!(job.num_rows, Some(2));

    let mut jobs = app.jobs.clone();
    let results = async move {
        let request = pb::GetJobResultsRequest {
            job_id: created.job_id,
            ..Default::default()
        };
        jobs.get_job_results(request)
            .await?
            .into_inner()
            .message()
            .await
    };
    let err = results.await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
}

#[tokio::test]
async fn a_create_the_caller_gave_up_on_still_finishes_and_its_retry_gets_the_job() {
    let mut app = spawn_app().await;
    app.sim.inject(batchgate::sim::FaultRule {
        route: "POST /v1/batch-inference".into(),
        times: 1,
        fault: batchgate::sim::Fault::Delay(Duration::from_millis(2_000)),
    });
    let request = pb::CreateJobRequest {
        request_id: "slow-create-1".into(),
        ..create(&["a"])
    };
    let mut first = tonic::Request::new(request.clone());
    first.set_timeout(Duration::from_millis(1_000));
    let err = app.jobs.create_job(first).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");

    // The create went on without the caller; the retry learns its job.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let retried = app.jobs.create_job(request).await.unwrap().into_inner();
    assert!(retried.replayed);
    app.jobs
        .get_job(pb::GetJobRequest {
            job_id: retried.job_id,
        })
        .await
        .expect("the job exists upstream");
    assert_eq!(app.sim.calls("POST /v1/batch-inference"), 1);
}

/// A gateway whose simulated Sutro adds a per-row `reasoning_tokens` column to every
/// job's results, as Sutro has added columns before.
async fn spawn_extra_column_app() -> common::TestApp {
    let sim = batchgate::sim::SimConfig {
        extra_result_columns: vec!["reasoning_tokens".into()],
        ..batchgate::sim::SimConfig::fast()
    };
    spawn_app_with(sim, |_| {}).await
}

async fn all_results(
    app: &mut common::TestApp,
    request: pb::GetJobResultsRequest,
) -> Result<(String, Vec<pb::ResultRow>), tonic::Status> {
    let mut stream = app.jobs.get_job_results(request).await?.into_inner();
    let (mut id_column_name, mut rows) = (String::new(), Vec::new());
    while let Some(chunk) = stream.message().await? {
        id_column_name = chunk.id_column_name;
        rows.extend(chunk.rows);
    }
    Ok((id_column_name, rows))
}

fn json_of(value: &Option<prost_types::Value>) -> serde_json::Value {
    value
        .clone()
        .map_or(serde_json::Value::Null, batchgate::convert::value_to_json)
}

#[tokio::test]
async fn a_new_results_column_is_passed_through_never_taken_for_the_id() {
    let mut app = spawn_extra_column_app().await;

    // A prompts job has no id column: the new column arrives beside the output.
    let job_id = common::create_job(&mut app, vec!["a".into(), "b".into(), "c".into()]).await;
    wait_for_status(&mut app, &job_id, pb::JobStatus::Succeeded).await;
    let (id_column, rows) = all_results(
        &mut app,
        pb::GetJobResultsRequest {
            job_id: job_id.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(id_column, "");
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert_eq!(row.id_column_value, None, "row {}", row.index);
        let tokens = json_of(&row.other_columns.get("reasoning_tokens").cloned());
        assert_eq!(tokens, serde_json::json!(1_000 + 17 * row.index));
    }

    // A URL job created through the gateway with `row_id`: the ids are row_id's.
    let created = app
        .jobs
        .create_job(pb::CreateJobRequest {
            model: "gpt-oss-20b".into(),
            inputs: Some(Inputs::Url(pb::UrlInput {
                url: "https://data.example/rows.csv".into(),
                column_name: None,
                id_column_name: Some("row_id".into()),
            })),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    wait_for_status(&mut app, &created.job_id, pb::JobStatus::Succeeded).await;
    let request = pb::GetJobResultsRequest {
        job_id: created.job_id.clone(),
        ..Default::default()
    };
    let (id_column, rows) = all_results(&mut app, request.clone()).await.unwrap();
    assert_eq!(id_column, "row_id");
    assert_eq!(rows.len(), 10);
    for row in &rows {
        assert_eq!(
            json_of(&row.id_column_value),
            serde_json::json!(row.index + 1)
        );
        assert_eq!(row.other_columns.len(), 1, "only the new column is other");
        let tokens = json_of(&row.other_columns.get("reasoning_tokens").cloned());
        assert_eq!(tokens, serde_json::json!(1_000 + 17 * row.index));
    }

    // The caller may name the id column itself; a name the results lack is refused.
    let (id_column, rows) = all_results(
        &mut app,
        pb::GetJobResultsRequest {
            id_column_name: "reasoning_tokens".into(),
            ..request.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(id_column, "reasoning_tokens");
    assert_eq!(json_of(&rows[2].id_column_value), serde_json::json!(1_034));
    assert_eq!(
        json_of(&rows[2].other_columns.get("row_id").cloned()),
        serde_json::json!(3)
    );
    let err = all_results(
        &mut app,
        pb::GetJobResultsRequest {
            id_column_name: "experience_id".into(),
            ..request
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(bad_fields(&err), ["id_column_name"]);
}

#[tokio::test]
async fn a_cancel_answered_with_no_body_is_still_a_cancel() {
    let mut app = spawn_queued_app().await;
    for reply in [
        batchgate::sim::EmptyReply::Empty,
        batchgate::sim::EmptyReply::Object,
        batchgate::sim::EmptyReply::NoContent,
    ] {
        let job_id = common::create_job(&mut app, vec!["x".into()]).await;
        app.sim.inject(batchgate::sim::FaultRule {
            route: "GET /v1/job-cancel/{job_id}".into(),
            times: 1,
            fault: batchgate::sim::Fault::EmptyReply(reply),
        });
        let cancelled = app
            .jobs
            .cancel_job(pb::CancelJobRequest {
                job_id: job_id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("{reply:?}: {e:?}"))
            .into_inner();
        assert!(cancelled.cancelled, "{reply:?}");
        let status = wait_for_status(&mut app, &job_id, pb::JobStatus::Cancelled).await;
        assert_eq!(status.raw_status, "CANCELLED");
    }
}
