//! A budget of request bytes in flight across every call: bodies are read only as
//! permits of one semaphore allow, and a call keeps its permits until its handler is done.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tower::{Layer, Service};

use crate::error::Error;

/// Permits count KiB, so a budget of up to 4 TiB fits the semaphore's `u32` requests.
const UNIT: u64 = 1024;

/// The tower layer that budgets request bytes in flight; `0` bytes turns it off.
///
/// Each call is charged, before its first byte is handed on, for the whole gRPC
/// message its 5-byte prefix announces: a call never holds part of its need while
/// waiting for the rest, so two large calls cannot each hold half the budget and
/// wait on each other for ever. While the budget is spent the body is not read, and
/// HTTP/2 flow control holds the sender back; a message larger than the whole budget
/// could never be admitted and is refused with RESOURCE_EXHAUSTED.
#[derive(Debug, Clone)]
pub struct RequestBudgetLayer {
    budget: Option<Budget>,
}

#[derive(Debug, Clone)]
struct Budget {
    permits: Arc<Semaphore>,
    total_units: u32,
    /// Messages over this are refused by tonic's own limit: they are not prepaid.
    max_message: u64,
}

impl RequestBudgetLayer {
    /// A budget of `max_bytes` (0: off) for messages of at most `max_message` bytes.
    pub fn new(max_bytes: usize, max_message: usize) -> Self {
        let total_units = u32::try_from((max_bytes as u64).div_ceil(UNIT)).unwrap_or(u32::MAX);
        let total_units = total_units.min(Semaphore::MAX_PERMITS as u32);
        let budget = (total_units > 0).then(|| Budget {
            permits: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
            max_message: max_message as u64,
        });
        Self { budget }
    }

    /// Request bytes held right now (whole KiB: the budget's unit); `None` when off.
    pub fn in_flight_bytes(&self) -> Option<u64> {
        self.budget.as_ref().map(|b| {
            let free = b.permits.available_permits() as u64;
            u64::from(b.total_units).saturating_sub(free) * UNIT
        })
    }

    /// KiB of the budget free right now (the whole budget when nothing is in flight).
    pub fn available_kib(&self) -> Option<usize> {
        self.budget.as_ref().map(|b| b.permits.available_permits())
    }
}

impl<S> Layer<S> for RequestBudgetLayer {
    type Service = RequestBudget<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestBudget {
            inner,
            budget: self.budget.clone(),
        }
    }
}

/// The service of [`RequestBudgetLayer`].
#[derive(Debug, Clone)]
pub struct RequestBudget<S> {
    inner: S,
    budget: Option<Budget>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, ResBody> Service<http::Request<B>> for RequestBudget<S>
where
    S: Service<http::Request<BudgetedBody<B>>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let held = Arc::new(Held::default());
        let charge = self.budget.clone().map(|budget| Charge {
            budget,
            held: held.clone(),
            units: 0,
            framing: Framing::default(),
            waiting: None,
        });
        let response = self
            .inner
            .call(request.map(|inner| BudgetedBody { inner, charge }));
        Box::pin(async move {
            let response = response.await;
            // The handler is done with the decoded message: its bytes are free again.
            held.release();
            response
        })
    }
}

/// The permits one call holds, shared by its body (which adds to them) and its
/// response future (which gives them back).
#[derive(Debug, Default)]
struct Held(Mutex<Option<OwnedSemaphorePermit>>);

impl Held {
    fn add(&self, permit: OwnedSemaphorePermit) {
        let mut held = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match held.as_mut() {
            Some(mine) => mine.merge(permit),
            None => *held = Some(permit),
        }
    }

    fn release(&self) {
        let permit = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        drop(permit);
    }
}

/// A request body read only as the budget allows.
pub struct BudgetedBody<B> {
    inner: B,
    charge: Option<Charge>,
}

struct Charge {
    budget: Budget,
    held: Arc<Held>,
    /// Units this call has been granted so far.
    units: u32,
    framing: Framing,
    /// A frame read but not handed on until its permits are granted.
    waiting: Option<(Frame<Bytes>, u32, Acquire)>,
}

/// A wait for permits, in flight.
type Acquire = BoxFuture<Result<OwnedSemaphorePermit, AcquireError>>;

