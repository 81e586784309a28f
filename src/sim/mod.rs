//! The upstream simulator: Sutro's `/v1` API and xAI's `/v1/batches` API on one port,
//! with the documented shapes, simulated time, fault injection and per-route call counts.

// Handlers refuse a request by returning the finished answer as the error; boxing it
// would only add an allocation to a path that is about to answer anyway.
#![allow(clippy::result_large_err)]

pub mod faults;
mod respond;
pub mod sutro;
mod sutro_create;
mod sutro_jobs;
pub mod xai;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use faults::{EmptyReply, Fault, FaultConfig, FaultRule, RetryAfterForm};
pub use sutro::JobOutcome;

use faults::Faults;
use sutro::SutroSim;
use xai::{XaiSim, XaiSimConfig};

/// The Sutro key the simulator accepts out of the box (`Authorization: Key sk_sim_demo`).
pub const DEMO_API_KEY: &str = "sk_sim_demo";
/// The xAI key the simulator accepts out of the box (`Authorization: Bearer xai-sim-demo`).
pub const XAI_DEMO_API_KEY: &str = "xai-sim-demo";

const DEFAULT_QUEUE_MS: u64 = 1_500;
const DEFAULT_START_MS: u64 = 1_000;
const DEFAULT_ROWS_PER_SECOND: f64 = 20.0;
const DEFAULT_FINALIZE_MS: u64 = 500;
const DEFAULT_CANCEL_MS: u64 = 1_000;
const DEFAULT_HEARTBEAT_MS: u64 = 2_000;
const DEFAULT_PROGRESS_MS: u64 = 250;
const DEFAULT_URL_ROWS: usize = 10;

/// How the simulated upstreams behave. `Default` is the demo pace of `batchgate sim`
/// and of `batchgate serve` without upstream URLs; `fast()` is for tests.
#[derive(Debug, Clone, clap::Args)]
pub struct SimConfig {
    /// How long a new Sutro job stays QUEUED.
    #[arg(long, env = "BATCHGATE_SIM_QUEUE_MS", default_value_t = DEFAULT_QUEUE_MS)]
    pub queue_ms: u64,
    /// How long a Sutro job stays STARTING before it runs.
    #[arg(long, env = "BATCHGATE_SIM_START_MS", default_value_t = DEFAULT_START_MS)]
    pub start_ms: u64,
    /// Rows a running Sutro job processes per second.
    #[arg(long, env = "BATCHGATE_SIM_ROWS_PER_SECOND", default_value_t = DEFAULT_ROWS_PER_SECOND)]
    pub rows_per_second: f64,
    /// How long a job stays RUNNING after its last row (result finalization): the
    /// progress stream has already reported every row, the status is not final yet.
    #[arg(long, env = "BATCHGATE_SIM_FINALIZE_MS", default_value_t = DEFAULT_FINALIZE_MS)]
    pub finalize_ms: u64,
    /// How long a cancelled job stays CANCELLING before it is CANCELLED.
    #[arg(long, env = "BATCHGATE_SIM_CANCEL_MS", default_value_t = DEFAULT_CANCEL_MS)]
    pub cancel_ms: u64,
    /// Interval of `heartbeat` lines on the progress stream.
    #[arg(long, env = "BATCHGATE_SIM_HEARTBEAT_MS", default_value_t = DEFAULT_HEARTBEAT_MS)]
    pub heartbeat_ms: u64,
    /// How often the progress stream looks for new rows to report.
    #[arg(long, env = "BATCHGATE_SIM_PROGRESS_MS", default_value_t = DEFAULT_PROGRESS_MS)]
    pub progress_ms: u64,
    /// Rows of a job whose input is a URL (the simulator does not download it).
    #[arg(long, env = "BATCHGATE_SIM_URL_ROWS", default_value_t = DEFAULT_URL_ROWS)]
    pub url_rows: usize,
    /// Extra per-row columns in every job's results, beside the documented ones (Sutro
    /// has added columns before): each named column holds one number per row.
    #[arg(
        long,
        env = "BATCHGATE_SIM_EXTRA_RESULT_COLUMNS",
        value_delimiter = ','
    )]
    pub extra_result_columns: Vec<String>,
    /// The xAI half.
    #[command(flatten)]
    pub xai: XaiSimConfig,
    /// Latency and faults, for both halves.
    #[command(flatten)]
    pub faults: FaultConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            queue_ms: DEFAULT_QUEUE_MS,
            start_ms: DEFAULT_START_MS,
            rows_per_second: DEFAULT_ROWS_PER_SECOND,
            finalize_ms: DEFAULT_FINALIZE_MS,
            cancel_ms: DEFAULT_CANCEL_MS,
            heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            progress_ms: DEFAULT_PROGRESS_MS,
            url_rows: DEFAULT_URL_ROWS,
            extra_result_columns: Vec::new(),
            xai: XaiSimConfig::default(),
            faults: FaultConfig::default(),
        }
    }
}

