//! `batchgate watch job|batch`: follows the gateway's WatchJob or WatchBatch stream to
//! its FINAL message and exits with a code that says how the job or batch ended.

use std::process::ExitCode;

use crate::proto::sutro::v1 as sutro;
use crate::proto::xai::v1 as xai;

use super::args::{WatchArgs, WatchTarget};
use super::error::{CliError, exit};
use super::output::Out;
use super::progress::{Renderer, Update};

/// Follows the job or batch `args` names.
pub async fn run(args: WatchArgs) -> Result<ExitCode, CliError> {
    let json = args.connection.json;
    match args.what {
        WatchTarget::Job { id } => {
            let mut client = super::jobs_client(&args.connection).await?;
            let stream = client
                .watch_job(sutro::WatchJobRequest { job_id: id.clone() })
                .await?
                .into_inner();
            follow(Watched::Job, &id, json, stream).await
        }
        WatchTarget::Batch { id } => {
            let mut client = super::batches_client(&args.connection).await?;
            let stream = client
                .watch_batch(xai::WatchBatchRequest {
                    batch_id: id.clone(),
                })
                .await?
                .into_inner();
            follow(Watched::Batch, &id, json, stream).await
        }
    }
}

/// What is watched: decides the words, the JSON type and the outcome.
#[derive(Clone, Copy)]
enum Watched {
    Job,
    Batch,
}

impl Watched {
    /// The noun and the command group: `job`/`jobs`, `batch`/`batches`.
    fn words(self) -> (&'static str, &'static str) {
        match self {
            Self::Job => ("job", "jobs"),
            Self::Batch => ("batch", "batches"),
        }
    }
}

/// A watch stream's messages, whichever service sent them.
trait WatchMessage: prost::Message + Default + Send + 'static {
    const PROTO_NAME: &'static str;
    fn update(&self) -> Update;
    /// The exit code and a closing sentence, on the FINAL message; `None` before it.
    fn outcome(&self) -> Option<(u8, String)>;
}

/// Resolves at the first Ctrl-C. The handler is in place when this returns, before the
/// first line is printed: `tokio::signal::ctrl_c()` only installs it when first polled,
/// and a SIGINT before that would end the process unhandled.
#[cfg(unix)]
fn interrupted() -> Result<impl std::future::Future<Output = ()>, CliError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| CliError::io("listening for Ctrl-C", e))?;
    Ok(async move {
        interrupt.recv().await;
    })
}

#[cfg(not(unix))]
fn interrupted() -> Result<impl std::future::Future<Output = ()>, CliError> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

async fn follow<M: WatchMessage>(
    watched: Watched,
    id: &str,
    json: bool,
    mut stream: tonic::Streaming<M>,
) -> Result<ExitCode, CliError> {
    let mut out = Out::stdout();
    let unit = match watched {
        Watched::Job => "rows",
        Watched::Batch => "requests",
    };
    let mut renderer = (!json).then(|| Renderer::new(id, unit, super::stdout_is_terminal()));
    // Listening from the start: a Ctrl-C at any point ends the watch, never the job.
    let interrupted = interrupted()?;
    tokio::pin!(interrupted);
    loop {
        let message = tokio::select! {
            _ = &mut interrupted => {
                if let Some(renderer) = &mut renderer {
                    renderer.stop();
                }
                out.flush()?;
                let (noun, command) = watched.words();
                eprintln!(
                    "batchgate: interrupted; {noun} {id} keeps running upstream \
                     (`batchgate watch {noun} {id}` follows it again, \
                     `batchgate {command} cancel {id}` stops it)"
                );
                return Ok(ExitCode::from(exit::INTERRUPTED));
            }
            message = stream.message() => message,
        };
        let message = match message {
            Ok(Some(message)) => message,
            Ok(None) => {
                if let Some(renderer) = &mut renderer {
                    renderer.stop();
                }
                return Err(CliError::WatchCut);
            }
            Err(status) => {
                if let Some(renderer) = &mut renderer {
                    renderer.stop();
                }
                return Err(status.into());
            }
        };
        match &mut renderer {
            None => {
                out.json_line(&message, M::PROTO_NAME)?;
                out.flush()?;
            }
            Some(renderer) => renderer.show(&message.update(), &mut out)?,
        }
        if let Some((code, sentence)) = message.outcome() {
            if let Some(renderer) = &mut renderer {
                renderer.stop();
                out.line(&format!("{id} {sentence}"))?;
            }
            out.flush()?;
            return Ok(ExitCode::from(code));
        }
    }
}

