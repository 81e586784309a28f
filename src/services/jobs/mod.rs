//! `batchgate.sutro.v1.JobService`: validates each call, calls Sutro's REST API through
//! `SutroClient`, and translates the answers; creates are made idempotent by request id.

mod results;
mod translate;
mod validate;
pub mod watch;

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::config::Config;
use crate::context::CallContext;
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::idempotency::{self, IdempotencyStore};
use crate::keys::{ResourceKey, kind};
use crate::progress::{MemoryHub, ProgressHub, WatchTiming, first_state, watcher_stream};
use crate::proto::sutro::v1::{self as pb, job_service_server::JobService};
use crate::services::chunking::within_message_limit;
use crate::services::{page_size, page_token};
use crate::upstream::sutro::{ResultsOptions, SutroClient};
use results::ResultColumns;
use translate::{create_body, failure_reason, job_to_proto, parse_status};
use watch::{poll_job, watch_message};

/// A server stream of gRPC messages.
pub type ServerStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Everything the Sutro service needs, shared by all calls.
#[derive(Clone)]
pub struct JobsService {
    sutro: SutroClient,
    config: Arc<Config>,
    idempotency: Arc<dyn IdempotencyStore>,
    watches: Arc<dyn ProgressHub<pb::JobProgress>>,
    shutdown: CancellationToken,
}

impl JobsService {
    /// The service over `sutro`, with the given shared state.
    pub fn new(
        sutro: SutroClient,
        config: Arc<Config>,
        idempotency: Arc<dyn IdempotencyStore>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            sutro,
            config,
            idempotency,
            watches: Arc::new(MemoryHub::default()),
            shutdown,
        }
    }

    /// Jobs being watched right now (one upstream poller each).
    pub fn active_watches(&self) -> usize {
        self.watches.active()
    }

    fn context<T>(&self, request: &Request<T>) -> Result<CallContext> {
        CallContext::from_metadata(
            request.metadata(),
            self.config.sutro_api_key.as_ref(),
            self.config.upstream_timeout,
        )
    }

    fn timing(&self) -> WatchTiming {
        WatchTiming::from_config(&self.config)
    }
}

#[tonic::async_trait]
impl JobService for JobsService {
    async fn create_job(
        &self,
        request: Request<pb::CreateJobRequest>,
    ) -> Result<Response<pb::CreateJobResponse>, Status> {
        let ctx = self.context(&request)?;
        let request = request.into_inner();
        validate::create_job(&request)?;
        let body = create_body(&request);

        if request.request_id.is_empty() {
            let reply = self.sutro.create_job(body, &ctx).await?;
            let job_id = created_id(&self.sutro, &reply.body)?;
            return Ok(reply
                .map(|body| pb::CreateJobResponse {
                    job_id,
                    message: body.message(),
                    replayed: false,
                })
                .into_response());
        }

        let key = ResourceKey::new(
            ctx.caller.tenant.clone(),
            self.sutro.upstream().provider,
            kind::IDEMPOTENCY,
            request.request_id,
        );
        let fingerprint = idempotency::fingerprint(body.to_string().as_bytes());
        let sutro = self.sutro.clone();
        let create_ctx = ctx.with_deadline(Deadline::after(self.config.upstream_timeout));
        let create = Box::pin(async move {
            let reply = sutro.create_job(body, &create_ctx).await?;
            created_id(&sutro, &reply.body)
        });
        let outcome = idempotency::create_once(
            self.idempotency.as_ref(),
            key.to_string(),
            fingerprint,
            ctx.deadline,
            self.sutro.upstream(),
            create,
        )
        .await?;
        Ok(Response::new(pb::CreateJobResponse {
            job_id: outcome.id,
            message: if outcome.replayed {
                "Job already created for this request_id".into()
            } else {
                "Job created successfully".into()
            },
            replayed: outcome.replayed,
        }))
    }

    async fn get_job_status(
        &self,
        request: Request<pb::GetJobStatusRequest>,
    ) -> Result<Response<pb::GetJobStatusResponse>, Status> {
        let ctx = self.context(&request)?;
        let job_id = request.into_inner().job_id;
        validate::job_id(&job_id)?;
        let reply = self.sutro.job_status(&job_id, &ctx).await?;
        let reply = reply.try_map(|body| {
            let raw_status = body.status_of(&job_id).ok_or_else(|| {
                self.sutro
                    .protocol_error("job_status names no status for this job")
            })?;
            Ok::<_, Error>(pb::GetJobStatusResponse {
                status: parse_status(&raw_status).into(),
                raw_status,
                failure_reason: failure_reason(body.failure_reason()),
                message: body.message(),
                job_id,
            })
        })?;
        Ok(reply.into_response())
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let ctx = self.context(&request)?;
        let job_id = request.into_inner().job_id;
        validate::job_id(&job_id)?;
        let reply = self.sutro.job(&job_id, &ctx).await?;
        Ok(reply.map(job_to_proto).into_response())
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let ctx = self.context(&request)?;
        let request = request.into_inner();
        validate::list_jobs(&request)?;
        // 25: what Sutro's own CLI lists by default.
        let limit = page_size(request.page_size, 25);
        let reply = self
            .sutro
            .list_jobs(limit, page_token(&request.page_token), &ctx)
            .await?;
        Ok(reply
            .map(|body| pb::ListJobsResponse {
                jobs: body.jobs.into_iter().map(job_to_proto).collect(),
                next_page_token: body.next_cursor.unwrap_or_default(),
            })
            .into_response())
    }

    type GetJobResultsStream = ServerStream<pb::GetJobResultsResponse>;

