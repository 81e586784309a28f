//! The Redis status cache against real Redis: single-flight, TTL by state, stale while
//! revalidating, invalidation, two replicas sharing one Redis, and Redis dying mid-test.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use batchgate::cache::{Fetched, Outcome, RedisCache, Refresh, StatusCache, TtlPolicy};
use batchgate::error::Error;
use batchgate::shared_redis::{RedisTarget, SharedRedis};
use bytes::Bytes;
use futures_util::FutureExt;
use tonic::Code;

use crate::common::redis::{RedisCluster, RedisServer};
use crate::shared_redis::{target, wait_until_up};

const KEY: &str = "batchgate:{tenant-a:sutro:job-1}:status";

fn policy() -> TtlPolicy {
    TtlPolicy {
        live: Duration::from_millis(300),
        terminal: Duration::from_secs(60),
        stale: Duration::from_millis(300),
    }
}

/// One replica's cache on `target`.
fn replica(target: &RedisTarget) -> RedisCache {
    let redis = SharedRedis::connect(target, Duration::from_millis(250)).expect("a Redis handle");
    RedisCache::new(redis, policy(), 10_000)
}

/// Counts upstream reads; each takes a moment, as the upstream would.
#[derive(Clone, Default)]
struct Upstream(Arc<AtomicUsize>);

