//! Reading a `POST batch-inference` body the way Sutro's server would: every key the
//! SDK sends (nulls included), FastAPI's 422 for wrong types, 400 for rejected values.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::respond::{sutro_error, sutro_validation_error};
use super::sutro_jobs::Submission;

/// The submission in `body`, or the answer that refuses it.
pub fn parse_create(body: &[u8], url_rows: usize) -> Result<Submission, Response> {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else {
        return Err(sutro_validation_error(
            &["body"],
            "Input should be a valid dictionary",
        ));
    };
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => return Err(sutro_validation_error(&["body", "model"], "Field required")),
    };
    let job_priority = match body.get("job_priority") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) if n.as_i64().is_some_and(|p| p == 0 || p == 1) => {
            n.as_i64().unwrap_or(0)
        }
        Some(Value::Number(_)) => {
            return Err(sutro_error(
                StatusCode::BAD_REQUEST,
                "job_priority must be 0 or 1",
            ));
        }
        Some(_) => {
            return Err(sutro_validation_error(
                &["body", "job_priority"],
                "Input should be a valid integer",
            ));
        }
    };
    let (inputs, id_column) = parse_inputs(&body, url_rows)?;
    Ok(Submission {
        model,
        inputs,
        id_column,
        job_priority,
        system_prompt: optional_string(&body, "system_prompt")?,
        json_schema: optional_object(&body, "json_schema")?,
        sampling_params: optional_object(&body, "sampling_params")?,
        name: optional_string(&body, "name")?,
        description: optional_string(&body, "description")?,
        // `dryrun` is the old docs' name for the same flag.
        cost_estimate: flag(&body, "cost_estimate") || flag(&body, "dryrun"),
    })
}

type Rows = (Vec<Value>, Option<(String, Vec<Value>)>);

fn parse_inputs(body: &Map<String, Value>, url_rows: usize) -> Result<Rows, Response> {
    let id_column_name = optional_string(body, "id_column_name")?;
    match body.get("inputs") {
        Some(Value::Array(rows)) if rows.is_empty() => Err(sutro_error(
            StatusCode::BAD_REQUEST,
            "inputs must not be empty",
        )),
        Some(Value::Array(rows))
            if rows.iter().all(Value::is_string) || rows.iter().all(Value::is_object) =>
        {
            if id_column_name.is_some() {
                return Err(sutro_error(
                    StatusCode::BAD_REQUEST,
                    "id_column_name is only supported for URL inputs",
                ));
            }
            Ok((rows.clone(), None))
        }
        Some(Value::Array(_)) => Err(sutro_validation_error(
            &["body", "inputs"],
            "Input should be a list of strings or a list of objects",
        )),
        Some(Value::String(source)) if source.starts_with("dataset-") => Err(sutro_error(
            StatusCode::BAD_REQUEST,
            "Sutro datasets have been removed. Pass a download URL or a local file path instead.",
        )),
        Some(Value::String(url)) if url.starts_with("https://") || url.starts_with("http://") => {
            // The simulator does not download the file: it makes `url_rows` rows from it,
            // with ids 1..=n in the id column when one is named.
            let column = optional_string(body, "column_name")?.unwrap_or_else(|| "prompt".into());
            let rows = (0..url_rows)
                .map(|i| json!(format!("{column} of row {i} of {url}")))
                .collect();
            let ids = id_column_name.map(|name| (name, (1..=url_rows).map(|i| json!(i)).collect()));
            Ok((rows, ids))
        }
        Some(Value::String(_)) => Err(sutro_error(
            StatusCode::BAD_REQUEST,
            "inputs must be a list, or an http(s) URL of a CSV or Parquet file",
        )),
        _ => Err(sutro_validation_error(
            &["body", "inputs"],
            "Field required",
        )),
    }
}

fn optional_string(body: &Map<String, Value>, key: &str) -> Result<Option<String>, Response> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(sutro_validation_error(
            &["body", key],
            "Input should be a valid string",
        )),
    }
}

fn optional_object(body: &Map<String, Value>, key: &str) -> Result<Option<Value>, Response> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v.clone())),
        Some(_) => Err(sutro_validation_error(
            &["body", key],
            "Input should be a valid dictionary",
        )),
    }
}

fn flag(body: &Map<String, Value>, key: &str) -> bool {
    body.get(key).and_then(Value::as_bool).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: Value) -> Result<Submission, u16> {
        parse_create(body.to_string().as_bytes(), 4).map_err(|r| r.status().as_u16())
    }

    #[test]
    fn the_sdk_body_with_its_nulls_is_accepted() {
        let job = parse(json!({
            "model": "gpt-oss-20b", "inputs": ["a", "b"], "job_priority": 0, "json_schema": null,
            "system_prompt": null, "cost_estimate": false, "sampling_params": null,
            "random_seed_per_input": false, "truncate_rows": true, "name": null, "description": null
        }))
        .unwrap();
        assert_eq!(
            (job.inputs.len(), job.job_priority, job.cost_estimate),
            (2, 0, false)
        );
    }

    #[test]
    fn url_inputs_make_rows_and_carry_the_id_column() {
        let job = parse(
            json!({"model": "m", "inputs": "https://b.example/x.csv", "id_column_name": "id"}),
        )
        .unwrap();
        assert_eq!(job.inputs.len(), 4);
        assert_eq!(
            job.id_column.unwrap().1,
            [json!(1), json!(2), json!(3), json!(4)]
        );
    }

    #[test]
    fn bad_bodies_are_refused_like_sutro() {
        assert_eq!(parse(json!({"inputs": ["a"]})).err(), Some(422));
        assert_eq!(parse(json!({"model": "m", "inputs": []})).err(), Some(400));
        assert_eq!(
            parse(json!({"model": "m", "inputs": ["a"], "job_priority": 2})).err(),
            Some(400)
        );
        assert_eq!(
            parse(json!({"model": "m", "inputs": ["a"], "id_column_name": "id"})).err(),
            Some(400)
        );
        assert_eq!(
            parse(json!({"model": "m", "inputs": "dataset-1"})).err(),
            Some(400)
        );
        assert_eq!(
            parse(json!({"model": "m", "inputs": ["a", {"b": 1}]})).err(),
            Some(422)
        );
    }
}
