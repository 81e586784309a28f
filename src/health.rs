//! The gRPC health service, whose Watch streams end at shutdown: tonic-health's stay
//! open for good, and graceful shutdown would wait on them until `drain_timeout`.

use std::pin::Pin;

use futures_util::{FutureExt, Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};

/// The health service of `reporter`, its Watch streams ending once `stop` fires.
pub fn service(reporter: &HealthReporter, stop: CancellationToken) -> HealthServer<EndingHealth> {
    HealthServer::new(EndingHealth {
        inner: HealthService::from_health_reporter(reporter.clone()),
        stop,
    })
}

/// tonic-health's service, with Watch streams that end at shutdown.
#[derive(Debug)]
pub struct EndingHealth {
    inner: HealthService,
    stop: CancellationToken,
}

/// The statuses of one Watch call.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for EndingHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut statuses = self.inner.watch(request).await?.into_inner();
        let stop = self.stop.clone();
        let stream = async_stream::stream! {
            loop {
                tokio::select! {
                    // Statuses first: shutdown sets NOT_SERVING before it fires `stop`,
                    // and watchers must see it before their stream ends.
                    biased;
                    status = statuses.next() => match status {
                        Some(status) => yield status,
                        None => return,
                    },
                    () = stop.cancelled() => break,
                }
            }
            while let Some(Some(status)) = statuses.next().now_or_never() {
                yield status;
            }
            yield Err(Status::unavailable("batchgate is shutting down"));
        };
        Ok(Response::new(Box::pin(stream)))
    }
}
