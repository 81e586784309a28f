//! Output of the client commands: proto messages as JSON (proto field names, through
//! the descriptor set the gateway already embeds), aligned tables, and stdout or a file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

use super::error::CliError;

/// Every batchgate message type, from the descriptor set built with the code. The
/// generated prost types derive no serde; reflection over the same descriptors gives
/// proto3 JSON for all of them without hand-mapping fields.
static POOL: LazyLock<Result<DescriptorPool, String>> = LazyLock::new(|| {
    DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string())
});

fn pool() -> Result<&'static DescriptorPool, CliError> {
    POOL.as_ref()
        .map_err(|e| CliError::Io(format!("the embedded proto descriptors: {e}")))
}

/// `message`, of the proto type `full_name`, as proto3 JSON. Departures from the
/// canonical mapping, for scripts: proto field names, every field present (defaults
/// included), 64-bit integers as numbers (counts and tokens never reach 2^53).
pub fn to_json<M: prost::Message>(
    message: &M,
    full_name: &str,
) -> Result<serde_json::Value, CliError> {
    let dynamic = dynamic(message, full_name)?;
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &json_options())
        .map_err(|e| CliError::Io(format!("writing a {full_name} as JSON: {e}")))
}

/// As [`to_json`], written out in the proto's field order (a `serde_json::Value` would
/// sort the keys): compact, or indented when `pretty`.
pub fn json_text<M: prost::Message>(
    message: &M,
    full_name: &str,
    pretty: bool,
) -> Result<String, CliError> {
    let dynamic = dynamic(message, full_name)?;
    let mut bytes = Vec::new();
    let written = if pretty {
        let mut serializer = serde_json::Serializer::pretty(&mut bytes);
        dynamic.serialize_with_options(&mut serializer, &json_options())
    } else {
        let mut serializer = serde_json::Serializer::new(&mut bytes);
        dynamic.serialize_with_options(&mut serializer, &json_options())
    };
    written.map_err(|e| CliError::Io(format!("writing a {full_name} as JSON: {e}")))?;
    String::from_utf8(bytes).map_err(|e| CliError::Io(format!("writing a {full_name}: {e}")))
}

fn json_options() -> SerializeOptions {
    SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false)
        .stringify_64_bit_integers(false)
}

/// `message` re-read through its descriptor, for serde.
fn dynamic<M: prost::Message>(message: &M, full_name: &str) -> Result<DynamicMessage, CliError> {
    let descriptor = pool()?
        .get_message_by_name(full_name)
        .ok_or_else(|| CliError::Io(format!("no proto message named {full_name}")))?;
    DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .map_err(|e| CliError::Io(format!("re-reading a {full_name}: {e}")))
}

/// Reads one proto JSON document (proto or JSON field names) as the prost type `T`,
/// whose proto type is `full_name`. Unknown fields are refused, so a typo is an error.
pub fn from_json<T: prost::Message + Default>(
    value: serde_json::Value,
    full_name: &str,
) -> Result<T, String> {
    let descriptor = pool()
        .map_err(|e| e.to_string())?
        .get_message_by_name(full_name)
        .ok_or_else(|| format!("no proto message named {full_name}"))?;
    let dynamic = DynamicMessage::deserialize(descriptor, value).map_err(|e| e.to_string())?;
    dynamic.transcode_to::<T>().map_err(|e| e.to_string())
}

/// Where a command's output goes: stdout, or a file (`--out`). Writes are buffered;
/// a closed stdout (`| head`) is an error to stop on, not a panic as with `println!`.
pub struct Out {
    writer: Box<dyn Write>,
    name: String,
}

impl Out {
    /// Standard output.
    pub fn stdout() -> Self {
        Self {
            writer: Box::new(BufWriter::new(std::io::stdout())),
            name: "stdout".into(),
        }
    }

    /// A new (truncated) file at `path`, or stdout when there is none.
    pub fn to(path: Option<&Path>) -> Result<Self, CliError> {
        let Some(path) = path else {
            return Ok(Self::stdout());
        };
        let file = File::create(path).map_err(|e| CliError::io(&path.display().to_string(), e))?;
        Ok(Self {
            writer: Box::new(BufWriter::new(file)),
            name: path.display().to_string(),
        })
    }

    /// Writes `text` and a newline.
    pub fn line(&mut self, text: &str) -> Result<(), CliError> {
        writeln!(self.writer, "{text}").map_err(|e| CliError::io(&self.name, e))
    }

    /// Writes `message` (of the proto type `full_name`) as one compact JSON line.
    pub fn json_line<M: prost::Message>(
        &mut self,
        message: &M,
        full_name: &str,
    ) -> Result<(), CliError> {
        self.line(&json_text(message, full_name, false)?)
    }

    /// Writes `message` (of the proto type `full_name`) as an indented JSON document.
    pub fn json_document<M: prost::Message>(
        &mut self,
        message: &M,
        full_name: &str,
    ) -> Result<(), CliError> {
        self.line(&json_text(message, full_name, true)?)
    }

    /// Pushes what is buffered out, so a stream's lines are seen as they come.
    pub fn flush(&mut self) -> Result<(), CliError> {
        self.writer.flush().map_err(|e| CliError::io(&self.name, e))
    }
}

/// A table with a header row, columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let render = |cells: &mut dyn Iterator<Item = &str>| {
        let mut line = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = widths.get(i).copied().unwrap_or(0);
            line.extend(std::iter::repeat_n(
                ' ',
                pad.saturating_sub(cell.chars().count()),
            ));
        }
        line.trim_end().to_owned()
    };
    let mut lines = vec![render(&mut headers.iter().copied())];
    lines.extend(
        rows.iter()
            .map(|row| render(&mut row.iter().map(String::as_str))),
    );
    lines
}

/// `name: value` lines, names aligned; empty values are left out.
pub fn fields(pairs: &[(&str, String)]) -> Vec<String> {
    let width = pairs.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    pairs
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(name, value)| format!("{:<w$}  {value}", format!("{name}:"), w = width + 1))
        .collect()
}

/// A timestamp as RFC 3339 in UTC to the second; empty when unset.
pub fn time(timestamp: Option<&prost_types::Timestamp>) -> String {
    timestamp
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// An optional number as text; empty when unset.
pub fn opt<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

/// A protobuf `Value` on one line: a string as it is (newlines escaped), anything else
/// as compact JSON.
pub fn one_line(value: Option<&prost_types::Value>) -> String {
    use prost_types::value::Kind;
    match value.and_then(|v| v.kind.as_ref()) {
        None | Some(Kind::NullValue(_)) => String::new(),
        Some(Kind::StringValue(s)) => s.replace('\n', "\\n"),
        Some(_) => value
            .and_then(|v| to_json(v, "google.protobuf.Value").ok())
            .map(|v| v.to_string())
            .unwrap_or_default(),
    }
}
