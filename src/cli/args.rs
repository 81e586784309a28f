//! The client commands' command line: `watch`, `jobs`, `batches` and `health`, and the
//! connection flags they share (`--target`, `--key`, `--json`, TLS).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::error::EXIT_CODES_HELP;

/// Where the gateway is and how to call it; accepted before or after the subcommand.
#[derive(Clone, Args)]
pub struct Connection {
    /// The gateway's gRPC address.
    #[arg(
        long,
        global = true,
        env = "BATCHGATE_TARGET",
        default_value = "http://127.0.0.1:50051"
    )]
    pub target: String,
    /// The key sent as `authorization: Bearer <key>` metadata: an upstream API key, or
    /// a gateway token. Without it the gateway uses its own key, if it allows that.
    // hide_env_values: clap would otherwise print the key's value in --help.
    #[arg(long, global = true, env = "BATCHGATE_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Print JSON (proto field names) instead of tables: one document, or one JSON
    /// document per line for streams (watch, results).
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up on connecting to the gateway after this many seconds.
    #[arg(long, global = true, default_value_t = 5.0, value_name = "SECONDS")]
    pub connect_timeout: f64,
    /// For an `https://` target: the PEM bundle of certificate authorities to trust
    /// instead of the system's roots (the CA that signed the gateway's `tls_cert`).
    #[arg(long, global = true, env = "BATCHGATE_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// For a gateway with `tls_client_ca` (mutual TLS): the PEM certificate chain this
    /// client presents; goes with --client-key.
    #[arg(long, global = true, env = "BATCHGATE_CLIENT_CERT", value_name = "PEM")]
    pub client_cert: Option<PathBuf>,
    /// The PEM private key of --client-cert.
    #[arg(long, global = true, env = "BATCHGATE_CLIENT_KEY", value_name = "PEM")]
    pub client_key: Option<PathBuf>,
    /// The name the gateway's certificate must carry, when the target's host is not
    /// it (an IP address, a port-forward to localhost).
    #[arg(long, global = true, value_name = "NAME")]
    pub tls_server_name: Option<String>,
}

// By hand, so that no debug print can show the key.
impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("target", &self.target)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("json", &self.json)
            .field("tls_ca", &self.tls_ca)
            .field("client_cert", &self.client_cert)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Whether any TLS flag is set: a target without a scheme is then `https://`.
    pub fn wants_tls(&self) -> bool {
        self.tls_ca.is_some()
            || self.client_cert.is_some()
            || self.client_key.is_some()
            || self.tls_server_name.is_some()
    }

    /// `--connect-timeout` as a duration; a nonsense value falls back to 5 s.
    pub fn connect_timeout(&self) -> Duration {
        Duration::try_from_secs_f64(self.connect_timeout).unwrap_or(Duration::from_secs(5))
    }
}

/// The client commands, flattened into the binary's own.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Follow a job or batch to its end: a progress bar on a terminal, a line per
    /// update otherwise (JSON lines with --json).
    Watch(WatchArgs),
    /// Create, inspect, list, fetch results of and cancel Sutro jobs.
    Jobs(JobsArgs),
    /// Create, inspect, list, add requests to, fetch results of and cancel xAI batches.
    Batches(BatchesArgs),
    /// Check a gateway's grpc.health.v1 status; exits 0 only when it is serving.
    Health(HealthArgs),
}

/// `batchgate watch`: follow a job or batch until it ends.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES_HELP)]
pub struct WatchArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub what: WatchTarget,
}

/// What `watch` follows.
#[derive(Debug, Subcommand)]
pub enum WatchTarget {
    /// A Sutro job: rows done of total, tokens, status.
    Job {
        /// The job id.
        id: String,
    },
    /// An xAI batch: requests done of total, status.
    Batch {
        /// The batch id.
        id: String,
    },
}

/// `batchgate jobs`: Sutro jobs through the gateway.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES_HELP)]
pub struct JobsArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: JobsCommand,
}

