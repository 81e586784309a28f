//! The xAI REST client for batches: one method per `/v1/batches` endpoint, returning
//! the typed shapes of `xai_models`. Retries, deadlines and auth come from `http`.

use bytes::Bytes;
use serde_json::json;
use tonic::Code;
use url::Url;

use super::budget::{Budgets, Spend};
use super::http::{AuthScheme, Call, Limits, Reply, UpstreamHttp};
use super::xai_models::*;
use crate::config::RetryPolicy;
use crate::context::CallContext;
use crate::error::{Error, Result};

/// A client of xAI's batch API.
#[derive(Debug, Clone)]
pub struct XaiClient {
    http: UpstreamHttp,
}

impl XaiClient {
    /// A client of the API at `base` (a normalized `<origin>/v1/` URL).
    pub fn new(base: Url, retry: RetryPolicy, limits: Limits) -> Result<Self> {
        Ok(Self {
            http: UpstreamHttp::new("xai", base, AuthScheme::Bearer, retry, limits)?,
        })
    }

    /// The same client, keeping to `budgets` (xAI's creations and add calls).
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

    /// `POST /v1/batches`. Never retried: a lost answer may still have created a batch.
    pub async fn create_batch(
        &self,
        name: &str,
        input_file_id: Option<&str>,
        ctx: &CallContext,
    ) -> Result<Reply<XaiBatch>> {
        let mut body = json!({ "name": name });
        if let (Some(id), Some(map)) = (input_file_id, body.as_object_mut()) {
            map.insert("input_file_id".into(), json!(id));
        }
        let call = Call::post(["batches"], body).spends(Spend::Create);
        self.call(&call, ctx).await
    }

    /// `GET /v1/batches/{id}`.
    pub async fn batch(&self, batch_id: &str, ctx: &CallContext) -> Result<Reply<XaiBatch>> {
        self.call(&Call::get(["batches", batch_id]), ctx).await
    }

    /// `GET /v1/batches?limit&pagination_token`.
    pub async fn list_batches(
        &self,
        limit: u32,
        token: Option<&str>,
        ctx: &CallContext,
    ) -> Result<Reply<BatchPage>> {
        self.call(&paged(Call::get(["batches"]), limit, token), ctx)
            .await
    }

    /// `POST /v1/batches/{id}:cancel`: cancelling twice is harmless, so it is retried.
    /// The batch is documented as the answer; an upstream that answers with no body
    /// (204, or an empty 200) has still cancelled, so the batch is read afterwards.
    pub async fn cancel_batch(&self, batch_id: &str, ctx: &CallContext) -> Result<Reply<XaiBatch>> {
        let call = Call::post(
            ["batches".to_owned(), format!("{batch_id}:cancel")],
            json!({}),
        )
        .idempotent();
        let reply = self
            .http
            .json_or_empty(&call, ctx)
            .await
            .map_err(classify)?;
        match reply.body {
            Some(body) => Ok(Reply {
                body,
                request_id: reply.request_id,
            }),
            None => self.batch(batch_id, ctx).await,
        }
    }

    /// `POST /v1/batches/{id}/requests` of a serialized `{"batch_requests": [...]}`.
    /// Every request must carry its id: re-adding an id with the same content is a
    /// no-op upstream, which makes this safe to retry.
    pub async fn add_requests(
        &self,
        batch_id: &str,
        body: Bytes,
        ctx: &CallContext,
    ) -> Result<Reply<()>> {
        let call = Call::post_bytes(["batches", batch_id, "requests"], body)
            .idempotent()
            .spends(Spend::Add);
        // No answer body is documented: nothing, `{}`, 204 or a body are all success.
        let reply = self
            .http
            .json_or_empty::<serde::de::IgnoredAny>(&call, ctx)
            .await
            .map_err(classify);
        match reply {
            Ok(r) => Ok(Reply {
                body: (),
                request_id: r.request_id,
            }),
            Err(Error::Upstream(failure)) if failure.status == 403 => {
                Err(self.refused_add(batch_id, failure, ctx).await)
            }
            Err(other) => Err(other),
        }
    }

    /// A 403 on an add: a cancelled batch takes no more requests, which is the
    /// caller's precondition; any other 403 (a key without the right) is a
    /// permission problem. The batch is read to tell which, since the status alone
    /// cannot; when that read fails too, nothing is known and the 403 stays as it is.
    async fn refused_add(
        &self,
        batch_id: &str,
        mut failure: crate::error::UpstreamFailure,
        ctx: &CallContext,
    ) -> Error {
        let cancelled = match self.batch(batch_id, ctx).await {
            Ok(batch) => {
                batch.body.cancel_time.is_some() || batch.body.cancel_by_xai_message.is_some()
            }
            Err(error) => {
                tracing::debug!(%error, "could not read the batch after a refused add");
                false
            }
        };
        if cancelled {
            failure.meaning = Some(Code::FailedPrecondition);
        }
        Error::Upstream(failure)
    }

    /// `GET /v1/batches/{id}/requests?limit&pagination_token`.
    pub async fn list_request_metadata(
        &self,
        batch_id: &str,
        limit: u32,
        token: Option<&str>,
        ctx: &CallContext,
    ) -> Result<Reply<RequestMetadataPage>> {
        self.call(
            &paged(Call::get(["batches", batch_id, "requests"]), limit, token),
            ctx,
        )
        .await
    }

    /// `GET /v1/batches/{id}/results?limit&pagination_token`.
    pub async fn list_results(
        &self,
        batch_id: &str,
        limit: u32,
        token: Option<&str>,
        ctx: &CallContext,
    ) -> Result<Reply<ResultPage>> {
        self.call(
            &paged(Call::get(["batches", batch_id, "results"]), limit, token),
            ctx,
        )
        .await
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        call: &Call,
        ctx: &CallContext,
    ) -> Result<Reply<T>> {
        self.http.json(call, ctx).await.map_err(classify)
    }
}

fn paged(call: Call, limit: u32, token: Option<&str>) -> Call {
    let call = call.query("limit", limit);
    match token {
        Some(token) => call.query("pagination_token", token),
        None => call,
    }
}

/// xAI answers a wrong key with 400 "Incorrect API key": that is UNAUTHENTICATED.
fn classify(error: Error) -> Error {
    match error {
        Error::Upstream(mut failure)
            if failure.status == 400
                && failure
                    .message
                    .to_ascii_lowercase()
                    .contains("incorrect api key") =>
        {
            failure.meaning = Some(Code::Unauthenticated);
            Error::Upstream(failure)
        }
        other => other,
    }
}
