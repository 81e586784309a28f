//! Where Redis is: one node (`redis://`, `rediss://`) or a Cluster's seed nodes, parsed
//! from configuration, with any password kept out of `Debug`, `Display` and errors.

use std::fmt;

use url::Url;

/// A Redis URL whose password never prints: `Debug` and `Display` show `***` instead.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(Url);

impl RedisUrl {
    /// Parses `redis://[user][:password@]host[:port][/db]` or `rediss://…` (TLS). A bare
    /// `host:port` (the usual way to list Cluster nodes) means `redis://host:port`.
    pub fn parse(raw: &str) -> Result<RedisUrl, String> {
        let raw = raw.trim();
        let with_scheme = if raw.contains("://") {
            raw.to_string()
        } else {
            format!("redis://{raw}")
        };
        // The parse error of `url` never repeats the input, so it cannot leak a password.
        let url = Url::parse(&with_scheme).map_err(|e| format!("not a Redis URL: {e}"))?;
        if !matches!(url.scheme(), "redis" | "rediss") {
            return Err(format!(
                "scheme {:?} is not redis:// or rediss://",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("a Redis URL needs a host".into());
        }
        Ok(RedisUrl(url))
    }

    /// The URL with its password, for the one place that connects.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    /// The password, if any (for scrubbing it out of error text).
    pub fn password(&self) -> Option<&str> {
        self.0.password().filter(|p| !p.is_empty())
    }

    /// True for `rediss://`.
    pub fn is_tls(&self) -> bool {
        self.0.scheme() == "rediss"
    }

    /// The URL with the password replaced by `***`, safe to log.
    pub fn redacted(&self) -> String {
        let mut url = self.0.clone();
        if url.password().is_some() {
            // Only fails for URLs that cannot have credentials, which these can.
            let _ = url.set_password(Some("***"));
        }
        url.to_string()
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.redacted())
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// The Redis deployment a replica shares state through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server (or a proxy in front of several).
    Single(RedisUrl),
    /// Redis Cluster, reached through these seed nodes.
    Cluster(Vec<RedisUrl>),
}

impl RedisTarget {
    /// The target of `redis_url` / `redis_cluster_nodes`; `None` when neither is set.
    pub fn from_settings(
        url: Option<&str>,
        cluster_nodes: Option<&str>,
    ) -> Result<Option<RedisTarget>, String> {
        let url = url.map(str::trim).filter(|u| !u.is_empty());
        let nodes: Vec<&str> = cluster_nodes
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        match (url, nodes.is_empty()) {
            (None, true) => Ok(None),
            (Some(url), true) => RedisUrl::parse(url)
                .map(|u| Some(RedisTarget::Single(u)))
                .map_err(|e| format!("redis_url: {e}")),
            (None, false) => nodes
                .iter()
                .map(|n| RedisUrl::parse(n).map_err(|e| format!("redis_cluster_nodes: {e}")))
                .collect::<Result<Vec<_>, _>>()
                .map(|nodes| Some(RedisTarget::Cluster(nodes))),
            (Some(_), false) => {
                Err("set redis_url or redis_cluster_nodes, not both (put a Cluster's password in each node URL)".into())
            }
        }
    }

    /// Every password in the target, for scrubbing: each as written in its URL and,
    /// when that differs, percent-decoded, since the client sends (and its errors may
    /// echo) the decoded form.
    pub fn passwords(&self) -> Vec<String> {
        let urls: &[RedisUrl] = match self {
            RedisTarget::Single(url) => std::slice::from_ref(url),
            RedisTarget::Cluster(nodes) => nodes,
        };
        let mut passwords = Vec::new();
        for password in urls.iter().filter_map(RedisUrl::password) {
            let decoded = percent_decode(password);
            if !decoded.is_empty() && decoded != password {
                passwords.push(decoded);
            }
            passwords.push(password.to_string());
        }
        // Longest first, so a password that contains another is replaced whole.
        passwords.sort_by_key(|p| std::cmp::Reverse(p.len()));
        passwords
    }

    /// `text` with every password of the target replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        self.passwords()
            .iter()
            .fold(text.to_string(), |t, p| t.replace(p.as_str(), "***"))
    }
}

/// `raw` with each `%XX` escape decoded (a malformed escape is kept as written).
fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_print() {
        let target = RedisTarget::from_settings(Some("rediss://app:hunter2@cache:6380/1"), None)
            .unwrap()
            .unwrap();
        let shown = format!("{target:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("rediss://app:***@cache:6380/1"), "{shown}");
        assert_eq!(target.scrub("auth hunter2 failed"), "auth *** failed");
    }

    #[test]
    fn encoded_passwords_are_scrubbed_in_both_forms() {
        let target = RedisTarget::from_settings(Some("redis://:p%40ss%2Fw0rd@cache:6379"), None)
            .unwrap()
            .unwrap();
        assert_eq!(
            target.scrub("auth p@ss/w0rd failed; url had p%40ss%2Fw0rd"),
            "auth *** failed; url had ***"
        );
        assert_eq!(percent_decode("a%2"), "a%2", "a cut escape is kept");
    }

    #[test]
    fn cluster_nodes_are_comma_separated_host_ports_or_urls() {
        let target =
            RedisTarget::from_settings(None, Some("10.0.0.1:7000, redis://10.0.0.2:7001,"))
                .unwrap()
                .unwrap();
        let RedisTarget::Cluster(nodes) = target else {
            panic!("cluster expected")
        };
        let shown: Vec<_> = nodes.iter().map(RedisUrl::redacted).collect();
        assert_eq!(shown, ["redis://10.0.0.1:7000", "redis://10.0.0.2:7001"]);
    }

    #[test]
    fn bad_settings_are_refused_without_echoing_secrets() {
        assert_eq!(RedisTarget::from_settings(None, Some(" , ")), Ok(None));
        let both = RedisTarget::from_settings(Some("redis://a"), Some("b:1"));
        assert!(both.is_err());
        let scheme = RedisTarget::from_settings(Some("http://:pw_secret@a"), None).unwrap_err();
        assert!(!scheme.contains("pw_secret"), "{scheme}");
    }
}
