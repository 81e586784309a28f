//! How a `WatchState` crosses Redis: a version byte, a kind byte a Lua script can read
//! (so a terminal snapshot is never overwritten), then a small prost message.

use std::time::Duration;

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
    /// Which `Error` variant this is (`variant::*`); 0 from writers that predate it,
    /// read by code alone.
    #[prost(uint32, tag = "9")]
    variant: u32,
    /// `Retry-After` in ms, which becomes the status's RetryInfo.
    #[prost(uint64, optional, tag = "10")]
    retry_after_ms: Option<u64>,
    /// The variant's own text (the detail of an unreachable or odd upstream).
    #[prost(string, tag = "11")]
    detail: String,
    #[prost(bool, tag = "12")]
    connected: bool,
    /// A partial add: its cause (an encoded `WireError`) and counts.
    #[prost(bytes = "vec", tag = "13")]
    cause: Vec<u8>,
    #[prost(uint64, tag = "14")]
    accepted: u64,
    #[prost(uint64, tag = "15")]
    total: u64,
    #[prost(string, tag = "16")]
    first_rejected_id: String,
    #[prost(bool, tag = "17")]
    has_upstream: bool,
}

/// The `Error` variants, as `WireError::variant` names them.
mod variant {
    pub const INVALID_ARGUMENT: u32 = 1;
    pub const FAILED_PRECONDITION: u32 = 2;
    pub const UNAUTHENTICATED: u32 = 3;
    pub const UPSTREAM: u32 = 4;
    pub const UNREACHABLE: u32 = 5;
    pub const PROTOCOL: u32 = 6;
    pub const DEADLINE: u32 = 7;
    pub const UNAVAILABLE: u32 = 8;
    pub const INTERNAL: u32 = 9;
    pub const PARTIAL: u32 = 10;
    pub const PERMISSION_DENIED: u32 = 11;
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
        message: error.to_string(),
        ..WireError::default()
    };
    let upstream = |wire: &mut WireError, id: &UpstreamId| {
        wire.has_upstream = true;
        wire.provider = id.provider.to_string();
        wire.host = id.host.clone();
    };
    match error {
        // Raised by the codec and limit layers for a caller's call, never by a poller:
        // the code and message (set above) are all a watcher could need.
        Error::MalformedRequest(_) | Error::RequestTooLarge(_) | Error::RateLimited { .. } => {}
        Error::InvalidArgument(violations) => {
            wire.variant = variant::INVALID_ARGUMENT;
            wire.fields = violations.iter().map(|v| v.field.clone()).collect();
            wire.descriptions = violations.iter().map(|v| v.description.clone()).collect();
        }
        Error::FailedPrecondition(m) => {
            (wire.variant, wire.message) = (variant::FAILED_PRECONDITION, m.clone())
        }
        Error::Unauthenticated(m) => {
            (wire.variant, wire.message) = (variant::UNAUTHENTICATED, m.clone())
        }
        Error::PermissionDenied(m) => {
            (wire.variant, wire.message) = (variant::PERMISSION_DENIED, m.clone())
        }
        Error::Unavailable(m) => (wire.variant, wire.message) = (variant::UNAVAILABLE, m.clone()),
        Error::Internal(m) => (wire.variant, wire.message) = (variant::INTERNAL, m.clone()),
        Error::Upstream(failure) => {
            wire.variant = variant::UPSTREAM;
            upstream(&mut wire, &failure.upstream);
            wire.http_status = u32::from(failure.status);
            wire.message = failure.message.clone();
            wire.request_id = failure.request_id.clone();
            wire.retry_after_ms = failure
                .retry_after
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        }
        Error::UpstreamUnreachable {
            upstream: id,
            detail,
            connected,
        } => {
            wire.variant = variant::UNREACHABLE;
            upstream(&mut wire, id);
            wire.detail = detail.clone();
            wire.connected = *connected;
        }
        Error::UpstreamProtocol {
            upstream: id,
            status,
            detail,
        } => {
            wire.variant = variant::PROTOCOL;
            upstream(&mut wire, id);
            wire.http_status = u32::from(*status);
            wire.detail = detail.clone();
        }
        Error::DeadlineExceeded { upstream: id } => {
            wire.variant = variant::DEADLINE;
            if let Some(id) = id {
                upstream(&mut wire, id);
            }
        }
        Error::PartiallyAccepted {
            cause,
            accepted,
            total,
            last_accepted_id,
            first_rejected_id,
        } => {
            wire.variant = variant::PARTIAL;
            wire.cause = wire_error(cause).encode_to_vec();
            wire.accepted = u64::try_from(*accepted).unwrap_or(u64::MAX);
            wire.total = u64::try_from(*total).unwrap_or(u64::MAX);
            wire.request_id = last_accepted_id.clone();
            wire.first_rejected_id = first_rejected_id.clone();
        }
    }
    wire
}

