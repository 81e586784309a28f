//! Caller rate limits on real Redis (one server and a 3-master Cluster): replicas share
//! one bucket, Redis going away falls back as configured, and three gateways hold a tenant
//! to its rate end to end while another tenant goes on unaffected.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use batchgate::config::Config;
use batchgate::proto::sutro::v1 as jobs;
use batchgate::proto::sutro::v1::job_service_client::JobServiceClient;
use batchgate::ratelimit::{Class, Limit, LimitSetting, RateLimiter, RedisDown, RedisLimiter};
use batchgate::server::App;
use batchgate::shared_redis::{RedisTarget, SharedRedis};
use batchgate::sim::{self, SimConfig};
use batchgate::tenant::ANONYMOUS_TENANT;
use tokio::task::JoinSet;
use tonic::Code;
use tonic_types::StatusExt;

use crate::common::redis::{RedisCluster, RedisServer};
use crate::common::{connect, test_settings, with_key};
use crate::shared_redis::{Logs, target, wait_until_up};

/// A slow refill (one call a second), so that a test's own pace never adds calls.
const SLOW: Limit = Limit {
    per_second: 1.0,
    burst: 10,
};

fn replica(target: &RedisTarget, down: RedisDown, replicas: u32) -> RedisLimiter {
    let redis = SharedRedis::connect(target, Duration::from_millis(250)).expect("a Redis handle");
    RedisLimiter::new(redis, down, replicas, Duration::from_secs(10))
}

/// Two replicas alternating on one tenant's bucket: the burst is shared, not doubled,
/// and `remaining` counts down across both.
async fn replicas_share_one_bucket(target: RedisTarget) {
    let replicas = [
        replica(&target, RedisDown::Local, 2),
        replica(&target, RedisDown::Local, 2),
    ];
    let mut remaining = Vec::new();
    let mut refused = Vec::new();
    for i in 0..20 {
        let decision = replicas[i % 2].check("tenant-a", Class::Read, SLOW).await;
        if decision.admitted {
            remaining.push(decision.remaining);
        } else {
            refused.push(decision);
        }
    }
    assert_eq!(remaining, (0..10).rev().collect::<Vec<u32>>());
    assert_eq!(refused.len(), 10);
    for decision in &refused {
        assert_eq!(decision.remaining, 0);
        assert!(
            decision.retry_after > Duration::ZERO && decision.retry_after <= Duration::from_secs(1),
            "{decision:?}"
        );
        // Empty: the whole burst takes about ten seconds to come back.
        assert!(decision.reset > Duration::from_secs(9), "{decision:?}");
    }
    // Other tenants and other classes have buckets of their own.
    assert!(
        replicas[0]
            .check("tenant-b", Class::Read, SLOW)
            .await
            .admitted
    );
    assert!(
        replicas[1]
            .check("tenant-a", Class::Create, SLOW)
            .await
            .admitted
    );

    // The bucket is one key, hash-tagged by tenant and class, gone once full again.
    let redis = SharedRedis::connect(&target, Duration::from_millis(500)).expect("a handle");
    let key = RedisLimiter::key("tenant-a", Class::Read).to_string();
    assert_eq!(key, "batchgate:{tenant-a:gateway:read}:ratelimit");
    let ttl_ms: i64 = redis
        .query(redis::cmd("PTTL").arg(&key))
        .await
        .expect("PTTL answers");
    assert!((9_000..=11_000).contains(&ttl_ms), "PTTL {ttl_ms}");
}

#[tokio::test]
async fn replicas_share_one_bucket_per_tenant_and_class() {
    let server = RedisServer::start();
    replicas_share_one_bucket(target(&server.url())).await;
}

#[tokio::test]
async fn replicas_share_one_bucket_per_tenant_and_class_on_a_cluster() {
    let cluster = RedisCluster::start();
    replicas_share_one_bucket(cluster.target()).await;
}

#[tokio::test]
async fn without_redis_each_replica_limits_at_its_share_and_says_so_once() {
    let logs = Logs::default();
    let _guard = logs.install();
    let mut server = RedisServer::start();
    let limiter = replica(&target(&server.url()), RedisDown::Local, 2);
    assert!(limiter.check("t", Class::Read, SLOW).await.admitted);

    server.stop();
    let mut admitted = 0;
    for _ in 0..20 {
        admitted += usize::from(limiter.check("t", Class::Read, SLOW).await.admitted);
    }
    // Half of the burst of 10: the other replica has the other half.
    assert_eq!(admitted, 5);
    let text = logs.text();
    assert_eq!(
        text.matches("rate limits cannot reach Redis").count(),
        1,
        "{text}"
    );

    server.restart();
    let redis = SharedRedis::connect(&target(&server.url()), Duration::from_millis(250)).unwrap();
    wait_until_up(&redis).await;
    let mut back = false;
    for _ in 0..50 {
        // The restarted Redis is empty: a full bucket again, shared.
        let decision = limiter.check("t", Class::Read, SLOW).await;
        if decision.admitted && decision.remaining == 9 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "the limiter never went back to Redis");
    let text = logs.text();
    assert_eq!(
        text.matches("shared through Redis again").count(),
        1,
        "{text}"
    );
}

#[tokio::test]
async fn without_redis_open_mode_admits_every_call() {
    let mut server = RedisServer::start();
    let limiter = replica(&target(&server.url()), RedisDown::Open, 2);
    server.stop();
    for _ in 0..30 {
        let decision = limiter.check("t", Class::Read, SLOW).await;
        assert!(decision.admitted);
        assert_eq!(decision.remaining, SLOW.burst);
    }
}

