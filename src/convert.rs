//! Conversions shared by every service: JSON ⇄ `google.protobuf.Struct`/`Value`, and
//! upstream time strings (RFC 3339, naive ISO, date-only) → `Timestamp`.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use prost_types::{ListValue, Struct, Timestamp, Value, value::Kind};
use serde_json::{Map, Number, Value as Json};

/// A JSON value as a protobuf `Value`.
pub fn json_to_value(json: Json) -> Value {
    let kind = match json {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Json::String(s) => Kind::StringValue(s),
        Json::Array(items) => Kind::ListValue(ListValue {
            values: items.into_iter().map(json_to_value).collect(),
        }),
        Json::Object(map) => Kind::StructValue(map_to_struct(map)),
    };
    Value { kind: Some(kind) }
}

/// A JSON object as a protobuf `Struct`.
pub fn map_to_struct(map: Map<String, Json>) -> Struct {
    Struct {
        fields: map
            .into_iter()
            .map(|(k, v)| (k, json_to_value(v)))
            .collect(),
    }
}

/// A JSON value as a `Struct` if it is an object; `None` for null and other kinds.
pub fn json_to_struct(json: Json) -> Option<Struct> {
    match json {
        Json::Object(map) => Some(map_to_struct(map)),
        _ => None,
    }
}

/// A protobuf `Value` as JSON. Whole numbers become JSON integers, so ids and
/// counts survive the round trip through protobuf's double.
pub fn value_to_json(value: Value) -> Json {
    match value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(b),
        Some(Kind::NumberValue(n)) => number_to_json(n),
        Some(Kind::StringValue(s)) => Json::String(s),
        Some(Kind::ListValue(list)) => {
            Json::Array(list.values.into_iter().map(value_to_json).collect())
        }
        Some(Kind::StructValue(s)) => struct_to_json(s),
    }
}

/// A protobuf `Struct` as a JSON object.
pub fn struct_to_json(s: Struct) -> Json {
    Json::Object(
        s.fields
            .into_iter()
            .map(|(k, v)| (k, value_to_json(v)))
            .collect(),
    )
}

/// A protobuf number as JSON: whole numbers within f64's exact range as integers, NaN and
/// infinities as null.
pub fn number_to_json(n: f64) -> Json {
    const MAX_EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if n.fract() == 0.0 && n.abs() <= MAX_EXACT {
        Json::Number(Number::from(n as i64))
    } else {
        Number::from_f64(n).map_or(Json::Null, Json::Number)
    }
}

/// Parses an upstream time: RFC 3339, ISO 8601 without zone (taken as UTC),
/// or a bare date (midnight UTC). `None` for anything else.
pub fn parse_time(text: &str) -> Option<Timestamp> {
    let text = text.trim();
    let utc: DateTime<Utc> = if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        t.with_timezone(&Utc)
    } else if let Ok(t) = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f") {
        t.and_utc()
    } else if let Ok(t) = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f") {
        t.and_utc()
    } else if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0)?.and_utc()
    } else {
        return None;
    };
    Some(to_timestamp(utc))
}

/// A chrono time as a protobuf `Timestamp`.
pub fn to_timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// The current time as a protobuf `Timestamp`.
pub fn now_timestamp() -> Timestamp {
    to_timestamp(Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trips_through_struct() {
        let original = json!({"a": 1, "b": [true, null, "x", 2.5], "c": {"d": -3}});
        let back = value_to_json(json_to_value(original.clone()));
        assert_eq!(back, original);
    }

    #[test]
    fn accepts_every_documented_time_shape() {
        let date = parse_time("2025-11-11").unwrap();
        assert_eq!(date.seconds, 1_762_819_200);
        let rfc = parse_time("2025-11-11T10:00:00Z").unwrap();
        assert_eq!(rfc.seconds, 1_762_819_200 + 36_000);
        let offset = parse_time("2025-11-11T12:00:00+02:00").unwrap();
        assert_eq!(offset.seconds, rfc.seconds);
        let naive = parse_time("2025-11-11T10:00:00.250000").unwrap();
        assert_eq!((naive.seconds, naive.nanos), (rfc.seconds, 250_000_000));
        assert!(parse_time("yesterday").is_none());
    }
}
