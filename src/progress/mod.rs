//! Progress fan-out: one upstream watcher per watched resource, any number of local
//! subscribers, latest value wins so a slow subscriber never holds anyone back.

mod memory;
mod stream;

pub use memory::MemoryHub;
pub use stream::{EventKind, first_state, watcher_stream};

use std::time::Duration;

use tokio::sync::watch;
use tonic::Status;

use crate::config::Config;

/// Timing of watches.
#[derive(Debug, Clone, Copy)]
pub struct WatchTiming {
    /// Heartbeat interval per watcher.
    pub heartbeat: Duration,
    /// Least time between two PROGRESS messages to one watcher.
    pub min_interval: Duration,
    /// Upstream poll interval (also the longest silence tolerated on a stream).
    pub poll: Duration,
    /// Cap on each upstream call a watcher makes.
    pub call_timeout: Duration,
    /// Longest one resource is watched.
    pub max: Duration,
}

impl WatchTiming {
    /// The timing the configuration asks for.
    pub fn from_config(config: &Config) -> Self {
        Self {
            heartbeat: config.watch_heartbeat,
            min_interval: config.watch_min_interval,
            poll: config.watch_poll,
            call_timeout: config.upstream_timeout,
            max: config.watch_max,
        }
    }
}

/// What the watcher of one resource has published.
#[derive(Debug, Clone)]
pub enum WatchState<T> {
    /// The first upstream read has not come back yet.
    Connecting,
    /// The resource as last read; `done` once it reached its final state.
    Live {
        /// The resource.
        value: T,
        /// True for the last value a watcher will publish.
        done: bool,
        /// When the watcher first read this value (heartbeats repeat it unchanged).
        observed_at: prost_types::Timestamp,
    },
    /// The resource cannot be watched (unknown, bad key, gave up).
    Failed(Status),
}

/// Publishes `value` unless it equals what subscribers already have, so that
/// subscribers wake only for real changes.
pub fn publish<T: PartialEq>(tx: &watch::Sender<WatchState<T>>, value: T, done: bool) {
    tx.send_if_modified(|state| {
        let unchanged = matches!(state, WatchState::Live { value: old, done: was, .. } if *was == done && *old == value);
        if !unchanged {
            *state = WatchState::Live {
                value,
                done,
                observed_at: crate::convert::now_timestamp(),
            };
        }
        !unchanged
    });
}
