//! Keyed creates on the Redis idempotency store against real Redis: replicas racing one
//! request id, failures and unknown outcomes, a dead creator, Redis away; job records.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use batchgate::deadline::Deadline;
use batchgate::error::{Error, UpstreamId};
use batchgate::idempotency::{
    Claim, Entry, IdempotencyStore, Outcome, Record, RedisIdempotency, create_once, fingerprint,
};
use batchgate::keys::{ResourceKey, kind};
use batchgate::records::{JobRecord, RecordStore, RedisRecords};
use batchgate::shared_redis::{RedisTarget, SharedRedis};
use tonic::Code;

use crate::common::redis::{RedisCluster, RedisServer};
use crate::shared_redis::{target, wait_until_up};

fn redis(target: &RedisTarget) -> SharedRedis {
    SharedRedis::connect(target, Duration::from_millis(250)).expect("a Redis handle")
}

/// One replica's store on `redis`.
fn replica(redis: &SharedRedis) -> Arc<dyn IdempotencyStore> {
    Arc::new(RedisIdempotency::new(
        redis.clone(),
        Duration::from_secs(60),
    ))
}

fn key(request_id: &str) -> ResourceKey {
    ResourceKey::new("tenant-a", "xai", kind::IDEMPOTENCY, request_id)
}

fn upstream() -> UpstreamId {
    UpstreamId {
        provider: "xai",
        host: "api.x.ai".into(),
    }
}

type Create = Pin<Box<dyn Future<Output = batchgate::error::Result<(String, ())>> + Send>>;

/// Counts the creates that ran, across every replica.
#[derive(Clone, Default)]
struct Creates(Arc<AtomicUsize>);

impl Creates {
    /// A create that takes 100 ms and makes `id`.
    fn making(&self, id: String) -> Create {
        let count = self.0.clone();
        Box::pin(async move {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok((id, ()))
        })
    }

    /// A create that fails with `error`.
    fn failing(&self, error: Error) -> Create {
        let count = self.0.clone();
        Box::pin(async move {
            count.fetch_add(1, Ordering::SeqCst);
            Err(error)
        })
    }

    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

async fn once(
    store: &Arc<dyn IdempotencyStore>,
    request_id: &str,
    content: &str,
    create: Create,
) -> batchgate::error::Result<Outcome<()>> {
    create_once(
        store,
        key(request_id),
        fingerprint(content.as_bytes()),
        Deadline::after(Duration::from_secs(10)),
        Duration::from_secs(5),
        &upstream(),
        create,
    )
    .await
}

fn assert_may_exist(error: &Error) {
    assert_eq!(error.code(), Code::FailedPrecondition, "{error}");
    assert!(
        error.to_string().contains("may have been created"),
        "{error}"
    );
}

/// 20 calls with one request id spread over two replicas: one create, one id.
async fn two_replicas_race_one_request_id(target: RedisTarget) {
    let (a, b) = (redis(&target), redis(&target));
    let replicas = [replica(&a), replica(&b)];
    let creates = Creates::default();
    let calls = (0..20).map(|i| {
        let store = replicas[i % 2].clone();
        let create = creates.making(format!("batch-{i}"));
        tokio::spawn(async move { once(&store, "nightly-1", "content", create).await })
    });
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for call in futures_util::future::join_all(calls).await {
        match call.expect("the call's task") {
            Ok(outcome) => {
                created += usize::from(matches!(outcome, Outcome::Created { .. }));
                ids.insert(outcome.id().to_owned());
            }
            Err(error) => assert_may_exist(&error),
        }
    }
    assert_eq!(creates.count(), 1, "exactly one upstream create");
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1, "every caller got the same id: {ids:?}");
    // A later retry on either replica replays it without a create.
    let id = ids.into_iter().next().expect("an id");
    for store in &replicas {
        let retry = once(
            store,
            "nightly-1",
            "content",
            creates.making("other".into()),
        )
        .await;
        assert_eq!(
            retry.expect("a replay"),
            Outcome::Replayed { id: id.clone() }
        );
    }
    assert_eq!(creates.count(), 1);
}

