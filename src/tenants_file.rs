//! The tenants file of managed mode: each tenant's name, the SHA-256 of its gateway
//! token (never the token) and the services it may use, looked up by token.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

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

/// The tenants of managed mode, by the SHA-256 of their gateway token.
#[derive(Debug, Clone, Default)]
pub struct Tenants {
    by_hash: HashMap<[u8; 32], Arc<Tenant>>,
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
    token_sha256: String,
    services: Option<Vec<String>>,
}

impl Tenants {
    /// Reads the tenants file at `path`.
    pub fn from_file(path: &Path) -> Result<Tenants, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the tenants file {}: {e}", path.display()))?;
        Self::from_toml(&text).map_err(|e| format!("tenants file {}: {e}", path.display()))
    }

    /// Parses a tenants file: `[[tenant]]` tables of `name`, `token_sha256` (hex) and
    /// optionally `services` (default: all).
    pub fn from_toml(text: &str) -> Result<Tenants, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut by_hash = HashMap::new();
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
            let hash: [u8; 32] = hex::decode(&entry.token_sha256)
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| {
                    // Never echo the value: it may be a raw token pasted by mistake.
                    format!("tenant {name}: token_sha256 must be 64 hex digits (the SHA-256 of the token, e.g. `printf %s \"$TOKEN\" | sha256sum`)")
                })?;
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
            if by_hash.insert(hash, tenant.clone()).is_some() {
                return Err(format!(
                    "tenant {}: its token is another tenant's",
                    tenant.name
                ));
            }
        }
        Ok(Tenants { by_hash })
    }

    /// The tenant whose gateway token is `token`.
    pub fn by_token(&self, token: &str) -> Option<&Tenant> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_hash.get(&hash).map(Arc::as_ref)
    }

    /// How many tenants the file names.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// True when the file names none.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}
