//! Black-box tests against real Redis: each test starts its own `redis-server` (or a
//! 3-master Cluster) on free ports; one binary, one module per shared-state concern.

#[path = "../common/mod.rs"]
mod common;

mod cache;
mod hub;
mod idempotency;
mod ratelimit;
mod readiness;
mod replicas;
mod shared_redis;
mod status_cache;
mod status_cache_trust;
