//! What the rate-limit layer answers with: the inner call's future, stamped with an
//! admitted decision or replaced by a refusal, and a stream body holding its place.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_util::future::{BoxFuture, Ready};
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::body::Body;

use super::{Decision, StreamGuard};

pin_project! {
    /// The answer of [`RateLimitService`]: only a decision that waits, or a stream under
    /// the cap, is boxed.
    #[project = RateLimitFutureProj]
    pub enum RateLimitFuture<F, E> {
        /// No limit applies: the inner call as it is.
        Through { #[pin] inner: F },
        /// Admitted at once: the inner call, its answer stamped with the decision.
        Stamped { #[pin] inner: F, decision: Decision },
        /// Refused at once.
        Refused { #[pin] answer: Ready<Result<http::Response<Body>, E>> },
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
            RateLimitFutureProj::Stamped { inner, decision } => {
                let mut response = ready!(inner.poll(cx))?;
                decision.annotate(response.headers_mut());
                Poll::Ready(Ok(response))
            }
            RateLimitFutureProj::Refused { answer } => answer.poll(cx),
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
