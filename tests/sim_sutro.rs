//! The Sutro half of the simulator, driven over plain HTTP: the documented shapes, the
//! job lifecycle, the NDJSON progress stream, errors, and the fault knobs tests rely on.

use std::net::SocketAddr;
use std::time::Duration;

use batchgate::sim::{self, Fault, FaultRule, JobOutcome, RetryAfterForm, SimConfig, SimHandle};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Sim {
    handle: SimHandle,
    http: reqwest::Client,
    base: String,
}

impl Sim {
    async fn start(config: SimConfig) -> Self {
        batchgate::upstream::http::install_crypto_provider();
        let handle = sim::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("simulator starts");
        let base = handle.sutro_base_url();
        Self {
            handle,
            http: reqwest::Client::new(),
            base,
        }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}/{path}", self.base))
            .header("authorization", format!("Key {}", sim::DEMO_API_KEY))
    }

    fn post(&self, path: &str, body: Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/{path}", self.base))
            .header("authorization", format!("Key {}", sim::DEMO_API_KEY))
            .json(&body)
    }

    async fn json(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.expect("the simulator answers");
        let status = response.status();
        (status, response.json().await.expect("a JSON body"))
    }

    /// Creates a job the way the SDK does: every key, unset ones as null.
    async fn create(&self, prompts: &[&str]) -> String {
        let body = json!({
            "model": "gpt-oss-20b", "inputs": prompts, "job_priority": 0, "json_schema": null,
            "system_prompt": null, "cost_estimate": false, "sampling_params": null,
            "random_seed_per_input": false, "truncate_rows": true, "name": "sim test", "description": null
        });
        let (status, reply) = self.json(self.post("batch-inference", body)).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        let job_id = reply["results"]
            .as_str()
            .expect("the job id in `results`")
            .to_owned();
        assert_eq!(reply["metadata"]["job_id"], job_id.as_str());
        job_id
    }

    async fn status(&self, job_id: &str) -> String {
        let (_, reply) = self.json(self.get(&format!("job-status/{job_id}"))).await;
        reply["job_status"][job_id]
            .as_str()
            .expect("a status map keyed by the job id")
            .to_owned()
    }

    async fn wait_for(&self, job_id: &str, want: &str) {
        for _ in 0..500 {
            if self.status(job_id).await == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{job_id} never reached {want}");
    }
}

#[tokio::test]
async fn a_job_moves_through_every_status_and_reports_the_documented_shapes() {
    let sim = Sim::start(SimConfig {
        queue_ms: 150,
        start_ms: 150,
        rows_per_second: 20.0,
        ..SimConfig::fast()
    })
    .await;
    let job_id = sim.create(&["alpha", "beta"]).await;
    assert!(job_id.starts_with("job-"));
    let mut seen = vec![sim.status(&job_id).await];
    while seen.last().map(String::as_str) != Some("SUCCEEDED") {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let status = sim.status(&job_id).await;
        if seen.last() != Some(&status) {
            seen.push(status);
        }
    }
    assert_eq!(seen, ["QUEUED", "STARTING", "RUNNING", "SUCCEEDED"]);

    let (_, reply) = sim.json(sim.get(&format!("jobs/{job_id}"))).await;
    let job = &reply["job"];
    assert_eq!(
        (job["status"].as_str(), job["num_rows"].as_i64()),
        (Some("SUCCEEDED"), Some(2))
    );
    assert_eq!(job["name"], "sim test");
    assert!(
        job["input_tokens"].as_i64().unwrap() > 0 && job["output_tokens"].as_i64().unwrap() > 0
    );
    assert!(job["job_cost"].as_f64().unwrap() > 0.0);
    for field in ["datetime_created", "datetime_started", "datetime_completed"] {
        let text = job[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} is set"));
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap_or_else(|e| panic!("{field} {text}: {e}"));
    }

    let body =
        json!({"job_id": job_id, "include_inputs": true, "include_cumulative_logprobs": true});
    let (status, reply) = sim.json(sim.post("job-results", body)).await;
    assert_eq!(status, StatusCode::OK);
    let results = &reply["results"];
    assert_eq!(results["inputs"], json!(["alpha", "beta"]));
    assert!(
        results["outputs"][1]
            .as_str()
            .unwrap()
            .ends_with("to: beta")
    );
    assert_eq!(
        results["cumulative_logprobs"].as_array().map(Vec::len),
        Some(2)
    );
    // The attached SDK path sends only the job id: the options default to off.
    let (_, reply) = sim
        .json(sim.post("job-results", json!({"job_id": job_id})))
        .await;
    assert!(
        reply["results"].get("inputs").is_none()
            && reply["results"].get("cumulative_logprobs").is_none()
    );
}

