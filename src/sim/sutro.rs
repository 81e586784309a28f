//! The simulated Sutro deployment: every `/v1` endpoint the official SDK calls, with the
//! documented shapes, the NDJSON progress stream, and the retired host's 410 without `/v1`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::SimConfig;
use super::respond::{sutro_auth, sutro_error, sutro_validation_error};
use super::sutro_create::parse_create;
pub use super::sutro_jobs::JobOutcome;
use super::sutro_jobs::{Job, Status, Timing};

/// What Sutro's retired shared host answers (the SDK turns exactly this into a
/// configuration error).
pub const RETIRED_HOST_DETAIL: &str = "Direct Sutro Batch API access is no longer supported by the Sutro SDK. \
    Upgrade the sutro package, then set SUTRO_API_URL to your Sutro single-tenant deployment URL and use an \
    API key from that deployment's API Keys panel.";

/// The simulated deployment's jobs.
pub struct SutroSim {
    config: SimConfig,
    timing: Timing,
    addr: SocketAddr,
    stop: CancellationToken,
    jobs: Mutex<Jobs>,
}

#[derive(Default)]
struct Jobs {
    by_id: HashMap<String, Job>,
    /// Ids in creation order; list-jobs reads it backwards (newest first).
    order: Vec<String>,
}

type Sim = State<Arc<SutroSim>>;

impl SutroSim {
    pub fn new(config: SimConfig, addr: SocketAddr, stop: CancellationToken) -> Arc<Self> {
        let timing = Timing::from_config(&config);
        Arc::new(Self {
            config,
            timing,
            addr,
            stop,
            jobs: Mutex::default(),
        })
    }

    fn jobs(&self) -> MutexGuard<'_, Jobs> {
        self.jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A copy of the job (cheap: the submission is shared), or Sutro's 404.
    fn job(&self, job_id: &str) -> Result<Job, Response> {
        self.jobs()
            .by_id
            .get(job_id)
            .cloned()
            .ok_or_else(|| sutro_error(StatusCode::NOT_FOUND, format!("Job {job_id} not found")))
    }

    pub fn set_outcome(&self, job_id: &str, outcome: JobOutcome) {
        if let Some(job) = self.jobs().by_id.get_mut(job_id) {
            job.outcome = outcome;
        }
    }
}

/// Every route of the Sutro half.
pub fn routes(sim: Arc<SutroSim>) -> Router {
    let mut router = Router::new()
        .route("/v1/batch-inference", post(create_job))
        .route("/v1/job-status/{job_id}", get(job_status))
        .route("/v1/jobs/{job_id}", get(get_job))
        .route("/v1/list-jobs", get(list_jobs))
        .route("/v1/job-results", post(job_results))
        .route("/v1/jobs/{job_id}/results-url", get(results_url))
        .route("/v1/job-cancel/{job_id}", get(cancel_job))
        .route("/v1/get-quotas", get(quotas))
        .route("/v1/stream-job-progress/{job_id}", get(stream_progress))
        .route("/v1/auth/check", get(auth_check))
        .route("/v1/try-authentication", get(try_authentication));
    // The same paths without `/v1` are the retired direct API.
    for path in [
        "/batch-inference",
        "/job-status/{job_id}",
        "/jobs/{job_id}",
        "/list-jobs",
        "/job-results",
        "/job-cancel/{job_id}",
        "/get-quotas",
        "/stream-job-progress/{job_id}",
        "/try-authentication",
    ] {
        router = router.route(
            path,
            any(|| async { sutro_error(StatusCode::GONE, RETIRED_HOST_DETAIL) }),
        );
    }
    router.with_state(sim)
}

async fn create_job(State(sim): Sim, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(denied) = sutro_auth(&headers) {
        return denied;
    }
    let submission = match parse_create(&body, sim.config.url_rows) {
        Ok(submission) => submission,
        Err(refused) => return refused,
    };
    let job_id = format!("job-{}", uuid::Uuid::new_v4());
    let job = Job::new(job_id.clone(), submission, sim.timing);
    let mut jobs = sim.jobs();
    jobs.by_id.insert(job_id.clone(), job);
    jobs.order.push(job_id.clone());
    Json(json!({
        "metadata": { "job_id": job_id, "message": "Job created successfully" },
        "results": job_id,
    }))
    .into_response()
}

async fn job_status(State(sim): Sim, headers: HeaderMap, Path(job_id): Path<String>) -> Response {
    let job = match sutro_auth(&headers).and_then(|()| sim.job(&job_id)) {
        Ok(job) => job,
        Err(refused) => return refused,
    };
    let snapshot = job.snapshot(Instant::now());
    let failure = job.failure_reason(&snapshot);
    let metadata = if failure.is_null() {
        Value::Null
    } else {
        json!({ "failure_reason": failure })
    };
    Json(json!({
        "message": format!("Job status with job_id {job_id} retrieved."),
        "job_status": { job_id: snapshot.status.as_str() },
        "metadata": metadata,
    }))
    .into_response()
}

