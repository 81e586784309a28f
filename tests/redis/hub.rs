//! The Redis progress hub with several hubs on one Redis standing for replicas: one
//! poller per resource in the cluster, takeover, grace, and Redis going away.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use batchgate::keys::{ResourceKey, kind};
use batchgate::progress::{HubTiming, ProgressHub, RedisHub, StartPoller, WatchState};
use batchgate::shared_redis::{RedisTarget, SharedRedis};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, timeout};

use crate::common::redis::{RedisCluster, RedisServer};
use crate::shared_redis::{target, wait_until_up};

fn key(id: &str) -> ResourceKey {
    ResourceKey::new("tenant-a", "sutro", kind::WATCH, id)
}

fn timing() -> HubTiming {
    HubTiming {
        lease: Duration::from_millis(500),
        grace: Duration::from_millis(300),
        reread: Duration::from_millis(50),
        snapshot_ttl: Duration::from_secs(30),
        pace: batchgate::progress::Pace::NONE,
    }
}

/// A generous bound: on a loaded test machine a slow answer must not look like an
/// outage (which would start a second poller).
fn connect(target: &RedisTarget) -> SharedRedis {
    SharedRedis::connect(target, Duration::from_secs(2)).expect("a Redis handle")
}

/// `n` hubs, each with its own connection, as `n` replicas would be.
fn hubs(target: &RedisTarget, n: usize, timing: HubTiming) -> Vec<RedisHub<u64>> {
    (0..n)
        .map(|i| RedisHub::new(connect(target), timing, format!("replica-{i}")))
        .collect()
}

/// What the fake pollers did: which hub started one, and how many run now.
#[derive(Clone, Default)]
struct Pollers {
    started: Arc<Mutex<Vec<(usize, Instant)>>>,
    running: Arc<AtomicUsize>,
}

struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Pollers {
    /// A poller for hub `hub` publishing 1, 2, … `last` every `every`, then `last + 1`
    /// as done (never done when `last` is `None`).
    fn start(&self, hub: usize, last: Option<u64>, every: Duration) -> StartPoller<u64> {
        let pollers = self.clone();
        Arc::new(move |publisher| {
            pollers.started.lock().unwrap().push((hub, Instant::now()));
            pollers.running.fetch_add(1, Ordering::SeqCst);
            let running = Running(pollers.running.clone());
            Box::pin(async move {
                let _running = running;
                for n in 1.. {
                    if Some(n) == last.map(|l| l + 1) {
                        publisher.publish(n, true);
                        return;
                    }
                    publisher.publish(n, false);
                    sleep(every).await;
                }
            })
        })
    }

    fn starts(&self) -> Vec<(usize, Instant)> {
        self.started.lock().unwrap().clone()
    }
}

async fn done(rx: &mut watch::Receiver<WatchState<u64>>, within: Duration) -> u64 {
    let state = timeout(
        within,
        rx.wait_for(|s| matches!(s, WatchState::Live { done: true, .. })),
    )
    .await
    .expect("the final value in time")
    .expect("the watch ends with its final value");
    match &*state {
        WatchState::Live { value, .. } => *value,
        _ => unreachable!(),
    }
}

async fn at_least(rx: &mut watch::Receiver<WatchState<u64>>, n: u64) {
    timeout(
        Duration::from_secs(10),
        rx.wait_for(|s| matches!(s, WatchState::Live { value, .. } if *value >= n)),
    )
    .await
    .expect("progress in time")
    .expect("the watch goes on");
}

