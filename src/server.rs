//! Builds and runs the gRPC server: services, health, reflection (v1 and v1alpha),
//! grpc-web (and CORS for other origins' pages), per-RPC spans, the admin port's metrics
//! and probes, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::server::HealthReporter;

use crate::accept::BackoffIncoming;
use crate::cache;
use crate::call_end::CallEndLayer;
use crate::caller::{CallerLayer, Callers};
use crate::codec_errors::DecodeErrorsLayer;
use crate::config::{Config, MAX_MESSAGE_BYTES};
use crate::idempotency;
use crate::metrics::{AdminState, MetricsPipeline, serve_admin};
use crate::progress;
use crate::proto::sutro::v1::job_service_server::JobServiceServer;
use crate::proto::xai::v1::batch_service_server::BatchServiceServer;
use crate::ratelimit::{self, RateLimitLayer};
use crate::records;
use crate::request_budget::RequestBudgetLayer;
use crate::services::auth_gate::AuthGate;
use crate::services::batches::BatchesService;
use crate::services::core::Backends;
use crate::services::jobs::JobsService;
use crate::shared_redis::SharedRedis;
use crate::sim::{self, SimConfig, SimHandle};
use crate::telemetry::TelemetrySettings;
use crate::tenant::Secret;
use crate::tls;
use crate::tls_incoming::TlsIncoming;
use crate::upstream::base_url::normalize_base_url;
use crate::upstream::budget::Budgets;
use crate::upstream::http::Limits;
use crate::upstream::sutro::SutroClient;
use crate::upstream::xai::XaiClient;

/// How long the gateway keeps its own notes on a resource it created (a job's id
/// column): about as long as a caller may still ask for the job's results.
const RECORD_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// Bytes a caller may send on one call before the gateway reads them (hyper's default,
/// set here because the connection window below is derived from it).
const HTTP2_STREAM_WINDOW: u32 = 1024 * 1024;

/// The connection's window: room for every stream's whole window at once. A call that
/// waits for the request byte budget leaves its bytes unread, and with a smaller
/// connection window those would use it up: the call holding the budget could then
/// not read the rest of its own message, and the connection would stall for good.
/// Unread bytes stay bounded per stream (its window) and so per connection.
fn connection_window(max_concurrent_streams: u32) -> u32 {
    const MAX_WINDOW: u32 = (1 << 31) - 1;
    HTTP2_STREAM_WINDOW
        .saturating_mul(max_concurrent_streams.saturating_add(1))
        .min(MAX_WINDOW)
}

/// Why the gateway could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A part of the gateway could not be built.
    #[error("cannot start: {0}")]
    Setup(String),
    /// The server failed while serving.
    #[error("server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// A running gateway: its address, and the handles to stop it.
pub struct App {
    addr: SocketAddr,
    admin_addr: SocketAddr,
    /// Cancelled when shutdown starts, so `/readyz` turns away new traffic at once.
    draining: CancellationToken,
    /// Stops the admin port, last, once the gRPC server has drained.
    admin_stop: CancellationToken,
    admin: JoinHandle<std::io::Result<()>>,
    metrics: MetricsPipeline,
    stop: CancellationToken,
    served: JoinHandle<Result<(), ServeError>>,
    health: HealthReporter,
    drain_timeout: std::time::Duration,
    simulator: Option<SimHandle>,
    jobs: JobsService,
    batches: BatchesService,
}

impl App {
    /// Binds `config.listen` (port 0 picks a free port) and starts serving. For an
    /// upstream without a URL it first starts the built-in simulator and uses its demo key.
    /// Metrics are exported as the `OTEL_*` variables and `config.otlp_endpoint` say.
    pub async fn start(config: Config) -> Result<App, ServeError> {
        let telemetry =
            TelemetrySettings::from_env(config.log_format, config.otlp_endpoint.as_deref())
                .map_err(ServeError::Setup)?;
        App::start_with_telemetry(config, &telemetry).await
    }