    async fn get_job_results(
        &self,
        request: Request<pb::GetJobResultsRequest>,
    ) -> Result<Response<Self::GetJobResultsStream>, Status> {
        let ctx = self.context(&request)?;
        let request = request.into_inner();
        validate::results(&request)?;
        let options = ResultsOptions {
            include_inputs: request.include_inputs,
            include_cumulative_logprobs: request.include_cumulative_logprobs,
        };
        let reply = self
            .sutro
            .job_results(&request.job_id, options, &ctx)
            .await?;
        let columns = reply
            .try_map(|body| ResultColumns::from_json(body.results))
            .map_err(|detail| self.sutro.protocol_error(detail))?;
        let chunk_bytes = self.config.results_chunk_bytes;
        Ok(columns
            .map(|columns| {
                let chunks = columns.into_chunks(chunk_bytes, request.max_rows_per_chunk as usize);
                let stream = futures_util::stream::iter(chunks.into_iter().map(|chunk| {
                    within_message_limit(chunk, |c| {
                        let index = c.rows.first().map_or(0, |r| r.index);
                        format!("result row {index}")
                    })
                    .map_err(Status::from)
                }));
                Box::pin(stream) as Self::GetJobResultsStream
            })
            .into_response())
    }

    async fn get_job_results_url(
        &self,
        request: Request<pb::GetJobResultsUrlRequest>,
    ) -> Result<Response<pb::GetJobResultsUrlResponse>, Status> {
        let ctx = self.context(&request)?;
        let request = request.into_inner();
        validate::results_url(&request)?;
        let format = if request.format.is_empty() {
            "parquet"
        } else {
            request.format.as_str()
        };
        let options = ResultsOptions {
            include_inputs: request.include_inputs,
            include_cumulative_logprobs: request.include_cumulative_logprobs,
        };
        let expires = (request.expires_in_seconds > 0).then_some(request.expires_in_seconds as u32);
        let reply = self
            .sutro
            .results_url(&request.job_id, format, options, expires, &ctx)
            .await?;
        Ok(reply
            .map(|body| pb::GetJobResultsUrlResponse {
                job_id: if body.job_id.is_empty() {
                    request.job_id
                } else {
                    body.job_id
                },
                format: body.format,
                include_inputs: body.include_inputs,
                include_cumulative_logprobs: body.include_cumulative_logprobs,
                expires_in_seconds: body.expires_in_seconds.unwrap_or_default() as i32,
                artifact: Some(pb::ResultsArtifact {
                    bucket: body.artifact.bucket,
                    key: body.artifact.key,
                    filename: body.artifact.filename,
                    size_bytes: body.artifact.size_bytes.unwrap_or_default(),
                }),
                get_url: body.urls.get,
                head_url: body.urls.head,
            })
            .into_response())
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let ctx = self.context(&request)?;
        let job_id = request.into_inner().job_id;
        validate::job_id(&job_id)?;
        let reply = self.sutro.cancel_job(&job_id, &ctx).await?;
        Ok(reply
            .map(|body| pb::CancelJobResponse {
                cancelled: body.cancelled,
                message: body.message,
            })
            .into_response())
    }

    async fn get_quotas(
        &self,
        request: Request<pb::GetQuotasRequest>,
    ) -> Result<Response<pb::GetQuotasResponse>, Status> {
        let ctx = self.context(&request)?;
        let reply = self.sutro.quotas(&ctx).await?;
        Ok(reply
            .map(|body| pb::GetQuotasResponse {
                quotas: body
                    .quotas
                    .into_iter()
                    .enumerate()
                    .map(|(index, q)| pb::Quota {
                        // The CLI treats the list index as the priority when none is given.
                        priority: q.priority.unwrap_or(index as i64) as i32,
                        row_quota: q.row_quota.unwrap_or_default(),
                        token_quota: q.token_quota.unwrap_or_default(),
                    })
                    .collect(),
            })
            .into_response())
    }

    async fn check_auth(
        &self,
        request: Request<pb::CheckAuthRequest>,
    ) -> Result<Response<pb::CheckAuthResponse>, Status> {
        let ctx = self.context(&request)?;
        let through_batch = request.into_inner().scope() == pb::AuthScope::BatchService;
        let reply = self.sutro.check_auth(through_batch, &ctx).await?;
        if !reply.body.authenticated {
            return Err(Error::Unauthenticated("Sutro did not accept the API key".into()).into());
        }
        Ok(reply
            .map(|body| pb::CheckAuthResponse {
                authenticated: true,
                principal: body.principal.and_then(crate::convert::json_to_struct),
            })
            .into_response())
    }

    type WatchJobStream = ServerStream<pb::WatchJobResponse>;

    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        if self.shutdown.is_cancelled() {
            return Err(Error::Unavailable("batchgate is shutting down".into()).into());
        }
        let ctx = self.context(&request)?;
        let job_id = request.into_inner().job_id;
        validate::job_id(&job_id)?;
        let key = ResourceKey::new(
            ctx.caller.tenant.clone(),
            self.sutro.upstream().provider,
            kind::WATCH,
            job_id.clone(),
        );
        let (sutro, timing) = (self.sutro.clone(), self.timing());
        let mut rx = self.watches.subscribe(
            &key,
            Box::new(move |publisher| Box::pin(poll_job(sutro, ctx, job_id, timing, publisher))),
        );
        first_state(&mut rx).await?;
        let stream = watcher_stream(
            rx,
            self.timing(),
            self.shutdown.clone(),
            "WatchJob",
            watch_message,
        );
        Ok(Response::new(Box::pin(stream)))
    }
}

fn created_id(
    sutro: &SutroClient,
    reply: &crate::upstream::sutro_models::CreateJobReply,
) -> Result<String> {
    reply
        .job_id()
        .map(str::to_owned)
        .ok_or_else(|| sutro.protocol_error("the create answer names no job id"))
}
