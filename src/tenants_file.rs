//! The tenants file of managed mode: each tenant's name, the SHA-256 of its gateway
//! token (never the token) or its client certificate's names, and the services it may use.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::tenant::PeerIdentity;

/// The services a tenant may be allowed, by their provider names.
const SERVICES: [&str; 2] = ["sutro", "xai"];

/// One tenant of the tenants file.
#[derive(Debug)]
pub struct Tenant {
    /// Its name: the tenant id in keys, limits, logs and spans.
    pub name: String,
    services: HashSet<String>,
}

impl Tenant {
    /// Whether the tenant may call `provider`'s service.
    pub fn may_use(&self, provider: &str) -> bool {
        self.services.contains(provider)
    }
}

/// The tenants of managed mode, by the SHA-256 of their gateway token and by the
/// names of their client certificates (subject CN, DNS SAN).
#[derive(Debug, Clone, Default)]
pub struct Tenants {
    by_hash: HashMap<[u8; 32], Arc<Tenant>>,
    by_subject: HashMap<String, Arc<Tenant>>,
    /// Lowercase: DNS names compare without case.
    by_san: HashMap<String, Arc<Tenant>>,
    count: usize,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tenant: Vec<Entry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    token_sha256: Option<String>,
    client_cert_subject: Option<String>,
    client_cert_san: Option<String>,
    services: Option<Vec<String>>,
}

impl Tenants {
    /// Reads the tenants file at `path`.
    pub fn from_file(path: &Path) -> Result<Tenants, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the tenants file {}: {e}", path.display()))?;
        Self::from_toml(&text).map_err(|e| format!("tenants file {}: {e}", path.display()))
    }

    /// Parses a tenants file: `[[tenant]]` tables of `name`, at least one of
    /// `token_sha256` (hex), `client_cert_subject` (a certificate's subject CN) and
    /// `client_cert_san` (a DNS SAN), and optionally `services` (default: all).
    pub fn from_toml(text: &str) -> Result<Tenants, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut tenants = Tenants::default();
        let mut names = HashSet::new();
        for entry in file.tenant {
            let name = entry.name;
            let named = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !named {
                return Err(format!(
                    "tenant name {name:?} must be 1 to 64 letters, digits, '.', '_' or '-'"
                ));
            }
            if !names.insert(name.clone()) {
                return Err(format!("tenant {name} is named twice"));
            }
            let hash: Option<[u8; 32]> = entry
                .token_sha256
                .map(|hex_digits| {
                    hex::decode(hex_digits)
                        .ok()
                        .and_then(|bytes| bytes.try_into().ok())
                        .ok_or_else(|| {
                            // Never echo the value: it may be a raw token pasted by mistake.
                            format!("tenant {name}: token_sha256 must be 64 hex digits (the SHA-256 of the token, e.g. `printf %s \"$TOKEN\" | sha256sum`)")
                        })
                })
                .transpose()?;
            let subject = entry.client_cert_subject.filter(|s| !s.is_empty());
            let san = entry
                .client_cert_san
                .filter(|s| !s.is_empty())
                .map(|s| s.to_ascii_lowercase());
            if hash.is_none() && subject.is_none() && san.is_none() {
                return Err(format!(
                    "tenant {name}: give token_sha256, client_cert_subject or client_cert_san"
                ));
            }
            let services: HashSet<String> = match entry.services {
                Some(list) => list.into_iter().collect(),
                None => SERVICES.iter().map(|s| s.to_string()).collect(),
            };
            if let Some(unknown) = services.iter().find(|s| !SERVICES.contains(&s.as_str())) {
                return Err(format!(
                    "tenant {name}: unknown service {unknown:?} (known: {})",
                    SERVICES.join(", ")
                ));
            }
            let tenant = Arc::new(Tenant { name, services });
            if let Some(hash) = hash
                && tenants.by_hash.insert(hash, tenant.clone()).is_some()
            {
                return Err(format!(
                    "tenant {}: its token is another tenant's",
                    tenant.name
                ));
            }
            if let Some(subject) = subject
                && tenants.by_subject.insert(subject, tenant.clone()).is_some()
            {
                return Err(format!(
                    "tenant {}: its client_cert_subject is another tenant's",
                    tenant.name
                ));
            }
            if let Some(san) = san
                && tenants.by_san.insert(san, tenant.clone()).is_some()
            {
                return Err(format!(
                    "tenant {}: its client_cert_san is another tenant's",
                    tenant.name
                ));
            }
            tenants.count += 1;
        }
        Ok(tenants)
    }

    /// The tenant whose gateway token is `token`.
    pub fn by_token(&self, token: &str) -> Option<&Tenant> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_hash.get(&hash).map(Arc::as_ref)
    }

    /// The tenant a client certificate names, by its subject CN or one of its DNS
    /// SANs; an error when its names point at different tenants, since either guess
    /// could hand one tenant's service to another.
    pub fn by_peer(&self, peer: &PeerIdentity) -> Result<Option<&Tenant>, String> {
        let by_subject = peer
            .subject_cn
            .as_ref()
            .and_then(|cn| self.by_subject.get(cn));
        let by_san = peer
            .dns_sans
            .iter()
            .filter_map(|san| self.by_san.get(&san.to_ascii_lowercase()));
        let mut found: Option<&Arc<Tenant>> = None;
        for tenant in by_subject.into_iter().chain(by_san) {
            match found {
                Some(earlier) if !Arc::ptr_eq(earlier, tenant) => {
                    return Err(format!(
                        "the client certificate names two tenants ({} and {})",
                        earlier.name, tenant.name
                    ));
                }
                _ => found = Some(tenant),
            }
        }
        Ok(found.map(Arc::as_ref))
    }

    /// Whether some tenant is named by a client certificate.
    pub fn names_certificates(&self) -> bool {
        !self.by_subject.is_empty() || !self.by_san.is_empty()
    }

    /// How many tenants the file names.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the file names none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}
