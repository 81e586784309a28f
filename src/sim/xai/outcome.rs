//! What a finished simulated request answers: the errors the real API reports only per
//! request, and deterministic success bodies (chat completion, image, video) echoing the prompt.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::admit::Kind;
use super::store::Request;

/// Signed media URLs expire an hour after the result is made (the guide).
const MEDIA_URL_SECS: i64 = 3_600;
/// Simulated prices in USD ticks (1e-10 USD) per token; not xAI's price list.
const PROMPT_TICKS: u64 = 20_000;
const COMPLETION_TICKS: u64 = 100_000;

/// The error a request finishes with, for a body the API accepts at admission and
/// refuses only when it runs (the worker validates each request, not the add call).
pub fn failure(kind: Kind, body: &Value) -> Option<String> {
    match kind {
        Kind::Chat | Kind::Responses => {
            for field in ["max_tokens", "max_completion_tokens", "max_output_tokens"] {
                if let Some(n) = body
                    .get(field)
                    .filter(|n| n.as_f64().is_some_and(|n| n <= 0.0))
                {
                    return Some(format!(
                        "Maximum number of tokens {field} must be positive but {field} = {n}"
                    ));
                }
            }
            let empty = match kind {
                Kind::Chat => body
                    .get("messages")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty),
                _ => body
                    .get("input")
                    .is_none_or(|input| input.is_null() || input == "" || input == &json!([])),
            };
            empty.then(|| {
                format!(
                    "{} must not be empty",
                    if kind == Kind::Chat {
                        "messages"
                    } else {
                        "input"
                    }
                )
            })
        }
        _ => body
            .get("prompt")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
            .then(|| "prompt must not be empty".to_owned()),
    }
}

/// The `response` of a succeeded request: `chat_get_completion` for text (live, every
/// text request, `responses` too, answers as a chat completion), else image or video.
pub fn response(batch_id: &str, request_id: &str, request: &Request) -> Value {
    let body = request
        .content
        .get(request.kind.key())
        .unwrap_or(&Value::Null);
    let prompt = prompt(request.kind, body);
    let seed = hex::encode(&Sha256::digest(format!("{batch_id}/{request_id}").as_bytes())[..16]);
    let created = request.finishes.wall.timestamp();
    match request.kind {
        Kind::Chat | Kind::Responses => {
            json!({ "chat_get_completion": chat_completion(&seed, created, &request.model, &prompt, body) })
        }
        Kind::ImageGeneration | Kind::ImageEdit => {
            let count = body
                .get("n")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .clamp(1, 10);
            let images: Vec<Value> = (0..count)
                .map(|i| json!({ "url": media_url("images", &format!("{seed}-{i}"), "jpeg", created), "revised_prompt": prompt }))
                .collect();
            json!({ "image_generation": { "data": images, "model": request.model } })
        }
        Kind::VideoGeneration | Kind::VideoExtension => {
            let duration = body.get("duration").and_then(Value::as_u64).unwrap_or(8);
            json!({ "video_generation": {
                "video": { "url": media_url("videos", &seed, "mp4", created), "duration": duration, "respect_moderation": true },
                "model": request.model,
            }})
        }
    }
}

fn chat_completion(seed: &str, created: i64, model: &str, prompt: &str, body: &Value) -> Value {
    let content = format!("You said: {prompt}");
    let reasoning =
        is_reasoning(model).then(|| format!("The user said \"{prompt}\"; repeat it back."));
    let choices_wanted = body
        .get("n")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .clamp(1, 8);
    let choices: Vec<Value> = (0..choices_wanted)
        .map(|index| {
            let mut message = json!({ "role": "assistant", "content": content, "refusal": null });
            // Only grok-3-mini shows its reasoning; the others report reasoning tokens only.
            if let (Some(text), Some(map), "grok-3-mini") =
                (&reasoning, message.as_object_mut(), model)
            {
                map.insert("reasoning_content".into(), json!(text));
            }
            json!({ "index": index, "message": message, "finish_reason": "stop", "logprobs": null })
        })
        .collect();
    let prompt_tokens = tokens(prompt);
    let completion_tokens = tokens(&content) * choices_wanted;
    let reasoning_tokens = reasoning.as_deref().map_or(0, tokens) * choices_wanted;
    let mut cost =
        prompt_tokens * PROMPT_TICKS + (completion_tokens + reasoning_tokens) * COMPLETION_TICKS;
    if discounted(model) {
        cost = cost * 4 / 5;
    }
    json!({
        "id": format!("{}-{}-{}-{}-{}", &seed[..8], &seed[8..12], &seed[12..16], &seed[16..20], &seed[20..]),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens + reasoning_tokens,
            "prompt_tokens_details": { "text_tokens": prompt_tokens, "audio_tokens": 0, "image_tokens": 0, "cached_tokens": 0 },
            "completion_tokens_details": {
                "reasoning_tokens": reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
            "num_sources_used": 0,
            "cost_in_usd_ticks": cost,
        },
        "system_fingerprint": "fp_batchgate_sim",
    })
}

/// The text the request asks about: the last user message, the `input`, or the `prompt`.
fn prompt(kind: Kind, body: &Value) -> String {
    match kind {
        Kind::Chat => last_user_text(body.get("messages")),
        Kind::Responses => match body.get("input") {
            Some(Value::String(text)) => text.clone(),
            input => last_user_text(input),
        },
        _ => body
            .get("prompt")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    }
}

fn last_user_text(messages: Option<&Value>) -> String {
    let Some(messages) = messages.and_then(Value::as_array) else {
        return String::new();
    };
    let message = messages
        .iter()
        .rev()
        .find(|m| m.get("role") == Some(&json!("user")))
        .or(messages.last());
    match message.and_then(|m| m.get("content")) {
        Some(Value::String(text)) => text.clone(),
        // A list of parts: its text parts, in order.
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// A rough token count: about four characters a token, at least one.
fn tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4).max(1)
}

fn is_reasoning(model: &str) -> bool {
    model == "grok-4"
        || model == "grok-3-mini"
        || (model.ends_with("-reasoning") && !model.ends_with("non-reasoning"))
}

/// The models the pricing page gives a 20% batch discount.
fn discounted(model: &str) -> bool {
    model == "grok-4.3" || model.starts_with("grok-4.20")
}

fn media_url(folder: &str, name: &str, extension: &str, created: i64) -> String {
    let expires = created + MEDIA_URL_SECS;
    format!("https://media.batchgate-sim.invalid/{folder}/{name}.{extension}?expires={expires}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_request_errors_use_the_api_wording() {
        let body = json!({"model": "grok-4", "max_tokens": -5, "messages": [{"role": "user", "content": "x"}]});
        assert_eq!(
            failure(Kind::Chat, &body).as_deref(),
            Some("Maximum number of tokens max_tokens must be positive but max_tokens = -5")
        );
        assert_eq!(
            failure(
                Kind::Chat,
                &json!({"messages": [{"role": "user", "content": "x"}]})
            ),
            None
        );
        assert!(failure(Kind::ImageGeneration, &json!({})).is_some());
    }

    #[test]
    fn the_prompt_is_the_last_user_text() {
        let body = json!({"messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": "there"}]},
        ]});
        assert_eq!(prompt(Kind::Chat, &body), "hello there");
        assert_eq!(prompt(Kind::Responses, &json!({"input": "hi"})), "hi");
    }
}
