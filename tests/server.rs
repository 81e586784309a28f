//! The server around the services: who may call, TLS and mutual TLS (and the CLI over them), health, reflection
//! (v1 and v1alpha), CORS for gRPC-Web pages, the embedded defaults of `batchgate serve`, and graceful shutdown.

#[path = "server/callers.rs"]
mod callers;
mod common;
#[path = "server/cors.rs"]
mod cors;
#[path = "server/dashboard.rs"]
mod dashboard;
#[path = "server/logs.rs"]
mod logs;
#[path = "server/metrics.rs"]
mod metrics;
#[path = "server/tls.rs"]
mod tls;
#[path = "server/tls_cli.rs"]
mod tls_cli;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use batchgate::proto::sutro::v1::{self as pb, job_service_client::JobServiceClient};
use batchgate::proto::xai::v1::{
    ListBatchesRequest as BatchListRequest, batch_service_client::BatchServiceClient,
};
use common::{connect, spawn_app, with_key};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const SERVICE: &str = "batchgate.sutro.v1.JobService";
const XAI_SERVICE: &str = "batchgate.xai.v1.BatchService";

#[tokio::test]
async fn health_reports_each_service_serving() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(connect(app.addr).await);
    for service in ["", SERVICE, XAI_SERVICE] {
        let reply = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.status(), ServingStatus::Serving, "{service:?}");
    }
    let err = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn reflection_lists_both_services_in_v1_and_v1alpha() {
    let app = spawn_app().await;
    let channel = connect(app.addr).await;

    use tonic_reflection::pb::v1;
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        reply.message_response
    else {
        panic!("not a service list: {reply:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&SERVICE.to_string()), "{names:?}");
    assert!(names.contains(&XAI_SERVICE.to_string()), "{names:?}");
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );

    use tonic_reflection::pb::v1alpha;
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                SERVICE.into(),
            ),
        ),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    assert!(
        matches!(reply.message_response, Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()),
        "{reply:?}"
    );
}

/// `batchgate serve` as a child process on port 0, its address read from its log, which
/// is kept for the test to read.
struct Served {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(extra: &[&str]) -> Served {
    serve_logging(extra, "info")
}

fn serve_logging(extra: &[&str], rust_log: &str) -> Served {
    let mut command = Command::new(env!("CARGO_BIN_EXE_batchgate"));
    command
        .args(common::serve_args("json"))
        .args(extra)
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (name, _) in std::env::vars() {
        if name.starts_with("BATCHGATE_") {
            command.env_remove(name);
        }
    }
    let mut child = command.spawn().expect("batchgate binary runs");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let log = Arc::new(Mutex::new(Vec::new()));
    let addr = loop {
        let line = lines
            .next()
            .expect("the server logs its address")
            .expect("utf-8 log");
        log.lock().unwrap().push(line.clone());
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if json["message"] == "batchgate is serving" {
            break json["addr"]
                .as_str()
                .expect("addr field")
                .parse()
                .expect("socket address");
        }
    };
    // Keep draining the log so the child never blocks on a full pipe.
    let kept = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            kept.lock().unwrap().push(line);
        }
    });
    Served { child, addr, log }
}

