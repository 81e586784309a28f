//! Gives the calls tonic refuses while decoding them, before any handler runs, the caller's
//! codes: a malformed message is INVALID_ARGUMENT, an over-size one RESOURCE_EXHAUSTED.

use std::task::{Context, Poll};

use futures_util::TryFutureExt;
use futures_util::future::MapOk;
use tonic::Code;
use tower::{Layer, Service};

use crate::error::Error;

/// The tower layer that rewrites tonic's decode failures (see [`decode_failure`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeErrorsLayer;

impl<S> Layer<S> for DecodeErrorsLayer {
    type Service = DecodeErrors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DecodeErrors { inner }
    }
}

/// The service of [`DecodeErrorsLayer`].
#[derive(Debug, Clone)]
pub struct DecodeErrors<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for DecodeErrors<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = MapOk<S::Future, fn(http::Response<ResBody>) -> http::Response<ResBody>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        self.inner
            .call(request)
            .map_ok(rewrite::<ResBody> as fn(_) -> _)
    }
}

/// Replaces the status of a call tonic could not decode with the gateway's own
/// rendering of the matching [`Error`]; every other response passes untouched.
fn rewrite<B>(mut response: http::Response<B>) -> http::Response<B> {
    // tonic renders a status it raises before the handler as a trailers-only
    // response and keeps the `Status` itself in the response's extensions.
    let Some(error) = response
        .extensions()
        .get::<tonic::Status>()
        .and_then(decode_failure)
    else {
        return response;
    };
    let status = tonic::Status::from(&error);
    let mut rendered = http::HeaderMap::new();
    if status.add_header(&mut rendered).is_err() {
        // Our own rendering always fits in headers; if it ever did not, tonic's
        // answer is still a valid one.
        return response;
    }
    let headers = response.headers_mut();
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        let name = http::HeaderName::from_static(name);
        match rendered.remove(&name) {
            Some(value) => headers.insert(name, value),
            None => headers.remove(name),
        };
    }
    response.extensions_mut().insert(status);
    response
}

/// The gateway error a status raised by tonic's decoder stands for, if it is one.
///
/// Matched on tonic 0.14's and prost's own texts (`tonic/src/codec/decode.rs`,
/// `tonic-prost/src/codec.rs`, `prost/src/error.rs`). Statuses the gateway renders
/// itself always carry details, so one without details and with these texts can only
/// come from the codec: a handler's genuine INTERNAL is never touched.
fn decode_failure(status: &tonic::Status) -> Option<Error> {
    if !status.details().is_empty() {
        return None;
    }
    let message = status.message();
    let malformed = || Some(Error::MalformedRequest(message.to_owned()));
    let too_large = || Some(Error::RequestTooLarge(message.to_owned()));
    match status.code() {
        // prost: bad wire data, a string that is not UTF-8, the recursion limit
        // (over-deep `Struct` nesting) all read "failed to decode Protobuf message: …".
        Code::Internal if message.starts_with("failed to decode Protobuf message") => malformed(),
        // A compressed request whose bytes do not inflate.
        Code::Internal
            if message.starts_with("Error decompressing:")
                && message.ends_with("while sending request") =>
        {
            malformed()
        }
        // The length prefix is over the limit (tonic says OUT_OF_RANGE) ...
        Code::OutOfRange if message.starts_with("Error, decoded message length too large") => {
            too_large()
        }
        // ... or the message inflates past it (tonic says RESOURCE_EXHAUSTED).
        Code::ResourceExhausted if message.starts_with("Error decompressing: size limit") => {
            too_large()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_after(status: tonic::Status) -> Code {
        rewrite(status.into_http::<()>())
            .extensions()
            .get::<tonic::Status>()
            .map_or(Code::Unknown, tonic::Status::code)
    }

    #[test]
    fn decoder_failures_get_the_callers_codes() {
        let cases = [
            (
                tonic::Status::internal(
                    "failed to decode Protobuf message: invalid string value: data is not UTF-8 encoded",
                ),
                Code::InvalidArgument,
            ),
            (
                tonic::Status::internal(
                    "failed to decode Protobuf message: Struct.fields: recursion limit reached",
                ),
                Code::InvalidArgument,
            ),
            (
                tonic::Status::out_of_range(
                    "Error, decoded message length too large: found 9 bytes, the limit is: 4 bytes",
                ),
                Code::ResourceExhausted,
            ),
            (
                tonic::Status::resource_exhausted(
                    "Error decompressing: size limit, of 4 bytes, exceeded while decompressing message",
                ),
                Code::ResourceExhausted,
            ),
        ];
        for (status, code) in cases {
            let message = status.message().to_owned();
            assert_eq!(code_after(status), code, "{message}");
        }
    }

    #[test]
    fn other_statuses_pass_untouched() {
        // A handler's own INTERNAL carries details, even if its text looked like the codec's.
        let ours =
            tonic::Status::from(&Error::Internal("failed to decode Protobuf message".into()));
        assert_eq!(code_after(ours), Code::Internal);
        assert_eq!(
            code_after(tonic::Status::internal("something broke")),
            Code::Internal
        );
        // The encoder's limit on our own answers is not the caller's fault.
        assert_eq!(
            code_after(tonic::Status::out_of_range(
                "Error, encoded message length too large: found 9 bytes, the limit is: 4 bytes"
            )),
            Code::OutOfRange
        );
    }

    #[test]
    fn the_rewritten_headers_carry_the_gateways_rendering() {
        let response = rewrite(
            tonic::Status::internal("failed to decode Protobuf message: invalid varint")
                .into_http::<()>(),
        );
        let status = tonic::Status::from_header_map(response.headers()).expect("a status");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains("invalid varint"),
            "{}",
            status.message()
        );
        assert!(!status.details().is_empty());
    }
}
