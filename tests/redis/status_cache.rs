//! The status cache through the gateway: real gRPC, the simulator, and a real Redis (or
//! none, for the in-process backend): x-cache and age, single-flight, TTL by state, cancels.

use std::time::Duration;

use batchgate::proto::sutro::v1 as pb;
use batchgate::proto::xai::v1 as xai;
use batchgate::sim::SimConfig;
use tonic::Response;

use crate::common::redis::RedisServer;
use crate::common::{TestApp, create_job, spawn_app_with, watch_job_to_end};

pub const JOB_ROUTE: &str = "GET /v1/jobs/{job_id}";
const STATUS_ROUTE: &str = "GET /v1/job-status/{job_id}";
const BATCH_ROUTE: &str = "GET /v1/batches/{batch_id}";

/// A simulator whose Sutro jobs stay QUEUED (a live state) for a minute.
pub fn queued() -> SimConfig {
    SimConfig {
        queue_ms: 60_000,
        ..SimConfig::fast()
    }
}

/// A gateway on `redis` (none: the in-process cache) whose live entries stay fresh `live_ms`.
pub async fn app_on(redis: Option<String>, live_ms: u64, sim: SimConfig) -> TestApp {
    spawn_app_with(sim, |settings| {
        settings.redis_url = redis;
        settings.cache_live_ttl_ms = Some(live_ms);
    })
    .await
}

/// The response's `x-cache`.
pub fn x_cache<T>(response: &Response<T>) -> &str {
    let value = response.metadata().get("x-cache").expect("x-cache is set");
    value.to_str().expect("ascii")
}

/// The response's `age`, in whole seconds.
pub fn age<T>(response: &Response<T>) -> u64 {
    let value = response.metadata().get("age").expect("age is set");
    value
        .to_str()
        .expect("ascii")
        .parse()
        .expect("whole seconds")
}

pub async fn get_job(app: &mut TestApp, job_id: &str) -> Response<pb::Job> {
    app.jobs
        .get_job(pb::GetJobRequest {
            job_id: job_id.into(),
        })
        .await
        .expect("GetJob")
}

async fn get_status(app: &mut TestApp, job_id: &str) -> Response<pb::GetJobStatusResponse> {
    app.jobs
        .get_job_status(pb::GetJobStatusRequest {
            job_id: job_id.into(),
        })
        .await
        .expect("GetJobStatus")
}

async fn get_batch(app: &mut TestApp, batch_id: &str) -> Response<xai::Batch> {
    app.batches
        .get_batch(xai::GetBatchRequest {
            batch_id: batch_id.into(),
        })
        .await
        .expect("GetBatch")
}

async fn new_batch(app: &mut TestApp) -> String {
    let request = xai::CreateBatchRequest {
        name: "cached".into(),
        ..Default::default()
    };
    let created = app.batches.create_batch(request).await.expect("created");
    created.into_inner().batch_id
}

/// MISS (with the upstream's request id), then HITs whose age grows, for both Gets.
async fn misses_then_hits_with_a_growing_age(redis: Option<String>) {
    let mut app = app_on(redis, 60_000, queued()).await;
    let job_id = create_job(&mut app, vec!["a".into()]).await;

    let miss = get_job(&mut app, &job_id).await;
    assert_eq!((x_cache(&miss), age(&miss)), ("MISS", 0));
    let hit = get_job(&mut app, &job_id).await;
    assert_eq!((x_cache(&hit), age(&hit)), ("HIT", 0));
    assert_eq!(hit.get_ref(), miss.get_ref());
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let older = get_job(&mut app, &job_id).await;
    assert_eq!(x_cache(&older), "HIT");
    assert!(age(&older) >= 1, "age {}", age(&older));
    assert_eq!(app.sim.calls(JOB_ROUTE), 1);

    let miss = get_status(&mut app, &job_id).await;
    assert_eq!(x_cache(&miss), "MISS");
    assert_eq!(miss.get_ref().status(), pb::JobStatus::Queued);
    let hit = get_status(&mut app, &job_id).await;
    assert_eq!(x_cache(&hit), "HIT");
    assert_eq!(app.sim.calls(STATUS_ROUTE), 1);

    // xAI names its answers (the simulated Sutro does not): a MISS echoes the name.
    let batch_id = new_batch(&mut app).await;
    let miss = get_batch(&mut app, &batch_id).await;
    assert_eq!(x_cache(&miss), "MISS");
    let named = miss.metadata().get("x-upstream-request-id");
    assert!(named.is_some_and(|id| id.to_str().is_ok_and(|id| id.starts_with("req_"))));
    let hit = get_batch(&mut app, &batch_id).await;
    assert_eq!(x_cache(&hit), "HIT");
    assert!(hit.metadata().get("x-upstream-request-id").is_none());
}

