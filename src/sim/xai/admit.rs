//! What an add-requests call may hold: the six request kinds, the models accepted for
//! batch processing, and the checks that refuse a whole call with 400 before anything is added.

use std::collections::HashSet;
use std::io::Write;

use serde_json::Value;

use super::outcome;

/// The kind of one batch request: the single key of its `batch_request` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Responses,
    ImageGeneration,
    ImageEdit,
    VideoGeneration,
    VideoExtension,
}

/// Text models accepted for batch processing (the SDK examples, the pricing page, and
/// xAI's current chat models).
const TEXT_MODELS: &[&str] = &[
    "grok-4",
    "grok-4-0709",
    "grok-4.3",
    "grok-4.20",
    "grok-4.20-0309-reasoning",
    "grok-4.20-0309-non-reasoning",
    "grok-4.20-multi-agent-0309",
    "grok-4-fast-reasoning",
    "grok-4-fast-non-reasoning",
    "grok-4-1-fast-reasoning",
    "grok-4-1-fast-non-reasoning",
    "grok-code-fast-1",
    "grok-3",
    "grok-3-mini",
];
const IMAGE_MODELS: &[&str] = &["grok-imagine-image", "grok-2-image", "grok-2-image-1212"];
const VIDEO_MODELS: &[&str] = &["grok-imagine-video"];

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Chat,
        Kind::Responses,
        Kind::ImageGeneration,
        Kind::ImageEdit,
        Kind::VideoGeneration,
        Kind::VideoExtension,
    ];

    /// The REST key of the kind.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Chat => "chat_get_completion",
            Kind::Responses => "responses",
            Kind::ImageGeneration => "image_generation",
            Kind::ImageEdit => "image_edit",
            Kind::VideoGeneration => "video_generation",
            Kind::VideoExtension => "video_extension",
        }
    }

    fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.key() == key)
    }

    /// The gRPC method that runs it, as request metadata names it. Live, every text
    /// request (`responses` too) runs as a chat completion.
    pub fn endpoint(self) -> &'static str {
        match self {
            Kind::Chat | Kind::Responses => "xai_api.Chat/GetCompletion",
            Kind::ImageGeneration | Kind::ImageEdit => "xai_api.Image/GenerateImage",
            Kind::VideoGeneration => "xai_api.Video/GenerateVideo",
            Kind::VideoExtension => "xai_api.Video/ExtendVideo",
        }
    }

    fn models(self) -> &'static [&'static str] {
        match self {
            Kind::Chat | Kind::Responses => TEXT_MODELS,
            Kind::ImageGeneration | Kind::ImageEdit => IMAGE_MODELS,
            Kind::VideoGeneration | Kind::VideoExtension => VIDEO_MODELS,
        }
    }

    /// The model used when the body names none: the image and video APIs have a
    /// default model; chat and responses require one.
    fn default_model(self) -> Option<&'static str> {
        match self {
            Kind::Chat | Kind::Responses => None,
            Kind::ImageGeneration | Kind::ImageEdit => Some("grok-imagine-image"),
            Kind::VideoGeneration | Kind::VideoExtension => Some("grok-imagine-video"),
        }
    }
}

/// One validated request of an add call.
#[derive(Debug)]
pub struct Item {
    /// The caller's id; `None` means the simulator generates one.
    pub id: Option<String>,
    pub kind: Kind,
    pub model: String,
    /// The `batch_request` object as sent.
    pub content: Value,
    /// The error this request will finish with, if its body is bad in a way the API
    /// only reports per request.
    pub failure: Option<String>,
}

