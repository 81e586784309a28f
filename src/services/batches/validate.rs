//! Checks of BatchService requests, run before any upstream call so that bad input
//! costs nothing upstream and the caller learns every bad field at once.

use std::collections::HashSet;

use prost_types::value::Kind;

use super::translate::request_body;
use crate::error::Result;
use crate::proto::xai::v1 as pb;
use crate::services::validate::{MAX_ID_BYTES, Violations};

const NAME_MAX_CHARS: usize = 256;
const MAX_PAGE_SIZE: i32 = 1000;

pub fn batch_id(id: &str) -> Result<()> {
    let mut v = Violations::new();
    v.id("batch_id", id);
    v.finish()
}

pub fn create_batch(request: &pb::CreateBatchRequest) -> Result<()> {
    let mut v = Violations::new();
    if request.name.trim().is_empty() {
        v.add("name", "is required");
    }
    v.max_chars("name", Some(&request.name), NAME_MAX_CHARS);
    if let Some(file) = &request.input_file_id {
        v.id("input_file_id", file);
    }
    v.request_id("request_id", &request.request_id);
    v.finish()
}

pub fn list_batches(request: &pb::ListBatchesRequest) -> Result<()> {
    let mut v = Violations::new();
    v.page_size("page_size", request.page_size, MAX_PAGE_SIZE);
    v.page_token("page_token", &request.page_token);
    v.finish()
}

pub fn page(batch_id: &str, page_size: i32, page_token: &str) -> Result<()> {
    let mut v = Violations::new();
    v.id("batch_id", batch_id);
    v.page_size("page_size", page_size, MAX_PAGE_SIZE);
    v.page_token("page_token", page_token);
    v.finish()
}

/// A metadata page, and a state filter of known states only.
pub fn list_request_metadata(request: &pb::ListBatchRequestMetadataRequest) -> Result<()> {
    let mut v = Violations::new();
    v.id("batch_id", &request.batch_id);
    v.page_size("page_size", request.page_size, MAX_PAGE_SIZE);
    v.page_token("page_token", &request.page_token);
    for (i, state) in request.states.iter().enumerate() {
        v.known_enum::<pb::batch_request_metadata::State>(&format!("states[{i}]"), *state);
    }
    v.finish()
}

pub fn stream_results(request: &pb::StreamBatchResultsRequest) -> Result<()> {
    let mut v = Violations::new();
    v.id("batch_id", &request.batch_id);
    v.page_size(
        "upstream_page_size",
        request.upstream_page_size,
        MAX_PAGE_SIZE,
    );
    v.finish()
}

pub fn add_requests(request: &pb::AddBatchRequestsRequest) -> Result<()> {
    let mut v = Violations::new();
    v.id("batch_id", &request.batch_id);
    if request.batch_requests.is_empty() {
        v.add("batch_requests", "must hold at least one request");
    }
    let mut seen = HashSet::new();
    for (i, r) in request.batch_requests.iter().enumerate() {
        let field = format!("batch_requests[{i}]");
        if let Some(id) = &r.batch_request_id {
            if id.is_empty() || id.len() > MAX_ID_BYTES || id.chars().any(char::is_control) {
                v.add(
                    format!("{field}.batch_request_id"),
                    format!("must be 1 to {MAX_ID_BYTES} bytes without control characters"),
                );
            } else if !seen.insert(id.as_str()) {
                v.add(
                    format!("{field}.batch_request_id"),
                    format!("{id:?} appears more than once in this call"),
                );
            }
        }
        match &r.body {
            None => v.add(format!("{field}.body"), "must set exactly one request kind"),
            Some(body) => {
                let (kind, body) = request_body(body);
                let model = body.fields.get("model").and_then(|m| m.kind.as_ref());
                if !matches!(model, Some(Kind::StringValue(m)) if !m.is_empty()) {
                    v.add(format!("{field}.{kind}.model"), "is required");
                }
            }
        }
    }
    v.finish()
}
