//! The gateway's one error type, and the single place where it becomes a `tonic::Status`.
//! Every variant says where the error came from: the caller, an upstream, or ourselves.

use std::collections::HashMap;
use std::time::Duration;

use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

/// The domain of errors the gateway raises itself (not relayed from an upstream).
pub const DOMAIN: &str = "batchgate";

/// Which upstream API an error came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamId {
    /// Short provider name: `sutro` or `xai`.
    pub provider: &'static str,
    /// The upstream host, used as the ErrorInfo domain.
    pub host: String,
}

/// One bad field of a caller's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The proto field path, e.g. `prompts.values` or `job_id`.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`, described by `description`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// An HTTP error answer from an upstream, with its text kept.
#[derive(Debug, Clone)]
pub struct UpstreamFailure {
    /// The upstream that answered.
    pub upstream: UpstreamId,
    /// Its HTTP status.
    pub status: u16,
    /// Its error text (secrets scrubbed).
    pub message: String,
    /// Its `Retry-After`, if any.
    pub retry_after: Option<Duration>,
    /// Its `x-request-id`, if any.
    pub request_id: Option<String>,
    /// The code the provider's client knows this answer means, when the status
    /// alone says otherwise (xAI's 400 for a wrong key is UNAUTHENTICATED).
    pub meaning: Option<Code>,
}

