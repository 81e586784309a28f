//! Logs operators can use: trace ids on JSON lines, one access line per call, a
//! warning per upstream 5xx, no colours in a pipe, and never a key.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use batchgate::proto::sutro::v1::{self as pb, job_service_client::JobServiceClient};
use batchgate::sim::DEMO_API_KEY;
use serde_json::Value;
use tonic::Code;

use crate::common::{connect, with_key};
use crate::{Served, serve_logging};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const LIST_JOBS: &str = "batchgate.sutro.v1.JobService/ListJobs";

/// The JSON lines logged so far, after a moment for the last ones to arrive.
async fn lines(served: &Served) -> Vec<Value> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = served.log.lock().unwrap();
    for line in log.iter() {
        assert!(!line.contains(DEMO_API_KEY), "a key in the log: {line}");
    }
    log.iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn access_lines(lines: &[Value]) -> Vec<&Value> {
    lines
        .iter()
        .filter(|l| l["message"] == "call finished")
        .collect()
}

async fn list_jobs(served: &Served, traceparent: Option<&str>) -> Result<(), tonic::Status> {
    let mut jobs = JobServiceClient::new(connect(served.addr).await);
    let mut request = tonic::Request::new(pb::ListJobsRequest::default());
    if let Some(value) = traceparent {
        request
            .metadata_mut()
            .insert("traceparent", value.parse().expect("ascii"));
    }
    jobs.list_jobs(request).await.map(|_| ())
}

#[tokio::test]
async fn json_lines_carry_the_callers_trace_id_and_each_call_has_an_access_line() {
    let served = serve_logging(&[], "info,batchgate=debug");
    let traceparent = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
    list_jobs(&served, Some(&traceparent))
        .await
        .expect("list jobs");
    let lines = lines(&served).await;

    let traced: Vec<_> = lines.iter().filter(|l| l["trace_id"] == TRACE_ID).collect();
    assert!(!traced.is_empty(), "no line has the trace id: {lines:#?}");
    for line in &traced {
        let span_id = line["span_id"].as_str().expect("a span id");
        assert_eq!(span_id.len(), 16, "{line}");
        assert_ne!(
            span_id, "00f067aa0ba902b7",
            "the gateway's own span: {line}"
        );
    }
    // A line outside any span has no ids.
    let serving = lines
        .iter()
        .find(|l| l["message"] == "batchgate is serving")
        .expect("the start line");
    assert!(serving.get("trace_id").is_none(), "{serving}");

    let access = access_lines(&lines);
    assert_eq!(access.len(), 1, "{access:#?}");
    let line = access[0];
    assert_eq!(line["trace_id"], TRACE_ID, "{line}");
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["method"], LIST_JOBS, "{line}");
    assert_eq!(line["code"], "Ok", "{line}");
    assert_eq!(line["grpc_status"], 0, "{line}");
    assert!(line["duration_ms"].as_f64().is_some(), "{line}");
    assert_eq!(line["tenant"], "anonymous", "{line}");
    assert_eq!(line["upstream_calls"], 1, "{line}");
}

#[tokio::test]
async fn an_access_line_carries_the_error_code_of_a_refused_call() {
    let served = serve_logging(&[], "info");
    let mut jobs = JobServiceClient::new(connect(served.addr).await);
    let err = jobs
        .get_job(pb::GetJobRequest {
            job_id: String::new(),
        })
        .await
        .unwrap_err();
    let lines = lines(&served).await;
    let access = access_lines(&lines);
    assert_eq!(access.len(), 1, "{access:#?}");
    assert_eq!(
        access[0]["grpc_status"],
        err.code() as i32,
        "{:?}",
        access[0]
    );
}

#[tokio::test]
async fn access_log_false_writes_no_access_line() {
    let served = serve_logging(&["--access-log", "false"], "info");
    list_jobs(&served, None).await.expect("list jobs");
    let lines = lines(&served).await;
    assert!(access_lines(&lines).is_empty(), "{lines:#?}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Kills the simulator process when the test ends.
struct Sim(std::process::Child);

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn an_upstream_500_gives_one_warning() {
    let port = free_port();
    let sim = Sim(Command::new(env!("CARGO_BIN_EXE_batchgate"))
        .args(["sim", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--fault-share", "1", "--fault-statuses", "500"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the simulator runs"));
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("http://127.0.0.1:{port}");
    let served = serve_logging(
        &["--sutro-base-url", &url, "--retry-max-attempts", "1"],
        "info",
    );
    let mut jobs = JobServiceClient::new(connect(served.addr).await);
    let err = jobs
        .list_jobs(with_key(pb::ListJobsRequest::default(), DEMO_API_KEY))
        .await
        .unwrap_err();
    assert_ne!(err.code(), Code::Ok);
    let lines = lines(&served).await;
    drop(sim);
    let warnings: Vec<_> = lines.iter().filter(|l| l["level"] == "WARN").collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    let warning = warnings[0];
    assert_eq!(warning["upstream"], "sutro", "{warning}");
    assert_eq!(warning["status"], 500, "{warning}");
    assert_eq!(warning["attempts"], 1, "{warning}");
    assert!(
        warning["method"].is_string() && warning["path"].is_string(),
        "{warning}"
    );
    let access = access_lines(&lines);
    assert_eq!(access.len(), 1, "{access:#?}");
    assert_eq!(
        access[0]["grpc_status"],
        err.code() as i32,
        "{:?}",
        access[0]
    );
}

#[test]
fn text_logs_in_a_pipe_have_no_colours() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_batchgate"))
        .args(crate::common::serve_args("text"))
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .env_remove("BATCHGATE_LOG_FORMAT")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("batchgate runs");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut seen = Vec::new();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let serving = line.contains("batchgate is serving");
        seen.push(line);
        if serving {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.iter().any(|l| l.contains("batchgate is serving")),
        "{seen:#?}"
    );
    for line in &seen {
        assert!(!line.contains('\u{1b}'), "an ANSI escape: {line:?}");
    }
}
