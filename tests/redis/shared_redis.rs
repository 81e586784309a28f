//! The Redis handle against a real server: passwords, and Redis going and coming back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use batchgate::shared_redis::{RedisTarget, SharedRedis};

use crate::common::redis::RedisServer;

pub fn target(url: &str) -> RedisTarget {
    RedisTarget::from_settings(Some(url), None)
        .expect("a valid URL")
        .expect("a target")
}

/// Waits until `redis` answers again (it probes twice a second while down).
pub async fn wait_until_up(redis: &SharedRedis) {
    for _ in 0..100 {
        if redis.ping().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("Redis did not come back within 10 s");
}

#[tokio::test]
async fn a_password_url_connects_and_a_wrong_one_never_shows_it() {
    let server = RedisServer::start_with_password("s3cret_pw");
    let right = format!("redis://:s3cret_pw@{}", server.addr());
    let redis = SharedRedis::connect(&target(&right), Duration::from_millis(500)).unwrap();
    assert!(redis.ping().await);

    let wrong = format!("redis://:not_the_pw_123@{}", server.addr());
    let redis = SharedRedis::connect(&target(&wrong), Duration::from_millis(500)).unwrap();
    let error = redis
        .query::<String>(&redis::cmd("PING"))
        .await
        .expect_err("a wrong password is refused");
    let shown = redis.describe(&error);
    assert!(!shown.contains("not_the_pw_123"), "{shown}");
    assert!(!format!("{redis:?}").contains("not_the_pw_123"));
    assert!(!redis.is_up());
}

/// Collects the log lines written while a test runs.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Captures this thread's logs until the guard is dropped.
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_handle_reconnects_by_itself_after_redis_restarts() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut server = RedisServer::start();
    let redis = SharedRedis::connect(&target(&server.url()), Duration::from_millis(250)).unwrap();
    assert!(redis.ping().await);
    server.stop();
    assert!(!redis.ping().await);
    assert!(!redis.is_up());
    server.restart();
    wait_until_up(&redis).await;
    assert!(redis.is_up());
    let set: String = redis
        .query(redis::cmd("SET").arg("batchgate:{t:p:1}:probe").arg("1"))
        .await
        .unwrap();
    assert_eq!(set, "OK");
    let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert_eq!(logs.matches("Redis is unreachable").count(), 1, "{logs}");
    assert_eq!(
        logs.matches("Redis is reachable again").count(),
        1,
        "{logs}"
    );
}