#[tokio::test]
async fn two_replicas_racing_one_request_id_create_once() {
    let server = RedisServer::start();
    two_replicas_race_one_request_id(target(&server.url())).await;
}

#[tokio::test]
async fn two_replicas_racing_one_request_id_create_once_on_a_cluster() {
    let cluster = RedisCluster::start();
    let target = cluster.target();
    two_replicas_race_one_request_id(target).await;
}

#[tokio::test]
async fn reuse_failures_and_unknown_outcomes() {
    let server = RedisServer::start();
    let redis = redis(&target(&server.url()));
    let store = replica(&redis);
    let creates = Creates::default();

    // Reusing a request id for other content is refused, without a create.
    once(&store, "r-1", "content", creates.making("b-1".into()))
        .await
        .expect("created");
    let other = once(&store, "r-1", "other content", creates.making("b-2".into())).await;
    let other = other.expect_err("refused");
    assert_eq!(other.code(), Code::FailedPrecondition, "{other}");
    assert!(other.to_string().contains("different request"), "{other}");
    assert_eq!(creates.count(), 1);

    // A create that certainly did not happen frees its request id.
    let refused = creates.failing(Error::InvalidArgument(Vec::new()));
    let first = once(&store, "r-2", "content", refused)
        .await
        .expect_err("refused");
    assert_eq!(first.code(), Code::InvalidArgument);
    let retry = once(&store, "r-2", "content", creates.making("b-3".into())).await;
    assert_eq!(retry.expect("created").id(), "b-3");
    assert_eq!(creates.count(), 3);

    // One whose outcome is unknown is recorded so, and never runs again.
    let lost = Error::DeadlineExceeded {
        upstream: Some(upstream()),
    };
    let first = once(&store, "r-3", "content", creates.failing(lost)).await;
    assert_eq!(first.expect_err("lost").code(), Code::DeadlineExceeded);
    let held: String = redis
        .query(redis::cmd("GET").arg(key("r-3").to_string()))
        .await
        .expect("the entry");
    let held: Entry = serde_json::from_str(&held).expect("JSON");
    assert_eq!(held.record, Record::Unknown);
    let retry = once(&store, "r-3", "content", creates.making("b-4".into())).await;
    assert_may_exist(&retry.expect_err("may exist"));
    assert_eq!(creates.count(), 4, "no second create for r-3");

    // Entries expire with the store's TTL.
    let ttl: i64 = redis
        .query(redis::cmd("PTTL").arg(key("r-3").to_string()))
        .await
        .expect("PTTL");
    assert!((1..=60_000).contains(&ttl), "{ttl}");
}

#[tokio::test]
async fn a_dead_creators_pending_entry_may_exist_and_is_never_created_again() {
    let server = RedisServer::start();
    let redis = redis(&target(&server.url()));
    let store = replica(&redis);
    let creates = Creates::default();
    // Written as a replica that claimed and then died would have left it.
    let dead = Entry {
        fingerprint: fingerprint(b"content"),
        record: Record::Pending { until_ms: 1 },
    };
    let _: () = redis
        .query(
            redis::cmd("SET")
                .arg(key("r-dead").to_string())
                .arg(serde_json::to_string(&dead).expect("JSON"))
                .arg("PX")
                .arg(60_000),
        )
        .await
        .expect("SET");
    let retry = once(&store, "r-dead", "content", creates.making("b-1".into())).await;
    assert_may_exist(&retry.expect_err("may exist"));
    assert_eq!(creates.count(), 0);
}

