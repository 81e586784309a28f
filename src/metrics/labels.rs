//! Bounded label values: who called as a class (never a key or tenant hash), and gRPC
//! status codes by the names the RPC conventions use.

use tonic::Code;

use crate::context::CallContext;
use crate::tenant::{ANONYMOUS_TENANT, CredentialSource};

/// A bounded label for who called: never the key, never the tenant's hash.
pub fn tenant_class(ctx: Option<&CallContext>) -> &'static str {
    match ctx {
        None => "unknown",
        Some(ctx) if ctx.caller.tenant == ANONYMOUS_TENANT => "anonymous",
        Some(ctx) => match ctx.caller.source {
            CredentialSource::Managed => "managed",
            CredentialSource::Passthrough => "passthrough",
        },
    }
}

/// The status code's name as the RPC conventions write it (`OK`, `NOT_FOUND`…).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
