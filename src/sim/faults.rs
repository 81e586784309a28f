//! What goes wrong upstream, on purpose: injected statuses, slow answers and cut-off
//! streams (from flags, a test's rules or an `x-sim-fault` header), and call counting
//! (per route, and the peak of requests in flight per upstream).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::respond::Upstream;

/// The header a caller of the simulator sets to fault one request: `status=503`,
/// `status=429;retry-after=2` (with `;retry-after-form=rfc850`, `asctime` or `imf` for a
/// date), `delay-ms=3000`, `drop-after=2` (lines of the answer), or `reply=empty`,
/// `reply=object` or `reply=no-content` (the work is done, its answer has no body), or
/// `echo-key=1` (the caller's key comes back in `x-request-id`; with `status=`, in the
/// error's text too).
pub const FAULT_HEADER: &str = "x-sim-fault";

const DEFAULT_FAULT_STATUSES: [u16; 5] = [429, 500, 502, 503, 524];

/// Latency and random faults applied to every route of both halves.
#[derive(Debug, Clone, clap::Args)]
pub struct FaultConfig {
    /// Extra latency before every answer, in milliseconds.
    #[arg(long, env = "BATCHGATE_SIM_LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Share (0 to 1) of requests answered with a status from --fault-statuses.
    #[arg(long, env = "BATCHGATE_SIM_FAULT_SHARE", default_value_t = 0.0)]
    pub fault_share: f64,
    /// The statuses --fault-share picks from (429 and 503 carry Retry-After; 524 is
    /// Cloudflare's HTML timeout page).
    #[arg(long, env = "BATCHGATE_SIM_FAULT_STATUSES", value_delimiter = ',', default_values_t = DEFAULT_FAULT_STATUSES)]
    pub fault_statuses: Vec<u16>,
    /// Retry-After, in seconds, on injected 429 and 503 answers.
    #[arg(long, env = "BATCHGATE_SIM_RETRY_AFTER_SECS", default_value_t = 1)]
    pub retry_after_secs: u64,
    /// How Retry-After is written: delay-seconds, or a date in one of the three forms
    /// RFC 9110 §5.6.7 makes every recipient accept (imf, rfc850, asctime).
    #[arg(long, env = "BATCHGATE_SIM_RETRY_AFTER_FORM", value_enum, default_value_t = RetryAfterForm::Seconds)]
    pub retry_after_form: RetryAfterForm,
    /// Share (0 to 1) of requests answered only after --slow-ms.
    #[arg(long, env = "BATCHGATE_SIM_SLOW_SHARE", default_value_t = 0.0)]
    pub slow_share: f64,
    /// How late a slow answer is, in milliseconds.
    #[arg(long, env = "BATCHGATE_SIM_SLOW_MS", default_value_t = 5_000)]
    pub slow_ms: u64,
    /// Share (0 to 1) of answers cut off after --drop-after-lines lines (a progress
    /// stream that breaks, a body that ends early).
    #[arg(long, env = "BATCHGATE_SIM_DROP_SHARE", default_value_t = 0.0)]
    pub drop_share: f64,
    /// Lines sent before a dropped answer is cut off.
    #[arg(long, env = "BATCHGATE_SIM_DROP_AFTER_LINES", default_value_t = 3)]
    pub drop_after_lines: usize,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            fault_share: 0.0,
            fault_statuses: DEFAULT_FAULT_STATUSES.to_vec(),
            retry_after_secs: 1,
            retry_after_form: RetryAfterForm::Seconds,
            slow_share: 0.0,
            slow_ms: 5_000,
            drop_share: 0.0,
            drop_after_lines: 3,
        }
    }
}

/// How a `Retry-After` header is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RetryAfterForm {
    /// Delay-seconds: `2`.
    #[default]
    Seconds,
    /// IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
    Imf,
    /// The obsolete RFC 850 form: `Sunday, 06-Nov-94 08:49:37 GMT`.
    Rfc850,
    /// ANSI C's asctime() form: `Sun Nov  6 08:49:37 1994`.
    Asctime,
}

impl RetryAfterForm {
    fn parse(text: &str) -> Option<Self> {
        <Self as clap::ValueEnum>::from_str(text, true).ok()
    }

    /// The header value for a wait of `secs` from now.
    pub fn render(self, secs: u64) -> String {
        let at = chrono::Utc::now() + chrono::Duration::seconds(secs.min(1 << 32) as i64);
        let format = match self {
            Self::Seconds => return secs.to_string(),
            Self::Imf => "%a, %d %b %Y %H:%M:%S GMT",
            Self::Rfc850 => "%A, %d-%b-%y %H:%M:%S GMT",
            Self::Asctime => "%a %b %e %H:%M:%S %Y",
        };
        at.format(format).to_string()
    }
}

