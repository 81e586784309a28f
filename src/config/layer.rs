//! One layer of settings (the command line with env fallbacks, or the TOML file), how
//! layers merge, and the defaults under them; each field's doc comment is its `--help`.

use std::net::SocketAddr;
use std::path::Path;

use std::collections::BTreeMap;

use crate::ratelimit::{ClassSettings, RedisDown};

use super::{ConfigError, DEFAULT_REQUEST_BYTES_IN_FLIGHT};

/// One layer of settings: the command line (with env fallbacks) or the TOML file.
/// Every field is optional so that layers can be merged; the defaults are the lowest
/// layer, [`ConfigLayer::defaults`].
#[derive(Debug, Clone, Default, clap::Args, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigLayer {
    /// Address to serve gRPC on [default: 127.0.0.1:50051].
    #[arg(long, env = "BATCHGATE_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Address of the admin HTTP port: `/metrics` (Prometheus text), `/healthz` and
    /// `/readyz`; port 0 picks a free one [default: 127.0.0.1:9464].
    #[arg(long, env = "BATCHGATE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// Sutro deployment URL, as an origin or `<origin>/v1`. Unset: the built-in
    /// simulator is started and used, so the gateway runs with no keys at all.
    #[arg(long, env = "BATCHGATE_SUTRO_BASE_URL")]
    pub sutro_base_url: Option<String>,

    /// The gateway's own Sutro API key, used for callers that send no
    /// `authorization` metadata. Never logged.
    #[arg(long, env = "BATCHGATE_SUTRO_API_KEY", hide_env_values = true)]
    pub sutro_api_key: Option<String>,

    /// xAI API URL, as an origin or `<origin>/v1` (e.g. `https://api.x.ai/v1`). Unset:
    /// the built-in simulator is started and used.
    #[arg(long, env = "BATCHGATE_XAI_BASE_URL")]
    pub xai_base_url: Option<String>,

    /// The gateway's own xAI API key, used for callers that send no
    /// `authorization` metadata. Never logged.
    #[arg(long, env = "BATCHGATE_XAI_API_KEY", hide_env_values = true)]
    pub xai_api_key: Option<String>,

    /// Byte budget of one upstream add-requests call; larger AddBatchRequests calls
    /// are split [default: 20971520].
    #[arg(long, env = "BATCHGATE_XAI_ADD_CHUNK_BYTES")]
    pub xai_add_chunk_bytes: Option<usize>,

    /// Most requests in one upstream add-requests call [default: 1000].
    #[arg(long, env = "BATCHGATE_XAI_ADD_CHUNK_REQUESTS")]
    pub xai_add_chunk_requests: Option<usize>,

    /// Upper bound on any one upstream call, in milliseconds; callers' shorter
    /// `grpc-timeout`s win [default: 30000].
    #[arg(long, env = "BATCHGATE_UPSTREAM_TIMEOUT_MS")]
    pub upstream_timeout_ms: Option<u64>,

    /// Attempts per idempotent upstream call, first one included [default: 4].
    /// Creates are never retried.
    #[arg(long, env = "BATCHGATE_RETRY_MAX_ATTEMPTS")]
    pub retry_max_attempts: Option<u32>,

    /// First retry backoff in milliseconds, doubled per attempt with full jitter [default: 100].
    #[arg(long, env = "BATCHGATE_RETRY_BASE_DELAY_MS")]
    pub retry_base_delay_ms: Option<u64>,

    /// Longest retry backoff in milliseconds [default: 2000].
    #[arg(long, env = "BATCHGATE_RETRY_MAX_DELAY_MS")]
    pub retry_max_delay_ms: Option<u64>,

    /// WatchJob heartbeat interval while nothing changes, in milliseconds [default: 10000].
    #[arg(long, env = "BATCHGATE_WATCH_HEARTBEAT_MS")]
    pub watch_heartbeat_ms: Option<u64>,

    /// How often a watched job's status is read while it waits to start or its
    /// progress stream is silent, in milliseconds (one poller per job, whatever
    /// the number of watchers) [default: 1000].
    #[arg(long, env = "BATCHGATE_WATCH_POLL_MS")]
    pub watch_poll_ms: Option<u64>,

    /// Least time between two changes a resource's watchers are sent, in milliseconds;
    /// the changes in between are merged (the latest wins), FINAL never waits. Bounds
    /// what a fast upstream costs per watcher; 0 sends every change [default: 100].
    #[arg(long, env = "BATCHGATE_WATCH_MIN_INTERVAL_MS")]
    pub watch_min_interval_ms: Option<u64>,

    /// Change messages per second one replica sends all watchers of one resource
    /// together; with more watchers than this allows at `watch_min_interval_ms`, a change
    /// goes out less often (the FINAL always at once); 0: no budget [default: 10000].
    #[arg(long, env = "BATCHGATE_WATCH_FANOUT_PER_SECOND")]
    pub watch_fanout_per_second: Option<u32>,

    /// Longest a single job is watched before WatchJob gives up, in seconds [default: 172800].
    #[arg(long, env = "BATCHGATE_WATCH_MAX_SECS")]
    pub watch_max_secs: Option<u64>,

    /// Largest gRPC request accepted, in bytes (creates carry their inputs) [default: 67108864].
    #[arg(long, env = "BATCHGATE_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<usize>,

    /// Largest upstream JSON answer read into memory, in bytes; a larger one (a huge
    /// results body) is refused with a pointer to GetJobResultsUrl [default: 536870912].
    #[arg(long, env = "BATCHGATE_MAX_UPSTREAM_BODY_BYTES")]
    pub max_upstream_body_bytes: Option<usize>,

    /// Target size of one GetJobResults message, in bytes, from 1024 to 2097152 (2 MiB)
    /// [default: 1048576, 1 MiB].
    #[arg(long, env = "BATCHGATE_RESULTS_CHUNK_BYTES")]
    pub results_chunk_bytes: Option<usize>,

    /// How long a CreateJob `request_id` is remembered, in seconds [default: 86400].
    #[arg(long, env = "BATCHGATE_IDEMPOTENCY_TTL_SECS")]
    pub idempotency_ttl_secs: Option<u64>,

    /// Request bytes all calls together may hold in memory; a call reads its body only
    /// once its message fits, and one larger than the whole budget is refused; 0: no
    /// budget [default: 268435456, 256 MiB].
    #[arg(long, env = "BATCHGATE_MAX_REQUEST_BYTES_IN_FLIGHT")]
    pub max_request_bytes_in_flight: Option<usize>,

    /// Most concurrent HTTP/2 streams (calls) a client may open on one connection,
    /// advertised in the server's SETTINGS; further calls wait in the client [default: 1000].
    #[arg(long, env = "BATCHGATE_HTTP2_MAX_CONCURRENT_STREAMS")]
    pub http2_max_concurrent_streams: Option<u32>,

    /// Most upstream HTTP requests in flight at once per upstream (Sutro, xAI) on this
    /// replica, and most idle connections kept to it; further calls queue in arrival
    /// order until their own deadline [default: 64].
    #[arg(long, env = "BATCHGATE_UPSTREAM_MAX_IN_FLIGHT")]
    pub upstream_max_in_flight: Option<usize>,

    /// How long shutdown waits for calls in flight, in milliseconds [default: 10000].
    #[arg(long, env = "BATCHGATE_DRAIN_TIMEOUT_MS")]
    pub drain_timeout_ms: Option<u64>,

    /// Log format: `text` or `json` [default: text].
    #[arg(long, env = "BATCHGATE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,

    /// One `info` line per call when it ends (method, gRPC code, duration, tenant,
    /// upstream calls, cache result) [default: true].
    #[arg(long, env = "BATCHGATE_ACCESS_LOG", num_args = 0..=1, default_missing_value = "true")]
    pub access_log: Option<bool>,

    /// Web origins whose pages may call the gateway with gRPC-Web (CORS), comma-separated
    /// `scheme://host[:port]`, e.g. `https://console.example.com`; `*` alone lets every
    /// page call. Unset or empty: no cross-origin access, so browsers refuse other
    /// origins' pages [default: none].
    #[arg(long, env = "BATCHGATE_CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Option<Vec<String>>,

    /// OTLP endpoint for traces and metrics, e.g. `http://otel-collector:4317`: a shorthand
    /// for `OTEL_EXPORTER_OTLP_ENDPOINT`. Unset (and no `OTEL_EXPORTER_OTLP_*ENDPOINT`): no export.
    #[arg(long, env = "BATCHGATE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Redis for state shared by replicas: `redis://[:password@]host[:port][/db]`, or
    /// `rediss://…` for TLS. Unset (and no cluster nodes): in-process state only,
    /// so run one replica. Never logged.
    #[arg(long, env = "BATCHGATE_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Redis Cluster seed nodes, comma-separated `host:port` or `redis[s]://` URLs (a
    /// password goes in each URL); instead of `redis_url`. Never logged.
    #[arg(long, env = "BATCHGATE_REDIS_CLUSTER_NODES", hide_env_values = true)]
    pub redis_cluster_nodes: Option<String>,

    /// Bound on any one Redis call, in milliseconds; past it the gateway goes on without
    /// Redis (reads go upstream) [default: 250].
    #[arg(long, env = "BATCHGATE_REDIS_TIMEOUT_MS")]
    pub redis_timeout_ms: Option<u64>,

    /// How long a running or queued status is served from the cache, in milliseconds
    /// [default: 1000].
    #[arg(long, env = "BATCHGATE_CACHE_LIVE_TTL_MS")]
    pub cache_live_ttl_ms: Option<u64>,

    /// How long a terminal status is served from the cache, in seconds [default: 3600].
    #[arg(long, env = "BATCHGATE_CACHE_FINAL_TTL_SECS")]
    pub cache_final_ttl_secs: Option<u64>,

    /// How long a credential the upstream accepted is trusted for cached answers, in
    /// seconds; a key revoked upstream stops getting them within this time [default: 60].
    #[arg(long, env = "BATCHGATE_AUTH_TTL_SECS")]
    pub auth_ttl_secs: Option<u64>,

    /// Lifetime of the Redis lease that elects the one replica watching a resource
    /// upstream, in milliseconds; renewed at a third of it, taken over when it lapses
    /// [default: 5000].
    #[arg(long, env = "BATCHGATE_WATCH_LEASE_MS")]
    pub watch_lease_ms: Option<u64>,

    /// How long an upstream watcher keeps going after the last subscriber in the
    /// cluster left, in milliseconds [default: 5000].
    #[arg(long, env = "BATCHGATE_WATCH_GRACE_MS")]
    pub watch_grace_ms: Option<u64>,

    /// Managed mode: a TOML file of `[[tenant]]` tables (`name`, `token_sha256` and/or
    /// `client_cert_subject` / `client_cert_san`, optional `services`); callers send
    /// `authorization: Bearer <gateway token>` or a client certificate (mutual TLS) and
    /// the gateway calls upstream with its own keys. Unset: callers bring their own
    /// upstream keys (passthrough).
    #[arg(long, env = "BATCHGATE_TENANTS_FILE")]
    pub tenants_file: Option<std::path::PathBuf>,

    /// Passthrough mode: callers that send no credentials use the gateway's own
    /// upstream key, as tenant `anonymous` [default: false; true on the built-in
    /// simulator].
    #[arg(long, env = "BATCHGATE_ALLOW_ANONYMOUS", num_args = 0..=1, default_missing_value = "true")]
    pub allow_anonymous: Option<bool>,
    /// Caller rate limits per method class (create, read, watch, results), for every
    /// tenant; TOML only: `[rate_limits.read]` with `per_second = 50` and `burst = 10`
    /// (burst defaults to one second's worth). Unset: unlimited.
    #[arg(skip)]
    pub rate_limits: Option<ClassSettings>,

    /// Per-tenant rate limits, class by class over `rate_limits`; TOML only:
    /// `[tenant_limits."<tenant id>".read]` with `per_second` and `burst`.
    #[arg(skip)]
    pub tenant_limits: Option<BTreeMap<String, ClassSettings>>,

    /// Most streams (WatchJob, WatchBatch, GetJobResults, StreamBatchResults) one tenant
    /// may hold open on one replica. Unset: no cap.
    #[arg(long, env = "BATCHGATE_MAX_STREAMS_PER_TENANT")]
    pub max_streams_per_tenant: Option<u32>,

    /// What rate limits do while Redis is unreachable: `open` admits every call, `local`
    /// limits in each replica at rate / `rate_limit_replicas` [default: local].
    #[arg(long, env = "BATCHGATE_RATE_LIMIT_REDIS_DOWN")]
    pub rate_limit_redis_down: Option<RedisDown>,

    /// How many replicas share the rate limits, for the `local` fallback's share [default: 1].
    #[arg(long, env = "BATCHGATE_RATE_LIMIT_REPLICAS")]
    pub rate_limit_replicas: Option<u32>,

    /// xAI's batch creations per second for the whole team, kept across replicas
    /// (with Redis); calls wait their turn within their deadline. 0 turns it off
    /// [default: 2, xAI's documented limit].
    #[arg(long, env = "BATCHGATE_XAI_CREATES_PER_SECOND")]
    pub xai_creates_per_second: Option<f64>,

    /// xAI's add-requests calls per 30 s for the whole team (one every 30 s ÷ this),
    /// kept across replicas. 0 turns it off [default: 1000, xAI's documented limit].
    #[arg(long, env = "BATCHGATE_XAI_ADD_CALLS_PER_30S")]
    pub xai_add_calls_per_30s: Option<f64>,

    /// Sutro job creations per second for the whole team, kept across replicas
    /// [default: 0, off: Sutro documents no such limit].
    #[arg(long, env = "BATCHGATE_SUTRO_CREATES_PER_SECOND")]
    pub sutro_creates_per_second: Option<f64>,

    /// TLS on the listener: PEM certificate chain (leaf first); needs `tls_key`.
    /// Re-read when it changes, for new connections. Unset: plain TCP.
    #[arg(long, env = "BATCHGATE_TLS_CERT")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// TLS on the listener: PEM private key of `tls_cert`; needs `tls_cert`.
    #[arg(long, env = "BATCHGATE_TLS_KEY")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Mutual TLS: PEM bundle of the CAs a client certificate must chain to; a client
    /// without such a certificate fails the handshake. In managed mode a tenant may be
    /// named by its certificate (`client_cert_subject`, `client_cert_san`). Needs TLS.
    #[arg(long, env = "BATCHGATE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<std::path::PathBuf>,
}

