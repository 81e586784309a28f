//! The gateway's WatchJob watchers of one running Sutro job: subscribe N, drain every
//! stream to its end, and count what the upstream and the watchers saw.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use batchgate::proto::sutro::v1::{self as pb, job_service_client::JobServiceClient};
use batchgate::sim;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::child::{Memory, ServerChild};
use super::fanout::SETTLE;
use super::mem;

/// The simulator routes a watch can call.
pub const ROUTES: [(&str, &str); 3] = [
    ("progress streams", "GET /v1/stream-job-progress/{job_id}"),
    ("job reads", "GET /v1/jobs/{job_id}"),
    ("status reads", "GET /v1/job-status/{job_id}"),
];

/// What one watcher saw.
#[derive(Default)]
struct WatcherLog {
    /// Messages by kind: snapshot, progress, heartbeat, final.
    kinds: [u64; 4],
    /// When the FINAL arrived (monotonic and wall clock).
    final_at: Option<(Instant, SystemTime)>,
    /// When the gateway built the FINAL (its `observed_at`).
    final_built: Option<SystemTime>,
    /// Time in transit (built by the gateway → received here), summed and worst, over
    /// every message.
    transit_sum: Duration,
    transit_max: Duration,
    /// FINAL with SUCCEEDED and every row, as the first message was a SNAPSHOT, and
    /// the stream ended with OK right after it.
    well_formed: bool,
    /// The call or the stream failed.
    error: Option<String>,
}

async fn watch_one(
    mut jobs: JobServiceClient<Channel>,
    job_id: String,
    rows: i64,
    subscribed: Arc<Semaphore>,
    finals: Arc<AtomicUsize>,
) -> WatcherLog {
    let mut log = WatcherLog::default();
    let mut stream = match jobs.watch_job(pb::WatchJobRequest { job_id }).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            subscribed.add_permits(1);
            log.error = Some(format!("WatchJob call: {status}"));
            return log;
        }
    };
    let mut first = true;
    let mut final_ok = false;
    loop {
        match stream.message().await {
            Ok(Some(message)) => {
                let kind = pb::WatchEventKind::try_from(message.kind).unwrap_or_default();
                let index = match kind {
                    pb::WatchEventKind::Snapshot => 0,
                    pb::WatchEventKind::Progress => 1,
                    pb::WatchEventKind::Heartbeat => 2,
                    pb::WatchEventKind::Final => 3,
                    pb::WatchEventKind::Unspecified => {
                        log.error = Some("a message of kind UNSPECIFIED".into());
                        break;
                    }
                };
                if first {
                    subscribed.add_permits(1);
                    final_ok = kind == pb::WatchEventKind::Snapshot;
                    first = false;
                }
                if log.final_at.is_some() {
                    final_ok = false; // nothing may follow FINAL
                }
                log.kinds[index] += 1;
                let received = SystemTime::now();
                let progress = message.progress.unwrap_or_default();
                let built = progress
                    .observed_at
                    .and_then(|at| SystemTime::try_from(at).ok());
                if let Some(built) = built {
                    let transit = received.duration_since(built).unwrap_or(Duration::ZERO);
                    log.transit_sum += transit;
                    log.transit_max = log.transit_max.max(transit);
                }
                if kind == pb::WatchEventKind::Final {
                    log.final_at = Some((Instant::now(), received));
                    log.final_built = built;
                    finals.fetch_add(1, Ordering::Relaxed);
                    final_ok &= progress.status == pb::JobStatus::Succeeded as i32
                        && progress.rows_processed == rows
                        && progress.total_rows == Some(rows);
                }
            }
            Ok(None) => break,
            Err(status) => {
                log.error = Some(format!("WatchJob stream: {status}"));
                break;
            }
        }
    }
    if first {
        subscribed.add_permits(1);
    }
    log.well_formed = final_ok && log.final_at.is_some() && log.error.is_none();
    log
}

