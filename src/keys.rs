//! The one key scheme for shared state: every idempotency record, watch and cache
//! entry of a resource is named by a `ResourceKey`, rendered the same way for Redis.

use std::fmt;

/// What a key holds, the last part of its rendering.
pub mod kind {
    /// A keyed create's idempotency record (the id is the caller's `request_id`).
    pub const IDEMPOTENCY: &str = "idem";
    /// A resource's progress watch.
    pub const WATCH: &str = "watch";
    /// The gateway's own notes on a resource it created (e.g. a job's id column).
    pub const RECORD: &str = "record";
    /// A cached `GetJobStatusResponse` (Sutro's status endpoint).
    pub const STATUS: &str = "status";
    /// A cached `Job` (Sutro's job object).
    pub const JOB: &str = "job";
    /// A cached `Batch` (xAI's batch object).
    pub const BATCH: &str = "batch";
    /// A tenant's credential, accepted upstream within the auth TTL (the id is fixed).
    pub const AUTH: &str = "auth";
    /// A tenant's GCRA bucket of one method class (provider `gateway`, the id is the class).
    pub const RATELIMIT: &str = "ratelimit";
    /// An upstream's budgets paused after its 429 (tenant `upstream-<provider>`).
    pub const PAUSE: &str = "pause";
}

/// The key of one piece of shared state about one resource of one tenant.
///
/// Renders as `batchgate:{<tenant>:<provider>:<id>}:<kind>`: the braces are a Redis
/// Cluster hash tag, so every key of a resource lands in one slot and a script may
/// touch them together. Tenants never share a key (each key names its tenant).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceKey {
    /// The tenant id (a configured name or a hash of a credential, never a key).
    pub tenant: String,
    /// The upstream: `sutro` or `xai`; `gateway` for state of the tenant itself.
    pub provider: &'static str,
    /// What the key holds, one of [`kind`].
    pub kind: &'static str,
    /// The resource (or, for idempotency, the caller's request id).
    pub id: String,
}

impl ResourceKey {
    /// The key of `kind` for resource `id` of `tenant` at `provider`.
    pub fn new(
        tenant: impl Into<String>,
        provider: &'static str,
        kind: &'static str,
        id: impl Into<String>,
    ) -> Self {
        Self {
            tenant: tenant.into(),
            provider,
            kind,
            id: id.into(),
        }
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("batchgate:{")?;
        escaped(f, &self.tenant)?;
        f.write_str(":")?;
        escaped(f, self.provider)?;
        f.write_str(":")?;
        escaped(f, &self.id)?;
        f.write_str("}:")?;
        escaped(f, self.kind)
    }
}

/// Writes `part` with `%`, `{` and `}` percent-encoded. Request ids may hold braces
/// (they are only checked for length and control characters), and a brace inside the
/// tag would move the hash tag's end, so keys of one resource would scatter over slots
/// and two resources could share a rendering.
fn escaped(f: &mut fmt::Formatter<'_>, part: &str) -> fmt::Result {
    let mut rest = part;
    while let Some(at) = rest.find(['%', '{', '}']) {
        f.write_str(&rest[..at])?;
        let code = match rest.as_bytes()[at] {
            b'%' => "%25",
            b'{' => "%7B",
            _ => "%7D",
        };
        f.write_str(code)?;
        rest = &rest[at + 1..];
    }
    f.write_str(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The part Redis Cluster hashes: between the first `{` and the next `}`.
    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').expect("a hash tag") + 1;
        let close = key[open..].find('}').expect("a closed hash tag") + open;
        &key[open..close]
    }

    #[test]
    fn renders_with_the_resource_as_the_hash_tag() {
        let key = ResourceKey::new("key-0123abcd", "sutro", kind::WATCH, "job-1");
        assert_eq!(
            key.to_string(),
            "batchgate:{key-0123abcd:sutro:job-1}:watch"
        );
        let idem = ResourceKey::new("managed", "xai", kind::IDEMPOTENCY, "nightly-1");
        assert_eq!(idem.to_string(), "batchgate:{managed:xai:nightly-1}:idem");
    }

    #[test]
    fn keys_of_one_resource_share_a_slot_and_tenants_never_share_a_key() {
        let watch = ResourceKey::new("t", "sutro", kind::WATCH, "job-1").to_string();
        let idem = ResourceKey::new("t", "sutro", kind::IDEMPOTENCY, "job-1").to_string();
        assert_eq!(hash_tag(&watch), hash_tag(&idem));
        let other = ResourceKey::new("u", "sutro", kind::WATCH, "job-1").to_string();
        assert_ne!(watch, other);
    }

    #[test]
    fn ids_cannot_break_out_of_the_hash_tag() {
        for id in ["a}b", "}{", "{x}", "%7D", "a%}", "}:watch"] {
            let key = ResourceKey::new("t", "xai", kind::IDEMPOTENCY, id).to_string();
            let tag = hash_tag(&key);
            assert!(key.ends_with("}:idem"), "{key}");
            assert!(tag.starts_with("t:xai:"), "{key}");
            assert!(!tag[6..].contains(['{', '}']), "{key}");
            assert_eq!(tag.len() + "batchgate:{}:idem".len(), key.len(), "{key}");
        }
        // Escaping is one-to-one: a literal escape sequence is not a brace.
        let brace = ResourceKey::new("t", "xai", kind::WATCH, "}").to_string();
        let text = ResourceKey::new("t", "xai", kind::WATCH, "%7D").to_string();
        assert_ne!(brace, text);
    }

    #[test]
    fn tenant_ids_render_inside_the_tag() {
        let tenant = crate::tenant::tenant_of_key("sk_live_abc");
        let key = ResourceKey::new(tenant.clone(), "sutro", kind::WATCH, "job-1").to_string();
        assert_eq!(hash_tag(&key), format!("{tenant}:sutro:job-1"));
        assert!(!key.contains("sk_live"));
    }
}
