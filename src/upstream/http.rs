//! The HTTP core shared by every upstream: auth header, deadline, a cap on requests in
//! flight, retries with jittered backoff and `Retry-After`, trace propagation, and turning
//! HTTP failures into `Error`s.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::Rng;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tokio::time::{Instant, sleep, timeout_at};
use tracing::Instrument;
use url::Url;

use crate::config::RetryPolicy;
use crate::context::CallContext;
use crate::error::{Error, Result, UpstreamFailure, UpstreamId};
use crate::metrics::{HttpOutcome, Metrics};
use crate::upstream::attempt::AttemptTimer;
use crate::upstream::attempt_span::{self, attempt_span};
use crate::upstream::budget::{Budgets, Spend};
use crate::upstream::relay::{relayable_id, scrub};
pub use crate::upstream::reply::Reply;

/// How an upstream expects its key in the `Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthScheme {
    /// `Authorization: Key <key>` (Sutro).
    Key,
    /// `Authorization: Bearer <key>` (xAI).
    Bearer,
}

/// One REST request, before auth and retries.
#[derive(Debug, Clone)]
pub struct Call {
    /// HTTP method.
    pub method: Method,
    /// Path segments under the base URL; each is percent-encoded on its own.
    pub segments: Vec<String>,
    /// Query parameters.
    pub query: Vec<(&'static str, String)>,
    /// JSON body, if any.
    pub body: Option<CallBody>,
    /// Whether the call may be repeated safely (reads and cancels). Creates are not.
    pub idempotent: bool,
    /// The upstream budget each attempt spends, if any.
    pub spend: Option<Spend>,
}

impl Call {
    /// A `GET` of `segments` (idempotent).
    pub fn get<S: Into<String>>(segments: impl IntoIterator<Item = S>) -> Self {
        Self {
            method: Method::GET,
            segments: segments.into_iter().map(Into::into).collect(),
            query: Vec::new(),
            body: None,
            idempotent: true,
            spend: None,
        }
    }

    /// A `POST` of `body` to `segments`; not idempotent unless marked so.
    pub fn post<S: Into<String>>(
        segments: impl IntoIterator<Item = S>,
        body: serde_json::Value,
    ) -> Self {
        Self {
            method: Method::POST,
            segments: segments.into_iter().map(Into::into).collect(),
            query: Vec::new(),
            body: Some(CallBody::Json(body)),
            idempotent: false,
            spend: None,
        }
    }

    /// A `POST` of JSON already serialized: large bodies are built straight into bytes,
    /// and a retry resends the same buffer (a `Bytes` clone) instead of serializing again.
    pub fn post_bytes<S: Into<String>>(segments: impl IntoIterator<Item = S>, json: Bytes) -> Self {
        Self {
            body: Some(CallBody::Bytes(json)),
            ..Self::post(segments, serde_json::Value::Null)
        }
    }

    /// Marks each attempt as spending one slot of the upstream's `spend` budget.
    pub fn spends(mut self, spend: Spend) -> Self {
        self.spend = Some(spend);
        self
    }

    /// Marks the call safe to retry.
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// Adds a query parameter.
    pub fn query(mut self, name: &'static str, value: impl ToString) -> Self {
        self.query.push((name, value.to_string()));
        self
    }
}

/// The JSON body of a call: a `Value` for the small calls, serialized bytes for the large.
#[derive(Debug, Clone)]
pub enum CallBody {
    /// Serialized by reqwest on each attempt.
    Json(serde_json::Value),
    /// Sent as it is, with `Content-Type: application/json`.
    Bytes(Bytes),
}

/// The shared HTTP client of one upstream.
#[derive(Debug, Clone)]
pub struct UpstreamHttp {
    client: reqwest::Client,
    base: Url,
    id: UpstreamId,
    scheme: AuthScheme,
    retry: RetryPolicy,
    max_body_bytes: usize,
    /// One permit per request in flight. tokio's semaphore is FIFO, so waiting calls are
    /// served in arrival order, each giving up at its own deadline.
    slots: Arc<Semaphore>,
    /// The upstream's own team-wide limits, kept for the whole cluster.
    budgets: Budgets,
    /// Where each attempt's duration and the budget waits are recorded.
    metrics: Metrics,
}

/// What bounds one upstream's use of memory and connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest JSON answer read into memory.
    pub max_body_bytes: usize,
    /// Most requests in flight at once (and idle connections kept).
    pub max_in_flight: usize,
}

