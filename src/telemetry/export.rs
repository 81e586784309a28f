//! Where and how traces and metrics are exported: settings read from the standard
//! `OTEL_*` variables (or built by hand in tests), the resource both signals describe
//! the gateway with, and the tracer provider and metric exporter they make.

use opentelemetry::{Key, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::resource::TelemetryResourceDetector;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::config::LogFormat;

/// Everything `telemetry::init` and the metrics pipeline need, so tests can build it
/// without touching the process environment (one test's `set_var` would race every
/// other's). The one place the `OTEL_*` variables are read, except the sampler
/// (`OTEL_TRACES_SAMPLER(_ARG)`) and the batch and export intervals, which the SDK reads.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// Text or JSON logs.
    pub log_format: LogFormat,
    /// Where spans go; `None`: nowhere (trace context still flows to upstreams).
    pub export: Option<Export>,
    /// Where metrics are pushed; `None`: nowhere (Prometheus on the admin port still
    /// serves them).
    pub metrics_export: Option<Export>,
    /// What both signals say about the gateway: `service.name` (`OTEL_SERVICE_NAME`,
    /// else `batchgate`), `service.version`, `OTEL_RESOURCE_ATTRIBUTES`.
    pub resource: Resource,
    /// Whether RPC spans also carry the pre-1.40 experimental attribute names.
    pub rpc_dup: bool,
    /// Whether health checks and reflection get spans (`BATCHGATE_TRACE_HEALTH=true`).
    pub trace_health: bool,
}

impl Default for TelemetrySettings {
    /// Text logs, no export, the default resource.
    fn default() -> Self {
        Self {
            log_format: LogFormat::default(),
            export: None,
            metrics_export: None,
            resource: resource(|_| None),
            rpc_dup: false,
            trace_health: false,
        }
    }
}

/// An OTLP exporter, of spans or of metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// The wire protocol.
    pub protocol: Protocol,
    /// The collector's base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` means it (HTTP gets
    /// `/v1/traces` or `/v1/metrics` appended). `None`: the exporter reads the
    /// variables itself.
    pub endpoint: Option<String>,
}

/// `OTEL_EXPORTER_OTLP_PROTOCOL`'s values this build supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `grpc`: the default here, since `--otlp-endpoint` has always meant a gRPC port.
    Grpc,
    /// `http/protobuf`.
    HttpProtobuf,
}

impl TelemetrySettings {
    /// Settings from the process environment, with `otlp_endpoint` (the
    /// `--otlp-endpoint` flag) as a shorthand for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn from_env(log_format: LogFormat, otlp_endpoint: Option<&str>) -> Result<Self, String> {
        Self::from_vars(log_format, otlp_endpoint, |name| {
            std::env::var(name).ok().filter(|v| !v.trim().is_empty())
        })
    }

    /// [`Self::from_env`] over any source of variables.
    pub fn from_vars(
        log_format: LogFormat,
        otlp_endpoint: Option<&str>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        // Each signal: its own protocol and endpoint variables first, then the shared ones.
        let signal = |name: &str, exporters_on: bool| -> Result<Option<Export>, String> {
            let protocol = protocol(
                var(&format!("OTEL_EXPORTER_OTLP_{name}_PROTOCOL"))
                    .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL")),
            )?;
            let configured = otlp_endpoint.is_some()
                || var(&format!("OTEL_EXPORTER_OTLP_{name}_ENDPOINT")).is_some()
                || var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
            Ok((configured && exporters_on).then(|| Export {
                protocol,
                endpoint: otlp_endpoint.map(str::to_owned),
            }))
        };
        let traces_on = var("OTEL_TRACES_EXPORTER").is_none_or(|v| v.trim() != "none");
        let export = signal("TRACES", traces_on)?;
        let metrics_export = signal("METRICS", metrics_push(var("OTEL_METRICS_EXPORTER"))?)?;
        // A comma-separated list (https://opentelemetry.io/docs/specs/semconv/rpc/).
        let rpc_dup = var("OTEL_SEMCONV_STABILITY_OPT_IN")
            .is_some_and(|v| v.split(',').any(|part| part.trim() == "rpc/dup"));
        let trace_health = var("BATCHGATE_TRACE_HEALTH").is_some_and(|v| v.trim() == "true");
        Ok(Self {
            log_format,
            export,
            metrics_export,
            resource: resource(&var),
            rpc_dup,
            trace_health,
        })
    }
}

/// A protocol variable's value.
fn protocol(value: Option<String>) -> Result<Protocol, String> {
    match value.as_deref().map(str::trim) {
        None | Some("grpc") => Ok(Protocol::Grpc),
        Some("http/protobuf") => Ok(Protocol::HttpProtobuf),
        Some(other) => Err(format!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported: use grpc or http/protobuf"
        )),
    }
}