async fn one_poller_for_three_replicas(target: RedisTarget) {
    let hubs = hubs(&target, 3, timing());
    let pollers = Pollers::default();
    let mut receivers = Vec::new();
    for _ in 0..100 {
        for (i, hub) in hubs.iter().enumerate() {
            let start = pollers.start(i, Some(20), Duration::from_millis(20));
            receivers.push(hub.subscribe(&key("job-1"), start));
        }
    }
    for rx in &mut receivers {
        assert_eq!(done(rx, Duration::from_secs(10)).await, 21);
    }
    assert_eq!(pollers.starts().len(), 1, "one poller in the whole cluster");
    // A late subscriber reads the final snapshot rather than starting a poller.
    let mut late = hubs[2].subscribe(
        &key("job-1"),
        pollers.start(2, Some(20), Duration::from_millis(20)),
    );
    assert_eq!(done(&mut late, Duration::from_secs(5)).await, 21);
    assert_eq!(pollers.starts().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_poller() {
    let server = RedisServer::start();
    one_poller_for_three_replicas(target(&server.url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_poller_on_a_cluster() {
    let cluster = RedisCluster::start();
    let target = cluster.target();
    one_poller_for_three_replicas(target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replica_takes_over_when_the_holder_dies() {
    let server = RedisServer::start();
    let hubs = hubs(&target(&server.url()), 3, timing());
    let pollers = Pollers::default();
    let mut receivers: Vec<Vec<_>> = (0..3).map(|_| Vec::new()).collect();
    for _ in 0..30 {
        for (i, hub) in hubs.iter().enumerate() {
            let start = pollers.start(i, Some(40), Duration::from_millis(50));
            receivers[i].push(hub.subscribe(&key("job-2"), start));
        }
    }
    at_least(&mut receivers[0][0], 3).await;
    let holder = pollers.starts()[0].0;
    hubs[holder].shutdown();
    let killed = Instant::now();
    receivers[holder].clear();
    for rx in receivers.iter_mut().flatten() {
        assert_eq!(done(rx, Duration::from_secs(10)).await, 41);
    }
    let starts = pollers.starts();
    assert_eq!(starts.len(), 2, "exactly one takeover: {starts:?}");
    let (successor, at) = starts[1];
    assert_ne!(successor, holder);
    let took = at.duration_since(killed);
    assert!(took < timing().lease * 4, "took over after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poller_stops_a_grace_period_after_the_last_subscriber_leaves() {
    let server = RedisServer::start();
    let timing = HubTiming {
        grace: Duration::from_secs(1),
        ..timing()
    };
    let hubs = hubs(&target(&server.url()), 2, timing);
    let pollers = Pollers::default();
    let mut receivers = Vec::new();
    for (i, hub) in hubs.iter().enumerate() {
        for _ in 0..10 {
            let start = pollers.start(i, None, Duration::from_millis(20));
            receivers.push(hub.subscribe(&key("job-3"), start));
        }
    }
    for rx in &mut receivers {
        at_least(rx, 2).await;
    }
    drop(receivers);
    let left = Instant::now();
    sleep(Duration::from_millis(300)).await;
    assert_eq!(pollers.running.load(Ordering::SeqCst), 1, "within grace");
    while pollers.running.load(Ordering::SeqCst) > 0 || hubs.iter().any(|h| h.active() > 0) {
        assert!(
            left.elapsed() < Duration::from_secs(5),
            "the poller outlived its grace"
        );
        sleep(Duration::from_millis(20)).await;
    }
    assert!(left.elapsed() >= Duration::from_millis(900));
    assert_eq!(pollers.starts().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_each_replica_polls_for_itself_and_rejoins_later() {
    let mut server = RedisServer::start();
    let target = target(&server.url());
    let handles = [connect(&target), connect(&target)];
    let hubs: Vec<RedisHub<u64>> = handles
        .iter()
        .enumerate()
        .map(|(i, redis)| RedisHub::new(redis.clone(), timing(), format!("replica-{i}")))
        .collect();
    let pollers = Pollers::default();
    let mut receivers = Vec::new();
    for (i, hub) in hubs.iter().enumerate() {
        for _ in 0..10 {
            let start = pollers.start(i, Some(40), Duration::from_millis(50));
            receivers.push(hub.subscribe(&key("job-4"), start));
        }
    }
    for rx in &mut receivers {
        at_least(rx, 2).await;
    }
    assert_eq!(pollers.starts().len(), 1);
    server.stop();
    for rx in &mut receivers {
        assert_eq!(done(rx, Duration::from_secs(10)).await, 41);
    }
    assert_eq!(pollers.starts().len(), 2, "the follower polled for itself");

    // Back: the replicas share one poller again.
    server.restart();
    // A replica rejoins once its handle sees Redis again (it probes while down).
    for redis in &handles {
        wait_until_up(redis).await;
    }
    let pollers = Pollers::default();
    let mut receivers = Vec::new();
    for (i, hub) in hubs.iter().enumerate() {
        let start = pollers.start(i, Some(5), Duration::from_millis(20));
        receivers.push(hub.subscribe(&key("job-5"), start));
    }
    for rx in &mut receivers {
        assert_eq!(done(rx, Duration::from_secs(10)).await, 6);
    }
    assert_eq!(
        pollers.starts().len(),
        1,
        "one poller again once Redis is back"
    );
}

/// With a re-read timer far longer than the job, followers still see every change
/// soon: the holder's hints wake them.
async fn hints_wake_followers(target: RedisTarget) {
    let slow = HubTiming {
        lease: Duration::from_secs(10),
        reread: Duration::from_secs(3),
        ..timing()
    };
    let hubs = hubs(&target, 2, slow);
    let pollers = Pollers::default();
    let mut holder = hubs[0].subscribe(
        &key("job-6"),
        pollers.start(0, Some(10), Duration::from_millis(100)),
    );
    at_least(&mut holder, 1).await;
    let mut follower = hubs[1].subscribe(
        &key("job-6"),
        pollers.start(1, Some(10), Duration::from_millis(100)),
    );
    let started = Instant::now();
    assert_eq!(done(&mut follower, Duration::from_secs(2)).await, 11);
    assert!(started.elapsed() < Duration::from_millis(2_500));
    assert_eq!(pollers.starts().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_wake_followers_before_their_timer() {
    let server = RedisServer::start();
    hints_wake_followers(target(&server.url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_hints_wake_followers_on_a_cluster() {
    let cluster = RedisCluster::start();
    let target = cluster.target();
    hints_wake_followers(target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_reaches_every_replica_and_does_not_stick() {
    let server = RedisServer::start();
    let hubs = hubs(&target(&server.url()), 2, timing());
    let starts = Arc::new(AtomicUsize::new(0));
    let failing = || -> StartPoller<u64> {
        let starts = starts.clone();
        Arc::new(move |publisher| {
            starts.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                sleep(Duration::from_millis(100)).await;
                publisher.fail(batchgate::error::Error::FailedPrecondition(
                    "job was deleted".into(),
                ));
            })
        })
    };
    let failed = |mut rx: watch::Receiver<WatchState<u64>>| async move {
        let state = timeout(
            Duration::from_secs(5),
            rx.wait_for(|s| matches!(s, WatchState::Failed(_))),
        )
        .await
        .expect("the failure in time")
        .expect("the watch ends with its failure");
        match &*state {
            WatchState::Failed(error) => {
                assert_eq!(error.code(), tonic::Code::FailedPrecondition);
                assert_eq!(error.to_string(), "job was deleted");
            }
            _ => unreachable!(),
        }
    };
    let a = hubs[0].subscribe(&key("job-7"), failing());
    let b = hubs[1].subscribe(&key("job-7"), failing());
    failed(a).await;
    failed(b).await;
    assert_eq!(starts.load(Ordering::SeqCst), 1);
    // The failure outlives its readers by a lease at most: the next watch tries again.
    sleep(timing().lease + Duration::from_millis(200)).await;
    failed(hubs[1].subscribe(&key("job-7"), failing())).await;
    assert_eq!(starts.load(Ordering::SeqCst), 2);
}

/// Who holds the lease of `key`, read straight from Redis.
async fn lease_holder(redis: &SharedRedis, key: &ResourceKey) -> Option<String> {
    redis::cmd("GET")
        .arg(format!("{key}:lease"))
        .query_async(&mut redis.clone())
        .await
        .expect("a GET")
}

/// A replica that polled for itself through an outage and then handed over to the
/// holder must still be able to poll again: here, when the holder dies with Redis up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_fell_back_and_handed_over_takes_over_again() {
    let mut server = RedisServer::start();
    let target = target(&server.url());
    let handles = [connect(&target), connect(&target)];
    let hubs: Vec<RedisHub<u64>> = handles
        .iter()
        .enumerate()
        .map(|(i, redis)| RedisHub::new(redis.clone(), timing(), format!("replica-{i}")))
        .collect();
    let pollers = Pollers::default();
    // One subscriber per replica: nothing but the first `start` to poll with.
    let mut receivers: Vec<_> = hubs
        .iter()
        .enumerate()
        .map(|(i, hub)| {
            hub.subscribe(
                &key("job-8"),
                pollers.start(i, None, Duration::from_millis(50)),
            )
        })
        .collect();
    for rx in &mut receivers {
        at_least(rx, 2).await;
    }
    server.stop();
    let deadline = Instant::now() + Duration::from_secs(15);
    while pollers.starts().len() < 2 {
        assert!(Instant::now() < deadline, "the follower never fell back");
        sleep(Duration::from_millis(20)).await;
    }
    server.restart();
    for redis in &handles {
        wait_until_up(redis).await;
    }
    // Rejoined: one poller again, run by whoever holds the lease.
    let holder = loop {
        assert!(
            Instant::now() < deadline + Duration::from_secs(15),
            "no handover"
        );
        if pollers.running.load(Ordering::SeqCst) == 1
            && let Some(holder) = lease_holder(&handles[0], &key("job-8")).await
        {
            break holder;
        }
        sleep(Duration::from_millis(20)).await;
    };
    let holder: usize = holder
        .strip_prefix("replica-")
        .and_then(|n| n.parse().ok())
        .expect("a replica name");
    let survivor = 1 - holder;
    hubs[holder].shutdown();
    let before = pollers.starts().len();
    let died = Instant::now();
    while pollers.starts().len() == before {
        assert!(
            died.elapsed() < timing().lease * 6,
            "nobody took over: {:?}",
            pollers.starts()
        );
        sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pollers.starts().last().map(|s| s.0), Some(survivor));
    let rx = &mut receivers[survivor];
    for _ in 0..3 {
        timeout(Duration::from_secs(2), rx.changed())
            .await
            .expect("progress after the takeover")
            .expect("the survivor's watch goes on");
    }
}

/// With a re-read timer far longer than the test, each value the holder publishes
/// reaches a follower replica's subscribers within 150 ms: hints, not the timer.
async fn each_value_reaches_followers_by_hint(target: RedisTarget) {
    let slow = HubTiming {
        lease: Duration::from_secs(15),
        reread: Duration::from_secs(5),
        ..timing()
    };
    let hubs = hubs(&target, 2, slow);
    let published: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let log = published.clone();
    let start: StartPoller<u64> = Arc::new(move |publisher| {
        let log = log.clone();
        Box::pin(async move {
            for n in 1..=10_u64 {
                log.lock().unwrap().push(Instant::now());
                publisher.publish(n, n == 10);
                sleep(Duration::from_millis(300)).await;
            }
        })
    });
    let mut holder = hubs[0].subscribe(&key("job-9"), start.clone());
    at_least(&mut holder, 1).await;
    let mut follower = hubs[1].subscribe(&key("job-9"), start);
    let mut seen = Vec::new();
    loop {
        timeout(Duration::from_secs(2), follower.changed())
            .await
            .expect("a value well before the 5 s re-read")
            .expect("the watch goes on");
        let (value, done) = match &*follower.borrow_and_update() {
            WatchState::Live { value, done, .. } => (*value, *done),
            _ => continue,
        };
        seen.push((value, Instant::now()));
        if done {
            break;
        }
    }
    // The first read may find a value published before this replica subscribed.
    let published = published.lock().unwrap().clone();
    for &(value, at) in &seen[1..] {
        let index = usize::try_from(value).unwrap() - 1;
        let late = at.duration_since(published[index]);
        assert!(
            late < Duration::from_millis(150),
            "value {value} reached the follower {late:?} after it was published: {seen:?}"
        );
    }
    assert!(seen.len() >= 6, "{seen:?}");
    assert_eq!(published.len(), 10, "one poller in the cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_value_reaches_followers_by_hint_on_one_node() {
    let server = RedisServer::start();
    each_value_reaches_followers_by_hint(target(&server.url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_value_reaches_followers_by_hint_on_a_cluster() {
    let cluster = RedisCluster::start();
    let target = cluster.target();
    each_value_reaches_followers_by_hint(target).await;
}

/// A replica shutting down gracefully hands its leases over at once, not after a lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_lease_is_taken_over_at_once() {
    let server = RedisServer::start();
    let long = HubTiming {
        lease: Duration::from_secs(5),
        ..timing()
    };
    let hubs = hubs(&target(&server.url()), 2, long);
    let pollers = Pollers::default();
    let mut receivers: Vec<_> = hubs
        .iter()
        .enumerate()
        .map(|(i, hub)| {
            hub.subscribe(
                &key("job-10"),
                pollers.start(i, None, Duration::from_millis(50)),
            )
        })
        .collect();
    for rx in &mut receivers {
        at_least(rx, 2).await;
    }
    let holder = pollers.starts()[0].0;
    let released = Instant::now();
    hubs[holder].release().await;
    assert_eq!(hubs[holder].active(), 0);
    let late = hubs[holder].subscribe(
        &key("job-10"),
        pollers.start(holder, None, Duration::from_millis(50)),
    );
    assert!(
        matches!(&*late.borrow(), WatchState::Failed(e) if e.code() == tonic::Code::Unavailable),
        "a released hub takes no new watches"
    );
    while pollers.starts().len() < 2 {
        assert!(
            released.elapsed() < Duration::from_secs(2),
            "the lease was not handed over"
        );
        sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pollers.starts()[1].0, 1 - holder);
    let survivor = &mut receivers[1 - holder];
    timeout(Duration::from_secs(2), survivor.changed())
        .await
        .expect("progress after the handover")
        .expect("the survivor's watch goes on");
}

/// Waits until `hub` follows nothing.
async fn settled(hub: &RedisHub<u64>) {
    let until = Instant::now() + Duration::from_secs(5);
    while hub.active() > 0 {
        assert!(Instant::now() < until, "the follower never ended");
        sleep(Duration::from_millis(10)).await;
    }
}

/// A final value can be forgotten (an xAI batch that gets more requests lives again):
/// the next watch polls instead of reading it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_final_value_is_polled_again() {
    let server = RedisServer::start();
    let hubs = hubs(&target(&server.url()), 1, timing());
    let pollers = Pollers::default();
    let watch = |hub: &RedisHub<u64>| {
        hub.subscribe(
            &key("job-11"),
            pollers.start(0, Some(1), Duration::from_millis(10)),
        )
    };
    assert_eq!(done(&mut watch(&hubs[0]), Duration::from_secs(5)).await, 2);
    settled(&hubs[0]).await;
    assert_eq!(done(&mut watch(&hubs[0]), Duration::from_secs(5)).await, 2);
    assert_eq!(
        pollers.starts().len(),
        1,
        "the final value is read, not polled"
    );
    settled(&hubs[0]).await;
    hubs[0].forget(&key("job-11")).await;
    assert_eq!(done(&mut watch(&hubs[0]), Duration::from_secs(5)).await, 2);
    assert_eq!(pollers.starts().len(), 2, "polled again once forgotten");
}
