//! Error hygiene a probe found: malformed calls are the caller's fault, unknown enum
//! values are refused, upstream text never carries a credential, and 403s mean what they say.

mod common;

use batchgate::proto::sutro::v1 as jobs_pb;
use batchgate::proto::xai::v1 as pb;
use batchgate::sim::{Fault, FaultRule, RetryAfterForm, SimConfig, XAI_DEMO_API_KEY};
use bytes::{Buf, BufMut, Bytes};
use common::{bad_fields, connect, spawn_app, spawn_app_with, with_key};
use prost_types::{Struct, Value, value::Kind};
use tonic::Code;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic_types::StatusExt;

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

/// Sends hand-made message bytes as they are, so a test can say what a broken client says.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// One unary call of `method` carrying `message` byte for byte.
async fn raw_call(app: &common::TestApp, method: &'static str, message: &[u8]) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(connect(app.addr).await);
    grpc.ready().await.expect("the connection is ready");
    let path = http::uri::PathAndQuery::from_static(method);
    grpc.unary::<_, Bytes, _>(
        tonic::Request::new(Bytes::copy_from_slice(message)),
        path,
        RawCodec,
    )
    .await
    .expect_err("the gateway refuses the message")
}

fn reason(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn undecodable_protobuf_is_invalid_argument() {
    let app = spawn_app().await;
    // Field 1 as a 5-byte string of which one byte arrives.
    let err = raw_call(
        &app,
        "/batchgate.sutro.v1.JobService/GetJob",
        &[0x0a, 0x05, 0x01],
    )
    .await;
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(reason(&err), "MALFORMED_REQUEST");
    // A varint that never ends.
    let err = raw_call(
        &app,
        "/batchgate.sutro.v1.JobService/CheckAuth",
        &[0x08, 0xff, 0xff],
    )
    .await;
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(app.sim.calls("GET /v1/auth/check"), 0);
}

#[tokio::test]
async fn a_string_that_is_not_utf8_is_invalid_argument() {
    let app = spawn_app().await;
    // GetJobRequest.job_id = the bytes ff fe.
    let err = raw_call(
        &app,
        "/batchgate.sutro.v1.JobService/GetJob",
        &[0x0a, 0x02, 0xff, 0xfe],
    )
    .await;
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("UTF-8"), "{}", err.message());
}

/// A `Struct` holding a `Struct` `depth` times, past prost's recursion limit of 100.
fn nested(depth: usize) -> Struct {
    let mut inner = Struct::default();
    for _ in 0..depth {
        let mut outer = Struct::default();
        outer.fields.insert(
            "next".into(),
            Value {
                kind: Some(Kind::StructValue(inner)),
            },
        );
        inner = outer;
    }
    inner
}

#[tokio::test]
async fn over_deep_struct_nesting_is_invalid_argument() {
    let mut app = spawn_app().await;
    let mut body = nested(120);
    body.fields.insert(
        "model".into(),
        Value {
            kind: Some(Kind::StringValue("grok-4".into())),
        },
    );
    let err = app
        .batches
        .add_batch_requests(pb::AddBatchRequestsRequest {
            batch_id: "batch_1".into(),
            batch_requests: vec![pb::BatchRequest {
                batch_request_id: None,
                body: Some(pb::batch_request::Body::ChatGetCompletion(body)),
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("recursion"), "{}", err.message());
}

#[tokio::test]
async fn an_over_size_message_is_resource_exhausted_plain_or_gzipped() {
    let mut app = spawn_app_with(SimConfig::fast(), |s| s.max_request_bytes = Some(1024)).await;
    let big = || pb::CreateBatchRequest {
        name: "n".repeat(4096),
        ..Default::default()
    };
    let err = app.batches.create_batch(big()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(reason(&err), "REQUEST_TOO_LARGE");
    // Gzipped, the same message is a few dozen bytes on the wire: the limit is on
    // what it inflates to, and the code is the same.
    let mut gzipped = app
        .batches
        .clone()
        .send_compressed(CompressionEncoding::Gzip);
    let err = gzipped.create_batch(big()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(reason(&err), "REQUEST_TOO_LARGE");
    assert_eq!(app.sim.calls("POST /v1/batches"), 0);
}

fn echo_key(route: &str, status: Option<u16>) -> FaultRule {
    FaultRule {
        route: route.into(),
        times: 1,
        fault: Fault::EchoKey { status },
    }
}

/// Nothing of any of `keys` in the status: not its text, details or metadata.
fn assert_holds_no_key(status: &tonic::Status, keys: &[&str]) {
    let info = status
        .get_error_details()
        .error_info()
        .cloned()
        .expect("error info");
    assert!(
        !info.metadata.contains_key("upstream_request_id"),
        "{:?}",
        info.metadata
    );
    let details = String::from_utf8_lossy(status.details()).into_owned();
    let metadata = format!("{:?}", status.metadata());
    for key in keys {
        assert!(!status.message().contains(key), "{}", status.message());
        assert!(!details.contains(key), "{details}");
        assert!(!metadata.contains(key), "{metadata}");
    }
}

#[tokio::test]
async fn a_reflected_gateway_key_never_reaches_the_caller() {
    let mut app = spawn_app().await;
    // A well-formed upstream id is relayed ...
    let listed = app
        .batches
        .list_batches(pb::ListBatchesRequest::default())
        .await
        .expect("batches are listed");
    let id = listed
        .metadata()
        .get("x-upstream-request-id")
        .expect("the upstream's request id");
    assert!(id.to_str().unwrap().starts_with("req_"), "{id:?}");

    // ... one that reflects the key is not, on success ...
    app.sim.inject(echo_key("GET /v1/batches", None));
    let listed = app
        .batches
        .list_batches(pb::ListBatchesRequest::default())
        .await
        .expect("batches are listed");
    assert!(listed.metadata().get("x-upstream-request-id").is_none());
    assert!(!format!("{:?}", listed.metadata()).contains(XAI_DEMO_API_KEY));

    // ... nor on failure, where the error's text quoting the key is scrubbed too.
    app.sim.inject(echo_key("GET /v1/batches", Some(400)));
    let err = app
        .batches
        .list_batches(pb::ListBatchesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("may not do this"),
        "{}",
        err.message()
    );
    assert_holds_no_key(&err, &[XAI_DEMO_API_KEY]);
}

#[tokio::test]
async fn a_reflected_caller_key_never_reaches_the_caller() {
    let mut app = spawn_app().await;
    let caller_key = "xai-caller-own-key-0123456789";
    app.sim.inject(echo_key("GET /v1/batches", Some(403)));
    let err = app
        .batches
        .list_batches(with_key(pb::ListBatchesRequest::default(), caller_key))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_holds_no_key(&err, &[caller_key, XAI_DEMO_API_KEY]);
}
