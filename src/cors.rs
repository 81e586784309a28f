//! CORS for gRPC-Web callers in browsers: which web origins may call (`cors_allowed_origins`)
//! and the layer that answers their preflights and lets their pages read gRPC's headers.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};
use url::Url;

use crate::config::ConfigError;

/// Request headers a gRPC-Web page may send: what gRPC-Web clients send themselves, and
/// the metadata the gateway reads (credentials, request id, deadline, trace context).
const ALLOWED_REQUEST_HEADERS: [&str; 10] = [
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "grpc-encoding",
    "grpc-accept-encoding",
    "authorization",
    "x-request-id",
    "traceparent",
    "tracestate",
];

/// Response headers a page may read. A browser hides every header not listed here from
/// cross-origin pages, and gRPC-Web clients read the call's outcome from the first three
/// when an error comes without a body (a trailers-only response). The rest are the
/// gateway's own metadata: `x-upstream-request-id` (upstream/reply.rs), `x-cache` and
/// `age` (cache/), `x-ratelimit-*` (ratelimit/layer.rs).
pub const EXPOSED_RESPONSE_HEADERS: [&str; 10] = [
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "grpc-encoding",
    "x-upstream-request-id",
    "x-cache",
    "age",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
];

/// How long a browser may reuse a preflight's answer: it saves a round trip before each
/// call, and a narrower list still takes effect at once (the actual answers carry the
/// allowed origin too). Chromium caps it at two hours.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(2 * 3600);

/// The web origins allowed to call the gateway from their pages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CorsOrigins {
    /// No cross-origin access: no CORS headers, so browsers refuse other origins' pages.
    #[default]
    None,
    /// Every origin (`*`): only when written so.
    Any,
    /// These origins, as browsers send them (`https://host[:port]`, lowercase, no
    /// default port).
    List(Vec<String>),
}

impl CorsOrigins {
    /// Checks `cors_allowed_origins`: `*` alone, or `scheme://host[:port]` origins.
    /// Blank entries are ignored, so an empty setting means no cross-origin access.
    pub fn resolve(raw: &[String]) -> Result<CorsOrigins, ConfigError> {
        let entries: Vec<&str> = raw
            .iter()
            .map(|o| o.trim())
            .filter(|o| !o.is_empty())
            .collect();
        if entries.contains(&"*") {
            return if entries.len() == 1 {
                Ok(CorsOrigins::Any)
            } else {
                Err(ConfigError(
                    "cors_allowed_origins: `*` allows every origin and goes alone; list origins without it, or write only `*`".into(),
                ))
            };
        }
        let mut origins = Vec::with_capacity(entries.len());
        for entry in entries {
            let origin = parse_origin(entry).map_err(|why| {
                ConfigError(format!(
                    "cors_allowed_origins: `{entry}` is not a web origin ({why}); write `scheme://host[:port]`, e.g. `https://console.example.com`, or `*`"
                ))
            })?;
            if !origins.contains(&origin) {
                origins.push(origin);
            }
        }
        Ok(if origins.is_empty() {
            CorsOrigins::None
        } else {
            CorsOrigins::List(origins)
        })
    }

    /// The CORS layer for these origins; `None` when no origin is allowed, so that the
    /// gateway answers exactly as it would without CORS.
    pub fn layer(&self) -> Option<CorsLayer> {
        let allow_origin = match self {
            CorsOrigins::None => return None,
            CorsOrigins::Any => AllowOrigin::any(),
            CorsOrigins::List(origins) => {
                AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
            }
        };
        Some(
            CorsLayer::new()
                .allow_origin(allow_origin)
                .allow_methods([Method::POST, Method::OPTIONS])
                .allow_headers(ALLOWED_REQUEST_HEADERS.map(HeaderName::from_static))
                .expose_headers(EXPOSED_RESPONSE_HEADERS.map(HeaderName::from_static))
                .max_age(PREFLIGHT_MAX_AGE),
        )
    }
}

/// An origin in the form browsers send in `Origin`, or why `raw` is not one.
fn parse_origin(raw: &str) -> Result<String, &'static str> {
    let Some((_, rest)) = raw.split_once("://") else {
        return Err("no `scheme://`");
    };
    // Url would read `https://a.example/` and `https://a.example` alike; an `Origin`
    // header never has the slash, so a written path is a mistake worth naming.
    if rest.contains(['/', '?', '#']) {
        return Err("it has a path, query or fragment");
    }
    if rest.contains('@') {
        return Err("it has a user name or password");
    }
    let url = Url::parse(raw).map_err(|_| "it does not parse as a URL")?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("the scheme is not http or https");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("it has no host");
    }
    Ok(url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(raw: &[&str]) -> Result<CorsOrigins, ConfigError> {
        CorsOrigins::resolve(&raw.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn origins_are_kept_as_browsers_send_them() {
        assert_eq!(
            resolve(&["HTTPS://Console.Example.com:443", " http://127.0.0.1:8080 "]).unwrap(),
            CorsOrigins::List(vec![
                "https://console.example.com".into(),
                "http://127.0.0.1:8080".into()
            ])
        );
        assert_eq!(resolve(&[]).unwrap(), CorsOrigins::None);
        assert_eq!(resolve(&["", " "]).unwrap(), CorsOrigins::None);
        assert_eq!(resolve(&["*"]).unwrap(), CorsOrigins::Any);
        assert!(CorsOrigins::None.layer().is_none());
    }

    #[test]
    fn what_is_not_an_origin_is_named() {
        for bad in [
            "https://a.example/",
            "https://a.example/app",
            "https://a.example?x=1",
            "a.example",
            "ftp://a.example",
            "https://user@a.example",
            "https://",
            "https://a.example:99999",
        ] {
            let error = resolve(&[bad]).unwrap_err();
            assert!(
                error.0.starts_with("cors_allowed_origins: ") && error.0.contains(bad),
                "{bad}: {}",
                error.0
            );
        }
        let mixed = resolve(&["*", "https://a.example"]).unwrap_err();
        assert!(mixed.0.contains("`*`"), "{}", mixed.0);
    }
}
