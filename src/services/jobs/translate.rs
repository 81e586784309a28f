//! Sutro JSON ⇄ `batchgate.sutro.v1` messages: the create body exactly as Sutro's SDK
//! builds it, and jobs, statuses and failure reasons back into proto.

use serde_json::Value;
#[cfg(test)]
use serde_json::json;

#[cfg(test)]
use crate::convert::struct_to_json;
use crate::convert::{json_to_struct, json_to_value, parse_time};
#[cfg(test)]
use crate::proto::sutro::v1::create_job_request::Inputs;
use crate::proto::sutro::v1::{self as pb, JobStatus};
use crate::upstream::sutro_models::{JobStatusReply, SutroJob};

/// A Sutro status string as the enum; unknown strings are UNSPECIFIED (the raw
/// string is always passed along beside it). Legacy lowercase names are accepted.
pub fn parse_status(raw: &str) -> JobStatus {
    match raw.trim().to_ascii_uppercase().as_str() {
        "UNKNOWN" => JobStatus::Unknown,
        "QUEUED" | "PENDING" | "SUBMITTED" => JobStatus::Queued,
        "STARTING" => JobStatus::Starting,
        "RUNNING" => JobStatus::Running,
        "SUCCEEDED" => JobStatus::Succeeded,
        "CANCELLING" => JobStatus::Cancelling,
        "CANCELLED" => JobStatus::Cancelled,
        "FAILED" => JobStatus::Failed,
        _ => JobStatus::Unspecified,
    }
}

/// SUCCEEDED, FAILED and CANCELLED are final; CANCELLING is not (it moves on).
pub fn is_final(status: JobStatus) -> bool {
    matches!(
        status,
        JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
    )
}

/// The GetJobStatus answer for `job_id` from Sutro's status reply; `None` when the
/// reply names no status for it.
pub fn status_to_proto(job_id: String, body: &JobStatusReply) -> Option<pb::GetJobStatusResponse> {
    let raw_status = body.status_of(&job_id)?;
    Some(pb::GetJobStatusResponse {
        status: parse_status(&raw_status).into(),
        raw_status,
        failure_reason: failure_reason(body.failure_reason()),
        message: body.message(),
        job_id,
    })
}

/// Sutro's `failure_reason` (an object with `message`, or a bare string).
pub fn failure_reason(value: Option<Value>) -> Option<pb::FailureReason> {
    match value? {
        Value::Null => None,
        Value::String(message) => Some(pb::FailureReason {
            message,
            additional_context: None,
        }),
        Value::Object(mut map) => Some(pb::FailureReason {
            message: match map.remove("message") {
                Some(Value::String(s)) => s,
                Some(other) => other.to_string(),
                None => String::new(),
            },
            additional_context: map.remove("additional_context").map(json_to_value),
        }),
        other => Some(pb::FailureReason {
            message: other.to_string(),
            additional_context: None,
        }),
    }
}

/// A Sutro job object as the proto `Job`.
pub fn job_to_proto(job: SutroJob) -> pb::Job {
    let raw_status = job.status.unwrap_or_default();
    let time = |t: Option<String>| t.as_deref().and_then(parse_time);
    pb::Job {
        status: parse_status(&raw_status).into(),
        raw_status,
        job_id: job.job_id,
        model: job.model.unwrap_or_default(),
        system_prompt: job.system_prompt,
        job_priority: job.job_priority.unwrap_or_default() as i32,
        datetime_created: time(job.datetime_created),
        datetime_started: time(job.datetime_started),
        datetime_completed: time(job.datetime_completed),
        datetime_added: time(job.datetime_added),
        json_schema: job.json_schema.and_then(json_to_struct),
        sampling_params: job.sampling_params.and_then(json_to_struct),
        name: job.name,
        description: job.description,
        dataset_id: job.dataset_id,
        input_tokens: job.input_tokens,
        output_tokens: job.output_tokens,
        job_cost: job.job_cost,
        num_rows: job.num_rows,
        failure_reason: failure_reason(job.failure_reason),
        cost_estimate: job.cost_estimate,
        run_type: job.run_type,
    }
}

/// The create body as a `Value`, as the gateway built it before `create_body.rs`:
/// kept as the reference the byte-for-byte equivalence test compares against.
#[cfg(test)]
pub fn create_body(request: &pb::CreateJobRequest) -> Value {
    let (inputs, column_name, id_column_name) = match &request.inputs {
        Some(Inputs::Prompts(p)) => (json!(p.values), None, None),
        Some(Inputs::Rows(r)) => (
            Value::Array(r.rows.iter().cloned().map(struct_to_json).collect()),
            None,
            None,
        ),
        Some(Inputs::Url(u)) => (
            json!(u.url),
            u.column_name.clone(),
            u.id_column_name.clone(),
        ),
        None => (Value::Null, None, None),
    };
    let mut body = json!({
        "model": request.model,
        "inputs": inputs,
        "job_priority": request.job_priority,
        "json_schema": request.json_schema.clone().map(struct_to_json),
        "system_prompt": request.system_prompt,
        "cost_estimate": request.cost_estimate,
        "sampling_params": request.sampling_params.clone().map(struct_to_json),
        "random_seed_per_input": request.random_seed_per_input,
        "truncate_rows": request.truncate_rows.unwrap_or(true),
        "name": request.name,
        "description": request.description,
    });
    if let Some(map) = body.as_object_mut() {
        if let Some(column) = column_name {
            map.insert("column_name".into(), json!(column));
        }
        if let Some(column) = id_column_name {
            map.insert("id_column_name".into(), json!(column));
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_read_in_any_case_and_unknown_ones_kept_raw() {
        assert_eq!(parse_status("RUNNING"), JobStatus::Running);
        assert_eq!(parse_status("succeeded"), JobStatus::Succeeded);
        assert_eq!(parse_status("pending"), JobStatus::Queued);
        assert_eq!(parse_status("COMPLETED"), JobStatus::Unspecified);
        assert!(!is_final(JobStatus::Cancelling));
        assert!(is_final(JobStatus::Cancelled));
    }

    #[test]
    fn create_body_matches_the_sdk() {
        let request = pb::CreateJobRequest {
            model: "gpt-oss-20b".into(),
            inputs: Some(Inputs::Url(pb::UrlInput {
                url: "https://b.example/in.csv".into(),
                column_name: None,
                id_column_name: Some("row_id".into()),
            })),
            name: Some("nightly".into()),
            ..Default::default()
        };
        let body = create_body(&request);
        assert_eq!(body["inputs"], "https://b.example/in.csv");
        assert_eq!(body["id_column_name"], "row_id");
        assert!(body.get("column_name").is_none());
        assert_eq!(body["truncate_rows"], true);
        assert_eq!(body["system_prompt"], Value::Null);
        assert_eq!(body["name"], "nightly");
        assert_eq!(body["cost_estimate"], false);
    }

    #[test]
    fn failure_reason_keeps_message_and_context() {
        let reason = failure_reason(Some(
            json!({"message": "OOM", "additional_context": {"row": 3}}),
        ))
        .unwrap();
        assert_eq!(reason.message, "OOM");
        assert!(reason.additional_context.is_some());
        assert_eq!(failure_reason(Some(Value::Null)), None);
    }
}
