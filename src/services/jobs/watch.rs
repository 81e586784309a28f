//! WatchJob: one poller per (tenant, job) reads Sutro's NDJSON progress stream and the
//! persisted status; each watcher gets snapshots, changes, heartbeats and a final message.

use futures_util::{FutureExt, StreamExt};
use tokio::time::{Instant, sleep, timeout};

use super::translate::{failure_reason, is_final, job_to_proto, parse_status, status_to_proto};
use crate::context::CallContext;
use crate::deadline::Deadline;
use crate::error::{Error, Result, UpstreamId};
use crate::keys::kind;
use crate::progress::{EventKind, Publisher, WatchTiming};
use crate::proto::sutro::v1::{JobProgress, JobStatus, WatchEventKind, WatchJobResponse};
use crate::services::core::Provider;
use crate::services::read_through::CacheWriter;
use crate::upstream::sutro::SutroClient;
use crate::upstream::sutro_models::{ProgressUpdate, SutroJob};

/// Sutro jobs are watched through their NDJSON progress stream and persisted status.
impl Provider for SutroClient {
    type Progress = JobProgress;
    type WatchMessage = WatchJobResponse;

    fn upstream(&self) -> &UpstreamId {
        SutroClient::upstream(self)
    }

    async fn poll(
        self,
        ctx: CallContext,
        job_id: String,
        timing: WatchTiming,
        publisher: Publisher<JobProgress>,
        cache: CacheWriter,
    ) {
        let mut poller = Poller {
            client: self,
            cache,
            ctx,
            timing,
            publisher,
            progress: JobProgress {
                job_id: job_id.clone(),
                ..Default::default()
            },
            unpublished: false,
            rechecked_on_rows: false,
            started: Instant::now(),
        };
        if let Err(error) = poller.run().await {
            tracing::debug!(%error, job_id, "watch ended with an error");
            poller.publisher.fail(error);
        }
    }

    fn watch_message(
        kind: EventKind,
        mut progress: JobProgress,
        observed_at: prost_types::Timestamp,
    ) -> WatchJobResponse {
        progress.observed_at = Some(observed_at);
        WatchJobResponse {
            kind: WatchEventKind::from(kind).into(),
            progress: Some(progress),
        }
    }
}

struct Poller {
    client: SutroClient,
    /// Where what the poller reads goes, so watched jobs are always fresh in the cache.
    cache: CacheWriter,
    ctx: CallContext,
    timing: WatchTiming,
    publisher: Publisher<JobProgress>,
    progress: JobProgress,
    /// Progress read from the stream and not yet published.
    unpublished: bool,
    /// Whether the first moving rows already prompted a status read.
    rechecked_on_rows: bool,
    started: Instant,
}

impl Poller {
    async fn run(&mut self) -> Result<()> {
        let job = self.read_job().await?;
        self.apply_job(job);
        if self.publish_if_final() {
            return Ok(());
        }
        self.publish();

        // Like the SDK: the progress stream is opened once the job has started.
        while matches!(
            self.status(),
            JobStatus::Queued | JobStatus::Unknown | JobStatus::Unspecified
        ) {
            self.pause().await?;
            if self.refresh_status().await? {
                return Ok(());
            }
        }

        if self.follow_stream().await? {
            return Ok(());
        }
        // The stream can close before the persisted status is final: poll it.
        loop {
            if self.refresh_status().await? {
                return Ok(());
            }
            self.pause().await?;
        }
    }

    /// Reads the NDJSON stream until it ends; true once the job is final.
    async fn follow_stream(&mut self) -> Result<bool> {
        let mut lines = match self
            .client
            .progress(&self.progress.job_id, &self.call_ctx())
            .await
        {
            Ok(lines) => lines,
            Err(error) => {
                tracing::debug!(%error, "progress stream unavailable; polling status instead");
                return Ok(false);
            }
        };
        let mut ready = None;
        loop {
            let line = match ready.take() {
                Some(line) => line,
                None => match timeout(self.timing.poll, lines.next()).await {
                    Ok(line) => line,
                    // A silent stream: check the persisted status, keep reading.
                    Err(_) => {
                        if self.refresh_status().await? {
                            return Ok(true);
                        }
                        self.check_age()?;
                        continue;
                    }
                },
            };
            match line {
                Some(Ok(update)) => {
                    if self.apply_update(update).await? {
                        return Ok(true);
                    }
                    // Lines that arrived together (a tick's rows and its tokens) are
                    // published as one state, not as a half-updated one and then another.
                    match lines.next().now_or_never() {
                        Some(line) => ready = Some(line),
                        None if self.unpublished => self.publish(),
                        None => {}
                    }
                }
                // Whatever was read and not yet published goes out with the status
                // read that follows.
                Some(Err(error)) => {
                    tracing::debug!(%error, "progress stream broke");
                    return Ok(false);
                }
                None => return Ok(false),
            }
            self.check_age()?;
        }
    }