#[tokio::test]
async fn x_cache_and_age_on_redis() {
    let server = RedisServer::start();
    misses_then_hits_with_a_growing_age(Some(server.url())).await;
}

#[tokio::test]
async fn x_cache_and_age_in_memory() {
    misses_then_hits_with_a_growing_age(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_get_jobs_on_a_cold_key_read_upstream_once() {
    let server = RedisServer::start();
    let mut app = app_on(Some(server.url()), 60_000, queued()).await;
    let job_id = create_job(&mut app, vec!["a".into()]).await;
    let calls = (0..200).map(|_| {
        let (mut jobs, job_id) = (app.jobs.clone(), job_id.clone());
        tokio::spawn(async move { jobs.get_job(pb::GetJobRequest { job_id }).await })
    });
    for answer in futures_util::future::join_all(calls).await {
        let job = answer.expect("joined").expect("GetJob").into_inner();
        assert_eq!(job.job_id, job_id);
    }
    assert_eq!(app.sim.calls(JOB_ROUTE), 1);
}

#[tokio::test]
async fn live_entries_expire_after_the_live_ttl_and_final_ones_stay() {
    let server = RedisServer::start();
    let mut app = app_on(Some(server.url()), 300, queued()).await;
    let queued_id = create_job(&mut app, vec!["a".into()]).await;
    let done_id = create_job(&mut app, vec!["b".into()]).await;
    app.jobs
        .cancel_job(pb::CancelJobRequest {
            job_id: done_id.clone(),
        })
        .await
        .expect("cancelled");
    // The simulator's cancel takes 30 ms to become CANCELLED, a final state.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let live = get_job(&mut app, &queued_id).await;
    assert_eq!(live.get_ref().status(), pb::JobStatus::Queued);
    let done = get_job(&mut app, &done_id).await;
    assert_eq!(done.get_ref().status(), pb::JobStatus::Cancelled);
    assert_eq!(app.sim.calls(JOB_ROUTE), 2);

    // Past the live TTL and its stale window (300 ms each).
    tokio::time::sleep(Duration::from_millis(800)).await;
    let live = get_job(&mut app, &queued_id).await;
    assert_eq!(x_cache(&live), "MISS", "a live state is read again");
    let done = get_job(&mut app, &done_id).await;
    assert_eq!(x_cache(&done), "HIT", "a final state stays");
    assert_eq!(app.sim.calls(JOB_ROUTE), 3);
}

#[tokio::test]
async fn a_watched_job_is_fresh_in_the_cache_without_another_read() {
    let server = RedisServer::start();
    let mut app = app_on(Some(server.url()), 60_000, SimConfig::fast()).await;
    let job_id = create_job(&mut app, vec!["a".into(), "b".into()]).await;
    watch_job_to_end(&mut app, &job_id).await;
    let (jobs, statuses) = (app.sim.calls(JOB_ROUTE), app.sim.calls(STATUS_ROUTE));

    // The poller wrote the final job and status it read; the watch vouched for the key.
    let job = get_job(&mut app, &job_id).await;
    assert_eq!(x_cache(&job), "HIT");
    assert_eq!(job.get_ref().status(), pb::JobStatus::Succeeded);
    let status = get_status(&mut app, &job_id).await;
    assert_eq!(x_cache(&status), "HIT");
    assert_eq!(status.get_ref().status(), pb::JobStatus::Succeeded);
    assert_eq!(
        (app.sim.calls(JOB_ROUTE), app.sim.calls(STATUS_ROUTE)),
        (jobs, statuses)
    );
}

#[tokio::test]
async fn cancels_invalidate_the_cached_job_status_and_batch() {
    let server = RedisServer::start();
    let mut app = app_on(Some(server.url()), 60_000, queued()).await;
    let job_id = create_job(&mut app, vec!["a".into()]).await;
    get_status(&mut app, &job_id).await;
    get_job(&mut app, &job_id).await;
    assert_eq!(x_cache(&get_status(&mut app, &job_id).await), "HIT");
    assert_eq!(x_cache(&get_job(&mut app, &job_id).await), "HIT");

    app.jobs
        .cancel_job(pb::CancelJobRequest {
            job_id: job_id.clone(),
        })
        .await
        .expect("cancelled");
    let status = get_status(&mut app, &job_id).await;
    assert_eq!(x_cache(&status), "MISS");
    assert_ne!(status.get_ref().status(), pb::JobStatus::Queued);
    let job = get_job(&mut app, &job_id).await;
    assert_eq!(x_cache(&job), "MISS");
    assert_ne!(job.get_ref().status(), pb::JobStatus::Queued);

    let batch_id = new_batch(&mut app).await;
    assert_eq!(x_cache(&get_batch(&mut app, &batch_id).await), "MISS");
    assert_eq!(x_cache(&get_batch(&mut app, &batch_id).await), "HIT");
    let reads = app.sim.calls(BATCH_ROUTE);
    app.batches
        .cancel_batch(xai::CancelBatchRequest {
            batch_id: batch_id.clone(),
        })
        .await
        .expect("cancelled");
    let batch = get_batch(&mut app, &batch_id).await;
    assert_eq!(x_cache(&batch), "MISS");
    assert!(
        batch.get_ref().cancel_time.is_some(),
        "{:?}",
        batch.get_ref()
    );
    assert_eq!(
        app.sim.calls(BATCH_ROUTE),
        reads + 1,
        "read again after the cancel"
    );
}

/// Many clients polling one running job read it upstream about once per live TTL: a
/// scaled-down form of the benchmark of issue 8 (1 000 clients, 10 s), on one replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_polling_a_running_job_read_it_upstream_once_per_live_ttl() {
    const LIVE_MS: u64 = 500;
    const POLL_FOR: Duration = Duration::from_secs(3);
    let server = RedisServer::start();
    let mut app = app_on(Some(server.url()), LIVE_MS, queued()).await;
    let job_id = create_job(&mut app, vec!["a".into()]).await;
    let started = std::time::Instant::now();
    let clients = (0..100).map(|_| {
        let (mut jobs, job_id) = (app.jobs.clone(), job_id.clone());
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(100));
            while started.elapsed() < POLL_FOR {
                ticks.tick().await;
                let request = pb::GetJobStatusRequest {
                    job_id: job_id.clone(),
                };
                jobs.get_job_status(request).await.expect("GetJobStatus");
            }
        })
    });
    for client in futures_util::future::join_all(clients).await {
        client.expect("the client polled to the end");
    }
    // Reads are at least a live TTL apart: stale answers cover each refresh.
    let bound = started.elapsed().as_millis() as u64 / LIVE_MS + 1;
    let reads = app.sim.calls(STATUS_ROUTE);
    assert!(
        reads <= bound,
        "{reads} upstream reads, at most {bound} expected"
    );
}

