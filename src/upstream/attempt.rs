//! `http.client.request.duration` for one upstream attempt: timed to its response headers,
//! labelled by route template and status, or by why it got none (`connect`, `timeout`…).

use tokio::time::Instant;

use super::attempt_span::path_template;
use super::http::Call;
use crate::error::UpstreamId;
use crate::metrics::{HttpOutcome, Metrics};

/// Times one attempt. Dropped unfinished, the attempt was cut off waiting for its
/// headers (its deadline passed, or its caller left): that is recorded as a `timeout`.
pub(super) struct AttemptTimer<'a> {
    metrics: &'a Metrics,
    upstream: &'a UpstreamId,
    call: &'a Call,
    started: Instant,
    finished: bool,
}

impl<'a> AttemptTimer<'a> {
    /// Starts timing `call` to `upstream`.
    pub(super) fn start(metrics: &'a Metrics, upstream: &'a UpstreamId, call: &'a Call) -> Self {
        AttemptTimer {
            metrics,
            upstream,
            call,
            started: Instant::now(),
            finished: false,
        }
    }

    /// The attempt came to `outcome`.
    pub(super) fn finish(&mut self, outcome: HttpOutcome) {
        self.finished = true;
        self.record(outcome);
    }

    fn record(&self, outcome: HttpOutcome) {
        // The template, never the path: ids would make a series per resource.
        let route = path_template(&self.call.segments, "{id}");
        self.metrics.http_attempt(
            self.upstream.provider,
            &self.upstream.host,
            &self.call.method,
            route,
            outcome,
            self.started.elapsed(),
        );
    }
}

impl Drop for AttemptTimer<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.record(HttpOutcome::Failed("timeout"));
        }
    }
}