/// How log lines are written.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Deserialize,
    serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

macro_rules! merge_layers {
    ($high:expr, $low:expr, $($field:ident),* $(,)?) => {
        ConfigLayer { $($field: $high.$field.or($low.$field),)* }
    };
}

impl ConfigLayer {
    /// This layer, with gaps filled from `lower`.
    pub fn over(self, lower: ConfigLayer) -> ConfigLayer {
        merge_layers!(
            self,
            lower,
            listen,
            admin_listen,
            sutro_base_url,
            sutro_api_key,
            xai_base_url,
            xai_api_key,
            xai_add_chunk_bytes,
            xai_add_chunk_requests,
            upstream_timeout_ms,
            retry_max_attempts,
            retry_base_delay_ms,
            retry_max_delay_ms,
            watch_heartbeat_ms,
            watch_poll_ms,
            watch_min_interval_ms,
            watch_fanout_per_second,
            watch_max_secs,
            max_request_bytes,
            max_upstream_body_bytes,
            results_chunk_bytes,
            idempotency_ttl_secs,
            max_request_bytes_in_flight,
            http2_max_concurrent_streams,
            upstream_max_in_flight,
            drain_timeout_ms,
            log_format,
            access_log,
            cors_allowed_origins,
            otlp_endpoint,
            redis_url,
            redis_cluster_nodes,
            redis_timeout_ms,
            cache_live_ttl_ms,
            cache_final_ttl_secs,
            auth_ttl_secs,
            watch_lease_ms,
            watch_grace_ms,
            tenants_file,
            allow_anonymous,
            rate_limits,
            xai_creates_per_second,
            xai_add_calls_per_30s,
            sutro_creates_per_second,
            tenant_limits,
            max_streams_per_tenant,
            rate_limit_redis_down,
            rate_limit_replicas,
            tls_cert,
            tls_key,
            tls_client_ca,
        )
    }

