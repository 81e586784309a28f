//! The replicas the shared-state benchmark drives: gateways in this process on port 0,
//! beside one simulator and, where asked, one `redis-server` of their own.

pub mod limiter;
pub mod polling;
pub mod telemetry;
pub mod throughput;
pub mod watchers;

use std::net::SocketAddr;
use std::time::Duration;

use batchgate::config::{Config, ConfigLayer};
use batchgate::proto::sutro::v1::{self as pb, job_service_client::JobServiceClient};
use batchgate::server::App;
use batchgate::sim::{self, SimConfig, SimHandle};
use tonic::transport::Channel;

/// One simulator and the gateways in front of it.
pub struct Replicas {
    pub sim: SimHandle,
    pub apps: Vec<App>,
}

impl Replicas {
    /// `count` gateways; with `redis_url`, they share that Redis.
    pub async fn start(sim: SimConfig, count: usize, redis_url: Option<String>) -> Self {
        Self::start_with(sim, count, redis_url, |_| {}).await
    }

    /// The same, with `tweak` applied to each gateway's settings.
    pub async fn start_with(
        sim: SimConfig,
        count: usize,
        redis_url: Option<String>,
        tweak: impl Fn(&mut ConfigLayer),
    ) -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let sim = sim::start(sim, loopback)
            .await
            .expect("the simulator starts");
        let mut apps = Vec::new();
        for _ in 0..count {
            let mut layer = ConfigLayer {
                listen: Some(loopback),
                admin_listen: Some(loopback),
                sutro_base_url: Some(sim.sutro_base_url()),
                sutro_api_key: Some(sim::DEMO_API_KEY.into()),
                xai_base_url: Some(sim.xai_base_url()),
                xai_api_key: Some(sim::XAI_DEMO_API_KEY.into()),
                redis_url: redis_url.clone(),
                allow_anonymous: Some(true),
                watch_poll_ms: Some(100),
                drain_timeout_ms: Some(2_000),
                ..Default::default()
            };
            tweak(&mut layer);
            let config = Config::resolve(layer).expect("a valid config");
            apps.push(App::start(config).await.expect("the gateway starts"));
        }
        Self { sim, apps }
    }

    /// `n` HTTP/2 connections to replica `replica`.
    pub async fn connect(&self, replica: usize, n: usize) -> Vec<Channel> {
        let addr = self.apps[replica].local_addr();
        let mut channels = Vec::with_capacity(n);
        for _ in 0..n {
            channels.push(
                Channel::from_shared(format!("http://{addr}"))
                    .expect("a channel URI")
                    .connect()
                    .await
                    .expect("connect to the gateway"),
            );
        }
        channels
    }

    /// Creates a job of `rows` prompts through replica 0.
    pub async fn create_job(&self, rows: usize) -> String {
        let channel = self.connect(0, 1).await.remove(0);
        JobServiceClient::new(channel)
            .create_job(pb::CreateJobRequest {
                model: "gpt-oss-20b".into(),
                inputs: Some(pb::create_job_request::Inputs::Prompts(pb::StringInputs {
                    values: (0..rows).map(|i| format!("prompt {i}")).collect(),
                })),
                ..Default::default()
            })
            .await
            .expect("the job is created")
            .into_inner()
            .job_id
    }

    /// Waits until the job has `status`.
    pub async fn wait_for(&self, job_id: &str, status: pb::JobStatus) {
        let channel = self.connect(0, 1).await.remove(0);
        let mut client = JobServiceClient::new(channel);
        for _ in 0..600 {
            let reply = client
                .get_job_status(pb::GetJobStatusRequest {
                    job_id: job_id.into(),
                })
                .await
                .expect("the status")
                .into_inner();
            if reply.status() == status {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("job {job_id} never reached {status:?}");
    }

    pub async fn stop(self) {
        for app in self.apps {
            let _ = app.shutdown().await;
        }
        self.sim.shutdown().await;
    }
}

/// The 1, 5 and 15 minute load averages, to show whether the machine was busy.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unknown ({e})"))
}
