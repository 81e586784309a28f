//! Whom the gateway's status cache answers: each tenant its own entries, only while the
//! upstream accepted its key lately on that replica; and while Redis is gone and after.

use std::time::{Duration, Instant};

use batchgate::config::Config;
use batchgate::keys::{ResourceKey, kind};
use batchgate::proto::sutro::v1 as pb;
use batchgate::proto::sutro::v1::job_service_client::JobServiceClient;
use batchgate::server::App;
use batchgate::shared_redis::SharedRedis;
use batchgate::sim::{DEMO_API_KEY, Fault, FaultRule, RetryAfterForm};
use batchgate::tenant::{ANONYMOUS_TENANT, tenant_of_key};
use tonic::Code;

use crate::common::redis::RedisServer;
use crate::common::{connect, create_job, spawn_app_with, test_settings, with_key};
use crate::shared_redis::{target, wait_until_up};
use crate::status_cache::{JOB_ROUTE, age, app_on, get_job, queued, x_cache};

fn get_job_request(job_id: &str) -> pb::GetJobRequest {
    pb::GetJobRequest {
        job_id: job_id.into(),
    }
}

/// A handle on the test's Redis, to look at what the gateway wrote.
async fn look_into(server: &RedisServer) -> SharedRedis {
    let redis = SharedRedis::connect(&target(&server.url()), Duration::from_millis(500))
        .expect("a Redis handle");
    wait_until_up(&redis).await;
    redis
}

#[tokio::test]
async fn tenants_never_share_entries_and_each_miss_uses_its_own_key() {
    let server = RedisServer::start();
    let mut app = app_on(Some(server.url()), 60_000, queued()).await;
    let job_id = create_job(&mut app, vec!["a".into()]).await;

    // Tenant "anonymous": no credentials, the gateway's own key.
    let managed = get_job(&mut app, &job_id).await;
    assert_eq!(x_cache(&managed), "MISS");
    assert_eq!(x_cache(&get_job(&mut app, &job_id).await), "HIT");

    // A wrong key is its own tenant: its miss goes upstream with it, and fails there.
    let err = app
        .jobs
        .get_job(with_key(get_job_request(&job_id), "sk_wrong_key_123"))
        .await
        .expect_err("the upstream refuses the key");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert_eq!(app.sim.calls(JOB_ROUTE), 2);

    // The demo key passed through is another tenant the upstream accepts: its own MISS.
    let passthrough = app
        .jobs
        .get_job(with_key(get_job_request(&job_id), DEMO_API_KEY))
        .await
        .expect("accepted");
    assert_eq!(x_cache(&passthrough), "MISS");
    assert_eq!(passthrough.get_ref(), managed.get_ref());
    let again = app
        .jobs
        .get_job(with_key(get_job_request(&job_id), DEMO_API_KEY))
        .await
        .expect("accepted");
    assert_eq!(x_cache(&again), "HIT");
    assert_eq!(app.sim.calls(JOB_ROUTE), 3);

    // One entry per tenant in Redis, named by the tenant, never by its key.
    let redis = look_into(&server).await;
    for tenant in [ANONYMOUS_TENANT.to_string(), tenant_of_key(DEMO_API_KEY)] {
        let key = ResourceKey::new(tenant, "sutro", kind::JOB, job_id.clone()).to_string();
        let exists: bool = redis
            .query(redis::cmd("EXISTS").arg(&key))
            .await
            .expect("EXISTS");
        assert!(exists, "{key}");
    }
    let keys: Vec<String> = redis
        .query(redis::cmd("KEYS").arg("*"))
        .await
        .expect("KEYS");
    assert!(keys.iter().all(|k| !k.contains(DEMO_API_KEY)), "{keys:?}");
}