/// Installs the process-wide TLS crypto provider (ring) once; reqwest needs one.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl UpstreamHttp {
    /// A client for the upstream at `base` (a normalized `<origin>/v1/` URL), with at
    /// most `limits.max_in_flight` requests in flight.
    pub fn new(
        provider: &'static str,
        base: Url,
        scheme: AuthScheme,
        retry: RetryPolicy,
        limits: Limits,
    ) -> Result<Self> {
        install_crypto_provider();
        let client = reqwest::Client::builder()
            .user_agent(concat!("batchgate/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            // More idle connections than requests that may be in flight would never be used.
            .pool_max_idle_per_host(limits.max_in_flight)
            .build()
            .map_err(|e| {
                Error::Internal(format!("cannot build the {provider} HTTP client: {e}"))
            })?;
        let id = UpstreamId {
            provider,
            host: base.host_str().unwrap_or_default().to_owned(),
        };
        Ok(Self {
            client,
            base,
            id,
            scheme,
            retry,
            max_body_bytes: limits.max_body_bytes,
            slots: Arc::new(Semaphore::new(limits.max_in_flight)),
            budgets: Budgets::default(),
            metrics: Metrics::disabled(),
        })
    }

    /// The same client, spending `budgets` on the calls that name one.
    pub fn with_budgets(mut self, budgets: Budgets) -> Self {
        self.budgets = budgets;
        self
    }

    /// The same client, recording its attempts and budget waits on `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Which upstream this is.
    pub fn id(&self) -> &UpstreamId {
        &self.id
    }

    /// The base URL calls are made under.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// Sends `call` (retrying if it is idempotent) and decodes a JSON 2xx answer.
    pub async fn json<T: DeserializeOwned>(
        &self,
        call: &Call,
        ctx: &CallContext,
    ) -> Result<Reply<T>> {
        let (status, request_id, body) = self.exchange(call, ctx).await?;
        let body = self.decode(status, &body, ctx)?;
        Ok(Reply { body, request_id })
    }

    /// Like [`Self::json`], for endpoints whose answer the gateway can do without: a
    /// 2xx with no body (204, or 200 with nothing or only white space) is `None`
    /// rather than a broken answer, so work that succeeded is never reported failed.
    pub async fn json_or_empty<T: DeserializeOwned>(
        &self,
        call: &Call,
        ctx: &CallContext,
    ) -> Result<Reply<Option<T>>> {
        let (status, request_id, body) = self.exchange(call, ctx).await?;
        let body = if body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            Some(self.decode(status, &body, ctx)?)
        };
        Ok(Reply { body, request_id })
    }

    /// One call, retried where safe: the 2xx status, the upstream's request id and
    /// the body, read whole.
    async fn exchange(
        &self,
        call: &Call,
        ctx: &CallContext,
    ) -> Result<(StatusCode, Option<String>, Bytes)> {
        self.with_retries(call, ctx, || async {
            let response = self.send_once(call, ctx).await?;
            let status = response.status();
            let request_id = upstream_request_id(response.headers(), ctx);
            let body = self.read_body(response).await?;
            Ok((status, request_id, body))
        })
        .await
    }

    fn decode<T: DeserializeOwned>(
        &self,
        status: StatusCode,
        body: &Bytes,
        ctx: &CallContext,
    ) -> Result<T> {
        serde_json::from_slice(body).map_err(|e| Error::UpstreamProtocol {
            upstream: self.id.clone(),
            status: status.as_u16(),
            // serde quotes the values it could not read, which come from upstream.
            detail: scrub(
                &format!("body does not match the documented shape: {e}"),
                &ctx.credentials(),
            ),
        })
    }

    /// Reads a JSON answer into memory, refusing one over `max_body_bytes` before it
    /// is read whole (Sutro sends a job's results as one body, whatever their size).
    async fn read_body(&self, mut response: reqwest::Response) -> Result<Bytes> {
        let too_large = |size: u64| {
            Error::FailedPrecondition(format!(
                "{}'s answer is {size} bytes or more, over the {} bytes the gateway reads into \
                 memory; for job results use GetJobResultsUrl",
                self.id.provider, self.max_body_bytes
            ))
        };
        if let Some(size) = response
            .content_length()
            .filter(|&n| n > self.max_body_bytes as u64)
        {
            return Err(too_large(size));
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(&e))?
        {
            if body.len() + chunk.len() > self.max_body_bytes {
                return Err(too_large((body.len() + chunk.len()) as u64));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    /// Sends `call` and returns the 2xx response with its body unread, for streams.
    /// Only opening the stream is bounded by the deadline, and only opening it holds a
    /// slot of `max_in_flight`: a progress stream lasts as long as its job, and one per
    /// watched job holding a slot for good would starve every other call.
    pub async fn open_stream(&self, call: &Call, ctx: &CallContext) -> Result<reqwest::Response> {
        self.with_retries(call, ctx, || self.send_once(call, ctx))
            .await
    }

    /// Runs `attempt` until it succeeds, fails for good, or the deadline passes.
    async fn with_retries<T, F, Fut>(
        &self,
        call: &Call,
        ctx: &CallContext,
        mut attempt: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let deadline = ctx.deadline.at();
        crate::access_log::note_upstream_call();
        let mut tries = 1;
        loop {
            if let Some(spend) = call.spend {
                let waiting = Instant::now();
                self.budgets
                    .spend(spend, &ctx.caller.tenant, deadline)
                    .await?;
                if self.budgets.keeps(spend) {
                    let budget = spend.as_str();
                    self.metrics
                        .budget_wait(self.id.provider, budget, waiting.elapsed());
                }
            }
            let span = attempt_span(
                &call.method,
                &self.base,
                self.id.provider,
                &call.segments,
                tries - 1,
            );
            let outcome = async {
                // The slot is taken per attempt, so a call waiting out a backoff holds none.
                let slot = match timeout_at(deadline, self.slots.acquire()).await {
                    Ok(Ok(slot)) => slot,
                    Ok(Err(_)) => {
                        return Err(Error::Internal(
                            "the upstream request slots were closed".into(),
                        ));
                    }
                    // Nothing was sent, so the outcome is known: no upstream to blame.
                    Err(_) => return Err(Error::DeadlineExceeded { upstream: None }),
                };
                let active = self.metrics.http_active(self.id.provider);
                let outcome = match timeout_at(deadline, attempt()).await {
                    Ok(outcome) => outcome,
                    // Dropping the attempt drops the upstream request with it.
                    Err(_) => Err(Error::DeadlineExceeded {
                        upstream: Some(self.id.clone()),
                    }),
                };
                drop((slot, active));
                outcome
            }
            .instrument(span.clone())
            .await;
            let error = match outcome {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            attempt_span::record_failure(&span, &error);
            let exhausted = tries >= self.retry.max_attempts && is_retryable(&error);
            span.in_scope(|| self.warn_on_failure(call, &error, tries, exhausted));
            if let Error::Upstream(failure) = &error
                && failure.status == 429
            {
                // The team's limit is spent: nobody's budgeted call goes until it is back.
                let wait = failure.retry_after.unwrap_or(Duration::from_secs(1));
                self.budgets.pause_for(wait).await;
            }
            if !call.idempotent || tries >= self.retry.max_attempts || !is_retryable(&error) {
                return Err(error);
            }
            let delay = retry_after(&error).unwrap_or_else(|| self.backoff(tries));
            if Instant::now()
                .checked_add(delay)
                .is_none_or(|at| at >= deadline)
            {
                return Err(error);
            }
            // An event on the failed attempt's span, which ends before the wait.
            span.in_scope(|| tracing::debug!(%error, ?delay, tries, "retrying upstream call"));
            drop(span);
            sleep(delay).await;
            tries += 1;
        }
    }

    /// A warning operators can act on: every 5xx answer, and every call whose
    /// retries ran out. Paths are templates, so no id (and never a key) is written.
    fn warn_on_failure(&self, call: &Call, error: &Error, tries: u32, exhausted: bool) {
        let status = match error {
            Error::Upstream(failure) => Some(failure.status),
            _ => None,
        };
        let path = attempt_span::path_template(&call.segments, "{id}");
        if status.is_some_and(|s| s >= 500) {
            tracing::warn!(
                upstream = self.id.provider,
                method = %call.method,
                path = %path,
                status,
                attempts = tries,
                "upstream answered with a server error"
            );
        } else if exhausted && tries > 1 {
            tracing::warn!(
                upstream = self.id.provider,
                method = %call.method,
                path = %path,
                status,
                attempts = tries,
                error = %error,
                "upstream retries exhausted"
            );
        }
    }

    /// Full-jitter exponential backoff for retry number `tries`.
    fn backoff(&self, tries: u32) -> Duration {
        let exp = self
            .retry
            .base_delay
            .saturating_mul(1u32 << tries.saturating_sub(1).min(16));
        let cap = exp.min(self.retry.max_delay);
        let millis = cap.as_millis().max(1) as u64;
        Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
    }

    /// One HTTP exchange; a non-2xx answer becomes an `Error::Upstream`.
    async fn send_once(&self, call: &Call, ctx: &CallContext) -> Result<reqwest::Response> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| Error::Internal("upstream base URL cannot have paths".into()))?
            .pop_if_empty()
            .extend(&call.segments);
        if !call.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&call.query);
        }
        attempt_span::record_url(&url);
        let mut headers = HeaderMap::new();
        let scheme = match self.scheme {
            AuthScheme::Key => "Key",
            AuthScheme::Bearer => "Bearer",
        };
        let mut auth = HeaderValue::from_str(&format!("{scheme} {}", ctx.caller.key.expose()))
            .map_err(|_| {
                Error::Unauthenticated("the API key contains characters HTTP cannot carry".into())
            })?;
        auth.set_sensitive(true);
        headers.insert(AUTHORIZATION, auth);
        if let Ok(id) = HeaderValue::from_str(&ctx.request_id) {
            headers.insert("x-request-id", id);
        }
        crate::telemetry::inject_trace_context(&mut headers);

        let mut request = self
            .client
            .request(call.method.clone(), url)
            .headers(headers);
        match &call.body {
            Some(CallBody::Json(body)) => request = request.json(body),
            Some(CallBody::Bytes(json)) => {
                request = request
                    .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                    .body(json.clone());
            }
            None => {}
        }
        let mut timer = AttemptTimer::start(&self.metrics, &self.id, call);
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                let kind = if error.is_connect() {
                    "connect"
                } else {
                    "transport"
                };
                timer.finish(HttpOutcome::Failed(kind));
                return Err(self.transport_error(&error));
            }
        };
        let status = response.status();
        timer.finish(HttpOutcome::Status(status.as_u16()));
        tracing::Span::current().record("http.response.status_code", status.as_u16());
        if status.is_success() {
            return Ok(response);
        }
        Err(self.failure(status, response, ctx).await)
    }

    async fn failure(
        &self,
        status: StatusCode,
        response: reqwest::Response,
        ctx: &CallContext,
    ) -> Error {
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(parse_retry_after);
        let request_id = upstream_request_id(response.headers(), ctx);
        let body = response.bytes().await.unwrap_or_default();
        let message = upstream_message(&body, status, &ctx.credentials());
        Error::Upstream(UpstreamFailure {
            upstream: self.id.clone(),
            status: status.as_u16(),
            message,
            retry_after,
            request_id,
            meaning: None,
        })
    }

    fn transport_error(&self, error: &reqwest::Error) -> Error {
        // reqwest's messages name the URL, never headers; strip the URL anyway.
        let detail = error.without_url_ref().to_string();
        Error::UpstreamUnreachable {
            upstream: self.id.clone(),
            detail,
            connected: !error.is_connect(),
        }
    }
}