/// Follows the gRPC length prefixes through the body, to know each message's size
/// from its first bytes.
#[derive(Debug, Default)]
struct Framing {
    prefix: [u8; 5],
    prefix_read: usize,
    /// Bytes of the current message body still to come.
    remaining: u64,
    /// Bytes announced by the prefixes seen, plus a partial prefix.
    announced: u64,
    received: u64,
}

impl Framing {
    /// Reads `chunk`; `Err(size)` when a message of `size` bytes exceeds `limit`.
    fn feed(&mut self, mut chunk: &[u8], max_message: u64, limit: u64) -> Result<(), u64> {
        self.received += chunk.len() as u64;
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(chunk.len() as u64);
                self.remaining -= n;
                chunk.advance(n as usize);
                continue;
            }
            let n = (5 - self.prefix_read).min(chunk.len());
            self.prefix[self.prefix_read..self.prefix_read + n].copy_from_slice(&chunk[..n]);
            self.prefix_read += n;
            chunk.advance(n);
            if self.prefix_read == 5 {
                self.prefix_read = 0;
                let len = u64::from(u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]));
                self.remaining = len;
                // Over tonic's limit the call is refused on the prefix: nothing to prepay.
                if len <= max_message {
                    if 5 + len > limit {
                        return Err(5 + len);
                    }
                    self.announced += 5 + len;
                } else {
                    self.announced += 5;
                }
            }
        }
        Ok(())
    }

    /// Bytes the call is to be charged for so far.
    fn need(&self) -> u64 {
        (self.announced + self.prefix_read as u64).max(self.received)
    }
}

fn too_large(size: u64, budget_units: u32) -> tonic::Status {
    tonic::Status::from(&Error::RequestTooLarge(format!(
        "the request message is {size} bytes, more than the {} bytes of requests the gateway \
         holds in memory at once (max_request_bytes_in_flight)",
        u64::from(budget_units) * UNIT
    )))
}