impl Upstream {
    fn read(&self, body: &'static str, is_final: bool) -> Refresh {
        let calls = self.0.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(Fetched {
                bytes: Bytes::from_static(body.as_bytes()),
                is_final,
            })
        }
        .boxed()
    }

    fn calls(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_cold_lookups_read_upstream_once() {
    let server = RedisServer::start();
    let cache = replica(&target(&server.url()));
    let upstream = Upstream::default();
    let lookups = (0..200).map(|_| {
        let (cache, upstream) = (cache.clone(), upstream.clone());
        tokio::spawn(async move { cache.get_or_refresh(KEY, upstream.read("v1", false)).await })
    });
    for lookup in futures_util::future::join_all(lookups).await {
        assert_eq!(lookup.unwrap().unwrap().bytes, "v1");
    }
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test]
async fn a_revalidation_that_lost_the_race_with_a_finished_read_reads_nothing() {
    let server = RedisServer::start();
    let cache = replica(&target(&server.url()));
    let upstream = Upstream::default();
    let arrived = batchgate::cache::now_ms();
    // Another caller's read finishes after this one arrived, before it asks.
    cache
        .revalidate(KEY, upstream.read("read for us", false), arrived)
        .await
        .unwrap();
    let late = cache
        .revalidate(KEY, upstream.read("again", false), arrived)
        .await
        .unwrap();
    assert_eq!(late.bytes, "read for us");
    // Not even started: the upstream counts a read as soon as it is polled.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(upstream.calls(), 1);
    // A caller that arrived after that read still reads for itself.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let later = batchgate::cache::now_ms();
    let fresh = cache
        .revalidate(KEY, upstream.read("later", false), later)
        .await
        .unwrap();
    assert_eq!(fresh.bytes, "later");
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test]
async fn live_states_expire_quickly_and_terminal_ones_stay() {
    let server = RedisServer::start();
    let cache = replica(&target(&server.url()));
    let upstream = Upstream::default();
    let live = "batchgate:{t:sutro:running}:status";
    let done = "batchgate:{t:sutro:done}:status";
    cache
        .get_or_refresh(live, upstream.read("running", false))
        .await
        .unwrap();
    cache
        .get_or_refresh(done, upstream.read("done", true))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let live_again = cache
        .get_or_refresh(live, upstream.read("running 2", false))
        .await
        .unwrap();
    assert_eq!(
        live_again.outcome,
        Outcome::Miss,
        "past live TTL and stale window"
    );
    let done_again = cache
        .get_or_refresh(done, upstream.read("x", true))
        .await
        .unwrap();
    assert_eq!(
        (done_again.outcome, done_again.bytes.as_ref()),
        (Outcome::Hit, &b"done"[..])
    );
    assert_eq!(upstream.calls(), 3);
    // Redis keeps each entry only while it is worth keeping.
    let redis = SharedRedis::connect(&target(&server.url()), Duration::from_millis(250)).unwrap();
    let live_ms: i64 = redis.query(redis::cmd("PTTL").arg(live)).await.unwrap();
    let done_ms: i64 = redis.query(redis::cmd("PTTL").arg(done)).await.unwrap();
    assert!((1..=600).contains(&live_ms), "live PTTL {live_ms}");
    assert!(done_ms > 50_000, "terminal PTTL {done_ms}");
}

#[tokio::test]
async fn a_stale_entry_is_served_while_one_background_refresh_runs() {
    let server = RedisServer::start();
    let cache = replica(&target(&server.url()));
    let upstream = Upstream::default();
    cache
        .get_or_refresh(KEY, upstream.read("v1", false))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    for _ in 0..10 {
        let stale = cache
            .get_or_refresh(KEY, upstream.read("v2", false))
            .await
            .unwrap();
        assert_eq!(
            (stale.outcome, stale.bytes.as_ref()),
            (Outcome::Stale, &b"v1"[..])
        );
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let fresh = cache
        .get_or_refresh(KEY, upstream.read("v3", false))
        .await
        .unwrap();
    assert_eq!(
        (fresh.outcome, fresh.bytes.as_ref()),
        (Outcome::Hit, &b"v2"[..])
    );
    assert_eq!(
        upstream.calls(),
        2,
        "one background refresh for ten stale reads"
    );
}

/// How many GETs the server has answered.
async fn gets_served(redis: &SharedRedis) -> u64 {
    let stats: String = redis
        .query(redis::cmd("INFO").arg("commandstats"))
        .await
        .unwrap();
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn a_hot_key_costs_no_redis_round_trip_while_fresh() {
    let server = RedisServer::start();
    let cache = replica(&target(&server.url()));
    let upstream = Upstream::default();
    cache
        .get_or_refresh(KEY, upstream.read("v1", true))
        .await
        .unwrap();
    let stats = SharedRedis::connect(&target(&server.url()), Duration::from_millis(250)).unwrap();
    let before = gets_served(&stats).await;
    for _ in 0..100 {
        let hit = cache
            .get_or_refresh(KEY, upstream.read("x", true))
            .await
            .unwrap();
        assert_eq!(hit.outcome, Outcome::Hit);
    }
    assert_eq!(gets_served(&stats).await, before);
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test]
async fn a_failed_refresh_keeps_its_status_and_frees_the_lock_for_others() {
    let server = RedisServer::start();
    let (a, b) = (
        replica(&target(&server.url())),
        replica(&target(&server.url())),
    );
    let failing: Refresh = async { Err(Error::Unavailable("upstream is down".into())) }.boxed();
    let error = a.get_or_refresh(KEY, failing).await.unwrap_err();
    assert_eq!(error.code(), Code::Unavailable);
    // B does not wait out A's lock (300 ms): A gave it back when its refresh failed.
    let upstream = Upstream::default();
    let started = Instant::now();
    let lookup = b
        .get_or_refresh(KEY, upstream.read("v1", false))
        .await
        .unwrap();
    assert_eq!(lookup.outcome, Outcome::Miss);
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn invalidate_drops_the_entry_here_and_in_redis() {
    let server = RedisServer::start();
    let cache = replica(&target(&server.url()));
    let upstream = Upstream::default();
    cache
        .get_or_refresh(KEY, upstream.read("running", true))
        .await
        .unwrap();
    cache.invalidate(KEY).await;
    let other = replica(&target(&server.url()));
    let after = other
        .get_or_refresh(KEY, upstream.read("cancelled", true))
        .await
        .unwrap();
    assert_eq!(
        (after.outcome, after.bytes.as_ref()),
        (Outcome::Miss, &b"cancelled"[..])
    );
    let here = cache
        .get_or_refresh(KEY, upstream.read("x", true))
        .await
        .unwrap();
    assert_eq!(
        (here.outcome, here.bytes.as_ref()),
        (Outcome::Hit, &b"cancelled"[..])
    );

    cache
        .put(
            KEY,
            Fetched {
                bytes: Bytes::from_static(b"watched"),
                is_final: true,
            },
        )
        .await;
    let seen = other.get_or_refresh(KEY, upstream.read("x", true)).await;
    // The other replica's L1 still holds its terminal entry; a fresh replica sees the put.
    assert_eq!(seen.unwrap().outcome, Outcome::Hit);
    let third = replica(&target(&server.url()));
    let put = third
        .get_or_refresh(KEY, upstream.read("x", true))
        .await
        .unwrap();
    assert_eq!(
        (put.outcome, put.bytes.as_ref()),
        (Outcome::Hit, &b"watched"[..])
    );
    assert_eq!(upstream.calls(), 2);
}

/// A slow refresh that read a live state lands after a poller wrote the final one: the
/// final entry stays, in Redis and in both replicas, until an explicit invalidate.
#[tokio::test]
async fn a_late_live_write_never_replaces_a_final_entry() {
    let server = RedisServer::start();
    let (poller, reader) = (
        replica(&target(&server.url())),
        replica(&target(&server.url())),
    );
    let upstream = Upstream::default();
    let live = |body: &'static str| Fetched {
        bytes: Bytes::from_static(body.as_bytes()),
        is_final: false,
    };
    poller
        .put(
            KEY,
            Fetched {
                bytes: Bytes::from_static(b"final"),
                is_final: true,
            },
        )
        .await;
    // The reader's revalidation read RUNNING before the FINAL was written.
    let late = reader
        .revalidate(
            KEY,
            upstream.read("running", false),
            batchgate::cache::now_ms(),
        )
        .await
        .unwrap();
    assert_eq!((late.bytes.as_ref(), late.is_final), (&b"final"[..], true));
    poller.put(KEY, live("late poll")).await;
    for cache in [&poller, &reader, &replica(&target(&server.url()))] {
        let seen = cache
            .get_or_refresh(KEY, upstream.read("x", false))
            .await
            .unwrap();
        assert_eq!(
            (seen.outcome, seen.bytes.as_ref()),
            (Outcome::Hit, &b"final"[..])
        );
    }
    poller.invalidate(KEY).await;
    poller.put(KEY, live("revived")).await;
    let fresh = replica(&target(&server.url()));
    let seen = fresh
        .get_or_refresh(KEY, upstream.read("x", false))
        .await
        .unwrap();
    assert_eq!(seen.bytes.as_ref(), &b"revived"[..]);
    assert_eq!(upstream.calls(), 1);
}

/// Two replicas on one Redis: the second HITs the first's entry; a cold key looked up
/// concurrently on both is read upstream once; polling reads upstream about once per TTL.
async fn two_replicas_share_entries_and_take_turns(target: RedisTarget) {
    let (a, b) = (replica(&target), replica(&target));
    let upstream = Upstream::default();
    a.get_or_refresh(KEY, upstream.read("v1", false))
        .await
        .unwrap();
    let hit = b
        .get_or_refresh(KEY, upstream.read("x", false))
        .await
        .unwrap();
    assert_eq!(
        (hit.outcome, hit.bytes.as_ref()),
        (Outcome::Hit, &b"v1"[..])
    );
    assert_eq!(upstream.calls(), 1);

    let cold = "batchgate:{tenant-a:sutro:job-2}:status";
    let lookups = (0..100).map(|i| {
        let cache = if i % 2 == 0 { a.clone() } else { b.clone() };
        let upstream = upstream.clone();
        tokio::spawn(async move { cache.get_or_refresh(cold, upstream.read("c1", false)).await })
    });
    for lookup in futures_util::future::join_all(lookups).await {
        assert_eq!(lookup.unwrap().unwrap().bytes, "c1");
    }
    assert_eq!(
        upstream.calls(),
        2,
        "one refresh for the cold key across both replicas"
    );

    let polled = "batchgate:{tenant-a:sutro:job-3}:status";
    let before = upstream.calls();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1_500) {
        let (x, y) = tokio::join!(
            a.get_or_refresh(polled, upstream.read("p", false)),
            b.get_or_refresh(polled, upstream.read("p", false)),
        );
        x.unwrap();
        y.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reads = upstream.calls() - before;
    // 1.5 s at a 300 ms TTL: about 5 reads, never one per poll (there were ~100).
    assert!(
        (2..=8).contains(&reads),
        "{reads} upstream reads while polling"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_redis_share_entries_and_take_turns() {
    let server = RedisServer::start();
    two_replicas_share_entries_and_take_turns(target(&server.url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_a_cluster_share_entries_and_take_turns() {
    let cluster = RedisCluster::start();
    let target = cluster.target();
    two_replicas_share_entries_and_take_turns(target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dying_mid_test_never_fails_a_lookup_and_its_return_is_used() {
    let mut server = RedisServer::start();
    let (a, b) = (
        replica(&target(&server.url())),
        replica(&target(&server.url())),
    );
    let upstream = Upstream::default();
    a.get_or_refresh(KEY, upstream.read("v1", true))
        .await
        .unwrap();

    server.stop();
    for i in 0..20 {
        let key = format!("batchgate:{{t:sutro:down-{i}}}:status");
        let started = Instant::now();
        let lookup = b
            .get_or_refresh(&key, upstream.read("direct", false))
            .await
            .unwrap();
        assert_eq!(
            (lookup.outcome, lookup.bytes.as_ref()),
            (Outcome::Miss, &b"direct"[..])
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "lookup {i} took {:?}",
            started.elapsed()
        );
    }
    // Without Redis, concurrent lookups are still coalesced on each replica.
    let before = upstream.calls();
    let (x, y) = tokio::join!(
        b.get_or_refresh("batchgate:{t:sutro:down}:status", upstream.read("d", false)),
        b.get_or_refresh("batchgate:{t:sutro:down}:status", upstream.read("d", false)),
    );
    x.unwrap();
    y.unwrap();
    assert_eq!(upstream.calls() - before, 1);
    let here = a
        .get_or_refresh(KEY, upstream.read("x", true))
        .await
        .unwrap();
    assert_eq!(
        here.outcome,
        Outcome::Hit,
        "L1 still answers while Redis is gone"
    );

    server.restart();
    let probe = SharedRedis::connect(&target(&server.url()), Duration::from_millis(250)).unwrap();
    wait_until_up(&probe).await;
    // The replicas find Redis again by themselves: what one reads, the other then HITs.
    let back = "batchgate:{t:sutro:back}:status";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let key = format!("{back}-{}", upstream.calls());
        a.get_or_refresh(&key, upstream.read("back", true))
            .await
            .unwrap();
        let shared = b
            .get_or_refresh(&key, upstream.read("x", true))
            .await
            .unwrap();
        if shared.outcome == Outcome::Hit {
            assert_eq!(shared.bytes, "back");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replicas never used Redis again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