    /// [`App::start`], with metrics exported as `telemetry` says (the settings the
    /// process's traces were set up with), whatever the environment holds.
    pub async fn start_with_telemetry(
        mut config: Config,
        telemetry: &TelemetrySettings,
    ) -> Result<App, ServeError> {
        let simulator = start_simulator_for_gaps(&mut config).await?;
        if let Some(tenants) = &config.admission.tenants {
            // Managed mode calls upstream with the gateway's keys only.
            if config.sutro_api_key.is_none() || config.xai_api_key.is_none() {
                return Err(ServeError::Setup(
                    "tenants_file is set: both sutro_api_key and xai_api_key are needed".into(),
                ));
            }
            tracing::info!(
                tenants = tenants.len(),
                "managed mode: callers are known by their gateway tokens"
            );
            let mutual = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
            if tenants.names_certificates() && !mutual {
                tracing::warn!(
                    "the tenants file names client certificates, but tls_client_ca is unset: \
                     no caller can present one, so those tenants need their tokens"
                );
            }
        }
        let config = Arc::new(config);
        let setup = |e: crate::error::Error| ServeError::Setup(e.to_string());
        let (sutro_url, xai_url) = match (&config.sutro_base_url, &config.xai_base_url) {
            (Some(sutro), Some(xai)) => (sutro.clone(), xai.clone()),
            _ => return Err(ServeError::Setup("an upstream URL is missing".into())),
        };
        let limits = Limits {
            max_body_bytes: config.max_upstream_body_bytes,
            max_in_flight: config.upstream_max_in_flight,
        };
        // Per gateway, not global: gateways sharing a process keep their series apart.
        let pipeline = MetricsPipeline::start(telemetry).map_err(ServeError::Setup)?;
        let metrics = pipeline.metrics();
        let sutro = SutroClient::new(sutro_url, config.retry, limits)
            .map_err(setup)?
            .with_metrics(metrics.clone());
        let xai = XaiClient::new(xai_url, config.retry, limits)
            .map_err(setup)?
            .with_metrics(metrics.clone());

        // One Redis handle for every shared concern that lives there (none without a URL).
        let redis =
            SharedRedis::from_config(&config).map_err(|e| ServeError::Setup(e.to_string()))?;
        let cache = cache::status_cache(&config, redis.as_ref(), &metrics);
        if let Some(redis) = redis.clone() {
            pipeline.observe(
                "batchgate.redis.up",
                "",
                "1 while the last Redis calls were answered, 0 while Redis is unreachable",
                move || Some(i64::from(redis.is_up())),
            );
        }
        // The upstreams' own team-wide limits, shared by the replicas through Redis.
        let sutro = sutro.with_budgets(Budgets::from_config("sutro", &config, redis.as_ref()));
        let xai = xai.with_budgets(Budgets::from_config("xai", &config, redis.as_ref()));
        let auth = AuthGate::new(config.auth_ttl, redis.clone());
        let rate_limits = RateLimitLayer::new(
            config.rate_limits.clone(),
            ratelimit::limiter(&config, redis.as_ref()),
        )
        .with_metrics(metrics.clone());
        let request_budget =
            RequestBudgetLayer::new(config.max_request_bytes_in_flight, config.max_request_bytes);
        let budget = request_budget.clone();
        pipeline.observe(
            "batchgate.request.in_flight",
            "By",
            "Request bytes held under max_request_bytes_in_flight (reported when that budget is on)",
            move || budget.in_flight_bytes().map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
        );

        let stop = CancellationToken::new();
        let idempotency = idempotency::store(&config, redis.as_ref());
        let records = records::store(redis.as_ref(), RECORD_TTL);
        let jobs = JobsService::new(
            sutro,
            config.clone(),
            Backends {
                idempotency: idempotency.clone(),
                records: records.clone(),
                watches: progress::hub(&config, redis.as_ref(), &metrics),
                cache: cache.clone(),
                auth: auth.clone(),
                metrics: metrics.clone(),
            },
            stop.child_token(),
        );
        let batches = BatchesService::new(
            xai,
            config.clone(),
            Backends {
                idempotency,
                records,
                watches: progress::hub(&config, redis.as_ref(), &metrics),
                cache,
                auth,
                metrics: metrics.clone(),
            },
            stop.child_token(),
        );

        let health = HealthReporter::new();
        let health_service = crate::health::service(&health, stop.child_token());
        health.set_serving::<JobServiceServer<JobsService>>().await;
        health
            .set_serving::<BatchServiceServer<BatchesService>>()
            .await;
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection()
            .build_v1()
            .map_err(|e| ServeError::Setup(format!("reflection: {e}")))?;
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .map_err(|e| ServeError::Setup(format!("reflection: {e}")))?;
        let job_service = JobServiceServer::new(jobs.clone())
            .max_decoding_message_size(config.max_request_bytes)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
            .send_compressed(tonic::codec::CompressionEncoding::Gzip);
        let batch_service = BatchServiceServer::new(batches.clone())
            .max_decoding_message_size(config.max_request_bytes)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
            .send_compressed(tonic::codec::CompressionEncoding::Gzip);

        // Read before binding: a bad certificate stops the start, not the first caller.
        let tls = match &config.tls {
            Some(files) => {
                let loaded = files.load().map_err(ServeError::Setup)?;
                tracing::info!(mutual = files.client_ca.is_some(), "TLS on the listener");
                Some((files.clone(), Arc::new(RwLock::new(loaded))))
            }
            None => None,
        };
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
        // Bound before anything is served: a taken admin port stops the start cleanly.
        let admin_listener = TcpListener::bind(config.admin_listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: config.admin_listen,
                source,
            })?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| ServeError::Bind {
                addr: config.admin_listen,
                source,
            })?;
        let router = Server::builder()
            .trace_fn(crate::telemetry::rpc::rpc_span)
            // Advertised in SETTINGS: a client's further calls wait on its side.
            .max_concurrent_streams(config.http2_max_concurrent_streams)
            .initial_stream_window_size(HTTP2_STREAM_WINDOW)
            .initial_connection_window_size(connection_window(config.http2_max_concurrent_streams))
            .accept_http1(true)
            // Outside grpc-web and the routes: a preflight is plain HTTP, answered here;
            // no layer at all (not a refusing one) when no origin is allowed.
            .layer(tower::util::option_layer(config.cors.layer()))
            .layer(tonic_web::GrpcWebLayer::new())
            // Inside grpc-web, which hides the status in its body; outside the decode-error
            // rewrite and the caller layer, so the span, metric and access line all see
            // the codes callers get.
            .layer(CallEndLayer::new(config.access_log, metrics.clone()))
            // Inside grpc-web, so its callers get the same codes as gRPC's.
            .layer(DecodeErrorsLayer)
            // Before every handler: a call without a good credential ends here.
            .layer(CallerLayer::new(Callers::from_config(&config)))
            // Inside the caller layer, whose tenant it limits; a pass-through when off.
            .layer(rate_limits)
            // Innermost, so only calls that are let in take from the shared byte budget.
            .layer(request_budget)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(job_service)
            .add_service(batch_service);
        // Without TCP_NODELAY small answers wait on Nagle's algorithm: ~40 ms stalls at
        // a few percent of calls under concurrency (docs/BENCHMARKS.md).
        let incoming = BackoffIncoming::new(TcpIncoming::from(listener).with_nodelay(Some(true)));
        let stopped = stop.clone();
        let served = match tls {
            None => tokio::spawn(async move {
                router
                    .serve_with_incoming_shutdown(incoming, stopped.cancelled_owned())
                    .await
                    .map_err(ServeError::from)
            }),
            Some((files, shared)) => {
                tls::spawn_reloader(files, shared.clone(), stop.child_token());
                let incoming = TlsIncoming::new(incoming, shared);
                tokio::spawn(async move {
                    router
                        .serve_with_incoming_shutdown(incoming, stopped.cancelled_owned())
                        .await
                        .map_err(ServeError::from)
                })
            }
        };
        let (draining, admin_stop) = (CancellationToken::new(), CancellationToken::new());
        let admin_state = AdminState {
            pipeline: pipeline.clone(),
            redis: redis.clone(),
            draining: draining.clone(),
        };
        let admin = serve_admin(admin_listener, admin_state, admin_stop.clone());
        tracing::info!(%addr, %admin_addr, "batchgate is serving");
        Ok(App {
            addr,
            admin_addr,
            draining,
            admin_stop,
            admin,
            metrics: pipeline,
            stop,
            served,
            health,
            drain_timeout: config.drain_timeout,
            simulator,
            jobs,
            batches,
        })
    }

    /// The address being served.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the admin port (`/metrics`, `/healthz`, `/readyz`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The built-in simulator, when no upstream was configured.
    pub fn simulator(&self) -> Option<&SimHandle> {
        self.simulator.as_ref()
    }

    /// Jobs and batches with a running upstream watcher.
    pub fn active_watches(&self) -> usize {
        self.jobs.active_watches() + self.batches.active_watches()
    }

    /// Serves until SIGTERM or SIGINT, then shuts down.
    pub async fn run_until_signal(self) -> Result<(), ServeError> {
        shutdown_signal().await;
        tracing::info!("shutdown signal received");
        self.shutdown().await
    }

    /// Graceful shutdown: health turns NOT_SERVING, open streams (health watches
    /// included, after their NOT_SERVING) end with UNAVAILABLE, new connections are
    /// refused, and calls in flight get `drain_timeout` to finish before they are cut.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        self.draining.cancel();
        self.health
            .set_not_serving::<JobServiceServer<JobsService>>()
            .await;
        self.health
            .set_not_serving::<BatchServiceServer<BatchesService>>()
            .await;
        self.health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        self.jobs.release_watches().await;
        self.batches.release_watches().await;
        self.stop.cancel();
        let result = match tokio::time::timeout(self.drain_timeout, &mut self.served).await {
            Ok(joined) => joined.map_err(|e| ServeError::Setup(format!("server task: {e}")))?,
            Err(_) => {
                tracing::warn!(timeout = ?self.drain_timeout, "drain timed out; cutting remaining calls");
                self.served.abort();
                Ok(())
            }
        };
        if let Some(simulator) = self.simulator.take() {
            simulator.shutdown().await;
        }
        // Scrapes answer until the very end, so the drain itself can be watched.
        self.admin_stop.cancel();
        if tokio::time::timeout(std::time::Duration::from_secs(1), &mut self.admin)
            .await
            .is_err()
        {
            self.admin.abort();
        }
        self.metrics.shutdown().await;
        result
    }
}