/// A refresh shared by several callers runs on the upstream bound, not on the deadline of
/// the caller that started it: a caller with a tiny deadline gives up alone, and one with
/// a long deadline that joined its refresh still gets the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_deadline_fails_only_its_own_caller_not_those_sharing_its_refresh() {
    let mut app = app_on(None, 1_000, queued()).await;
    let job_id = create_job(&mut app, vec!["a".into()]).await;
    app.sim.inject(batchgate::sim::FaultRule {
        route: JOB_ROUTE.into(),
        times: 1,
        fault: batchgate::sim::Fault::Delay(Duration::from_millis(2_500)),
    });
    let request = |timeout_ms| {
        let mut request = tonic::Request::new(pb::GetJobRequest {
            job_id: job_id.clone(),
        });
        request.set_timeout(Duration::from_millis(timeout_ms));
        request
    };
    let (mut hasty, mut patient) = (app.jobs.clone(), app.jobs.clone());
    let hasty = hasty.get_job(request(1_000));
    let patient = async {
        // Joins the refresh the hasty caller started.
        tokio::time::sleep(Duration::from_millis(30)).await;
        patient.get_job(request(10_000)).await
    };
    let (hasty, patient) = tokio::join!(hasty, patient);
    assert_eq!(
        hasty.expect_err("past its deadline").code(),
        tonic::Code::DeadlineExceeded
    );
    let patient = patient.expect("its own deadline is far off");
    assert_eq!(patient.get_ref().job_id, job_id);
    assert_eq!(app.sim.calls(JOB_ROUTE), 1, "one shared upstream read");
}
