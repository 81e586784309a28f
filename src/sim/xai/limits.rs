//! xAI's per-team budgets in the simulator: a rolling window of calls (batch creations,
//! add-requests calls); a call over budget is answered 429 with Retry-After.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

use super::super::respond::xai_error;

/// At most `limit` calls in any `span` (a limit of 0 admits everything).
pub struct Window {
    limit: u32,
    span: Duration,
    calls: Mutex<VecDeque<Instant>>,
}

impl Window {
    pub fn new(limit: u32, span: Duration) -> Self {
        Self {
            limit,
            span,
            calls: Mutex::default(),
        }
    }

    /// Counts a call made at `now`, or says how long until one would be admitted.
    pub fn admit(&self, now: Instant) -> Result<(), Duration> {
        if self.limit == 0 {
            return Ok(());
        }
        let mut calls = self
            .calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while calls.front().is_some_and(|first| *first + self.span <= now) {
            calls.pop_front();
        }
        if calls.len() < self.limit as usize {
            calls.push_back(now);
            return Ok(());
        }
        Err(calls.front().map_or(self.span, |first| {
            (*first + self.span).saturating_duration_since(now)
        }))
    }
}

/// xAI's 429, with Retry-After in whole seconds (at least 1).
pub fn too_many(message: &str, wait: Duration) -> Response {
    let mut response = xai_error(StatusCode::TOO_MANY_REQUESTS, message);
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_admits_its_limit_then_says_when() {
        let window = Window::new(2, Duration::from_secs(1));
        let start = Instant::now();
        assert!(window.admit(start).is_ok());
        assert!(window.admit(start).is_ok());
        assert_eq!(
            window.admit(start + Duration::from_millis(400)),
            Err(Duration::from_millis(600))
        );
        assert!(window.admit(start + Duration::from_secs(1)).is_ok());
        assert!(Window::new(0, Duration::from_secs(1)).admit(start).is_ok());
    }
}