trait WithoutUrlRef {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrlRef for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let mut text = self.to_string();
        if let Some(url) = self.url() {
            text = text.replace(url.as_str(), "<upstream>");
        }
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}

fn is_retryable(error: &Error) -> bool {
    match error {
        Error::Upstream(f) => matches!(f.status, 408 | 429 | 500 | 502 | 503 | 504 | 524),
        Error::UpstreamUnreachable { .. } => true,
        _ => false,
    }
}

fn retry_after(error: &Error) -> Option<Duration> {
    match error {
        Error::Upstream(f) => f.retry_after,
        _ => None,
    }
}

/// The upstream's `x-request-id`, when it may be relayed to the caller (see
/// [`relayable_id`]): it reaches both ErrorInfo and response metadata from here.
fn upstream_request_id(headers: &HeaderMap, ctx: &CallContext) -> Option<String> {
    let id = headers.get("x-request-id")?.to_str().ok()?;
    relayable_id(id, &ctx.credentials())
}

/// Longest `Retry-After` taken at its word; a larger one is read as this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// `Retry-After` as delay-seconds or an HTTP date in any of the three forms RFC 9110
/// §5.6.7 obliges a recipient to accept (IMF-fixdate, RFC 850, asctime), at most a day.
pub fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    let wait = if let Ok(secs) = text.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = httpdate::parse_http_date(text).ok()?;
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// What the caller is told of an upstream error body: its text, with every credential
/// of the call scrubbed out before it is shortened, so a key cut in half cannot slip through.
fn upstream_message(body: &[u8], status: StatusCode, credentials: &[&str]) -> String {
    shorten(scrub(&error_text(body, status), credentials), 1024)
}