/// Everything that can go wrong while serving a call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The caller sent a request that breaks the contract; nothing was sent upstream.
    #[error("invalid request: {}", describe_violations(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The caller's message could not be read (bad protobuf, a string that is not
    /// UTF-8, nesting past the decoder's limit, a corrupt compressed message).
    #[error("the request message is malformed: {0}")]
    MalformedRequest(String),
    /// The caller's message is over the size the gateway accepts, compressed or not.
    #[error("the request message is too large: {0}")]
    RequestTooLarge(String),
    /// The caller's request conflicts with state the gateway holds (e.g. a reused request id).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller sent no usable credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known, and may not do this (a service its tenant may not use).
    #[error("{0}")]
    PermissionDenied(String),
    /// The upstream answered with an HTTP error.
    #[error("{} answered HTTP {}: {}", .0.upstream.provider, .0.status, .0.message)]
    Upstream(UpstreamFailure),
    /// The upstream could not be reached, or the connection broke.
    #[error("{} is unreachable: {detail}", upstream.provider)]
    UpstreamUnreachable {
        /// The upstream.
        upstream: UpstreamId,
        /// What failed (no secrets).
        detail: String,
        /// Whether a connection was made, so the request may have been sent.
        connected: bool,
    },
    /// The upstream answered 2xx with a body that is not what its API documents.
    #[error("{} sent an unexpected response (HTTP {status}): {detail}", upstream.provider)]
    UpstreamProtocol {
        /// The upstream.
        upstream: UpstreamId,
        /// The HTTP status of the odd answer.
        status: u16,
        /// What did not parse.
        detail: String,
    },
    /// The caller's deadline (or the gateway's cap) passed before the upstream answered.
    #[error("deadline exceeded waiting for {}", upstream.as_ref().map_or("the gateway", |u| u.provider))]
    DeadlineExceeded {
        /// The upstream that was being waited for, if any.
        upstream: Option<UpstreamId>,
    },
    /// The gateway cannot serve now (e.g. it is shutting down); retry elsewhere.
    #[error("{0}")]
    Unavailable(String),
    /// The caller is over one of its limits at the gateway (a rate, or open streams);
    /// nothing was done.
    #[error("rate limit exceeded: {description}")]
    RateLimited {
        /// QuotaFailure's subject: the tenant and method class.
        subject: String,
        /// Which limit, and what to do.
        description: String,
        /// When one call would be admitted again, if that can be known.
        retry_after: Option<Duration>,
    },
    /// A bug or an impossible state in the gateway itself.
    #[error("internal error: {0}")]
    Internal(String),
    /// A large add was split into several upstream calls and one failed: the
    /// requests before it were accepted, the rest were not.
    #[error(
        "{cause}; requests 0..{accepted} of {total} were accepted upstream{}, requests {accepted}..{total} were not (first not accepted: {first_rejected_id}); retrying the same call is safe",
        last_accepted_id.as_ref().map(|id| format!(" (last accepted: {id})")).unwrap_or_default()
    )]
    PartiallyAccepted {
        /// Why the failed upstream call failed.
        cause: Box<Error>,
        /// How many requests (in call order) were accepted.
        accepted: usize,
        /// How many requests the call had.
        total: usize,
        /// The id of the last accepted request, if any.
        last_accepted_id: Option<String>,
        /// The id of the first request that was not accepted.
        first_rejected_id: String,
    },
}

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn describe_violations(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The gRPC code for an upstream HTTP status (DESIGN.md's table, after google/rpc/code.proto).
pub fn code_for_upstream_status(status: u16) -> Code {
    match status {
        400 | 422 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        408 => Code::Unavailable,
        409 | 410 | 412 => Code::FailedPrecondition,
        429 => Code::ResourceExhausted,
        500 => Code::Internal,
        501 => Code::Unimplemented,
        502 | 503 | 524 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        s if (400..500).contains(&s) => Code::FailedPrecondition,
        _ => Code::Unavailable,
    }
}

impl Error {
    /// The gRPC code this error is rendered with.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) | Error::MalformedRequest(_) => Code::InvalidArgument,
            Error::RequestTooLarge(_) | Error::RateLimited { .. } => Code::ResourceExhausted,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Upstream(failure) => failure
                .meaning
                .unwrap_or_else(|| code_for_upstream_status(failure.status)),
            Error::PartiallyAccepted { cause, .. } => cause.code(),
            Error::UpstreamUnreachable { .. } | Error::Unavailable(_) => Code::Unavailable,
            Error::UpstreamProtocol { .. } | Error::Internal(_) => Code::Internal,
            Error::DeadlineExceeded { .. } => Code::DeadlineExceeded,
        }
    }

    /// True when an upstream may have acted on the request this error ended: the
    /// answer that would say so was lost (our deadline, a connection that broke after
    /// it was made, a proxy's or server's 5xx, a 2xx we could not read). A refusal
    /// (4xx), a 503 and a request that never left are definite: nothing was done.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Error::Upstream(f) => f.status >= 500 && !matches!(f.status, 501 | 503),
            Error::UpstreamUnreachable { connected, .. } => *connected,
            Error::UpstreamProtocol { status, .. } => (200..300).contains(status),
            Error::DeadlineExceeded { upstream } => upstream.is_some(),
            _ => false,
        }
    }

    /// True for trouble that may pass by itself (worth polling again later).
    pub fn is_transient(&self) -> bool {
        match self {
            // A body that is not what the API documents reads the same way next
            // time, and a message too large stays too large: asking again cannot help.
            Error::UpstreamProtocol { .. } | Error::RequestTooLarge(_) => false,
            Error::PartiallyAccepted { cause, .. } => cause.is_transient(),
            _ => matches!(
                self.code(),
                Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::ResourceExhausted
                    | Code::Internal
            ),
        }
    }

    /// A stable machine-readable reason for ErrorInfo.
    fn reason(&self) -> String {
        match self {
            Error::InvalidArgument(_) => "INVALID_REQUEST".into(),
            Error::MalformedRequest(_) => "MALFORMED_REQUEST".into(),
            Error::RequestTooLarge(_) => "REQUEST_TOO_LARGE".into(),
            Error::FailedPrecondition(_) => "FAILED_PRECONDITION".into(),
            Error::Unauthenticated(_) => "MISSING_CREDENTIALS".into(),
            Error::PermissionDenied(_) => "TENANT_NOT_ALLOWED".into(),
            Error::Upstream(f) => format!("UPSTREAM_HTTP_{}", f.status),
            Error::UpstreamUnreachable { .. } => "UPSTREAM_UNREACHABLE".into(),
            Error::UpstreamProtocol { .. } => "UPSTREAM_PROTOCOL".into(),
            Error::DeadlineExceeded { .. } => "DEADLINE_EXCEEDED".into(),
            Error::Unavailable(_) => "UNAVAILABLE".into(),
            Error::Internal(_) => "INTERNAL".into(),
            Error::RateLimited { .. } => "RATE_LIMITED".into(),
            Error::PartiallyAccepted { .. } => "PARTIALLY_ACCEPTED".into(),
        }
    }

    /// Where the error came from, as ErrorInfo's domain and metadata.
    fn origin(&self) -> (String, HashMap<String, String>) {
        let mut metadata = HashMap::new();
        let domain = match self {
            Error::Upstream(f) => {
                metadata.insert("upstream".into(), f.upstream.provider.into());
                metadata.insert("upstream_status".into(), f.status.to_string());
                if let Some(id) = &f.request_id {
                    metadata.insert("upstream_request_id".into(), id.clone());
                }
                f.upstream.host.clone()
            }
            Error::UpstreamProtocol {
                upstream, status, ..
            } => {
                metadata.insert("upstream".into(), upstream.provider.into());
                metadata.insert("upstream_status".into(), status.to_string());
                upstream.host.clone()
            }
            Error::UpstreamUnreachable { upstream, .. }
            | Error::DeadlineExceeded {
                upstream: Some(upstream),
            } => {
                metadata.insert("upstream".into(), upstream.provider.into());
                upstream.host.clone()
            }
            Error::PartiallyAccepted {
                cause,
                accepted,
                total,
                last_accepted_id,
                first_rejected_id,
            } => {
                let (domain, mut inner) = cause.origin();
                inner.insert("accepted_count".into(), accepted.to_string());
                inner.insert("total_count".into(), total.to_string());
                inner.insert("first_not_accepted_id".into(), first_rejected_id.clone());
                if let Some(id) = last_accepted_id {
                    inner.insert("last_accepted_id".into(), id.clone());
                }
                metadata = inner;
                domain
            }
            _ => DOMAIN.into(),
        };
        (domain, metadata)
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Upstream(f) => f.retry_after,
            Error::PartiallyAccepted { cause, .. } => cause.retry_after(),
            Error::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl From<&Error> for tonic::Status {
    fn from(error: &Error) -> Self {
        let mut details = ErrorDetails::new();
        let (domain, metadata) = error.origin();
        details.set_error_info(error.reason(), domain, metadata);
        if let Error::InvalidArgument(violations) = error {
            for v in violations {
                details.add_bad_request_violation(v.field.clone(), v.description.clone());
            }
        }
        if let Error::RateLimited {
            subject,
            description,
            ..
        } = error
        {
            details.add_quota_failure_violation(subject.clone(), description.clone());
        }
        if let Some(delay) = error.retry_after() {
            details.set_retry_info(Some(delay));
        }
        tonic::Status::with_error_details(error.code(), error.to_string(), details)
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        tonic::Status::from(&error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sutro() -> UpstreamId {
        UpstreamId {
            provider: "sutro",
            host: "sutro.example".into(),
        }
    }

    #[test]
    fn upstream_table_follows_design() {
        let expect = [
            (400, Code::InvalidArgument),
            (422, Code::InvalidArgument),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::NotFound),
            (409, Code::FailedPrecondition),
            (410, Code::FailedPrecondition),
            (412, Code::FailedPrecondition),
            (429, Code::ResourceExhausted),
            (500, Code::Internal),
            (501, Code::Unimplemented),
            (502, Code::Unavailable),
            (503, Code::Unavailable),
            (524, Code::Unavailable),
            (504, Code::DeadlineExceeded),
        ];
        for (status, code) in expect {
            assert_eq!(code_for_upstream_status(status), code, "HTTP {status}");
        }
    }

    #[test]
    fn rate_limited_upstream_carries_retry_info_and_origin() {
        let error = Error::Upstream(UpstreamFailure {
            upstream: sutro(),
            status: 429,
            message: "slow down".into(),
            retry_after: Some(Duration::from_secs(7)),
            request_id: Some("req-1".into()),
            meaning: None,
        });
        let status = tonic::Status::from(&error);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains("slow down"));
        let details = status.get_error_details();
        assert_eq!(
            details.retry_info().and_then(|r| r.retry_delay),
            Some(Duration::from_secs(7))
        );
        let info = details.error_info().expect("error info");
        assert_eq!(info.domain, "sutro.example");
        assert_eq!(
            info.metadata.get("upstream_status").map(String::as_str),
            Some("429")
        );
        assert_eq!(
            info.metadata.get("upstream_request_id").map(String::as_str),
            Some("req-1")
        );
    }

    #[test]
    fn rate_limited_calls_carry_retry_info_and_quota_failure() {
        let error = Error::RateLimited {
            subject: "tenant:key-1/class:read".into(),
            description: "over the read limit".into(),
            retry_after: Some(Duration::from_millis(20)),
        };
        let status = tonic::Status::from(&error);
        assert_eq!(status.code(), Code::ResourceExhausted);
        let details = status.get_error_details();
        assert_eq!(
            details.retry_info().and_then(|r| r.retry_delay),
            Some(Duration::from_millis(20))
        );
        let violation = &details.quota_failure().expect("quota failure").violations[0];
        assert_eq!(violation.subject, "tenant:key-1/class:read");
        assert_eq!(violation.description, "over the read limit");
        let info = details.error_info().expect("error info");
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            ("RATE_LIMITED", DOMAIN)
        );
    }

    #[test]
    fn a_malformed_upstream_body_is_not_transient() {
        let malformed = Error::UpstreamProtocol {
            upstream: sutro(),
            status: 200,
            detail: "expected an object".into(),
        };
        assert_eq!(malformed.code(), Code::Internal);
        assert!(!malformed.is_transient());
        let server_error = Error::Upstream(UpstreamFailure {
            upstream: sutro(),
            status: 500,
            message: "oops".into(),
            retry_after: None,
            request_id: None,
            meaning: None,
        });
        assert!(server_error.is_transient());
        assert!(!Error::RequestTooLarge("5 MB".into()).is_transient());
        assert!(!Error::MalformedRequest("bad varint".into()).is_transient());
    }

    #[test]
    fn invalid_argument_names_every_field() {
        let error = Error::InvalidArgument(vec![
            FieldViolation::new("job_id", "must not be empty"),
            FieldViolation::new("page_size", "must be between 1 and 100"),
        ]);
        let status = tonic::Status::from(&error);
        assert_eq!(status.code(), Code::InvalidArgument);
        let fields: Vec<_> = status
            .get_error_details()
            .bad_request()
            .expect("bad request")
            .field_violations
            .iter()
            .map(|v| v.field.clone())
            .collect();
        assert_eq!(fields, ["job_id", "page_size"]);
    }
}