/// A 2xx answer with nothing in it, as HTTP and the APIs allow where no body is
/// documented or needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyReply {
    /// 200 with an empty body.
    Empty,
    /// 200 with `{}`.
    Object,
    /// 204 No Content.
    NoContent,
}

impl EmptyReply {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "empty" => Some(Self::Empty),
            "object" => Some(Self::Object),
            "no-content" => Some(Self::NoContent),
            _ => None,
        }
    }
}

/// One way a request fails.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer with this HTTP status (and `Retry-After`, if given) without doing the work.
    Status {
        code: u16,
        retry_after_secs: Option<u64>,
        retry_after_form: RetryAfterForm,
    },
    /// Do the work, then answer a success with no content (an error stays as it is).
    EmptyReply(EmptyReply),
    /// Answer late (a caller that gives up first is counted as dropped).
    Delay(Duration),
    /// Send the answer's first `after_lines` lines, then break the connection.
    DropStream { after_lines: usize },
    /// Reflect the caller's key into `x-request-id`, as a hostile upstream or proxy
    /// might; with a status, answer that error, its text quoting the key too.
    EchoKey { status: Option<u16> },
}

/// A fault for the next `times` requests on `route` (`"GET /v1/get-quotas"`, as in
/// [`super::SimHandle::calls`]; `"*"` matches every route).
#[derive(Debug, Clone)]
pub struct FaultRule {
    pub route: String,
    pub times: u32,
    pub fault: Fault,
}

/// Call counts and pending fault rules, shared by every request.
pub struct Faults {
    config: FaultConfig,
    state: Mutex<Counters>,
}

#[derive(Default)]
struct Counters {
    calls: HashMap<String, u64>,
    dropped: HashMap<String, u64>,
    /// The headers of each route's latest request, less `authorization`.
    last_headers: HashMap<String, HeaderMap>,
    /// Requests being answered now, and the most there ever were, per upstream.
    in_flight: HashMap<Upstream, (u64, u64)>,
    rules: Vec<FaultRule>,
}

