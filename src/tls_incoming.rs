//! TLS connections for the server: runs each accepted connection's handshake beside the
//! others, and hands tonic the connection with its client certificate's names.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;
use tonic::transport::server::Connected;
use x509_parser::extensions::GeneralName;

use crate::tenant::PeerIdentity;
use crate::tls::{SharedServerConfig, current};

/// Longest a client may take over its handshake: a connection that never finishes
/// one would otherwise hold a descriptor forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most handshakes under way at once; past it accepting waits, so a flood of
/// half-open connections cannot grow memory without bound.
const MAX_HANDSHAKES: usize = 1024;

/// What tonic puts in the extensions of every request on a TLS connection.
#[derive(Debug, Clone)]
pub struct TlsPeer {
    /// The client's address.
    pub remote_addr: Option<SocketAddr>,
    /// The client certificate's names, on a mutual-TLS connection.
    pub identity: Option<Arc<PeerIdentity>>,
}

/// A TLS connection, done with its handshake.
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    peer: TlsPeer,
}

impl Connected for TlsConnection {
    type ConnectInfo = TlsPeer;

    fn connect_info(&self) -> TlsPeer {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

type Handshake = Pin<Box<dyn Future<Output = Option<TlsConnection>> + Send>>;

/// Accepted TCP connections in, finished TLS connections out. Handshakes run side by
/// side inside the stream, so a slow client delays no one else, and dropping the
/// stream (at shutdown) closes the listener and abandons them at once.
pub struct TlsIncoming<S> {
    tcp: S,
    config: SharedServerConfig,
    handshakes: FuturesUnordered<Handshake>,
    tcp_done: bool,
}

impl<S> TlsIncoming<S> {
    /// Handshakes with `config` as it is when each connection arrives.
    pub fn new(tcp: S, config: SharedServerConfig) -> Self {
        Self {
            tcp,
            config,
            handshakes: FuturesUnordered::new(),
            tcp_done: false,
        }
    }
}

impl<S> Stream for TlsIncoming<S>
where
    S: Stream<Item = io::Result<TcpStream>> + Unpin,
{
    type Item = io::Result<TlsConnection>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        while !self.tcp_done && self.handshakes.len() < MAX_HANDSHAKES {
            match Pin::new(&mut self.tcp).poll_next(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    let config = current(&self.config);
                    self.handshakes.push(Box::pin(handshake(stream, config)));
                }
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(None) => self.tcp_done = true,
                Poll::Pending => break,
            }
        }
        loop {
            match Pin::new(&mut self.handshakes).poll_next(cx) {
                Poll::Ready(Some(Some(connection))) => return Poll::Ready(Some(Ok(connection))),
                Poll::Ready(Some(None)) => continue,
                // No handshake under way: the listener, polled above, wakes us.
                Poll::Ready(None) if !self.tcp_done => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// One connection's handshake; `None` when it failed (a client without an acceptable
/// certificate ends here, before any request).
async fn handshake(stream: TcpStream, config: Arc<rustls::ServerConfig>) -> Option<TlsConnection> {
    let remote_addr = stream.peer_addr().ok();
    let accepted =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(config).accept(stream)).await;
    let stream = match accepted {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(?remote_addr, %error, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(?remote_addr, "TLS handshake timed out");
            return None;
        }
    };
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| Arc::new(peer_identity(leaf)));
    Some(TlsConnection {
        stream,
        peer: TlsPeer {
            remote_addr,
            identity,
        },
    })
}

/// The subject CN and DNS SANs of a certificate the handshake accepted. One rustls
/// verified but this parser cannot read names no one: it matches no tenant.
fn peer_identity(der: &[u8]) -> PeerIdentity {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return PeerIdentity::default();
    };
    let subject_cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let dns_sans = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    PeerIdentity {
        subject_cn,
        dns_sans,
    }
}
