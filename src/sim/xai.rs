//! The simulated xAI batches API (`/v1/batches`). PLACEHOLDER: being written.

use std::sync::Arc;

use axum::Router;

/// How the simulated xAI batches behave.
#[derive(Debug, Clone, clap::Args)]
pub struct XaiSimConfig {
    /// Milliseconds from an add until a request finishes.
    #[arg(long = "xai-request-ms", env = "BATCHGATE_SIM_XAI_REQUEST_MS", default_value_t = 3_000)]
    pub request_ms: u64,
}

impl Default for XaiSimConfig {
    fn default() -> Self {
        Self { request_ms: 3_000 }
    }
}

impl XaiSimConfig {
    /// A quick pace for tests.
    pub fn fast() -> Self {
        Self { request_ms: 50 }
    }
}

/// The simulated xAI state.
pub struct XaiSim {
    _config: XaiSimConfig,
}

impl XaiSim {
    pub fn new(config: XaiSimConfig) -> Arc<Self> {
        Arc::new(Self { _config: config })
    }
}

/// The `/v1/batches` routes.
pub fn routes(_sim: Arc<XaiSim>) -> Router {
    Router::new()
}