/// Starts the built-in simulator when an upstream has no URL, and points the
/// config at it (with its demo key unless a key is configured).
async fn start_simulator_for_gaps(config: &mut Config) -> Result<Option<SimHandle>, ServeError> {
    if config.sutro_base_url.is_some() && config.xai_base_url.is_some() {
        return Ok(None);
    }
    // Nothing real to spend: the README's first command works with no keys at all.
    if config.sutro_base_url.is_none() && config.xai_base_url.is_none() {
        config.admission.anonymous = true;
    }
    let handle = sim::start(SimConfig::default(), SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(|e| ServeError::Setup(format!("built-in simulator: {e}")))?;
    if config.sutro_base_url.is_none() {
        let base = normalize_base_url(&handle.sutro_base_url()).map_err(ServeError::Setup)?;
        tracing::info!(url = %base, "no Sutro URL configured: using the built-in simulator");
        config.sutro_base_url = Some(base);
        config
            .sutro_api_key
            .get_or_insert_with(|| Secret::new(sim::DEMO_API_KEY));
    }
    if config.xai_base_url.is_none() {
        let base = normalize_base_url(&handle.xai_base_url()).map_err(ServeError::Setup)?;
        tracing::info!(url = %base, "no xAI URL configured: using the built-in simulator");
        config.xai_base_url = Some(base);
        config
            .xai_api_key
            .get_or_insert_with(|| Secret::new(sim::XAI_DEMO_API_KEY));
    }
    Ok(Some(handle))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
