//! Checks of JobService requests, run before any upstream call so that bad input
//! costs nothing upstream and the caller learns every bad field at once.

use crate::error::{Error, FieldViolation, Result};
use crate::proto::sutro::v1::{self as pb, create_job_request::Inputs};
use crate::services::validate::{Violations, download_url};

/// Sutro's SDK limits, enforced client-side there and here.
const NAME_MAX_CHARS: usize = 45;
const DESCRIPTION_MAX_CHARS: usize = 512;
const MAX_PAGE_SIZE: i32 = 100;
const MAX_EXPIRES_IN_SECONDS: i32 = 604_800;
/// Longer than any real column name; keeps a bad request from carrying megabytes.
const COLUMN_NAME_MAX_CHARS: usize = 256;

pub fn job_id(id: &str) -> Result<()> {
    let mut v = Violations::new();
    v.id("job_id", id);
    v.finish()
}

pub fn check_auth(request: &pb::CheckAuthRequest) -> Result<()> {
    let mut v = Violations::new();
    v.known_enum::<pb::AuthScope>("scope", request.scope);
    v.finish()
}

pub fn create_job(request: &pb::CreateJobRequest) -> Result<()> {
    let mut v = Violations::new();
    if request.model.trim().is_empty() {
        v.add("model", "must name a model or a published Function");
    }
    match &request.inputs {
        None => v.add("inputs", "exactly one of prompts, rows or url is required"),
        Some(Inputs::Prompts(p)) if p.values.is_empty() => {
            v.add("prompts.values", "must hold at least one prompt")
        }
        Some(Inputs::Rows(r)) if r.rows.is_empty() => {
            v.add("rows.rows", "must hold at least one row")
        }
        Some(Inputs::Url(u)) => {
            download_url(&mut v, "url.url", &u.url);
            if u.column_name.as_deref().is_some_and(str::is_empty) {
                v.add("url.column_name", "must not be empty when set");
            }
            if u.id_column_name.as_deref().is_some_and(str::is_empty) {
                v.add("url.id_column_name", "must not be empty when set");
            }
        }
        Some(_) => {}
    }
    if !matches!(request.job_priority, 0 | 1) {
        v.add(
            "job_priority",
            format!("must be 0 or 1 (got {})", request.job_priority),
        );
    }
    v.max_chars("name", request.name.as_deref(), NAME_MAX_CHARS);
    v.max_chars(
        "description",
        request.description.as_deref(),
        DESCRIPTION_MAX_CHARS,
    );
    if let Some(schema) = &request.json_schema {
        if schema.fields.is_empty() {
            v.add(
                "json_schema",
                "must be a JSON Schema object with at least one keyword",
            );
        } else if let Some(kind) = schema.fields.get("type").and_then(|t| t.kind.as_ref()) {
            use prost_types::value::Kind;
            if !matches!(kind, Kind::StringValue(_) | Kind::ListValue(_)) {
                v.add("json_schema.type", "must be a string or a list of strings");
            }
        }
    }
    v.request_id("request_id", &request.request_id);
    v.finish()
}

pub fn list_jobs(request: &pb::ListJobsRequest) -> Result<()> {
    let mut v = Violations::new();
    v.page_size("page_size", request.page_size, MAX_PAGE_SIZE);
    v.page_token("page_token", &request.page_token);
    v.finish()
}

pub fn results(request: &pb::GetJobResultsRequest) -> Result<()> {
    let mut v = Violations::new();
    v.id("job_id", &request.job_id);
    if request.max_rows_per_chunk < 0 {
        v.add("max_rows_per_chunk", "must not be negative");
    }
    v.max_chars(
        "id_column_name",
        Some(request.id_column_name.as_str()),
        COLUMN_NAME_MAX_CHARS,
    );
    if request.id_column_name.chars().any(char::is_control) {
        v.add("id_column_name", "must not hold control characters");
    }
    v.finish()
}

/// The error for an `id_column_name` the job's results do not hold; found only once
/// the results are read, it still names the caller's field.
pub fn missing_id_column(name: &str) -> Error {
    Error::InvalidArgument(vec![FieldViolation::new(
        "id_column_name",
        format!("the job's results hold no column `{name}`"),
    )])
}

pub fn results_url(request: &pb::GetJobResultsUrlRequest) -> Result<()> {
    let mut v = Violations::new();
    v.id("job_id", &request.job_id);
    if !matches!(request.format.as_str(), "" | "parquet") {
        v.add("format", "only `parquet` is available");
    }
    if !(0..=MAX_EXPIRES_IN_SECONDS).contains(&request.expires_in_seconds) {
        v.add(
            "expires_in_seconds",
            format!("must be between 1 and {MAX_EXPIRES_IN_SECONDS}, or 0 for the default"),
        );
    }
    v.finish()
}
