//! Sutro's column-oriented results (`{"outputs": [...], "inputs": [...], ...}`) turned
//! into rows, unknown columns passed through, and the rows cut into messages under a
//! byte budget (never over 4 MiB).

use prost::Message;
use serde_json::{Map, Value};

use crate::convert::json_to_value;
use crate::proto::sutro::v1::{GetJobResultsResponse, ResultRow};
use crate::services::chunking::{chunk_by, repeated_field_size};

/// A job's results, column by column, handed out row by row.
#[derive(Debug, Default)]
pub struct ResultColumns {
    outputs: Vec<Value>,
    inputs: Option<Vec<Value>>,
    logprobs: Option<Vec<Value>>,
    confidence: Option<Vec<Value>>,
    id_column: Option<(String, Vec<Value>)>,
    /// Per-row columns the gateway does not know, passed through by name.
    other_columns: Vec<(String, Vec<Value>)>,
    /// Entries of `results` that are not per-row lists.
    other_values: Map<String, Value>,
}

impl ResultColumns {
    /// Reads the `results` value: the column map, or the legacy bare list of outputs.
    /// `id_column` names the job's id column where it is known: Sutro's results do
    /// not say which column it is, and guessing has mistaken new columns for it.
    pub fn from_json(results: Value, id_column: Option<&str>) -> Result<Self, String> {
        match results {
            Value::Array(outputs) => Ok(Self {
                outputs,
                ..Self::default()
            }),
            Value::Object(map) => Self::from_columns(map, id_column),
            other => Err(format!(
                "`results` is neither a column map nor a list: {}",
                kind(&other)
            )),
        }
    }