impl SimConfig {
    /// A quick pace for tests: jobs finish in tens of milliseconds, no faults.
    pub fn fast() -> Self {
        Self {
            queue_ms: 30,
            start_ms: 20,
            rows_per_second: 5_000.0,
            finalize_ms: 30,
            cancel_ms: 30,
            heartbeat_ms: 100,
            progress_ms: 20,
            url_rows: DEFAULT_URL_ROWS,
            extra_result_columns: Vec::new(),
            xai: XaiSimConfig::fast(),
            faults: FaultConfig::default(),
        }
    }
}

/// A running simulator.
pub struct SimHandle {
    addr: SocketAddr,
    faults: Arc<Faults>,
    sutro: Arc<SutroSim>,
    stop: CancellationToken,
    served: JoinHandle<std::io::Result<()>>,
}

/// Serves both simulated upstreams on `addr` (port 0 picks a free port).
pub async fn start(config: SimConfig, addr: SocketAddr) -> std::io::Result<SimHandle> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let faults = Arc::new(Faults::new(config.faults.clone()));
    let sutro = SutroSim::new(config.clone(), addr, stop.clone());
    let xai = XaiSim::new(config.xai.clone());
    let router = Router::new()
        .merge(sutro::routes(sutro.clone()))
        .merge(xai::routes(xai))
        .fallback(respond::no_route)
        // Neither API documents a limit on a whole create or add call (only xAI's 25 MB
        // per request); 256 MiB keeps a runaway client from exhausting memory.
        .layer(axum::extract::DefaultBodyLimit::max(256 * 1024 * 1024))
        .layer(axum::middleware::from_fn_with_state(
            faults.clone(),
            faults::apply,
        ));
    // Like a real API front end, answer small bodies without waiting on Nagle.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let served = tokio::spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
    );
    Ok(SimHandle {
        addr,
        faults,
        sutro,
        stop,
        served,
    })
}

impl SimHandle {
    /// The address it serves on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sutro's base URL on this simulator (`<origin>/v1`).
    pub fn sutro_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// xAI's base URL on this simulator (`<origin>/v1`).
    pub fn xai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Requests received on `route` (`"GET /v1/jobs/{job_id}"`), faulted ones included.
    pub fn calls(&self, route: &str) -> u64 {
        self.faults.calls(route)
    }

    /// Requests on `route` whose caller went away before the answer was ready.
    pub fn dropped(&self, route: &str) -> u64 {
        self.faults.dropped(route)
    }

    /// Header `name` of the latest request on `route` (never `authorization`).
    pub fn last_header(&self, route: &str, name: &str) -> Option<String> {
        self.faults.last_header(route, name)
    }

    /// The most requests of `upstream` (`"sutro"` or `"xai"`) the simulator was answering
    /// at once, counted until each answer's head is ready (0 for another name).
    pub fn peak_in_flight(&self, upstream: &str) -> u64 {
        match upstream {
            "sutro" => self.faults.peak_in_flight(respond::Upstream::Sutro),
            "xai" => self.faults.peak_in_flight(respond::Upstream::Xai),
            _ => 0,
        }
    }

    /// Requests received on every route.
    pub fn total_calls(&self) -> u64 {
        self.faults.total_calls()
    }

    /// Makes the next `rule.times` requests on `rule.route` fail as `rule.fault` says.
    pub fn inject(&self, rule: FaultRule) {
        self.faults.inject(rule);
    }

    /// Decides how a Sutro job ends (by default it succeeds).
    pub fn set_job_outcome(&self, job_id: &str, outcome: JobOutcome) {
        self.sutro.set_outcome(job_id, outcome);
    }

    /// Stops serving: open progress streams end, and the server gets a second to drain.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let mut served = self.served;
        if tokio::time::timeout(Duration::from_secs(1), &mut served)
            .await
            .is_err()
        {
            served.abort();
        }
    }
}