impl<B> Body for BudgetedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let Some(charge) = this.charge.as_mut() else {
            return Pin::new(&mut this.inner)
                .poll_frame(cx)
                .map_err(|e| tonic::Status::from_error(e.into()));
        };
        if charge.waiting.is_none() {
            let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => return Poll::Ready(Some(Err(tonic::Status::from_error(e.into())))),
                None => return Poll::Ready(None),
            };
            let Some(data) = frame.data_ref() else {
                return Poll::Ready(Some(Ok(frame)));
            };
            let total = u64::from(charge.budget.total_units) * UNIT;
            if let Err(size) = charge.framing.feed(data, charge.budget.max_message, total) {
                return Poll::Ready(Some(Err(too_large(size, charge.budget.total_units))));
            }
            let need = charge.framing.need().div_ceil(UNIT);
            let units =
                u32::try_from(need.saturating_sub(u64::from(charge.units))).unwrap_or(u32::MAX);
            if units == 0 {
                return Poll::Ready(Some(Ok(frame)));
            }
            if u64::from(charge.units) + u64::from(units) > u64::from(charge.budget.total_units) {
                return Poll::Ready(Some(Err(too_large(
                    charge.framing.need(),
                    charge.budget.total_units,
                ))));
            }
            // Uncontended (every small call): no allocation, no wait.
            match charge.budget.permits.clone().try_acquire_many_owned(units) {
                Ok(permit) => {
                    charge.held.add(permit);
                    charge.units += units;
                    return Poll::Ready(Some(Ok(frame)));
                }
                // The semaphore is never closed; if it were, reading on unbudgeted is harmless.
                Err(TryAcquireError::Closed) => return Poll::Ready(Some(Ok(frame))),
                Err(TryAcquireError::NoPermits) => {
                    let acquire = charge.budget.permits.clone().acquire_many_owned(units);
                    charge.waiting = Some((frame, units, Box::pin(acquire)));
                }
            }
        }
        let Some((_, units, acquire)) = charge.waiting.as_mut() else {
            return Poll::Pending;
        };
        let granted = ready!(acquire.as_mut().poll(cx));
        let units = *units;
        let Some((frame, ..)) = charge.waiting.take() else {
            return Poll::Pending;
        };
        match granted {
            Ok(permit) => {
                charge.held.add(permit);
                charge.units += units;
                Poll::Ready(Some(Ok(frame)))
            }
            Err(_) => Poll::Ready(Some(Ok(frame))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.charge.as_ref().is_none_or(|c| c.waiting.is_none()) && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::time::Duration;

    use tokio::sync::{Notify, mpsc};

    use super::*;

    /// A body of the given frames.
    struct Frames(VecDeque<Bytes>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.get_mut().0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    /// One gRPC message of `len` bytes, cut into 1000-byte frames as HTTP/2 would.
    fn message(len: usize) -> Frames {
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(&(len as u32).to_be_bytes());
        bytes.resize(5 + len, b'x');
        Frames(bytes.chunks(1000).map(Bytes::copy_from_slice).collect())
    }

    async fn read_all(body: &mut BudgetedBody<Frames>) -> Result<usize, tonic::Status> {
        let mut total = 0;
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
        {
            total += frame?.data_ref().map_or(0, Bytes::len);
        }
        Ok(total)
    }

    #[tokio::test]
    async fn a_second_large_call_waits_until_the_first_is_done() {
        let layer = RequestBudgetLayer::new(8 * 1024, 1 << 20);
        let (read_tx, mut read_rx) = mpsc::unbounded_channel();
        let finish = Arc::new(Notify::new());
        let handler = {
            let finish = finish.clone();
            tower::service_fn(move |request: http::Request<BudgetedBody<Frames>>| {
                let (read_tx, finish) = (read_tx.clone(), finish.clone());
                async move {
                    let name = request.headers()["name"].to_str().unwrap_or("").to_owned();
                    let mut body = request.into_body();
                    let read = read_all(&mut body).await;
                    let _ = read_tx.send((name.clone(), read.map_err(|s| s.code())));
                    if name == "first" {
                        finish.notified().await;
                    }
                    Ok::<_, std::convert::Infallible>(http::Response::new(()))
                }
            })
        };
        let mut service = layer.layer(handler);
        let call = |name: &str, len: usize| {
            http::Request::builder()
                .header("name", name)
                .body(message(len))
                .unwrap()
        };
        let first = tokio::spawn(service.call(call("first", 6000)));
        assert_eq!(read_rx.recv().await, Some(("first".into(), Ok(6005))));
        assert_eq!(layer.available_kib(), Some(2));

        let second = tokio::spawn(service.call(call("second", 6000)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            read_rx.try_recv().is_err(),
            "the second call read past the budget"
        );

        finish.notify_one();
        first.await.unwrap().unwrap();
        assert_eq!(read_rx.recv().await, Some(("second".into(), Ok(6005))));
        second.await.unwrap().unwrap();
        assert_eq!(layer.available_kib(), Some(8));
    }

    #[tokio::test]
    async fn a_message_over_the_whole_budget_is_resource_exhausted() {
        let layer = RequestBudgetLayer::new(8 * 1024, 1 << 20);
        let handler =
            tower::service_fn(|request: http::Request<BudgetedBody<Frames>>| async move {
                let mut body = request.into_body();
                Ok::<_, std::convert::Infallible>(http::Response::new(read_all(&mut body).await))
            });
        let mut service = layer.layer(handler);
        let refused = service
            .call(http::Request::new(message(20_000)))
            .await
            .unwrap()
            .into_body()
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("max_request_bytes_in_flight"),
            "{}",
            refused.message()
        );
        // Refused on its prefix: nothing of it was charged.
        assert_eq!(layer.available_kib(), Some(8));
        // Small calls go through, each giving its permit back.
        for _ in 0..20 {
            let read = service
                .call(http::Request::new(message(100)))
                .await
                .unwrap();
            assert_eq!(read.into_body().unwrap(), 105);
        }
        assert_eq!(layer.available_kib(), Some(8));
    }

    #[tokio::test]
    async fn off_reads_everything() {
        let layer = RequestBudgetLayer::new(0, 1 << 20);
        assert_eq!(layer.available_kib(), None);
        let handler =
            tower::service_fn(|request: http::Request<BudgetedBody<Frames>>| async move {
                let mut body = request.into_body();
                Ok::<_, std::convert::Infallible>(http::Response::new(read_all(&mut body).await))
            });
        let read = layer
            .layer(handler)
            .call(http::Request::new(message(50_000)))
            .await;
        assert_eq!(read.unwrap().into_body().unwrap(), 50_005);
    }
}
