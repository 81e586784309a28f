//! JSON log lines with the OpenTelemetry `trace_id` and `span_id` of the span they
//! are written in, so a log search and a trace search meet on the same call.

use std::fmt;

use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent};
use tracing_subscriber::registry::LookupSpan;

/// tracing-subscriber's JSON format, with the two ids added after the opening brace.
pub struct JsonWithTraceIds {
    inner: Format<Json>,
}

impl JsonWithTraceIds {
    /// One flattened JSON object per line, as before, plus the ids.
    pub fn new() -> Self {
        Self {
            inner: Format::default().json().flatten_event(true),
        }
    }
}

impl Default for JsonWithTraceIds {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> FormatEvent<S, JsonFields> for JsonWithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let ids = current_ids(ctx);
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match (ids, line.strip_prefix('{')) {
            (Some((trace_id, span_id)), Some(rest)) => {
                let sep = if rest.starts_with('}') { "" } else { "," };
                write!(
                    writer,
                    "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"{sep}{rest}"
                )
            }
            _ => writer.write_str(&line),
        }
    }
}

/// The ids of the innermost span around `event` that OpenTelemetry knows (spans
/// below its `info` filter have none, so their parent's are used).
fn current_ids<S>(ctx: &FmtContext<'_, S, JsonFields>) -> Option<(TraceId, SpanId)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let spans: Vec<tracing::span::Id> = ctx.event_scope()?.map(|span| span.id()).collect();
    tracing::dispatcher::get_default(|dispatch| {
        for id in &spans {
            // No span extensions are held here, as `get_otel_context` requires.
            let Some(context) = tracing_opentelemetry::get_otel_context(id, dispatch) else {
                continue;
            };
            let otel = context.span();
            let span_context = otel.span_context();
            if span_context.is_valid() {
                return Some((span_context.trace_id(), span_context.span_id()));
            }
        }
        None
    })
}
