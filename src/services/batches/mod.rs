//! `batchgate.xai.v1.BatchService`: validates each call, calls xAI's REST API through
//! `XaiClient`, and translates the answers; large adds are split, creates made idempotent.

mod add;
mod dedupe;
mod paging;
mod translate;
mod validate;
mod watch;

use std::collections::HashSet;

use prost::Message;
use tonic::{Request, Response, Status};

use crate::context::CallContext;
use crate::error::{Error, Result};
use crate::idempotency::Outcome;
use crate::keys::kind;
use crate::proto::xai::v1::{self as pb, batch_service_server::BatchService};
use crate::services::chunking::{chunk_by, repeated_field_size, within_message_limit};
use crate::services::core::{ServerStream, ServiceCore};
use crate::services::{page_size, page_token};
use crate::upstream::xai::XaiClient;
use crate::upstream::xai_models::next_token;
use dedupe::SentIds;
use translate::{batch_to_proto, metadata_to_proto, parse_state, result_to_proto};
use watch::is_settled;

/// The xAI service: the shared core over an `XaiClient`.
pub type BatchesService = ServiceCore<XaiClient>;

impl ServiceCore<XaiClient> {
    /// Batch `batch_id`, read through the status cache.
    async fn cached_batch(&self, ctx: &CallContext, batch_id: &str) -> Result<Response<pb::Batch>> {
        let id = batch_id.to_owned();
        let fetch = |xai: XaiClient, ctx: CallContext| async move {
            Ok(xai.batch(&id, &ctx).await?.map(batch_to_proto))
        };
        self.read_through(ctx, kind::BATCH, batch_id, fetch, is_settled)
            .await
    }
}

#[tonic::async_trait]
impl BatchService for ServiceCore<XaiClient> {
    async fn create_batch(
        &self,
        request: Request<pb::CreateBatchRequest>,
    ) -> Result<Response<pb::Batch>, Status> {
        let ctx = self.context(&request)?;
        let request = request.into_inner();
        validate::create_batch(&request)?;
        if request.request_id.is_empty() {
            let reply = self
                .client
                .create_batch(&request.name, request.input_file_id.as_deref(), &ctx)
                .await?;
            return Ok(reply.map(batch_to_proto).into_response());
        }
        let content = pb::CreateBatchRequest {
            request_id: String::new(),
            ..request.clone()
        }
        .encode_to_vec();
        let outcome = self
            .create_once(&ctx, &request.request_id, &content, |xai, ctx| async move {
                let reply = xai
                    .create_batch(&request.name, request.input_file_id.as_deref(), &ctx)
                    .await?;
                Ok((reply.body.batch_id.clone(), reply))
            })
            .await?;
        match outcome {
            // The create's own answer, with its upstream request id: no second read that
            // could fail (or run out of the caller's deadline) after the batch exists.
            Outcome::Created { reply, .. } => Ok(reply.map(batch_to_proto).into_response()),
            // An earlier call made it: answer with the batch as it is now.
            Outcome::Replayed { id } => Ok(self.cached_batch(&ctx, &id).await?),
        }
    }

    async fn get_batch(
        &self,
        request: Request<pb::GetBatchRequest>,
    ) -> Result<Response<pb::Batch>, Status> {
        let ctx = self.context(&request)?;
        let batch_id = request.into_inner().batch_id;
        validate::batch_id(&batch_id)?;
        Ok(self.cached_batch(&ctx, &batch_id).await?)
    }

    async fn list_batches(
        &self,
        request: Request<pb::ListBatchesRequest>,
    ) -> Result<Response<pb::ListBatchesResponse>, Status> {
        let ctx = self.context(&request)?;
        let request = request.into_inner();
        validate::list_batches(&request)?;
        let reply = self
            .client
            .list_batches(
                page_size(request.page_size, 100),
                page_token(&request.page_token),
                &ctx,
            )
            .await?;
        Ok(reply
            .map(|body| pb::ListBatchesResponse {
                batches: body.batches.into_iter().map(batch_to_proto).collect(),
                next_page_token: next_token(body.pagination_token),
            })
            .into_response())
    }

    async fn cancel_batch(
        &self,
        request: Request<pb::CancelBatchRequest>,
    ) -> Result<Response<pb::Batch>, Status> {
        let ctx = self.context(&request)?;
        let batch_id = request.into_inner().batch_id;
        validate::batch_id(&batch_id)?;
        let reply = self.client.cancel_batch(&batch_id, &ctx).await;
        // Even a failed cancel may have reached the upstream: forget what it may have changed.
        self.invalidate(&ctx, &[kind::BATCH], &batch_id).await;
        Ok(reply?.map(batch_to_proto).into_response())
    }

