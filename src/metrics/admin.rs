//! The admin port (plain HTTP, apart from gRPC): `/metrics` in the Prometheus text format,
//! `/healthz` (the process is up) and `/readyz` (serving, and Redis reachable when configured).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::MetricsPipeline;
use crate::shared_redis::SharedRedis;

/// The Prometheus text format's content type.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    /// The gateway's metrics.
    pub pipeline: MetricsPipeline,
    /// The shared Redis, when configured: readiness needs it to answer.
    pub redis: Option<SharedRedis>,
    /// Cancelled when the gateway starts to drain: it is no longer ready for new calls.
    pub draining: CancellationToken,
}

/// Serves the admin endpoints on `listener` until `stop` fires.
pub fn serve_admin(
    listener: TcpListener,
    state: AdminState,
    stop: CancellationToken,
) -> JoinHandle<std::io::Result<()>> {
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state);
    tokio::spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .into_future(),
    )
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
        state.pipeline.render(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 while the gateway takes calls and its Redis (if any) answers a PING within the
/// Redis timeout; 503 with the reason otherwise, so a load balancer sends calls elsewhere.
async fn readyz(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.draining.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n");
    }
    match &state.redis {
        Some(redis) if !redis.ping().await => {
            (StatusCode::SERVICE_UNAVAILABLE, "redis unreachable\n")
        }
        _ => (StatusCode::OK, "ready\n"),
    }
}
