//! Safe large adds: every request gets an id (derived from the call, so a retried call
//! reuses it), and the requests are sent in order in upstream calls under a byte budget.

use bytes::Bytes;
use prost::Message;
use sha2::{Digest, Sha256};

use super::translate::request_json;
use crate::context::CallContext;
use crate::error::{Error, Result};
use crate::proto::xai::v1::{AddBatchRequestsRequest, AddBatchRequestsResponse};
use crate::services::chunking::chunk_by;
use crate::upstream::xai::XaiClient;

/// Bytes of `{"batch_requests":[]}` around the requests of one upstream call.
const ENVELOPE_BYTES: usize = 24;

/// The upstream calls one AddBatchRequests becomes.
#[derive(Debug)]
pub struct AddPlan {
    /// Every request's id, in call order.
    pub ids: Vec<String>,
    /// Each upstream call, in order.
    pub chunks: Vec<Chunk>,
}

/// One upstream add call: its serialized body and how many requests it carries.
#[derive(Debug)]
pub struct Chunk {
    /// Requests in the body.
    pub count: usize,
    /// `{"batch_requests":[...]}`, as serde_json prints it.
    pub body: Bytes,
}

/// Assigns ids and splits a (validated) request into upstream calls.
///
/// An assigned id is `bg_<hash of the batch id and the whole call>_<index>`: the
/// same call retried gets the same ids, and xAI treats re-adding an id with the
/// same content as a no-op, so a retry never duplicates a request.
pub fn plan(request: &AddBatchRequestsRequest, max_bytes: usize, max_requests: usize) -> AddPlan {
    let mut hasher = Sha256::new();
    hasher.update(request.batch_id.as_bytes());
    hasher.update(request.encode_to_vec());
    let call = hex::encode(&hasher.finalize()[..8]);

    let mut ids = Vec::with_capacity(request.batch_requests.len());
    let mut items = Vec::with_capacity(request.batch_requests.len());
    for (index, r) in request.batch_requests.iter().enumerate() {
        let id = r
            .batch_request_id
            .clone()
            .unwrap_or_else(|| format!("bg_{call}_{index}"));
        // Each item is serialized at once, so no tree of every request's `Value` is kept.
        if let Some(body) = &r.body
            && let Ok(json) = serde_json::to_vec(&request_json(&id, body))
        {
            items.push(json);
        }
        ids.push(id);
    }
    // Separator plus the item's JSON.
    let size_of = |item: &Vec<u8>| item.len() + 1;
    let chunks = chunk_by(
        items,
        size_of,
        max_bytes.saturating_sub(ENVELOPE_BYTES),
        max_requests,
    )
    .into_iter()
    .map(envelope)
    .collect();
    AddPlan { ids, chunks }
}

/// `{"batch_requests":[a,b,...]}` around serialized items: what serde_json prints for
/// the same object, without building it.
fn envelope(items: Vec<Vec<u8>>) -> Chunk {
    const OPEN: &[u8] = br#"{"batch_requests":["#;
    let size = OPEN.len() + 2 + items.iter().map(|i| i.len() + 1).sum::<usize>();
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(OPEN);
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(b"]}");
    Chunk {
        count: items.len(),
        body: Bytes::from(body),
    }
}

/// Sends the planned calls in order; stops at the first failure and says which
/// requests were accepted before it.
pub async fn execute(
    client: &XaiClient,
    batch_id: &str,
    plan: AddPlan,
    ctx: &CallContext,
) -> Result<AddBatchRequestsResponse> {
    let calls = plan.chunks.len();
    let mut accepted = 0;
    for chunk in plan.chunks {
        let size = chunk.count;
        let chunk_ctx = ctx.with_deadline(ctx.deadline.renewed());
        if let Err(cause) = client.add_requests(batch_id, chunk.body, &chunk_ctx).await {
            if calls == 1 {
                return Err(cause);
            }
            return Err(Error::PartiallyAccepted {
                cause: Box::new(cause),
                accepted,
                total: plan.ids.len(),
                last_accepted_id: accepted.checked_sub(1).map(|i| plan.ids[i].clone()),
                first_rejected_id: plan.ids[accepted].clone(),
            });
        }
        accepted += size;
    }
    Ok(AddBatchRequestsResponse {
        batch_request_ids: plan.ids,
        upstream_calls: calls as i32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::xai::v1::{BatchRequest, batch_request::Body};

    fn chat(content: &str) -> BatchRequest {
        let body = crate::convert::json_to_struct(serde_json::json!({
            "model": "grok-4", "messages": [{"role": "user", "content": content}]
        }));
        BatchRequest {
            batch_request_id: None,
            body: body.map(Body::ChatGetCompletion),
        }
    }

    #[test]
    fn ids_are_stable_for_a_retried_call_and_distinct_within_it() {
        let request = AddBatchRequestsRequest {
            batch_id: "batch_1".into(),
            batch_requests: vec![
                chat("a"),
                chat("a"),
                BatchRequest {
                    batch_request_id: Some("mine".into()),
                    ..chat("b")
                },
            ],
        };
        let first = plan(&request, 1 << 20, 1000);
        let again = plan(&request, 1 << 20, 1000);
        assert_eq!(first.ids, again.ids);
        assert_ne!(first.ids[0], first.ids[1]);
        assert_eq!(first.ids[2], "mine");
        let other = AddBatchRequestsRequest {
            batch_id: "batch_2".into(),
            ..request
        };
        assert_ne!(plan(&other, 1 << 20, 1000).ids[0], first.ids[0]);
    }

    #[test]
    fn chunks_keep_order_under_both_budgets() {
        let request = AddBatchRequestsRequest {
            batch_id: "b".into(),
            batch_requests: (0..250).map(|i| chat(&format!("prompt {i}"))).collect(),
        };
        let by_count = plan(&request, 1 << 20, 100);
        assert_eq!(
            by_count.chunks.iter().map(|c| c.count).collect::<Vec<_>>(),
            [100, 100, 50]
        );
        let by_bytes = plan(&request, 4096, 1000);
        assert!(by_bytes.chunks.len() > 3);
        let mut flat = Vec::new();
        for chunk in &by_bytes.chunks {
            assert!(chunk.body.len() <= 4096, "{}", chunk.body.len());
            let json: serde_json::Value = serde_json::from_slice(&chunk.body).unwrap();
            let items = json["batch_requests"].as_array().unwrap();
            assert_eq!(items.len(), chunk.count);
            // Byte for byte what serializing the `Value` envelope printed before.
            let old = serde_json::to_vec(&serde_json::json!({ "batch_requests": items })).unwrap();
            assert_eq!(chunk.body, old);
            flat.extend(
                items
                    .iter()
                    .map(|v| v["batch_request_id"].as_str().unwrap().to_owned()),
            );
        }
        assert_eq!(flat, by_bytes.ids);
    }
}