/// Validates every item of an add call's body, so that one bad item refuses the call
/// whole (admission is atomic). `Err` is the 400 message.
pub fn parse(body: Value, max_request_bytes: usize) -> Result<Vec<Item>, String> {
    let list = match body {
        Value::Object(mut map) => match map.remove("batch_requests") {
            // proto3: a missing repeated field is an empty one, and adding nothing is fine.
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(list)) => list,
            Some(_) => return Err("batch_requests must be an array".into()),
        },
        _ => return Err("The request body must be a JSON object".into()),
    };
    let mut seen = HashSet::new();
    let mut items = Vec::with_capacity(list.len());
    for (index, entry) in list.into_iter().enumerate() {
        let item = parse_item(index, entry, max_request_bytes)?;
        if let Some(id) = &item.id
            && !seen.insert(id.clone())
        {
            return Err(format!(
                "Duplicate batch_request_id '{id}' in batch_requests"
            ));
        }
        items.push(item);
    }
    Ok(items)
}

fn parse_item(index: usize, entry: Value, max_request_bytes: usize) -> Result<Item, String> {
    let at = format!("batch_requests[{index}]");
    let size = json_size(&entry);
    let Value::Object(mut entry) = entry else {
        return Err(format!("{at} must be an object"));
    };
    // An empty id is read as no id (proto3 `optional string` set to ""), lenient: the
    // caller then gets a generated one, as when the field is left out.
    let id = match entry.remove("batch_request_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if id.is_empty() => None,
        Some(Value::String(id)) => Some(id),
        Some(_) => return Err(format!("{at}.batch_request_id must be a string")),
    };
    let named = id
        .as_deref()
        .map(|id| format!(" ('{id}')"))
        .unwrap_or_default();
    if size > max_request_bytes {
        return Err(format!(
            "{at}{named} is {size} bytes; a batch request may be at most {max_request_bytes} bytes"
        ));
    }
    let content = entry.remove("batch_request").unwrap_or(Value::Null);
    let (kind, request) = kind_of(&content).ok_or_else(|| {
        let keys: Vec<&str> = Kind::ALL.iter().map(|k| k.key()).collect();
        format!(
            "{at}.batch_request must set exactly one of {}",
            keys.join(", ")
        )
    })?;
    let model = match request.get("model") {
        Some(Value::String(model)) if !model.is_empty() => model.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => match kind.default_model() {
            Some(default) => default.to_owned(),
            None => return Err(format!("{at}: model is required")),
        },
        Some(_) => return Err(format!("{at}: model must be a string")),
    };
    if !kind.models().contains(&model.as_str()) {
        return Err(format!(
            "Model {model} is not supported for batch processing."
        ));
    }
    let failure = outcome::failure(kind, request);
    Ok(Item {
        id,
        kind,
        model,
        content,
        failure,
    })
}

/// The kind and body of a `batch_request`: exactly one known key holding an object.
fn kind_of(content: &Value) -> Option<(Kind, &Value)> {
    let map = content.as_object()?;
    let mut set = map.iter().filter(|(_, value)| !value.is_null());
    let (key, body) = set.next()?;
    if set.next().is_some() || !body.is_object() {
        return None;
    }
    Some((Kind::from_key(key)?, body))
}

/// Bytes of `value` as compact JSON, without building the text.
fn json_size(value: &Value) -> usize {
    struct Count(usize);
    impl Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn one_bad_item_refuses_the_call() {
        let body = json!({"batch_requests": [
            {"batch_request": {"chat_get_completion": {"model": "grok-4", "messages": []}}},
            {"batch_request": {"chat_get_completion": {"model": "grok-4.5", "messages": []}}},
        ]});
        assert_eq!(
            parse(body, 1 << 20).unwrap_err(),
            "Model grok-4.5 is not supported for batch processing."
        );
    }

    #[test]
    fn kinds_need_exactly_one_known_key() {
        let two = json!({"chat_get_completion": {}, "responses": {}});
        assert!(kind_of(&two).is_none());
        assert!(kind_of(&json!({"completion": {}})).is_none());
        assert_eq!(
            kind_of(&json!({"responses": {}, "image_edit": null})).map(|(k, _)| k),
            Some(Kind::Responses)
        );
        assert_eq!(json_size(&json!({"a": 1})), 7);
    }
}