    /// Reads a TOML file whose keys are this struct's field names.
    pub fn from_toml_file(path: &Path) -> Result<ConfigLayer, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
    }

    /// Every setting that has a default, at its default: the one place defaults are
    /// written. [`Config::resolve`] puts it under every layer; each flag's `--help`
    /// repeats its value (a unit test keeps the two in step).
    pub fn defaults() -> ConfigLayer {
        ConfigLayer {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 50051))),
            admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            xai_add_chunk_bytes: Some(20 * 1024 * 1024),
            xai_add_chunk_requests: Some(1000),
            upstream_timeout_ms: Some(30_000),
            retry_max_attempts: Some(4),
            retry_base_delay_ms: Some(100),
            retry_max_delay_ms: Some(2_000),
            watch_heartbeat_ms: Some(10_000),
            watch_poll_ms: Some(1_000),
            watch_min_interval_ms: Some(100),
            watch_fanout_per_second: Some(10_000),
            watch_max_secs: Some(48 * 3600),
            max_request_bytes: Some(64 * 1024 * 1024),
            max_upstream_body_bytes: Some(512 * 1024 * 1024),
            results_chunk_bytes: Some(1024 * 1024),
            idempotency_ttl_secs: Some(86_400),
            max_request_bytes_in_flight: Some(DEFAULT_REQUEST_BYTES_IN_FLIGHT),
            http2_max_concurrent_streams: Some(1000),
            upstream_max_in_flight: Some(64),
            drain_timeout_ms: Some(10_000),
            log_format: Some(LogFormat::Text),
            access_log: Some(true),
            redis_timeout_ms: Some(250),
            cache_live_ttl_ms: Some(1_000),
            cache_final_ttl_secs: Some(3_600),
            auth_ttl_secs: Some(60),
            watch_lease_ms: Some(5_000),
            watch_grace_ms: Some(5_000),
            allow_anonymous: Some(false),
            rate_limit_redis_down: Some(RedisDown::Local),
            rate_limit_replicas: Some(1),
            xai_creates_per_second: Some(2.0),
            xai_add_calls_per_30s: Some(1000.0),
            sutro_creates_per_second: Some(0.0),
            ..ConfigLayer::default()
        }
    }

    /// Every setting's TOML key, in declaration order: the flags' and the TOML-only ones.
    pub fn keys() -> Vec<String> {
        use clap::Args;
        let command = ConfigLayer::augment_args(clap::Command::new("batchgate"));
        let mut keys: Vec<String> = command
            .get_arguments()
            .map(|arg| arg.get_id().to_string())
            .collect();
        keys.extend(["rate_limits".into(), "tenant_limits".into()]);
        keys
    }
}
