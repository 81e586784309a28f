//! What every upstream call needs to know about the gRPC call it serves:
//! who is calling, by when the answer is due, and the request id to propagate.

use std::time::Duration;

use tonic::metadata::MetadataMap;

use crate::deadline::Deadline;
use crate::error::Result;
use crate::tenant::{Admission, Caller, PeerIdentity, Secret, identify};

/// The caller, deadline and request id of one gRPC call.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// Who is calling and with which upstream key.
    pub caller: Caller,
    /// When the answer is due.
    pub deadline: Deadline,
    /// Sent upstream as `x-request-id`: the caller's own, or a fresh UUID.
    pub request_id: String,
    /// The gateway's own key for this upstream, if configured: kept so that upstream
    /// text can be checked for it even when the caller brought a key of its own.
    pub managed_key: Option<Secret>,
}

impl CallContext {
    /// Builds the context of a call to `provider`'s service from its metadata and
    /// the connection's client certificate, if any; `managed_key` is the gateway's own
    /// key for that upstream.
    pub fn from_metadata(
        metadata: &MetadataMap,
        peer: Option<&PeerIdentity>,
        provider: &str,
        managed_key: Option<&Secret>,
        admission: &Admission,
        timeout_cap: Duration,
    ) -> Result<Self> {
        let caller = identify(metadata, peer, provider, managed_key, admission)?;
        let request_id = metadata
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|id| {
                !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
            })
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        Ok(Self {
            caller,
            deadline: Deadline::from_metadata(metadata, timeout_cap),
            request_id,
            managed_key: managed_key.cloned(),
        })
    }

    /// Every credential of this call (the key it uses, and the gateway's key): text
    /// from upstream must hold none of them before a caller sees it.
    pub fn credentials(&self) -> Vec<&str> {
        let mut keys = vec![self.caller.key.expose()];
        if let Some(managed) = &self.managed_key {
            keys.push(managed.expose());
        }
        keys
    }

    /// The same caller with a fresh deadline, for background work (e.g. a watch poller)
    /// that outlives the call that started it.
    pub fn with_deadline(&self, deadline: Deadline) -> Self {
        Self {
            deadline,
            ..self.clone()
        }
    }
}
