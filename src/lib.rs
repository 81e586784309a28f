//! batchgate: one gRPC endpoint for batch LLM inference on Sutro jobs and xAI batches.
//! The binary in `main.rs` only parses the command line and calls into this library.

pub mod proto;
pub mod sim;
