//! The input files of `jobs create` (`--prompts`, `--rows`) and `batches add`
//! (`--requests`): plain lines or JSONL, read whole and checked before any call.

use std::path::Path;

use crate::proto::xai::v1 as xai;

use super::error::CliError;
use super::output::from_json;

/// Reads `path` (`-`: stdin) whole.
fn read_input(path: &Path) -> Result<String, CliError> {
    if path == Path::new("-") {
        return std::io::read_to_string(std::io::stdin()).map_err(|e| CliError::io("stdin", e));
    }
    std::fs::read_to_string(path).map_err(|e| CliError::io(&path.display().to_string(), e))
}

/// Each non-blank line of `text` as JSON, numbered from 1 for errors.
fn json_lines(
    text: &str,
    path: &Path,
) -> impl Iterator<Item = Result<(usize, serde_json::Value), CliError>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(move |(i, line)| {
            serde_json::from_str(line)
                .map(|value| (i + 1, value))
                .map_err(|e| {
                    CliError::Input(format!("{}:{}: not JSON: {e}", path.display(), i + 1))
                })
        })
}

/// Prompts: one a line, or JSONL (a `.jsonl`/`.ndjson` file, or one whose first
/// non-blank line starts with `{`) of JSON strings or objects with a `prompt` string.
/// Plain lines are taken as they are, so a prompt may hold quotes and braces mid-line.
pub fn read_prompts(path: &Path) -> Result<Vec<String>, CliError> {
    let text = read_input(path)?;
    let jsonl = path
        .extension()
        .is_some_and(|ext| ext == "jsonl" || ext == "ndjson")
        || text
            .lines()
            .find(|l| !l.trim().is_empty())
            .is_some_and(|l| l.trim_start().starts_with('{'));
    let prompts: Vec<String> = if jsonl {
        json_lines(&text, path)
            .map(|line| {
                let (number, value) = line?;
                match value {
                    serde_json::Value::String(prompt) => Ok(prompt),
                    serde_json::Value::Object(mut object) => match object.remove("prompt") {
                        Some(serde_json::Value::String(prompt)) => Ok(prompt),
                        _ => Err(CliError::Input(format!(
                            "{}:{number}: an object needs a \"prompt\" string",
                            path.display()
                        ))),
                    },
                    _ => Err(CliError::Input(format!(
                        "{}:{number}: a JSONL prompt is a string or an object with \"prompt\"",
                        path.display()
                    ))),
                }
            })
            .collect::<Result<_, _>>()?
    } else {
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(str::to_owned)
            .collect()
    };
    if prompts.is_empty() {
        return Err(CliError::Input(format!("{}: no prompts", path.display())));
    }
    Ok(prompts)
}

/// Row objects, one JSON object a line.
pub fn read_rows(path: &Path) -> Result<Vec<prost_types::Struct>, CliError> {
    let text = read_input(path)?;
    let rows: Vec<prost_types::Struct> = json_lines(&text, path)
        .map(|line| {
            let (number, value) = line?;
            if !value.is_object() {
                return Err(CliError::Input(format!(
                    "{}:{number}: a row is a JSON object",
                    path.display()
                )));
            }
            from_json(value, "google.protobuf.Struct")
                .map_err(|e| CliError::Input(format!("{}:{number}: {e}", path.display())))
        })
        .collect::<Result<_, _>>()?;
    if rows.is_empty() {
        return Err(CliError::Input(format!("{}: no rows", path.display())));
    }
    Ok(rows)
}

/// The keys of BatchRequest's body, by proto and JSON name: a line with one of them is
/// a BatchRequest; one without is taken as a bare chat-completions body.
const BODY_FIELDS: [&str; 11] = [
    "chat_get_completion",
    "chatGetCompletion",
    "responses",
    "image_generation",
    "imageGeneration",
    "image_edit",
    "imageEdit",
    "video_generation",
    "videoGeneration",
    "video_extension",
    "videoExtension",
];

/// The requests of a JSONL file (see `batches add --help`).
pub fn read_requests(path: &Path) -> Result<Vec<xai::BatchRequest>, CliError> {
    let text = read_input(path)?;
    let requests: Vec<xai::BatchRequest> = json_lines(&text, path)
        .map(|line| {
            let (number, value) = line?;
            let serde_json::Value::Object(object) = value else {
                return Err(CliError::Input(format!(
                    "{}:{number}: a request is a JSON object",
                    path.display()
                )));
            };
            let value = if BODY_FIELDS.iter().any(|key| object.contains_key(*key)) {
                serde_json::Value::Object(object)
            } else {
                serde_json::json!({ "chat_get_completion": object })
            };
            from_json(value, "batchgate.xai.v1.BatchRequest")
                .map_err(|e| CliError::Input(format!("{}:{number}: {e}", path.display())))
        })
        .collect::<Result<_, _>>()?;
    if requests.is_empty() {
        return Err(CliError::Input(format!("{}: no requests", path.display())));
    }
    Ok(requests)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("the file is written");
        (dir, path)
    }

    #[test]
    fn plain_prompts_are_taken_as_they_are_blank_lines_skipped() {
        let (_dir, path) = file("p.txt", "\"quoted\" {x}\n\n  two  \n");
        let prompts = read_prompts(&path).expect("plain prompts");
        assert_eq!(prompts, ["\"quoted\" {x}", "  two  "]);
    }

    #[test]
    fn jsonl_prompts_are_strings_or_objects_with_a_prompt() {
        let (_dir, path) = file("p.jsonl", "\"a\\nb\"\n{\"prompt\": \"c\", \"id\": 1}\n");
        assert_eq!(read_prompts(&path).expect("JSONL prompts"), ["a\nb", "c"]);
        // A first line starting with `{` makes any file JSONL.
        let (_dir, path) = file("p.txt", "{\"prompt\": \"x\"}\n{\"text\": \"y\"}\n");
        let error = read_prompts(&path)
            .expect_err("no prompt field")
            .to_string();
        assert!(
            error.ends_with("p.txt:2: an object needs a \"prompt\" string"),
            "{error}"
        );
        let (_dir, path) = file("p.txt", "\n\n");
        assert!(read_prompts(&path).is_err());
    }

    #[test]
    fn requests_are_batch_requests_or_bare_chat_bodies() {
        let (_dir, path) = file(
            "r.jsonl",
            "{\"batch_request_id\": \"r1\", \"chatGetCompletion\": {\"model\": \"m\"}}\n\
             {\"model\": \"m\", \"messages\": []}\n",
        );
        let requests = read_requests(&path).expect("requests");
        assert_eq!(requests[0].batch_request_id.as_deref(), Some("r1"));
        assert_eq!(requests[1].batch_request_id, None);
        assert!(matches!(
            requests[1].body,
            Some(xai::batch_request::Body::ChatGetCompletion(_))
        ));
        let (_dir, path) = file(
            "r.jsonl",
            "{\"batch_request_id\": \"r1\", \"responses\": {}, \"typo\": 1}\n",
        );
        let error = read_requests(&path)
            .expect_err("an unknown field")
            .to_string();
        assert!(error.contains("r.jsonl:1"), "{error}");
    }
}