    fn from_columns(mut map: Map<String, Value>, id_column: Option<&str>) -> Result<Self, String> {
        let mut column = |name: &str| -> Result<Option<Vec<Value>>, String> {
            match map.remove(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Array(values)) => Ok(Some(values)),
                Some(other) => Err(format!("column `{name}` is not a list: {}", kind(&other))),
            }
        };
        let outputs = column("outputs")?.unwrap_or_default();
        let inputs = column("inputs")?;
        let logprobs = column("cumulative_logprobs")?;
        let confidence = column("confidence_score")?;
        let id_column = match id_column {
            Some(name) => column(name)?.map(|values| (name.to_owned(), values)),
            None => None,
        };
        let mut other_columns = Vec::new();
        let mut other_values = Map::new();
        for (name, value) in map {
            match value {
                Value::Array(values) => other_columns.push((name, values)),
                value => {
                    other_values.insert(name, value);
                }
            }
        }
        Ok(Self {
            outputs,
            inputs,
            logprobs,
            confidence,
            id_column,
            other_columns,
            other_values,
        })
    }

    /// Number of rows.
    fn row_count(&self) -> usize {
        self.outputs.len()
    }

    /// The id column's name, if the job has one.
    pub fn id_column_name(&self) -> &str {
        self.id_column
            .as_ref()
            .map_or("", |(name, _)| name.as_str())
    }

    /// Row `index`, moving its values out of the columns.
    fn take_row(&mut self, index: usize) -> ResultRow {
        let take = |column: &mut Option<Vec<Value>>| {
            column
                .as_mut()
                .and_then(|values| values.get_mut(index))
                .map(std::mem::take)
        };
        ResultRow {
            index: index as i64,
            output: self
                .outputs
                .get_mut(index)
                .map(std::mem::take)
                .map(json_to_value),
            input: take(&mut self.inputs).map(json_to_value),
            cumulative_logprob: take(&mut self.logprobs).and_then(|v| v.as_f64()),
            confidence_score: take(&mut self.confidence).and_then(|v| v.as_f64()),
            id_column_value: self
                .id_column
                .as_mut()
                .and_then(|(_, values)| values.get_mut(index))
                .map(std::mem::take)
                .map(json_to_value),
            other_columns: self
                .other_columns
                .iter_mut()
                .filter_map(|(name, values)| {
                    let value = std::mem::take(values.get_mut(index)?);
                    Some((name.clone(), json_to_value(value)))
                })
                .collect(),
        }
    }

    /// Cuts the rows into messages of at most `max_bytes` encoded bytes (a single
    /// row larger than that travels alone) and at most `max_rows` rows (0: no limit).
    pub fn into_chunks(mut self, max_bytes: usize, max_rows: usize) -> Vec<GetJobResultsResponse> {
        let total_rows = self.row_count() as i64;
        let id_column_name = self.id_column_name().to_owned();
        let rows: Vec<ResultRow> = (0..self.row_count()).map(|i| self.take_row(i)).collect();
        let other_values = std::mem::take(&mut self.other_values)
            .into_iter()
            .map(|(name, value)| (name, json_to_value(value)))
            .collect();
        let envelope = GetJobResultsResponse {
            rows: Vec::new(),
            total_rows,
            id_column_name,
            other_values,
        };
        let budget = max_bytes.saturating_sub(envelope.encoded_len());
        let mut chunks: Vec<_> = chunk_by(rows, repeated_field_size, budget, max_rows)
            .into_iter()
            .map(|rows| GetJobResultsResponse {
                rows,
                ..envelope.clone()
            })
            .collect();
        if chunks.is_empty() {
            chunks.push(envelope);
        }
        chunks
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_become_rows_with_the_id_column() {
        let columns = ResultColumns::from_json(
            json!({
                "outputs": ["a", "b"], "inputs": ["x", "y"], "cumulative_logprobs": [-0.5, -1.0],
                "experience_id": [101, 102]
            }),
            Some("experience_id"),
        )
        .unwrap();
        assert_eq!(columns.id_column_name(), "experience_id");
        let chunks = columns.into_chunks(1 << 20, 0);
        assert_eq!(chunks.len(), 1);
        let row = &chunks[0].rows[1];
        assert_eq!(row.index, 1);
        assert_eq!(row.cumulative_logprob, Some(-1.0));
        assert_eq!(row.id_column_value, Some(json_to_value(json!(102))));
        assert_eq!(row.input, Some(json_to_value(json!("y"))));
        assert!(row.other_columns.is_empty());
    }

    #[test]
    fn unknown_columns_pass_through_and_are_never_taken_for_the_id() {
        let results = json!({
            "outputs": ["a", "b"], "reasoning_tokens": [7, 9], "row_id": [1, 2],
            "model_version": "v3"
        });
        // Without a known id column nothing is guessed: both lists pass through.
        let chunks = ResultColumns::from_json(results.clone(), None)
            .unwrap()
            .into_chunks(1 << 20, 0);
        assert_eq!(chunks[0].id_column_name, "");
        let row = &chunks[0].rows[1];
        assert_eq!(row.id_column_value, None);
        assert_eq!(
            row.other_columns["reasoning_tokens"],
            json_to_value(json!(9))
        );
        assert_eq!(row.other_columns["row_id"], json_to_value(json!(2)));
        assert_eq!(
            chunks[0].other_values["model_version"],
            json_to_value(json!("v3"))
        );
        // With the id column known, only it is the id.
        let chunks = ResultColumns::from_json(results, Some("row_id"))
            .unwrap()
            .into_chunks(1 << 20, 0);
        assert_eq!(chunks[0].id_column_name, "row_id");
        let row = &chunks[0].rows[0];
        assert_eq!(row.id_column_value, Some(json_to_value(json!(1))));
        assert_eq!(row.other_columns.len(), 1);
        assert_eq!(
            row.other_columns["reasoning_tokens"],
            json_to_value(json!(7))
        );
    }

    #[test]
    fn chunks_respect_the_byte_budget_and_keep_order() {
        let outputs: Vec<Value> = (0..10_000)
            .map(|i| json!(format!("output number {i} {}", "x".repeat(50))))
            .collect();
        let chunks = ResultColumns::from_json(json!({ "outputs": outputs }), None)
            .unwrap()
            .into_chunks(64 * 1024, 0);
        assert!(chunks.len() > 5);
        let mut next = 0;
        for chunk in &chunks {
            assert!(chunk.encoded_len() <= 64 * 1024);
            for row in &chunk.rows {
                assert_eq!(row.index, next);
                next += 1;
            }
        }
        assert_eq!(next, 10_000);
    }

    #[test]
    fn legacy_bare_list_and_bad_shapes() {
        let chunks = ResultColumns::from_json(json!(["only", "outputs"]), None)
            .unwrap()
            .into_chunks(1024, 1);
        assert_eq!(chunks.len(), 2);
        assert!(ResultColumns::from_json(json!("nope"), None).is_err());
        assert!(ResultColumns::from_json(json!({"outputs": 3}), None).is_err());
        let empty = ResultColumns::from_json(json!({"outputs": []}), None)
            .unwrap()
            .into_chunks(1024, 0);
        assert_eq!((empty.len(), empty[0].total_rows), (1, 0));
    }
}