async fn get_job(State(sim): Sim, headers: HeaderMap, Path(job_id): Path<String>) -> Response {
    if let Err(denied) = sutro_auth(&headers) {
        return denied;
    }
    match sim.job(&job_id) {
        Ok(job) => Json(json!({ "job": job.to_json(Instant::now()) })).into_response(),
        // The fetch-job page documents a `message` body for its 404.
        Err(_) => (
            StatusCode::NOT_FOUND,
            Json(json!({ "message": format!("Job {job_id} not found") })),
        )
            .into_response(),
    }
}

#[derive(serde::Deserialize)]
struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

async fn list_jobs(
    State(sim): Sim,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    if let Err(denied) = sutro_auth(&headers) {
        return denied;
    }
    let now = Instant::now();
    let jobs = sim.jobs();
    let newest_first = jobs.order.iter().rev().filter_map(|id| jobs.by_id.get(id));
    let Some(limit) = query.limit else {
        let all: Vec<Value> = newest_first.map(|job| job.to_json(now)).collect();
        return Json(json!({ "message": "Jobs retrieved.", "jobs": all })).into_response();
    };
    let limit = match limit.parse::<usize>() {
        Ok(n) if (1..=100).contains(&n) => n,
        _ => {
            return sutro_validation_error(
                &["query", "limit"],
                "Input should be between 1 and 100",
            );
        }
    };
    // The cursor is the position (from the oldest job) where the next page starts,
    // so pages stay stable while new jobs are created.
    let start_below = match query.cursor.as_deref().map(decode_cursor) {
        None => jobs.order.len(),
        Some(Some(position)) if position <= jobs.order.len() => position,
        Some(_) => return sutro_error(StatusCode::BAD_REQUEST, "Invalid cursor"),
    };
    let page: Vec<Value> = jobs.order[..start_below]
        .iter()
        .rev()
        .take(limit)
        .filter_map(|id| jobs.by_id.get(id))
        .map(|job| job.to_json(now))
        .collect();
    let next = start_below.saturating_sub(limit);
    let next_cursor = (next > 0).then(|| format!("cur_{next:08x}"));
    Json(json!({ "jobs": page, "next_cursor": next_cursor })).into_response()
}

fn decode_cursor(cursor: &str) -> Option<usize> {
    usize::from_str_radix(cursor.strip_prefix("cur_")?, 16).ok()
}

#[derive(serde::Deserialize)]
struct ResultsBody {
    job_id: Option<String>,
    #[serde(default)]
    include_inputs: Option<bool>,
    #[serde(default)]
    include_cumulative_logprobs: Option<bool>,
}

async fn job_results(State(sim): Sim, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(denied) = sutro_auth(&headers) {
        return denied;
    }
    let Ok(body) = serde_json::from_slice::<ResultsBody>(&body) else {
        return sutro_validation_error(&["body"], "JSON decode error");
    };
    let Some(job_id) = body.job_id else {
        return sutro_validation_error(&["body", "job_id"], "Field required");
    };
    let job = match sim.job(&job_id) {
        Ok(job) => job,
        Err(missing) => return missing,
    };
    if let Err(refused) = require_results(&job) {
        return refused;
    }
    let results = job.results(
        body.include_inputs.unwrap_or(false),
        body.include_cumulative_logprobs.unwrap_or(false),
        &sim.config.extra_result_columns,
    );
    Json(json!({ "results": results, "message": format!("Results for job {job_id} retrieved.") }))
        .into_response()
}

/// Results exist only for a job that SUCCEEDED (409 otherwise, as results-url documents).
fn require_results(job: &Job) -> Result<(), Response> {
    let status = job.snapshot(Instant::now()).status;
    if status != Status::Succeeded {
        return Err(sutro_error(
            StatusCode::CONFLICT,
            format!(
                "Job {} is {}; results are available once it has SUCCEEDED.",
                job.id,
                status.as_str()
            ),
        ));
    }
    if job.submission.cost_estimate {
        return Err(sutro_error(
            StatusCode::CONFLICT,
            format!("Job {} is a cost estimate; it has no results.", job.id),
        ));
    }
    Ok(())
}

#[derive(serde::Deserialize)]
struct ResultsUrlQuery {
    format: Option<String>,
    include_inputs: Option<bool>,
    include_cumulative_logprobs: Option<bool>,
    expires_in_seconds: Option<i64>,
}

