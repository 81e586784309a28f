//! The cap on streams one tenant holds open on this replica: a count per tenant, taken
//! when a stream starts and given back when its response body is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Open streams per tenant, capped.
#[derive(Debug, Clone)]
pub struct Streams {
    cap: u32,
    open: Arc<Mutex<HashMap<String, u32>>>,
}

/// One open stream; dropping it gives its place back.
#[derive(Debug)]
pub struct StreamGuard {
    tenant: String,
    open: Arc<Mutex<HashMap<String, u32>>>,
}

impl Streams {
    /// At most `cap` open streams per tenant.
    pub fn new(cap: u32) -> Self {
        Self {
            cap,
            open: Arc::default(),
        }
    }

    /// The cap.
    pub fn cap(&self) -> u32 {
        self.cap
    }

    /// A place for one more stream of `tenant`, or `None` when it holds `cap` already.
    pub fn try_open(&self, tenant: &str) -> Option<StreamGuard> {
        // A poisoned count is still a count: the panic that poisoned it changed nothing.
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(tenant.to_owned()).or_default();
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(StreamGuard {
            tenant: tenant.to_owned(),
            open: self.open.clone(),
        })
    }

    /// Streams `tenant` holds open now.
    pub fn open(&self, tenant: &str) -> u32 {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(tenant).copied().unwrap_or(0)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.tenant) {
            *count = count.saturating_sub(1);
            // Forget idle tenants, so the map holds only tenants with streams open.
            if *count == 0 {
                open.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_holds_at_most_the_cap_and_closing_gives_places_back() {
        let streams = Streams::new(2);
        let a1 = streams.try_open("a").expect("first");
        let a2 = streams.try_open("a").expect("second");
        assert!(streams.try_open("a").is_none());
        let b = streams.try_open("b").expect("another tenant is unaffected");
        assert_eq!(streams.open("a"), 2);
        drop(a1);
        let a3 = streams.try_open("a").expect("a place came back");
        drop((a2, a3, b));
        assert_eq!(streams.open("a"), 0);
        assert!(streams.open.lock().unwrap().is_empty());
    }
}
