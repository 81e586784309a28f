//! Several gateway processes sharing one Redis (or a 3-master Cluster) beside one
//! simulator: one upstream watcher per job for the whole cluster, once-only creates.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use batchgate::proto::sutro::v1::{self as jobs, job_service_client::JobServiceClient};
use batchgate::proto::xai::v1::{self as batches, batch_service_client::BatchServiceClient};
use batchgate::sim::{self, SimConfig, SimHandle};
use futures_util::future::join_all;

use crate::common::connect;
use crate::common::redis::{RedisCluster, RedisServer};
use crate::common::replicas::Replica;

const PROGRESS_ROUTE: &str = "GET /v1/stream-job-progress/{job_id}";

/// The simulator, and `count` gateway replicas sharing `redis_args` (`--redis-url …` or
/// `--redis-cluster-nodes …`).
struct Cluster {
    sim: SimHandle,
    replicas: Vec<Replica>,
}

impl Cluster {
    async fn start(sim_config: SimConfig, count: usize, redis_args: &[String]) -> Self {
        let sim = sim::start(sim_config, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("simulator starts");
        let mut args = vec![
            "--sutro-base-url".to_owned(),
            sim.sutro_base_url(),
            "--sutro-api-key".to_owned(),
            sim::DEMO_API_KEY.to_owned(),
            "--xai-base-url".to_owned(),
            sim.xai_base_url(),
            "--xai-api-key".to_owned(),
            sim::XAI_DEMO_API_KEY.to_owned(),
            "--watch-poll-ms".to_owned(),
            "100".to_owned(),
            "--watch-lease-ms".to_owned(),
            "1000".to_owned(),
            "--watch-grace-ms".to_owned(),
            "500".to_owned(),
        ];
        args.extend_from_slice(redis_args);
        let replicas = join_all((0..count).map(|_| Replica::spawn(&args, &[]))).await;
        Self { sim, replicas }
    }

    async fn jobs(&self, replica: usize) -> JobServiceClient<tonic::transport::Channel> {
        JobServiceClient::new(connect(self.replicas[replica].addr).await)
    }

    async fn batches(&self, replica: usize) -> BatchServiceClient<tonic::transport::Channel> {
        BatchServiceClient::new(connect(self.replicas[replica].addr).await)
    }
}

/// A pace at which a 60-row job runs for about three seconds.
fn slow_job_sim() -> SimConfig {
    SimConfig {
        rows_per_second: 20.0,
        ..SimConfig::fast()
    }
}

async fn create_job(cluster: &Cluster, rows: usize) -> String {
    let mut client = cluster.jobs(0).await;
    client
        .create_job(jobs::CreateJobRequest {
            model: "gpt-oss-20b".into(),
            inputs: Some(jobs::create_job_request::Inputs::Prompts(
                jobs::StringInputs {
                    values: (0..rows).map(|i| format!("row {i}")).collect(),
                },
            )),
            ..Default::default()
        })
        .await
        .expect("the job is created")
        .into_inner()
        .job_id
}

/// Opens `per_replica` watches of `job_id` on each live replica, over a few connections.
async fn open_watches(
    cluster: &Cluster,
    live: &[usize],
    per_replica: usize,
    job_id: &str,
) -> Vec<tonic::Streaming<jobs::WatchJobResponse>> {
    let mut streams = Vec::new();
    for &replica in live {
        let channel = connect(cluster.replicas[replica].addr).await;
        let opened = join_all((0..per_replica).map(|_| {
            let mut client = JobServiceClient::new(channel.clone());
            let job_id = job_id.to_owned();
            async move {
                client
                    .watch_job(jobs::WatchJobRequest { job_id })
                    .await
                    .expect("the watch starts")
                    .into_inner()
            }
        }))
        .await;
        streams.extend(opened);
    }
    streams
}

/// Reads each stream to its end; returns how many ended on a FINAL of a finished job.
async fn finals(streams: Vec<tonic::Streaming<jobs::WatchJobResponse>>) -> usize {
    let ends = join_all(streams.into_iter().map(|mut stream| async move {
        let mut last = None;
        loop {
            match tokio::time::timeout(Duration::from_secs(30), stream.message()).await {
                Ok(Ok(Some(message))) => last = Some(message),
                Ok(Ok(None)) => break,
                Ok(Err(status)) => panic!("a watch failed: {status:?}"),
                Err(_) => panic!("a watch went silent for 30 s"),
            }
        }
        last.is_some_and(|m| {
            m.kind() == jobs::WatchEventKind::Final
                && m.progress
                    .is_some_and(|p| p.status() == jobs::JobStatus::Succeeded)
        })
    }))
    .await;
    ends.into_iter().filter(|&ended| ended).count()
}

async fn one_upstream_stream_for_300_watchers(redis_args: &[String]) {
    let cluster = Cluster::start(slow_job_sim(), 3, redis_args).await;
    let job_id = create_job(&cluster, 60).await;
    let streams = open_watches(&cluster, &[0, 1, 2], 100, &job_id).await;
    assert_eq!(finals(streams).await, 300, "every watcher sees the FINAL");
    assert_eq!(
        cluster.sim.calls(PROGRESS_ROUTE),
        1,
        "one upstream progress stream for the whole cluster"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_share_one_upstream_watch() {
    let redis = RedisServer::start();
    one_upstream_stream_for_300_watchers(&["--redis-url".into(), redis.url()]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_share_one_upstream_watch_on_a_cluster() {
    let redis = RedisCluster::start();
    one_upstream_stream_for_300_watchers(&["--redis-cluster-nodes".into(), redis.nodes_setting()])
        .await;
}

async fn another_replica_takes_over_from_a_dead_holder(redis_args: &[String]) {
    let mut cluster = Cluster::start(slow_job_sim(), 3, redis_args).await;
    let job_id = create_job(&cluster, 80).await;
    let first = open_watches(&cluster, &[0, 1, 2], 30, &job_id).await;
    // Which replica follows the upstream: the one whose log says it took the lease.
    let mut holder = None;
    for _ in 0..100 {
        holder = cluster
            .replicas
            .iter()
            .position(|r| r.logged("took the watch lease"));
        if holder.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let holder = holder.expect("one replica logs that it took the lease");
    let mut survivors_streams = Vec::new();
    for (n, stream) in first.into_iter().enumerate() {
        if n / 30 != holder {
            survivors_streams.push(stream);
        }
    }
    cluster.replicas[holder].kill().await;
    let survivors: Vec<usize> = (0..3).filter(|&r| r != holder).collect();
    assert_eq!(
        finals(survivors_streams).await,
        60,
        "every remaining watcher gets FINAL"
    );
    let taken_over = survivors
        .iter()
        .filter(|&&r| cluster.replicas[r].logged("took the watch lease"))
        .count();
    assert_eq!(taken_over, 1, "exactly one survivor took the lease over");
    assert!(cluster.sim.calls(PROGRESS_ROUTE) <= 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn when_the_lease_holder_dies_another_replica_takes_over() {
    let redis = RedisServer::start();
    another_replica_takes_over_from_a_dead_holder(&["--redis-url".into(), redis.url()]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn when_the_lease_holder_dies_another_replica_takes_over_on_a_cluster() {
    let redis = RedisCluster::start();
    another_replica_takes_over_from_a_dead_holder(&[
        "--redis-cluster-nodes".into(),
        redis.nodes_setting(),
    ])
    .await;
}

async fn one_create_for_twenty_keyed_calls(redis_args: &[String]) {
    let cluster = Cluster::start(SimConfig::fast(), 3, redis_args).await;
    let mut clients = Vec::new();
    for n in 0..20 {
        clients.push(cluster.batches(n % 3).await);
    }
    let replies = join_all(clients.into_iter().map(|mut client| async move {
        client
            .create_batch(batches::CreateBatchRequest {
                name: "once".into(),
                request_id: "create-once-across-replicas".into(),
                ..Default::default()
            })
            .await
    }))
    .await;
    let ids: HashSet<String> = replies
        .into_iter()
        .map(|reply| {
            reply
                .expect("every caller gets the batch")
                .into_inner()
                .batch_id
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(
        cluster.sim.calls("POST /v1/batches"),
        1,
        "one upstream create"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_id_creates_once_across_replicas() {
    let redis = RedisServer::start();
    one_create_for_twenty_keyed_calls(&["--redis-url".into(), redis.url()]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_id_creates_once_across_replicas_on_a_cluster() {
    let redis = RedisCluster::start();
    one_create_for_twenty_keyed_calls(&["--redis-cluster-nodes".into(), redis.nodes_setting()])
        .await;
}
