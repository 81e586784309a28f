//! Accepting connections without spinning when the process is out of descriptors or
//! memory: back off (10 ms doubling to 1 s) and warn once per episode.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::Sleep;
use tokio_stream::Stream;

/// First pause after an accept fails for want of resources.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// Longest pause: a freed descriptor is used within this time.
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// A stream of accepted connections that pauses, rather than retrying at once, while
/// `accept` fails with EMFILE, ENFILE, ENOMEM or ENOBUFS. A pending connection keeps the
/// listener readable, so retrying at once would take a whole core and free nothing.
pub struct BackoffIncoming<S> {
    inner: S,
    pause: Option<Pin<Box<Sleep>>>,
    next_pause: Duration,
    /// Whether the current run of failures was already reported.
    warned: bool,
}

impl<S> BackoffIncoming<S> {
    /// Wraps a stream of accepted connections.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            pause: None,
            next_pause: FIRST_PAUSE,
            warned: false,
        }
    }
}

/// Whether `error` means the process ran out of something a later accept may find again.
fn out_of_resources(error: &io::Error) -> bool {
    // ENFILE 23, EMFILE 24, ENOMEM 12, ENOBUFS 105 on Linux; other systems name them
    // through `ErrorKind` only partly, so the raw numbers are checked on Linux alone.
    if error.kind() == io::ErrorKind::OutOfMemory {
        return true;
    }
    cfg!(target_os = "linux") && matches!(error.raw_os_error(), Some(12 | 23 | 24 | 105))
}

impl<S, T> Stream for BackoffIncoming<S>
where
    S: Stream<Item = io::Result<T>> + Unpin,
{
    type Item = io::Result<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(pause) = self.pause.as_mut() {
                ready!(pause.as_mut().poll(cx));
                self.pause = None;
            }
            match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                Some(Err(error)) if out_of_resources(&error) => {
                    if !self.warned {
                        self.warned = true;
                        tracing::warn!(%error, "cannot accept connections; backing off until resources free up");
                    }
                    let pause = self.next_pause;
                    self.next_pause = (pause * 2).min(LONGEST_PAUSE);
                    self.pause = Some(Box::pin(tokio::time::sleep(pause)));
                }
                Some(Ok(connection)) => {
                    if self.warned {
                        tracing::info!("accepting connections again");
                    }
                    self.warned = false;
                    self.next_pause = FIRST_PAUSE;
                    return Poll::Ready(Some(Ok(connection)));
                }
                other => return Poll::Ready(other),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    fn emfile() -> io::Error {
        io::Error::from_raw_os_error(24)
    }

    #[tokio::test(start_paused = true)]
    async fn failures_for_want_of_descriptors_are_retried_after_growing_pauses() {
        let started = tokio::time::Instant::now();
        let attempts = (0..8)
            .map(|_| Err(emfile()))
            .chain([Ok(7), Err(emfile()), Ok(8)]);
        let mut incoming = BackoffIncoming::new(tokio_stream::iter(attempts));
        assert_eq!(incoming.next().await.unwrap().unwrap(), 7);
        // 10 + 20 + 40 + 80 + 160 + 320 + 640 + 1000 ms, the last pause capped.
        assert_eq!(started.elapsed(), Duration::from_millis(2_270));
        let again = tokio::time::Instant::now();
        assert_eq!(incoming.next().await.unwrap().unwrap(), 8);
        assert_eq!(again.elapsed(), FIRST_PAUSE, "a success starts over");
    }

    #[tokio::test(start_paused = true)]
    async fn other_failures_pass_through_at_once() {
        let reset = io::Error::from(io::ErrorKind::ConnectionAborted);
        let mut incoming = BackoffIncoming::new(tokio_stream::iter([Err::<u8, _>(reset)]));
        let started = tokio::time::Instant::now();
        assert!(incoming.next().await.unwrap().is_err());
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
