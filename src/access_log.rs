//! The access log: one `info` line per call when it ends (the call-end layer writes
//! it), and the call's note, through which the parts below name its tenant and count its
//! upstream calls.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::future::Either;
use tonic::Code;

tokio::task_local! {
    /// The note of the call being served, for the parts that learn its facts
    /// (the caller layer its tenant, the upstream client its calls).
    static NOTE: Arc<CallNote>;
}

/// What the layers and handlers below learn about one call.
#[derive(Debug, Default)]
pub(crate) struct CallNote {
    tenant: OnceLock<String>,
    upstream_calls: AtomicU32,
}

/// Names the tenant of the call being served (no-op outside a logged call).
pub fn note_tenant(tenant: &str) {
    let _ = NOTE.try_with(|note| note.tenant.set(tenant.to_owned()));
}

/// Counts one upstream call for the call being served (no-op outside a logged call).
pub fn note_upstream_call() {
    let _ = NOTE.try_with(|note| note.upstream_calls.fetch_add(1, Ordering::Relaxed));
}

/// `future` with the current call's note, for work spawned on a task of its own
/// (a task-local does not follow `tokio::spawn`).
pub fn carry_note<F: Future>(future: F) -> impl Future<Output = F::Output> {
    match NOTE.try_with(Arc::clone) {
        Ok(note) => Either::Left(NOTE.scope(note, future)),
        Err(_) => Either::Right(future),
    }
}

/// Runs `f` with `note` as the call's note (the parts below the call-end layer learn
/// the call's facts through it).
pub(crate) fn scope_sync<R>(note: &Arc<CallNote>, f: impl FnOnce() -> R) -> R {
    NOTE.sync_scope(note.clone(), f)
}

/// Writes the access line of a call that ended with `code` after `elapsed`, in the
/// span entered by the caller (so it carries the call's trace id).
pub(crate) fn write_line(
    method: &str,
    code: Code,
    elapsed: Duration,
    note: &CallNote,
    cache: Option<&str>,
) {
    tracing::info!(
        target: "batchgate::access",
        method,
        code = ?code,
        grpc_status = code as i32,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        tenant = note.tenant.get().map(String::as_str),
        upstream_calls = note.upstream_calls.load(Ordering::Relaxed),
        cache,
        "call finished"
    );
}