/// Whether `OTEL_METRICS_EXPORTER` (a comma-separated list, `otlp` when unset) asks
/// for the OTLP push. `prometheus` is always on here, on the admin port.
fn metrics_push(value: Option<String>) -> Result<bool, String> {
    let Some(value) = value else {
        return Ok(true);
    };
    let mut otlp = false;
    for exporter in value.split(',').map(str::trim) {
        match exporter {
            "otlp" => otlp = true,
            "prometheus" | "none" | "" => {}
            other => {
                return Err(format!(
                    "OTEL_METRICS_EXPORTER={other} is not supported: use otlp, prometheus or none"
                ));
            }
        }
    }
    Ok(otlp)
}

/// The tracer provider, describing the gateway as `resource`; its sampler from the
/// SDK's own reading of `OTEL_TRACES_SAMPLER(_ARG)`.
pub(super) fn tracer_provider(
    export: Option<&Export>,
    resource: &Resource,
) -> Result<SdkTracerProvider, String> {
    let mut provider = SdkTracerProvider::builder().with_resource(resource.clone());
    if let Some(export) = export {
        provider = provider.with_batch_exporter(span_exporter(export)?);
    }
    Ok(provider.build())
}

fn span_exporter(export: &Export) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let built = match export.protocol {
        Protocol::Grpc => {
            let builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            match &export.endpoint {
                Some(endpoint) => builder.with_endpoint(endpoint).build(),
                None => builder.build(),
            }
        }
        Protocol::HttpProtobuf => {
            // reqwest is built without a default TLS provider; the exporter's client is
            // a reqwest client too.
            crate::upstream::http::install_crypto_provider();
            let builder = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
            // The exporter takes a given endpoint as the full URL; the shorthand is a
            // base URL, as OTEL_EXPORTER_OTLP_ENDPOINT is.
            match &export.endpoint {
                Some(endpoint) => builder
                    .with_endpoint(signal_url(endpoint, "/v1/traces"))
                    .build(),
                None => builder.build(),
            }
        }
    };
    built.map_err(|e| format!("cannot build the OTLP exporter: {e}"))
}

/// The OTLP metric exporter `export` describes. Over gRPC it needs a Tokio runtime.
pub fn metric_exporter(export: &Export) -> Result<opentelemetry_otlp::MetricExporter, String> {
    let built = match export.protocol {
        Protocol::Grpc => {
            let builder = opentelemetry_otlp::MetricExporter::builder().with_tonic();
            match &export.endpoint {
                Some(endpoint) => builder.with_endpoint(endpoint).build(),
                None => builder.build(),
            }
        }
        Protocol::HttpProtobuf => {
            crate::upstream::http::install_crypto_provider();
            let builder = opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
            match &export.endpoint {
                Some(endpoint) => builder
                    .with_endpoint(signal_url(endpoint, "/v1/metrics"))
                    .build(),
                None => builder.build(),
            }
        }
    };
    built.map_err(|e| format!("cannot build the OTLP metric exporter: {e}"))
}

/// `base` with a signal's OTLP/HTTP path, unless it already ends with it.
fn signal_url(base: &str, path: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with(path) {
        base.to_owned()
    } else {
        format!("{base}{path}")
    }
}

