//! Who is calling: the caller's credentials become a `Caller` with a tenant id.
//! Raw keys live only inside `Secret`, which never prints; tenants are named by a hash.

use std::fmt;

use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;

use crate::error::{Error, Result};

/// A credential that never appears in logs, debug output or error messages.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a raw secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw value, for the one place that sends it upstream.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Whose upstream key a call uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    /// The caller's own key, from its `authorization` metadata.
    Passthrough,
    /// The key the gateway was configured with.
    Managed,
}

/// The identity of a caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// A stable, non-secret tenant id: used in cache keys, limits and logs.
    pub tenant: String,
    /// The upstream key to call with.
    pub key: Secret,
    /// Where the key came from.
    pub source: CredentialSource,
}

/// The tenant id of a passthrough key: a short SHA-256 of it, never the key.
pub fn tenant_of_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    format!("key-{}", hex::encode(&digest[..8]))
}

/// Identifies the caller of a request.
///
/// `authorization` metadata (`Key <k>`, `Bearer <k>` or a bare key) is passed
/// through to the upstream; without it, the managed key is used if configured.
pub fn identify(metadata: &MetadataMap, managed_key: Option<&Secret>) -> Result<Caller> {
    if let Some(value) = metadata.get("authorization") {
        let raw = value.to_str().map_err(|_| {
            Error::Unauthenticated("the authorization metadata is not printable ASCII".into())
        })?;
        let key = strip_scheme(raw);
        if key.is_empty() {
            return Err(Error::Unauthenticated(
                "the authorization metadata holds no key; send `authorization: Key <api key>`"
                    .into(),
            ));
        }
        return Ok(Caller {
            tenant: tenant_of_key(key),
            key: Secret::new(key),
            source: CredentialSource::Passthrough,
        });
    }
    match managed_key {
        Some(key) => Ok(Caller {
            tenant: "managed".into(),
            key: key.clone(),
            source: CredentialSource::Managed,
        }),
        None => Err(Error::Unauthenticated(
            "no credentials: send `authorization: Key <api key>` metadata, \
             or configure the gateway with an upstream API key"
                .into(),
        )),
    }
}

/// The key in `Key <k>`, `Bearer <k>` or a bare `<k>`; empty when only a scheme is given.
fn strip_scheme(value: &str) -> &str {
    let mut words = value.split_whitespace();
    let first = words.next().unwrap_or_default();
    let is_scheme = first.eq_ignore_ascii_case("key") || first.eq_ignore_ascii_case("bearer");
    match (is_scheme, words.next()) {
        (true, Some(key)) => key,
        (true, None) => "",
        (false, _) => first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(auth: &str) -> MetadataMap {
        let mut md = MetadataMap::new();
        md.insert("authorization", auth.parse().unwrap());
        md
    }

    #[test]
    fn passthrough_keys_are_hashed_into_tenants_and_never_printed() {
        let a = identify(&md("Key sk_live_abc"), None).unwrap();
        let b = identify(&md("Bearer sk_live_abc"), None).unwrap();
        let c = identify(&md("sk_live_other"), None).unwrap();
        assert_eq!(a.tenant, b.tenant);
        assert_ne!(a.tenant, c.tenant);
        assert_eq!(a.key.expose(), "sk_live_abc");
        assert_eq!(a.source, CredentialSource::Passthrough);
        let printed = format!("{a:?}");
        assert!(!printed.contains("sk_live_abc"), "{printed}");
        assert!(!a.tenant.contains("sk_live"));
    }

    #[test]
    fn managed_key_is_used_without_metadata_and_missing_both_is_unauthenticated() {
        let managed = Secret::new("sk_gateway");
        let caller = identify(&MetadataMap::new(), Some(&managed)).unwrap();
        assert_eq!(caller.source, CredentialSource::Managed);
        assert_eq!(caller.key.expose(), "sk_gateway");
        let err = identify(&MetadataMap::new(), None).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let err = identify(&md("Key "), Some(&managed)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }
}
