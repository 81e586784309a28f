//! xAI REST JSON ⇄ `batchgate.xai.v1` messages: batches, request metadata, results,
//! and batch requests (a proto oneof of Structs ⇄ REST's single-key `batch_request`).

use serde_json::{Map, Value, json};

use crate::convert::{json_to_struct, parse_time, struct_to_json};
use crate::proto::xai::v1::{
    self as pb, batch_request::Body as RequestBody, batch_request_metadata::State,
    batch_response::Body as ResponseBody, batch_result::Result as ResultKind,
};
use crate::upstream::xai_models::{XaiBatch, XaiRequestMetadata, XaiResult};

/// A batch as the proto `Batch`.
pub fn batch_to_proto(batch: XaiBatch) -> pb::Batch {
    let time = |t: Option<String>| t.as_deref().and_then(parse_time);
    pb::Batch {
        batch_id: batch.batch_id,
        name: batch.name,
        create_time: time(batch.create_time),
        expire_time: time(batch.expire_time),
        create_api_key_id: batch.create_api_key_id.unwrap_or_default(),
        cancel_time: time(batch.cancel_time),
        cancel_by_xai_message: batch.cancel_by_xai_message,
        state: batch.state.map(|s| pb::BatchState {
            num_requests: s.num_requests,
            num_pending: s.num_pending,
            num_success: s.num_success,
            num_error: s.num_error,
            num_cancelled: s.num_cancelled,
        }),
        cost_breakdown: batch.cost_breakdown.map(|c| pb::BatchCostBreakdown {
            total_cost_usd_ticks: c.total_cost_usd_ticks.unwrap_or_default(),
            endpoint_costs: c
                .endpoint_costs
                .into_iter()
                .map(|e| pb::EndpointCost {
                    endpoint: e.endpoint,
                    cost_usd_ticks: e.cost_usd_ticks,
                    request_count: e.request_count,
                })
                .collect(),
            calculation_time: time(c.calculation_time),
        }),
        input_file_id: batch.input_file_id,
    }
}

/// xAI's lowercase state name as the enum (unknown names: UNSPECIFIED, kept raw).
pub fn parse_state(raw: &str) -> State {
    match raw.trim().to_ascii_lowercase().trim_start_matches("state_") {
        "unknown" => State::Unknown,
        "pending" => State::Pending,
        "succeeded" => State::Succeeded,
        "cancelled" => State::Cancelled,
        "failed" => State::Failed,
        _ => State::Unspecified,
    }
}

/// A request's metadata as the proto message.
pub fn metadata_to_proto(m: XaiRequestMetadata) -> pb::BatchRequestMetadata {
    pb::BatchRequestMetadata {
        state: parse_state(&m.state).into(),
        raw_state: m.state,
        batch_request_id: m.batch_request_id,
        endpoint: m.endpoint,
        model: m.model,
        create_time: m.create_time.as_deref().and_then(parse_time),
        finish_time: m.finish_time.as_deref().and_then(parse_time),
    }
}

/// A result as the proto message: the response under its kind, or the error text.
pub fn result_to_proto(r: XaiResult) -> pb::BatchResult {
    let result = match r.batch_result {
        Value::Object(mut map) => match (map.remove("error"), map.remove("response")) {
            (Some(error), _) if !error.is_null() => Some(ResultKind::Error(error_text(error))),
            (_, Some(Value::Object(response))) => {
                Some(ResultKind::Response(response_to_proto(response)))
            }
            _ => None,
        },
        _ => None,
    };
    pb::BatchResult {
        batch_request_id: r.batch_request_id,
        result,
    }
}

fn error_text(error: Value) -> String {
    match error {
        Value::String(s) => s,
        Value::Object(ref map) => map
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| error.to_string(), str::to_owned),
        other => other.to_string(),
    }
}

fn response_to_proto(mut response: Map<String, Value>) -> pb::BatchResponse {
    let mut take = |key: &str| response.remove(key).and_then(json_to_struct);
    let body = if let Some(b) = take("chat_get_completion") {
        Some(ResponseBody::ChatGetCompletion(b))
    } else if let Some(b) = take("responses") {
        Some(ResponseBody::Responses(b))
    } else if let Some(b) = take("image_generation") {
        Some(ResponseBody::ImageGeneration(b))
    } else if let Some(b) = take("image_edit") {
        Some(ResponseBody::ImageEdit(b))
    } else if let Some(b) = take("video_generation") {
        Some(ResponseBody::VideoGeneration(b))
    } else {
        take("video_extension").map(ResponseBody::VideoExtension)
    };
    pb::BatchResponse { body }
}

/// The REST key and body of a request's oneof.
pub fn request_body(body: &RequestBody) -> (&'static str, &prost_types::Struct) {
    match body {
        RequestBody::ChatGetCompletion(b) => ("chat_get_completion", b),
        RequestBody::Responses(b) => ("responses", b),
        RequestBody::ImageGeneration(b) => ("image_generation", b),
        RequestBody::ImageEdit(b) => ("image_edit", b),
        RequestBody::VideoGeneration(b) => ("video_generation", b),
        RequestBody::VideoExtension(b) => ("video_extension", b),
    }
}

/// One REST `batch_requests[]` item.
pub fn request_json(id: &str, body: &RequestBody) -> Value {
    let (kind, body) = request_body(body);
    json!({
        "batch_request_id": id,
        "batch_request": { kind: struct_to_json(body.clone()) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_read_both_forms() {
        let ok = result_to_proto(XaiResult {
            batch_request_id: "r1".into(),
            batch_result: json!({"response": {"chat_get_completion": {"id": "c1", "choices": []}}}),
        });
        assert!(matches!(
            ok.result,
            Some(ResultKind::Response(pb::BatchResponse {
                body: Some(ResponseBody::ChatGetCompletion(_))
            }))
        ));
        let failed = result_to_proto(XaiResult {
            batch_request_id: "r2".into(),
            batch_result: json!({"error": "Batch cancelled"}),
        });
        assert_eq!(
            failed.result,
            Some(ResultKind::Error("Batch cancelled".into()))
        );
    }

    #[test]
    fn states_and_date_only_times() {
        let m = metadata_to_proto(XaiRequestMetadata {
            batch_request_id: "r".into(),
            state: "succeeded".into(),
            create_time: Some("2025-11-11".into()),
            finish_time: Some("2025-11-12T01:02:03Z".into()),
            ..Default::default()
        });
        assert_eq!(m.state(), State::Succeeded);
        assert!(m.create_time.is_some() && m.finish_time.is_some());
        assert_eq!(parse_state("weird"), State::Unspecified);
    }
}