fn upstream_of(wire: &WireError) -> UpstreamId {
    // `provider` is a `&'static str`: only the names the gateway itself uses survive.
    let provider = match wire.provider.as_str() {
        "sutro" => "sutro",
        "xai" => "xai",
        _ => "upstream",
    };
    UpstreamId {
        provider,
        host: wire.host.clone(),
    }
}

fn error_of(wire: WireError) -> Error {
    let code = Code::from_i32(wire.code);
    let status = u16::try_from(wire.http_status).unwrap_or(0);
    let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    match wire.variant {
        variant::UPSTREAM => {}
        variant::UNREACHABLE => {
            return Error::UpstreamUnreachable {
                upstream: upstream_of(&wire),
                detail: wire.detail,
                connected: wire.connected,
            };
        }
        variant::PROTOCOL => {
            return Error::UpstreamProtocol {
                upstream: upstream_of(&wire),
                status,
                detail: wire.detail,
            };
        }
        variant::DEADLINE => {
            return Error::DeadlineExceeded {
                upstream: wire.has_upstream.then(|| upstream_of(&wire)),
            };
        }
        variant::PARTIAL => {
            let cause = WireError::decode(wire.cause.as_slice())
                .map(error_of)
                .unwrap_or_else(|_| Error::Unavailable(wire.message.clone()));
            return Error::PartiallyAccepted {
                cause: Box::new(cause),
                accepted: count(wire.accepted),
                total: count(wire.total),
                last_accepted_id: wire.request_id,
                first_rejected_id: wire.first_rejected_id,
            };
        }
        variant::UNAVAILABLE => return Error::Unavailable(wire.message),
        variant::INTERNAL => return Error::Internal(wire.message),
        variant::FAILED_PRECONDITION => return Error::FailedPrecondition(wire.message),
        variant::UNAUTHENTICATED => return Error::Unauthenticated(wire.message),
        variant::PERMISSION_DENIED => return Error::PermissionDenied(wire.message),
        _ => {}
    }
    if (100..=599).contains(&status) {
        return Error::Upstream(UpstreamFailure {
            upstream: upstream_of(&wire),
            status,
            message: wire.message,
            retry_after: wire.retry_after_ms.map(Duration::from_millis),
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

    /// What a caller of any replica sees: code, message and every detail.
    type Seen = (
        Code,
        String,
        Option<Duration>,
        Option<(String, String, Vec<(String, String)>)>,
    );

    fn status(error: &Error) -> Seen {
        use tonic_types::StatusExt;
        let status = tonic::Status::from(error);
        let delay = status
            .get_details_retry_info()
            .and_then(|info| info.retry_delay);
        let info = status.get_details_error_info().map(|info| {
            let mut metadata: Vec<_> = info.metadata.into_iter().collect();
            metadata.sort();
            (info.reason, info.domain, metadata)
        });
        (status.code(), status.message().to_string(), delay, info)
    }

    #[test]
    fn every_error_crosses_replicas_with_its_code_message_and_retry_delay() {
        let sutro = || UpstreamId {
            provider: "sutro",
            host: "sutro.example".into(),
        };
        let throttled = Error::Upstream(UpstreamFailure {
            upstream: sutro(),
            status: 429,
            message: "slow down".into(),
            retry_after: Some(Duration::from_secs(7)),
            request_id: Some("r2".into()),
            meaning: None,
        });
        let errors = [
            throttled.clone(),
            Error::UpstreamUnreachable {
                upstream: sutro(),
                detail: "connection refused".into(),
                connected: false,
            },
            Error::UpstreamProtocol {
                upstream: sutro(),
                status: 200,
                detail: "not JSON".into(),
            },
            Error::DeadlineExceeded {
                upstream: Some(sutro()),
            },
            Error::DeadlineExceeded { upstream: None },
            Error::Unavailable("batchgate is shutting down".into()),
            Error::Internal("bug".into()),
            Error::FailedPrecondition("gone".into()),
            Error::Unauthenticated("no key".into()),
            Error::PartiallyAccepted {
                cause: Box::new(throttled),
                accepted: 3,
                total: 10,
                last_accepted_id: Some("req-2".into()),
                first_rejected_id: "req-3".into(),
            },
        ];
        for error in errors {
            let WatchState::<u64>::Failed(back) = round(&WatchState::Failed(error.clone())) else {
                panic!("failed expected")
            };
            assert_eq!(status(&back), status(&error), "{error:?}");
        }
        let (code, _, delay, _) = status(&Error::Upstream(UpstreamFailure {
            upstream: sutro(),
            status: 429,
            message: "slow down".into(),
            retry_after: Some(Duration::from_secs(7)),
            request_id: None,
            meaning: None,
        }));
        assert_eq!(code, Code::ResourceExhausted);
        assert_eq!(delay, Some(Duration::from_secs(7)));
    }
}
