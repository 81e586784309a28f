//! `batchgate jobs create|get|list|results|cancel`: Sutro jobs through the gateway,
//! tables for people and `--json` for scripts.

use crate::proto::sutro::v1 as pb;

use super::args::{CreateJobArgs, JobsArgs, JobsCommand};
use super::error::CliError;
use super::input::{read_prompts, read_rows};
use super::output::{Out, fields, one_line, opt, table, time};

/// Runs one `jobs` subcommand.
pub async fn run(args: JobsArgs) -> Result<(), CliError> {
    let json = args.connection.json;
    // Inputs are read before connecting, so a bad file fails fast and offline.
    let create = match &args.command {
        JobsCommand::Create(create) => Some(create_request(create)?),
        _ => None,
    };
    let mut client = super::jobs_client(&args.connection).await?;
    let mut out = Out::stdout();
    match args.command {
        JobsCommand::Create(_) => {
            // Built above whenever the command is Create.
            let request = create.unwrap_or_default();
            let created = client.create_job(request).await?.into_inner();
            if json {
                out.json_document(&created, "batchgate.sutro.v1.CreateJobResponse")?;
            } else {
                // The id alone on stdout, so `id=$(batchgate jobs create ...)` works.
                out.line(&created.job_id)?;
                if created.replayed {
                    eprintln!("batchgate: replayed: this --request-id created that job before");
                }
            }
        }
        JobsCommand::Get { id } => {
            let job = client
                .get_job(pb::GetJobRequest { job_id: id })
                .await?
                .into_inner();
            if json {
                out.json_document(&job, "batchgate.sutro.v1.Job")?;
            } else {
                for line in job_fields(&job) {
                    out.line(&line)?;
                }
            }
        }
        JobsCommand::List(page) => {
            let list = client
                .list_jobs(pb::ListJobsRequest {
                    page_size: page.page_size,
                    page_token: page.page_token,
                })
                .await?
                .into_inner();
            if json {
                out.json_document(&list, "batchgate.sutro.v1.ListJobsResponse")?;
            } else {
                let rows: Vec<Vec<String>> = list.jobs.iter().map(job_row).collect();
                let headers = ["JOB ID", "STATUS", "MODEL", "ROWS", "CREATED", "NAME"];
                for line in table(&headers, &rows) {
                    out.line(&line)?;
                }
                if !list.next_page_token.is_empty() {
                    eprintln!("next page: --page-token {}", list.next_page_token);
                }
            }
        }
        JobsCommand::Results {
            id,
            include_inputs,
            out: to,
        } => {
            let mut stream = client
                .get_job_results(pb::GetJobResultsRequest {
                    job_id: id,
                    include_inputs,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let mut sink = Out::to(to.out.as_deref())?;
            let mut written = 0usize;
            while let Some(chunk) = stream.message().await? {
                for row in &chunk.rows {
                    if json {
                        sink.json_line(row, "batchgate.sutro.v1.ResultRow")?;
                    } else {
                        let mut line = format!("{}\t{}", row.index, one_line(row.output.as_ref()));
                        if include_inputs {
                            line = format!("{line}\t{}", one_line(row.input.as_ref()));
                        }
                        sink.line(&line)?;
                    }
                    written += 1;
                }
            }
            sink.flush()?;
            if let Some(path) = &to.out {
                eprintln!("batchgate: wrote {written} rows to {}", path.display());
            }
        }
        JobsCommand::Cancel { id } => {
            let cancelled = client
                .cancel_job(pb::CancelJobRequest { job_id: id.clone() })
                .await?
                .into_inner();
            if json {
                out.json_document(&cancelled, "batchgate.sutro.v1.CancelJobResponse")?;
            } else if cancelled.cancelled {
                out.line(&format!("{id} cancel requested: {}", cancelled.message))?;
            } else {
                out.line(&format!("{id} not cancelled: {}", cancelled.message))?;
            }
        }
    }
    out.flush()
}

/// The CreateJob request `args` describe, prompts or rows read from their file.
fn create_request(args: &CreateJobArgs) -> Result<pb::CreateJobRequest, CliError> {
    let inputs = match (&args.prompts, &args.rows) {
        (Some(path), _) => pb::create_job_request::Inputs::Prompts(pb::StringInputs {
            values: read_prompts(path)?,
        }),
        (None, Some(path)) => pb::create_job_request::Inputs::Rows(pb::RowInputs {
            rows: read_rows(path)?,
        }),
        (None, None) => {
            return Err(CliError::Input(
                "give the inputs: --prompts FILE or --rows FILE".into(),
            ));
        }
    };
    Ok(pb::CreateJobRequest {
        model: args.model.clone(),
        inputs: Some(inputs),
        system_prompt: args.system_prompt.clone(),
        job_priority: args.priority,
        cost_estimate: args.cost_estimate,
        name: args.name.clone(),
        description: args.description.clone(),
        request_id: args.request_id.clone().unwrap_or_default(),
        ..Default::default()
    })
}

fn status_word(job: &pb::Job) -> String {
    match job.status() {
        pb::JobStatus::Unspecified => job.raw_status.clone(),
        known => known
            .as_str_name()
            .trim_start_matches("JOB_STATUS_")
            .to_owned(),
    }
}

fn job_row(job: &pb::Job) -> Vec<String> {
    vec![
        job.job_id.clone(),
        status_word(job),
        job.model.clone(),
        opt(job.num_rows),
        time(job.datetime_created.as_ref()),
        job.name.clone().unwrap_or_default(),
    ]
}

fn job_fields(job: &pb::Job) -> Vec<String> {
    let failure = job
        .failure_reason
        .as_ref()
        .map(|r| r.message.clone())
        .unwrap_or_default();
    fields(&[
        ("job_id", job.job_id.clone()),
        ("status", status_word(job)),
        ("model", job.model.clone()),
        ("name", job.name.clone().unwrap_or_default()),
        ("description", job.description.clone().unwrap_or_default()),
        ("rows", opt(job.num_rows)),
        ("priority", job.job_priority.to_string()),
        ("created", time(job.datetime_created.as_ref())),
        ("started", time(job.datetime_started.as_ref())),
        ("completed", time(job.datetime_completed.as_ref())),
        ("input_tokens", opt(job.input_tokens)),
        ("output_tokens", opt(job.output_tokens)),
        ("cost_usd", opt(job.job_cost)),
        ("cost_estimate_usd", opt(job.cost_estimate)),
        ("failure", failure),
    ])
}
