//! The Redis hub behind real `WatchJob` calls: three gateways (each its own services,
//! port and hub) on one Redis and one simulator share one upstream progress stream.

use std::sync::Arc;
use std::time::Duration;

use batchgate::config::Config;
use batchgate::idempotency::MemoryIdempotency;
use batchgate::progress;
use batchgate::proto::sutro::v1::job_service_client::JobServiceClient;
use batchgate::proto::sutro::v1::job_service_server::JobServiceServer;
use batchgate::proto::sutro::v1::{self as pb, WatchEventKind};
use batchgate::records::MemoryRecords;
use batchgate::services::jobs::JobsService;
use batchgate::shared_redis::SharedRedis;
use batchgate::sim::{self, SimConfig};
use batchgate::upstream::sutro::SutroClient;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Server};

use crate::common::redis::RedisServer;
use crate::common::{connect, test_settings};
use crate::shared_redis::target;

/// One gateway replica serving `JobService` with the Redis hub; stops with `stop`.
async fn replica(
    config: Arc<Config>,
    redis: SharedRedis,
    stop: &CancellationToken,
) -> JobServiceClient<Channel> {
    let sutro = SutroClient::new(
        config.sutro_base_url.clone().expect("the simulator's URL"),
        config.retry,
        config.max_upstream_body_bytes,
    )
    .unwrap();
    let jobs = JobsService::new(
        sutro,
        config.clone(),
        Arc::new(MemoryIdempotency::new(config.idempotency_ttl, 1_000)),
        Arc::new(MemoryRecords::new(Duration::from_secs(3_600), 1_000)),
        progress::hub(&config, Some(&redis)),
        stop.child_token(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .add_service(JobServiceServer::new(jobs))
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                stop.clone().cancelled_owned(),
            ),
    );
    JobServiceClient::new(connect(addr).await)
}

async fn watch_to_end(
    mut client: JobServiceClient<Channel>,
    job_id: String,
) -> pb::WatchJobResponse {
    let mut stream = client
        .watch_job(pb::WatchJobRequest { job_id })
        .await
        .expect("the watch starts")
        .into_inner();
    let mut last = None;
    while let Some(message) = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("the watch makes progress")
        .expect("the watch goes on")
    {
        last = Some(message);
    }
    last.expect("at least one message")
}

async fn create_job(client: &mut JobServiceClient<Channel>, rows: usize) -> String {
    client
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_on_three_replicas_share_one_upstream_stream() {
    let server = RedisServer::start();
    let sim = sim::start(
        SimConfig {
            rows_per_second: 200.0,
            heartbeat_ms: 100,
            ..SimConfig::fast()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("the simulator starts");
    let mut settings = test_settings(&sim);
    settings.watch_lease_ms = Some(500);
    settings.watch_grace_ms = Some(300);
    let config = Arc::new(Config::resolve(settings).expect("a valid config"));
    let stop = CancellationToken::new();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let redis = SharedRedis::connect(&target(&server.url()), Duration::from_secs(2)).unwrap();
        clients.push(replica(config.clone(), redis, &stop).await);
    }

    let job_id = create_job(&mut clients[0], 200).await;
    let watchers =
        (0..60).map(|i| tokio::spawn(watch_to_end(clients[i % 3].clone(), job_id.clone())));
    for last in futures_util::future::join_all(watchers).await {
        let last = last.unwrap();
        assert_eq!(last.kind(), WatchEventKind::Final);
        let progress = last.progress.unwrap();
        assert_eq!(progress.status(), pb::JobStatus::Succeeded);
        assert_eq!(progress.rows_processed, 200);
    }
    assert_eq!(
        sim.calls("GET /v1/stream-job-progress/{job_id}"),
        1,
        "one upstream stream for every replica"
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_replica_holding_the_watch_stops_another_takes_over() {
    let server = RedisServer::start();
    let sim = sim::start(
        SimConfig {
            rows_per_second: 200.0,
            heartbeat_ms: 100,
            ..SimConfig::fast()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("the simulator starts");
    let mut settings = test_settings(&sim);
    settings.watch_lease_ms = Some(500);
    settings.watch_grace_ms = Some(300);
    let config = Arc::new(Config::resolve(settings).expect("a valid config"));
    let stops: Vec<CancellationToken> = (0..3).map(|_| CancellationToken::new()).collect();
    let mut clients = Vec::new();
    for stop in &stops {
        let redis = SharedRedis::connect(&target(&server.url()), Duration::from_secs(2)).unwrap();
        clients.push(replica(config.clone(), redis, stop).await);
    }
    let job_id = create_job(&mut clients[0], 1_000).await;

    // Replica 0 watches first, so it holds the lease and runs the upstream stream.
    let mut first = clients[0]
        .watch_job(pb::WatchJobRequest {
            job_id: job_id.clone(),
        })
        .await
        .expect("the watch starts")
        .into_inner();
    first
        .message()
        .await
        .expect("a snapshot")
        .expect("a snapshot");
    let watchers: Vec<_> = (0..40)
        .map(|i| tokio::spawn(watch_to_end(clients[1 + i % 2].clone(), job_id.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stops[0].cancel();
    drop(first);
    for last in futures_util::future::join_all(watchers).await {
        let last = last.unwrap();
        assert_eq!(last.kind(), WatchEventKind::Final);
        assert_eq!(last.progress.unwrap().status(), pb::JobStatus::Succeeded);
    }
    assert_eq!(
        sim.calls("GET /v1/stream-job-progress/{job_id}"),
        2,
        "the holder's stream, then its successor's"
    );
    for stop in &stops {
        stop.cancel();
    }
}
