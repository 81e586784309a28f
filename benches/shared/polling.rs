//! 1 000 clients polling one running job's status every 100 ms: how many status reads
//! reach the upstream, on one replica (memory cache) and on three sharing Redis. The
//! bound is one read per `cache_live_ttl` (1 s by default) plus one.

use std::time::{Duration, Instant};

use batchgate::proto::sutro::v1::{self as pb, job_service_client::JobServiceClient};
use batchgate::sim::SimConfig;

use super::Replicas;
use crate::redis_server::RedisServer;

const CLIENTS: usize = 1_000;
const PERIOD: Duration = Duration::from_millis(100);
const LIVE_TTL: Duration = Duration::from_secs(1);

pub async fn run(quick: bool) {
    let window = if quick {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(10)
    };
    println!();
    println!(
        "## {CLIENTS} clients polling one running job every {} ms for {} s (cache_live_ttl {} s)",
        PERIOD.as_millis(),
        window.as_secs(),
        LIVE_TTL.as_secs()
    );
    println!("| replicas | calls answered | upstream status reads | bound (window ÷ TTL + 1) |");
    println!("|---|---|---|---|");
    one_setup(1, None, window).await;
    let redis = RedisServer::start();
    one_setup(3, Some(redis.url()), window).await;
}

async fn one_setup(count: usize, redis_url: Option<String>, window: Duration) {
    // 400 rows at 5 a second: the job runs far longer than the window.
    let sim = SimConfig {
        rows_per_second: 5.0,
        ..SimConfig::fast()
    };
    let replicas = Replicas::start(sim, count, redis_url).await;
    let job_id = replicas.create_job(400).await;
    replicas.wait_for(&job_id, pb::JobStatus::Running).await;
    let mut channels = Vec::new();
    for replica in 0..count {
        channels.extend(replicas.connect(replica, 10).await);
    }
    let reads_before = replicas.sim.calls("GET /v1/job-status/{job_id}");
    let deadline = Instant::now() + window;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let mut client = JobServiceClient::new(channels[n % channels.len()].clone());
            let job_id = job_id.clone();
            tokio::spawn(async move {
                // Spread the clients over the period, as independent pollers would be.
                tokio::time::sleep(PERIOD * (n as u32) / CLIENTS as u32).await;
                let mut answered = 0u64;
                let mut tick = tokio::time::interval(PERIOD);
                while Instant::now() < deadline {
                    tick.tick().await;
                    client
                        .get_job_status(pb::GetJobStatusRequest {
                            job_id: job_id.clone(),
                        })
                        .await
                        .expect("a status read");
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    let mut answered = 0;
    for task in tasks {
        answered += task.await.expect("a polling client");
    }
    let reads = replicas.sim.calls("GET /v1/job-status/{job_id}") - reads_before;
    let bound = window.as_secs() / LIVE_TTL.as_secs() + 1;
    println!("| {count} | {answered} | {reads} | {bound} |");
    drop(channels);
    replicas.stop().await;
}
