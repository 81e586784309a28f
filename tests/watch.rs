//! WatchJob: snapshot first, progress, heartbeats, a persisted final status, and one
//! upstream subscription shared by every watcher of a job.

mod common;

use std::time::Duration;

use batchgate::proto::sutro::v1::{self as pb, WatchEventKind};
use batchgate::sim::{JobOutcome, SimConfig};
use common::spawn_app_with;
use tonic::Code;

fn slow_sim() -> SimConfig {
    SimConfig {
        rows_per_second: 200.0,
        heartbeat_ms: 100,
        ..SimConfig::fast()
    }
}

async fn create(app: &mut common::TestApp, rows: usize) -> String {
    common::create_job(app, (0..rows).map(|i| format!("prompt {i}")).collect()).await
}

async fn collect(app: &mut common::TestApp, job_id: &str) -> Vec<pb::WatchJobResponse> {
    let mut stream = app
        .jobs
        .watch_job(pb::WatchJobRequest {
            job_id: job_id.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut messages = Vec::new();
    while let Some(message) = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("watch makes progress")
        .unwrap()
    {
        messages.push(message);
    }
    messages
}

#[tokio::test]
async fn watching_a_job_to_success() {
    let mut app = spawn_app_with(slow_sim(), |_| {}).await;
    let job_id = create(&mut app, 100).await;
    let messages = collect(&mut app, &job_id).await;

    assert_eq!(messages[0].kind(), WatchEventKind::Snapshot);
    let last = messages.last().unwrap();
    assert_eq!(last.kind(), WatchEventKind::Final);
    let progress = last.progress.clone().unwrap();
    assert_eq!(progress.status(), pb::JobStatus::Succeeded);
    assert_eq!(
        (progress.rows_processed, progress.total_rows),
        (100, Some(100))
    );
    assert!(progress.output_tokens.unwrap_or(0) > 0);
    let rows: Vec<i64> = messages
        .iter()
        .map(|m| m.progress.as_ref().unwrap().rows_processed)
        .collect();
    assert!(
        rows.windows(2).all(|w| w[0] <= w[1]),
        "rows never go back: {rows:?}"
    );
    assert!(
        messages
            .iter()
            .filter(|m| m.kind() == WatchEventKind::Progress)
            .count()
            >= 2
    );
    assert!(
        messages
            .iter()
            .filter(|m| m.kind() == WatchEventKind::Final)
            .count()
            == 1
    );
}

#[tokio::test]
async fn a_failed_job_is_reported_failed_although_every_row_was_streamed() {
    // Every row reported, then 400 ms of finalization before the status is final: long
    // enough for the watcher to be shown all rows under a RUNNING status.
    let sim = SimConfig {
        finalize_ms: 400,
        ..slow_sim()
    };
    let mut app = spawn_app_with(sim, |_| {}).await;
    let job_id = create(&mut app, 50).await;
    app.sim.set_job_outcome(
        &job_id,
        JobOutcome::Fail {
            message: "worker crashed".into(),
        },
    );
    let messages = collect(&mut app, &job_id).await;

    let saw_all_rows = messages.iter().any(|m| {
        m.kind() != WatchEventKind::Final && m.progress.as_ref().unwrap().rows_processed == 50
    });
    assert!(
        saw_all_rows,
        "the stream reported every row before the job failed"
    );
    let last = messages.last().unwrap();
    assert_eq!(last.kind(), WatchEventKind::Final);
    let progress = last.progress.clone().unwrap();
    assert_eq!(progress.status(), pb::JobStatus::Failed);
    assert_eq!(progress.failure_reason.unwrap().message, "worker crashed");
}

#[tokio::test]
async fn many_watchers_share_one_upstream_stream() {
    let mut app = spawn_app_with(slow_sim(), |_| {}).await;
    let job_id = create(&mut app, 200).await;
    let watchers = (0..50).map(|_| {
        let mut client = app.jobs.clone();
        let job_id = job_id.clone();
        tokio::spawn(async move {
            let mut stream = client
                .watch_job(pb::WatchJobRequest { job_id })
                .await
                .unwrap()
                .into_inner();
            let mut last = None;
            while let Some(message) = stream.message().await.unwrap() {
                last = Some(message);
            }
            last.unwrap()
        })
    });
    for last in futures_util::future::join_all(watchers).await {
        let last = last.unwrap();
        assert_eq!(last.kind(), WatchEventKind::Final);
        assert_eq!(last.progress.unwrap().status(), pb::JobStatus::Succeeded);
    }
    assert_eq!(app.sim.calls("GET /v1/stream-job-progress/{job_id}"), 1);
    assert_eq!(
        app.sim.calls("GET /v1/jobs/{job_id}"),
        2,
        "one first read and one final read"
    );
}

#[tokio::test]
async fn heartbeats_flow_while_a_job_waits_and_unknown_jobs_are_not_found() {
    let mut app = spawn_app_with(
        SimConfig {
            queue_ms: 60_000,
            ..SimConfig::fast()
        },
        |s| s.watch_heartbeat_ms = Some(100),
    )
    .await;
    let job_id = create(&mut app, 3).await;
    let mut stream = app
        .jobs
        .watch_job(pb::WatchJobRequest { job_id })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.kind(), WatchEventKind::Snapshot);
    let first = first.progress.unwrap();
    assert_eq!(first.status(), pb::JobStatus::Queued);
    let mut heartbeats = 0;
    while heartbeats < 3 {
        let message = tokio::time::timeout(Duration::from_secs(2), stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if message.kind() == WatchEventKind::Heartbeat {
            heartbeats += 1;
            // Nothing changed: a heartbeat repeats the state as it was observed.
            let progress = message.progress.unwrap();
            assert_eq!(progress.observed_at, first.observed_at);
            assert_eq!(progress.status(), pb::JobStatus::Queued);
        }
    }
    drop(stream);

    let err = app
        .jobs
        .watch_job(pb::WatchJobRequest {
            job_id: "job-00000000-0000-0000-0000-000000000000".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // The last watcher left: the poller stops.
    for _ in 0..100 {
        if app.app.as_ref().unwrap().active_watches() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the upstream watcher kept running with nobody watching");
}

#[tokio::test]
async fn moving_rows_are_never_shown_under_a_stale_starting_status() {
    // A long STARTING phase, which the watcher sees, and sparse upstream heartbeats,
    // so only the first moving rows can prompt the status read.
    let sim = SimConfig {
        start_ms: 400,
        rows_per_second: 200.0,
        heartbeat_ms: 5_000,
        ..SimConfig::fast()
    };
    let mut app = spawn_app_with(sim, |_| {}).await;
    let job_id = create(&mut app, 60).await;
    let messages = collect(&mut app, &job_id).await;
    let statuses: Vec<_> = messages
        .iter()
        .map(|m| m.progress.as_ref().unwrap().status())
        .collect();
    assert!(
        statuses.contains(&pb::JobStatus::Starting),
        "the watcher saw STARTING: {statuses:?}"
    );
    for message in &messages {
        let progress = message.progress.as_ref().unwrap();
        if progress.rows_processed > 0 {
            assert!(
                matches!(
                    progress.status(),
                    pb::JobStatus::Running | pb::JobStatus::Succeeded
                ),
                "rows move only in a running job: {progress:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_watcher_gets_at_most_one_progress_message_per_min_interval() {
    let sim = SimConfig {
        rows_per_second: 100.0,
        ..SimConfig::fast()
    };
    let mut app = spawn_app_with(sim, |s| s.watch_min_interval_ms = Some(300)).await;
    let job_id = create(&mut app, 120).await;
    let mut stream = app
        .jobs
        .watch_job(pb::WatchJobRequest { job_id })
        .await
        .unwrap()
        .into_inner();
    let mut received = Vec::new();
    while let Some(message) = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("watch makes progress")
        .unwrap()
    {
        received.push((std::time::Instant::now(), message));
    }
    let (_, last) = received.last().unwrap();
    assert_eq!(last.kind(), WatchEventKind::Final);
    assert_eq!(last.progress.as_ref().unwrap().rows_processed, 120);
    let updates: Vec<_> = received
        .iter()
        .filter(|(_, m)| {
            matches!(
                m.kind(),
                WatchEventKind::Snapshot | WatchEventKind::Progress
            )
        })
        .map(|(at, _)| *at)
        .collect();
    assert!(
        updates.len() >= 3,
        "the job ran 1.2 s: {} updates",
        updates.len()
    );
    for pair in updates.windows(2) {
        let gap = pair[1] - pair[0];
        // The simulator reports every 20 ms; 300 ms apart means they were merged.
        assert!(
            gap >= Duration::from_millis(250),
            "two updates {gap:?} apart"
        );
    }
}
