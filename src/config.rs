//! The one `Config` of the gateway, resolved from flags > env (`BATCHGATE_*`) > TOML file > defaults.
//! Each setting is declared once in `ConfigLayer`, whose doc comments are the `--help` text.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use url::Url;

use std::collections::BTreeMap;

use crate::cors::CorsOrigins;
use crate::ratelimit::{ClassSettings, RateLimits, RedisDown};
use crate::shared_redis::{RedisTarget, RedisUrl};
use crate::tenant::{Admission, Secret, Tenants};
use crate::tls::TlsFiles;
use crate::upstream::base_url::normalize_base_url;

/// One layer of settings: the command line (with env fallbacks) or the TOML file.
/// Every field is optional so that layers can be merged; defaults live in [`Config`].
/// Request bytes all calls may hold at once: four messages of the default maximum size.
const DEFAULT_REQUEST_BYTES_IN_FLIGHT: usize = 256 << 20;

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

    /// Every setting that has a default, at its default: [`Config::resolve`] of this
    /// layer is [`Config::embedded`] (a unit test keeps the two in step).
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

    /// What `serve` runs with, as a layer: this (merged) layer over the defaults, with
    /// the base URLs as `config` (its resolution) normalized them, and `allow_anonymous`
    /// on when both upstreams are the built-in simulator, as `serve` makes it.
    pub fn effective(self, config: &Config) -> ConfigLayer {
        let mut layer = self.over(ConfigLayer::defaults());
        layer.sutro_base_url = config.sutro_base_url.as_ref().map(Url::to_string);
        layer.xai_base_url = config.xai_base_url.as_ref().map(Url::to_string);
        if layer.sutro_base_url.is_none() && layer.xai_base_url.is_none() {
            layer.allow_anonymous = Some(true);
        }
        layer
    }

    /// This layer as a TOML file `--config` reads back, with no secret in it: the API
    /// keys and a Redis URL with a password are left out, and named in a comment only
    /// (a Redis URL with its password as `***`). Unset settings are listed as comments.
    pub fn to_redacted_toml(&self) -> Result<String, ConfigError> {
        let mut shown = self.clone();
        let mut notes = Vec::new();
        for (name, key) in [
            ("sutro_api_key", shown.sutro_api_key.take()),
            ("xai_api_key", shown.xai_api_key.take()),
        ] {
            if key.is_some_and(|k| !k.is_empty()) {
                notes.push(format!("# {name} is set (not shown)"));
            }
        }
        if let Some(url) = shown.redis_url.take() {
            match RedisUrl::parse(&url) {
                Ok(parsed) if parsed.password().is_some() => notes.push(format!(
                    "# redis_url = \"{}\" (set; its password is not shown)",
                    parsed.redacted()
                )),
                // A URL that does not parse never resolves, so nothing prints it.
                Ok(_) => shown.redis_url = Some(url),
                Err(_) => notes.push("# redis_url is set (not shown)".into()),
            }
        }
        if let Some(nodes) = shown.redis_cluster_nodes.take() {
            let parsed: Result<Vec<RedisUrl>, String> = nodes
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(RedisUrl::parse)
                .collect();
            match parsed {
                Ok(urls) if urls.iter().any(|u| u.password().is_some()) => {
                    let redacted: Vec<String> = urls.iter().map(RedisUrl::redacted).collect();
                    notes.push(format!(
                        "# redis_cluster_nodes = \"{}\" (set; passwords are not shown)",
                        redacted.join(",")
                    ));
                }
                Ok(_) => shown.redis_cluster_nodes = Some(nodes),
                Err(_) => notes.push("# redis_cluster_nodes is set (not shown)".into()),
            }
        }
        let body = toml::to_string(&shown)
            .map_err(|e| ConfigError(format!("cannot write the settings as TOML: {e}")))?;
        let table: toml::Table = toml::from_str(&body)
            .map_err(|e| ConfigError(format!("cannot read back the settings' TOML: {e}")))?;
        let secret = |name: &str| notes.iter().any(|n| n.starts_with(&format!("# {name} ")));
        let unset: Vec<String> = Self::keys()
            .into_iter()
            .filter(|k| !table.contains_key(k) && !secret(k))
            .map(|k| match k.as_str() {
                "sutro_base_url" | "xai_base_url" => {
                    format!("# {k}: unset (the built-in simulator)")
                }
                _ => format!("# {k}: unset"),
            })
            .collect();
        let mut out = String::from(
            "# The settings `batchgate serve` would run with, as a file for --config.\n",
        );
        for line in notes.iter().chain(&unset) {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str(&body);
        Ok(out)
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

impl Config {
    /// Resolves a merged layer into a config, applying defaults and checking values.
    pub fn resolve(layer: ConfigLayer) -> Result<Config, ConfigError> {
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
        let xai_add_chunk_requests = layer.xai_add_chunk_requests.unwrap_or(1000);
        if xai_add_chunk_requests == 0 {
            return Err(ConfigError(
                "xai_add_chunk_requests must be at least 1".into(),
            ));
        }
        let results_chunk_bytes = layer.results_chunk_bytes.unwrap_or(1024 * 1024);
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
        let upstream_timeout = ms(layer.upstream_timeout_ms.unwrap_or(30_000));
        let idempotency_ttl = Duration::from_secs(layer.idempotency_ttl_secs.unwrap_or(86_400));
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
        let http2_max_concurrent_streams = layer.http2_max_concurrent_streams.unwrap_or(1000);
        if http2_max_concurrent_streams == 0 {
            return Err(ConfigError(
                "http2_max_concurrent_streams must be at least 1".into(),
            ));
        }
        let upstream_max_in_flight = layer.upstream_max_in_flight.unwrap_or(64);
        if upstream_max_in_flight == 0 {
            return Err(ConfigError(
                "upstream_max_in_flight must be at least 1".into(),
            ));
        }
        let retry_max_attempts = layer.retry_max_attempts.unwrap_or(4);
        if retry_max_attempts == 0 {
            return Err(ConfigError("retry_max_attempts must be at least 1".into()));
        }
        let rate_limits = RateLimits::resolve(
            layer.rate_limits.as_ref(),
            layer.tenant_limits.as_ref(),
            layer.max_streams_per_tenant,
            layer.rate_limit_redis_down,
            layer.rate_limit_replicas,
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
            listen: layer
                .listen
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 50051))),
            // OpenTelemetry's Prometheus exporters' customary port.
            admin_listen: layer
                .admin_listen
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9464))),
            sutro_base_url,
            sutro_api_key: layer
                .sutro_api_key
                .filter(|k| !k.is_empty())
                .map(Secret::new),
            xai_base_url,
            xai_api_key: layer.xai_api_key.filter(|k| !k.is_empty()).map(Secret::new),
            xai_add_chunk_bytes: layer
                .xai_add_chunk_bytes
                .unwrap_or(20 * 1024 * 1024)
                .max(1024),
            xai_add_chunk_requests,
            upstream_timeout,
            retry: RetryPolicy {
                max_attempts: retry_max_attempts,
                base_delay: ms(layer.retry_base_delay_ms.unwrap_or(100)),
                max_delay: ms(layer.retry_max_delay_ms.unwrap_or(2_000)),
            },
            watch_heartbeat: ms(layer.watch_heartbeat_ms.unwrap_or(10_000).max(10)),
            watch_poll: ms(layer.watch_poll_ms.unwrap_or(1_000).max(10)),
            watch_min_interval: ms(layer.watch_min_interval_ms.unwrap_or(100)),
            watch_fanout_per_second: layer.watch_fanout_per_second.unwrap_or(10_000),
            watch_max: Duration::from_secs(layer.watch_max_secs.unwrap_or(48 * 3600)),
            max_request_bytes: layer.max_request_bytes.unwrap_or(64 * 1024 * 1024),
            max_upstream_body_bytes: layer.max_upstream_body_bytes.unwrap_or(512 * 1024 * 1024),
            results_chunk_bytes,
            idempotency_ttl,
            max_request_bytes_in_flight: layer
                .max_request_bytes_in_flight
                .unwrap_or(DEFAULT_REQUEST_BYTES_IN_FLIGHT),
            http2_max_concurrent_streams,
            upstream_max_in_flight,
            drain_timeout: ms(layer.drain_timeout_ms.unwrap_or(10_000)),
            log_format: layer.log_format.unwrap_or_default(),
            access_log: layer.access_log.unwrap_or(true),
            cors: CorsOrigins::resolve(layer.cors_allowed_origins.as_deref().unwrap_or_default())?,
            otlp_endpoint: layer.otlp_endpoint.filter(|e| !e.is_empty()),
            redis,
            redis_timeout: ms(layer.redis_timeout_ms.unwrap_or(250).max(1)),
            cache_live_ttl: ms(layer.cache_live_ttl_ms.unwrap_or(1_000)),
            cache_final_ttl: Duration::from_secs(layer.cache_final_ttl_secs.unwrap_or(3_600)),
            auth_ttl: Duration::from_secs(layer.auth_ttl_secs.unwrap_or(60)),
            // A lease shorter than a few Redis round trips would lapse while renewed.
            watch_lease: ms(layer.watch_lease_ms.unwrap_or(5_000).max(100)),
            watch_grace: ms(layer.watch_grace_ms.unwrap_or(5_000)),
            admission: Admission {
                tenants: layer
                    .tenants_file
                    .as_deref()
                    .map(Tenants::from_file)
                    .transpose()
                    .map_err(ConfigError)?,
                anonymous: layer.allow_anonymous.unwrap_or(false),
            },
            rate_limits,
            budgets: UpstreamBudgets {
                xai_creates_per_second: rate(layer.xai_creates_per_second.unwrap_or(2.0))?,
                xai_adds_per_second: rate(layer.xai_add_calls_per_30s.unwrap_or(1000.0))?
                    .map(|per_30s| per_30s / 30.0),
                sutro_creates_per_second: rate(layer.sutro_creates_per_second.unwrap_or(0.0))?,
            },
        })
    }

    /// Defaults only: the built-in simulator, no keys.
    pub fn embedded() -> Config {
        // Defaults are all valid, so this cannot fail; keep the fallible path for real input.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_layer_wins_and_gaps_fall_through() {
        let flags = ConfigLayer {
            upstream_timeout_ms: Some(1_000),
            ..Default::default()
        };
        let file: ConfigLayer = toml::from_str(
            "upstream_timeout_ms = 5000\nretry_max_attempts = 2\nsutro_base_url = \"https://acme.sutro.example\"\n",
        )
        .unwrap();
        let config = Config::resolve(flags.over(file)).unwrap();
        assert_eq!(config.upstream_timeout, Duration::from_secs(1));
        assert_eq!(config.retry.max_attempts, 2);
        assert_eq!(
            config.sutro_base_url.unwrap().as_str(),
            "https://acme.sutro.example/v1/"
        );
    }

    #[test]
    fn unknown_file_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<ConfigLayer>("no_such_setting = 1").is_err());
        let bad_url = ConfigLayer {
            sutro_base_url: Some("https://acme.example/api".into()),
            ..Default::default()
        };
        assert!(Config::resolve(bad_url).is_err());
    }

    #[test]
    fn secrets_do_not_print() {
        let config = Config::resolve(ConfigLayer {
            sutro_api_key: Some("sk_live_secret".into()),
            ..Default::default()
        })
        .unwrap();
        assert!(!format!("{config:?}").contains("sk_live_secret"));
    }

    #[test]
    fn redis_settings_resolve_with_defaults_and_hide_passwords() {
        let config = Config::embedded();
        assert_eq!(config.redis, None);
        assert_eq!(config.redis_timeout, Duration::from_millis(250));
        assert_eq!(config.cache_live_ttl, Duration::from_secs(1));
        assert_eq!(config.cache_final_ttl, Duration::from_secs(3_600));
        assert_eq!(config.auth_ttl, Duration::from_secs(60));

        let file: ConfigLayer =
            toml::from_str("redis_url = \"rediss://:redis_pw_secret@cache.internal:6380\"\nwatch_lease_ms = 3000\n")
                .unwrap();
        let config = Config::resolve(file).unwrap();
        assert!(matches!(config.redis, Some(RedisTarget::Single(ref u)) if u.is_tls()));
        assert_eq!(config.watch_lease, Duration::from_secs(3));
        let shown = format!("{config:?}");
        assert!(!shown.contains("redis_pw_secret"), "{shown}");

        let both = ConfigLayer {
            redis_url: Some("redis://a:1".into()),
            redis_cluster_nodes: Some("b:1,c:1".into()),
            ..Default::default()
        };
        assert!(Config::resolve(both).is_err());
    }

    #[test]
    fn resource_bounds_have_defaults_and_refuse_zero() {
        let config = Config::embedded();
        assert_eq!(config.http2_max_concurrent_streams, 1000);
        assert_eq!(config.max_request_bytes_in_flight, 256 << 20);
        assert_eq!(config.upstream_max_in_flight, 64);
        let file: ConfigLayer =
            toml::from_str("http2_max_concurrent_streams = 50\nupstream_max_in_flight = 8\n")
                .unwrap();
        let config = Config::resolve(file).unwrap();
        assert_eq!(config.http2_max_concurrent_streams, 50);
        assert_eq!(config.upstream_max_in_flight, 8);
        for zero in [
            "http2_max_concurrent_streams = 0",
            "upstream_max_in_flight = 0",
        ] {
            let layer: ConfigLayer = toml::from_str(zero).unwrap();
            assert!(Config::resolve(layer).is_err(), "{zero}");
        }
    }

    #[test]
    fn rate_limits_come_from_toml_tables_and_are_off_by_default() {
        assert!(!Config::embedded().rate_limits.enabled());
        let file: ConfigLayer = toml::from_str(
            "max_streams_per_tenant = 4\nrate_limit_redis_down = \"open\"\nrate_limit_replicas = 3\n\
             [rate_limits.read]\nper_second = 50\nburst = 10\n\
             [tenant_limits.\"key-abc\".read]\nper_second = 5\nburst = 1\n",
        )
        .unwrap();
        let limits = Config::resolve(file).unwrap().rate_limits;
        let read = |tenant| {
            limits
                .limit(tenant, crate::ratelimit::Class::Read)
                .map(|l| l.burst)
        };
        assert_eq!((read("other"), read("key-abc")), (Some(10), Some(1)));
        assert_eq!(limits.max_streams_per_tenant, Some(4));
        assert_eq!(limits.redis_down, RedisDown::Open);
        assert_eq!(limits.replicas, 3);
        let bad: ConfigLayer = toml::from_str("[rate_limits.read]\nper_second = 0\n").unwrap();
        let error = Config::resolve(bad).unwrap_err();
        assert!(
            error.0.contains("rate_limits.read.per_second"),
            "{}",
            error.0
        );
    }

    #[test]
    fn tls_needs_both_a_certificate_and_a_key() {
        assert_eq!(Config::embedded().tls, None);
        let both: ConfigLayer = toml::from_str(
            "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\ntls_client_ca = \"ca.pem\"\n",
        )
        .unwrap();
        let tls = Config::resolve(both).unwrap().tls.unwrap();
        assert_eq!(tls.client_ca.as_deref(), Some(Path::new("ca.pem")));
        for half in [
            "tls_cert = \"c.pem\"",
            "tls_key = \"k.pem\"",
            "tls_client_ca = \"ca.pem\"",
        ] {
            let layer: ConfigLayer = toml::from_str(half).unwrap();
            let error = Config::resolve(layer).unwrap_err();
            assert!(error.0.contains("tls_"), "{half}: {}", error.0);
        }
    }

    #[test]
    fn cors_origins_are_off_by_default_and_checked() {
        assert_eq!(Config::embedded().cors, CorsOrigins::None);
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            layer: ConfigLayer,
        }
        let flags = <Flags as clap::Parser>::try_parse_from([
            "batchgate",
            "--cors-allowed-origins",
            "http://127.0.0.1:8080,https://Console.example.com",
        ])
        .unwrap();
        let file: ConfigLayer = toml::from_str("cors_allowed_origins = [\"*\"]\n").unwrap();
        let config = Config::resolve(flags.layer.over(file.clone())).unwrap();
        assert_eq!(
            config.cors,
            CorsOrigins::List(vec![
                "http://127.0.0.1:8080".into(),
                "https://console.example.com".into()
            ])
        );
        assert_eq!(Config::resolve(file).unwrap().cors, CorsOrigins::Any);
        for bad in [
            "cors_allowed_origins = [\"https://console.example.com/app\"]",
            "cors_allowed_origins = [\"*\", \"https://console.example.com\"]",
            "cors_allowed_origins = [\"console.example.com\"]",
        ] {
            let layer: ConfigLayer = toml::from_str(bad).unwrap();
            let error = Config::resolve(layer).unwrap_err();
            assert!(
                error.0.starts_with("cors_allowed_origins: "),
                "{bad}: {}",
                error.0
            );
        }
    }

    #[test]
    fn the_defaults_layer_resolves_to_the_embedded_config() {
        let from_layer = Config::resolve(ConfigLayer::defaults()).unwrap();
        assert_eq!(
            format!("{from_layer:?}"),
            format!("{:?}", Config::embedded())
        );
        // Every key the defaults print is a setting, and a setting's key is its flag's.
        let keys = ConfigLayer::keys();
        let printed: toml::Table =
            toml::from_str(&toml::to_string(&ConfigLayer::defaults()).unwrap()).unwrap();
        for key in printed.keys() {
            assert!(keys.contains(key), "{key}");
        }
        assert!(keys.iter().any(|k| k == "results_chunk_bytes"));
        assert!(keys.iter().any(|k| k == "tenant_limits"));
    }

    #[test]
    fn the_effective_settings_print_as_toml_that_reads_back_without_secrets() {
        let layer: ConfigLayer = toml::from_str(
            "sutro_base_url = \"https://acme.sutro.example\"\nsutro_api_key = \"sk_live_secret\"\n\
             xai_api_key = \"xai-secret\"\nredis_cluster_nodes = \"redis://:pw_one@a:7000,b:7000\"\n\
             upstream_timeout_ms = 5000\n[rate_limits.read]\nper_second = 2.5\n",
        )
        .unwrap();
        let config = Config::resolve(layer.clone()).unwrap();
        let text = layer.effective(&config).to_redacted_toml().unwrap();
        for secret in ["sk_live_secret", "xai-secret", "pw_one"] {
            assert!(!text.contains(secret), "{secret} in:\n{text}");
        }
        assert!(text.contains("# sutro_api_key is set"), "{text}");
        assert!(text.contains("redis://:***@a:7000"), "{text}");
        let back: ConfigLayer = toml::from_str(&text).unwrap();
        assert_eq!(back.sutro_api_key, None);
        assert_eq!(back.redis_cluster_nodes, None);
        assert_eq!(back.upstream_timeout_ms, Some(5000));
        assert_eq!(back.retry_max_delay_ms, Some(2000));
        assert_eq!(
            back.sutro_base_url.as_deref(),
            Some("https://acme.sutro.example/v1/")
        );
        assert_eq!(back.allow_anonymous, Some(false));
        let again = Config::resolve(back.clone()).unwrap();
        // Read back, the same settings print again: only the notes on secrets differ.
        let settings = |text: &str| {
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let reprinted = back.effective(&again).to_redacted_toml().unwrap();
        assert_eq!(settings(&reprinted), settings(&text));
        assert_eq!(
            again
                .rate_limits
                .limit("anyone", crate::ratelimit::Class::Read),
            config
                .rate_limits
                .limit("anyone", crate::ratelimit::Class::Read)
        );
    }

    #[test]
    fn idempotency_records_must_outlive_a_create() {
        let short = ConfigLayer {
            upstream_timeout_ms: Some(60_000),
            idempotency_ttl_secs: Some(30),
            ..Default::default()
        };
        let error = Config::resolve(short).unwrap_err();
        assert!(error.0.contains("idempotency_ttl_secs (30)"), "{}", error.0);
        let enough = ConfigLayer {
            upstream_timeout_ms: Some(60_000),
            idempotency_ttl_secs: Some(62),
            ..Default::default()
        };
        assert!(Config::resolve(enough).is_ok());
    }
}
