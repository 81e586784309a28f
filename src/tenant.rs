//! Who is calling: the caller's credentials become a `Caller` with a tenant id.
//! Raw keys live only inside `Secret`, which never prints; tenants are named by a hash.

use std::fmt;

use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;

use crate::error::{Error, Result};
pub use crate::tenants_file::Tenants;

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

/// The tenant of callers that send no credentials, where that is allowed: they use
/// the gateway's own upstream key.
pub const ANONYMOUS_TENANT: &str = "anonymous";

/// Who the client certificate of a mutual-TLS connection says its holder is. The
/// handshake already checked it against the configured client CA.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject's common name, if it has one.
    pub subject_cn: Option<String>,
    /// The DNS names among its subject alternative names.
    pub dns_sans: Vec<String>,
}

/// How callers prove who they are, from the configuration.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    /// Managed mode: the tenants file. Callers send a gateway token and the gateway
    /// calls upstream with its own keys.
    pub tenants: Option<Tenants>,
    /// Passthrough mode: a caller without credentials may use the gateway's own key
    /// (as tenant `anonymous`). Off unless configured, or on the embedded simulator.
    pub anonymous: bool,
}

/// Identifies the caller of a call to `provider`'s service. `peer` is the client
/// certificate of a mutual-TLS connection; `managed_key` is the gateway's own key
/// for that upstream. In managed mode a gateway token, when sent, decides the tenant
/// (it is the more specific claim); without one the client certificate does.
pub fn identify(
    metadata: &MetadataMap,
    peer: Option<&PeerIdentity>,
    provider: &str,
    managed_key: Option<&Secret>,
    admission: &Admission,
) -> Result<Caller> {
    let presented = presented_credential(metadata)?;
    if let Some(tenants) = &admission.tenants {
        let tenant = match (presented, peer) {
            (Some(token), _) => tenants
                .by_token(token)
                .ok_or_else(|| Error::Unauthenticated("the gateway token is not known".into()))?,
            (None, Some(peer)) => tenants
                .by_peer(peer)
                .map_err(Error::Unauthenticated)?
                .ok_or_else(|| {
                    Error::Unauthenticated(format!(
                        "the client certificate (subject CN {:?}) names no tenant, and no \
                         gateway token was sent",
                        peer.subject_cn.as_deref().unwrap_or("")
                    ))
                })?,
            (None, None) => {
                return Err(Error::Unauthenticated(
                    "no credentials: send `authorization: Bearer <gateway token>` metadata".into(),
                ));
            }
        };
        if !tenant.may_use(provider) {
            return Err(Error::PermissionDenied(format!(
                "tenant {} may not use the {provider} service",
                tenant.name
            )));
        }
        let key = managed_key.ok_or_else(|| {
            Error::Internal(format!(
                "the gateway holds no {provider} key for its tenants"
            ))
        })?;
        return Ok(Caller {
            tenant: tenant.name.clone(),
            key: key.clone(),
            source: CredentialSource::Managed,
        });
    }
    if let Some(key) = presented {
        return Ok(Caller {
            tenant: tenant_of_key(key),
            key: Secret::new(key),
            source: CredentialSource::Passthrough,
        });
    }
    match managed_key {
        Some(key) if admission.anonymous => Ok(Caller {
            tenant: ANONYMOUS_TENANT.into(),
            key: key.clone(),
            source: CredentialSource::Managed,
        }),
        _ => Err(Error::Unauthenticated(
            "no credentials: send `authorization: Key <api key>` metadata (anonymous use \
             of the gateway's own key needs allow_anonymous)"
                .into(),
        )),
    }
}

