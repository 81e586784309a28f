//! The client commands' connection to the gateway: `--target` read as a URI, and TLS
//! (trusted roots, a client certificate for mutual TLS) when the target is `https://`.

use std::path::Path;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::args::Connection;
use super::error::CliError;

/// A channel to `--target`, connected now so that an unreachable gateway (or a failed
/// handshake) is reported as such before any call.
pub async fn channel(connection: &Connection) -> Result<Channel, CliError> {
    let target = target_uri(connection)?;
    let mut endpoint = Endpoint::from_shared(target.clone())
        .map_err(|e| CliError::Input(format!("--target {}: {e}", connection.target)))?
        .connect_timeout(connection.connect_timeout());
    if target.starts_with("https://") {
        endpoint = endpoint
            .tls_config(tls_config(connection)?)
            .map_err(|e| CliError::Input(format!("TLS settings: {}", causes(&e))))?;
    }
    endpoint.connect().await.map_err(|e| CliError::Unreachable {
        target: connection.target.clone(),
        reason: causes(&e),
    })
}

/// `--target` with its scheme: `host:port` alone is plain-text HTTP/2, as the default
/// target is, unless a TLS flag is given. TLS flags on an `http://` target are refused
/// rather than ignored, since the caller meant the connection to be private.
fn target_uri(connection: &Connection) -> Result<String, CliError> {
    let target = &connection.target;
    if !target.contains("://") {
        let scheme = if connection.wants_tls() {
            "https"
        } else {
            "http"
        };
        return Ok(format!("{scheme}://{target}"));
    }
    if target.starts_with("http://") && connection.wants_tls() {
        return Err(CliError::Input(format!(
            "--target {target} is plain text: TLS flags (--tls-ca, --client-cert, --client-key, \
             --tls-server-name) need an https:// target"
        )));
    }
    Ok(target.clone())
}

/// The TLS settings: `--tls-ca`'s roots or else the system's, and `--client-cert` with
/// `--client-key` for mutual TLS.
fn tls_config(connection: &Connection) -> Result<ClientTlsConfig, CliError> {
    let mut config = ClientTlsConfig::new();
    config = match &connection.tls_ca {
        Some(path) => config.ca_certificate(Certificate::from_pem(read_pem("--tls-ca", path)?)),
        None => config.with_native_roots(),
    };
    match (&connection.client_cert, &connection.client_key) {
        (Some(cert), Some(key)) => {
            config = config.identity(Identity::from_pem(
                read_pem("--client-cert", cert)?,
                read_pem("--client-key", key)?,
            ));
        }
        (None, None) => {}
        _ => {
            return Err(CliError::Input(
                "--client-cert and --client-key go together: set both for mutual TLS".into(),
            ));
        }
    }
    if let Some(name) = &connection.tls_server_name {
        config = config.domain_name(name.clone());
    }
    Ok(config)
}

/// A PEM file's bytes; the error names the flag and the path, never the contents.
fn read_pem(flag: &str, path: &Path) -> Result<Vec<u8>, CliError> {
    let bytes = std::fs::read(path)
        .map_err(|e| CliError::Input(format!("{flag} {}: {e}", path.display())))?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(CliError::Input(format!(
            "{flag} {}: not a PEM file (no -----BEGIN line)",
            path.display()
        )));
    }
    Ok(bytes)
}

/// An error and its sources on one line: tonic's own text is only "transport error".
pub fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        // Some errors already quote their source in their own text.
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
