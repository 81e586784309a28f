//! The one `Config` of the gateway, resolved from flags > env (`BATCHGATE_*`) > TOML file > defaults.
//! Each setting is declared once in `ConfigLayer`, whose doc comments are the `--help` text.

use std::net::SocketAddr;
use std::time::Duration;

use url::Url;

use crate::cors::CorsOrigins;
use crate::ratelimit::RateLimits;
use crate::shared_redis::RedisTarget;
use crate::tenant::{Admission, Secret, Tenants};
use crate::tls::TlsFiles;
use crate::upstream::base_url::normalize_base_url;

mod layer;
mod print;
#[cfg(test)]
mod tests;

pub use layer::{ConfigLayer, LogFormat};

/// Request bytes all calls may hold at once: four messages of the default maximum size.
const DEFAULT_REQUEST_BYTES_IN_FLIGHT: usize = 256 << 20;

/// A setting that cannot be used, with the reason.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// Upstream retry policy for idempotent calls.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts, first one included.
    pub max_attempts: u32,
    /// First backoff.
    pub base_delay: Duration,
    /// Longest backoff.
    pub max_delay: Duration,
}

/// The resolved configuration the gateway runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where gRPC is served.
    pub listen: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub admin_listen: SocketAddr,
    /// Sutro `/v1` base URL; `None` runs the built-in simulator.
    pub sutro_base_url: Option<Url>,
    /// The managed Sutro key.
    pub sutro_api_key: Option<Secret>,
    /// xAI `/v1` base URL; `None` runs the built-in simulator.
    pub xai_base_url: Option<Url>,
    /// The managed xAI key.
    pub xai_api_key: Option<Secret>,
    /// Byte budget of one upstream add-requests call.
    pub xai_add_chunk_bytes: usize,
    /// Most requests in one upstream add-requests call.
    pub xai_add_chunk_requests: usize,
    /// Cap on one upstream call.
    pub upstream_timeout: Duration,
    /// Retries of idempotent calls.
    pub retry: RetryPolicy,
    /// WatchJob heartbeat interval.
    pub watch_heartbeat: Duration,
    /// WatchJob status poll interval.
    pub watch_poll: Duration,
    /// Least time between two changes a resource's watchers are sent.
    pub watch_min_interval: Duration,
    /// Change messages per second to all watchers of one resource on this replica.
    pub watch_fanout_per_second: u32,
    /// Longest watch of one job.
    pub watch_max: Duration,
    /// Largest gRPC request accepted.
    pub max_request_bytes: usize,
    /// Largest upstream JSON answer read into memory.
    pub max_upstream_body_bytes: usize,
    /// Target GetJobResults message size.
    pub results_chunk_bytes: usize,
    /// How long request ids are remembered.
    pub idempotency_ttl: Duration,
    /// Request bytes held by all calls at once (0: unbudgeted).
    pub max_request_bytes_in_flight: usize,
    /// Streams a client may open on one HTTP/2 connection.
    pub http2_max_concurrent_streams: u32,
    /// Upstream requests in flight per upstream.
    pub upstream_max_in_flight: usize,
    /// Shutdown drain limit.
    pub drain_timeout: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// Whether each call ends with an access line.
    pub access_log: bool,
    /// Which web pages may call with gRPC-Web from another origin.
    pub cors: CorsOrigins,
    /// OTLP endpoint.
    pub otlp_endpoint: Option<String>,
    /// Redis for shared state; `None`: in-process backends.
    pub redis: Option<RedisTarget>,
    /// Bound on one Redis call.
    pub redis_timeout: Duration,
    /// Cache freshness of running or queued states.
    pub cache_live_ttl: Duration,
    /// Cache freshness of terminal states.
    pub cache_final_ttl: Duration,
    /// How long a credential's validity is cached.
    pub auth_ttl: Duration,
    /// Lifetime of the upstream-watcher lease.
    pub watch_lease: Duration,
    /// How long a watcher outlives its last subscriber.
    pub watch_grace: Duration,
    /// Who may call: the tenants of managed mode, or whether anonymous callers may
    /// use the gateway's own keys.
    pub admission: Admission,
    /// Caller rate limits and the stream cap (all off by default).
    pub rate_limits: RateLimits,
    /// The upstreams' own team-wide limits (unset: not kept).
    pub budgets: UpstreamBudgets,
    /// TLS on the listener (and mutual TLS with a client CA); `None`: plain TCP.
    pub tls: Option<TlsFiles>,
}

