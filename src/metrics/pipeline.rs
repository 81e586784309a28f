//! One gateway's meter provider: a Prometheus registry of its own (so gateways sharing a
//! process never mix their series), and an OTLP exporter when an endpoint is configured.

use std::sync::{Arc, Mutex, PoisonError};

use opentelemetry::metrics::{MeterProvider as _, ObservableGauge};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use prometheus::{Encoder, Registry, TextEncoder};

use super::Metrics;

/// The meter provider, registry and instruments of one gateway.
#[derive(Clone)]
pub struct MetricsPipeline {
    provider: SdkMeterProvider,
    registry: Registry,
    metrics: Metrics,
    /// Gauges read when scraped; held so their callbacks live as long as the gateway.
    observed: Arc<Mutex<Vec<ObservableGauge<i64>>>>,
    exports_otlp: bool,
}

impl MetricsPipeline {
    /// A provider read by Prometheus scrapes and, with `otlp_endpoint` (or the standard
    /// `OTEL_EXPORTER_OTLP_*ENDPOINT` variables), pushed over OTLP/gRPC. Must run inside
    /// a Tokio runtime when OTLP is on (the tonic exporter needs one).
    pub fn start(otlp_endpoint: Option<&str>) -> Result<MetricsPipeline, String> {
        let registry = Registry::new();
        let prometheus = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .build()
            .map_err(|e| format!("cannot build the Prometheus exporter: {e}"))?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("batchgate")
            .build();
        let mut builder = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(prometheus);
        let exports_otlp = otlp_endpoint.is_some() || otlp_env_is_set();
        if exports_otlp {
            builder = builder.with_reader(otlp_reader(otlp_endpoint)?);
        }
        let provider = builder.build();
        let metrics = Metrics::new(&provider.meter("batchgate"));
        Ok(MetricsPipeline {
            provider,
            registry,
            metrics,
            observed: Arc::default(),
            exports_otlp,
        })
    }

    /// The instruments, for the components to record on.
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// A gauge `name` read from `read` at each collection; `None` reports nothing.
    pub fn observe(
        &self,
        name: &'static str,
        unit: &'static str,
        description: &'static str,
        read: impl Fn() -> Option<i64> + Send + Sync + 'static,
    ) {
        let meter = self.provider.meter("batchgate");
        let mut builder = meter
            .i64_observable_gauge(name)
            .with_description(description)
            .with_callback(move |observer| {
                if let Some(value) = read() {
                    observer.observe(value, &[]);
                }
            });
        if !unit.is_empty() {
            builder = builder.with_unit(unit);
        }
        let gauge = builder.build();
        self.observed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(gauge);
    }

    /// Every series, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = Vec::new();
        // The text encoder only fails on a family it cannot write, which the exporter
        // never produces; an empty page is the honest answer if it ever does.
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut text) {
            tracing::warn!(%error, "cannot encode the metrics");
        }
        String::from_utf8(text).unwrap_or_default()
    }

    /// Pushes what is left over OTLP and stops. Blocking (the periodic reader's thread
    /// is joined), so it runs off the async workers.
    pub async fn shutdown(&self) {
        if !self.exports_otlp {
            return;
        }
        let provider = self.provider.clone();
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
}

/// True when the standard variables name an OTLP endpoint for metrics.
fn otlp_env_is_set() -> bool {
    [
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
}

/// The OTLP/gRPC push of metrics: to `endpoint`, or where the `OTEL_*` variables say.
fn otlp_reader(
    endpoint: Option<&str>,
) -> Result<PeriodicReader<opentelemetry_otlp::MetricExporter>, String> {
    use opentelemetry_otlp::WithExportConfig;
    let mut exporter = opentelemetry_otlp::MetricExporter::builder().with_tonic();
    if let Some(endpoint) = endpoint {
        exporter = exporter.with_endpoint(endpoint);
    }
    let exporter = exporter
        .build()
        .map_err(|e| format!("cannot build the OTLP metric exporter: {e}"))?;
    // Every 60 s unless OTEL_METRIC_EXPORT_INTERVAL says otherwise (the SDK reads it).
    Ok(PeriodicReader::builder(exporter).build())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_otlp_endpoint_adds_a_pusher_that_stops_with_the_gateway() {
        // Nothing listens there: building never connects, and stopping stays bounded.
        let pipeline = MetricsPipeline::start(Some("http://127.0.0.1:9")).unwrap();
        assert!(pipeline.exports_otlp);
        pipeline.metrics().refresh_coalesced();
        assert!(
            pipeline
                .render()
                .contains("batchgate_cache_refreshes_coalesced_total")
        );
        let stopped = tokio::time::timeout(Duration::from_secs(20), pipeline.shutdown()).await;
        assert!(stopped.is_ok(), "shutdown hangs");
    }
}