    async fn add_batch_requests(
        &self,
        request: Request<pb::AddBatchRequestsRequest>,
    ) -> Result<Response<pb::AddBatchRequestsResponse>, Status> {
        let ctx = self.context(&request)?;
        let mut request = request.into_inner();
        validate::add_requests(&request)?;
        let plan = add::plan(
            &request,
            self.config.xai_add_chunk_bytes,
            self.config.xai_add_chunk_requests,
        );
        // The planned bodies hold everything the message did: keep only the batch id.
        let batch_id = std::mem::take(&mut request.batch_id);
        drop(request);
        let reply = add::execute(&self.client, &batch_id, plan, &ctx).await;
        // Added requests change the batch's counters, even when only some chunks made it.
        self.invalidate(&ctx, &[kind::BATCH], &batch_id).await;
        Ok(Response::new(reply?))
    }

    async fn list_batch_request_metadata(
        &self,
        request: Request<pb::ListBatchRequestMetadataRequest>,
    ) -> Result<Response<pb::ListBatchRequestMetadataResponse>, Status> {
        let ctx = self.context(&request)?;
        let request = request.into_inner();
        validate::list_request_metadata(&request)?;
        let wanted: HashSet<i32> = request.states.iter().copied().collect();
        let reply = self
            .client
            .list_request_metadata(
                &request.batch_id,
                page_size(request.page_size, 100),
                page_token(&request.page_token),
                &ctx,
            )
            .await?;
        Ok(reply
            .map(|body| pb::ListBatchRequestMetadataResponse {
                batch_request_metadata: body
                    .batch_request_metadata
                    .into_iter()
                    .filter(|m| {
                        wanted.is_empty() || wanted.contains(&i32::from(parse_state(&m.state)))
                    })
                    .map(metadata_to_proto)
                    .collect(),
                next_page_token: next_token(body.pagination_token),
            })
            .into_response())
    }

    async fn list_batch_results(
        &self,
        request: Request<pb::ListBatchResultsRequest>,
    ) -> Result<Response<pb::ListBatchResultsResponse>, Status> {
        let ctx = self.context(&request)?;
        let request = request.into_inner();
        validate::page(&request.batch_id, request.page_size, &request.page_token)?;
        let start = paging::parse(&request.page_token);
        let limit = start.limit.unwrap_or(page_size(request.page_size, 100));
        let reply = self
            .client
            .list_results(&request.batch_id, limit, start.upstream, &ctx)
            .await?;
        let reply = reply.try_map(|body| {
            let mut results: Vec<_> = body
                .results
                .into_iter()
                .skip(start.skip)
                .map(result_to_proto)
                .collect();
            // An upstream page too large for one message goes out in parts.
            let fit = paging::fitting(&results)?;
            let next_page_token = if fit < results.len() {
                paging::resume(start.upstream, limit, start.skip + fit)
            } else {
                next_token(body.pagination_token)
            };
            results.truncate(fit);
            Ok::<_, Error>(pb::ListBatchResultsResponse {
                results,
                next_page_token,
            })
        })?;
        Ok(reply.into_response())
    }

    type StreamBatchResultsStream = ServerStream<pb::StreamBatchResultsResponse>;

    async fn stream_batch_results(
        &self,
        request: Request<pb::StreamBatchResultsRequest>,
    ) -> Result<Response<Self::StreamBatchResultsStream>, Status> {
        let ctx = self.context(&request)?;
        let request = request.into_inner();
        validate::stream_results(&request)?;
        let limit = page_size(request.upstream_page_size, 1000);
        // The first page is read before answering, so a bad id fails the call itself.
        let first = self
            .client
            .list_results(&request.batch_id, limit, None, &ctx)
            .await?
            .body;
        let (xai, batch_id, chunk_bytes) = (
            self.client.clone(),
            request.batch_id,
            self.config.results_chunk_bytes,
        );
        let stream = async_stream::try_stream! {
            // Results can shift between pages while a batch runs: none is sent twice.
            let mut sent = SentIds::new(dedupe::EXACT_IDS);
            let mut page = first;
            loop {
                let fresh: Vec<_> = page
                    .results
                    .into_iter()
                    .filter(|r| sent.first_time(&r.batch_request_id))
                    .map(result_to_proto)
                    .collect();
                sent.end_page();
                for results in chunk_by(fresh, repeated_field_size, chunk_bytes, 0) {
                    let chunk = pb::StreamBatchResultsResponse { results };
                    yield within_message_limit(chunk, |c| {
                        let id = c.results.first().map_or("", |r| r.batch_request_id.as_str());
                        format!("the result of {id}")
                    })?;
                }
                let next = next_token(page.pagination_token);
                if next.is_empty() {
                    break;
                }
                let page_ctx = ctx.with_deadline(ctx.deadline.renewed());
                page = xai.list_results(&batch_id, limit, Some(&next), &page_ctx).await.map_err(Status::from)?.body;
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }

    type WatchBatchStream = ServerStream<pb::WatchBatchResponse>;

    async fn watch_batch(
        &self,
        request: Request<pb::WatchBatchRequest>,
    ) -> Result<Response<Self::WatchBatchStream>, Status> {
        self.watch(request, "WatchBatch", |request| {
            validate::batch_id(&request.batch_id)?;
            Ok(request.batch_id)
        })
        .await
    }
}
