//! Where and how traces are exported: settings read from the standard `OTEL_*`
//! variables (or built by hand in tests), and the tracer provider they make.

use opentelemetry::{Key, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::config::LogFormat;

/// Everything `telemetry::init` needs, so tests can build it without touching the
/// process environment (one test's `set_var` would race every other's).
#[derive(Debug, Clone, Default)]
pub struct TelemetrySettings {
    /// Text or JSON logs.
    pub log_format: LogFormat,
    /// Where spans go; `None`: nowhere (trace context still flows to upstreams).
    pub export: Option<Export>,
    /// Whether RPC spans also carry the pre-1.40 experimental attribute names.
    pub rpc_dup: bool,
    /// Whether health checks and reflection get spans (`BATCHGATE_TRACE_HEALTH=true`).
    pub trace_health: bool,
}

/// An OTLP trace exporter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// The wire protocol.
    pub protocol: Protocol,
    /// The collector's base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` means it (HTTP gets
    /// `/v1/traces` appended). `None`: the exporter reads the variables itself.
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
        let protocol = match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .as_deref()
            .map(str::trim)
        {
            None | Some("grpc") => Protocol::Grpc,
            Some("http/protobuf") => Protocol::HttpProtobuf,
            Some(other) => {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported: use grpc or http/protobuf"
                ));
            }
        };
        let disabled = var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none");
        let configured = otlp_endpoint.is_some()
            || var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
            || var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
        let export = (configured && !disabled).then(|| Export {
            protocol,
            endpoint: otlp_endpoint.map(str::to_owned),
        });
        // A comma-separated list (https://opentelemetry.io/docs/specs/semconv/rpc/).
        let rpc_dup = var("OTEL_SEMCONV_STABILITY_OPT_IN")
            .is_some_and(|v| v.split(',').any(|part| part.trim() == "rpc/dup"));
        let trace_health = var("BATCHGATE_TRACE_HEALTH").is_some_and(|v| v.trim() == "true");
        Ok(Self {
            log_format,
            export,
            rpc_dup,
            trace_health,
        })
    }
}

/// The tracer provider: resource and sampler from the SDK's own reading of
/// `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_TRACES_SAMPLER(_ARG)`.
pub(super) fn tracer_provider(export: Option<&Export>) -> Result<SdkTracerProvider, String> {
    let mut provider = SdkTracerProvider::builder().with_resource(resource());
    if let Some(export) = export {
        provider = provider.with_batch_exporter(exporter(export)?);
    }
    Ok(provider.build())
}

fn exporter(export: &Export) -> Result<opentelemetry_otlp::SpanExporter, String> {
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
                Some(endpoint) => builder.with_endpoint(traces_url(endpoint)).build(),
                None => builder.build(),
            }
        }
    };
    built.map_err(|e| format!("cannot build the OTLP exporter: {e}"))
}

/// `base` with the OTLP/HTTP traces path, unless it already ends with it.
fn traces_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    }
}

/// The SDK's detected resource, named `batchgate` and versioned unless the
/// environment says otherwise.
fn resource() -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    let versioned = detected
        .get(&Key::from_static_str("service.version"))
        .is_some();
    let mut builder = Resource::builder();
    if !named {
        builder = builder.with_service_name("batchgate");
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
    fn the_http_shorthand_gets_the_traces_path() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }
}
