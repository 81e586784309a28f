//! Bounded resources: the advertised HTTP/2 stream limit, the cap on upstream requests
//! in flight, accept back-off when descriptors run out, and health watches at shutdown.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use batchgate::proto::sutro::v1 as pb;
use batchgate::proto::xai::v1 as xai;
use batchgate::sim::{Fault, FaultConfig, FaultRule, SimConfig};
use bytes::Bytes;
use common::replicas::Replica;
use common::{connect, spawn_app_with};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Waits up to `limit` for `done`, checking every 20 ms.
async fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

/// A Health/Watch call of the whole server, as raw HTTP/2: its head, and its one
/// (empty) request message.
fn health_watch(addr: std::net::SocketAddr) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/grpc.health.v1.Health/Watch"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a valid request head")
}
const EMPTY_MESSAGE: &[u8] = &[0, 0, 0, 0, 0];

#[tokio::test]
async fn one_connection_is_held_to_the_advertised_stream_limit() {
    const LIMIT: usize = 50;
    const CALLS: usize = 5_000;
    let app = spawn_app_with(SimConfig::fast(), |layer| {
        layer.http2_max_concurrent_streams = Some(LIMIT as u32);
    })
    .await;
    let tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);

    // A client learns the limit from the server's SETTINGS, which precede any answer.
    // (Streams a client opens before that, past the limit, are refused by the server.)
    let (first, mut first_body) = client
        .clone()
        .ready()
        .await
        .unwrap()
        .send_request(health_watch(app.addr), false)
        .unwrap();
    first_body
        .send_data(Bytes::from_static(EMPTY_MESSAGE), true)
        .unwrap();
    let first = first.await.expect("the first watch is answered");
    assert_eq!(
        client.current_max_send_streams(),
        LIMIT,
        "SETTINGS advertise the limit"
    );

    // Every other call is sent at once; each watch stays open until released.
    let open = Arc::new(AtomicUsize::new(1));
    let peak = Arc::new(AtomicUsize::new(1));
    let finished = Arc::new(AtomicUsize::new(0));
    let release = CancellationToken::new();
    for _ in 1..CALLS {
        let mut client = client.clone().ready().await.unwrap();
        let (response, mut body) = client.send_request(health_watch(app.addr), false).unwrap();
        body.send_data(Bytes::from_static(EMPTY_MESSAGE), true)
            .unwrap();
        let (open, peak, finished, release) = (
            open.clone(),
            peak.clone(),
            finished.clone(),
            release.clone(),
        );
        tokio::spawn(async move {
            let response = response.await.expect("the watch is answered");
            assert_eq!(response.status(), 200);
            let now = open.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            release.cancelled().await;
            // Dropping the stream resets it, which frees its slot for a waiting call.
            open.fetch_sub(1, Ordering::SeqCst);
            drop((response, body));
            finished.fetch_add(1, Ordering::SeqCst);
        });
    }

    assert!(
        eventually(Duration::from_secs(5), || open.load(Ordering::SeqCst)
            == LIMIT)
        .await,
        "{} watches open, not {LIMIT}",
        open.load(Ordering::SeqCst)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        open.load(Ordering::SeqCst),
        LIMIT,
        "the other calls wait for a free stream"
    );

    release.cancel();
    open.fetch_sub(1, Ordering::SeqCst);
    drop((first, first_body));
    assert!(
        eventually(Duration::from_secs(20), || finished.load(Ordering::SeqCst)
            == CALLS - 1)
        .await,
        "only {} of {CALLS} calls got their turn",
        finished.load(Ordering::SeqCst)
    );
    assert_eq!(peak.load(Ordering::SeqCst), LIMIT, "never more at once");
}

#[tokio::test]
async fn upstream_requests_in_flight_are_capped_per_upstream() {
    const CAP: u64 = 8;
    let sim = SimConfig {
        // Each answer takes a while, so that callers pile up behind the cap.
        faults: FaultConfig {
            latency_ms: 10,
            ..FaultConfig::default()
        },
        ..SimConfig::fast()
    };
    let app = spawn_app_with(sim, |layer| {
        layer.upstream_max_in_flight = Some(CAP as usize);
    })
    .await;

    let mut calls = tokio::task::JoinSet::new();
    for i in 0..1_000 {
        let (mut jobs, mut batches) = (app.jobs.clone(), app.batches.clone());
        calls.spawn(async move {
            if i % 2 == 0 {
                jobs.list_jobs(pb::ListJobsRequest::default())
                    .await
                    .map(drop)
            } else {
                batches
                    .list_batches(xai::ListBatchesRequest::default())
                    .await
                    .map(drop)
            }
        });
    }
    let mut failed = Vec::new();
    while let Some(outcome) = calls.join_next().await {
        if let Err(status) = outcome.unwrap() {
            failed.push(status);
        }
    }
    assert!(
        failed.is_empty(),
        "{} calls failed: {:?}",
        failed.len(),
        failed.first()
    );
    for upstream in ["sutro", "xai"] {
        let peak = app.sim.peak_in_flight(upstream);
        // At least a few at once: the calls really did pile up.
        assert!(
            (2..=CAP).contains(&peak),
            "{upstream}: {peak} requests at once"
        );
    }
}

