//! How the simulated upstreams authenticate and answer errors: Sutro's FastAPI-style
//! `{"detail": ...}` and xAI's `{"code", "error"}`, each with its own auth scheme.

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{DEMO_API_KEY, XAI_DEMO_API_KEY};

/// Which simulated upstream a route belongs to; it decides the error body's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Upstream {
    Sutro,
    Xai,
}

impl Upstream {
    /// The upstream that serves `path`.
    pub fn of_path(path: &str) -> Self {
        if path == "/v1/batches" || path.starts_with("/v1/batches/") {
            Upstream::Xai
        } else {
            Upstream::Sutro
        }
    }

    /// An error answer in this upstream's shape.
    pub fn error(self, status: StatusCode, message: impl Into<String>) -> Response {
        match self {
            Upstream::Sutro => sutro_error(status, message),
            Upstream::Xai => xai_error(status, message),
        }
    }
}

/// Sutro's (FastAPI's) error body.
pub fn sutro_error(status: StatusCode, detail: impl Into<String>) -> Response {
    (status, Json(json!({ "detail": detail.into() }))).into_response()
}

/// FastAPI's 422 for a request that does not fit the schema: `detail` is a list.
pub fn sutro_validation_error(location: &[&str], message: &str) -> Response {
    let body = json!({ "detail": [{ "loc": location, "msg": message, "type": "value_error" }] });
    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
}

/// xAI's error body: `code` is the gRPC status description, `error` the message.
pub fn xai_error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = json!({ "code": grpc_description(status), "error": message.into() });
    (status, Json(body)).into_response()
}

/// The canonical gRPC status text xAI's transcoder puts in `code`.
fn grpc_description(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 415 | 422 => "Client specified an invalid argument",
        401 => "The request does not have valid authentication credentials for the operation",
        403 => "The caller does not have permission to execute the specified operation",
        404 => "Some requested entity was not found",
        405 => "The operation is not implemented or is not supported/enabled in this service",
        409 => "The operation was aborted",
        412 => "The system is not in a state required for the operation's execution",
        429 => "Some resource has been exhausted",
        501 => "The operation is not implemented or is not supported/enabled in this service",
        503 => "The service is currently unavailable",
        504 => "The deadline expired before the operation could complete",
        _ => "Internal error",
    }
}

/// The fallback for paths neither upstream serves.
pub async fn no_route(uri: axum::http::Uri) -> Response {
    Upstream::of_path(uri.path()).error(StatusCode::NOT_FOUND, "Not Found")
}

/// The credential in `Authorization: <scheme> <credential>`, if the scheme is one of `schemes`.
fn credential<'h>(headers: &'h HeaderMap, schemes: &[&str]) -> Option<&'h str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credential) = value.trim().split_once(' ')?;
    schemes
        .iter()
        .any(|s| s.eq_ignore_ascii_case(scheme))
        .then(|| credential.trim())
}

/// Sutro's check: `Key <key>` (SDKs before April 2025 sent `Bearer`, accepted too).
pub fn sutro_auth(headers: &HeaderMap) -> Result<(), Response> {
    match credential(headers, &["Key", "Bearer"]) {
        Some(DEMO_API_KEY) => Ok(()),
        Some(_) => Err(sutro_error(StatusCode::UNAUTHORIZED, "Invalid API key")),
        None => Err(sutro_error(StatusCode::UNAUTHORIZED, "Missing API key")),
    }
}

/// xAI's check: a missing header (or not `Bearer`) is 401, a wrong key is 400 "Incorrect
/// API key", and the key is shown only by its first and last two characters, as xAI does.
pub fn xai_auth(headers: &HeaderMap) -> Result<(), Response> {
    match credential(headers, &["Bearer"]) {
        Some(XAI_DEMO_API_KEY) => Ok(()),
        Some(key) => Err(xai_error(
            StatusCode::BAD_REQUEST,
            format!(
                "Incorrect API key provided: {}. You can obtain an API key from the console.",
                mask(key)
            ),
        )),
        None => Err(xai_error(
            StatusCode::UNAUTHORIZED,
            "No API key provided. Add an Authorization header: Bearer <key>.",
        )),
    }
}

fn mask(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 4 {
        return "***".into();
    }
    let head: String = chars[..2].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}***{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_masked_in_xai_errors() {
        assert_eq!(mask("xai-wrong-key"), "xa***ey");
        assert_eq!(mask("abc"), "***");
    }

    #[test]
    fn paths_belong_to_their_upstream() {
        assert_eq!(Upstream::of_path("/v1/batches"), Upstream::Xai);
        assert_eq!(Upstream::of_path("/v1/batches/b1:cancel"), Upstream::Xai);
        assert_eq!(Upstream::of_path("/v1/batch-inference"), Upstream::Sutro);
    }
}
