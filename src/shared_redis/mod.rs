//! The replica's one Redis handle: a single node through `ConnectionManager` or a Cluster
//! through the async cluster client, every call bounded by a short timeout, up/down tracked.

mod health;
mod pubsub;
mod target;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisError, RedisFuture, Value};

pub use pubsub::Subscriber;
pub use target::{RedisTarget, RedisUrl};

use health::Health;

/// While Redis is down, how often one call is let through to see whether it is back.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// A cheap-to-clone Redis handle for every shared-state backend of a replica.
///
/// It implements redis-rs's [`ConnectionLike`], so `redis::cmd(..).query_async(&mut
/// handle.clone())` and `AsyncCommands` work on it. Each call gives up after the
/// configured timeout with an I/O `TimedOut` error: callers treat any error as "Redis is
/// not there right now" and fall back. Connections are made lazily and remade by the
/// client itself, so a replica starts, and keeps serving, while Redis is down.
#[derive(Clone)]
pub struct SharedRedis {
    conn: Conn,
    timeout: Duration,
    health: Arc<Health>,
    target: Arc<RedisTarget>,
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Why a Redis handle could not be made (the configuration, not the network: connecting
/// is lazy). The message never contains a password.
#[derive(Debug, thiserror::Error)]
#[error("Redis: {0}")]
pub struct RedisSetupError(String);

impl SharedRedis {
    /// A handle on `target`; nothing is sent until the first call. Must run inside a
    /// Tokio runtime (the clients spawn their connection tasks).
    pub fn connect(
        target: &RedisTarget,
        timeout: Duration,
    ) -> Result<SharedRedis, RedisSetupError> {
        let setup = |e: RedisError| RedisSetupError(target.scrub(&e.to_string()));
        // rediss:// builds a rustls config, which needs the process's provider: ours is ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let conn = match target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.expose()).map_err(setup)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    // Reconnects back off up to a second: a dead Redis costs little.
                    .set_max_delay(Duration::from_secs(1))
                    .set_number_of_retries(2);
                Conn::Single(
                    ConnectionManager::new_lazy_with_config(client, config).map_err(setup)?,
                )
            }
            RedisTarget::Cluster(nodes) => {
                let client = ClusterClientBuilder::new(nodes.iter().map(RedisUrl::expose))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    // Our own timeout bounds each call; the client's retries stay within it.
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(100)
                    .build()
                    .map_err(setup)?;
                let config = ClusterConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout);
                Conn::Cluster(client.get_pending_async_connection_with_config(config))
            }
        };
        Ok(SharedRedis {
            conn,
            timeout,
            health: Arc::new(Health::new(describe_target(target))),
            target: Arc::new(target.clone()),
        })
    }

    /// The handle `config` asks for: `None` when no Redis is configured.
    pub fn from_config(
        config: &crate::config::Config,
    ) -> Result<Option<SharedRedis>, RedisSetupError> {
        config
            .redis
            .as_ref()
            .map(|target| SharedRedis::connect(target, config.redis_timeout))
            .transpose()
    }

    /// Whether the last calls reached Redis (for `/readyz` and fallbacks).
    pub fn is_up(&self) -> bool {
        self.health.is_up()
    }

    /// The bound on each call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// True when Redis answers a PING within the timeout (and records the state).
    pub async fn ping(&self) -> bool {
        self.query::<String>(&redis::cmd("PING")).await.is_ok()
    }

    /// Runs one command, bounded and tracked.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, RedisError> {
        cmd.query_async(&mut self.clone()).await
    }

    /// Error text safe to log or return: every configured password is scrubbed.
    pub fn describe(&self, error: &RedisError) -> String {
        self.target.scrub(&error.to_string())
    }

    /// Applies the bound to one request and records what it says about Redis.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, RedisError> {
        if !self.health.may_try(PROBE_EVERY) {
            return Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "Redis is unreachable (tried again shortly)",
            )));
        }
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "Redis did not answer within {} ms",
                    self.timeout.as_millis()
                ),
            ))),
        };
        match &result {
            Ok(_) => self.health.answered(),
            Err(e) => self.health.failed(e, &self.describe(e)),
        }
        result
    }
}

impl ConnectionLike for SharedRedis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            self.bounded(async move {
                match &mut conn {
                    Conn::Single(c) => c.req_packed_command(cmd).await,
                    Conn::Cluster(c) => c.req_packed_command(cmd).await,
                }
            })
            .await
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            self.bounded(async move {
                match &mut conn {
                    Conn::Single(c) => c.req_packed_commands(pipeline, offset, count).await,
                    Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count).await,
                }
            })
            .await
        })
    }

    fn get_db(&self) -> i64 {
        match &self.conn {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl fmt::Debug for SharedRedis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedRedis")
            .field("target", &self.target)
            .field("timeout", &self.timeout)
            .field("up", &self.is_up())
            .finish()
    }
}

fn describe_target(target: &RedisTarget) -> String {
    match target {
        RedisTarget::Single(url) => url.redacted(),
        RedisTarget::Cluster(nodes) => {
            let nodes: Vec<_> = nodes.iter().map(RedisUrl::redacted).collect();
            format!("cluster {}", nodes.join(","))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::test_logs::Captured;

    fn target(url: &str) -> RedisTarget {
        RedisTarget::from_settings(Some(url), None)
            .unwrap()
            .unwrap()
    }

    /// A port with nothing listening on it.
    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn redis_going_away_is_logged_once_and_never_with_the_password() {
        let logs = Captured::default();
        let _guard = logs.install();

        let url = format!("redis://:pw_never_shown@127.0.0.1:{}", closed_port());
        let redis = SharedRedis::connect(&target(&url), Duration::from_millis(200)).unwrap();
        assert!(!format!("{redis:?}").contains("pw_never_shown"));
        for _ in 0..5 {
            let error = redis
                .query::<String>(&redis::cmd("PING"))
                .await
                .unwrap_err();
            assert!(!redis.describe(&error).contains("pw_never_shown"));
            assert!(!error.to_string().contains("pw_never_shown"));
        }
        assert!(!redis.is_up());
        let text = logs.text();
        assert_eq!(text.matches("Redis is unreachable").count(), 1, "{text}");
        assert!(!text.contains("pw_never_shown"), "{text}");
    }

    #[tokio::test]
    async fn rediss_urls_use_our_rustls_provider() {
        // No TLS server here: what matters is that building the TLS client does not
        // panic for want of a process-wide crypto provider, and fails like any outage.
        let url = format!("rediss://:pw@127.0.0.1:{}", closed_port());
        let redis = SharedRedis::connect(&target(&url), Duration::from_millis(200)).unwrap();
        assert!(!redis.ping().await);
        assert!(
            SharedRedis::from_config(&crate::config::Config::embedded())
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_redis_that_never_answers_costs_one_timeout() {
        // Accepts connections and never says a word.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                open.push(socket);
            }
        });
        let url = format!("redis://127.0.0.1:{port}");
        let redis = SharedRedis::connect(&target(&url), Duration::from_millis(100)).unwrap();
        let started = Instant::now();
        assert!(!redis.ping().await);
        assert!(started.elapsed() < Duration::from_millis(1_000));
        // Down: the next calls fail at once instead of each waiting for the timeout.
        let started = Instant::now();
        assert!(!redis.ping().await);
        assert!(started.elapsed() < Duration::from_millis(50));
        held.abort();
    }
}
