//! What tracing and metrics export cost (issue 10): cache-hit `GetJobStatus` throughput on
//! two `batchgate serve` processes, identical but for their `OTEL_*` variables:
//!
//! - off: none set, as a gateway runs with no collector: no OTLP exporter for spans or
//!   metrics (the OpenTelemetry layer still gives spans a trace context, and Prometheus
//!   still serves every series on the admin port).
//! - on: `OTEL_EXPORTER_OTLP_ENDPOINT` (gRPC) to a sink in this process,
//!   `OTEL_TRACES_SAMPLER=parentbased_traceidratio`, `OTEL_TRACES_SAMPLER_ARG=0.1`, and
//!   `OTEL_METRIC_EXPORT_INTERVAL` short enough that metrics are pushed while measured.
//!
//! Two processes because the tracing subscriber is global: in one process both gateways
//! would share one OpenTelemetry layer, and "off" would not be off. The clients, the
//! simulator and the OTLP sink run here; the gateways are the real binary, configured
//! as a deployment is. Rounds alternate which gateway goes first; the sink counts what
//! it receives, by service name, so the output shows sampling worked and "off" sent nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use batchgate::proto::sutro::v1::{self as pb, job_service_client::JobServiceClient};
use batchgate::sim::{self, SimConfig, SimHandle};
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
use opentelemetry_proto::tonic::resource::v1::Resource;
use tokio::process::{Child, Command};
use tonic::transport::Channel;

use super::throughput::{Case, measure, median};

const CONNECTIONS: usize = 50;
const STATUS_RPC: &str = "batchgate.sutro.v1.JobService/GetJobStatus";
const SAMPLE_RATIO: &str = "0.1";
const ON_SERVICE: &str = "batchgate-telemetry-on";