/// The upstreams' own team-wide limits the gateway keeps for all its callers, as
/// sustained rates (one call per interval, no burst, so no window is ever overrun).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UpstreamBudgets {
    /// xAI batch creations per second.
    pub xai_creates_per_second: Option<f64>,
    /// xAI add-requests calls per second (the per-30 s limit ÷ 30).
    pub xai_adds_per_second: Option<f64>,
    /// Sutro job creations per second.
    pub sutro_creates_per_second: Option<f64>,
}

/// The largest message the gateway ever sends (gRPC's common default receive limit).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// A setting `ConfigLayer::defaults()` fills, so `None` here is a bug there; the
/// unit tests resolve the bare defaults, which would fail on it.
macro_rules! filled {
    ($layer:ident . $field:ident) => {
        $layer.$field.ok_or_else(|| {
            ConfigError(concat!(stringify!($field), " has no value and no default").into())
        })?
    };
}

impl Config {
    /// Resolves a merged layer into a config, applying defaults and checking values.
    pub fn resolve(layer: ConfigLayer) -> Result<Config, ConfigError> {
        // Defaults are written once, in `ConfigLayer::defaults()`.
        let layer = layer.over(ConfigLayer::defaults());
        let ms = Duration::from_millis;
        let sutro_base_url = layer
            .sutro_base_url
            .as_deref()
            .map(|raw| {
                normalize_base_url(raw).map_err(|e| ConfigError(format!("sutro_base_url: {e}")))
            })
            .transpose()?;
        let xai_base_url = layer
            .xai_base_url
            .as_deref()
            .map(|raw| {
                normalize_base_url(raw).map_err(|e| ConfigError(format!("xai_base_url: {e}")))
            })
            .transpose()?;
        let xai_add_chunk_requests = filled!(layer.xai_add_chunk_requests);
        if xai_add_chunk_requests == 0 {
            return Err(ConfigError(
                "xai_add_chunk_requests must be at least 1".into(),
            ));
        }
        let results_chunk_bytes = filled!(layer.results_chunk_bytes);
        if !(1024..=MAX_MESSAGE_BYTES / 2).contains(&results_chunk_bytes) {
            return Err(ConfigError(format!(
                "results_chunk_bytes must be between 1024 and {}",
                MAX_MESSAGE_BYTES / 2
            )));
        }
        let redis = RedisTarget::from_settings(
            layer.redis_url.as_deref(),
            layer.redis_cluster_nodes.as_deref(),
        )
        .map_err(ConfigError)?;
        let upstream_timeout = ms(filled!(layer.upstream_timeout_ms));
        let idempotency_ttl = Duration::from_secs(filled!(layer.idempotency_ttl_secs));
        // A Pending record that expired mid-create would let a racing replica create again.
        let create_bound = upstream_timeout + crate::idempotency::PENDING_GRACE;
        if idempotency_ttl < create_bound {
            return Err(ConfigError(format!(
                "idempotency_ttl_secs ({}) must be at least upstream_timeout_ms plus {} s of grace ({} s): a keyed create may run that long, and its record must outlive it",
                idempotency_ttl.as_secs(),
                crate::idempotency::PENDING_GRACE.as_secs(),
                create_bound.as_secs_f64().ceil()
            )));
        }
        let http2_max_concurrent_streams = filled!(layer.http2_max_concurrent_streams);
        if http2_max_concurrent_streams == 0 {
            return Err(ConfigError(
                "http2_max_concurrent_streams must be at least 1".into(),
            ));
        }
        let upstream_max_in_flight = filled!(layer.upstream_max_in_flight);
        if upstream_max_in_flight == 0 {
            return Err(ConfigError(
                "upstream_max_in_flight must be at least 1".into(),
            ));
        }
        let retry_max_attempts = filled!(layer.retry_max_attempts);
        if retry_max_attempts == 0 {
            return Err(ConfigError("retry_max_attempts must be at least 1".into()));
        }
        let rate_limits = RateLimits::resolve(
            layer.rate_limits.as_ref(),
            layer.tenant_limits.as_ref(),
            layer.max_streams_per_tenant,
            filled!(layer.rate_limit_redis_down),
            filled!(layer.rate_limit_replicas),
        )
        .map_err(ConfigError)?;
        let tls = match (layer.tls_cert, layer.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert,
                key,
                client_ca: layer.tls_client_ca,
            }),
            (None, None) if layer.tls_client_ca.is_some() => {
                return Err(ConfigError(
                    "tls_client_ca needs tls_cert and tls_key: mutual TLS is TLS first".into(),
                ));
            }
            (None, None) => None,
            _ => {
                return Err(ConfigError(
                    "tls_cert and tls_key go together: set both for TLS, or neither for plain TCP"
                        .into(),
                ));
            }
        };
        Ok(Config {
            tls,
            listen: filled!(layer.listen),
            // OpenTelemetry's Prometheus exporters' customary port.
            admin_listen: filled!(layer.admin_listen),
            sutro_base_url,
            sutro_api_key: layer
                .sutro_api_key
                .filter(|k| !k.is_empty())
                .map(Secret::new),
            xai_base_url,
            xai_api_key: layer.xai_api_key.filter(|k| !k.is_empty()).map(Secret::new),
            xai_add_chunk_bytes: filled!(layer.xai_add_chunk_bytes).max(1024),
            xai_add_chunk_requests,
            upstream_timeout,
            retry: RetryPolicy {
                max_attempts: retry_max_attempts,
                base_delay: ms(filled!(layer.retry_base_delay_ms)),
                max_delay: ms(filled!(layer.retry_max_delay_ms)),
            },
            watch_heartbeat: ms(filled!(layer.watch_heartbeat_ms).max(10)),
            watch_poll: ms(filled!(layer.watch_poll_ms).max(10)),
            watch_min_interval: ms(filled!(layer.watch_min_interval_ms)),
            watch_fanout_per_second: filled!(layer.watch_fanout_per_second),
            watch_max: Duration::from_secs(filled!(layer.watch_max_secs)),
            max_request_bytes: filled!(layer.max_request_bytes),
            max_upstream_body_bytes: filled!(layer.max_upstream_body_bytes),
            results_chunk_bytes,
            idempotency_ttl,
            max_request_bytes_in_flight: filled!(layer.max_request_bytes_in_flight),
            http2_max_concurrent_streams,
            upstream_max_in_flight,
            drain_timeout: ms(filled!(layer.drain_timeout_ms)),
            log_format: filled!(layer.log_format),
            access_log: filled!(layer.access_log),
            cors: CorsOrigins::resolve(layer.cors_allowed_origins.as_deref().unwrap_or_default())?,
            otlp_endpoint: layer.otlp_endpoint.filter(|e| !e.is_empty()),
            redis,
            redis_timeout: ms(filled!(layer.redis_timeout_ms).max(1)),
            cache_live_ttl: ms(filled!(layer.cache_live_ttl_ms)),
            cache_final_ttl: Duration::from_secs(filled!(layer.cache_final_ttl_secs)),
            auth_ttl: Duration::from_secs(filled!(layer.auth_ttl_secs)),
            // A lease shorter than a few Redis round trips would lapse while renewed.
            watch_lease: ms(filled!(layer.watch_lease_ms).max(100)),
            watch_grace: ms(filled!(layer.watch_grace_ms)),
            admission: Admission {
                tenants: layer
                    .tenants_file
                    .as_deref()
                    .map(Tenants::from_file)
                    .transpose()
                    .map_err(ConfigError)?,
                anonymous: filled!(layer.allow_anonymous),
            },
            rate_limits,
            budgets: UpstreamBudgets {
                xai_creates_per_second: rate(filled!(layer.xai_creates_per_second))?,
                xai_adds_per_second: rate(filled!(layer.xai_add_calls_per_30s))?
                    .map(|per_30s| per_30s / 30.0),
                sutro_creates_per_second: rate(filled!(layer.sutro_creates_per_second))?,
            },
        })
    }

    /// Defaults only: the built-in simulator, no keys.
    pub fn embedded() -> Config {
        // The defaults are all valid (a unit test resolves them), so this cannot fail.
        Config::resolve(ConfigLayer::default()).unwrap_or_else(|e| unreachable!("{e}"))
    }
}

/// A budget's rate: 0 is off, a negative or non-finite one is a mistake.
fn rate(value: f64) -> Result<Option<f64>, ConfigError> {
    if !value.is_finite() || value < 0.0 {
        return Err(ConfigError(format!(
            "an upstream budget must be a rate of 0 (off) or more, not {value}"
        )));
    }
    Ok((value > 0.0).then_some(value))
}