/// The human text of an error body: FastAPI `detail` (string, list or object),
/// `message`, or `error` (string or `{message}`); else the body itself, shortened.
fn error_text(body: &[u8], status: StatusCode) -> String {
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(json) => ["detail", "message", "error"]
            .iter()
            .find_map(|key| json.get(key).map(describe_json))
            .unwrap_or_else(|| json.to_string()),
        Err(_) => String::from_utf8_lossy(body).trim().to_owned(),
    };
    if text.is_empty() {
        status.canonical_reason().unwrap_or("no message").to_owned()
    } else {
        text
    }
}

fn describe_json(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|item| match (item.get("loc"), item.get("msg")) {
                (Some(loc), Some(msg)) => format!("{loc}: {}", describe_json(msg)),
                _ => describe_json(item),
            })
            .collect::<Vec<_>>()
            .join("; "),
        serde_json::Value::Object(map) => map
            .get("message")
            .map(describe_json)
            .unwrap_or_else(|| value.to_string()),
        other => other.to_string(),
    }
}

fn shorten(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_reads_every_documented_shape() {
        let s = StatusCode::BAD_REQUEST;
        assert_eq!(
            error_text(br#"{"detail": "Job not found"}"#, s),
            "Job not found"
        );
        assert_eq!(error_text(br#"{"message": "gone"}"#, s), "gone");
        assert_eq!(
            error_text(br#"{"code": "Client specified an invalid argument", "error": "Incorrect API key"}"#, s),
            "Incorrect API key"
        );
        assert_eq!(
            error_text(br#"{"error": {"message": "nested"}}"#, s),
            "nested"
        );
        assert_eq!(
            error_text(
                br#"{"detail": [{"loc": ["body", "inputs"], "msg": "field required"}]}"#,
                s
            ),
            r#"["body","inputs"]: field required"#
        );
        assert_eq!(error_text(b"error code: 524", s), "error code: 524");
        assert_eq!(error_text(b"", StatusCode::BAD_GATEWAY), "Bad Gateway");
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("3")),
            Some(Duration::from_secs(3))
        );
        // RFC 9110 §5.6.7's example instant in each of its three forms.
        for past in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            let past = HeaderValue::from_str(past).unwrap();
            assert_eq!(parse_retry_after(&past), Some(Duration::ZERO), "{past:?}");
        }
        let soon = std::time::SystemTime::now() + Duration::from_secs(120);
        let rfc850 = chrono::DateTime::<chrono::Utc>::from(soon)
            .format("%A, %d-%b-%y %H:%M:%S GMT")
            .to_string();
        let wait = parse_retry_after(&HeaderValue::from_str(&rfc850).unwrap()).unwrap();
        assert!(
            wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
            "{wait:?}"
        );
        assert_eq!(parse_retry_after(&HeaderValue::from_static("soon")), None);
        let absurd = HeaderValue::from_static("10000000000000000000");
        assert_eq!(parse_retry_after(&absurd), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn echoed_keys_are_scrubbed() {
        assert_eq!(
            scrub("bad key sk_live_1234", &["sk_live_1234"]),
            "bad key ***"
        );
        // A key echoed across the length limit is scrubbed whole, not cut in half.
        let body = format!(r#"{{"detail": "{}sk_live_1234"}}"#, "x".repeat(1020));
        let message = upstream_message(body.as_bytes(), StatusCode::BAD_REQUEST, &["sk_live_1234"]);
        assert!(!message.contains("sk_l"), "{message}");
    }
}