/// A watch run: `n` watchers of one new job of `rows` rows.
pub struct WatchRun {
    /// Watchers.
    pub n: usize,
    /// Rows of the job.
    pub rows: i64,
    /// From the first WatchJob call to every watcher holding its SNAPSHOT.
    pub subscribe_time: Duration,
    /// FINAL messages already delivered when the memory was read (should be 0).
    pub finals_at_memory: usize,
    /// Server memory before the watchers subscribed and with them open.
    pub memory: Option<(Memory, Memory)>,
    /// Simulator calls per route in `ROUTES` during the run.
    pub calls: [u64; 3],
    /// Simulator calls on every route during the run (the create excluded).
    pub total_calls: u64,
    /// Messages delivered by kind: snapshot, progress, heartbeat, final.
    pub kinds: [u64; 4],
    /// Fewest and most messages one watcher received.
    pub per_watcher: (u64, u64),
    /// Watchers whose stream was a SNAPSHOT ... FINAL (SUCCEEDED, every row), then OK.
    pub well_formed: usize,
    /// Errors, with how many watchers had each (at most a few kinds are kept).
    pub errors: Vec<String>,
    /// From the first WatchJob call to the last watcher's FINAL.
    pub all_final_time: Duration,
    /// The upstream job, created to completed (the simulator's timestamps).
    pub upstream_duration: Duration,
    /// FINAL delivery lag after the upstream completion: first, median, last watcher.
    pub lag: (Duration, Duration, Duration),
    /// When the gateway built the FINAL messages, after the upstream completion:
    /// first, median, last watcher.
    pub built: (Duration, Duration, Duration),
    /// Time in transit (built by the gateway → received by the client): mean and
    /// worst over every message.
    pub transit: (Duration, Duration),
    /// Upstream pollers still running in the gateway once every stream had ended.
    pub pollers_after: usize,
    /// CPU seconds used from the first WatchJob call to the last stream's end: by the
    /// server child, and by this (client) process.
    pub cpu: (f64, f64),
}