impl Faults {
    pub fn new(config: FaultConfig) -> Self {
        Self {
            config,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counters> {
        // A panicking test thread must not take the simulator down with it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn calls(&self, route: &str) -> u64 {
        self.lock().calls.get(route).copied().unwrap_or(0)
    }

    pub fn dropped(&self, route: &str) -> u64 {
        self.lock().dropped.get(route).copied().unwrap_or(0)
    }

    pub fn total_calls(&self) -> u64 {
        self.lock().calls.values().sum()
    }

    pub fn peak_in_flight(&self, upstream: Upstream) -> u64 {
        self.lock()
            .in_flight
            .get(&upstream)
            .map_or(0, |&(_, peak)| peak)
    }

    fn enter(&self, upstream: Upstream) {
        let mut state = self.lock();
        let (now, peak) = state.in_flight.entry(upstream).or_default();
        *now += 1;
        *peak = (*peak).max(*now);
    }

    fn leave(&self, upstream: Upstream) {
        if let Some((now, _)) = self.lock().in_flight.get_mut(&upstream) {
            *now = now.saturating_sub(1);
        }
    }

    pub fn last_header(&self, route: &str, name: &str) -> Option<String> {
        let state = self.lock();
        let value = state.last_headers.get(route)?.get(name)?;
        value.to_str().ok().map(str::to_owned)
    }

    pub fn inject(&self, rule: FaultRule) {
        self.lock().rules.push(rule);
    }

    /// Counts the call and decides its fault: the request's header first, then the
    /// injected rules (in order), then the configured random shares.
    fn admit(&self, route: &str, headers: &HeaderMap) -> Option<Fault> {
        let mut state = self.lock();
        *state.calls.entry(route.to_owned()).or_default() += 1;
        let mut kept = headers.clone();
        kept.remove(header::AUTHORIZATION);
        state.last_headers.insert(route.to_owned(), kept);
        if let Some(fault) = headers
            .get(FAULT_HEADER)
            .and_then(|v| parse_fault_header(v.to_str().ok()?))
        {
            return Some(fault);
        }
        if let Some(rule) = state
            .rules
            .iter_mut()
            .find(|r| r.times > 0 && (r.route == route || r.route == "*"))
        {
            rule.times -= 1;
            return Some(rule.fault.clone());
        }
        drop(state);
        self.random_fault()
    }

    fn random_fault(&self) -> Option<Fault> {
        let c = &self.config;
        if c.fault_share > 0.0
            && rand::random::<f64>() < c.fault_share
            && !c.fault_statuses.is_empty()
        {
            let code = c.fault_statuses[rand::random_range(0..c.fault_statuses.len())];
            let retry_after_secs = matches!(code, 429 | 503).then_some(c.retry_after_secs);
            return Some(Fault::Status {
                code,
                retry_after_secs,
                retry_after_form: c.retry_after_form,
            });
        }
        if c.slow_share > 0.0 && rand::random::<f64>() < c.slow_share {
            return Some(Fault::Delay(Duration::from_millis(c.slow_ms)));
        }
        if c.drop_share > 0.0 && rand::random::<f64>() < c.drop_share {
            return Some(Fault::DropStream {
                after_lines: c.drop_after_lines,
            });
        }
        None
    }

    fn count_dropped(&self, route: &str) {
        *self.lock().dropped.entry(route.to_owned()).or_default() += 1;
    }
}

/// Parses the `x-sim-fault` header; `None` (no fault) for anything it cannot read.
pub fn parse_fault_header(text: &str) -> Option<Fault> {
    let mut status = None;
    let mut retry_after_secs = None;
    let mut retry_after_form = RetryAfterForm::Seconds;
    let mut fault = None;
    let mut echo_key = false;
    for part in text.split([';', ',']) {
        let (key, value) = part.split_once('=')?;
        let value = value.trim();
        match key.trim() {
            "status" => status = value.parse().ok(),
            "retry-after" => retry_after_secs = value.parse().ok(),
            "retry-after-form" => retry_after_form = RetryAfterForm::parse(value)?,
            "reply" => fault = Some(Fault::EmptyReply(EmptyReply::parse(value)?)),
            "delay-ms" => fault = Some(Fault::Delay(Duration::from_millis(value.parse().ok()?))),
            "echo-key" => echo_key = value == "1" || value == "true",
            "drop-after" => {
                fault = Some(Fault::DropStream {
                    after_lines: value.parse().ok()?,
                })
            }
            _ => return None,
        }
    }
    if echo_key {
        return Some(Fault::EchoKey { status });
    }
    status
        .map(|code| Fault::Status {
            code,
            retry_after_secs,
            retry_after_form,
        })
        .or(fault)
}

/// The middleware around every route: counts, faults, latency, and noticing callers
/// that hang up before their answer is ready.
pub async fn apply(State(faults): State<Arc<Faults>>, request: Request, next: Next) -> Response {
    let route = route_label(&request);
    let upstream = Upstream::of_path(request.uri().path());
    let fault = faults.admit(&route, request.headers());
    // The key as sent, after its scheme word (`Key`, `Bearer`).
    let key = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_whitespace().last())
        .unwrap_or_default()
        .to_owned();
    let mut echoed = None;
    faults.enter(upstream);
    let mut pending = PendingCall {
        faults: &faults,
        route: &route,
        upstream,
        answered: false,
    };
    if faults.config.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.config.latency_ms)).await;
    }
    let mut response = match fault {
        Some(Fault::Status {
            code,
            retry_after_secs,
            retry_after_form,
        }) => status_answer(
            upstream,
            code,
            retry_after_secs.map(|secs| retry_after_form.render(secs)),
        ),
        Some(Fault::EmptyReply(reply)) => empty_success(next.run(request).await, reply),
        Some(Fault::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            next.run(request).await
        }
        Some(Fault::DropStream { after_lines }) => {
            cut_after_lines(next.run(request).await, after_lines)
        }
        Some(Fault::EchoKey { status }) => {
            echoed = Some(key.clone());
            match status {
                Some(code) => upstream.error(
                    StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
                    format!("the key {key} may not do this"),
                ),
                None => next.run(request).await,
            }
        }
        None => next.run(request).await,
    };
    pending.answered = true;
    if upstream == Upstream::Xai {
        // xAI names every answer, errors included; clients quote it in bug reports.
        let id = format!("req_{}", uuid::Uuid::new_v4().simple());
        if let Ok(value) = HeaderValue::from_str(&id) {
            response.headers_mut().insert("x-request-id", value);
        }
    }
    if let Some(value) = echoed.and_then(|key| HeaderValue::from_str(&key).ok()) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// Counts a call in flight until its answer's head is ready (a streamed body is not
/// counted after that), and as dropped if its future is dropped before it answered.
struct PendingCall<'a> {
    faults: &'a Faults,
    route: &'a str,
    upstream: Upstream,
    answered: bool,
}

impl Drop for PendingCall<'_> {
    fn drop(&mut self) {
        self.faults.leave(self.upstream);
        if !self.answered {
            self.faults.count_dropped(self.route);
        }
    }
}

