//! What of an upstream's text may reach a caller: ids only when they look like ids, and
//! nothing that holds a credential of the call (the caller's key or the gateway's).

use std::collections::HashSet;

/// Longest upstream request id relayed; real ones (`req_<uuid>`) are far shorter.
const MAX_ID_LEN: usize = 128;

/// The length of a credential fragment that, found in an id, gives the id away as a
/// (partial) reflection of the key rather than an id.
const FRAGMENT_LEN: usize = 12;

/// `id` if it may be relayed to the caller: a short token of `[A-Za-z0-9._:-]` that
/// holds no credential, nor a fragment of one. Anything else is dropped, since an
/// upstream or a proxy in between may reflect whatever the request carried.
pub fn relayable_id(id: &str, credentials: &[&str]) -> Option<String> {
    let looks_like_id = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    (looks_like_id && !credentials.iter().any(|key| shares_fragment(id, key)))
        .then(|| id.to_owned())
}

/// True when `text` holds `key`, or (for a long key) any run of `FRAGMENT_LEN` of its
/// bytes: a key cut short by a length limit is still a leak.
fn shares_fragment(text: &str, key: &str) -> bool {
    if key.len() < 4 {
        // Too short to tell from ordinary text; no real key is this short.
        return false;
    }
    let n = key.len().min(FRAGMENT_LEN);
    let windows: HashSet<&[u8]> = text.as_bytes().windows(n).collect();
    key.as_bytes().windows(n).any(|w| windows.contains(w))
}

/// Removes every credential of the call from upstream text, in case an upstream echoes one.
pub fn scrub(text: &str, credentials: &[&str]) -> String {
    let mut text = text.to_owned();
    for key in credentials {
        if key.len() >= 4 && text.contains(key) {
            text = text.replace(key, "***");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALLER: &str = "xai-caller-0123456789abcdef";
    const GATEWAY: &str = "sk_live_1234";

    #[test]
    fn ids_that_look_like_ids_are_relayed() {
        for id in [
            "req_9f8e7d6c5b4a",
            "0b1c2d3e-aaaa-bbbb-cccc-123456789012",
            "trace:1.2",
        ] {
            assert_eq!(
                relayable_id(id, &[CALLER, GATEWAY]).as_deref(),
                Some(id),
                "{id}"
            );
        }
    }

    #[test]
    fn odd_or_leaky_ids_are_dropped() {
        let long = "a".repeat(129);
        for id in [
            "",
            "has space",
            "semi;colon",
            "Bearer/x",
            long.as_str(),
            CALLER,
            GATEWAY,
            "req-xai-caller-0123456789abcdef-1",
            // A reflection cut short still leaks most of the key.
            "xai-caller-01234",
        ] {
            assert_eq!(relayable_id(id, &[CALLER, GATEWAY]), None, "{id:?}");
        }
    }

    #[test]
    fn every_credential_is_scrubbed_from_text() {
        assert_eq!(
            scrub(
                "keys sk_live_1234 and xai-caller-0123456789abcdef",
                &[CALLER, GATEWAY]
            ),
            "keys *** and ***"
        );
        assert_eq!(scrub("nothing here", &[CALLER]), "nothing here");
    }
}
