//! Gateway overhead and watch fan-out, as ratios against baselines measured in the same
//! run: a bare tonic call (health Check on the same server) and a direct REST call to the
//! same simulator. Run: `cargo bench --bench gateway` (add `-- --quick` for a short run).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use batchgate::config::{Config, ConfigLayer};
use batchgate::proto::sutro::v1::{self as pb, job_service_client::JobServiceClient};
use batchgate::server::App;
use batchgate::sim::{self, SimConfig};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Stats {
    p50: Duration,
    p99: Duration,
    per_sec: f64,
}

/// `calls` calls, `concurrency` at a time; latency percentiles and throughput.
async fn measure<F, Fut>(calls: usize, concurrency: usize, call: F) -> Stats
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let workers = (0..concurrency).map(|_| {
        let call = call.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(calls / concurrency);
            for _ in 0..calls / concurrency {
                let t = Instant::now();
                call().await;
                latencies.push(t.elapsed());
            }
            latencies
        })
    });
    let mut latencies: Vec<Duration> = futures_util::future::join_all(workers)
        .await
        .into_iter()
        .flat_map(|r| r.expect("worker"))
        .collect();
    let elapsed = started.elapsed();
    latencies.sort();
    Stats {
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

#[tokio::main]
async fn main() {
    batchgate::upstream::http::install_crypto_provider();
    let quick = std::env::args().any(|a| a == "--quick");
    let (calls, watchers) = if quick { (2_000, 1_000) } else { (20_000, 10_000) };

    let sim = sim::start(
        SimConfig { rows_per_second: 20.0, heartbeat_ms: 1_000, ..SimConfig::fast() },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("simulator");
    let config = Config::resolve(ConfigLayer {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        sutro_base_url: Some(sim.sutro_base_url()),
        sutro_api_key: Some(sim::DEMO_API_KEY.into()),
        xai_base_url: Some(sim.xai_base_url()),
        xai_api_key: Some(sim::XAI_DEMO_API_KEY.into()),
        watch_heartbeat_ms: Some(5_000),
        ..Default::default()
    })
    .expect("config");
    let app = App::start(config).await.expect("gateway");
    let channel = Channel::from_shared(format!("http://{}", app.local_addr()))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let jobs = JobServiceClient::new(channel.clone());
    let health = HealthClient::new(channel);
    let http = reqwest::Client::new();
    let quotas_url = format!("{}/get-quotas", sim.sutro_base_url());

    println!("# batchgate gateway benchmark ({calls} calls per case, {} CPUs)", std::thread::available_parallelism().map_or(0, |n| n.get()));
    for concurrency in [1, 16] {
        let bare = measure(calls, concurrency, {
            let health = health.clone();
            move || {
                let mut health = health.clone();
                async move {
                    health.check(HealthCheckRequest { service: String::new() }).await.expect("check");
                }
            }
        })
        .await;
        let rest = measure(calls, concurrency, {
            let (http, url) = (http.clone(), quotas_url.clone());
            move || {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    let r = http.get(url).header("authorization", format!("Key {}", sim::DEMO_API_KEY)).send().await.expect("rest");
                    r.bytes().await.expect("body");
                }
            }
        })
        .await;
        let gateway = measure(calls, concurrency, {
            let jobs = jobs.clone();
            move || {
                let mut jobs = jobs.clone();
                async move {
                    jobs.get_quotas(pb::GetQuotasRequest {}).await.expect("quotas");
                }
            }
        })
        .await;
        println!(
            "concurrency {concurrency:>2}: bare tonic p50 {:?} p99 {:?} {:.0}/s | direct REST p50 {:?} p99 {:?} {:.0}/s | gateway GetQuotas p50 {:?} p99 {:?} {:.0}/s",
            bare.p50, bare.p99, bare.per_sec, rest.p50, rest.p99, rest.per_sec, gateway.p50, gateway.p99, gateway.per_sec
        );
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
        println!(
            "  ratio gateway/(bare tonic + direct REST) p50 = {:.2}; gateway throughput / direct REST throughput = {:.2}",
            ratio(gateway.p50, bare.p50 + rest.p50),
            gateway.per_sec / rest.per_sec
        );
    }

    // Fan-out: many watchers of one job cost one upstream stream.
    let job_id = jobs
        .clone()
        .create_job(pb::CreateJobRequest {
            model: "gpt-oss-20b".into(),
            inputs: Some(pb::create_job_request::Inputs::Prompts(pb::StringInputs {
                values: (0..100_000).map(|i| format!("row {i}")).collect(),
            })),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
        .job_id;
    let before = rss_bytes();
    let started = Instant::now();
    let mut streams = Vec::with_capacity(watchers);
    for _ in 0..watchers {
        let mut stream = jobs
            .clone()
            .watch_job(pb::WatchJobRequest { job_id: job_id.clone() })
            .await
            .expect("watch")
            .into_inner();
        stream.message().await.expect("snapshot").expect("a message");
        streams.push(stream);
    }
    let subscribe_time = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_bytes();
    println!(
        "fan-out: {watchers} watchers subscribed in {subscribe_time:?}; upstream progress streams opened: {}; upstream job reads: {}; RSS growth {:.1} KiB per watcher (gateway and client in one process)",
        sim.calls("GET /v1/stream-job-progress/{job_id}"),
        sim.calls("GET /v1/jobs/{job_id}"),
        after.saturating_sub(before) as f64 / 1024.0 / watchers as f64
    );
    drop(streams);
    app.shutdown().await.expect("shutdown");
}
