//! Cache-hit `GetJobStatus` throughput against `Health/Check` on the same server, at
//! high concurrency (50 connections × 20 streams), with the memory and Redis backends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use batchgate::proto::sutro::v1::{self as pb, job_service_client::JobServiceClient};
use batchgate::sim::SimConfig;
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::Replicas;
use crate::redis_server::RedisServer;

const CONNECTIONS: usize = 50;
const STREAMS_PER_CONNECTION: usize = 20;

#[derive(Clone, Copy, PartialEq)]
pub enum Case {
    Health,
    Status,
}

pub async fn run(quick: bool) {
    let (rounds, window) = if quick {
        (2, Duration::from_secs(2))
    } else {
        (6, Duration::from_secs(3))
    };
    println!();
    println!(
        "## cache-hit GetJobStatus vs Health/Check on the same server: {CONNECTIONS} connections × \
         {STREAMS_PER_CONNECTION} streams, {rounds} rounds of {} s per case, alternating which goes first",
        window.as_secs()
    );
    println!(
        "| backend | Health/Check calls/s | GetJobStatus calls/s | ratio (median of rounds) | upstream status reads while measured |"
    );
    println!("|---|---|---|---|---|");
    one_backend("memory", None, rounds, window).await;
    let redis = RedisServer::start();
    one_backend("redis", Some(redis.url()), rounds, window).await;
}

async fn one_backend(name: &str, redis_url: Option<String>, rounds: usize, window: Duration) {
    let replicas = Replicas::start(SimConfig::fast(), 1, redis_url).await;
    let job_id = replicas.create_job(3).await;
    replicas.wait_for(&job_id, pb::JobStatus::Succeeded).await;
    let channels = replicas.connect(0, CONNECTIONS).await;
    // Warm up both paths (and the cache) before measuring.
    measure(&channels, Case::Health, &job_id, Duration::from_millis(500)).await;
    measure(&channels, Case::Status, &job_id, Duration::from_millis(500)).await;
    let reads_before = replicas.sim.calls("GET /v1/job-status/{job_id}");
    let mut health = Vec::new();
    let mut status = Vec::new();
    let mut ratios = Vec::new();
    for round in 0..rounds {
        // Alternating the order cancels the machine's drift within a round.
        let (h, s) = if round % 2 == 0 {
            let h = measure(&channels, Case::Health, &job_id, window).await;
            (h, measure(&channels, Case::Status, &job_id, window).await)
        } else {
            let s = measure(&channels, Case::Status, &job_id, window).await;
            (measure(&channels, Case::Health, &job_id, window).await, s)
        };
        health.push(h);
        status.push(s);
        ratios.push(s / h);
    }
    let reads = replicas.sim.calls("GET /v1/job-status/{job_id}") - reads_before;
    drop(channels);
    replicas.stop().await;
    println!(
        "| {name} | {} | {} | {:.2} (rounds: {}) | {reads} |",
        fmt_rates(&health),
        fmt_rates(&status),
        median(&ratios),
        ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// Calls per second of `case` over `window`, from every stream at once.
pub async fn measure(channels: &[Channel], case: Case, job_id: &str, window: Duration) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for channel in channels {
        for _ in 0..STREAMS_PER_CONNECTION {
            let (stop, done) = (stop.clone(), done.clone());
            let channel = channel.clone();
            let job_id = job_id.to_owned();
            tasks.push(tokio::spawn(async move {
                let mut health = HealthClient::new(channel.clone());
                let mut jobs = JobServiceClient::new(channel);
                while !stop.load(Ordering::Relaxed) {
                    let ok = match case {
                        Case::Health => health.check(HealthCheckRequest::default()).await.is_ok(),
                        Case::Status => jobs
                            .get_job_status(pb::GetJobStatusRequest {
                                job_id: job_id.clone(),
                            })
                            .await
                            .is_ok(),
                    };
                    assert!(ok, "a call failed while measuring");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let counted = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    counted as f64 / elapsed.as_secs_f64()
}

/// The middle value (the mean of the two middle ones for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

fn fmt_rates(rates: &[f64]) -> String {
    format!("{:.0}", median(rates))
}