/// The credential in the `authorization` metadata, if any; an unusable one is an error.
fn presented_credential(metadata: &MetadataMap) -> Result<Option<&str>> {
    let Some(value) = metadata.get("authorization") else {
        return Ok(None);
    };
    let raw = value.to_str().map_err(|_| {
        Error::Unauthenticated("the authorization metadata is not printable ASCII".into())
    })?;
    let credential = strip_scheme(raw);
    if credential.is_empty() {
        return Err(Error::Unauthenticated(
            "the authorization metadata holds no credential; send `authorization: Key <api key>`"
                .into(),
        ));
    }
    Ok(Some(credential))
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

    fn passthrough(anonymous: bool) -> Admission {
        Admission {
            tenants: None,
            anonymous,
        }
    }

    #[test]
    fn passthrough_keys_are_hashed_into_tenants_and_never_printed() {
        let open = passthrough(false);
        let a = identify(&md("Key sk_live_abc"), None, "sutro", None, &open).unwrap();
        let b = identify(&md("Bearer sk_live_abc"), None, "sutro", None, &open).unwrap();
        let c = identify(&md("sk_live_other"), None, "sutro", None, &open).unwrap();
        assert_eq!(a.tenant, b.tenant);
        assert_ne!(a.tenant, c.tenant);
        assert_eq!(a.key.expose(), "sk_live_abc");
        assert_eq!(a.source, CredentialSource::Passthrough);
        let printed = format!("{a:?}");
        assert!(!printed.contains("sk_live_abc"), "{printed}");
        assert!(!a.tenant.contains("sk_live"));
    }

    #[test]
    fn the_gateways_key_serves_anonymous_callers_only_when_allowed() {
        let managed = Secret::new("sk_gateway");
        let caller = identify(
            &MetadataMap::new(),
            None,
            "sutro",
            Some(&managed),
            &passthrough(true),
        )
        .unwrap();
        assert_eq!(caller.source, CredentialSource::Managed);
        assert_eq!(caller.tenant, ANONYMOUS_TENANT);
        assert_eq!(caller.key.expose(), "sk_gateway");
        let err = identify(
            &MetadataMap::new(),
            None,
            "sutro",
            Some(&managed),
            &passthrough(false),
        )
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let err =
            identify(&MetadataMap::new(), None, "sutro", None, &passthrough(true)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let err = identify(
            &md("Key "),
            None,
            "sutro",
            Some(&managed),
            &passthrough(true),
        )
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn managed_mode_knows_tenants_by_token_and_what_they_may_use() {
        let hash = hex::encode(Sha256::digest(b"tok-search"));
        let file = format!(
            "[[tenant]]\nname = \"search\"\ntoken_sha256 = \"{hash}\"\nservices = [\"sutro\"]\n"
        );
        let admission = Admission {
            tenants: Some(Tenants::from_toml(&file).unwrap()),
            anonymous: true,
        };
        let managed = Secret::new("sk_gateway");
        let caller = identify(
            &md("Bearer tok-search"),
            None,
            "sutro",
            Some(&managed),
            &admission,
        )
        .unwrap();
        assert_eq!(caller.tenant, "search");
        assert_eq!(caller.key.expose(), "sk_gateway");
        let denied = identify(
            &md("Bearer tok-search"),
            None,
            "xai",
            Some(&managed),
            &admission,
        )
        .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        let unknown = identify(
            &md("Bearer tok-other"),
            None,
            "sutro",
            Some(&managed),
            &admission,
        )
        .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::Unauthenticated);
        assert!(!unknown.to_string().contains("tok-other"));
        let none = identify(
            &MetadataMap::new(),
            None,
            "sutro",
            Some(&managed),
            &admission,
        )
        .unwrap_err();
        assert_eq!(
            none.code(),
            tonic::Code::Unauthenticated,
            "no anonymous use in managed mode"
        );
    }

    #[test]
    fn managed_mode_knows_tenants_by_client_certificate_without_a_token() {
        let hash = hex::encode(Sha256::digest(b"tok-ops"));
        let file = format!(
            "[[tenant]]\nname = \"search\"\nclient_cert_subject = \"search-client\"\nservices = [\"sutro\"]\n\
             [[tenant]]\nname = \"ops\"\nclient_cert_san = \"Ops.Internal\"\ntoken_sha256 = \"{hash}\"\n"
        );
        let admission = Admission {
            tenants: Some(Tenants::from_toml(&file).unwrap()),
            anonymous: false,
        };
        let managed = Secret::new("sk_gateway");
        let cert = |cn: &str, sans: &[&str]| PeerIdentity {
            subject_cn: Some(cn.into()),
            dns_sans: sans.iter().map(|s| s.to_string()).collect(),
        };
        let empty = MetadataMap::new();
        let search = cert("search-client", &[]);
        let caller = identify(&empty, Some(&search), "sutro", Some(&managed), &admission).unwrap();
        assert_eq!(caller.tenant, "search");
        assert_eq!(caller.source, CredentialSource::Managed);
        assert_eq!(caller.key.expose(), "sk_gateway");
        let denied =
            identify(&empty, Some(&search), "xai", Some(&managed), &admission).unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        // DNS SANs compare without case.
        let ops = cert("whatever", &["ops.internal"]);
        let caller = identify(&empty, Some(&ops), "xai", Some(&managed), &admission).unwrap();
        assert_eq!(caller.tenant, "ops");
        // A token, when sent, decides over the certificate.
        let caller = identify(
            &md("Bearer tok-ops"),
            Some(&search),
            "xai",
            Some(&managed),
            &admission,
        )
        .unwrap();
        assert_eq!(caller.tenant, "ops");
        let stranger = cert("stranger", &["stranger.example"]);
        let unknown =
            identify(&empty, Some(&stranger), "sutro", Some(&managed), &admission).unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::Unauthenticated);
        let both = cert("search-client", &["ops.internal"]);
        let ambiguous =
            identify(&empty, Some(&both), "sutro", Some(&managed), &admission).unwrap_err();
        assert_eq!(ambiguous.code(), tonic::Code::Unauthenticated);
        assert!(ambiguous.to_string().contains("two tenants"), "{ambiguous}");
        // Outside managed mode a certificate names no tenant: the caller's key does.
        let open = passthrough(false);
        let err = identify(&empty, Some(&search), "sutro", Some(&managed), &open).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn a_tenant_without_a_token_or_certificate_name_is_refused() {
        let nameless = "[[tenant]]\nname = \"a\"\n";
        assert!(
            Tenants::from_toml(nameless)
                .unwrap_err()
                .contains("client_cert_subject")
        );
        let twice = "[[tenant]]\nname = \"a\"\nclient_cert_subject = \"x\"\n\
                     [[tenant]]\nname = \"b\"\nclient_cert_subject = \"x\"\n";
        assert!(Tenants::from_toml(twice).unwrap_err().contains("another"));
    }

    #[test]
    fn a_tenants_file_with_a_raw_token_or_a_duplicate_is_refused() {
        let raw = "[[tenant]]\nname = \"a\"\ntoken_sha256 = \"tok-a\"\n";
        assert!(Tenants::from_toml(raw).unwrap_err().contains("64 hex"));
        let hash = "ab".repeat(32);
        let twice = format!(
            "[[tenant]]\nname = \"a\"\ntoken_sha256 = \"{hash}\"\n[[tenant]]\nname = \"a\"\ntoken_sha256 = \"{}\"\n",
            "cd".repeat(32)
        );
        assert!(Tenants::from_toml(&twice).unwrap_err().contains("twice"));
        let bad_service = format!(
            "[[tenant]]\nname = \"a\"\ntoken_sha256 = \"{hash}\"\nservices = [\"openai\"]\n"
        );
        assert!(
            Tenants::from_toml(&bad_service)
                .unwrap_err()
                .contains("openai")
        );
    }
}