#[tokio::test]
async fn a_late_release_or_settle_never_touches_a_newer_claim() {
    let server = RedisServer::start();
    let store = replica(&redis(&target(&server.url())));
    let entry = |record| Entry {
        fingerprint: "fp".into(),
        record,
    };
    let (old, new) = (
        entry(Record::Pending { until_ms: 1 }),
        entry(Record::Pending { until_ms: 2 }),
    );
    let k = key("r-late");
    assert_eq!(store.claim(&k, &new).await.expect("claim"), Claim::Claimed);
    store.release(&k, &old).await.expect("release");
    store
        .settle(&k, &old, &entry(Record::Unknown))
        .await
        .expect("settle");
    assert_eq!(
        store.claim(&k, &old).await.expect("claim"),
        Claim::Existing(new.clone())
    );
    let created = entry(Record::Created { id: "b-1".into() });
    store.settle(&k, &new, &created).await.expect("settle");
    assert_eq!(
        store.claim(&k, &old).await.expect("claim"),
        Claim::Existing(created)
    );
}

#[tokio::test]
async fn keyed_creates_fail_closed_while_redis_is_away_and_work_again_after() {
    let mut server = RedisServer::start();
    let redis = redis(&target(&server.url()));
    let store = replica(&redis);
    let creates = Creates::default();
    server.stop();
    for request_id in ["r-1", "r-1", "r-2"] {
        let call = once(&store, request_id, "content", creates.making("b-1".into())).await;
        let error = call.expect_err("fails closed");
        assert_eq!(error.code(), Code::Unavailable, "{error}");
        let message = error.to_string();
        assert!(
            message.contains("idempotency store (Redis) is unreachable"),
            "{message}"
        );
        assert!(message.contains("send no request_id"), "{message}");
    }
    assert_eq!(creates.count(), 0, "no create ran without the store");

    server.restart();
    wait_until_up(&redis).await;
    let call = once(&store, "r-1", "content", creates.making("b-1".into())).await;
    assert_eq!(call.expect("created").id(), "b-1");
    assert_eq!(creates.count(), 1);
}

#[tokio::test]
async fn keyed_creates_fail_closed_when_redis_is_too_slow() {
    // Accepts connections and never answers: as a Redis stalled past its bound.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let url = format!("redis://{}", silent.local_addr().expect("its address"));
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let store = replica(&redis(&target(&url)));
    let creates = Creates::default();
    let started = std::time::Instant::now();
    let call = once(&store, "r-1", "content", creates.making("b-1".into())).await;
    let error = call.expect_err("fails closed");
    assert_eq!(error.code(), Code::Unavailable, "{error}");
    assert!(error.to_string().contains("unreachable"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "bounded by the Redis timeout"
    );
    assert_eq!(creates.count(), 0);
    held.abort();
}

#[tokio::test]
async fn job_records_are_shared_per_tenant_and_expire() {
    let mut server = RedisServer::start();
    let redis = redis(&target(&server.url()));
    let (a, b) = (
        RedisRecords::new(redis.clone(), Duration::from_secs(60)),
        RedisRecords::new(redis.clone(), Duration::from_secs(60)),
    );
    let key = |tenant: &str| ResourceKey::new(tenant, "sutro", kind::RECORD, "job-1");
    let record = JobRecord {
        id_column_name: Some("row_id".into()),
    };
    a.put(&key("tenant-a"), record.clone()).await.expect("put");
    assert_eq!(b.get(&key("tenant-a")).await.expect("get"), Some(record));
    assert_eq!(
        b.get(&key("tenant-b")).await.expect("get"),
        None,
        "per tenant"
    );
    b.put(&key("tenant-a"), JobRecord::default())
        .await
        .expect("put");
    assert_eq!(
        a.get(&key("tenant-a")).await.expect("get"),
        Some(JobRecord::default())
    );
    let ttl: i64 = redis
        .query(redis::cmd("PTTL").arg(key("tenant-a").to_string()))
        .await
        .expect("PTTL");
    assert!((1..=60_000).contains(&ttl), "{ttl}");
    // Without Redis a record is an error the caller logs, never a hang.
    server.stop();
    let error = a.get(&key("tenant-a")).await.expect_err("unreachable");
    assert_eq!(error.code(), Code::Unavailable, "{error}");
}
