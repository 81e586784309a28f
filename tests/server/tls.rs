//! TLS and mutual TLS on the listener: calls over TLS, tenants known by their client
//! certificate, handshakes refused without one, and certificates reloaded in place.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use batchgate::config::{Config, ConfigLayer};
use batchgate::proto::sutro::v1::{self as pb, job_service_client::JobServiceClient};
use batchgate::proto::xai::v1::{ListBatchesRequest, batch_service_client::BatchServiceClient};
use batchgate::server::App;
use batchgate::sim::{self, SimConfig, SimHandle};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::common::test_settings;

/// A certificate authority made for one test.
pub(crate) struct Ca {
    pub(crate) pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM.
pub(crate) struct Leaf {
    pub(crate) cert: String,
    pub(crate) key: String,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("a CA key");
        let cert = params.self_signed(&key).expect("a CA certificate");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(&self, cn: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("a leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("a leaf");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    pub(crate) fn server(&self) -> Leaf {
        self.leaf(
            "localhost",
            &["localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    pub(crate) fn client(&self, cn: &str, sans: &[&str]) -> Leaf {
        self.leaf(cn, sans, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// Replaces `path`'s contents in one step, as a certificate manager would.
fn replace(path: &Path, contents: &str) {
    let staged = path.with_extension("staged");
    std::fs::write(&staged, contents).expect("write a staged file");
    std::fs::rename(&staged, path).expect("move it into place");
}

pub(crate) struct Files {
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    fn install(dir: &Path, leaf: &Leaf) -> Files {
        let files = Files {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        replace(&files.key, &leaf.key);
        replace(&files.cert, &leaf.cert);
        files
    }
}

/// The gateway over TLS with `server`'s certificate, beside the simulator.
pub(crate) async fn start_tls(
    dir: &Path,
    server: &Leaf,
    tweak: impl FnOnce(&mut ConfigLayer),
) -> (App, SimHandle, Files) {
    let sim = sim::start(SimConfig::fast(), SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator starts");
    let files = Files::install(dir, server);
    let mut settings = test_settings(&sim);
    settings.tls_cert = Some(files.cert.clone());
    settings.tls_key = Some(files.key.clone());
    tweak(&mut settings);
    let config = Config::resolve(settings).expect("valid TLS config");
    let app = App::start(config).await.expect("gateway starts with TLS");
    (app, sim, files)
}

/// A tonic channel over TLS trusting `ca`, presenting `identity` if given.
async fn tls_channel(
    addr: SocketAddr,
    ca: &Ca,
    identity: Option<&Leaf>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca.pem))
        .domain_name("localhost");
    if let Some(leaf) = identity {
        tls = tls.identity(Identity::from_pem(&leaf.cert, &leaf.key));
    }
    Channel::from_shared(format!("https://{addr}"))
        .expect("valid uri")
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// A raw TLS handshake trusting `ca`, with `identity` if given, that then opens HTTP/2
/// and reads the server's first bytes. Under TLS 1.3 the server judges a client's
/// certificate after the client's side of the handshake is done, so the verdict is
/// only known at that first read.
async fn handshake(addr: SocketAddr, ca: &Ca, identity: Option<&Leaf>) -> std::io::Result<()> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).expect("CA pem"))
        .expect("CA in the store");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(leaf.cert.as_bytes()).expect("cert pem")],
                PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).expect("key pem"),
            )
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("a server name");
    let attempt = async {
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
        let mut first = [0u8; 9];
        match tls.read(&mut first).await? {
            0 => Err(std::io::ErrorKind::UnexpectedEof.into()),
            _ => Ok(()),
        }
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

async fn list_jobs(channel: &Channel) -> Result<pb::ListJobsResponse, tonic::Status> {
    JobServiceClient::new(channel.clone())
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_client_that_trusts_the_ca_calls_over_tls() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let ca = Ca::new("test CA");
    let (app, sim, _files) = start_tls(dir.path(), &ca.server(), |_| {}).await;
    let channel = tls_channel(app.local_addr(), &ca, None)
        .await
        .expect("a TLS connection");
    list_jobs(&channel).await.expect("a call over TLS");
    assert_eq!(sim.calls("GET /v1/list-jobs"), 1);
    let stranger = Ca::new("another CA");
    assert!(
        handshake(app.local_addr(), &stranger, None).await.is_err(),
        "a client that does not trust the server's CA gives up"
    );
    app.shutdown().await.expect("clean shutdown");
}

/// A tenants file naming `search` by its certificate's CN (Sutro only) and `ops` by a
/// DNS SAN (everything), for a gateway that asks for client certificates from `ca`.
fn mutual(dir: &Path, ca: &Ca) -> impl FnOnce(&mut ConfigLayer) {
    let tenants = dir.join("tenants.toml");
    std::fs::write(
        &tenants,
        "[[tenant]]\nname = \"search\"\nclient_cert_subject = \"search-client\"\nservices = [\"sutro\"]\n\n\
         [[tenant]]\nname = \"ops\"\nclient_cert_san = \"ops.internal\"\n",
    )
    .expect("write the tenants file");
    let client_ca = dir.join("clients.pem");
    std::fs::write(&client_ca, &ca.pem).expect("write the client CA");
    move |settings| {
        settings.tenants_file = Some(tenants);
        settings.tls_client_ca = Some(client_ca);
    }
}

/// A gateway with the tenants of [`mutual`], its certificate from a test CA: that CA,
/// the client CA it asks certificates from, the gateway and its simulator.
pub(crate) async fn start_mutual(dir: &Path) -> (Ca, Ca, App, SimHandle) {
    let ca = Ca::new("test CA");
    let clients = Ca::new("client CA");
    let (app, sim, _files) = start_tls(dir, &ca.server(), mutual(dir, &clients)).await;
    (ca, clients, app, sim)
}

#[tokio::test]
async fn mutual_tls_runs_each_call_as_the_tenant_its_certificate_names() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (ca, clients, app, sim) = start_mutual(dir.path()).await;

    let search = clients.client("search-client", &[]);
    let channel = tls_channel(app.local_addr(), &ca, Some(&search))
        .await
        .expect("an mTLS connection");
    list_jobs(&channel)
        .await
        .expect("search may use Sutro, without any token");
    let denied = BatchServiceClient::new(channel.clone())
        .list_batches(ListBatchesRequest::default())
        .await
        .expect_err("search may not use xAI");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("search"), "{}", denied.message());

    let ops = clients.client("ops-box-7", &["ops.internal"]);
    let channel = tls_channel(app.local_addr(), &ca, Some(&ops))
        .await
        .expect("an mTLS connection");
    BatchServiceClient::new(channel)
        .list_batches(ListBatchesRequest::default())
        .await
        .expect("ops, named by its DNS SAN, may use xAI");

    let nobody = clients.client("nobody", &["nobody.internal"]);
    let channel = tls_channel(app.local_addr(), &ca, Some(&nobody))
        .await
        .expect("a certificate from the client CA passes the handshake");
    let unknown = list_jobs(&channel).await.expect_err("but names no tenant");
    assert_eq!(unknown.code(), Code::Unauthenticated, "{unknown:?}");
    assert_eq!(
        sim.calls("GET /v1/list-jobs"),
        1,
        "only search reached Sutro"
    );
    assert_eq!(sim.calls("GET /v1/batches"), 1, "only ops reached xAI");
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (ca, clients, app, sim) = start_mutual(dir.path()).await;
    let addr = app.local_addr();

    let known = clients.client("search-client", &[]);
    handshake(addr, &ca, Some(&known))
        .await
        .expect("a certificate from the client CA is accepted");
    let none = handshake(addr, &ca, None).await;
    assert!(none.is_err(), "no client certificate: {none:?}");
    let forged = Ca::new("client CA").client("search-client", &[]);
    let other = handshake(addr, &ca, Some(&forged)).await;
    assert!(other.is_err(), "a certificate from another CA: {other:?}");

    // The same through a real gRPC client: the call never reaches a handler.
    if let Ok(channel) = tls_channel(addr, &ca, Some(&forged)).await {
        assert!(
            list_jobs(&channel).await.is_err(),
            "no call without the handshake"
        );
    }
    assert_eq!(sim.calls("GET /v1/list-jobs"), 0);
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn new_certificates_serve_new_connections_while_open_ones_keep_going() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let old_ca = Ca::new("old CA");
    let (app, _sim, files) = start_tls(dir.path(), &old_ca.server(), |_| {}).await;
    let addr = app.local_addr();
    let open = tls_channel(addr, &old_ca, None)
        .await
        .expect("a TLS connection");
    list_jobs(&open)
        .await
        .expect("a call on the first certificate");

    // A broken certificate is ignored: new connections still get the old one.
    replace(&files.cert, "-----BEGIN CERTIFICATE-----\nnot base64\n");
    tokio::time::sleep(batchgate::tls::RELOAD_POLL + Duration::from_millis(500)).await;
    handshake(addr, &old_ca, None)
        .await
        .expect("the old certificate is still served");

    let new_ca = Ca::new("new CA");
    Files::install(dir.path(), &new_ca.server());
    let started = Instant::now();
    loop {
        if handshake(addr, &new_ca, None).await.is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the new certificate was not served within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fresh = tls_channel(addr, &new_ca, None)
        .await
        .expect("a new connection trusting only the new CA");
    list_jobs(&fresh)
        .await
        .expect("a call on the new certificate");
    assert!(
        handshake(addr, &old_ca, None).await.is_err(),
        "new connections no longer get the old certificate"
    );
    list_jobs(&open)
        .await
        .expect("the connection opened before the reload keeps going");
    app.shutdown().await.expect("clean shutdown");
}
