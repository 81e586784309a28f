//! Logs and traces: the tracing subscriber (text or JSON), optional OTLP export, and
//! W3C trace-context propagation from gRPC metadata in and into upstream headers out.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

mod colour;
mod export;
pub mod rpc;
mod trace_ids;

pub use export::{Export, Protocol, TelemetrySettings, metric_exporter};
pub use trace_ids::JsonWithTraceIds;

/// Keeps the OTLP exporter alive; flushes pending spans when dropped.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Exports every span ended so far, waiting for the collector's answer. Blocks
    /// the thread: from async code, call it inside `block_in_place` or `spawn_blocking`.
    pub fn flush(&self) -> Result<(), String> {
        match &self.provider {
            Some(provider) => provider.force_flush().map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global subscriber, with settings from the `OTEL_*` variables and
/// `otlp_endpoint` as their shorthand. Log level comes from `RUST_LOG` (default `info`).
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> Result<TelemetryGuard, String> {
    init_with(&TelemetrySettings::from_env(format, otlp_endpoint)?)
}

/// Installs the global subscriber as `settings` say (once per process).
pub fn init_with(settings: &TelemetrySettings) -> Result<TelemetryGuard, String> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    rpc::set_conventions(settings.rpc_dup, settings.trace_health);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = match settings.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(colour::stdout_wants_colour())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .event_format(JsonWithTraceIds::new())
            .boxed(),
    };
    // The OpenTelemetry layer is installed even without an exporter: it is what gives
    // spans a trace context, so a caller's `traceparent` still reaches the upstreams.
    let provider = export::tracer_provider(settings.export.as_ref(), &settings.resource)?;
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("batchgate"));
    // `RUST_LOG` filters the log only: spans reach OpenTelemetry at `info` whatever the
    // log shows, and, when exported, so do the gateway's own `debug` events (cache,
    // limiter, retries), as events on the spans they happen in.
    let events = if settings.export.is_some() {
        Level::DEBUG
    } else {
        Level::INFO
    };
    let otel_filter = filter_fn(move |meta| {
        let level = *meta.level();
        level <= Level::INFO
            || (meta.is_event() && level <= events && meta.target().starts_with("batchgate"))
    });
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel.with_filter(otel_filter))
        .try_init()
        .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
    Ok(TelemetryGuard {
        provider: Some(provider),
    })
}

/// A span for work that outlives the call that started it (a cache refresh, a keyed
/// create, a watch poller): in the current span's trace, as its child, but not held
/// open by it, so the call's span ends when the call does.
pub fn detached_span(name: &'static str) -> tracing::Span {
    span_in_context(name, &current_context())
}

/// The OpenTelemetry context of the current span, to start detached work in later
/// (holding it, unlike the span, keeps nothing open).
pub fn current_context() -> opentelemetry::Context {
    tracing::Span::current().context()
}

/// A root `tracing` span whose OpenTelemetry parent is `parent` (see [`detached_span`]).
pub fn span_in_context(name: &'static str, parent: &opentelemetry::Context) -> tracing::Span {
    let span = tracing::info_span!(parent: None, "detached", otel.name = name);
    let _ = span.set_parent(parent.clone());
    span
}

/// Makes `span` a child of the W3C trace context in `headers`, if there is one.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    let context = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let _ = span.set_parent(context);
}

/// Writes the current span's W3C trace context into upstream request headers.
pub fn inject_trace_context(headers: &mut http::HeaderMap) {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
