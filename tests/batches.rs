//! Every BatchService RPC through a real tonic client → gateway → simulator over HTTP.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use batchgate::proto::xai::v1::{self as pb, batch_request::Body, batch_result::Result as Outcome};
use batchgate::sim::SimConfig;
use batchgate::sim::xai::XaiSimConfig;
use common::{bad_fields, spawn_app, spawn_app_with, with_key};
use tonic::Code;
use tonic_types::StatusExt;

const REQUESTS_ROUTE: &str = "POST /v1/batches/{batch_id}/requests";

fn chat(id: Option<String>, prompt: &str) -> pb::BatchRequest {
    chat_with_model(id, prompt, "grok-4")
}

fn chat_with_model(id: Option<String>, prompt: &str, model: &str) -> pb::BatchRequest {
    let body = batchgate::convert::json_to_struct(serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
    }));
    pb::BatchRequest {
        batch_request_id: id,
        body: body.map(Body::ChatGetCompletion),
    }
}

async fn new_batch(app: &mut common::TestApp, name: &str) -> String {
    app.batches
        .create_batch(pb::CreateBatchRequest {
            name: name.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .batch_id
}

async fn get_batch(app: &mut common::TestApp, batch_id: &str) -> pb::Batch {
    app.batches
        .get_batch(pb::GetBatchRequest {
            batch_id: batch_id.into(),
        })
        .await
        .expect("the batch")
        .into_inner()
}

async fn add(
    app: &mut common::TestApp,
    batch_id: &str,
    requests: Vec<pb::BatchRequest>,
) -> Result<pb::AddBatchRequestsResponse, tonic::Status> {
    app.batches
        .add_batch_requests(pb::AddBatchRequestsRequest {
            batch_id: batch_id.into(),
            batch_requests: requests,
        })
        .await
        .map(|r| r.into_inner())
}

async fn watch_to_end(app: &mut common::TestApp, batch_id: &str) -> Vec<pb::WatchBatchResponse> {
    let mut stream = app
        .batches
        .watch_batch(pb::WatchBatchRequest {
            batch_id: batch_id.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut messages = Vec::new();
    while let Some(m) = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("watch progresses")
        .unwrap()
    {
        messages.push(m);
    }
    messages
}

async fn all_results(
    app: &mut common::TestApp,
    batch_id: &str,
    upstream_page_size: i32,
) -> Vec<pb::BatchResult> {
    let mut stream = app
        .batches
        .stream_batch_results(pb::StreamBatchResultsRequest {
            batch_id: batch_id.into(),
            upstream_page_size,
        })
        .await
        .unwrap()
        .into_inner();
    let mut results = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        results.extend(chunk.results);
    }
    results
}

#[tokio::test]
async fn a_batch_runs_from_create_to_results() {
    let mut app = spawn_app().await;
    let batch_id = new_batch(&mut app, "nightly eval").await;
    let added = add(
        &mut app,
        &batch_id,
        vec![
            chat(Some("q1".into()), "hi"),
            chat(None, "there"),
            chat(None, "again"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(added.batch_request_ids.len(), 3);
    assert_eq!(added.batch_request_ids[0], "q1");
    assert_eq!(added.upstream_calls, 1);

    let messages = watch_to_end(&mut app, &batch_id).await;
    assert_eq!(messages[0].kind(), pb::WatchEventKind::Snapshot);
    let last = messages.last().unwrap();
    assert_eq!(last.kind(), pb::WatchEventKind::Final);
    assert_eq!(last.done_reason(), pb::DoneReason::Completed);
    let state = last.batch.clone().unwrap().state.unwrap();
    assert_eq!(
        (state.num_requests, state.num_pending, state.num_success),
        (3, 0, 3)
    );

    let batch = get_batch(&mut app, &batch_id).await;
    assert_eq!(batch.name, "nightly eval");
    assert!(batch.create_time.is_some() && batch.expire_time.is_some());

    let page = app
        .batches
        .list_batch_results(pb::ListBatchResultsRequest {
            batch_id: batch_id.clone(),
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.results.len(), 2);
    assert!(!page.next_page_token.is_empty());
    assert!(matches!(&page.results[0].result, Some(Outcome::Response(r)) if r.body.is_some()));

    let metadata = app
        .batches
        .list_batch_request_metadata(pb::ListBatchRequestMetadataRequest {
            batch_id: batch_id.clone(),
            states: vec![pb::batch_request_metadata::State::Succeeded.into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(metadata.batch_request_metadata.len(), 3);
    assert!(
        metadata
            .batch_request_metadata
            .iter()
            .all(|m| m.raw_state == "succeeded" && m.model == "grok-4")
    );
    let none_pending = app
        .batches
        .list_batch_request_metadata(pb::ListBatchRequestMetadataRequest {
            batch_id: batch_id.clone(),
            states: vec![pb::batch_request_metadata::State::Pending.into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none_pending.batch_request_metadata.is_empty());

    let listed = app
        .batches
        .list_batches(pb::ListBatchesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.batches.iter().any(|b| b.batch_id == batch_id));
}

#[tokio::test]
async fn five_thousand_requests_arrive_in_chunks_each_exactly_once_and_a_retry_adds_nothing() {
    let mut app = spawn_app().await;
    let batch_id = new_batch(&mut app, "big").await;
    let requests: Vec<_> = (0..5_000)
        .map(|i| chat(None, &format!("prompt {i}")))
        .collect();
    let added = add(&mut app, &batch_id, requests.clone()).await.unwrap();
    assert_eq!(added.batch_request_ids.len(), 5_000);
    assert_eq!(added.upstream_calls, 5);
    assert_eq!(app.sim.calls(REQUESTS_ROUTE), 5);

    let retried = add(&mut app, &batch_id, requests).await.unwrap();
    assert_eq!(
        retried.batch_request_ids, added.batch_request_ids,
        "a retry reuses the ids"
    );

    watch_to_end(&mut app, &batch_id).await;
    let batch = get_batch(&mut app, &batch_id).await;
    assert_eq!(
        batch.state.unwrap().num_requests,
        5_000,
        "no duplicates upstream"
    );
    let results = all_results(&mut app, &batch_id, 1000).await;
    let ids: HashSet<_> = results.iter().map(|r| r.batch_request_id.clone()).collect();
    assert_eq!(results.len(), 5_000);
    assert_eq!(ids, added.batch_request_ids.into_iter().collect());
}

#[tokio::test]
async fn a_failed_third_chunk_reports_exactly_which_requests_were_accepted() {
    let mut app = spawn_app_with(SimConfig::fast(), |s| s.xai_add_chunk_requests = Some(100)).await;
    let batch_id = new_batch(&mut app, "partial").await;
    let requests: Vec<_> = (0..500)
        .map(|i| {
            let model = if i == 250 {
                "grok-unsupported"
            } else {
                "grok-4"
            };
            chat_with_model(Some(format!("req-{i}")), "x", model)
        })
        .collect();
    let err = add(&mut app, &batch_id, requests).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .contains("requests 0..200 of 500 were accepted"),
        "{}",
        err.message()
    );
    let info = err
        .get_error_details()
        .error_info()
        .cloned()
        .expect("error info");
    assert_eq!(info.metadata["accepted_count"], "200");
    assert_eq!(info.metadata["last_accepted_id"], "req-199");
    assert_eq!(info.metadata["first_not_accepted_id"], "req-200");
    assert_eq!(app.sim.calls(REQUESTS_ROUTE), 3);
    let batch = get_batch(&mut app, &batch_id).await;
    assert_eq!(batch.state.unwrap().num_requests, 200);
}

#[tokio::test]
async fn results_stream_across_pages_each_exactly_once() {
    let mut app = spawn_app().await;
    let batch_id = new_batch(&mut app, "pages").await;
    add(
        &mut app,
        &batch_id,
        (0..25).map(|i| chat(None, &format!("p{i}"))).collect(),
    )
    .await
    .unwrap();
    watch_to_end(&mut app, &batch_id).await;
    let results = all_results(&mut app, &batch_id, 10).await;
    let ids: HashSet<_> = results.iter().map(|r| r.batch_request_id.clone()).collect();
    assert_eq!((results.len(), ids.len()), (25, 25));
    assert!(app.sim.calls("GET /v1/batches/{batch_id}/results") >= 3);
}

#[tokio::test]
async fn watch_ends_on_cancel_and_adds_after_cancel_are_refused() {
    let sim = SimConfig {
        xai: XaiSimConfig {
            request_ms: 60_000,
            ..XaiSimConfig::fast()
        },
        ..SimConfig::fast()
    };
    let mut app = spawn_app_with(sim, |_| {}).await;
    let batch_id = new_batch(&mut app, "to cancel").await;
    add(
        &mut app,
        &batch_id,
        vec![chat(None, "slow"), chat(None, "slower")],
    )
    .await
    .unwrap();

    let mut stream = app
        .batches
        .watch_batch(pb::WatchBatchRequest {
            batch_id: batch_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.kind(), pb::WatchEventKind::Snapshot);
    assert_eq!(first.batch.unwrap().state.unwrap().num_pending, 2);

    let cancelled = app
        .batches
        .cancel_batch(pb::CancelBatchRequest {
            batch_id: batch_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(cancelled.cancel_time.is_some());
    let mut last = None;
    while let Some(m) = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap()
    {
        last = Some(m);
    }
    let last = last.expect("a final message");
    assert_eq!(
        (last.kind(), last.done_reason()),
        (pb::WatchEventKind::Final, pb::DoneReason::Cancelled)
    );

    let err = add(&mut app, &batch_id, vec![chat(None, "late")])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
}

#[tokio::test]
async fn unknown_batch_bad_key_and_invalid_input() {
    let mut app = spawn_app().await;
    let err = app
        .batches
        .get_batch(pb::GetBatchRequest {
            batch_id: "batch_00000000-0000-0000-0000-000000000000".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = app
        .batches
        .list_batches(with_key(pb::ListBatchesRequest::default(), "xai-wrong-key"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(!err.message().contains("xai-wrong-key"));

    let calls_before = app.sim.total_calls();
    let err = app
        .batches
        .create_batch(pb::CreateBatchRequest::default())
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), ["name"]);
    let duplicate = vec![
        chat(Some("same".into()), "a"),
        chat(Some("same".into()), "b"),
        pb::BatchRequest {
            batch_request_id: None,
            body: None,
        },
    ];
    let err = add(&mut app, "batch_x", duplicate).await.unwrap_err();
    assert_eq!(
        bad_fields(&err),
        [
            "batch_requests[1].batch_request_id",
            "batch_requests[2].body"
        ]
    );
    let err = app
        .batches
        .list_batch_results(pb::ListBatchResultsRequest {
            batch_id: "a/b".into(),
            page_size: 1001,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), ["batch_id", "page_size"]);
    assert_eq!(
        app.sim.total_calls(),
        calls_before,
        "nothing may reach the upstream"
    );
}

#[tokio::test]
async fn a_retried_create_with_a_request_id_makes_one_batch() {
    let mut app = spawn_app().await;
    let request = pb::CreateBatchRequest {
        name: "once".into(),
        request_id: "create-once-1".into(),
        ..Default::default()
    };
    let first = app
        .batches
        .create_batch(request.clone())
        .await
        .unwrap()
        .into_inner();
    let second = app
        .batches
        .create_batch(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.batch_id, second.batch_id);
    assert_eq!(app.sim.calls("POST /v1/batches"), 1);
}

#[tokio::test]
async fn a_keyed_create_answers_with_the_created_batch_not_a_second_read() {
    let mut app = spawn_app().await;
    // Reads of any batch fail for a while: a keyed create must not depend on one.
    app.sim.inject(batchgate::sim::FaultRule {
        route: "GET /v1/batches/{batch_id}".into(),
        times: 10,
        fault: batchgate::sim::Fault::Status {
            code: 503,
            retry_after_secs: None,
            retry_after_form: Default::default(),
        },
    });
    let request = pb::CreateBatchRequest {
        name: "answered by its create".into(),
        request_id: "create-once-reply".into(),
        ..Default::default()
    };
    let created = app
        .batches
        .create_batch(request)
        .await
        .expect("the create succeeded, so the call does");
    let request_id = created.metadata().get("x-upstream-request-id");
    assert!(request_id.is_some(), "{:?}", created.metadata());
    assert!(!created.get_ref().batch_id.is_empty());
    assert_eq!(app.sim.calls("GET /v1/batches/{batch_id}"), 0);
}

#[tokio::test]
async fn a_changed_request_under_a_used_id_and_adds_to_a_file_batch_are_failed_preconditions() {
    let mut app = spawn_app().await;
    let batch_id = new_batch(&mut app, "ids").await;
    add(
        &mut app,
        &batch_id,
        vec![chat(Some("q1".into()), "first wording")],
    )
    .await
    .unwrap();
    let err = add(
        &mut app,
        &batch_id,
        vec![chat(Some("q1".into()), "second wording")],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("content differs"),
        "{}",
        err.message()
    );

    let file_batch = app
        .batches
        .create_batch(pb::CreateBatchRequest {
            name: "from a file".into(),
            input_file_id: Some("file-123".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(file_batch.input_file_id.as_deref(), Some("file-123"));
    let err = add(&mut app, &file_batch.batch_id, vec![chat(None, "inline")])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("file-based"), "{}", err.message());
}

#[tokio::test]
async fn each_chunk_of_a_large_add_gets_the_full_upstream_bound() {
    // Five chunks of 400 ms each: 2 s in all, twice the per-request bound of 1 s.
    let mut app = spawn_app_with(SimConfig::fast(), |s| {
        s.upstream_timeout_ms = Some(1_000);
        s.xai_add_chunk_requests = Some(1);
    })
    .await;
    let batch_id = new_batch(&mut app, "slow adds").await;
    app.sim.inject(batchgate::sim::FaultRule {
        route: REQUESTS_ROUTE.into(),
        times: 5,
        fault: batchgate::sim::Fault::Delay(Duration::from_millis(400)),
    });
    let mut request = tonic::Request::new(pb::AddBatchRequestsRequest {
        batch_id: batch_id.clone(),
        batch_requests: (0..5).map(|i| chat(None, &format!("p{i}"))).collect(),
    });
    request.set_timeout(Duration::from_secs(60));
    let added = app
        .batches
        .add_batch_requests(request)
        .await
        .expect("each chunk is within the bound")
        .into_inner();
    assert_eq!(added.upstream_calls, 5);
    assert_eq!(
        get_batch(&mut app, &batch_id)
            .await
            .state
            .unwrap()
            .num_requests,
        5
    );
}

#[tokio::test]
async fn an_upstream_page_too_large_for_one_message_is_split_across_pages() {
    let mut app = spawn_app().await;
    let batch_id = new_batch(&mut app, "large answers").await;
    // The simulator echoes each prompt: six results of about 1 MiB, one upstream page.
    let prompt = |i: usize| format!("{i}{}", "x".repeat(1024 * 1024));
    add(
        &mut app,
        &batch_id,
        (0..6)
            .map(|i| chat(Some(format!("big-{i}")), &prompt(i)))
            .collect(),
    )
    .await
    .unwrap();
    watch_to_end(&mut app, &batch_id).await;

    let mut ids = Vec::new();
    let mut pages = 0;
    let mut token = String::new();
    loop {
        let page = app
            .batches
            .list_batch_results(pb::ListBatchResultsRequest {
                batch_id: batch_id.clone(),
                page_size: 100,
                page_token: token.clone(),
            })
            .await
            .expect("every page fits in 4 MiB")
            .into_inner();
        pages += 1;
        ids.extend(page.results.iter().map(|r| r.batch_request_id.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert!(pages >= 2, "{pages} page(s)");
    let expected: Vec<_> = (0..6).map(|i| format!("big-{i}")).collect();
    assert_eq!(ids, expected, "each result once, in order");
    assert_eq!(app.sim.calls("GET /v1/batches/{batch_id}/results"), pages);
}

#[tokio::test]
async fn a_result_over_4_mib_is_named_in_a_clear_error() {
    let mut app = spawn_app().await;
    let batch_id = new_batch(&mut app, "one huge answer").await;
    let huge = "y".repeat(5 * 1024 * 1024);
    add(
        &mut app,
        &batch_id,
        vec![chat(Some("huge-1".into()), &huge)],
    )
    .await
    .unwrap();
    watch_to_end(&mut app, &batch_id).await;

    let mut batches = app.batches.clone();
    let id = batch_id.clone();
    let streamed = async move {
        let request = pb::StreamBatchResultsRequest {
            batch_id: id,
            upstream_page_size: 0,
        };
        batches
            .stream_batch_results(request)
            .await?
            .into_inner()
            .message()
            .await
    };
    let err = streamed.await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("huge-1"), "{}", err.message());

    let err = app
        .batches
        .list_batch_results(pb::ListBatchResultsRequest {
            batch_id,
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("huge-1"), "{}", err.message());
}

#[tokio::test]
async fn adds_and_cancels_answered_with_no_body_succeed() {
    let mut app = spawn_app().await;
    let batch_id = new_batch(&mut app, "quiet upstream").await;
    let replies = [
        batchgate::sim::EmptyReply::Empty,
        batchgate::sim::EmptyReply::Object,
        batchgate::sim::EmptyReply::NoContent,
    ];
    for (n, reply) in replies.into_iter().enumerate() {
        app.sim.inject(batchgate::sim::FaultRule {
            route: REQUESTS_ROUTE.into(),
            times: 1,
            fault: batchgate::sim::Fault::EmptyReply(reply),
        });
        let added = add(
            &mut app,
            &batch_id,
            vec![chat(Some(format!("quiet-{n}")), "hello")],
        )
        .await
        .unwrap_or_else(|e| panic!("{reply:?}: {e:?}"));
        assert_eq!(added.batch_request_ids, [format!("quiet-{n}")]);
    }
    // The requests really were added, once each.
    assert_eq!(
        get_batch(&mut app, &batch_id)
            .await
            .state
            .unwrap()
            .num_requests,
        3
    );
    assert_eq!(app.sim.calls(REQUESTS_ROUTE), 3);

    // A cancel answered with 204 still gives the caller the cancelled batch.
    app.sim.inject(batchgate::sim::FaultRule {
        route: "POST /v1/batches/{batch_id}:cancel".into(),
        times: 1,
        fault: batchgate::sim::Fault::EmptyReply(batchgate::sim::EmptyReply::NoContent),
    });
    let cancelled = app
        .batches
        .cancel_batch(pb::CancelBatchRequest {
            batch_id: batch_id.clone(),
        })
        .await
        .expect("a cancel with no body")
        .into_inner();
    assert_eq!(cancelled.batch_id, batch_id);
    assert!(cancelled.cancel_time.is_some());
}

#[tokio::test]
async fn a_result_repeated_pages_later_is_streamed_once() {
    let sim = SimConfig {
        xai: XaiSimConfig {
            repeat_first_result: true,
            ..XaiSimConfig::fast()
        },
        ..SimConfig::fast()
    };
    let mut app = spawn_app_with(sim, |_| {}).await;
    let batch_id = new_batch(&mut app, "shifting pages").await;
    add(
        &mut app,
        &batch_id,
        (0..50)
            .map(|i| chat(Some(format!("r{i:02}")), "p"))
            .collect(),
    )
    .await
    .unwrap();
    watch_to_end(&mut app, &batch_id).await;
    // Five pages of ten; pages two to five each repeat r00, up to four pages back.
    let results = all_results(&mut app, &batch_id, 10).await;
    let ids: Vec<_> = results
        .iter()
        .map(|r| r.batch_request_id.as_str())
        .collect();
    let unique: HashSet<_> = ids.iter().collect();
    assert_eq!((ids.len(), unique.len()), (50, 50), "{ids:?}");
    assert_eq!(ids.iter().filter(|id| **id == "r00").count(), 1);
    assert!(app.sim.calls("GET /v1/batches/{batch_id}/results") >= 5);
}

/// A gateway keeping xAI's creation budget at `per_second`, before a simulated xAI that
/// answers 429 past `upstream_per_second`.
async fn budgeted(per_second: f64, upstream_per_second: u32) -> common::TestApp {
    let sim = SimConfig {
        xai: XaiSimConfig {
            creates_per_second: upstream_per_second,
            ..XaiSimConfig::fast()
        },
        ..SimConfig::fast()
    };
    spawn_app_with(sim, |settings| {
        settings.xai_creates_per_second = Some(per_second);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_keep_to_the_upstream_budget_and_earn_no_429() {
    // The budget is three quarters of what the upstream allows: arrival jitter never
    // squeezes two slots into one of its windows.
    let app = budgeted(15.0, 20).await;
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..50)
        .map(|n| {
            let mut batches = app.batches.clone();
            tokio::spawn(async move {
                batches
                    .create_batch(pb::CreateBatchRequest {
                        name: format!("budgeted {n}"),
                        ..Default::default()
                    })
                    .await
            })
        })
        .collect();
    for call in calls {
        call.await.expect("joined").expect("every create succeeds");
    }
    assert_eq!(
        app.sim.calls("POST /v1/batches"),
        50,
        "no create was refused"
    );
    // One slot at once, then one every 1/15 s.
    assert!(
        started.elapsed() >= Duration::from_secs_f64(48.0 / 15.0),
        "{:?}: faster than the budget",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_429_pauses_every_budgeted_caller_for_its_retry_after() {
    let mut app = budgeted(50.0, 0).await;
    app.sim.inject(batchgate::sim::FaultRule {
        route: "POST /v1/batches".into(),
        times: 1,
        fault: batchgate::sim::Fault::Status {
            code: 429,
            retry_after_secs: Some(2),
            retry_after_form: batchgate::sim::RetryAfterForm::Seconds,
        },
    });
    let refused = app
        .batches
        .create_batch(pb::CreateBatchRequest {
            name: "refused".into(),
            ..Default::default()
        })
        .await
        .expect_err("the upstream's 429 reaches its caller: a create is never retried");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    let paused = std::time::Instant::now();
    let calls: Vec<_> = (0..5)
        .map(|n| {
            let mut batches = app.batches.clone();
            tokio::spawn(async move {
                batches
                    .create_batch(pb::CreateBatchRequest {
                        name: format!("after the 429 {n}"),
                        ..Default::default()
                    })
                    .await
            })
        })
        .collect();
    for call in calls {
        call.await
            .expect("joined")
            .expect("created once the pause is over");
    }
    // At 50/s they would all be done in a tenth of a second.
    assert!(
        paused.elapsed() >= Duration::from_millis(1_800),
        "{:?}: the callers did not wait out the Retry-After",
        paused.elapsed()
    );
    assert_eq!(app.sim.calls("POST /v1/batches"), 6);
}