pub async fn run(quick: bool) {
    // As the limiter phase: many short rounds, each gateway first in every other one.
    let (rounds, window) = if quick {
        (2, Duration::from_secs(2))
    } else {
        (8, Duration::from_secs(3))
    };
    let export_interval_ms = if quick { 1_000 } else { 5_000 };
    println!();
    println!(
        "## tracing and metrics export on vs off: cache-hit GetJobStatus on two `batchgate serve` \
         processes, {CONNECTIONS} connections × 20 streams, {rounds} rounds of {} s per gateway, \
         alternating which goes first",
        window.as_secs()
    );
    println!("  off: no OTEL_* variables (no OTLP export; trace context and Prometheus as always)");
    println!(
        "  on:  OTEL_EXPORTER_OTLP_ENDPOINT (grpc) to a counting sink in the bench process, \
         OTEL_TRACES_SAMPLER=parentbased_traceidratio, OTEL_TRACES_SAMPLER_ARG={SAMPLE_RATIO}, \
         OTEL_METRIC_EXPORT_INTERVAL={export_interval_ms}"
    );
    println!(
        "  both: access log off, RUST_LOG=warn, Prometheus on the admin port; the callers send \
         no traceparent, so each call is a root the sampler decides on"
    );
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let sim = sim::start(SimConfig::fast(), loopback)
        .await
        .expect("the simulator starts");
    let (sink, sink_url) = Sink::start().await;
    let on_vars = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", sink_url.clone()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
        ("OTEL_SERVICE_NAME", ON_SERVICE.to_owned()),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio".to_owned()),
        ("OTEL_TRACES_SAMPLER_ARG", SAMPLE_RATIO.to_owned()),
        (
            "OTEL_METRIC_EXPORT_INTERVAL",
            export_interval_ms.to_string(),
        ),
    ];
    let mut gateways = [
        Gateway::start("off", &sim, &[]).await,
        Gateway::start("on", &sim, &on_vars).await,
    ];
    for gateway in &mut gateways {
        gateway.prepare().await;
    }
    println!();
    println!(
        "| round | first | off calls/s | on calls/s | on ÷ off | off CPU µs/call | on CPU µs/call |"
    );
    println!("|---|---|---|---|---|---|---|");
    let (mut offs, mut ons, mut ratios, mut cpu) = (Vec::new(), Vec::new(), Vec::new(), [0.0; 2]);
    let mut measured_calls = [0.0; 2];
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut rate = [0.0; 2];
        let mut cpu_per_call = [0.0; 2];
        for i in order {
            let gateway = &gateways[i];
            let cpu_before = gateway.cpu_seconds();
            rate[i] = measure(&gateway.channels, Case::Status, &gateway.job_id, window).await;
            let used = gateway.cpu_seconds() - cpu_before;
            let calls = rate[i] * window.as_secs_f64();
            cpu_per_call[i] = used * 1e6 / calls;
            cpu[i] += used;
            measured_calls[i] += calls;
        }
        offs.push(rate[0]);
        ons.push(rate[1]);
        ratios.push(rate[1] / rate[0]);
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.3} | {:.1} | {:.1} |",
            round + 1,
            gateways[order[0]].name,
            rate[0],
            rate[1],
            rate[1] / rate[0],
            cpu_per_call[0],
            cpu_per_call[1]
        );
    }
    let ratio = median(&ratios);
    println!();
    println!(
        "  throughput on ÷ off = {ratio:.3} (median of the {rounds} rounds' ratios; median rates {:.0} on vs {:.0} off calls/s; all rounds pooled {:.3}) — goal ≥ 0.90: {}",
        median(&ons),
        median(&offs),
        measured_calls[1] / measured_calls[0],
        if ratio >= 0.90 { "met" } else { "NOT met" }
    );
    let cpu_off = cpu[0] * 1e6 / measured_calls[0];
    let cpu_on = cpu[1] * 1e6 / measured_calls[1];
    println!(
        "  gateway CPU per call, all rounds: off {cpu_off:.1} µs, on {cpu_on:.1} µs (on ÷ off {:.3}; the sink's and the clients' CPU are in neither)",
        cpu_on / cpu_off
    );

    // The series both serve on the admin port, before they stop.
    let mut served = [0; 2];
    for (i, gateway) in gateways.iter().enumerate() {
        served[i] = gateway.counted_status_calls().await;
        println!(
            "  {}: Prometheus on its admin port counts {} GetJobStatus calls (warm-up included)",
            gateway.name, served[i]
        );
    }
    // Stopping flushes the spans still batched and pushes the metrics one last time.
    for gateway in gateways {
        gateway.stop().await;
    }
    sim.shutdown().await;
    let seen = sink.seen();
    let on_spans = seen.status_spans.get(ON_SERVICE).copied().unwrap_or(0);
    let on_calls = served[1] as f64;
    println!(
        "  OTLP sink, spans of {STATUS_RPC}: {on_spans} from \"on\" for ~{on_calls:.0} calls it served = {:.1} % (sampler ratio {SAMPLE_RATIO}); all spans by service: {:?}",
        on_spans as f64 / on_calls * 100.0,
        seen.spans
    );
    println!(
        "  OTLP sink, metric exports by service: {:?} (\"off\" is service.name batchgate: it must send nothing)",
        seen.metric_exports
    );
}

/// One `batchgate serve` process and the client side that drives it.
struct Gateway {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    channels: Vec<Channel>,
    job_id: String,
}

