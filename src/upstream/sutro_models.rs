//! Sutro's REST JSON shapes, as its docs and SDK show them, read leniently: every
//! documented variant (status map or string, `results` or `job_id`, any case) is accepted.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::lenient::{as_i64, opt_f64, opt_i64};

/// `POST batch-inference` answer. The SDK reads `results`; the oldest docs show
/// a top-level `job_id`; `metadata.job_id` is there too.
#[derive(Debug, Deserialize)]
pub struct CreateJobReply {
    #[serde(default)]
    results: Option<Value>,
    #[serde(default)]
    job_id: Option<String>,
    #[serde(default)]
    metadata: Option<CreateJobMetadata>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CreateJobMetadata {
    #[serde(default)]
    job_id: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl CreateJobReply {
    /// The new job's id, wherever this deployment put it.
    pub fn job_id(&self) -> Option<&str> {
        self.results
            .as_ref()
            .and_then(Value::as_str)
            .or(self.job_id.as_deref())
            .or(self.metadata.as_ref().and_then(|m| m.job_id.as_deref()))
            .filter(|id| !id.is_empty())
    }

    /// Sutro's message.
    pub fn message(&self) -> String {
        self.metadata
            .as_ref()
            .and_then(|m| m.message.clone())
            .or_else(|| self.message.clone())
            .unwrap_or_default()
    }
}

/// `GET job-status/{id}` answer.
#[derive(Debug, Deserialize)]
pub struct JobStatusReply {
    #[serde(default)]
    message: Option<String>,
    job_status: Value,
    #[serde(default)]
    metadata: Option<Value>,
}

impl JobStatusReply {
    /// The status string of `job_id`: from the documented map keyed by job id,
    /// from a map's only entry, or from the legacy plain string.
    pub fn status_of(&self, job_id: &str) -> Option<String> {
        match &self.job_status {
            Value::String(s) => Some(s.clone()),
            Value::Object(map) => map
                .get(job_id)
                .or_else(|| (map.len() == 1).then(|| map.values().next()).flatten())
                .and_then(Value::as_str)
                .map(str::to_owned),
            _ => None,
        }
    }

    /// `metadata.failure_reason`, for a failed job.
    pub fn failure_reason(&self) -> Option<Value> {
        self.metadata
            .as_ref()
            .and_then(|m| m.get("failure_reason"))
            .filter(|v| !v.is_null())
            .cloned()
    }

    /// Sutro's message.
    pub fn message(&self) -> String {
        self.message.clone().unwrap_or_default()
    }
}

/// The job object of `GET jobs/{id}` and `GET list-jobs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SutroJob {
    pub job_id: String,
    pub status: Option<String>,
    pub model: Option<String>,
    pub system_prompt: Option<String>,
    #[serde(deserialize_with = "opt_i64")]
    pub job_priority: Option<i64>,
    pub datetime_created: Option<String>,
    pub datetime_started: Option<String>,
    pub datetime_completed: Option<String>,
    pub datetime_added: Option<String>,
    pub json_schema: Option<Value>,
    pub sampling_params: Option<Value>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub dataset_id: Option<String>,
    #[serde(deserialize_with = "opt_i64")]
    pub input_tokens: Option<i64>,
    #[serde(deserialize_with = "opt_i64")]
    pub output_tokens: Option<i64>,
    #[serde(deserialize_with = "opt_f64")]
    pub job_cost: Option<f64>,
    #[serde(deserialize_with = "opt_i64")]
    pub num_rows: Option<i64>,
    pub failure_reason: Option<Value>,
    #[serde(deserialize_with = "opt_f64")]
    pub cost_estimate: Option<f64>,
    pub run_type: Option<String>,
}

/// `GET jobs/{id}` wraps the job in `{"job": ...}`.
#[derive(Debug, Deserialize)]
pub struct JobEnvelope {
    /// The job.
    pub job: SutroJob,
}

/// `GET list-jobs` answer (paged with `limit`, or everything without).
#[derive(Debug, Deserialize)]
pub struct ListJobsReply {
    /// The jobs, newest first.
    #[serde(default)]
    pub jobs: Vec<SutroJob>,
    /// Cursor of the next page; null on the last.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// `POST job-results` answer: column-oriented results.
#[derive(Debug, Deserialize)]
pub struct ResultsReply {
    /// `{column: [values...]}`, or (very old deployments) a bare list of outputs.
    pub results: Value,
}

/// `GET jobs/{id}/results-url` answer.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ResultsUrlReply {
    pub job_id: String,
    pub format: String,
    pub include_inputs: bool,
    pub include_cumulative_logprobs: bool,
    #[serde(deserialize_with = "opt_i64")]
    pub expires_in_seconds: Option<i64>,
    pub artifact: Artifact,
    pub urls: ArtifactUrls,
}

/// Where the results artifact is stored.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Artifact {
    pub bucket: String,
    pub key: String,
    pub filename: String,
    #[serde(deserialize_with = "opt_i64")]
    pub size_bytes: Option<i64>,
}

/// Presigned URLs of the artifact.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ArtifactUrls {
    pub get: String,
    pub head: String,
}

