//! The simulated xAI batches API (`/v1/batches`): its knobs, shared state and routes,
//! and the batch-level handlers (create, get, list, cancel).

mod admit;
mod limits;
mod outcome;
mod paging;
mod requests;
mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::XAI_DEMO_API_KEY;
use super::respond::{xai_auth, xai_error};
use limits::Window;
use store::{Batch, Moment};

const DEFAULT_REQUEST_MS: u64 = 3_000;
/// xAI's documented creation budget: 2 batch creations per second per team.
const DEFAULT_CREATES_PER_SECOND: u32 = 2;
/// xAI's documented add budget: 1000 add-batch-requests calls per 30 s per team.
const DEFAULT_ADD_CALLS_PER_30S: u32 = 1_000;
/// "25 MB max payload per individual request"; read as MiB, the lenient reading.
const DEFAULT_MAX_REQUEST_BYTES: usize = 25 * 1024 * 1024;

/// How the simulated xAI batches behave. `Default` is the demo pace; `fast()` is for tests.
#[derive(Debug, Clone, clap::Args)]
pub struct XaiSimConfig {
    /// Milliseconds from an add call until its requests have finished (the requests of
    /// one call finish spread over the last quarter of that time).
    #[arg(long = "xai-request-ms", env = "BATCHGATE_SIM_XAI_REQUEST_MS", default_value_t = DEFAULT_REQUEST_MS)]
    pub request_ms: u64,
    /// Batch creations allowed per second (xAI: 2 per team); more answer 429. 0 = no limit.
    #[arg(
        long = "xai-creates-per-second",
        env = "BATCHGATE_SIM_XAI_CREATES_PER_SECOND",
        default_value_t = DEFAULT_CREATES_PER_SECOND
    )]
    pub creates_per_second: u32,
    /// Add-requests calls allowed per rolling 30 s (xAI: 1000 per team, across all
    /// batches); more answer 429. 0 = no limit.
    #[arg(
        long = "xai-add-calls-per-30s",
        env = "BATCHGATE_SIM_XAI_ADD_CALLS_PER_30S",
        default_value_t = DEFAULT_ADD_CALLS_PER_30S
    )]
    pub add_calls_per_30s: u32,
    /// Largest single batch request, in bytes of JSON (xAI: 25 MB); a call holding a
    /// bigger one is refused whole with 400.
    #[arg(
        long = "xai-max-request-bytes",
        env = "BATCHGATE_SIM_XAI_MAX_REQUEST_BYTES",
        default_value_t = DEFAULT_MAX_REQUEST_BYTES
    )]
    pub max_request_bytes: usize,
    /// Every results page after the first repeats the batch's first result, as pages
    /// that shift while a batch runs can (a client must send each result once).
    #[arg(
        long = "xai-repeat-first-result",
        env = "BATCHGATE_SIM_XAI_REPEAT_FIRST_RESULT"
    )]
    pub repeat_first_result: bool,
}

impl Default for XaiSimConfig {
    fn default() -> Self {
        Self {
            request_ms: DEFAULT_REQUEST_MS,
            creates_per_second: DEFAULT_CREATES_PER_SECOND,
            add_calls_per_30s: DEFAULT_ADD_CALLS_PER_30S,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            repeat_first_result: false,
        }
    }
}

impl XaiSimConfig {
    /// A quick pace for tests: requests finish in 50 ms, no rate limits.
    pub fn fast() -> Self {
        Self {
            request_ms: 50,
            creates_per_second: 0,
            add_calls_per_30s: 0,
            ..Self::default()
        }
    }
}

/// The simulated xAI team: its batches and its rate budgets.
pub struct XaiSim {
    config: XaiSimConfig,
    /// What `create_api_key_id` shows: an id derived from the demo key, never the key.
    api_key_id: String,
    creates: Window,
    adds: Window,
    batches: Mutex<Batches>,
}

#[derive(Default)]
struct Batches {
    by_id: HashMap<String, Batch>,
    /// Ids in creation order; the list reads it backwards (newest first).
    order: Vec<String>,
}

type Sim = State<Arc<XaiSim>>;

impl XaiSim {
    pub fn new(config: XaiSimConfig) -> Arc<Self> {
        let digest = Sha256::digest(XAI_DEMO_API_KEY.as_bytes());
        let hex = hex::encode(&digest[..16]);
        let api_key_id = format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        );
        Arc::new(Self {
            creates: Window::new(config.creates_per_second, Duration::from_secs(1)),
            adds: Window::new(config.add_calls_per_30s, Duration::from_secs(30)),
            config,
            api_key_id,
            batches: Mutex::default(),
        })
    }

    fn batches(&self) -> MutexGuard<'_, Batches> {
        // A panicking test thread must not take the simulator down with it.
        self.batches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn request_time(&self) -> Duration {
        Duration::from_millis(self.config.request_ms)
    }
}

impl Batches {
    fn get(&self, batch_id: &str) -> Result<&Batch, Response> {
        self.by_id.get(batch_id).ok_or_else(|| not_found(batch_id))
    }

    fn get_mut(&mut self, batch_id: &str) -> Result<&mut Batch, Response> {
        self.by_id
            .get_mut(batch_id)
            .ok_or_else(|| not_found(batch_id))
    }
}

/// xAI's 404 for a batch this team does not have.
fn not_found(batch_id: &str) -> Response {
    xai_error(StatusCode::NOT_FOUND, format!("Batch {batch_id} not found"))
}

