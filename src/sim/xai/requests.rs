//! The handlers of a batch's requests: adding them (atomic, idempotent per id), listing
//! their metadata, and listing the results of the finished ones.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::super::respond::{xai_auth, xai_error};
use super::store::Moment;
use super::{XaiSim, admit, answer, json_body, limits, paging, path_id};

/// The documented maximum page of `/requests` and `/results`.
const MAX_LIMIT: usize = 1_000;

type PathId = Result<Path<String>, PathRejection>;

/// `POST /v1/batches/{batch_id}/requests`.
pub async fn add(
    State(sim): State<Arc<XaiSim>>,
    headers: HeaderMap,
    path: PathId,
    body: Bytes,
) -> Response {
    answer(add_requests(&sim, &headers, path, &body))
}

fn add_requests(
    sim: &XaiSim,
    headers: &HeaderMap,
    path: PathId,
    body: &Bytes,
) -> Result<Response, Response> {
    xai_auth(headers)?;
    let batch_id = path_id(path)?;
    sim.adds.admit(Instant::now()).map_err(|wait| {
        limits::too_many(
            "Too many add-batch-requests calls: the team's limit is per 30 seconds",
            wait,
        )
    })?;
    let body = json_body(headers, body)?;
    // Validated before the lock; reported only once the batch is known to take requests.
    let items = admit::parse(body, sim.config.max_request_bytes);
    let now = Moment::now();
    let mut batches = sim.batches();
    let batch = batches.get_mut(&batch_id)?;
    // A file batch is sealed for good, so that is said first, even once xAI cancelled it.
    if batch.input_file_id.is_some() {
        return Err(xai_error(
            StatusCode::PRECONDITION_FAILED,
            "Cannot add inline requests to a file-based batch",
        ));
    }
    if batch.is_cancelled(now.at) {
        return Err(xai_error(
            StatusCode::FORBIDDEN,
            format!("Batch {batch_id} has been cancelled and does not accept new requests"),
        ));
    }
    let items = items.map_err(|message| xai_error(StatusCode::BAD_REQUEST, message))?;
    batch
        .add(items, now, sim.request_time())
        .map_err(|message| xai_error(StatusCode::PRECONDITION_FAILED, message))?;
    // gRPC answers `Empty`, which the REST transcoder renders as `{}`.
    Ok(Json(json!({})).into_response())
}

/// `GET /v1/batches/{batch_id}/requests`: every request's state, in id order.
pub async fn list_metadata(
    State(sim): State<Arc<XaiSim>>,
    headers: HeaderMap,
    path: PathId,
    RawQuery(query): RawQuery,
) -> Response {
    answer(xai_auth(&headers).and_then(|()| {
        let batch_id = path_id(path)?;
        let page = paging::Page::parse(query.as_deref(), Some(MAX_LIMIT))?;
        let now = Instant::now();
        let batches = sim.batches();
        let batch = batches.get(&batch_id)?;
        let listed = batch
            .requests_after(page.after.as_deref())
            .map(|(id, request)| (id, (id, request)));
        let (requests, token) = paging::take(listed, page.limit);
        let metadata: Vec<Value> = requests
            .iter()
            .map(|(id, r)| batch.metadata_json(id, r, now))
            .collect();
        Ok(
            Json(json!({ "batch_request_metadata": metadata, "pagination_token": token }))
                .into_response(),
        )
    }))
}

/// `GET /v1/batches/{batch_id}/results`: the finished requests, in id order.
pub async fn list_results(
    State(sim): State<Arc<XaiSim>>,
    headers: HeaderMap,
    path: PathId,
    RawQuery(query): RawQuery,
) -> Response {
    answer(xai_auth(&headers).and_then(|()| {
        let batch_id = path_id(path)?;
        let page = paging::Page::parse(query.as_deref(), Some(MAX_LIMIT))?;
        let now = Instant::now();
        let batches = sim.batches();
        let batch = batches.get(&batch_id)?;
        let finished = batch
            .requests_after(page.after.as_deref())
            .filter_map(|(id, request)| Some((id, batch.result_json(id, request, now)?)));
        let (mut results, token) = paging::take(finished, page.limit);
        if sim.config.repeat_first_result && page.after.is_some() {
            let first = batch
                .requests_after(None)
                .find_map(|(id, request)| batch.result_json(id, request, now));
            results.splice(0..0, first);
        }
        Ok(Json(json!({ "results": results, "pagination_token": token })).into_response())
    }))
}
