//! Pub/sub beside the command handle: what kind of deployment it is (Cluster hints use
//! sharded channels) and a separate RESP3 connection for subscriptions.

use std::time::Duration;

use redis::aio::{AsyncPushSender, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{IntoConnectionInfo, ProtocolVersion, RedisError};

use super::{Conn, RedisTarget, RedisUrl, SharedRedis};

/// A connection that only subscribes; what arrives goes to the push sender it was made
/// with. Like the handle it connects lazily and reconnects by itself (re-subscribing on
/// a single node).
pub struct Subscriber {
    conn: SubConn,
    timeout: Duration,
}

enum SubConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl SharedRedis {
    /// True on Redis Cluster, where hints go over sharded pub/sub.
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    /// A subscriber to the same Redis, its messages sent to `push`.
    pub fn subscriber(&self, push: impl AsyncPushSender) -> Result<Subscriber, RedisError> {
        let timeout = self.timeout;
        let conn = match &*self.target {
            RedisTarget::Single(url) => {
                let info = url.expose().into_connection_info()?;
                let settings = info
                    .redis_settings()
                    .clone()
                    .set_protocol(ProtocolVersion::RESP3);
                let client = redis::Client::open(info.set_redis_settings(settings))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_max_delay(Duration::from_secs(1))
                    .set_push_sender(push)
                    .set_automatic_resubscription();
                SubConn::Single(ConnectionManager::new_lazy_with_config(client, config)?)
            }
            RedisTarget::Cluster(nodes) => {
                let client = ClusterClientBuilder::new(nodes.iter().map(RedisUrl::expose))
                    .use_protocol(ProtocolVersion::RESP3)
                    .push_sender(push)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .build()?;
                SubConn::Cluster(
                    client.get_pending_async_connection_with_config(
                        redis::cluster::ClusterConfig::new()
                            .set_connection_timeout(timeout)
                            .set_response_timeout(timeout),
                    ),
                )
            }
        };
        Ok(Subscriber { conn, timeout })
    }
}

impl Subscriber {
    /// Subscribes to `channel` (sharded on Cluster).
    pub async fn subscribe(&mut self, channel: &str) -> Result<(), RedisError> {
        let timeout = self.timeout;
        bounded(timeout, async {
            match &mut self.conn {
                SubConn::Single(c) => c.subscribe(channel).await,
                SubConn::Cluster(c) => c.ssubscribe(channel).await,
            }
        })
        .await
    }

    /// Unsubscribes from `channel`.
    pub async fn unsubscribe(&mut self, channel: &str) -> Result<(), RedisError> {
        let timeout = self.timeout;
        bounded(timeout, async {
            match &mut self.conn {
                SubConn::Single(c) => c.unsubscribe(channel).await,
                SubConn::Cluster(c) => c.sunsubscribe(channel).await,
            }
        })
        .await
    }
}

async fn bounded(
    timeout: Duration,
    call: impl Future<Output = Result<(), RedisError>>,
) -> Result<(), RedisError> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| {
            Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "Redis did not answer a subscription in time",
            )))
        })
}
