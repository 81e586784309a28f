//! `spawn_app()`: the whole gateway on port 0 beside the simulator on port 0, and a
//! real tonic client over TCP. Every test gets its own pair, so tests never share state.
#![allow(dead_code)]

pub mod metrics;
pub mod redis;
pub mod replicas;

use std::net::SocketAddr;
use std::time::Duration;

use batchgate::config::{Config, ConfigLayer};
use batchgate::proto::sutro::v1::job_service_client::JobServiceClient;
use batchgate::proto::xai::v1::batch_service_client::BatchServiceClient;
use batchgate::server::App;
use batchgate::sim::{self, SimConfig, SimHandle};
use tonic::transport::Channel;

pub struct TestApp {
    pub app: Option<App>,
    pub sim: SimHandle,
    pub addr: SocketAddr,
    pub jobs: JobServiceClient<Channel>,
    pub batches: BatchServiceClient<Channel>,
}

/// The arguments a test that runs the binary starts it with: `serve` on free ports (the
/// gRPC and admin ones), logging `log_format` lines.
pub fn serve_args(log_format: &str) -> [&str; 7] {
    [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--log-format",
        log_format,
    ]
}
/// Gateway settings for tests: quick retries, quick watches, managed demo key.
pub fn test_settings(sim: &SimHandle) -> ConfigLayer {
    ConfigLayer {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        sutro_base_url: Some(sim.sutro_base_url()),
        sutro_api_key: Some(sim::DEMO_API_KEY.into()),
        xai_base_url: Some(sim.xai_base_url()),
        xai_api_key: Some(sim::XAI_DEMO_API_KEY.into()),
        // Most tests call as the gateway's own key; the simulator's URL is a real upstream to it.
        allow_anonymous: Some(true),
        // The fast simulator keeps no xAI limits; tests of the budgets set their own.
        xai_creates_per_second: Some(0.0),
        xai_add_calls_per_30s: Some(0.0),
        retry_base_delay_ms: Some(10),
        retry_max_delay_ms: Some(50),
        watch_heartbeat_ms: Some(300),
        watch_poll_ms: Some(50),
        upstream_timeout_ms: Some(10_000),
        drain_timeout_ms: Some(2_000),
        ..Default::default()
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(SimConfig::fast(), |_| {}).await
}

pub async fn spawn_app_with(
    sim_config: SimConfig,
    tweak: impl FnOnce(&mut ConfigLayer),
) -> TestApp {
    spawn_app_telemetry(sim_config, None, tweak).await
}

/// [`spawn_app_with`], with metrics exported as `telemetry` says rather than as the
/// process environment does.
pub async fn spawn_app_telemetry(
    sim_config: SimConfig,
    telemetry: Option<&batchgate::telemetry::TelemetrySettings>,
    tweak: impl FnOnce(&mut ConfigLayer),
) -> TestApp {
    init_logs();
    let sim = sim::start(sim_config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator starts");
    let mut settings = test_settings(&sim);
    tweak(&mut settings);
    let config = Config::resolve(settings).expect("valid test config");
    let app = match telemetry {
        Some(telemetry) => App::start_with_telemetry(config, telemetry).await,
        None => App::start(config).await,
    }
    .expect("gateway starts");
    let addr = app.local_addr();
    let channel = connect(addr).await;
    let jobs = JobServiceClient::new(channel.clone()).max_decoding_message_size(4 * 1024 * 1024);
    let batches = BatchServiceClient::new(channel).max_decoding_message_size(4 * 1024 * 1024);
    TestApp {
        app: Some(app),
        sim,
        addr,
        jobs,
        batches,
    }
}

pub async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("gateway accepts connections")
}

/// `TEST_LOG=1` shows the gateway's logs.
fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// A request carrying `authorization` metadata.
pub fn with_key<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Key {key}").parse().expect("ascii key"),
    );
    request
}

/// The fields named by a status's BadRequest details.
pub fn bad_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// Creates a Sutro job of the given prompts; returns its id.
pub async fn create_job(app: &mut TestApp, values: Vec<String>) -> String {
    use batchgate::proto::sutro::v1 as pb;
    app.jobs
        .create_job(pb::CreateJobRequest {
            model: "gpt-oss-20b".into(),
            inputs: Some(pb::create_job_request::Inputs::Prompts(pb::StringInputs {
                values,
            })),
            ..Default::default()
        })
        .await
        .expect("the job is created")
        .into_inner()
        .job_id
}

/// Watches a job to its end; returns the last message.
pub async fn watch_job_to_end(
    app: &mut TestApp,
    job_id: &str,
) -> batchgate::proto::sutro::v1::WatchJobResponse {
    use batchgate::proto::sutro::v1 as pb;
    let mut watch = app
        .jobs
        .watch_job(pb::WatchJobRequest {
            job_id: job_id.into(),
        })
        .await
        .expect("the watch starts")
        .into_inner();
    let mut last = None;
    while let Some(message) = watch.message().await.expect("the watch goes on") {
        last = Some(message);
    }
    last.expect("at least one message")
}