/// Creates a job of `rows` rows, then subscribes `n` watchers spread over `channels`
/// and drains every stream to its end; with `sample_memory`, reads the child's memory
/// before the first call and once every watcher holds its snapshot.
pub async fn watch_run(
    child: &mut ServerChild,
    channels: &[Channel],
    n: usize,
    rows: usize,
    sample_memory: bool,
) -> WatchRun {
    let job_id = JobServiceClient::new(channels[0].clone())
        .create_job(pb::CreateJobRequest {
            model: "gpt-oss-20b".into(),
            inputs: Some(pb::create_job_request::Inputs::Prompts(pb::StringInputs {
                values: (0..rows).map(|i| format!("row {i}")).collect(),
            })),
            ..Default::default()
        })
        .await
        .expect("CreateJob")
        .into_inner()
        .job_id;
    let mut calls_before = [0; 3];
    for (count, (_, route)) in calls_before.iter_mut().zip(ROUTES) {
        *count = child.calls(route).await;
    }
    let total_before = child.total_calls().await;
    let before = if sample_memory {
        Some(child.memory().await)
    } else {
        None
    };

    let rows = i64::try_from(rows).expect("rows fit i64");
    let subscribed = Arc::new(Semaphore::new(0));
    let finals = Arc::new(AtomicUsize::new(0));
    let cpu_before = (child.cpu_seconds().await, mem::cpu_seconds());
    let started = Instant::now();
    let watchers: Vec<JoinHandle<WatcherLog>> = (0..n)
        .map(|i| {
            let jobs = JobServiceClient::new(channels[i % channels.len()].clone());
            tokio::spawn(watch_one(
                jobs,
                job_id.clone(),
                rows,
                subscribed.clone(),
                finals.clone(),
            ))
        })
        .collect();
    let all = u32::try_from(n).expect("watcher count fits u32");
    tokio::time::timeout(Duration::from_secs(120), subscribed.acquire_many(all))
        .await
        .expect("every watcher subscribed within 120 s")
        .expect("semaphore open")
        .forget();
    let subscribe_time = started.elapsed();
    let mut finals_at_memory = 0;
    let memory = match before {
        Some(before) => {
            tokio::time::sleep(SETTLE).await;
            let open = child.memory().await;
            finals_at_memory = finals.load(Ordering::Relaxed);
            Some((before, open))
        }
        None => None,
    };

    let mut logs = Vec::with_capacity(n);
    for watcher in watchers {
        let log = tokio::time::timeout(Duration::from_secs(300), watcher)
            .await
            .expect("every watcher done within 300 s")
            .expect("a watcher task panicked");
        logs.push(log);
    }
    let cpu = (
        child.cpu_seconds().await - cpu_before.0,
        mem::cpu_seconds() - cpu_before.1,
    );
    let mut calls = [0; 3];
    for (i, (_, route)) in ROUTES.iter().enumerate() {
        calls[i] = child.calls(route).await - calls_before[i];
    }
    let total_calls = child.total_calls().await - total_before;
    let (created, completed) = upstream_times(child.sim, &job_id).await;
    let pollers_after = child.active_watches().await;

    let mut kinds = [0; 4];
    let mut per_watcher = (u64::MAX, 0);
    let mut errors: Vec<(String, usize)> = Vec::new();
    let mut final_walls = Vec::with_capacity(n);
    let mut built_walls = Vec::with_capacity(n);
    let (mut transit_sum, mut transit_max) = (Duration::ZERO, Duration::ZERO);
    let mut last_final = started;
    for log in &logs {
        let total: u64 = log.kinds.iter().sum();
        per_watcher = (per_watcher.0.min(total), per_watcher.1.max(total));
        for (sum, k) in kinds.iter_mut().zip(log.kinds) {
            *sum += k;
        }
        built_walls.extend(log.final_built);
        transit_sum += log.transit_sum;
        transit_max = transit_max.max(log.transit_max);
        if let Some((at, wall)) = log.final_at {
            last_final = last_final.max(at);
            final_walls.push(wall);
        }
        if let Some(error) = &log.error {
            if let Some(seen) = errors.iter_mut().find(|(e, _)| e == error) {
                seen.1 += 1;
            } else if errors.len() < 5 {
                errors.push((error.clone(), 1));
            }
        }
    }
    let after_completion = |mut walls: Vec<SystemTime>| {
        walls.sort();
        let lag = |wall: Option<&SystemTime>| {
            wall.map_or(Duration::ZERO, |wall| {
                wall.duration_since(completed).unwrap_or(Duration::ZERO)
            })
        };
        (
            lag(walls.first()),
            lag(walls.get(walls.len() / 2)),
            lag(walls.last()),
        )
    };
    let delivered: u64 = kinds.iter().sum();
    WatchRun {
        n,
        rows,
        subscribe_time,
        finals_at_memory,
        memory,
        calls,
        total_calls,
        kinds,
        per_watcher,
        well_formed: logs.iter().filter(|log| log.well_formed).count(),
        errors: errors
            .into_iter()
            .map(|(e, count)| format!("{count} × {e}"))
            .collect(),
        all_final_time: last_final - started,
        upstream_duration: completed.duration_since(created).unwrap_or(Duration::ZERO),
        lag: after_completion(final_walls),
        built: after_completion(built_walls),
        transit: (
            transit_sum / u32::try_from(delivered.max(1)).unwrap_or(u32::MAX),
            transit_max,
        ),
        pollers_after,
        cpu,
    }
}

/// The job's `datetime_created` and `datetime_completed`, read straight from the
/// simulator (after the run's calls were counted).
async fn upstream_times(sim_addr: SocketAddr, job_id: &str) -> (SystemTime, SystemTime) {
    let job: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{sim_addr}/v1/jobs/{job_id}"))
        .header("authorization", format!("Key {}", sim::DEMO_API_KEY))
        .send()
        .await
        .expect("GET the job from the simulator")
        .json()
        .await
        .expect("the simulator's job JSON");
    let time = |field: &str| -> SystemTime {
        let text = job["job"][field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} in the simulator's job {job}"));
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap_or_else(|e| panic!("{field} {text:?} is not RFC 3339: {e}"))
            .into()
    };
    (time("datetime_created"), time("datetime_completed"))
}
