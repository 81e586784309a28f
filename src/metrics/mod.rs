//! The gateway's metrics: one `Metrics` handle of OpenTelemetry instruments, made per
//! gateway from its own meter provider, with one-line recording methods for each component.

mod admin;
mod labels;
mod pipeline;

pub use admin::{AdminState, serve_admin};
pub use labels::{code_name, tenant_class};
pub use pipeline::MetricsPipeline;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, MeterProvider as _, UpDownCounter};
use tonic::Code;

use crate::cache::Outcome;

/// Seconds buckets for call and wait durations: OpenTelemetry's recommended HTTP and RPC
/// boundaries (the SDK's default ones are for milliseconds), plus 30 s and 60 s for
/// creates and long upstream reads.
const SECONDS_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0,
];

/// The instruments of one gateway. Cheap to clone; every component that records holds one.
/// [`Metrics::disabled`] records nothing, for components built outside a gateway (tests).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Instruments>,
}

struct Instruments {
    rpc_duration: Histogram<f64>,
    http_duration: Histogram<f64>,
    http_active: UpDownCounter<i64>,
    keyed_creates: Counter<u64>,
    cache_lookups: Counter<u64>,
    cache_coalesced: Counter<u64>,
    watchers_open: UpDownCounter<i64>,
    upstream_watchers: UpDownCounter<i64>,
    leases_taken: Counter<u64>,
    limiter_decisions: Counter<u64>,
    budget_wait: Histogram<f64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::disabled()
    }
}

/// What one upstream HTTP attempt came to, for `http.client.request.duration`.
#[derive(Debug, Clone, Copy)]
pub enum HttpOutcome {
    /// The upstream answered with this status.
    Status(u16),
    /// No answer: `error.type` names why (`connect`, `transport`, `timeout`).
    Failed(&'static str),
}

impl Metrics {
    /// The instruments of `meter` (the gateway's own provider's).
    pub fn new(meter: &Meter) -> Metrics {
        let seconds = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(SECONDS_BUCKETS.to_vec())
                .build()
        };
        let counter = |name: &'static str, description: &'static str| {
            meter
                .u64_counter(name)
                .with_description(description)
                .build()
        };
        let gauge = |name: &'static str, description: &'static str| {
            meter
                .i64_up_down_counter(name)
                .with_description(description)
                .build()
        };
        let metrics = Metrics {
            inner: Arc::new(Instruments {
                rpc_duration: seconds(
                    "rpc.server.call.duration",
                    "Duration of RPCs served, to the end of the response stream",
                ),
                http_duration: seconds(
                    "http.client.request.duration",
                    "Duration of each upstream HTTP attempt, to its response headers",
                ),
                http_active: meter
                    .i64_up_down_counter("http.client.active_requests")
                    .with_unit("{request}")
                    .with_description("Upstream HTTP attempts waiting for their response headers")
                    .build(),
                keyed_creates: counter(
                    "batchgate.idempotency.creates",
                    "Creates with a request_id, by outcome: created, replayed, failed",
                ),
                cache_lookups: counter(
                    "batchgate.cache.lookups",
                    "Status cache lookups by result (hit, miss, stale)",
                ),
                cache_coalesced: counter(
                    "batchgate.cache.refreshes.coalesced",
                    "Lookups that joined an upstream refresh already in flight instead of starting one",
                ),
                watchers_open: gauge(
                    "batchgate.watch.watchers",
                    "Watch streams open on this replica",
                ),
                upstream_watchers: gauge(
                    "batchgate.watch.upstream_watchers",
                    "Upstream pollers this replica runs (one per watched resource it follows)",
                ),
                leases_taken: counter(
                    "batchgate.watch.leases.taken",
                    "Watch leases this replica took: a resource nobody polled, or a lapsed holder's",
                ),
                limiter_decisions: counter(
                    "batchgate.ratelimit.decisions",
                    "Caller rate-limit decisions by tenant class, method class and outcome",
                ),
                budget_wait: seconds(
                    "batchgate.upstream.budget.wait",
                    "Time a call waited for a slot of an upstream's team-wide budget",
                ),
            }),
        };
        // Series without labels start at 0, so a rate over them works before the first event.
        metrics.inner.cache_coalesced.add(0, &[]);
        metrics.inner.leases_taken.add(0, &[]);
        metrics
    }

    /// Instruments that record nothing (a no-op meter), shared by every caller.
    pub fn disabled() -> Metrics {
        static DISABLED: OnceLock<Metrics> = OnceLock::new();
        DISABLED
            .get_or_init(|| {
                let provider = opentelemetry::metrics::noop::NoopMeterProvider::new();
                Metrics::new(&provider.meter("batchgate"))
            })
            .clone()
    }

    /// One RPC ended with `code` after `elapsed`. `method` is the gRPC path without its
    /// leading slash. An UNIMPLEMENTED call is `_OTHER`, as the conventions name unknown
    /// methods, so a scanner cannot grow the label set (an upstream 501, also mapped to
    /// UNIMPLEMENTED, loses its method name too: rare, and the cheaper mistake).
    pub fn rpc_call(&self, method: &str, code: Code, elapsed: Duration) {
        let method = if code == Code::Unimplemented {
            "_OTHER"
        } else {
            method
        };
        self.inner.rpc_duration.record(
            elapsed.as_secs_f64(),
            &[
                KeyValue::new("rpc.system.name", "grpc"),
                KeyValue::new("rpc.method", method.to_owned()),
                KeyValue::new("rpc.response.status_code", code_name(code)),
            ],
        );
    }

