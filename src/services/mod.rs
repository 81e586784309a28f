//! The gRPC services: each validates a call, translates it to upstream REST calls,
//! and translates the answers back. Shared request checks live in `validate`.

pub mod auth_gate;
pub mod batches;
pub mod chunking;
pub mod core;
pub mod jobs;
pub mod read_through;
pub mod validate;

/// A validated `page_size`, with 0 meaning `default`.
pub fn page_size(requested: i32, default: u32) -> u32 {
    u32::try_from(requested)
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

/// A `page_token`, with the empty string meaning the first page.
pub fn page_token(token: &str) -> Option<&str> {
    Some(token).filter(|t| !t.is_empty())
}
