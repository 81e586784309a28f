//! How a `WatchState` crosses Redis: a version byte, a kind byte a Lua script can read
//! (so a terminal snapshot is never overwritten), then a small prost message.

use prost::Message;
use tonic::Code;

use super::WatchState;
use crate::error::{Error, FieldViolation, UpstreamFailure, UpstreamId};

/// The first byte of every snapshot; a reader skips versions it does not know.
const VERSION: u8 = 1;

/// The second byte: what the snapshot is.
pub(crate) mod kind {
    pub const CONNECTING: u8 = 0;
    pub const LIVE: u8 = 1;
    /// Terminal kinds are at least `DONE` (the Lua scripts compare with it).
    pub const DONE: u8 = 2;
    pub const FAILED: u8 = 3;
}

#[derive(Clone, PartialEq, prost::Message)]
struct Body {
    #[prost(message, optional, tag = "1")]
    observed_at: Option<prost_types::Timestamp>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
    #[prost(message, optional, tag = "3")]
    error: Option<WireError>,
}

/// The error of a failed watch: enough to give every replica's subscribers the same
/// gRPC code and message.
#[derive(Clone, PartialEq, prost::Message)]
struct WireError {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    /// Set for an upstream HTTP error, which is rebuilt as one.
    #[prost(uint32, tag = "3")]
    http_status: u32,
    #[prost(string, tag = "4")]
    provider: String,
    #[prost(string, tag = "5")]
    host: String,
    #[prost(string, optional, tag = "6")]
    request_id: Option<String>,
    #[prost(string, repeated, tag = "7")]
    fields: Vec<String>,
    #[prost(string, repeated, tag = "8")]
    descriptions: Vec<String>,
}

/// Encodes `state` for the snapshot key.
pub(crate) fn encode<T: Message>(state: &WatchState<T>) -> Vec<u8> {
    let (kind, body) = match state {
        WatchState::Connecting => (kind::CONNECTING, Body::default()),
        WatchState::Live {
            value,
            done,
            observed_at,
        } => (
            if *done { kind::DONE } else { kind::LIVE },
            Body {
                observed_at: Some(*observed_at),
                value: value.encode_to_vec(),
                error: None,
            },
        ),
        WatchState::Failed(error) => (
            kind::FAILED,
            Body {
                error: Some(wire_error(error)),
                ..Body::default()
            },
        ),
    };
    let mut bytes = vec![VERSION, kind];
    body.encode(&mut bytes)
        .unwrap_or_else(|_| unreachable!("a Vec grows as needed"));
    bytes
}

/// Decodes a snapshot; `None` for bytes this version cannot read.
pub(crate) fn decode<T: Message + Default>(bytes: &[u8]) -> Option<WatchState<T>> {
    let [VERSION, kind, body @ ..] = bytes else {
        return None;
    };
    let body = Body::decode(body).ok()?;
    Some(match *kind {
        kind::CONNECTING => WatchState::Connecting,
        kind::LIVE | kind::DONE => WatchState::Live {
            value: T::decode(body.value.as_slice()).ok()?,
            done: *kind == kind::DONE,
            observed_at: body.observed_at.unwrap_or_default(),
        },
        kind::FAILED => WatchState::Failed(error_of(body.error.unwrap_or_default())),
        _ => return None,
    })
}

/// True when `state` ends every watch of the resource.
pub(crate) fn is_terminal<T>(state: &WatchState<T>) -> bool {
    matches!(
        state,
        WatchState::Failed(_) | WatchState::Live { done: true, .. }
    )
}

fn wire_error(error: &Error) -> WireError {
    let mut wire = WireError {
        code: error.code() as i32,
        message: match error {
            Error::FailedPrecondition(m) | Error::Unauthenticated(m) | Error::Unavailable(m) => {
                m.clone()
            }
            Error::Internal(m) => m.clone(),
            other => other.to_string(),
        },
        ..WireError::default()
    };
    match error {
        Error::Upstream(failure) => {
            wire.http_status = u32::from(failure.status);
            wire.provider = failure.upstream.provider.to_string();
            wire.host = failure.upstream.host.clone();
            wire.message = failure.message.clone();
            wire.request_id = failure.request_id.clone();
        }
        Error::InvalidArgument(violations) => {
            wire.fields = violations.iter().map(|v| v.field.clone()).collect();
            wire.descriptions = violations.iter().map(|v| v.description.clone()).collect();
        }
        _ => {}
    }
    wire
}

fn error_of(wire: WireError) -> Error {
    let code = Code::from_i32(wire.code);
    if let Ok(status @ 100..=599) = u16::try_from(wire.http_status) {
        let provider = match wire.provider.as_str() {
            "sutro" => "sutro",
            "xai" => "xai",
            _ => "upstream",
        };
        return Error::Upstream(UpstreamFailure {
            upstream: UpstreamId {
                provider,
                host: wire.host,
            },
            status,
            message: wire.message,
            retry_after: None,
            request_id: wire.request_id,
            meaning: Some(code),
        });
    }
    match code {
        Code::InvalidArgument => Error::InvalidArgument(
            wire.fields
                .into_iter()
                .zip(wire.descriptions)
                .map(|(f, d)| FieldViolation::new(f, d))
                .collect(),
        ),
        Code::FailedPrecondition => Error::FailedPrecondition(wire.message),
        Code::Unauthenticated => Error::Unauthenticated(wire.message),
        Code::DeadlineExceeded => Error::DeadlineExceeded { upstream: None },
        Code::Internal => Error::Internal(wire.message),
        _ => Error::Unavailable(wire.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round<T: Message + Default + Clone>(state: &WatchState<T>) -> WatchState<T> {
        decode(&encode(state)).expect("decodes")
    }

    #[test]
    fn states_round_trip() {
        let at = prost_types::Timestamp {
            seconds: 7,
            nanos: 9,
        };
        let live = WatchState::Live {
            value: 42_u64,
            done: true,
            observed_at: at,
        };
        assert!(
            matches!(round(&live), WatchState::Live { value: 42, done: true, observed_at } if observed_at == at)
        );
        assert!(matches!(
            round::<u64>(&WatchState::Connecting),
            WatchState::Connecting
        ));
        let failed = WatchState::<u64>::Failed(Error::Upstream(UpstreamFailure {
            upstream: UpstreamId {
                provider: "sutro",
                host: "h".into(),
            },
            status: 404,
            message: "no such job".into(),
            retry_after: None,
            request_id: Some("r1".into()),
            meaning: None,
        }));
        let WatchState::Failed(back) = round(&failed) else {
            panic!("failed expected")
        };
        assert_eq!(back.code(), Code::NotFound);
        assert_eq!(
            back.to_string(),
            "sutro answered HTTP 404: no such job".to_string()
        );
        let bad = WatchState::<u64>::Failed(Error::InvalidArgument(vec![FieldViolation::new(
            "job_id", "empty",
        )]));
        let WatchState::Failed(back) = round(&bad) else {
            panic!("failed expected")
        };
        assert_eq!(back.to_string(), "invalid request: job_id: empty");
        assert_eq!(encode(&bad)[1], kind::FAILED);
        assert!(
            decode::<u64>(&[9, 1]).is_none(),
            "unknown versions are skipped"
        );
    }
}