    async fn apply_update(&mut self, update: ProgressUpdate) -> Result<bool> {
        if !self.rechecked_on_rows
            && matches!(update, ProgressUpdate::Rows(rows) if rows > 0)
            && self.status() != JobStatus::Running
        {
            // Rows are moving while the last status read said STARTING: read the
            // persisted status again (once) rather than guess it from the stream.
            self.rechecked_on_rows = true;
            if self.refresh_status().await? {
                return Ok(true);
            }
        }
        let p = &mut self.progress;
        match update {
            ProgressUpdate::Rows(rows) => p.rows_processed = p.rows_processed.max(rows),
            ProgressUpdate::Tokens {
                input,
                output,
                per_second,
            } => {
                // Updates may carry any subset; counters never go backwards.
                if let Some(n) = input {
                    p.input_tokens = Some(p.input_tokens.unwrap_or(0).max(n));
                }
                if let Some(n) = output {
                    p.output_tokens = Some(p.output_tokens.unwrap_or(0).max(n));
                }
                if per_second.is_some() {
                    p.tokens_per_second = per_second;
                }
            }
            // The stream can miss the final notification; heartbeats are the cue to
            // look at the persisted status.
            ProgressUpdate::Heartbeat => return self.refresh_status().await,
        }
        self.unpublished = true;
        Ok(false)
    }

    /// Reads the persisted status; on a final one, reads the whole job, publishes
    /// the final state and returns true.
    async fn refresh_status(&mut self) -> Result<bool> {
        self.check_age()?;
        let reply = match self
            .client
            .job_status(&self.progress.job_id, &self.call_ctx())
            .await
        {
            Ok(reply) => reply.body,
            Err(error) if error.is_transient() => {
                tracing::debug!(%error, "status poll failed; will retry");
                return Ok(false);
            }
            Err(error) => return Err(error),
        };
        if let Some(seen) = status_to_proto(self.progress.job_id.clone(), &reply) {
            let done = is_final(seen.status());
            self.cache.put(kind::STATUS, &seen, done).await;
        }
        let raw = reply.status_of(&self.progress.job_id).unwrap_or_default();
        let status = parse_status(&raw);
        if is_final(status) {
            let job = self.read_job().await?;
            self.apply_job(job);
            // The job object and the status endpoint can disagree for a moment;
            // the status endpoint said final, so that is what we report.
            self.progress.status = status.into();
            self.progress.raw_status = raw;
            if self.progress.failure_reason.is_none() {
                self.progress.failure_reason = failure_reason(reply.failure_reason());
            }
            return Ok(self.publish_if_final());
        }
        self.progress.status = status.into();
        self.progress.raw_status = raw;
        self.publish();
        Ok(false)
    }

    /// Reads the whole job, and writes it to the cache.
    async fn read_job(&self) -> Result<SutroJob> {
        let job = self
            .client
            .job(&self.progress.job_id, &self.call_ctx())
            .await?
            .body;
        let seen = job_to_proto(job.clone());
        self.cache
            .put(kind::JOB, &seen, is_final(seen.status()))
            .await;
        Ok(job)
    }

    fn apply_job(&mut self, job: SutroJob) {
        let p = &mut self.progress;
        let raw = job.status.unwrap_or_default();
        p.status = parse_status(&raw).into();
        p.raw_status = raw;
        p.total_rows = job.num_rows.or(p.total_rows);
        if let Some(n) = job.input_tokens {
            p.input_tokens = Some(p.input_tokens.unwrap_or(0).max(n));
        }
        if let Some(n) = job.output_tokens {
            p.output_tokens = Some(p.output_tokens.unwrap_or(0).max(n));
        }
        p.failure_reason = failure_reason(job.failure_reason).or(p.failure_reason.take());
    }

    fn status(&self) -> JobStatus {
        JobStatus::try_from(self.progress.status).unwrap_or_default()
    }

    fn publish_if_final(&mut self) -> bool {
        let done = is_final(self.status());
        if done {
            if self.status() == JobStatus::Succeeded {
                // Only a persisted success says every row is done.
                if let Some(total) = self.progress.total_rows {
                    self.progress.rows_processed = self.progress.rows_processed.max(total);
                }
            }
            self.send(true);
        }
        done
    }

    fn publish(&mut self) {
        self.send(false);
    }

    fn send(&mut self, done: bool) {
        self.unpublished = false;
        self.publisher.publish(self.progress.clone(), done);
    }

    async fn pause(&self) -> Result<()> {
        self.check_age()?;
        sleep(self.timing.poll).await;
        Ok(())
    }

    fn check_age(&self) -> Result<()> {
        if self.started.elapsed() > self.timing.max {
            return Err(Error::DeadlineExceeded { upstream: None });
        }
        Ok(())
    }

    fn call_ctx(&self) -> CallContext {
        self.ctx
            .with_deadline(Deadline::after(self.timing.call_timeout))
    }
}
