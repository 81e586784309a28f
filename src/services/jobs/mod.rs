//! `batchgate.sutro.v1.JobService`: validates each call, calls Sutro's REST API through
//! `SutroClient`, and translates the answers; creates are made idempotent by request id.

mod create_body;
mod results;
mod translate;
mod validate;
pub mod watch;

use bytes::Bytes;
use tonic::{Request, Response, Status};

use crate::context::CallContext;
use crate::error::{Error, Result};
use crate::idempotency::Outcome;
use crate::keys::kind;
use crate::proto::sutro::v1::{
    self as pb, create_job_request::Inputs, job_service_server::JobService,
};
use crate::records::JobRecord;
use crate::services::chunking::within_message_limit;
use crate::services::core::{ServerStream, ServiceCore};
use crate::services::{page_size, page_token};
use crate::upstream::reply::Reply;
use crate::upstream::sutro::{ResultsOptions, SutroClient};
use crate::upstream::sutro_models::CreateJobReply;
use create_body::create_body;
use results::ResultColumns;
use translate::{is_final, job_to_proto, status_to_proto};

/// The Sutro service: the shared core over a `SutroClient`.
pub type JobsService = ServiceCore<SutroClient>;

#[tonic::async_trait]
impl JobService for ServiceCore<SutroClient> {
    async fn create_job(
        &self,
        request: Request<pb::CreateJobRequest>,
    ) -> Result<Response<pb::CreateJobResponse>, Status> {
        let ctx = self.context(&request)?;
        let mut request = request.into_inner();
        validate::create_job(&request)?;
        let body = Bytes::from(create_body(&request));
        let record = JobRecord {
            id_column_name: match &request.inputs {
                Some(Inputs::Url(url)) => url.id_column_name.clone(),
                _ => None,
            },
        };
        let request_id = std::mem::take(&mut request.request_id);
        // The message is as large as the body: only one of the two stays alive.
        drop(request);
        let remember = self.remember(&ctx, record);

        if request_id.is_empty() {
            let reply = self.client.create_job(body, &ctx).await?;
            let job_id = created_id(&self.client, &reply.body)?;
            remember.keep(&job_id).await;
            return Ok(created(job_id, reply));
        }

        // The body is the fingerprinted content: the same bytes the old `Value` printed.
        let content = body.clone();
        let outcome = self
            .create_once(&ctx, &request_id, &content, |sutro, ctx| async move {
                let reply = sutro.create_job(body, &ctx).await?;
                let job_id = created_id(&sutro, &reply.body)?;
                // Inside the detached create, so a caller that leaves cannot skip it.
                remember.keep(&job_id).await;
                Ok((job_id, reply))
            })
            .await?;
        Ok(match outcome {
            Outcome::Created { id, reply } => created(id, reply),
            // A replay sends nothing upstream: there is no upstream request id to echo.
            Outcome::Replayed { id } => Response::new(pb::CreateJobResponse {
                job_id: id,
                message: "Job already created for this request_id; no new job was made".into(),
                replayed: true,
            }),
        })
    }

    async fn get_job_status(
        &self,
        request: Request<pb::GetJobStatusRequest>,
    ) -> Result<Response<pb::GetJobStatusResponse>, Status> {
        let ctx = self.context(&request)?;
        let job_id = request.into_inner().job_id;
        validate::job_id(&job_id)?;
        let id = job_id.clone();
        let fetch = |sutro: SutroClient, ctx: CallContext| async move {
            let reply = sutro.job_status(&id, &ctx).await?;
            reply.try_map(|body| {
                status_to_proto(id, &body)
                    .ok_or_else(|| sutro.protocol_error("job_status names no status for this job"))
            })
        };
        let is_final = |status: &pb::GetJobStatusResponse| is_final(status.status());
        Ok(self
            .read_through(&ctx, kind::STATUS, &job_id, fetch, is_final)
            .await?)
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let ctx = self.context(&request)?;
        let job_id = request.into_inner().job_id;
        validate::job_id(&job_id)?;
        let id = job_id.clone();
        let fetch = |sutro: SutroClient, ctx: CallContext| async move {
            Ok(sutro.job(&id, &ctx).await?.map(job_to_proto))
        };
        let is_final = |job: &pb::Job| is_final(job.status());
        Ok(self
            .read_through(&ctx, kind::JOB, &job_id, fetch, is_final)
            .await?)
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
            .client
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
            .client
            .job_results(&request.job_id, options, &ctx)
            .await?;
        let id_column = if request.id_column_name.is_empty() {
            self.recall(&ctx, &request.job_id)
                .await
                .and_then(|record| record.id_column_name)
        } else {
            Some(request.id_column_name.clone())
        };
        let columns = reply
            .try_map(|body| ResultColumns::from_json(body.results, id_column.as_deref()))
            .map_err(|detail| self.client.protocol_error(detail))?;
        if !request.id_column_name.is_empty() && columns.body.id_column_name().is_empty() {
            return Err(validate::missing_id_column(&request.id_column_name).into());
        }
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
            .client
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
        let reply = self.client.cancel_job(&job_id, &ctx).await;
        // Even a failed cancel may have reached the upstream: forget what it may have changed.
        self.invalidate(&ctx, &[kind::STATUS, kind::JOB], &job_id)
            .await;
        Ok(reply?
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
        let reply = self.client.quotas(&ctx).await?;
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
        let request = request.into_inner();
        validate::check_auth(&request)?;
        let through_batch = request.scope() == pb::AuthScope::BatchService;
        let reply = self.client.check_auth(through_batch, &ctx).await?;
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
        self.watch(request, "WatchJob", |request| {
            validate::job_id(&request.job_id)?;
            Ok(request.job_id)
        })
        .await
    }
}

/// The answer to a create that made job `job_id`, with the upstream's message.
fn created(job_id: String, reply: Reply<CreateJobReply>) -> Response<pb::CreateJobResponse> {
    reply
        .map(|body| pb::CreateJobResponse {
            job_id,
            message: body.message(),
            replayed: false,
        })
        .into_response()
}

fn created_id(sutro: &SutroClient, reply: &CreateJobReply) -> Result<String> {
    reply
        .job_id()
        .map(str::to_owned)
        .ok_or_else(|| sutro.protocol_error("the create answer names no job id"))
}