/// Three gateways on one Redis; tenant `anonymous` (callers without a key) limited to
/// 50/s with a burst of 10 on reads, driven at 500 calls/s for 5 s over six connections:
/// about 10 + 50 × 5 calls are admitted, whichever replica they reach. A caller with
/// another key (another tenant, refused upstream) is never limited meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_hold_a_tenant_to_its_rate_and_leave_others_alone() {
    let server = RedisServer::start();
    let sim = sim::start(SimConfig::fast(), SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator starts");
    let limit = |per_second: f64, burst: u32| {
        BTreeMap::from([(
            Class::Read,
            LimitSetting {
                per_second,
                burst: Some(burst),
            },
        )])
    };
    let mut settings = test_settings(&sim);
    settings.redis_url = Some(server.url());
    // Three gateways, the simulator and the load share this test's two threads: a call
    // that waits 250 ms for a thread would count as Redis gone and fall back to local
    // limits, which is the fallback working, not the shared limit being measured.
    settings.redis_timeout_ms = Some(5_000);
    // Everyone: a large burst refilled slowly, so another tenant's remaining counts down.
    settings.rate_limits = Some(limit(1.0, 1_000));
    settings.tenant_limits = Some(BTreeMap::from([(
        ANONYMOUS_TENANT.to_owned(),
        limit(50.0, 10),
    )]));
    let config = Config::resolve(settings).expect("valid config");
    let mut apps = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let app = App::start(config.clone()).await.expect("a replica starts");
        for _ in 0..2 {
            clients.push(JobServiceClient::new(connect(app.local_addr()).await));
        }
        apps.push(app);
    }

    const CALLS: usize = 2_500;
    const EVERY: Duration = Duration::from_millis(2);
    let mut ticks = tokio::time::interval(EVERY);
    let mut managed = JoinSet::new();
    let mut other = JoinSet::new();
    ticks.tick().await;
    let started = Instant::now();
    let mut last = started;
    for i in 0..CALLS {
        ticks.tick().await;
        last = Instant::now();
        let mut client = clients[i % clients.len()].clone();
        managed.spawn(async move {
            let answer = client.list_jobs(jobs::ListJobsRequest::default()).await;
            (Instant::now(), answer.map(|r| r.metadata().clone()))
        });
        if i % 50 == 0 {
            let mut client = clients[(i / 50) % clients.len()].clone();
            other.spawn(async move {
                let request = with_key(jobs::ListJobsRequest::default(), "sk_other_tenant");
                (
                    i,
                    client
                        .list_jobs(request)
                        .await
                        .map(|r| r.metadata().clone()),
                )
            });
        }
    }

    let remaining = |metadata: &tonic::metadata::MetadataMap| -> u32 {
        metadata
            .get("x-ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("x-ratelimit-remaining on every limited call")
    };
    let (mut admitted, mut refused, mut saw_zero) = (0, 0, false);
    let (mut first_done, mut last_done) = (None::<Instant>, started);
    while let Some(call) = managed.join_next().await {
        let (done, answer) = call.expect("the call's task");
        first_done = Some(first_done.map_or(done, |first| first.min(done)));
        last_done = last_done.max(done);
        match answer {
            Ok(metadata) => {
                admitted += 1;
                let left = remaining(&metadata);
                assert!(left < 10, "remaining {left}");
                saw_zero |= left == 0;
                assert_eq!(
                    metadata.get("x-ratelimit-limit").unwrap(),
                    "50, 50;w=1;burst=10"
                );
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                refused += 1;
                assert_eq!(remaining(status.metadata()), 0);
                let details = status.get_error_details();
                let delay = details.retry_info().and_then(|r| r.retry_delay);
                assert!(
                    delay.is_some_and(|d| d <= Duration::from_millis(20)),
                    "{delay:?}"
                );
                let quota = details.quota_failure().expect("QuotaFailure");
                assert_eq!(quota.violations[0].subject, "tenant:anonymous/class:read");
            }
        }
    }
    // 10 + 50 × 5 = 260 when the gateways keep pace with the load. On a busy machine
    // they fall behind and decide the last calls late, so the bucket refills over the
    // time the decisions really took: at least from the first answer to the last call
    // sent, at most from the first call sent to the last answer.
    let bounds = |window: Duration| 10.0 + 50.0 * window.as_secs_f64();
    let least = bounds(last - first_done.unwrap_or(started)) * 0.95;
    let most = bounds(last_done - started) * 1.05;
    assert!(
        (least..=most).contains(&f64::from(admitted)),
        "admitted {admitted} of {CALLS} ({refused} refused), expected {least:.0} to {most:.0} \
         (sent over {:?}, answered {:?} after the last)",
        last - started,
        last_done - last
    );
    assert!(saw_zero, "under load the bucket runs empty");

    // The other tenant: refused upstream (its key is not the simulator's), never here.
    let mut seen = Vec::new();
    while let Some(call) = other.join_next().await {
        let (i, result) = call.expect("the call's task");
        let status = result.expect_err("the simulator does not know this key");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        seen.push((i, remaining(status.metadata())));
    }
    // Each call takes one from a bucket of 1000 refilled at 1/s, whichever replica it
    // reaches; calls overtake each other under load, so the order is only roughly kept.
    seen.sort();
    let left: Vec<u32> = seen.iter().map(|(_, left)| *left).collect();
    assert_eq!(left.len(), CALLS / 50);
    let distinct: std::collections::BTreeSet<u32> = left.iter().copied().collect();
    assert_eq!(distinct.last(), Some(&999), "{left:?}");
    assert!(
        distinct.first().is_some_and(|&min| min <= 999 - 40),
        "{left:?}"
    );
    assert!(distinct.len() >= 40, "{left:?}");
    assert!(left[..5].iter().all(|&l| l >= 990), "{left:?}");

    for app in apps {
        app.shutdown().await.expect("clean shutdown");
    }
}
