//! Reflection serves google/rpc/error_details.proto and status.proto (vendored in
//! proto/google/rpc/), so generic clients (buf curl, grpcurl, Postman) decode the error
//! details the gateway sends in `grpc-status-details-bin`.

use prost::Message;
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::common::{connect, spawn_app};

/// The files reflection answers for `symbol` (the file defining it and its imports).
async fn files_for(
    client: &mut ServerReflectionClient<tonic::transport::Channel>,
    symbol: &str,
) -> Vec<prost_types::FileDescriptorProto> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(symbol.into())),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("reflection answers")
        .into_inner();
    let reply = replies.message().await.unwrap().expect("one reply");
    match reply.message_response {
        Some(MessageResponse::FileDescriptorResponse(files)) => files
            .file_descriptor_proto
            .iter()
            .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap())
            .collect(),
        other => panic!("no file for {symbol}: {other:?}"),
    }
}

#[tokio::test]
async fn reflection_serves_the_error_detail_messages() {
    let app = spawn_app().await;
    let mut client = ServerReflectionClient::new(connect(app.addr).await);

    for symbol in [
        "google.rpc.ErrorInfo",
        "google.rpc.BadRequest",
        "google.rpc.RetryInfo",
        "google.rpc.QuotaFailure",
    ] {
        let files = files_for(&mut client, symbol).await;
        let file = files
            .iter()
            .find(|f| f.name() == "google/rpc/error_details.proto")
            .unwrap_or_else(|| {
                panic!(
                    "{symbol}: not in google/rpc/error_details.proto: {:?}",
                    files.iter().map(|f| f.name()).collect::<Vec<_>>()
                )
            });
        assert_eq!(file.package(), "google.rpc");
        let name = symbol.trim_start_matches("google.rpc.");
        assert!(
            file.message_type.iter().any(|m| m.name() == name),
            "{symbol} is not a message of {}",
            file.name()
        );
        assert!(
            file.dependency
                .iter()
                .any(|d| d == "google/protobuf/duration.proto"),
            "{symbol}: {:?}",
            file.dependency
        );
    }

    // Its imports are served too, so a client can decode RetryInfo.retry_delay and
    // Status.details.
    for import in [
        "google/protobuf/duration.proto",
        "google/protobuf/any.proto",
    ] {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileByFilename(import.into())),
        };
        let mut replies = client
            .server_reflection_info(tokio_stream::once(request))
            .await
            .unwrap()
            .into_inner();
        let reply = replies.message().await.unwrap().unwrap();
        assert!(
            matches!(reply.message_response, Some(MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()),
            "{import}: {reply:?}"
        );
    }

    let files = files_for(&mut client, "google.rpc.Status").await;
    let status = files
        .iter()
        .find(|f| f.name() == "google/rpc/status.proto")
        .expect("google/rpc/status.proto is served");
    assert!(status.message_type.iter().any(|m| m.name() == "Status"));
}

/// The details the gateway actually sends are those messages: a refused create's
/// BadRequest decodes with the served descriptor's type name.
#[tokio::test]
async fn a_refusal_carries_details_of_the_served_types() {
    use batchgate::proto::sutro::v1 as pb;
    let mut app = spawn_app().await;
    let status = app
        .jobs
        .create_job(pb::CreateJobRequest::default())
        .await
        .expect_err("an empty create is refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let details = tonic_types::pb::Status::decode(status.details()).expect("google.rpc.Status");
    let urls: Vec<_> = details
        .details
        .iter()
        .map(|a| a.type_url.as_str())
        .collect();
    assert!(
        urls.contains(&"type.googleapis.com/google.rpc.BadRequest"),
        "{urls:?}"
    );
}