    /// One upstream HTTP attempt of `upstream` (its provider) at `host`; `route` is the
    /// path template (ids written `{id}`), never the path itself.
    pub fn http_attempt(
        &self,
        upstream: &'static str,
        host: &str,
        method: &http::Method,
        route: String,
        outcome: HttpOutcome,
        elapsed: Duration,
    ) {
        let mut attributes = vec![
            KeyValue::new("batchgate.upstream", upstream),
            KeyValue::new("server.address", host.to_owned()),
            KeyValue::new("http.request.method", method.as_str().to_owned()),
            KeyValue::new("http.route", route),
        ];
        match outcome {
            HttpOutcome::Status(status) => {
                attributes.push(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                ));
                if status >= 400 {
                    // The conventions' error.type for an HTTP error is the status code.
                    attributes.push(KeyValue::new("error.type", status.to_string()));
                }
            }
            HttpOutcome::Failed(kind) => attributes.push(KeyValue::new("error.type", kind)),
        }
        self.inner
            .http_duration
            .record(elapsed.as_secs_f64(), &attributes);
    }

    /// An upstream attempt of `upstream` is out; it counts until the guard drops.
    pub fn http_active(&self, upstream: &'static str) -> GaugeGuard {
        GaugeGuard::new(&self.inner.http_active, upstream)
    }

    /// A create with a `request_id` ended: `created` upstream, `replayed` (an earlier
    /// call's resource), or `failed`.
    pub fn keyed_create(&self, outcome: &'static str) {
        self.inner.keyed_creates.add(
            1,
            &[KeyValue::new("batchgate.idempotency.outcome", outcome)],
        );
    }

    /// One status cache lookup answered as `outcome`.
    pub fn cache_lookup(&self, outcome: Outcome) {
        let result = match outcome {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Stale => "stale",
        };
        self.inner
            .cache_lookups
            .add(1, &[KeyValue::new("batchgate.cache.result", result)]);
    }

    /// A lookup joined a refresh in flight.
    pub fn refresh_coalesced(&self) {
        self.inner.cache_coalesced.add(1, &[]);
    }

    /// A watch stream opened on `upstream`; it counts as open until the guard drops.
    pub fn watcher_opened(&self, upstream: &'static str) -> GaugeGuard {
        GaugeGuard::new(&self.inner.watchers_open, upstream)
    }

    /// An upstream poller of `upstream` started; it counts until the guard drops.
    pub fn upstream_watcher_started(&self, upstream: &'static str) -> GaugeGuard {
        GaugeGuard::new(&self.inner.upstream_watchers, upstream)
    }

    /// This replica took a watch lease.
    pub fn lease_taken(&self) {
        self.inner.leases_taken.add(1, &[]);
    }

    /// The rate limiter decided on a call of a tenant of class `tenant_class` (see
    /// [`tenant_class`]) in method class `class` (`create`, `read`…): `outcome` is
    /// `admitted`, `rejected` or `stream_cap`.
    pub fn limiter_decision(
        &self,
        tenant_class: &'static str,
        class: &'static str,
        outcome: &'static str,
    ) {
        self.inner.limiter_decisions.add(
            1,
            &[
                KeyValue::new("batchgate.tenant.class", tenant_class),
                KeyValue::new("batchgate.ratelimit.class", class),
                KeyValue::new("batchgate.ratelimit.outcome", outcome),
            ],
        );
    }

    /// A call waited `waited` for a slot of `upstream`'s `budget` (`create`, `add`).
    pub fn budget_wait(&self, upstream: &'static str, budget: &'static str, waited: Duration) {
        self.inner.budget_wait.record(
            waited.as_secs_f64(),
            &[
                KeyValue::new("batchgate.upstream", upstream),
                KeyValue::new("batchgate.budget", budget),
            ],
        );
    }
}

/// Counts one open thing (a watch stream, a poller) until dropped.
#[must_use = "the count goes back down when the guard drops"]
pub struct GaugeGuard {
    counter: UpDownCounter<i64>,
    attributes: [KeyValue; 1],
}

impl GaugeGuard {
    fn new(counter: &UpDownCounter<i64>, upstream: &'static str) -> GaugeGuard {
        let attributes = [KeyValue::new("batchgate.upstream", upstream)];
        counter.add(1, &attributes);
        GaugeGuard {
            counter: counter.clone(),
            attributes,
        }
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.counter.add(-1, &self.attributes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_units_come_out_as_prometheus_expects() {
        let pipeline = MetricsPipeline::start(&Default::default()).unwrap();
        let metrics = pipeline.metrics();
        metrics.rpc_call(
            "batchgate.sutro.v1.JobService/GetJob",
            Code::NotFound,
            Duration::from_millis(3),
        );
        metrics.rpc_call("no.Such/Thing", Code::Unimplemented, Duration::ZERO);
        metrics.cache_lookup(Outcome::Stale);
        let open = metrics.watcher_opened("sutro");
        let text = pipeline.render();
        assert!(
            text.contains("rpc_server_call_duration_seconds_bucket{"),
            "{text}"
        );
        assert!(text.contains("rpc_method=\"_OTHER\""), "{text}");
        assert!(
            text.contains("rpc_response_status_code=\"NOT_FOUND\""),
            "{text}"
        );
        assert!(
            text.contains("batchgate_cache_lookups_total{batchgate_cache_result=\"stale\""),
            "{text}"
        );
        assert!(text.contains("batchgate_watch_watchers{"), "{text}");
        drop(open);
        assert!(
            pipeline
                .render()
                .lines()
                .any(|l| l.starts_with("batchgate_watch_watchers{") && l.ends_with(" 0")),
            "a closed watcher counts no more"
        );
        // Disabled instruments take the same calls and keep nothing.
        Metrics::disabled().cache_lookup(Outcome::Hit);
    }
}
