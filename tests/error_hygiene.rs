//! Error hygiene a probe found: malformed calls are the caller's fault, unknown enum
//! values are refused, upstream text never carries a credential, and 403s mean what they say.

mod common;

use batchgate::proto::sutro::v1 as jobs_pb;
use batchgate::proto::xai::v1 as pb;
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
