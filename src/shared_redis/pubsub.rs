//! Pub/sub beside the command handle: what kind of deployment it is (Cluster hints use
//! sharded channels) and a separate RESP3 connection for subscriptions.

use super::{Conn, SharedRedis};

impl SharedRedis {
    /// True on Redis Cluster, where hints go over sharded pub/sub.
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }
}