#[tokio::test]
async fn the_progress_stream_reports_rows_and_tokens_and_ends_when_the_job_is_final() {
    let sim = Sim::start(SimConfig {
        rows_per_second: 100.0,
        heartbeat_ms: 50,
        ..SimConfig::fast()
    })
    .await;
    let prompts: Vec<String> = (0..30).map(|i| format!("p{i}")).collect();
    let job_id = sim
        .create(&prompts.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let text = sim
        .get(&format!("stream-job-progress/{job_id}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rows: Vec<i64> = lines
        .iter()
        .filter(|l| l["update_type"] == "progress")
        .map(|l| l["result"].as_i64().unwrap())
        .collect();
    assert!(rows.len() >= 2, "{rows:?}");
    assert!(
        rows.windows(2).all(|w| w[0] < w[1]),
        "rows only grow: {rows:?}"
    );
    assert_eq!(rows.last(), Some(&30));
    let tokens = lines
        .iter()
        .rfind(|l| l["update_type"] == "tokens")
        .expect("token lines");
    assert!(tokens["result"]["input_tokens"].as_i64().unwrap() > 0);
    assert!(tokens["result"]["output_tokens"].as_i64().unwrap() > 0);
    // The stream closed: the job is final by now.
    assert_eq!(sim.status(&job_id).await, "SUCCEEDED");

    // A queued job's stream has only heartbeats.
    let sim = Sim::start(SimConfig {
        queue_ms: 60_000,
        heartbeat_ms: 30,
        ..SimConfig::fast()
    })
    .await;
    let job_id = sim.create(&["waiting"]).await;
    let mut stream = sim
        .get(&format!("stream-job-progress/{job_id}"))
        .send()
        .await
        .unwrap()
        .bytes_stream();
    let mut received = Vec::new();
    while received.iter().filter(|&&b| b == b'\n').count() < 3 {
        received.extend_from_slice(&stream.next().await.unwrap().unwrap());
    }
    let first: Value =
        serde_json::from_slice(received.split(|&b| b == b'\n').next().unwrap()).unwrap();
    assert_eq!(first, json!({"update_type": "heartbeat"}));
}

#[tokio::test]
async fn a_failed_job_reports_every_row_then_fails_with_a_reason() {
    let sim = Sim::start(SimConfig {
        rows_per_second: 500.0,
        finalize_ms: 100,
        ..SimConfig::fast()
    })
    .await;
    let job_id = sim.create(&["a", "b", "c"]).await;
    sim.handle.set_job_outcome(
        &job_id,
        JobOutcome::Fail {
            message: "worker crashed".into(),
        },
    );
    let text = sim
        .get(&format!("stream-job-progress/{job_id}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"{"result":3,"update_type":"progress"}"#),
        "{text}"
    );
    sim.wait_for(&job_id, "FAILED").await;
    let (_, reply) = sim.json(sim.get(&format!("job-status/{job_id}"))).await;
    assert_eq!(
        reply["metadata"]["failure_reason"]["message"],
        "worker crashed"
    );
    let (status, _) = sim
        .json(sim.post("job-results", json!({"job_id": job_id})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "a failed job has no results");
}

#[tokio::test]
async fn cancel_passes_through_cancelling_and_keeps_finished_jobs_as_they_are() {
    let sim = Sim::start(SimConfig {
        queue_ms: 60_000,
        cancel_ms: 100,
        ..SimConfig::fast()
    })
    .await;
    let job_id = sim.create(&["x"]).await;
    let (status, reply) = sim.json(sim.get(&format!("job-cancel/{job_id}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["cancelled"], true);
    assert!(reply["message"].as_str().unwrap().contains(&job_id));
    assert_eq!(sim.status(&job_id).await, "CANCELLING");
    sim.wait_for(&job_id, "CANCELLED").await;

    let sim = Sim::start(SimConfig::fast()).await;
    let job_id = sim.create(&["done"]).await;
    sim.wait_for(&job_id, "SUCCEEDED").await;
    let (status, _) = sim.json(sim.get(&format!("job-cancel/{job_id}"))).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a terminal job's cancel is accepted"
    );
    assert_eq!(sim.status(&job_id).await, "SUCCEEDED");
    let (status, reply) = sim.json(sim.get("job-cancel/job-missing")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(reply["detail"].as_str().unwrap().contains("job-missing"));
}

#[tokio::test]
async fn list_jobs_pages_newest_first_and_refuses_bad_limits() {
    let sim = Sim::start(SimConfig::fast()).await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(sim.create(&[&format!("p{i}")]).await);
    }
    created.reverse();
    let (_, all) = sim.json(sim.get("list-jobs")).await;
    let ids = |reply: &Value| -> Vec<String> {
        reply["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&all), created);
    assert!(all["message"].is_string());

    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("list-jobs?limit=2&cursor={c}"),
            None => "list-jobs?limit=2".into(),
        };
        let (_, page) = sim.json(sim.get(&path)).await;
        paged.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, created);

    let (status, reply) = sim.json(sim.get("list-jobs?limit=101")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply["detail"][0]["loc"], json!(["query", "limit"]));
    let (status, _) = sim.json(sim.get("list-jobs?limit=2&cursor=garbage")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn results_url_checks_format_expiry_and_status() {
    let sim = Sim::start(SimConfig {
        queue_ms: 200,
        ..SimConfig::fast()
    })
    .await;
    let job_id = sim.create(&["x"]).await;
    let (status, _) = sim
        .json(sim.get(&format!("jobs/{job_id}/results-url")))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "not succeeded yet");
    sim.wait_for(&job_id, "SUCCEEDED").await;
    let (status, _) = sim
        .json(sim.get(&format!("jobs/{job_id}/results-url?format=csv")))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = sim
        .json(sim.get(&format!("jobs/{job_id}/results-url?expires_in_seconds=0")))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, reply) = sim
        .json(sim.get(&format!(
            "jobs/{job_id}/results-url?include_inputs=true&expires_in_seconds=60"
        )))
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(
        (reply["format"].as_str(), reply["include_inputs"].as_bool()),
        (Some("parquet"), Some(true))
    );
    assert_eq!(reply["expires_in_seconds"], 60);
    assert!(
        reply["artifact"]["filename"]
            .as_str()
            .unwrap()
            .ends_with("~inputs=1~logprobs=0.parquet")
    );
    assert!(reply["urls"]["get"].as_str().unwrap().starts_with("http"));
}

#[tokio::test]
async fn keys_are_checked_and_the_retired_api_answers_410() {
    let sim = Sim::start(SimConfig::fast()).await;
    let url = format!("{}/get-quotas", sim.base);
    let (status, reply) = sim.json(sim.http.get(&url)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(reply["detail"].is_string());
    let (status, _) = sim
        .json(sim.http.get(&url).header("authorization", "Key sk_wrong"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, reply) = sim.json(sim.get("get-quotas")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        reply["quotas"][0],
        json!({"priority": 0, "row_quota": 1000, "token_quota": 1_000_000})
    );
    let (_, reply) = sim.json(sim.get("auth/check")).await;
    assert_eq!(reply["authenticated"], true);
    assert!(reply["principal"].is_object());

    let origin = sim.base.trim_end_matches("/v1");
    let (status, reply) = sim
        .json(
            sim.http
                .post(format!("{origin}/batch-inference"))
                .json(&json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::GONE);
    assert!(
        reply["detail"]
            .as_str()
            .unwrap()
            .starts_with("Direct Sutro Batch API access is no longer supported")
    );
}

#[tokio::test]
async fn faults_come_from_rules_and_headers_and_dropped_callers_are_counted() {
    let sim = Sim::start(SimConfig::fast()).await;
    sim.handle.inject(FaultRule {
        route: "GET /v1/get-quotas".into(),
        times: 2,
        fault: Fault::Status {
            code: 503,
            retry_after_secs: Some(3),
            retry_after_form: RetryAfterForm::Seconds,
        },
    });
    for _ in 0..2 {
        let response = sim.get("get-quotas").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "3");
    }
    assert_eq!(
        sim.get("get-quotas").send().await.unwrap().status(),
        StatusCode::OK,
        "the rule ran out"
    );
    assert_eq!(sim.handle.calls("GET /v1/get-quotas"), 3);

    let response = sim
        .get("get-quotas")
        .header("x-sim-fault", "status=524")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 524);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "Cloudflare's page"
    );

    let job_id = sim.create(&["a", "b", "c", "d"]).await;
    let body = sim
        .get(&format!("stream-job-progress/{job_id}"))
        .header("x-sim-fault", "drop-after=1")
        .send()
        .await
        .unwrap();
    let broken = body.text().await;
    assert!(
        broken.is_err(),
        "the stream breaks after its first line: {broken:?}"
    );

    let slow = sim
        .get(&format!("jobs/{job_id}"))
        .header("x-sim-fault", "delay-ms=2000")
        .timeout(Duration::from_millis(100));
    assert!(slow.send().await.is_err());
    for _ in 0..100 {
        if sim.handle.dropped("GET /v1/jobs/{job_id}") == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the abandoned request was not counted as dropped");
}

#[tokio::test]
async fn the_peak_of_requests_in_flight_is_counted_per_upstream() {
    let sim = Sim::start(SimConfig::fast()).await;
    assert_eq!(sim.handle.peak_in_flight("sutro"), 0);
    // Slow answers, so that all six are being answered at once.
    let slow = (0..6).map(|_| {
        sim.get("get-quotas")
            .header("x-sim-fault", "delay-ms=500")
            .send()
    });
    for response in futures_util::future::join_all(slow).await {
        assert_eq!(response.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(sim.handle.peak_in_flight("sutro"), 6);
    // One at a time afterwards leaves the peak where it was.
    for _ in 0..3 {
        sim.get("get-quotas").send().await.unwrap();
    }
    assert_eq!(sim.handle.peak_in_flight("sutro"), 6);
    assert_eq!(sim.handle.peak_in_flight("xai"), 0, "counted per upstream");
}

#[tokio::test]
async fn uncommon_but_legal_answers_come_from_knobs_and_headers() {
    // Jobs stay QUEUED, so a cancel always has something to do.
    let sim = Sim::start(SimConfig {
        queue_ms: 60_000,
        cancel_ms: 60_000,
        ..SimConfig::fast()
    })
    .await;

    // Retry-After as an RFC 850 date, and as asctime, that still reads back as a wait.
    for (form, sample) in [("rfc850", '-'), ("asctime", ' ')] {
        let response = sim
            .get("get-quotas")
            .header(
                "x-sim-fault",
                format!("status=429;retry-after=60;retry-after-form={form}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let value = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            value.contains(sample) && value.len() > 20,
            "{form}: {value}"
        );
        let at = httpdate::parse_http_date(&value).expect("an HTTP date");
        assert!(at > std::time::SystemTime::now(), "{form}: {value}");
    }

    // The work is done, the answer has no body: 204, an empty 200, or `{}`.
    for (reply, status, body) in [
        ("no-content", StatusCode::NO_CONTENT, ""),
        ("empty", StatusCode::OK, ""),
        ("object", StatusCode::OK, "{}"),
    ] {
        let job_id = sim.create(&["x"]).await;
        let response = sim
            .get(&format!("job-cancel/{job_id}"))
            .header("x-sim-fault", format!("reply={reply}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{reply}");
        assert_eq!(response.text().await.unwrap(), body, "{reply}");
        assert_eq!(
            sim.status(&job_id).await,
            "CANCELLING",
            "{reply}: cancelled"
        );
    }
    // An error passes unchanged.
    let response = sim
        .get("job-cancel/job-missing")
        .header("x-sim-fault", "reply=no-content")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // One more per-row column beside the documented ones.
    let sim = Sim::start(SimConfig {
        extra_result_columns: vec!["reasoning_tokens".into()],
        ..SimConfig::fast()
    })
    .await;
    let job_id = sim.create(&["a", "b"]).await;
    sim.wait_for(&job_id, "SUCCEEDED").await;
    let (status, reply) = sim
        .json(sim.post("job-results", json!({ "job_id": job_id })))
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["results"]["reasoning_tokens"], json!([1000, 1017]));
    assert_eq!(reply["results"]["outputs"].as_array().unwrap().len(), 2);
}