#[tokio::test]
async fn keys_never_reach_the_log_or_the_caller() {
    const MANAGED: &str = "sk_managed_secret_789";
    const CALLER_SUTRO: &str = "sk_caller_secret_123";
    const CALLER_XAI: &str = "xai-caller-secret-456";
    let served = serve_logging(&["--sutro-api-key", MANAGED], "debug");
    let channel = connect(served.addr).await;
    let mut jobs = JobServiceClient::new(channel.clone());
    let mut batches = BatchServiceClient::new(channel);

    let mut errors = Vec::new();
    // The configured key, which the simulator does not know.
    errors.push(jobs.get_quotas(pb::GetQuotasRequest {}).await.unwrap_err());
    let create = pb::CreateJobRequest {
        model: "gpt-oss-20b".into(),
        inputs: Some(pb::create_job_request::Inputs::Prompts(pb::StringInputs {
            values: vec!["hi".into()],
        })),
        request_id: "secret-test".into(),
        ..Default::default()
    };
    errors.push(
        jobs.create_job(with_key(create, CALLER_SUTRO))
            .await
            .unwrap_err(),
    );
    errors.push(
        jobs.watch_job(with_key(
            pb::WatchJobRequest {
                job_id: "job-1".into(),
            },
            CALLER_SUTRO,
        ))
        .await
        .unwrap_err(),
    );
    let list = BatchListRequest::default();
    errors.push(
        batches
            .list_batches(with_key(list, CALLER_XAI))
            .await
            .unwrap_err(),
    );
    for err in &errors {
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = served.log.lock().unwrap().join("\n");
    assert!(log.contains("DEBUG"), "the test reads a debug log:\n{log}");
    for secret in [MANAGED, CALLER_SUTRO, CALLER_XAI] {
        assert!(!log.contains(secret), "{secret} is in the log:\n{log}");
        for err in &errors {
            let details = String::from_utf8_lossy(err.details());
            assert!(
                !err.message().contains(secret) && !details.contains(secret),
                "{err:?}"
            );
            assert!(!format!("{:?}", err.metadata()).contains(secret), "{err:?}");
        }
    }
}

#[tokio::test]
async fn serve_runs_on_embedded_defaults_with_no_keys() {
    let served = serve(&[]);
    let mut jobs = JobServiceClient::new(connect(served.addr).await);
    let created = jobs
        .create_job(pb::CreateJobRequest {
            model: "gpt-oss-20b".into(),
            inputs: Some(pb::create_job_request::Inputs::Prompts(pb::StringInputs {
                values: vec!["hello".into()],
            })),
            ..Default::default()
        })
        .await
        .expect("no key needed")
        .into_inner();
    let status = jobs
        .get_job_status(pb::GetJobStatusRequest {
            job_id: created.job_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(status.status(), pb::JobStatus::Unspecified);
}

#[tokio::test]
async fn sigterm_ends_an_open_watch_with_a_status_not_a_reset() {
    let mut served = serve(&["--watch-heartbeat-ms", "200"]);
    let mut jobs = JobServiceClient::new(connect(served.addr).await);
    let values = (0..5_000).map(|i| format!("row {i}")).collect();
    let job_id = jobs
        .create_job(pb::CreateJobRequest {
            model: "gpt-oss-20b".into(),
            inputs: Some(pb::create_job_request::Inputs::Prompts(pb::StringInputs {
                values,
            })),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let mut stream = jobs
        .watch_job(pb::WatchJobRequest { job_id })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.kind(), pb::WatchEventKind::Snapshot);

    let pid = served.child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());

    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the stream ends promptly")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the watch ended with OK although the job is not done"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(
        ended.message().contains("shutting down"),
        "{}",
        ended.message()
    );

    let exited = tokio::task::spawn_blocking(move || {
        for _ in 0..100 {
            if let Some(status) = served.child.try_wait().expect("wait works") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    })
    .await
    .unwrap();
    assert!(
        exited.is_some_and(|s| s.success()),
        "the gateway exits cleanly: {exited:?}"
    );
}

#[tokio::test]
async fn shutdown_turns_health_not_serving_for_watchers_first() {
    let mut app = spawn_app().await;
    let mut health = HealthClient::new(connect(app.addr).await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: XAI_SERVICE.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );

    let shutdown = tokio::spawn(app.app.take().expect("the gateway").shutdown());
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("health changes before the server stops")
        .expect("a status, not an error")
        .expect("a message");
    assert_eq!(next.status(), ServingStatus::NotServing);
    shutdown.await.unwrap().expect("a clean shutdown");
}

/// A grpc-web call over HTTP/1.1, as a browser client sends it: one length-prefixed
/// message in, a message frame and a trailers frame out.
#[tokio::test]
async fn grpc_web_clients_are_served_over_http1() {
    use prost::Message;
    batchgate::upstream::http::install_crypto_provider();
    let app = spawn_app().await;
    let mut body = vec![0u8];
    body.extend_from_slice(&0u32.to_be_bytes()); // GetQuotasRequest is empty
    let response = reqwest::Client::builder()
        .http1_only()
        .build()
        .unwrap()
        .post(format!(
            "http://{}/batchgate.sutro.v1.JobService/GetQuotas",
            app.addr
        ))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(body)
        .send()
        .await
        .expect("the gateway answers HTTP/1.1");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/grpc-web+proto"
    );
    let bytes = response.bytes().await.unwrap();
    assert_eq!(bytes[0], 0, "a message frame first");
    let length = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    let quotas = pb::GetQuotasResponse::decode(&bytes[5..5 + length]).expect("a GetQuotasResponse");
    assert_eq!(quotas.quotas.len(), 2);
    let trailers = &bytes[5 + length..];
    assert_eq!(trailers[0], 0x80, "then a trailers frame");
    assert!(String::from_utf8_lossy(&trailers[5..]).contains("grpc-status:0"));
}