/// The `jobs` subcommands.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Create a job from a file of prompts; prints the new job's id.
    Create(CreateJobArgs),
    /// Show one job.
    Get {
        /// The job id.
        id: String,
    },
    /// List jobs, newest first.
    List(PageArgs),
    /// Stream a succeeded job's result rows.
    Results {
        /// The job id.
        id: String,
        /// Also return each row's input.
        #[arg(long)]
        include_inputs: bool,
        #[command(flatten)]
        out: OutArgs,
    },
    /// Ask Sutro to cancel a job.
    Cancel {
        /// The job id.
        id: String,
    },
}

/// `jobs create`.
#[derive(Debug, Args)]
pub struct CreateJobArgs {
    /// Model id (e.g. `gpt-oss-20b`) or the name of a published Function.
    #[arg(long)]
    pub model: String,
    /// The prompts: one a line, or JSONL (a `.jsonl` file, or one whose first line
    /// starts with `{`): each line a JSON string or an object with a `prompt` string.
    /// `-` reads standard input.
    #[arg(long, value_name = "FILE", conflicts_with = "rows")]
    pub prompts: Option<PathBuf>,
    /// Row objects for a Function run, one JSON object a line (JSONL).
    #[arg(long, value_name = "FILE")]
    pub rows: Option<PathBuf>,
    /// System prompt applied to every row.
    #[arg(long)]
    pub system_prompt: Option<String>,
    /// 0 (minutes) or 1 (about an hour, large jobs).
    #[arg(long, default_value_t = 0)]
    pub priority: i32,
    /// Job name, at most 45 characters.
    #[arg(long)]
    pub name: Option<String>,
    /// Job description.
    #[arg(long)]
    pub description: Option<String>,
    /// Idempotency key: a retried create with the same id returns the first job.
    #[arg(long)]
    pub request_id: Option<String>,
    /// Estimate the cost instead of running the job.
    #[arg(long)]
    pub cost_estimate: bool,
}

/// `batches create`.
#[derive(Debug, Args)]
pub struct CreateBatchArgs {
    /// The batch's name.
    #[arg(long)]
    pub name: String,
    /// Create the batch from an uploaded JSONL file (Files API); it is then sealed.
    #[arg(long)]
    pub input_file_id: Option<String>,
    /// Idempotency key: a retried create with the same id returns the first batch.
    #[arg(long)]
    pub request_id: Option<String>,
}

/// `batchgate batches`: xAI batches through the gateway.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES_HELP)]
pub struct BatchesArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: BatchesCommand,
}

/// The `batches` subcommands.
#[derive(Debug, Subcommand)]
pub enum BatchesCommand {
    /// Create an empty batch (or one from an uploaded file); prints its id.
    Create(CreateBatchArgs),
    /// Show one batch.
    Get {
        /// The batch id.
        id: String,
    },
    /// List batches.
    List(PageArgs),
    /// Add requests to a batch from a JSONL file.
    Add {
        /// The batch id.
        id: String,
        /// One request a line: a BatchRequest in proto JSON
        /// (`{"batch_request_id": "r1", "chat_get_completion": {...}}`), or a bare
        /// chat-completions body (`{"model": ..., "messages": [...]}`). `-` reads stdin.
        #[arg(long, value_name = "FILE")]
        requests: PathBuf,
    },
    /// Stream every result available now.
    Results {
        /// The batch id.
        id: String,
        #[command(flatten)]
        out: OutArgs,
    },
    /// Cancel a batch's pending requests.
    Cancel {
        /// The batch id.
        id: String,
    },
}

/// Paging flags of the list commands.
#[derive(Debug, Args)]
pub struct PageArgs {
    /// Entries per page; 0 lets the gateway choose.
    #[arg(long, default_value_t = 0)]
    pub page_size: i32,
    /// `next_page_token` of the previous page.
    #[arg(long, default_value = "")]
    pub page_token: String,
}

/// Where `results` go.
#[derive(Debug, Args)]
pub struct OutArgs {
    /// Write the results to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `batchgate health`: the gateway's grpc.health.v1 status.
#[derive(Debug, Args)]
#[command(after_help = "Exit codes: 0 serving; 1 not serving, unknown, or unreachable.")]
pub struct HealthArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// The service to check; empty means the gateway as a whole.
    #[arg(long, default_value = "")]
    pub service: String,
}
