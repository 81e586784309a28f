//! The caller layer: who is calling, until when, and with which upstream key, worked
//! out once per call before any handler runs and put in the request's extensions.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tonic::metadata::MetadataMap;
use tower::{Layer, Service};

use crate::config::Config;
use crate::context::CallContext;
use crate::error::{Error, Result};
use crate::tenant::{Admission, PeerIdentity, Secret};
use crate::tls_incoming::TlsPeer;

/// The gRPC services callers are identified for, by path prefix, with their upstream.
/// Everything else (health, reflection) is open to any caller.
const SERVICES: [(&str, &str); 2] = [
    ("/batchgate.sutro.v1.JobService/", "sutro"),
    ("/batchgate.xai.v1.BatchService/", "xai"),
];

/// What identifying a caller takes, from the configuration.
#[derive(Debug, Clone)]
pub struct Callers {
    admission: Admission,
    sutro_key: Option<Secret>,
    xai_key: Option<Secret>,
    timeout_cap: Duration,
}

impl Callers {
    /// The callers `config` admits.
    pub fn from_config(config: &Config) -> Self {
        Self {
            admission: config.admission.clone(),
            sutro_key: config.sutro_api_key.clone(),
            xai_key: config.xai_api_key.clone(),
            timeout_cap: config.upstream_timeout,
        }
    }

    /// The context of a call to `path` from a connection whose client certificate
    /// (mutual TLS) is `peer`; `None` for a path no upstream serves.
    pub fn context(
        &self,
        path: &str,
        metadata: &MetadataMap,
        peer: Option<&PeerIdentity>,
    ) -> Option<Result<CallContext>> {
        let (_, provider) = SERVICES
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix))?;
        let managed_key = match *provider {
            "sutro" => self.sutro_key.as_ref(),
            _ => self.xai_key.as_ref(),
        };
        Some(CallContext::from_metadata(
            metadata,
            peer,
            provider,
            managed_key,
            &self.admission,
            self.timeout_cap,
        ))
    }
}

/// The tower layer that identifies callers (see [`Callers`]).
#[derive(Debug, Clone)]
pub struct CallerLayer {
    callers: Arc<Callers>,
}

impl CallerLayer {
    /// Identifies callers as `callers` says.
    pub fn new(callers: Callers) -> Self {
        Self {
            callers: Arc::new(callers),
        }
    }
}

impl<S> Layer<S> for CallerLayer {
    type Service = CallerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallerService {
            inner,
            callers: self.callers.clone(),
        }
    }
}

/// The service of [`CallerLayer`].
#[derive(Debug, Clone)]
pub struct CallerService<S> {
    inner: S,
    callers: Arc<Callers>,
}

impl<S, B> Service<http::Request<B>> for CallerService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = CallerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // Borrowed as metadata and put back: the headers are not copied.
        let metadata = MetadataMap::from_headers(std::mem::take(request.headers_mut()));
        // tonic puts the connection's info in every request's extensions; only a TLS
        // connection's carries a client certificate.
        let peer = request
            .extensions()
            .get::<TlsPeer>()
            .and_then(|info| info.identity.clone());
        let context = self
            .callers
            .context(request.uri().path(), &metadata, peer.as_deref());
        *request.headers_mut() = metadata.into_headers();
        let tenant = match context {
            None => None,
            Some(Ok(context)) => {
                let tenant = context.caller.tenant.clone();
                crate::access_log::note_tenant(&tenant);
                request.extensions_mut().insert(context);
                Some(tenant)
            }
            // Refused before anything else runs, the handler included.
            Some(Err(error)) => {
                return CallerFuture::Refused {
                    answer: Some(tonic::Status::from(&error).into_http()),
                };
            }
        };
        CallerFuture::Admitted {
            inner: self.inner.call(request),
            tenant,
        }
    }
}

pin_project! {
    /// The answer of [`CallerService`]: the inner call's, or a refusal.
    #[project = CallerFutureProj]
    pub enum CallerFuture<F> {
        /// Identified (or open to anyone): the inner call; the tenant goes on the span.
        Admitted { #[pin] inner: F, tenant: Option<String> },
        /// Refused before anything else runs.
        Refused { answer: Option<http::Response<tonic::body::Body>> },
    }
}

impl<F, E> Future for CallerFuture<F>
where
    F: Future<Output = std::result::Result<http::Response<tonic::body::Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CallerFutureProj::Admitted { inner, tenant } => {
                // Polled inside the RPC's span (tonic's `call` is not): tenant names are
                // for logs and spans, keys and tokens never are.
                if let Some(tenant) = tenant.take() {
                    tracing::Span::current().record("tenant", tenant.as_str());
                }
                inner.poll(cx)
            }
            CallerFutureProj::Refused { answer } => match answer.take() {
                Some(answer) => Poll::Ready(Ok(answer)),
                // Polled again after it answered.
                None => Poll::Pending,
            },
        }
    }
}

/// The context the caller layer put in `request`'s extensions.
pub fn context_of<T>(request: &tonic::Request<T>) -> Result<CallContext> {
    request
        .extensions()
        .get::<CallContext>()
        .cloned()
        .ok_or_else(|| Error::Internal("the call has no caller context".into()))
}
