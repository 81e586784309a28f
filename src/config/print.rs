//! What `check-config` prints: the settings `serve` runs with, as a TOML file that
//! `--config` reads back, with every secret left out.

use url::Url;

use crate::shared_redis::RedisUrl;

use super::{Config, ConfigError, ConfigLayer};

impl ConfigLayer {
    /// What `serve` runs with, as a layer: this (merged) layer over the defaults, with
    /// the base URLs as `config` (its resolution) normalized them, and `allow_anonymous`
    /// on when both upstreams are the built-in simulator, as `serve` makes it.
    pub fn effective(self, config: &Config) -> ConfigLayer {
        let mut layer = self.over(ConfigLayer::defaults());
        layer.sutro_base_url = config.sutro_base_url.as_ref().map(Url::to_string);
        layer.xai_base_url = config.xai_base_url.as_ref().map(Url::to_string);
        if layer.sutro_base_url.is_none() && layer.xai_base_url.is_none() {
            layer.allow_anonymous = Some(true);
        }
        layer
    }

    /// This layer as a TOML file `--config` reads back, with no secret in it: the API
    /// keys and a Redis URL with a password are left out, and named in a comment only
    /// (a Redis URL with its password as `***`). Unset settings are listed as comments.
    pub fn to_redacted_toml(&self) -> Result<String, ConfigError> {
        let mut shown = self.clone();
        let mut notes = Vec::new();
        for (name, key) in [
            ("sutro_api_key", shown.sutro_api_key.take()),
            ("xai_api_key", shown.xai_api_key.take()),
        ] {
            if key.is_some_and(|k| !k.is_empty()) {
                notes.push(format!("# {name} is set (not shown)"));
            }
        }
        if let Some(url) = shown.redis_url.take() {
            match RedisUrl::parse(&url) {
                Ok(parsed) if parsed.password().is_some() => notes.push(format!(
                    "# redis_url = \"{}\" (set; its password is not shown)",
                    parsed.redacted()
                )),
                // A URL that does not parse never resolves, so nothing prints it.
                Ok(_) => shown.redis_url = Some(url),
                Err(_) => notes.push("# redis_url is set (not shown)".into()),
            }
        }
        if let Some(nodes) = shown.redis_cluster_nodes.take() {
            let parsed: Result<Vec<RedisUrl>, String> = nodes
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(RedisUrl::parse)
                .collect();
            match parsed {
                Ok(urls) if urls.iter().any(|u| u.password().is_some()) => {
                    let redacted: Vec<String> = urls.iter().map(RedisUrl::redacted).collect();
                    notes.push(format!(
                        "# redis_cluster_nodes = \"{}\" (set; passwords are not shown)",
                        redacted.join(",")
                    ));
                }
                Ok(_) => shown.redis_cluster_nodes = Some(nodes),
                Err(_) => notes.push("# redis_cluster_nodes is set (not shown)".into()),
            }
        }
        let body = toml::to_string(&shown)
            .map_err(|e| ConfigError(format!("cannot write the settings as TOML: {e}")))?;
        let table: toml::Table = toml::from_str(&body)
            .map_err(|e| ConfigError(format!("cannot read back the settings' TOML: {e}")))?;
        let secret = |name: &str| notes.iter().any(|n| n.starts_with(&format!("# {name} ")));
        let unset: Vec<String> = Self::keys()
            .into_iter()
            .filter(|k| !table.contains_key(k) && !secret(k))
            .map(|k| match k.as_str() {
                "sutro_base_url" | "xai_base_url" => {
                    format!("# {k}: unset (the built-in simulator)")
                }
                _ => format!("# {k}: unset"),
            })
            .collect();
        let mut out = String::from(
            "# The settings `batchgate serve` would run with, as a file for --config.\n",
        );
        for line in notes.iter().chain(&unset) {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str(&body);
        Ok(out)
    }
}
