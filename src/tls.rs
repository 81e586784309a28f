//! The listener's TLS settings: loads the certificate, key and client CA into a rustls
//! config, and re-reads them when they change so that new handshakes use the new ones.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often the files are read again: a renewed certificate is served this soon.
pub const RELOAD_POLL: Duration = Duration::from_secs(2);

/// Where the listener's TLS material is, from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the leaf.
    pub key: PathBuf,
    /// PEM bundle of the CAs a client certificate must chain to; `None`: no client
    /// certificates are asked for.
    pub client_ca: Option<PathBuf>,
}

/// The config new handshakes use, swapped whole on reload; a connection keeps the one
/// it was accepted with.
pub type SharedServerConfig = Arc<RwLock<Arc<ServerConfig>>>;

/// The files' contents, compared between polls: a change of content is what matters,
/// whatever the mtimes say (a secret mounted through a symlink swap keeps them).
#[derive(PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl TlsFiles {
    fn read(&self) -> Result<Contents, String> {
        let read = |path: &PathBuf, what: &str| {
            std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
        };
        Ok(Contents {
            cert: read(&self.cert, "tls_cert")?,
            key: read(&self.key, "tls_key")?,
            client_ca: self
                .client_ca
                .as_ref()
                .map(|path| read(path, "tls_client_ca"))
                .transpose()?,
        })
    }

    /// Reads the files and builds the listener's config.
    pub fn load(&self) -> Result<Arc<ServerConfig>, String> {
        build(&self.read()?).map(Arc::new)
    }
}

/// The rustls config of `contents`: ring, TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`
/// (grpc-web), and a required client certificate when a client CA is given.
fn build(contents: &Contents) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_slice_iter(&contents.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls_cert: {e}"))?;
    if chain.is_empty() {
        return Err("tls_cert holds no PEM certificate".into());
    }
    // The error names the PEM problem only, never the key's bytes.
    let key = PrivateKeyDer::from_pem_slice(&contents.key).map_err(|e| format!("tls_key: {e}"))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match &contents.client_ca {
        Some(pem) => builder.with_client_cert_verifier(client_verifier(pem, provider)?),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("tls_cert and tls_key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn client_verifier(
    pem: &[u8],
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("tls_client_ca: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("tls_client_ca: a certificate is unusable: {e}"))?;
    }
    if roots.is_empty() {
        return Err("tls_client_ca holds no PEM certificate".into());
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| format!("tls_client_ca: {e}"))
}

/// Polls `files` every [`RELOAD_POLL`] until `stop`, and puts a config built from new
/// contents into `current`. New contents that do not make a config (a key that is not
/// the certificate's, half a file) are warned about once and the old config stays.
pub fn spawn_reloader(
    files: TlsFiles,
    current: SharedServerConfig,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen = files.read().ok();
        let mut problem: Option<String> = None;
        let mut ticks = tokio::time::interval(RELOAD_POLL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let outcome = files.read().and_then(|contents| {
                if seen.as_ref() == Some(&contents) {
                    return Ok(None);
                }
                let config = build(&contents);
                seen = Some(contents);
                config.map(Some)
            });
            match outcome {
                Ok(None) => {}
                Ok(Some(config)) => {
                    match current.write() {
                        Ok(mut slot) => *slot = Arc::new(config),
                        Err(poisoned) => *poisoned.into_inner() = Arc::new(config),
                    }
                    problem = None;
                    tracing::info!("TLS certificates reloaded: new connections use them");
                }
                Err(error) => {
                    if problem.as_ref() != Some(&error) {
                        tracing::warn!(%error, "TLS files changed but cannot be used; keeping the previous certificates");
                        problem = Some(error);
                    }
                }
            }
        }
    })
}

/// The config a new handshake uses now.
pub fn current(shared: &SharedServerConfig) -> Arc<ServerConfig> {
    match shared.read() {
        Ok(config) => config.clone(),
        // A writer only ever stores a whole Arc, so a poisoned lock still holds a good one.
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}