/// `GET job-cancel/{id}` answer.
#[derive(Debug, Deserialize)]
pub struct CancelReply {
    /// Whether the cancel was accepted. A 2xx answer that leaves it out (`{}`, or no
    /// body at all) accepted it: only an explicit `false` says otherwise.
    #[serde(default = "accepted")]
    pub cancelled: bool,
    /// Sutro's message.
    #[serde(default)]
    pub message: String,
}

impl Default for CancelReply {
    fn default() -> Self {
        Self {
            cancelled: accepted(),
            message: String::new(),
        }
    }
}

fn accepted() -> bool {
    true
}

/// `GET get-quotas` answer.
#[derive(Debug, Deserialize)]
pub struct QuotasReply {
    /// One entry per priority.
    #[serde(default)]
    pub quotas: Vec<QuotaEntry>,
}

/// One priority's quota.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct QuotaEntry {
    #[serde(deserialize_with = "opt_i64")]
    pub priority: Option<i64>,
    #[serde(deserialize_with = "opt_i64")]
    pub row_quota: Option<i64>,
    #[serde(deserialize_with = "opt_i64")]
    pub token_quota: Option<i64>,
}

/// `GET auth/check` / `GET try-authentication` answer.
#[derive(Debug, Deserialize)]
pub struct AuthReply {
    /// True when the key works.
    #[serde(default)]
    pub authenticated: bool,
    /// The key's principal (`auth/check`), if described.
    #[serde(default)]
    pub principal: Option<Value>,
    /// Anything else the deployment said about the key.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// One line of the NDJSON progress stream.
#[derive(Debug, Clone, PartialEq)]
pub enum ProgressUpdate {
    /// Rows processed so far (cumulative).
    Rows(i64),
    /// Token counters; any subset may be present.
    Tokens {
        input: Option<i64>,
        output: Option<i64>,
        per_second: Option<f64>,
    },
    /// The stream is alive.
    Heartbeat,
}

/// Parses one progress line; `None` for blank, unparseable or unknown lines,
/// which the SDK skips too.
pub fn parse_progress_line(line: &[u8]) -> Option<ProgressUpdate> {
    let json: Value = serde_json::from_slice(line).ok()?;
    match json.get("update_type")?.as_str()? {
        "progress" => as_i64(json.get("result")?).map(ProgressUpdate::Rows),
        "tokens" => {
            let result = json.get("result")?;
            Some(ProgressUpdate::Tokens {
                input: result.get("input_tokens").and_then(as_i64),
                output: result.get("output_tokens").and_then(as_i64),
                per_second: result
                    .get("total_tokens_processed_per_second")
                    .and_then(Value::as_f64),
            })
        }
        "heartbeat" => Some(ProgressUpdate::Heartbeat),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn create_reply_finds_the_id_in_every_shape() {
        let documented: CreateJobReply = serde_json::from_value(json!({
            "metadata": {"job_id": "job-1", "message": "Job created successfully"},
            "results": "job-1"
        }))
        .unwrap();
        assert_eq!(documented.job_id(), Some("job-1"));
        assert_eq!(documented.message(), "Job created successfully");
        let oldest: CreateJobReply =
            serde_json::from_value(json!({"job_id": "batch_job_1"})).unwrap();
        assert_eq!(oldest.job_id(), Some("batch_job_1"));
        let empty: CreateJobReply = serde_json::from_value(json!({"message": "?"})).unwrap();
        assert_eq!(empty.job_id(), None);
    }

    #[test]
    fn status_reads_map_and_legacy_string() {
        let map: JobStatusReply = serde_json::from_value(json!({
            "message": "m", "job_status": {"job-1": "RUNNING"}, "metadata": null
        }))
        .unwrap();
        assert_eq!(map.status_of("job-1").as_deref(), Some("RUNNING"));
        let legacy: JobStatusReply =
            serde_json::from_value(json!({"job_status": "succeeded"})).unwrap();
        assert_eq!(legacy.status_of("job-1").as_deref(), Some("succeeded"));
        let failed: JobStatusReply = serde_json::from_value(json!({
            "job_status": {"job-2": "FAILED"}, "metadata": {"failure_reason": {"message": "boom"}}
        }))
        .unwrap();
        assert_eq!(failed.failure_reason(), Some(json!({"message": "boom"})));
    }

    #[test]
    fn job_numbers_are_read_leniently() {
        let job: SutroJob = serde_json::from_value(json!({
            "job_id": "job-1", "num_rows": 10.0, "input_tokens": "42", "job_cost": null,
            "unknown_future_field": true
        }))
        .unwrap();
        assert_eq!(
            (job.num_rows, job.input_tokens, job.job_cost),
            (Some(10), Some(42), None)
        );
    }

    #[test]
    fn progress_lines_parse_like_the_sdk() {
        assert_eq!(
            parse_progress_line(br#"{"update_type": "progress", "result": 7}"#),
            Some(ProgressUpdate::Rows(7))
        );
        assert_eq!(
            parse_progress_line(br#"{"update_type": "tokens", "result": {"output_tokens": 9}}"#),
            Some(ProgressUpdate::Tokens {
                input: None,
                output: Some(9),
                per_second: None
            })
        );
        assert_eq!(
            parse_progress_line(br#"{"update_type": "heartbeat"}"#),
            Some(ProgressUpdate::Heartbeat)
        );
        assert_eq!(parse_progress_line(b"data: {}"), None);
        assert_eq!(parse_progress_line(br#"{"update_type": "new"}"#), None);
    }
}
