//! An in-process OTLP collector for tests: the gRPC `TraceService` and `MetricsService`,
//! or `POST /v1/traces` and `POST /v1/metrics` with protobuf bodies, keeping every span
//! and metric it is sent.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use batchgate::telemetry::{Export, Protocol, TelemetryGuard, TelemetrySettings};
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{Exemplar, Metric, metric::Data, number_data_point};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::net::TcpListener;

/// A span as received, with its resource's attributes.
#[derive(Debug, Clone)]
pub struct Received {
    pub span: Span,
    pub resource: Vec<KeyValue>,
}

impl Received {
    pub fn trace_id(&self) -> String {
        hex::encode(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex::encode(&self.span.span_id)
    }

    pub fn parent_id(&self) -> String {
        hex::encode(&self.span.parent_span_id)
    }

    /// The attribute `key`, rendered as text (`None` when absent).
    pub fn attr(&self, key: &str) -> Option<String> {
        attr(&self.span.attributes, key)
    }

    /// Whether the span's status is Error.
    pub fn is_error(&self) -> bool {
        self.span.status.as_ref().is_some_and(|s| s.code == 2)
    }

    /// The names of the span's events.
    pub fn events(&self) -> Vec<&str> {
        self.span.events.iter().map(|e| e.name.as_str()).collect()
    }

    /// Every attribute value of the span, its events and its links, as text.
    pub fn all_text(&self) -> String {
        let mut text = format!("{} ", self.span.name);
        let mut add = |attributes: &[KeyValue]| {
            for kv in attributes {
                text.push_str(&format!("{}={:?} ", kv.key, kv.value));
            }
        };
        add(&self.span.attributes);
        for event in &self.span.events {
            add(&event.attributes);
        }
        for link in &self.span.links {
            add(&link.attributes);
        }
        if let Some(status) = &self.span.status {
            text.push_str(&status.message);
        }
        text
    }
}

/// The attribute `key` of `attributes`, rendered as text.
pub fn attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    Some(render(value))
}

fn render(value: &AnyValue) -> String {
    match &value.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// What the collector has received.
#[derive(Clone, Default)]
pub struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

impl Collector {
    fn keep(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().unwrap_or_else(|p| p.into_inner());
        for resource_spans in request.resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| r.attributes)
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(Received {
                        span,
                        resource: resource.clone(),
                    });
                }
            }
        }
    }

    pub fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every metrics export received, in order.
    pub fn metric_exports(&self) -> Vec<ExportMetricsServiceRequest> {
        self.metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The metric `name` as last exported (cumulative: the latest is the total).
    pub fn last_metric(&self, name: &str) -> Option<Metric> {
        self.metric_exports()
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .rfind(|m| m.name == name)
            .cloned()
    }
}

/// One data point of a metric: its attributes, and its value (a sum's or gauge's
/// value, a histogram's count).
#[derive(Debug, Clone)]
pub struct Point {
    pub attributes: Vec<KeyValue>,
    pub value: f64,
}

impl Point {
    pub fn attr(&self, key: &str) -> Option<String> {
        attr(&self.attributes, key)
    }

    /// Whether every pair of `attributes` is among the point's.
    pub fn has(&self, attributes: &[(&str, &str)]) -> bool {
        attributes
            .iter()
            .all(|(k, v)| self.attr(k).as_deref() == Some(*v))
    }
}

/// The data points of `metric`.
pub fn points(metric: &Metric) -> Vec<Point> {
    let number = |value: &Option<number_data_point::Value>| match value {
        Some(number_data_point::Value::AsDouble(d)) => *d,
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        None => f64::NAN,
    };
    match &metric.data {
        Some(Data::Sum(sum)) => sum
            .data_points
            .iter()
            .map(|p| Point {
                attributes: p.attributes.clone(),
                value: number(&p.value),
            })
            .collect(),
        Some(Data::Gauge(gauge)) => gauge
            .data_points
            .iter()
            .map(|p| Point {
                attributes: p.attributes.clone(),
                value: number(&p.value),
            })
            .collect(),
        Some(Data::Histogram(histogram)) => histogram
            .data_points
            .iter()
            .map(|p| Point {
                attributes: p.attributes.clone(),
                value: p.count as f64,
            })
            .collect(),
        Some(Data::ExponentialHistogram(histogram)) => histogram
            .data_points
            .iter()
            .map(|p| Point {
                attributes: p.attributes.clone(),
                value: p.count as f64,
            })
            .collect(),
        Some(Data::Summary(summary)) => summary
            .data_points
            .iter()
            .map(|p| Point {
                attributes: p.attributes.clone(),
                value: p.count as f64,
            })
            .collect(),
        None => Vec::new(),
    }
}