/// `OTEL_RESOURCE_ATTRIBUTES` (`key=value,…`), then `service.name` from
/// `OTEL_SERVICE_NAME` or, failing both, `batchgate`, and `service.version` unless
/// given; with the SDK's `telemetry.sdk.*`.
fn resource(var: impl Fn(&str) -> Option<String>) -> Resource {
    let attributes: Vec<KeyValue> = var("OTEL_RESOURCE_ATTRIBUTES")
        .map(|list| {
            list.split(',')
                .filter_map(|entry| {
                    let (key, value) = entry.split_once('=')?;
                    let key = key.trim();
                    (!key.is_empty())
                        .then(|| KeyValue::new(key.to_owned(), value.trim().to_owned()))
                })
                .collect()
        })
        .unwrap_or_default();
    let given = |key: &str| {
        attributes
            .iter()
            .any(|kv| kv.key == Key::from(key.to_owned()))
    };
    let versioned = given("service.version");
    let listed_name = given("service.name");
    let mut builder = Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_attributes(attributes);
    match var("OTEL_SERVICE_NAME") {
        Some(name) => builder = builder.with_service_name(name.trim().to_owned()),
        None if !listed_name => builder = builder.with_service_name("batchgate"),
        None => {}
    }
    if !versioned {
        builder =
            builder.with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(flag: Option<&str>, vars: &[(&str, &str)]) -> Result<TelemetrySettings, String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        TelemetrySettings::from_vars(LogFormat::Text, flag, |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn export_follows_the_flag_or_the_otel_variables() {
        assert_eq!(settings(None, &[]).map(|s| s.export), Ok(None));
        let flag = settings(Some("http://c:4317"), &[]).expect("valid");
        assert_eq!(
            flag.export,
            Some(Export {
                protocol: Protocol::Grpc,
                endpoint: Some("http://c:4317".into())
            })
        );
        let env = settings(
            None,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ],
        )
        .expect("valid");
        assert_eq!(
            env.export,
            Some(Export {
                protocol: Protocol::HttpProtobuf,
                endpoint: None
            })
        );
        let off = settings(Some("http://c:4317"), &[("OTEL_TRACES_EXPORTER", "none")]);
        assert_eq!(off.map(|s| s.export), Ok(None));
        assert!(settings(None, &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).is_err());
    }

    #[test]
    fn rpc_dup_is_one_entry_of_the_opt_in_list() {
        let dup = settings(None, &[("OTEL_SEMCONV_STABILITY_OPT_IN", "http, rpc/dup")]);
        assert!(dup.expect("valid").rpc_dup);
        let other = settings(None, &[("OTEL_SEMCONV_STABILITY_OPT_IN", "rpc")]);
        assert!(!other.expect("valid").rpc_dup);
        assert!(!settings(None, &[]).expect("valid").trace_health);
        let health = settings(None, &[("BATCHGATE_TRACE_HEALTH", "true")]);
        assert!(health.expect("valid").trace_health);
    }

    #[test]
    fn the_http_shorthand_gets_the_signals_path() {
        let traces = |base| signal_url(base, "/v1/traces");
        assert_eq!(traces("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(traces("http://c:4318/v1/traces"), "http://c:4318/v1/traces");
        assert_eq!(
            signal_url("http://c:4318", "/v1/metrics"),
            "http://c:4318/v1/metrics"
        );
    }

    #[test]
    fn metrics_follow_the_same_variables_with_their_own_overrides() {
        let grpc = |endpoint: Option<&str>| Export {
            protocol: Protocol::Grpc,
            endpoint: endpoint.map(str::to_owned),
        };
        let flag = settings(Some("http://c:4317"), &[]).expect("valid");
        assert_eq!(flag.metrics_export, Some(grpc(Some("http://c:4317"))));
        assert_eq!(settings(None, &[]).expect("valid").metrics_export, None);
        // The shared protocol, and the metrics' own over it.
        let http = settings(
            Some("http://c:4318"),
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")],
        )
        .expect("valid");
        let over_http = Export {
            protocol: Protocol::HttpProtobuf,
            endpoint: Some("http://c:4318".into()),
        };
        assert_eq!(http.metrics_export, Some(over_http.clone()));
        assert_eq!(http.export, Some(over_http));
        let mixed = settings(
            Some("http://c:4317"),
            &[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc"),
            ],
        )
        .expect("valid");
        assert_eq!(mixed.metrics_export, Some(grpc(Some("http://c:4317"))));
        assert_eq!(
            mixed.export.map(|e| e.protocol),
            Some(Protocol::HttpProtobuf)
        );
        // Each signal's own endpoint turns on that signal only.
        let metrics_only = settings(
            None,
            &[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://c:4317")],
        )
        .expect("valid");
        assert_eq!(metrics_only.metrics_export, Some(grpc(None)));
        assert_eq!(metrics_only.export, None);
        // OTEL_METRICS_EXPORTER: none (or prometheus alone) stops the push, not traces.
        for value in ["none", "prometheus"] {
            let off = settings(Some("http://c:4317"), &[("OTEL_METRICS_EXPORTER", value)])
                .expect("valid");
            assert_eq!(off.metrics_export, None, "{value}");
            assert!(off.export.is_some(), "{value}");
        }
        let both = settings(
            Some("http://c:4317"),
            &[("OTEL_METRICS_EXPORTER", "prometheus, otlp")],
        );
        assert!(both.expect("valid").metrics_export.is_some());
        assert!(settings(None, &[("OTEL_METRICS_EXPORTER", "console")]).is_err());
        assert!(
            settings(
                None,
                &[("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/json")]
            )
            .is_err()
        );
    }

    #[test]
    fn one_resource_names_the_service() {
        let value = |s: &TelemetrySettings, key: &'static str| {
            s.resource
                .get(&Key::from_static_str(key))
                .map(|v| v.as_str().into_owned())
        };
        let plain = settings(None, &[]).expect("valid");
        assert_eq!(value(&plain, "service.name").as_deref(), Some("batchgate"));
        assert_eq!(
            value(&plain, "service.version").as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert!(value(&plain, "telemetry.sdk.name").is_some());
        assert_eq!(
            value(&TelemetrySettings::default(), "service.name").as_deref(),
            Some("batchgate")
        );
        let listed = settings(
            None,
            &[(
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=from-list, deployment.environment.name=staging,service.version=9",
            )],
        )
        .expect("valid");
        assert_eq!(value(&listed, "service.name").as_deref(), Some("from-list"));
        assert_eq!(
            value(&listed, "deployment.environment.name").as_deref(),
            Some("staging")
        );
        assert_eq!(value(&listed, "service.version").as_deref(), Some("9"));
        let named = settings(
            None,
            &[
                ("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-list"),
                ("OTEL_SERVICE_NAME", "from-name"),
            ],
        )
        .expect("valid");
        assert_eq!(value(&named, "service.name").as_deref(), Some("from-name"));
    }
}