impl Gateway {
    async fn start(name: &'static str, sim: &SimHandle, vars: &[(&str, String)]) -> Self {
        let addr = free_addr();
        let admin = free_addr();
        let mut command = Command::new(env!("CARGO_BIN_EXE_batchgate"));
        // Nothing of this shell's own telemetry or gateway settings reaches either.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("OTEL_") || key.starts_with("BATCHGATE_") || key == "RUST_LOG" {
                command.env_remove(key.as_ref());
            }
        }
        command
            .arg("serve")
            .env("BATCHGATE_LISTEN", addr.to_string())
            .env("BATCHGATE_ADMIN_LISTEN", admin.to_string())
            .env("BATCHGATE_SUTRO_BASE_URL", sim.sutro_base_url())
            .env("BATCHGATE_SUTRO_API_KEY", sim::DEMO_API_KEY)
            .env("BATCHGATE_XAI_BASE_URL", sim.xai_base_url())
            .env("BATCHGATE_XAI_API_KEY", sim::XAI_DEMO_API_KEY)
            .env("BATCHGATE_ALLOW_ANONYMOUS", "true")
            .env("BATCHGATE_ACCESS_LOG", "false")
            .env("BATCHGATE_DRAIN_TIMEOUT_MS", "2000")
            .env("RUST_LOG", "warn")
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .kill_on_drop(true);
        let child = command.spawn().expect("start batchgate serve");
        let channels = connect(addr).await;
        Self {
            name,
            child,
            addr,
            admin,
            channels,
            job_id: String::new(),
        }
    }

    /// A finished job whose status the gateway has cached, and a warm-up on it.
    async fn prepare(&mut self) {
        let mut client = JobServiceClient::new(self.channels[0].clone());
        self.job_id = client
            .create_job(pb::CreateJobRequest {
                model: "gpt-oss-20b".into(),
                inputs: Some(pb::create_job_request::Inputs::Prompts(pb::StringInputs {
                    values: vec!["a".into(), "b".into(), "c".into()],
                })),
                ..Default::default()
            })
            .await
            .expect("the job is created")
            .into_inner()
            .job_id;
        let mut done = false;
        for _ in 0..600 {
            let reply = client
                .get_job_status(pb::GetJobStatusRequest {
                    job_id: self.job_id.clone(),
                })
                .await
                .expect("the status")
                .into_inner();
            if reply.status() == pb::JobStatus::Succeeded {
                done = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(done, "job {} never succeeded", self.job_id);
        measure(
            &self.channels,
            Case::Status,
            &self.job_id,
            Duration::from_secs(1),
        )
        .await;
    }

    /// GetJobStatus calls the gateway has counted (on its Prometheus page).
    async fn counted_status_calls(&self) -> u64 {
        let page = reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .and_then(|r| r.error_for_status())
            .expect("the admin port answers")
            .text()
            .await
            .expect("the metrics page");
        page.lines()
            .filter(|l| {
                l.starts_with("rpc_server_call_duration_seconds_count")
                    && l.contains("GetJobStatus")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// CPU seconds the gateway process has used (user + system).
    fn cpu_seconds(&self) -> f64 {
        let pid = self.child.id().expect("the gateway runs");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
        // Fields 14 and 15 (utime, stime), counted after the command name's `)`.
        let after = &stat[stat.rfind(')').expect("a stat line") + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: f64 =
            fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        ticks / per_second
    }

    /// SIGTERM, as an orchestrator stops it: it drains, flushes spans, pushes metrics.
    async fn stop(mut self) {
        drop(self.channels);
        if let Some(pid) = self.child.id() {
            // SAFETY: kill has no memory preconditions; the pid is our own child's.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        let stopped = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
        if !matches!(stopped, Ok(Ok(status)) if status.success()) {
            eprintln!(
                "warning: the {} gateway ({}) did not stop cleanly: {stopped:?}",
                self.name, self.addr
            );
        }
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// `CONNECTIONS` channels, once the gateway listens (it has 30 s to start).
async fn connect(addr: SocketAddr) -> Vec<Channel> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut channels = Vec::with_capacity(CONNECTIONS);
    while channels.len() < CONNECTIONS {
        match Channel::from_shared(format!("http://{addr}"))
            .expect("a channel URI")
            .connect()
            .await
        {
            Ok(channel) => channels.push(channel),
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "the gateway never listened: {error}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    channels
}

/// What the sink has received, by the resource's `service.name`.
#[derive(Default, Clone, Debug)]
struct Seen {
    spans: BTreeMap<String, u64>,
    status_spans: BTreeMap<String, u64>,
    metric_exports: BTreeMap<String, u64>,
}

/// An OTLP/gRPC collector that counts and keeps nothing else.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Seen>>);

fn service_name(resource: Option<&Resource>) -> String {
    resource
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_else(|| "(unnamed)".into())
}

impl Sink {
    async fn start() -> (Sink, String) {
        let sink = Sink::default();
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind the sink");
        let addr = listener.local_addr().expect("the sink's address");
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(sink.clone()))
                .add_service(MetricsServiceServer::new(sink.clone()))
                .serve_with_incoming(incoming),
        );
        (sink, format!("http://{addr}"))
    }

    fn seen(&self) -> Seen {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for resource_spans in request.into_inner().resource_spans {
            let service = service_name(resource_spans.resource.as_ref());
            for scope in resource_spans.scope_spans {
                let status = scope.spans.iter().filter(|s| s.name == STATUS_RPC).count();
                *seen.spans.entry(service.clone()).or_default() += scope.spans.len() as u64;
                *seen.status_spans.entry(service.clone()).or_default() += status as u64;
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for resource_metrics in request.into_inner().resource_metrics {
            let service = service_name(resource_metrics.resource.as_ref());
            *seen.metric_exports.entry(service).or_default() += 1;
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}
