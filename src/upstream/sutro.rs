//! The Sutro REST client: one method per endpoint of the `/v1` API, returning the
//! typed shapes of `sutro_models`. Retries, deadlines and auth come from `http`.

use std::pin::Pin;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde_json::json;
use url::Url;

use super::base_url::is_retired_sutro_host;
use super::budget::{Budgets, Spend};
use super::http::{AuthScheme, Call, Limits, Reply, UpstreamHttp};
use super::sutro_models::*;
use crate::config::RetryPolicy;
use crate::context::CallContext;
use crate::error::{Error, Result};

/// The progress lines of one job, as they arrive.
pub type ProgressStream = Pin<Box<dyn Stream<Item = Result<ProgressUpdate>> + Send>>;

/// Longest NDJSON line accepted from the progress stream.
const MAX_PROGRESS_LINE: usize = 64 * 1024;

/// A client of one Sutro deployment.
#[derive(Debug, Clone)]
pub struct SutroClient {
    http: UpstreamHttp,
}

/// Options of a results request.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResultsOptions {
    /// Return each row's input.
    pub include_inputs: bool,
    /// Return cumulative logprobs.
    pub include_cumulative_logprobs: bool,
}

impl SutroClient {
    /// A client of the deployment at `base` (a normalized `<origin>/v1/` URL).
    pub fn new(base: Url, retry: RetryPolicy, limits: Limits) -> Result<Self> {
        if is_retired_sutro_host(&base) {
            tracing::warn!(
                host = base.host_str(),
                "the configured Sutro URL is the retired shared API; it answers 410"
            );
        }
        Ok(Self {
            http: UpstreamHttp::new("sutro", base, AuthScheme::Key, retry, limits)?,
        })
    }

    /// `POST batch-inference` of the serialized JSON `body`. Never retried: a lost
    /// answer may still have created a job.
    pub async fn create_job(
        &self,
        body: Bytes,
        ctx: &CallContext,
    ) -> Result<Reply<CreateJobReply>> {
        let call = Call::post_bytes(["batch-inference"], body).spends(Spend::Create);
        self.call(&call, ctx).await
    }

    /// `GET job-status/{id}`.
    pub async fn job_status(
        &self,
        job_id: &str,
        ctx: &CallContext,
    ) -> Result<Reply<JobStatusReply>> {
        self.call(&Call::get(["job-status", job_id]), ctx).await
    }

    /// `GET jobs/{id}`.
    pub async fn job(&self, job_id: &str, ctx: &CallContext) -> Result<Reply<SutroJob>> {
        let reply: Reply<JobEnvelope> = self.call(&Call::get(["jobs", job_id]), ctx).await?;
        Ok(Reply {
            body: reply.body.job,
            request_id: reply.request_id,
        })
    }

    /// `GET list-jobs?limit=&cursor=`.
    pub async fn list_jobs(
        &self,
        limit: u32,
        cursor: Option<&str>,
        ctx: &CallContext,
    ) -> Result<Reply<ListJobsReply>> {
        let mut call = Call::get(["list-jobs"]).query("limit", limit);
        if let Some(cursor) = cursor {
            call = call.query("cursor", cursor);
        }
        self.call(&call, ctx).await
    }

    /// `POST job-results`: a read, so it is safe to retry.
    pub async fn job_results(
        &self,
        job_id: &str,
        options: ResultsOptions,
        ctx: &CallContext,
    ) -> Result<Reply<ResultsReply>> {
        let body = json!({
            "job_id": job_id,
            "include_inputs": options.include_inputs,
            "include_cumulative_logprobs": options.include_cumulative_logprobs,
        });
        self.call(&Call::post(["job-results"], body).idempotent(), ctx)
            .await
    }

    /// `GET jobs/{id}/results-url`.
    pub async fn results_url(
        &self,
        job_id: &str,
        format: &str,
        options: ResultsOptions,
        expires_in_seconds: Option<u32>,
        ctx: &CallContext,
    ) -> Result<Reply<ResultsUrlReply>> {
        let mut call = Call::get(["jobs", job_id, "results-url"])
            .query("format", format)
            .query("include_inputs", options.include_inputs)
            .query(
                "include_cumulative_logprobs",
                options.include_cumulative_logprobs,
            );
        if let Some(expires) = expires_in_seconds {
            call = call.query("expires_in_seconds", expires);
        }
        self.call(&call, ctx).await
    }

