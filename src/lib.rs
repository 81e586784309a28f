//! batchgate: one gRPC endpoint for batch LLM inference on Sutro jobs and xAI batches.
//! The binary in `main.rs` only parses the command line and calls into this library.

pub mod accept;
pub mod access_log;
pub mod cache;
pub mod call_end;
pub mod caller;
pub mod cli;
pub mod codec_errors;
pub mod config;
pub mod context;
pub mod convert;
pub mod cors;
pub mod deadline;
pub mod error;
pub mod health;
pub mod heap_trim;
pub mod idempotency;
pub mod keys;
pub mod metrics;
pub mod progress;
pub mod proto;
pub mod ratelimit;
pub mod records;
pub mod request_budget;
pub mod runtime;
pub mod server;
pub mod services;
pub mod shared_redis;
pub mod sim;
pub mod telemetry;
pub mod tenant;
pub mod tenants_file;
#[cfg(test)]
mod test_logs;
pub mod tls;
pub mod tls_incoming;
pub mod upstream;
