//! `batchgate batches create|get|list|add|results|cancel`: xAI batches through the
//! gateway, tables for people and `--json` for scripts.

use crate::proto::xai::v1 as pb;

use super::args::{BatchesArgs, BatchesCommand};
use super::error::CliError;
use super::input::read_requests;
use super::output::{Out, fields, table, time, to_json};

/// Runs one `batches` subcommand.
pub async fn run(args: BatchesArgs) -> Result<(), CliError> {
    let json = args.connection.json;
    // Inputs are read before connecting, so a bad file fails fast and offline.
    let requests = match &args.command {
        BatchesCommand::Add { requests, .. } => read_requests(requests)?,
        _ => Vec::new(),
    };
    let mut client = super::batches_client(&args.connection).await?;
    let mut out = Out::stdout();
    match args.command {
        BatchesCommand::Create(create) => {
            let batch = client
                .create_batch(pb::CreateBatchRequest {
                    name: create.name,
                    input_file_id: create.input_file_id,
                    request_id: create.request_id.unwrap_or_default(),
                })
                .await?
                .into_inner();
            if json {
                out.json_document(&batch, "batchgate.xai.v1.Batch")?;
            } else {
                // The id alone on stdout, so `id=$(batchgate batches create ...)` works.
                out.line(&batch.batch_id)?;
            }
        }
        BatchesCommand::Get { id } => {
            let batch = client
                .get_batch(pb::GetBatchRequest { batch_id: id })
                .await?
                .into_inner();
            show_batch(&batch, json, &mut out)?;
        }
        BatchesCommand::List(page) => {
            let list = client
                .list_batches(pb::ListBatchesRequest {
                    page_size: page.page_size,
                    page_token: page.page_token,
                })
                .await?
                .into_inner();
            if json {
                out.json_document(&list, "batchgate.xai.v1.ListBatchesResponse")?;
            } else {
                let rows: Vec<Vec<String>> = list.batches.iter().map(batch_row).collect();
                let headers = [
                    "BATCH ID", "NAME", "REQUESTS", "PENDING", "SUCCESS", "ERROR", "CREATED",
                ];
                for line in table(&headers, &rows) {
                    out.line(&line)?;
                }
                if !list.next_page_token.is_empty() {
                    eprintln!("next page: --page-token {}", list.next_page_token);
                }
            }
        }
        BatchesCommand::Add { id, .. } => {
            let count = requests.len();
            let added = client
                .add_batch_requests(pb::AddBatchRequestsRequest {
                    batch_id: id.clone(),
                    batch_requests: requests,
                })
                .await?
                .into_inner();
            if json {
                out.json_document(&added, "batchgate.xai.v1.AddBatchRequestsResponse")?;
            } else {
                // One id a line, in the order of the file, for scripts that pair them up.
                for request_id in &added.batch_request_ids {
                    out.line(request_id)?;
                }
                eprintln!("batchgate: added {count} requests to {id}");
            }
        }
        BatchesCommand::Results { id, out: to } => {
            let mut stream = client
                .stream_batch_results(pb::StreamBatchResultsRequest {
                    batch_id: id,
                    upstream_page_size: 0,
                })
                .await?
                .into_inner();
            let mut sink = Out::to(to.out.as_deref())?;
            let mut written = 0usize;
            while let Some(chunk) = stream.message().await? {
                for result in &chunk.results {
                    if json {
                        sink.json_line(result, "batchgate.xai.v1.BatchResult")?;
                    } else {
                        sink.line(&result_line(result)?)?;
                    }
                    written += 1;
                }
            }
            sink.flush()?;
            if let Some(path) = &to.out {
                eprintln!("batchgate: wrote {written} results to {}", path.display());
            }
        }
        BatchesCommand::Cancel { id } => {
            let batch = client
                .cancel_batch(pb::CancelBatchRequest { batch_id: id })
                .await?
                .into_inner();
            show_batch(&batch, json, &mut out)?;
        }
    }
    out.flush()
}

fn show_batch(batch: &pb::Batch, json: bool, out: &mut Out) -> Result<(), CliError> {
    if json {
        return out.json_document(batch, "batchgate.xai.v1.Batch");
    }
    let state = batch.state.unwrap_or_default();
    let cost = batch
        .cost_breakdown
        .as_ref()
        .map(|c| format!("{:.6}", c.total_cost_usd_ticks as f64 / 1e10))
        .unwrap_or_default();
    let lines = fields(&[
        ("batch_id", batch.batch_id.clone()),
        ("name", batch.name.clone()),
        ("requests", state.num_requests.to_string()),
        ("pending", state.num_pending.to_string()),
        ("success", state.num_success.to_string()),
        ("error", state.num_error.to_string()),
        ("cancelled", state.num_cancelled.to_string()),
        ("created", time(batch.create_time.as_ref())),
        ("expires", time(batch.expire_time.as_ref())),
        ("cancel_time", time(batch.cancel_time.as_ref())),
        (
            "cancelled_by_xai",
            batch.cancel_by_xai_message.clone().unwrap_or_default(),
        ),
        (
            "input_file_id",
            batch.input_file_id.clone().unwrap_or_default(),
        ),
        ("cost_usd", cost),
    ]);
    for line in lines {
        out.line(&line)?;
    }
    Ok(())
}

fn batch_row(batch: &pb::Batch) -> Vec<String> {
    let state = batch.state.unwrap_or_default();
    vec![
        batch.batch_id.clone(),
        batch.name.clone(),
        state.num_requests.to_string(),
        state.num_pending.to_string(),
        state.num_success.to_string(),
        state.num_error.to_string(),
        time(batch.create_time.as_ref()),
    ]
}

/// `id<TAB>ok<TAB>answer` or `id<TAB>error<TAB>why`: a chat answer's first choice's
/// text when there is one, otherwise the response as compact JSON.
fn result_line(result: &pb::BatchResult) -> Result<String, CliError> {
    use pb::batch_response::Body;
    use pb::batch_result::Result as Outcome;
    let id = &result.batch_request_id;
    let body = match &result.result {
        Some(Outcome::Error(error)) => return Ok(format!("{id}\terror\t{}", one_line(error))),
        None => return Ok(format!("{id}\terror\t(no result)")),
        Some(Outcome::Response(response)) => match &response.body {
            Some(
                Body::ChatGetCompletion(s)
                | Body::Responses(s)
                | Body::ImageGeneration(s)
                | Body::ImageEdit(s)
                | Body::VideoGeneration(s)
                | Body::VideoExtension(s),
            ) => to_json(s, "google.protobuf.Struct")?,
            None => serde_json::Value::Null,
        },
    };
    let text = body
        .pointer("/choices/0/message/content")
        .and_then(serde_json::Value::as_str)
        .map_or_else(|| body.to_string(), str::to_owned);
    Ok(format!("{id}\tok\t{}", one_line(&text)))
}

/// Keeps a result on its line.
fn one_line(text: &str) -> String {
    text.replace('\n', "\\n")
}
