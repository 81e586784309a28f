//! Error hygiene a probe found: malformed calls are the caller's fault, unknown enum
//! values are refused, upstream text never carries a credential, and 403s mean what they say.

mod common;

use batchgate::proto::sutro::v1 as jobs_pb;
use batchgate::proto::xai::v1 as pb;
use batchgate::sim::{Fault, FaultRule, RetryAfterForm};
use common::{bad_fields, spawn_app};
use tonic::Code;

#[tokio::test]
async fn an_unknown_auth_scope_is_invalid_argument_naming_the_field() {
    let mut app = spawn_app().await;
    let err = app
        .jobs
        .check_auth(jobs_pb::CheckAuthRequest { scope: 99 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(bad_fields(&err), ["scope"]);
    assert_eq!(app.sim.calls("GET /v1/auth/check"), 0);
    assert_eq!(app.sim.calls("GET /v1/try-authentication"), 0);
}

#[tokio::test]
async fn an_unknown_state_filter_is_invalid_argument_naming_the_field() {
    let mut app = spawn_app().await;
    let err = app
        .batches
        .list_batch_request_metadata(pb::ListBatchRequestMetadataRequest {
            batch_id: "batch_1".into(),
            states: vec![pb::batch_request_metadata::State::Succeeded.into(), 42],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(bad_fields(&err), ["states[1]"]);
    assert_eq!(app.sim.calls("GET /v1/batches/{batch_id}/requests"), 0);
}

fn chat(prompt: &str) -> pb::BatchRequest {
    let body = batchgate::convert::json_to_struct(serde_json::json!({
        "model": "grok-4",
        "messages": [{"role": "user", "content": prompt}],
    }));
    pb::BatchRequest {
        batch_request_id: None,
        body: body.map(pb::batch_request::Body::ChatGetCompletion),
    }
}

async fn new_batch(app: &mut common::TestApp) -> String {
    app.batches
        .create_batch(pb::CreateBatchRequest {
            name: "hygiene".into(),
            ..Default::default()
        })
        .await
        .expect("the batch is created")
        .into_inner()
        .batch_id
}

async fn add_one(app: &mut common::TestApp, batch_id: &str) -> Result<(), tonic::Status> {
    app.batches
        .add_batch_requests(pb::AddBatchRequestsRequest {
            batch_id: batch_id.into(),
            batch_requests: vec![chat("hello")],
        })
        .await
        .map(|_| ())
}

#[tokio::test]
async fn a_403_on_an_add_to_a_cancelled_batch_is_failed_precondition() {
    let mut app = spawn_app().await;
    let batch_id = new_batch(&mut app).await;
    app.batches
        .cancel_batch(pb::CancelBatchRequest {
            batch_id: batch_id.clone(),
        })
        .await
        .expect("the batch is cancelled");
    let err = add_one(&mut app, &batch_id).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
}

#[tokio::test]
async fn any_other_403_on_an_add_stays_permission_denied() {
    let mut app = spawn_app().await;
    let batch_id = new_batch(&mut app).await;
    app.sim.inject(FaultRule {
        route: "POST /v1/batches/{batch_id}/requests".into(),
        times: 1,
        fault: Fault::Status {
            code: 403,
            retry_after_secs: None,
            retry_after_form: RetryAfterForm::Seconds,
        },
    });
    let reads = app.sim.calls("GET /v1/batches/{batch_id}");
    let err = add_one(&mut app, &batch_id).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // The batch was read to learn that it is not cancelled, and still takes requests.
    assert_eq!(app.sim.calls("GET /v1/batches/{batch_id}"), reads + 1);
    add_one(&mut app, &batch_id)
        .await
        .expect("an uncancelled batch takes requests");
}
