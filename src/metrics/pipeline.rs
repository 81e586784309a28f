//! One gateway's meter provider: a Prometheus registry of its own (so gateways sharing a
//! process never mix their series), and an OTLP exporter when the telemetry settings
//! (the `OTEL_*` variables, `--otlp-endpoint`) ask for one.

use std::sync::{Arc, Mutex, PoisonError};

use opentelemetry::metrics::{MeterProvider as _, ObservableGauge};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use prometheus::{Encoder, Registry, TextEncoder};

use super::Metrics;
use crate::telemetry::{Export, TelemetrySettings, metric_exporter};

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
    /// A provider read by Prometheus scrapes and, when `settings.metrics_export` says so,
    /// pushed over OTLP (gRPC or HTTP), describing the gateway as `settings.resource`
    /// (the traces' resource). Must run inside a Tokio runtime when pushing over gRPC.
    pub fn start(settings: &TelemetrySettings) -> Result<MetricsPipeline, String> {
        let registry = Registry::new();
        let prometheus = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .build()
            .map_err(|e| format!("cannot build the Prometheus exporter: {e}"))?;
        let mut builder = SdkMeterProvider::builder()
            .with_resource(settings.resource.clone())
            .with_reader(prometheus);
        if let Some(export) = &settings.metrics_export {
            builder = builder.with_reader(otlp_reader(export)?);
        }
        let provider = builder.build();
        let metrics = Metrics::new(&provider.meter("batchgate"));
        Ok(MetricsPipeline {
            provider,
            registry,
            metrics,
            observed: Arc::default(),
            exports_otlp: settings.metrics_export.is_some(),
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

/// The periodic OTLP push of metrics `export` describes.
fn otlp_reader(
    export: &Export,
) -> Result<PeriodicReader<opentelemetry_otlp::MetricExporter>, String> {
    // Every 60 s unless OTEL_METRIC_EXPORT_INTERVAL says otherwise (the SDK reads it).
    Ok(PeriodicReader::builder(metric_exporter(export)?).build())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_otlp_endpoint_adds_a_pusher_that_stops_with_the_gateway() {
        // Nothing listens there: building never connects, and stopping stays bounded.
        let settings = TelemetrySettings {
            metrics_export: Some(Export {
                protocol: crate::telemetry::Protocol::Grpc,
                endpoint: Some("http://127.0.0.1:9".into()),
            }),
            ..Default::default()
        };
        let pipeline = MetricsPipeline::start(&settings).unwrap();
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
