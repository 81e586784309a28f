//! xAI's REST JSON shapes for batches (`/v1/batches`), read leniently: counters in any
//! numeric form, times as strings (date-only or RFC 3339), absent fields as defaults.

use serde::Deserialize;
use serde_json::Value;

use super::lenient::{i64_or_zero, opt_i64};

/// A batch.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct XaiBatch {
    pub batch_id: String,
    pub name: String,
    pub create_time: Option<String>,
    pub expire_time: Option<String>,
    pub create_api_key_id: Option<String>,
    pub cancel_time: Option<String>,
    pub cancel_by_xai_message: Option<String>,
    pub state: Option<XaiBatchState>,
    pub cost_breakdown: Option<XaiCostBreakdown>,
    pub input_file_id: Option<String>,
}

/// A batch's request counters.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct XaiBatchState {
    #[serde(deserialize_with = "i64_or_zero")]
    pub num_requests: i64,
    #[serde(deserialize_with = "i64_or_zero")]
    pub num_pending: i64,
    #[serde(deserialize_with = "i64_or_zero")]
    pub num_success: i64,
    #[serde(deserialize_with = "i64_or_zero")]
    pub num_error: i64,
    #[serde(deserialize_with = "i64_or_zero")]
    pub num_cancelled: i64,
}

/// A batch's cost (in the gRPC API; REST may or may not send it).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct XaiCostBreakdown {
    #[serde(deserialize_with = "opt_i64")]
    pub total_cost_usd_ticks: Option<i64>,
    pub endpoint_costs: Vec<XaiEndpointCost>,
    pub calculation_time: Option<String>,
}

/// One endpoint's share of a batch's cost.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct XaiEndpointCost {
    pub endpoint: String,
    #[serde(deserialize_with = "i64_or_zero")]
    pub cost_usd_ticks: i64,
    #[serde(deserialize_with = "i64_or_zero")]
    pub request_count: i64,
}

/// `GET /v1/batches` answer.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct BatchPage {
    pub batches: Vec<XaiBatch>,
    pub pagination_token: Option<String>,
}

/// `GET /v1/batches/{id}/requests` answer.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RequestMetadataPage {
    pub batch_request_metadata: Vec<XaiRequestMetadata>,
    pub pagination_token: Option<String>,
}

/// The state of one request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct XaiRequestMetadata {
    pub batch_request_id: String,
    pub endpoint: String,
    pub model: String,
    pub state: String,
    pub create_time: Option<String>,
    pub finish_time: Option<String>,
}

/// `GET /v1/batches/{id}/results` answer.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ResultPage {
    pub results: Vec<XaiResult>,
    pub pagination_token: Option<String>,
}

/// One finished request: `batch_result` is `{"response": {<kind>: body}}` or `{"error": "..."}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct XaiResult {
    pub batch_request_id: String,
    pub batch_result: Value,
}

/// A page token that means "more": xAI sends null or an empty string on the last page.
pub fn next_token(token: Option<String>) -> String {
    token.filter(|t| !t.is_empty()).unwrap_or_default()
}