/// A status enum's proto name without its prefix: `JOB_STATUS_RUNNING` reads `RUNNING`.
fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_owned()
}

impl WatchMessage for sutro::WatchJobResponse {
    const PROTO_NAME: &'static str = "batchgate.sutro.v1.WatchJobResponse";

    fn update(&self) -> Update {
        let progress = self.progress.clone().unwrap_or_default();
        let status = match progress.status() {
            // A status Sutro does not document: its own word says more than UNSPECIFIED.
            sutro::JobStatus::Unspecified if !progress.raw_status.is_empty() => {
                progress.raw_status.to_uppercase()
            }
            known => short(known.as_str_name(), "JOB_STATUS_"),
        };
        Update {
            status,
            done: progress.rows_processed,
            total: progress.total_rows,
            input_tokens: progress.input_tokens,
            output_tokens: progress.output_tokens,
            tokens_per_second: progress.tokens_per_second,
            note: String::new(),
            running: progress.status() == sutro::JobStatus::Running,
        }
    }

    fn outcome(&self) -> Option<(u8, String)> {
        if self.kind() != sutro::WatchEventKind::Final {
            return None;
        }
        let progress = self.progress.clone().unwrap_or_default();
        let reason = progress
            .failure_reason
            .as_ref()
            .map(|r| r.message.clone())
            .filter(|m| !m.is_empty());
        Some(match progress.status() {
            sutro::JobStatus::Succeeded => (exit::OK, "succeeded".into()),
            sutro::JobStatus::Cancelled => (exit::CANCELLED, "was cancelled".into()),
            sutro::JobStatus::Failed => (
                exit::FAILED,
                format!(
                    "failed: {}",
                    reason.unwrap_or_else(|| "no reason given".into())
                ),
            ),
            // The gateway sends FINAL only with a final status; anything else is news.
            other => (
                exit::ERROR,
                format!("ended with status {}", other.as_str_name()),
            ),
        })
    }
}

impl WatchMessage for xai::WatchBatchResponse {
    const PROTO_NAME: &'static str = "batchgate.xai.v1.WatchBatchResponse";

    fn update(&self) -> Update {
        let batch = self.batch.clone().unwrap_or_default();
        let state = batch.state.unwrap_or_default();
        // xAI batches carry counters, not a status: name one from them.
        let status = match self.done_reason() {
            xai::DoneReason::Unspecified if batch.cancel_time.is_some() => "CANCELLING".into(),
            xai::DoneReason::Unspecified if state.num_pending > 0 => "RUNNING".into(),
            xai::DoneReason::Unspecified => "WAITING".into(),
            reason => short(reason.as_str_name(), "DONE_REASON_"),
        };
        Update {
            running: status == "RUNNING",
            status,
            done: state.num_success + state.num_error + state.num_cancelled,
            total: Some(state.num_requests),
            input_tokens: None,
            output_tokens: None,
            tokens_per_second: None,
            note: format!(
                "success {} error {} cancelled {}",
                state.num_success, state.num_error, state.num_cancelled
            ),
        }
    }

    fn outcome(&self) -> Option<(u8, String)> {
        if self.kind() != xai::WatchEventKind::Final {
            return None;
        }
        let state = self
            .batch
            .as_ref()
            .and_then(|b| b.state)
            .unwrap_or_default();
        Some(match self.done_reason() {
            xai::DoneReason::Completed if state.num_error > 0 => (
                exit::FAILED,
                format!(
                    "completed with {} of {} requests failed",
                    state.num_error, state.num_requests
                ),
            ),
            xai::DoneReason::Completed => (exit::OK, "completed".into()),
            xai::DoneReason::Cancelled => (exit::CANCELLED, "was cancelled".into()),
            xai::DoneReason::Expired => (exit::EXPIRED, "expired".into()),
            xai::DoneReason::Unspecified => (exit::ERROR, "ended with no done reason".into()),
        })
    }
}