/// Every attribute of an export, as `key=value` text: the resource's, the scope's, each
/// metric's metadata, and every data point's and exemplar's.
pub fn metric_attributes(request: &ExportMetricsServiceRequest) -> Vec<String> {
    let mut all = Vec::new();
    let mut add = |attributes: &[KeyValue]| {
        for kv in attributes {
            let value = kv.value.as_ref().map(render).unwrap_or_default();
            all.push(format!("{}={value}", kv.key));
        }
    };
    for resource_metrics in &request.resource_metrics {
        if let Some(resource) = &resource_metrics.resource {
            add(&resource.attributes);
        }
        for scope_metrics in &resource_metrics.scope_metrics {
            if let Some(scope) = &scope_metrics.scope {
                add(&scope.attributes);
            }
            for metric in &scope_metrics.metrics {
                add(&metric.metadata);
                let exemplars: Vec<&Exemplar> = match &metric.data {
                    Some(Data::Sum(sum)) => {
                        sum.data_points.iter().flat_map(|p| &p.exemplars).collect()
                    }
                    Some(Data::Gauge(gauge)) => gauge
                        .data_points
                        .iter()
                        .flat_map(|p| &p.exemplars)
                        .collect(),
                    Some(Data::Histogram(histogram)) => histogram
                        .data_points
                        .iter()
                        .flat_map(|p| &p.exemplars)
                        .collect(),
                    Some(Data::ExponentialHistogram(histogram)) => histogram
                        .data_points
                        .iter()
                        .flat_map(|p| &p.exemplars)
                        .collect(),
                    _ => Vec::new(),
                };
                for exemplar in exemplars {
                    add(&exemplar.filtered_attributes);
                }
                for point in points(metric) {
                    add(&point.attributes);
                }
            }
        }
    }
    all
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.keep(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

/// Starts a collector speaking `protocol`; answers it and its base URL.
pub async fn start(protocol: Protocol) -> (Collector, String) {
    let collector = Collector::default();
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    match protocol {
        Protocol::Grpc => {
            let traces = TraceServiceServer::new(collector.clone());
            let metrics = MetricsServiceServer::new(collector.clone());
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(traces)
                    .add_service(metrics)
                    .serve_with_incoming(incoming),
            );
        }
        Protocol::HttpProtobuf => {
            let (kept, metrics) = (collector.clone(), collector.clone());
            let app = axum::Router::new()
                .route(
                    "/v1/traces",
                    otlp_http(
                        move |request| kept.keep(request),
                        || ExportTraceServiceResponse {
                            partial_success: None,
                        },
                    ),
                )
                .route(
                    "/v1/metrics",
                    otlp_http(
                        move |request| {
                            metrics
                                .metrics
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(request)
                        },
                        || ExportMetricsServiceResponse {
                            partial_success: None,
                        },
                    ),
                );
            let listener = incoming.into_inner();
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
    }
    (collector, format!("http://{addr}"))
}

/// An OTLP/HTTP export route: a binary protobuf `Req` is handed to `keep` and answered
/// with `answer()`; anything else is a 400, as a collector answers it.
fn otlp_http<Req, Resp>(
    keep: impl Fn(Req) + Clone + Send + Sync + 'static,
    answer: fn() -> Resp,
) -> axum::routing::MethodRouter
where
    Req: Message + Default + 'static,
    Resp: Message + 'static,
{
    axum::routing::post(move |body: Bytes| {
        let keep = keep.clone();
        async move {
            match Req::decode(body) {
                Ok(request) => {
                    keep(request);
                    (
                        http::StatusCode::OK,
                        [("content-type", "application/x-protobuf")],
                        answer().encode_to_vec(),
                    )
                }
                Err(_) => (
                    http::StatusCode::BAD_REQUEST,
                    [("content-type", "text/plain")],
                    b"not an OTLP export request".to_vec(),
                ),
            }
        }
    })
}

/// A collector, and this process's telemetry exporting to it (once per process).
pub async fn export_to_collector(protocol: Protocol, rpc_dup: bool) -> (Collector, TelemetryGuard) {
    let (collector, endpoint) = start(protocol).await;
    let settings = TelemetrySettings {
        export: Some(Export {
            protocol,
            endpoint: Some(endpoint),
        }),
        rpc_dup,
        ..Default::default()
    };
    let guard = batchgate::telemetry::init_with(&settings).expect("telemetry");
    (collector, guard)
}

/// A collector speaking `protocol`, and telemetry settings read from `vars` (with the
/// collector's URL as `--otlp-endpoint`), installed as this process's (once per process).
pub async fn telemetry_to_collector(
    protocol: Protocol,
    vars: &[(&str, &str)],
) -> (Collector, TelemetrySettings, TelemetryGuard) {
    let (collector, endpoint) = start(protocol).await;
    let settings = TelemetrySettings::from_vars(Default::default(), Some(&endpoint), |name| {
        vars.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| (*value).to_owned())
    })
    .expect("valid telemetry settings");
    let guard = batchgate::telemetry::init_with(&settings).expect("telemetry");
    (collector, settings, guard)
}

/// The resource attribute `key` of every metrics export, in order.
pub fn metrics_resource_attr(collector: &Collector, key: &str) -> Vec<Option<String>> {
    collector
        .metric_exports()
        .iter()
        .flat_map(|r| &r.resource_metrics)
        .map(|r| r.resource.as_ref().and_then(|r| attr(&r.attributes, key)))
        .collect()
}

/// Flushes the exporter until `done` holds for what was received, or panics after 10 s.
pub async fn wait_for(
    guard: &TelemetryGuard,
    collector: &Collector,
    what: &str,
    done: impl Fn(&[Received]) -> bool,
) -> Vec<Received> {
    for _ in 0..100 {
        // Spans end a moment after the caller has its answer (the body's end).
        tokio::time::sleep(Duration::from_millis(100)).await;
        tokio::task::block_in_place(|| guard.flush()).expect("flush");
        let spans = collector.spans();
        if done(&spans) {
            return spans;
        }
    }
    let names: Vec<String> = collector
        .spans()
        .iter()
        .map(|s| s.span.name.clone())
        .collect();
    panic!("never received {what}; received {names:?}");
}