/// Every route of the xAI half. `POST /v1/batches/{batch_id}:cancel` shares its route
/// with `GET /v1/batches/{batch_id}`: the router cannot match a suffix inside a segment.
pub fn routes(sim: Arc<XaiSim>) -> Router {
    Router::new()
        .route(
            "/v1/batches",
            get(list_batches).post(create_batch).fallback(wrong_method),
        )
        .route(
            "/v1/batches/{batch_id}",
            get(get_batch).post(post_batch).fallback(wrong_method),
        )
        .route(
            "/v1/batches/{batch_id}/requests",
            get(requests::list_metadata)
                .post(requests::add)
                .fallback(wrong_method),
        )
        .route(
            "/v1/batches/{batch_id}/results",
            get(requests::list_results).fallback(wrong_method),
        )
        .with_state(sim)
}

/// The answer of a handler written with `?`: refusals are finished answers too.
fn answer(result: Result<Response, Response>) -> Response {
    result.unwrap_or_else(|refused| refused)
}

/// The path's `{batch_id}`, or a 400 in xAI's shape (e.g. bad percent-encoding).
fn path_id(path: Result<Path<String>, PathRejection>) -> Result<String, Response> {
    path.map(|Path(id)| id)
        .map_err(|rejection| xai_error(StatusCode::BAD_REQUEST, rejection.body_text()))
}

/// A POST body as JSON. Like xAI: an empty body or a non-JSON content type is 415, and
/// a body that is not JSON is 400.
fn json_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, Response> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if body.is_empty() || !is_json {
        return Err(xai_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Expected a non-empty JSON body with Content-Type: application/json",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        xai_error(
            StatusCode::BAD_REQUEST,
            format!("Failed to parse the request body as JSON: {e}"),
        )
    })
}

/// A method the path does not serve (xAI: 405).
async fn wrong_method(headers: HeaderMap) -> Response {
    answer(
        xai_auth(&headers)
            .map(|()| xai_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")),
    )
}

async fn create_batch(State(sim): Sim, headers: HeaderMap, body: Bytes) -> Response {
    answer(create(&sim, &headers, &body))
}

fn create(sim: &XaiSim, headers: &HeaderMap, body: &Bytes) -> Result<Response, Response> {
    xai_auth(headers)?;
    sim.creates.admit(Instant::now()).map_err(|wait| {
        limits::too_many(
            "Too many batch creations: the team's limit is per second",
            wait,
        )
    })?;
    let body = json_body(headers, body)?;
    let name = match body.get("name") {
        Some(Value::String(name)) if !name.trim().is_empty() => name.clone(),
        _ => {
            return Err(xai_error(
                StatusCode::BAD_REQUEST,
                "name is required and must be a non-empty string",
            ));
        }
    };
    // proto3 reads an empty string as "not set", so "" makes an inline batch.
    let input_file_id = match body.get("input_file_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if id.is_empty() => None,
        Some(Value::String(id)) => Some(id.clone()),
        Some(_) => {
            return Err(xai_error(
                StatusCode::BAD_REQUEST,
                "input_file_id must be a string",
            ));
        }
    };
    let now = Moment::now();
    let batch_id = format!("batch_{}", uuid::Uuid::new_v4());
    let batch = Batch::new(
        batch_id.clone(),
        name,
        sim.api_key_id.clone(),
        input_file_id,
        now,
        sim.request_time(),
    );
    let rendered = batch.to_json(now.at);
    let mut batches = sim.batches();
    batches.by_id.insert(batch_id.clone(), batch);
    batches.order.push(batch_id);
    Ok(Json(rendered).into_response())
}

async fn get_batch(
    State(sim): Sim,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    answer(xai_auth(&headers).and_then(|()| {
        let batch_id = path_id(path)?;
        let batches = sim.batches();
        let batch = batches.get(&batch_id)?;
        Ok(Json(batch.to_json(Instant::now())).into_response())
    }))
}

async fn list_batches(State(sim): Sim, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    answer(xai_auth(&headers).and_then(|()| {
        // No maximum is documented for this list, only the default of 100.
        let page = paging::Page::parse(query.as_deref(), None)?;
        let now = Instant::now();
        let batches = sim.batches();
        // The token is the last batch id of the previous page: older batches follow it,
        // and batches created meanwhile (newer) cannot shift the pages still to come.
        let end = match &page.after {
            None => batches.order.len(),
            Some(after) => batches
                .order
                .iter()
                .position(|id| id == after)
                .ok_or_else(paging::bad_token)?,
        };
        let newest_first = batches.order[..end]
            .iter()
            .rev()
            .filter_map(|id| Some((id.as_str(), batches.by_id.get(id)?)));
        let (page, token) = paging::take(newest_first, page.limit);
        let rendered: Vec<Value> = page.into_iter().map(|batch| batch.to_json(now)).collect();
        Ok(Json(json!({ "batches": rendered, "pagination_token": token })).into_response())
    }))
}

/// `POST /v1/batches/{batch_id}:cancel`; any other POST on this path does not exist.
async fn post_batch(
    State(sim): Sim,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    answer(xai_auth(&headers).and_then(|()| {
        let segment = path_id(path)?;
        let Some(batch_id) = segment.strip_suffix(":cancel") else {
            return Err(xai_error(StatusCode::NOT_FOUND, "Not Found"));
        };
        let now = Moment::now();
        let mut batches = sim.batches();
        let batch = batches.get_mut(batch_id)?;
        batch.cancel(now);
        Ok(Json(batch.to_json(now.at)).into_response())
    }))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        xai: XaiSimConfig,
    }

    #[test]
    fn default_is_what_the_flags_default_to() {
        let parsed = Cli::parse_from(["sim"]).xai;
        assert_eq!(
            format!("{parsed:?}"),
            format!("{:?}", XaiSimConfig::default())
        );
        let fast = XaiSimConfig::fast();
        assert_eq!((fast.creates_per_second, fast.add_calls_per_30s), (0, 0));
    }
}
