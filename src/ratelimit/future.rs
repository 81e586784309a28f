//! What the rate-limit layer answers with: the inner call's future, stamped with an
//! admitted decision or replaced by a refusal, and a stream body holding its place.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_util::future::BoxFuture;
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::body::Body;

use super::{Class, Decision, StreamGuard};

/// The decision as an event on the RPC's span (the tenant is on the span). Emitted when
/// the call's future is polled, which tonic does inside the span; its `call` is not.
pub(super) fn trace_decision(class: Class, decision: &Decision) {
    tracing::debug!(
        admitted = decision.admitted,
        class = class.as_str(),
        remaining = decision.remaining,
        retry_after_ms = decision.retry_after.as_millis() as u64,
        "rate limit"
    );
}

pin_project! {
    /// The answer of [`RateLimitService`]: only a decision that waits, or a stream under
    /// the cap, is boxed.
    #[project = RateLimitFutureProj]
    pub enum RateLimitFuture<F, E> {
        /// No limit applies: the inner call as it is.
        Through { #[pin] inner: F },
        /// Admitted at once: the inner call, its answer stamped with the decision.
        Stamped { #[pin] inner: F, decision: Decision, class: Class, traced: bool },
        /// Refused at once.
        Refused { answer: Option<http::Response<Body>>, decision: Decision, class: Class },
        /// A decision that waits on Redis, or a stream holding a place under the cap.
        Waiting { future: BoxFuture<'static, Result<http::Response<Body>, E>> },
    }
}

impl<F, E> Future for RateLimitFuture<F, E>
where
    F: Future<Output = Result<http::Response<Body>, E>>,
{
    type Output = Result<http::Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RateLimitFutureProj::Through { inner } => inner.poll(cx),
            RateLimitFutureProj::Stamped {
                inner,
                decision,
                class,
                traced,
            } => {
                if !std::mem::replace(traced, true) {
                    trace_decision(*class, decision);
                }
                let mut response = ready!(inner.poll(cx))?;
                decision.annotate(response.headers_mut());
                Poll::Ready(Ok(response))
            }
            RateLimitFutureProj::Refused {
                answer,
                decision,
                class,
            } => match answer.take() {
                Some(answer) => {
                    trace_decision(*class, decision);
                    Poll::Ready(Ok(answer))
                }
                // Polled again after it answered.
                None => Poll::Pending,
            },
            RateLimitFutureProj::Waiting { future } => future.as_mut().poll(cx),
        }
    }
}

/// A stream's body holding its place under the stream cap until it is dropped.
pub(super) struct Guarded {
    pub(super) body: Body,
    pub(super) _guard: StreamGuard,
}

impl http_body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
