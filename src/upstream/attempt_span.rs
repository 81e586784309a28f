//! The CLIENT span of one upstream attempt (a retry is a span of its own), after the
//! stable OpenTelemetry HTTP client conventions, with a URL that carries no secret.

use reqwest::Method;
use tracing::field::Empty;
use url::Url;

use crate::error::Error;

/// The path segments that are the APIs' own words; every other segment is an id.
const WORDS: [&str; 15] = [
    "auth",
    "batch-inference",
    "batches",
    "check",
    "get-quotas",
    "job-cancel",
    "job-results",
    "job-status",
    "jobs",
    "list-jobs",
    "requests",
    "results",
    "results-url",
    "stream-job-progress",
    "try-authentication",
];

/// The span of attempt number `resend + 1` of `method` on `segments` under `base`,
/// named `GET /v1/jobs/{job_id}`: ids vary per call, templates group them.
pub(super) fn attempt_span(
    method: &Method,
    base: &Url,
    provider: &'static str,
    segments: &[String],
    resend: u32,
) -> tracing::Span {
    let id = if provider == "xai" {
        "{batch_id}"
    } else {
        "{job_id}"
    };
    let template = format!(
        "{}{}",
        base.path().trim_end_matches('/'),
        path_template(segments, id)
    );
    let span = tracing::info_span!(
        "upstream",
        otel.name = format!("{method} {template}"),
        otel.kind = "client",
        otel.status_code = Empty,
        http.request.method = %method,
        http.request.resend_count = Empty,
        http.response.status_code = Empty,
        error.type = Empty,
        server.address = base.host_str(),
        server.port = base.port_or_known_default(),
        url.full = Empty,
        url.template = template,
        upstream = provider,
    );
    // The conventions write the count on resends only.
    if resend > 0 {
        span.record("http.request.resend_count", resend);
    }
    span
}

/// Records `url` on the current (attempt) span without what may carry a secret:
/// user and password, query and fragment. The path holds only ids.
pub(super) fn record_url(url: &Url) {
    tracing::Span::current().record("url.full", shown_url(url).as_str());
}

fn shown_url(url: &Url) -> Url {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown
}

/// Records how a failed attempt failed: `error.type`, and span status Error (a CLIENT
/// span's error is any 4xx or 5xx answer, and any failure to get one).
pub(super) fn record_failure(span: &tracing::Span, error: &Error) {
    let kind = match error {
        Error::Upstream(failure) => {
            span.record("error.type", failure.status.to_string());
            span.record("otel.status_code", "ERROR");
            return;
        }
        Error::UpstreamUnreachable {
            connected: false, ..
        } => "connection_failed",
        Error::UpstreamUnreachable { .. } => "transport_error",
        Error::DeadlineExceeded { .. } => "timeout",
        Error::FailedPrecondition(_) => "response_too_large",
        _ => "_OTHER",
    };
    span.record("error.type", kind);
    span.record("otel.status_code", "ERROR");
}

/// The upstream path with every segment that is not one of the APIs' own words
/// written `id` (an `{id}:verb` keeps its verb).
pub(super) fn path_template(segments: &[String], id: &str) -> String {
    let parts: Vec<String> = segments
        .iter()
        .map(|s| {
            if WORDS.contains(&s.as_str()) {
                s.clone()
            } else if let Some((_, verb)) = s.rsplit_once(':') {
                format!("{id}:{verb}")
            } else {
                id.to_owned()
            }
        })
        .collect();
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn templates_name_ids_and_keep_verbs() {
        assert_eq!(
            path_template(&segments(&["jobs", "job-1", "results-url"]), "{job_id}"),
            "/jobs/{job_id}/results-url"
        );
        assert_eq!(
            path_template(&segments(&["batches", "b-1:cancel"]), "{batch_id}"),
            "/batches/{batch_id}:cancel"
        );
    }

    #[test]
    fn the_url_shown_has_no_credentials_or_query() {
        let url = Url::parse("https://user:pw@api.example/v1/jobs/j?key=s#f").expect("url");
        assert_eq!(shown_url(&url).as_str(), "https://api.example/v1/jobs/j");
    }
}