/// `"METHOD /matched/{template}"`, keeping a custom-method suffix such as `:cancel`.
fn route_label(request: &Request) -> String {
    let path = request.uri().path();
    let Some(matched) = request.extensions().get::<MatchedPath>() else {
        return format!("{} {path}", request.method());
    };
    let matched = matched.as_str();
    let suffix = match (path.rsplit('/').next(), matched.ends_with('}')) {
        (Some(last), true) => last.find(':').map(|i| &last[i..]).unwrap_or(""),
        _ => "",
    };
    format!("{} {matched}{suffix}", request.method())
}

fn status_answer(upstream: Upstream, code: u16, retry_after: Option<String>) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = if code == 524 {
        // Cloudflare answers an origin timeout itself, with an HTML page.
        let page = "<!DOCTYPE html><html><head><title>A timeout occurred</title></head>\
                    <body><h1>Error code 524</h1><p>A timeout occurred.</p></body></html>";
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=UTF-8")],
            page,
        )
            .into_response()
    } else {
        upstream.error(status, format!("simulated fault: HTTP {code}"))
    };
    if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// A success with its body taken out (an error answer passes unchanged).
fn empty_success(response: Response, reply: EmptyReply) -> Response {
    if !response.status().is_success() {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = match reply {
        EmptyReply::Empty => Body::empty(),
        EmptyReply::Object => Body::from("{}"),
        EmptyReply::NoContent => {
            parts.status = StatusCode::NO_CONTENT;
            parts.headers.remove(header::CONTENT_TYPE);
            Body::empty()
        }
    };
    Response::from_parts(parts, body)
}

/// Passes the first `lines` lines of the body, then breaks the connection.
fn cut_after_lines(response: Response, lines: usize) -> Response {
    let (parts, body) = response.into_parts();
    let mut upstream = body.into_data_stream();
    let cut = async_stream::stream! {
        let mut remaining = lines;
        while remaining > 0 {
            let Some(chunk) = upstream.next().await else { return };
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => {
                    yield Err(std::io::Error::other(error));
                    return;
                }
            };
            let mut end = chunk.len();
            for (i, byte) in chunk.iter().enumerate() {
                if *byte == b'\n' {
                    remaining -= 1;
                    if remaining == 0 {
                        end = i + 1;
                        break;
                    }
                }
            }
            yield Ok(chunk.slice(..end));
        }
        yield Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "simulated dropped stream"));
    };
    Response::from_parts(parts, Body::from_stream(cut))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_dates_come_in_each_form_and_read_back() {
        for form in [
            RetryAfterForm::Imf,
            RetryAfterForm::Rfc850,
            RetryAfterForm::Asctime,
        ] {
            let text = form.render(120);
            let at = httpdate::parse_http_date(&text).unwrap();
            let wait = at.duration_since(std::time::SystemTime::now()).unwrap();
            assert!(
                wait.as_secs() >= 100 && wait.as_secs() <= 120,
                "{form:?}: {text}"
            );
        }
        assert!(RetryAfterForm::Rfc850.render(0).contains('-'));
        assert_eq!(RetryAfterForm::Seconds.render(7), "7");
    }

    #[test]
    fn the_fault_header_reads_each_form() {
        assert_eq!(
            parse_fault_header("status=503"),
            Some(Fault::Status {
                code: 503,
                retry_after_secs: None,
                retry_after_form: RetryAfterForm::Seconds,
            })
        );
        assert_eq!(
            parse_fault_header("status=429; retry-after=2"),
            Some(Fault::Status {
                code: 429,
                retry_after_secs: Some(2),
                retry_after_form: RetryAfterForm::Seconds,
            })
        );
        assert_eq!(
            parse_fault_header("delay-ms=250"),
            Some(Fault::Delay(Duration::from_millis(250)))
        );
        assert_eq!(
            parse_fault_header("status=400;echo-key=1"),
            Some(Fault::EchoKey { status: Some(400) })
        );
        assert_eq!(
            parse_fault_header("echo-key=1"),
            Some(Fault::EchoKey { status: None })
        );
        assert_eq!(
            parse_fault_header("drop-after=2"),
            Some(Fault::DropStream { after_lines: 2 })
        );
        assert_eq!(
            parse_fault_header("status=429;retry-after=5;retry-after-form=rfc850"),
            Some(Fault::Status {
                code: 429,
                retry_after_secs: Some(5),
                retry_after_form: RetryAfterForm::Rfc850,
            })
        );
        assert_eq!(
            parse_fault_header("reply=no-content"),
            Some(Fault::EmptyReply(EmptyReply::NoContent))
        );
        assert_eq!(parse_fault_header("reply=maybe"), None);
        assert_eq!(parse_fault_header("nonsense"), None);
        assert_eq!(parse_fault_header("status=abc"), None);
    }
}