async fn results_url(
    State(sim): Sim,
    headers: HeaderMap,
    Path(job_id): Path<String>,
    query: Result<Query<ResultsUrlQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(denied) = sutro_auth(&headers) {
        return denied;
    }
    let Ok(Query(query)) = query else {
        return sutro_validation_error(&["query"], "Invalid query parameters");
    };
    let format = query.format.unwrap_or_else(|| "parquet".into());
    if format != "parquet" {
        return sutro_error(
            StatusCode::BAD_REQUEST,
            format!("Unsupported format '{format}': only 'parquet' is available"),
        );
    }
    let expires = query.expires_in_seconds.unwrap_or(3600);
    if !(1..=604_800).contains(&expires) {
        return sutro_validation_error(
            &["query", "expires_in_seconds"],
            "Input should be between 1 and 604800",
        );
    }
    let job = match sim.job(&job_id) {
        Ok(job) => job,
        Err(missing) => return missing,
    };
    if let Err(refused) = require_results(&job) {
        return refused;
    }
    let (inputs, logprobs) = (
        query.include_inputs.unwrap_or(false),
        query.include_cumulative_logprobs.unwrap_or(false),
    );
    let filename = format!(
        "sutro-results~{job_id}~inputs={}~logprobs={}.parquet",
        inputs as u8, logprobs as u8
    );
    let key = format!("jobs/{job_id}/{filename}");
    let signature = uuid::Uuid::new_v4().simple().to_string();
    let url = format!(
        "http://{}/r2/sutro-data/{key}?X-Amz-Expires={expires}&X-Amz-Signature={signature}",
        sim.addr
    );
    // A rough Parquet size: what the rows would take compressed.
    let size_bytes = 512 + job.rows() as u64 * (48 + 32 * inputs as u64);
    Json(json!({
        "job_id": job_id,
        "format": "parquet",
        "include_inputs": inputs,
        "include_cumulative_logprobs": logprobs,
        "expires_in_seconds": expires,
        "artifact": { "bucket": "sutro-data", "key": key, "filename": filename, "size_bytes": size_bytes },
        "urls": { "get": url, "head": url },
    }))
    .into_response()
}

async fn cancel_job(State(sim): Sim, headers: HeaderMap, Path(job_id): Path<String>) -> Response {
    if let Err(denied) = sutro_auth(&headers) {
        return denied;
    }
    match sim.jobs().by_id.get_mut(&job_id) {
        Some(job) => job.cancel(Instant::now()),
        None => return sutro_error(StatusCode::NOT_FOUND, format!("Job {job_id} not found")),
    }
    Json(json!({
        "cancelled": true,
        "message": format!("Cancelling job with job_id: {job_id}. Check the job status endpoint for details."),
    }))
    .into_response()
}

async fn quotas(headers: HeaderMap) -> Response {
    if let Err(denied) = sutro_auth(&headers) {
        return denied;
    }
    Json(json!({ "quotas": [
        { "priority": 0, "row_quota": 1_000, "token_quota": 1_000_000 },
        { "priority": 1, "row_quota": 1_000_000, "token_quota": 10_000_000 },
    ]}))
    .into_response()
}

async fn auth_check(headers: HeaderMap) -> Response {
    if let Err(denied) = sutro_auth(&headers) {
        return denied;
    }
    Json(json!({
        "authenticated": true,
        "principal": { "type": "api_key", "key_id": "key_sim_demo", "name": "simulator demo key" },
    }))
    .into_response()
}

async fn try_authentication(headers: HeaderMap) -> Response {
    match sutro_auth(&headers) {
        Ok(()) => Json(json!({ "authenticated": true })).into_response(),
        Err(denied) => denied,
    }
}

/// `stream-job-progress`: NDJSON `progress`, `tokens` and `heartbeat` lines, ending when
/// the job is final. There is no "done" line, as in the real stream.
async fn stream_progress(
    State(sim): Sim,
    headers: HeaderMap,
    Path(job_id): Path<String>,
) -> Response {
    if let Err(refused) = sutro_auth(&headers).and_then(|()| sim.job(&job_id).map(drop)) {
        return refused;
    }
    let tick = Duration::from_millis(sim.config.progress_ms.max(1));
    let heartbeat = Duration::from_millis(sim.config.heartbeat_ms.max(1));
    let lines = async_stream::stream! {
        let mut reported = None;
        let mut last_heartbeat = Instant::now();
        loop {
            // The job is read afresh each tick: a cancel or an outcome set later counts.
            let Ok(job) = sim.job(&job_id) else { return };
            let now = Instant::now();
            let snapshot = job.snapshot(now);
            let started = !matches!(snapshot.status, Status::Queued | Status::Starting);
            if started && reported != Some(snapshot.rows_done) {
                reported = Some(snapshot.rows_done);
                // One write a tick, as a server flushing its buffer would: both lines
                // arrive together.
                let mut tick = ndjson(json!({ "update_type": "progress", "result": snapshot.rows_done }));
                tick.extend(ndjson(json!({ "update_type": "tokens", "result": {
                    "input_tokens": snapshot.input_tokens,
                    "output_tokens": snapshot.output_tokens,
                    "total_tokens_processed_per_second": if snapshot.status == Status::Running { job.tokens_per_second() } else { 0.0 },
                }})));
                yield Ok::<_, std::convert::Infallible>(Bytes::from(tick));
            }
            if snapshot.status.is_final() {
                return;
            }
            if now.duration_since(last_heartbeat) >= heartbeat {
                last_heartbeat = now;
                yield Ok(Bytes::from(ndjson(json!({ "update_type": "heartbeat" }))));
            }
            tokio::select! {
                () = tokio::time::sleep(tick) => {}
                () = sim.stop.cancelled() => return,
            }
        }
    };
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}

fn ndjson(value: Value) -> Vec<u8> {
    let mut line = value.to_string().into_bytes();
    line.push(b'\n');
    line
}
