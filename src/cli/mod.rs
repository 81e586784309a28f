//! The client half of the binary: `watch`, `jobs`, `batches` and `health` against a
//! running gateway. `main.rs` only hands the parsed command to [`run`].

mod args;
mod batches;
mod connect;
mod error;
mod health;
mod input;
mod jobs;
mod output;
mod progress;
mod watch;

use std::io::IsTerminal;
use std::process::ExitCode;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::proto::sutro::v1::job_service_client::JobServiceClient;
use crate::proto::xai::v1::batch_service_client::BatchServiceClient;

pub use args::ClientCommand;
pub use error::{CliError, exit};

/// Results arrive in messages of up to 4 MiB (the gateway's cut); tonic's default
/// limit is exactly 4 MiB, so leave room for framing.
const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// Runs a client command and turns its outcome into the process's exit code; errors
/// are printed to stderr.
pub async fn run(command: ClientCommand) -> ExitCode {
    let outcome = match command {
        ClientCommand::Watch(args) => watch::run(args).await,
        ClientCommand::Jobs(args) => jobs::run(args).await.map(|()| ExitCode::SUCCESS),
        ClientCommand::Batches(args) => batches::run(args).await.map(|()| ExitCode::SUCCESS),
        ClientCommand::Health(args) => health::run(args).await,
    };
    outcome.unwrap_or_else(|error| {
        if !matches!(error, CliError::Closed) {
            eprintln!("batchgate: {error}");
        }
        error.exit_code()
    })
}

/// Sends the caller's key with every call, as the gateway's caller layer reads it.
#[derive(Clone)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl Interceptor for Auth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

impl Auth {
    /// The `authorization` value for `key`. `Bearer` is accepted for upstream keys and
    /// gateway tokens alike. The error never quotes the key.
    fn new(key: Option<&str>) -> Result<Self, CliError> {
        let Some(key) = key.map(str::trim).filter(|k| !k.is_empty()) else {
            return Ok(Self(None));
        };
        // The gateway reads the first word after the scheme: a key with a space would
        // be cut short there, and refused upstream for a reason hard to see.
        if key.contains(char::is_whitespace) {
            return Err(CliError::Input("the key holds whitespace".into()));
        }
        let mut value: MetadataValue<Ascii> = format!("Bearer {key}")
            .parse()
            .map_err(|_| CliError::Input("the key is not printable ASCII".into()))?;
        // Keeps the value out of HPACK's table and out of any debug print of headers.
        value.set_sensitive(true);
        Ok(Self(Some(value)))
    }
}

/// A JobService client to `--target`, with the caller's key.
async fn jobs_client(
    connection: &args::Connection,
) -> Result<JobServiceClient<InterceptedService<Channel, Auth>>, CliError> {
    let auth = Auth::new(connection.key.as_deref())?;
    Ok(
        JobServiceClient::with_interceptor(connect::channel(connection).await?, auth)
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
    )
}

/// A BatchService client to `--target`, with the caller's key.
async fn batches_client(
    connection: &args::Connection,
) -> Result<BatchServiceClient<InterceptedService<Channel, Auth>>, CliError> {
    let auth = Auth::new(connection.key.as_deref())?;
    Ok(
        BatchServiceClient::with_interceptor(connect::channel(connection).await?, auth)
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
    )
}

/// Whether stdout is a terminal: a progress bar there, plain lines otherwise.
fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}