#[tokio::test]
async fn a_call_waiting_for_an_upstream_slot_gives_up_at_its_deadline() {
    let mut app = spawn_app_with(SimConfig::fast(), |layer| {
        layer.upstream_max_in_flight = Some(1);
    })
    .await;
    const ROUTE: &str = "GET /v1/list-jobs";
    app.sim.inject(FaultRule {
        route: ROUTE.into(),
        times: 1,
        fault: Fault::Delay(Duration::from_secs(3)),
    });
    let mut slow_jobs = app.jobs.clone();
    let slow =
        tokio::spawn(async move { slow_jobs.list_jobs(pb::ListJobsRequest::default()).await });
    assert!(eventually(Duration::from_secs(5), || app.sim.calls(ROUTE) == 1).await);

    let mut request = tonic::Request::new(pb::ListJobsRequest::default());
    request.set_timeout(Duration::from_millis(1_000));
    let started = Instant::now();
    let err = app.jobs.list_jobs(request).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(app.sim.calls(ROUTE), 1, "it never reached upstream");
    // Nothing was sent, so the error blames no upstream (a create would not be "may exist").
    use tonic_types::StatusExt;
    let info = err.get_error_details().error_info().cloned();
    assert!(
        info.as_ref()
            .is_some_and(|i| !i.metadata.contains_key("upstream")),
        "{info:?}"
    );

    slow.await
        .unwrap()
        .expect("the call holding the slot succeeds");
}

/// CPU time (user + system) the process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process runs");
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let after_name = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second: u64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100);
    Duration::from_millis(ticks * 1000 / per_second)
}

#[tokio::test]
async fn running_out_of_descriptors_backs_off_instead_of_spinning() {
    let replica = Replica::spawn_under(&["prlimit", "--nofile=64:64"], &[], &[]).await;
    // Far more connections than the gateway has descriptors: accept fails with EMFILE
    // while connections wait in the listen queue.
    let mut held = Vec::new();
    for _ in 0..150 {
        held.push(tokio::net::TcpStream::connect(replica.addr).await.unwrap());
    }
    let descriptors =
        || std::fs::read_dir(format!("/proc/{}/fd", replica.pid())).map_or(0, |fds| fds.count());
    assert!(
        eventually(Duration::from_secs(5), || descriptors() >= 60).await,
        "the gateway holds only {} descriptors",
        descriptors()
    );

    let window = Duration::from_secs(2);
    let before = cpu_time(replica.pid());
    tokio::time::sleep(window).await;
    let used = cpu_time(replica.pid()) - before;
    assert!(
        used < window * 3 / 10,
        "the gateway used {used:?} of CPU in {window:?} while out of descriptors"
    );
    let warnings = replica
        .log()
        .iter()
        .filter(|line| line.contains("cannot accept connections"))
        .count();
    assert_eq!(warnings, 1, "one warning per episode");

    drop(held);
    let call = async {
        let mut health = HealthClient::new(connect(replica.addr).await);
        health.check(HealthCheckRequest::default()).await
    };
    let reply = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the gateway accepts again once descriptors are free")
        .expect("a health answer");
    assert_eq!(reply.into_inner().status(), ServingStatus::Serving);
}

#[tokio::test]
async fn health_watches_end_at_shutdown_without_waiting_out_the_drain() {
    let mut app = spawn_app_with(SimConfig::fast(), |layer| {
        layer.drain_timeout_ms = Some(30_000);
    })
    .await;
    let mut health = HealthClient::new(connect(app.addr).await);
    let mut watch = health
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );

    let started = Instant::now();
    let shutdown = tokio::spawn(app.app.take().expect("the gateway").shutdown());
    let within = Duration::from_secs(5);
    let next = tokio::time::timeout(within, watch.message())
        .await
        .expect("a status before the end")
        .expect("a status, not an error")
        .expect("a message");
    assert_eq!(next.status(), ServingStatus::NotServing);
    let end = tokio::time::timeout(within, watch.message())
        .await
        .expect("the watch ends at shutdown");
    assert_eq!(end.unwrap_err().code(), Code::Unavailable);
    tokio::time::timeout(within, shutdown)
        .await
        .expect("shutdown does not wait out the 30 s drain")
        .unwrap()
        .expect("a clean shutdown");
    assert!(started.elapsed() < within, "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_waiting_for_the_byte_budget_never_stall_their_connection() {
    // Each message (~3 MiB) fits the 4 MiB budget alone, so the creates take turns.
    // They share one HTTP/2 connection, where a waiting call's unread bytes must not
    // use up the window the call that holds the budget still has to read through.
    const CREATES: usize = 6;
    let app = spawn_app_with(SimConfig::fast(), |layer| {
        layer.max_request_bytes_in_flight = Some(4 << 20);
    })
    .await;
    let prompts: Vec<String> = (0..3_000).map(|i| format!("{i:0>1000}")).collect();
    let calls = (0..CREATES).map(|_| {
        let (mut jobs, values) = (app.jobs.clone(), prompts.clone());
        tokio::spawn(async move {
            let mut request = tonic::Request::new(pb::CreateJobRequest {
                model: "gpt-oss-20b".into(),
                inputs: Some(pb::create_job_request::Inputs::Prompts(pb::StringInputs {
                    values,
                })),
                ..Default::default()
            });
            request.set_timeout(Duration::from_secs(60));
            jobs.create_job(request).await
        })
    });
    let all = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(calls),
    )
    .await
    .expect("every create finishes");
    for created in all {
        let job = created.expect("joined").expect("created").into_inner();
        assert!(!job.job_id.is_empty());
    }
    assert_eq!(app.sim.calls("POST /v1/batch-inference"), CREATES as u64);
}