    /// `GET job-cancel/{id}`: asking twice is harmless, so it is retried.
    /// A 2xx with no body accepted the cancel as surely as a documented one.
    pub async fn cancel_job(&self, job_id: &str, ctx: &CallContext) -> Result<Reply<CancelReply>> {
        let reply = self
            .http
            .json_or_empty::<CancelReply>(&Call::get(["job-cancel", job_id]), ctx)
            .await
            .map_err(explain_retired_host)?;
        Ok(Reply {
            body: reply.body.unwrap_or_default(),
            request_id: reply.request_id,
        })
    }

    /// `GET get-quotas`.
    pub async fn quotas(&self, ctx: &CallContext) -> Result<Reply<QuotasReply>> {
        self.call(&Call::get(["get-quotas"]), ctx).await
    }

    /// `GET auth/check` (deployment only) or `GET try-authentication` (through Batch).
    pub async fn check_auth(
        &self,
        through_batch: bool,
        ctx: &CallContext,
    ) -> Result<Reply<AuthReply>> {
        let call = if through_batch {
            Call::get(["try-authentication"])
        } else {
            Call::get(["auth", "check"])
        };
        self.call(&call, ctx).await
    }

    /// `GET stream-job-progress/{id}`: the NDJSON lines, parsed. Opening is bounded
    /// by `ctx`'s deadline; reading is not (the stream lives as long as the job).
    pub async fn progress(&self, job_id: &str, ctx: &CallContext) -> Result<ProgressStream> {
        let response = self
            .http
            .open_stream(&Call::get(["stream-job-progress", job_id]), ctx)
            .await
            .map_err(explain_retired_host)?;
        let upstream = self.http.id().clone();
        let mut body = response.bytes_stream();
        let lines = async_stream::stream! {
            let mut buffer = BytesMut::new();
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(chunk) => buffer.extend_from_slice(&chunk),
                    Err(e) => {
                        yield Err(Error::UpstreamUnreachable { upstream: upstream.clone(), detail: format!("progress stream broke: {e}"), connected: true });
                        return;
                    }
                }
                while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
                    let line = buffer.split_to(end + 1);
                    if let Some(update) = parse_progress_line(&line[..end]) {
                        yield Ok(update);
                    }
                }
                if buffer.len() > MAX_PROGRESS_LINE {
                    buffer.advance(buffer.len());
                }
            }
            if let Some(update) = parse_progress_line(&buffer) {
                yield Ok(update);
            }
        };
        Ok(Box::pin(lines))
    }

    /// The same client, keeping to `budgets` (Sutro's creations, when configured).
    pub fn with_budgets(self, budgets: Budgets) -> Self {
        Self {
            http: self.http.with_budgets(budgets),
        }
    }

    /// The same client, recording its upstream calls on `metrics`.
    pub fn with_metrics(self, metrics: crate::metrics::Metrics) -> Self {
        Self {
            http: self.http.with_metrics(metrics),
        }
    }

    /// Which upstream this is.
    pub fn upstream(&self) -> &crate::error::UpstreamId {
        self.http.id()
    }

    /// An error for a 2xx answer whose content is not what Sutro documents.
    pub fn protocol_error(&self, detail: impl Into<String>) -> Error {
        Error::UpstreamProtocol {
            upstream: self.http.id().clone(),
            status: 200,
            detail: detail.into(),
        }
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        call: &Call,
        ctx: &CallContext,
    ) -> Result<Reply<T>> {
        self.http
            .json(call, ctx)
            .await
            .map_err(explain_retired_host)
    }
}

/// Sutro's retired shared host answers 410 to everything; say what to do about it.
fn explain_retired_host(error: Error) -> Error {
    match error {
        Error::Upstream(mut failure)
            if failure.status == 410 && failure.message.contains("no longer supported") =>
        {
            failure.message.push_str(
                " (batchgate: set BATCHGATE_SUTRO_BASE_URL to your Sutro single-tenant deployment URL)",
            );
            Error::Upstream(failure)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{UpstreamFailure, UpstreamId};

    fn gone(message: &str) -> Error {
        Error::Upstream(UpstreamFailure {
            upstream: UpstreamId {
                provider: "sutro",
                host: "api.sutro.sh".into(),
            },
            status: 410,
            message: message.into(),
            retry_after: None,
            request_id: None,
            meaning: None,
        })
    }

    #[test]
    fn the_retired_hosts_410_says_what_to_do_and_other_410s_are_kept() {
        let explained = explain_retired_host(gone(
            "Direct Sutro Batch API access is no longer supported by the Sutro SDK.",
        ));
        assert!(
            explained.to_string().contains("BATCHGATE_SUTRO_BASE_URL"),
            "{explained}"
        );
        assert_eq!(explained.code(), tonic::Code::FailedPrecondition);
        let kept = explain_retired_host(gone("This job is no longer available."));
        assert!(!kept.to_string().contains("BATCHGATE_SUTRO_BASE_URL"));
    }
}
