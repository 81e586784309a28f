//! `batchgate health`: one grpc.health.v1 Check against a gateway, for container
//! health checks: exit 0 only when it answers SERVING, 1 for anything else.

use std::process::ExitCode;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::args::HealthArgs;
use super::error::{CliError, exit};
use super::output::Out;

/// Checks the gateway `args` names.
pub async fn run(args: HealthArgs) -> Result<ExitCode, CliError> {
    let channel = super::connect::channel(&args.connection).await?;
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: args.service.clone(),
    });
    // A gateway that accepts connections but never answers is not healthy either.
    request.set_timeout(args.connection.connect_timeout());
    let status = HealthClient::new(channel)
        .check(request)
        .await?
        .into_inner()
        .status();
    let word = status.as_str_name();
    let mut out = Out::stdout();
    if args.connection.json {
        out.line(&serde_json::json!({ "status": word }).to_string())?;
    } else {
        out.line(word)?;
    }
    out.flush()?;
    Ok(ExitCode::from(if status == ServingStatus::Serving {
        exit::OK
    } else {
        exit::ERROR
    }))
}
