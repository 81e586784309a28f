//! The `POST batch-inference` body written straight from the request as JSON bytes,
//! without a `serde_json::Value` tree (several times a large payload's size) in between.

use prost_types::{Struct, Value as PbValue, value::Kind};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use crate::convert::number_to_json;
use crate::proto::sutro::v1::{self as pb, create_job_request::Inputs};

/// The create body for a (validated) request: every key the SDK sends, unset ones as
/// null, the column names only when set. Byte for byte what serializing the old
/// `Value` body gave: keys in sorted order (serde_json's map without
/// `preserve_order`), so request-id fingerprints stay the same across versions.
pub fn create_body(request: &pb::CreateJobRequest) -> Vec<u8> {
    let body = Body::from(request);
    let mut out = Vec::with_capacity(estimate(request));
    // Writing into a Vec fails only for a non-string map key, which this shape has none of.
    if serde_json::to_writer(&mut out, &body).is_err() {
        out.clear();
    }
    out
}

/// Roughly the body's size, so the buffer is allocated once for the large part.
fn estimate(request: &pb::CreateJobRequest) -> usize {
    let inputs = match &request.inputs {
        // Quotes, comma, and a little for escapes.
        Some(Inputs::Prompts(p)) => p.values.iter().map(|v| v.len() + 4).sum(),
        _ => 0,
    };
    inputs + 512
}

/// The body's fields, declared in sorted key order; `None` columns are left out.
#[derive(serde::Serialize)]
struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    column_name: Option<&'a str>,
    cost_estimate: bool,
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_column_name: Option<&'a str>,
    inputs: InputsJson<'a>,
    job_priority: i32,
    json_schema: Option<StructJson<'a>>,
    model: &'a str,
    name: Option<&'a str>,
    random_seed_per_input: bool,
    sampling_params: Option<StructJson<'a>>,
    system_prompt: Option<&'a str>,
    truncate_rows: bool,
}

impl<'a> From<&'a pb::CreateJobRequest> for Body<'a> {
    fn from(request: &'a pb::CreateJobRequest) -> Self {
        let (column_name, id_column_name) = match &request.inputs {
            Some(Inputs::Url(u)) => (u.column_name.as_deref(), u.id_column_name.as_deref()),
            _ => (None, None),
        };
        Body {
            column_name,
            cost_estimate: request.cost_estimate,
            description: request.description.as_deref(),
            id_column_name,
            inputs: InputsJson(request.inputs.as_ref()),
            job_priority: request.job_priority,
            json_schema: request.json_schema.as_ref().map(StructJson),
            model: &request.model,
            name: request.name.as_deref(),
            random_seed_per_input: request.random_seed_per_input,
            sampling_params: request.sampling_params.as_ref().map(StructJson),
            system_prompt: request.system_prompt.as_deref(),
            truncate_rows: request.truncate_rows.unwrap_or(true),
        }
    }
}

/// `inputs`: the prompts, the rows as objects, the URL, or null.
struct InputsJson<'a>(Option<&'a Inputs>);

impl Serialize for InputsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(Inputs::Prompts(p)) => p.values.serialize(s),
            Some(Inputs::Rows(r)) => {
                let mut seq = s.serialize_seq(Some(r.rows.len()))?;
                for row in &r.rows {
                    seq.serialize_element(&StructJson(row))?;
                }
                seq.end()
            }
            Some(Inputs::Url(u)) => s.serialize_str(&u.url),
            None => s.serialize_none(),
        }
    }
}

/// A `Struct` as `convert::struct_to_json` renders it (its map is already sorted).
struct StructJson<'a>(&'a Struct);

impl Serialize for StructJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.fields.len()))?;
        for (key, value) in &self.0.fields {
            map.serialize_entry(key, &ValueJson(value))?;
        }
        map.end()
    }
}

/// A protobuf `Value` as `convert::value_to_json` renders it.
struct ValueJson<'a>(&'a PbValue);

impl Serialize for ValueJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0.kind {
            None | Some(Kind::NullValue(_)) => s.serialize_unit(),
            Some(Kind::BoolValue(b)) => s.serialize_bool(*b),
            // The same whole-number rule as the old path, so numbers print identically.
            Some(Kind::NumberValue(n)) => number_to_json(*n).serialize(s),
            Some(Kind::StringValue(text)) => s.serialize_str(text),
            Some(Kind::ListValue(list)) => {
                let mut seq = s.serialize_seq(Some(list.values.len()))?;
                for item in &list.values {
                    seq.serialize_element(&ValueJson(item))?;
                }
                seq.end()
            }
            Some(Kind::StructValue(inner)) => StructJson(inner).serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use prost_types::ListValue;

    use super::*;
    use crate::convert::json_to_value;

    fn structure(json: serde_json::Value) -> Struct {
        match json_to_value(json).kind {
            Some(Kind::StructValue(s)) => s,
            _ => Struct::default(),
        }
    }

    fn everything(inputs: Inputs) -> pb::CreateJobRequest {
        pb::CreateJobRequest {
            model: "gpt-oss-20b".into(),
            inputs: Some(inputs),
            system_prompt: Some("be \"brief\"\n\u{1F600}".into()),
            job_priority: 2,
            json_schema: Some(structure(serde_json::json!({
                "type": "object", "z": [1, 2.5, -0.0, 1e300, null, {"b": true, "a": "x"}],
            }))),
            sampling_params: Some(structure(
                serde_json::json!({"temperature": 0.7, "top_k": 40}),
            )),
            cost_estimate: true,
            random_seed_per_input: true,
            truncate_rows: Some(false),
            name: Some("nightly".into()),
            description: Some("every field set".into()),
            request_id: "r-1".into(),
        }
    }

    #[test]
    fn bytes_equal_the_old_value_body_with_every_field_set() {
        let mut nan_row = structure(serde_json::json!({"id": 7, "text": "ü"}));
        nan_row.fields.insert(
            "odd".into(),
            PbValue {
                kind: Some(Kind::ListValue(ListValue {
                    values: vec![
                        PbValue {
                            kind: Some(Kind::NumberValue(f64::NAN)),
                        },
                        PbValue { kind: None },
                        PbValue {
                            kind: Some(Kind::NumberValue(1e17)),
                        },
                    ],
                })),
            },
        );
        let cases = [
            Inputs::Prompts(pb::StringInputs {
                values: vec!["a".into(), "tab\there".into(), String::new()],
            }),
            Inputs::Rows(pb::RowInputs {
                rows: vec![nan_row, Struct::default()],
            }),
            Inputs::Url(pb::UrlInput {
                url: "https://b.example/in.csv".into(),
                column_name: Some("text".into()),
                id_column_name: Some("row_id".into()),
            }),
            Inputs::Url(pb::UrlInput {
                url: "https://b.example/in.csv".into(),
                column_name: None,
                id_column_name: None,
            }),
        ];
        for inputs in cases {
            let request = everything(inputs);
            let old = super::super::translate::create_body(&request).to_string();
            let new = String::from_utf8(create_body(&request)).unwrap();
            assert_eq!(new, old);
        }
        let bare = pb::CreateJobRequest::default();
        let old = super::super::translate::create_body(&bare).to_string();
        assert_eq!(String::from_utf8(create_body(&bare)).unwrap(), old);
    }
}