#[tokio::test]
async fn a_key_revoked_upstream_stops_getting_cached_answers_within_auth_ttl() {
    let server = RedisServer::start();
    let mut app = spawn_app_with(queued(), |settings| {
        settings.redis_url = Some(server.url());
        settings.cache_live_ttl_ms = Some(60_000);
        settings.auth_ttl_secs = Some(1);
    })
    .await;
    let job_id = create_job(&mut app, vec!["a".into()]).await;
    let request = || with_key(get_job_request(&job_id), DEMO_API_KEY);
    let miss = app.jobs.get_job(request()).await.expect("accepted");
    assert_eq!(x_cache(&miss), "MISS");

    // The upstream now refuses the key, as it would once the key is revoked.
    app.sim.inject(FaultRule {
        route: JOB_ROUTE.into(),
        times: 1_000,
        fault: Fault::Status {
            code: 401,
            retry_after_secs: None,
            retry_after_form: RetryAfterForm::Seconds,
        },
    });
    let hit = app
        .jobs
        .get_job(request())
        .await
        .expect("still vouched for");
    assert_eq!(x_cache(&hit), "HIT");

    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let err = app
        .jobs
        .get_job(request())
        .await
        .expect_err("past auth_ttl the entry is not served to an unchecked key");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert_eq!(app.sim.calls(JOB_ROUTE), 2);
    let err = app
        .jobs
        .get_job(request())
        .await
        .expect_err("still refused");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_test_fails_no_call_and_is_used_again_once_back() {
    let mut server = RedisServer::start();
    let mut app = app_on(Some(server.url()), 60_000, queued()).await;
    let cached = create_job(&mut app, vec!["a".into()]).await;
    assert_eq!(x_cache(&get_job(&mut app, &cached).await), "MISS");

    server.stop();
    // What this replica holds still answers; a new key goes upstream; nothing fails.
    let hit = get_job(&mut app, &cached).await;
    assert_eq!(x_cache(&hit), "HIT");
    for _ in 0..3 {
        let other = create_job(&mut app, vec!["b".into()]).await;
        let started = Instant::now();
        let miss = get_job(&mut app, &other).await;
        assert_eq!((x_cache(&miss), age(&miss)), ("MISS", 0));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    server.restart();
    let redis = look_into(&server).await;
    // The gateway finds Redis again by itself: its entries land there, and are HITs.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let job_id = create_job(&mut app, vec!["c".into()]).await;
        assert_eq!(x_cache(&get_job(&mut app, &job_id).await), "MISS");
        let key =
            ResourceKey::new(ANONYMOUS_TENANT, "sutro", kind::JOB, job_id.clone()).to_string();
        let stored: bool = redis
            .query(redis::cmd("EXISTS").arg(&key))
            .await
            .unwrap_or(false);
        if stored {
            assert_eq!(x_cache(&get_job(&mut app, &job_id).await), "HIT");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway never used Redis again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_second_replica_trusts_the_first_ones_acceptance_and_hits_what_it_read() {
    let server = RedisServer::start();
    let mut app = app_on(Some(server.url()), 60_000, queued()).await;
    let mut settings = test_settings(&app.sim);
    settings.redis_url = Some(server.url());
    settings.cache_live_ttl_ms = Some(60_000);
    let other = App::start(Config::resolve(settings).expect("valid config"))
        .await
        .expect("a second replica starts");
    let mut replica = JobServiceClient::new(connect(other.local_addr()).await);

    let job_id = create_job(&mut app, vec!["a".into()]).await;
    let read = get_job(&mut app, &job_id).await;
    assert_eq!(x_cache(&read), "MISS");
    // The upstream accepted the key on the first replica moments ago: the second one
    // knows it through Redis and need not ask the upstream again to learn it.
    let shared = replica
        .get_job(get_job_request(&job_id))
        .await
        .expect("GetJob");
    assert_eq!(
        x_cache(&shared),
        "HIT",
        "what one replica read, the other serves"
    );
    assert_eq!(shared.get_ref(), read.get_ref());
    assert_eq!(app.sim.calls(JOB_ROUTE), 1);

    // One acceptance for the tenant and provider, under the tenant's hash tag, that
    // lapses with the auth TTL; no credential in its name.
    let redis = look_into(&server).await;
    let names: Vec<String> = redis
        .query(redis::cmd("KEYS").arg("batchgate:*:auth"))
        .await
        .expect("KEYS");
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].contains(":sutro:"), "{names:?}");
    assert!(!names[0].contains(DEMO_API_KEY));
    let left: i64 = redis
        .query(redis::cmd("PTTL").arg(&names[0]))
        .await
        .expect("PTTL");
    assert!(left > 0, "{} has {left} ms left", names[0]);
    other.shutdown().await.expect("the second replica stops");
}
