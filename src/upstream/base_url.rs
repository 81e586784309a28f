//! Validates an upstream base URL: an origin or `<origin>/v1`, https unless loopback.
//! Mirrors the rules of Sutro's own SDK (`normalize_api_url`), which xAI's URL also meets.

use url::Url;

/// Hosts of Sutro's retired shared API; they answer 410 to everything.
const RETIRED_SUTRO_HOSTS: [&str; 2] = ["api.sutro.sh", "serve.sutro.sh"];
const RETIRED_SUTRO_SUFFIXES: [&str; 2] = [
    ".api.materialized.dev",
    "--tensor-factory-fastapi-app.modal.run",
];

/// Normalizes `raw` to `<origin>/v1/` (with the trailing slash, so joins stay under it).
pub fn normalize_base_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw.trim()).map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
    let host = url
        .host_str()
        .ok_or_else(|| format!("{raw:?} has no host"))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(host) => {}
        "http" => {
            return Err(format!(
                "{raw:?} must use https (http is allowed for loopback only)"
            ));
        }
        other => return Err(format!("{raw:?} has unsupported scheme {other:?}")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the URL must not embed credentials".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{raw:?} must not have a query string or fragment"));
    }
    match url.path().trim_end_matches('/') {
        "" | "/v1" => {}
        other => {
            return Err(format!(
                "{raw:?} has path {other:?}; give the origin or <origin>/v1"
            ));
        }
    }
    let mut normalized = url;
    normalized.set_path("/v1/");
    Ok(normalized)
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// True for the shared Sutro hosts that were retired in favour of per-customer deployments.
pub fn is_retired_sutro_host(url: &Url) -> bool {
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    RETIRED_SUTRO_HOSTS.contains(&host.as_str())
        || RETIRED_SUTRO_SUFFIXES.iter().any(|s| host.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_origins_and_v1_and_normalizes() {
        for raw in [
            "https://acme.sutro.example",
            "https://acme.sutro.example/",
            "https://acme.sutro.example/v1",
            "https://acme.sutro.example/v1/",
        ] {
            assert_eq!(
                normalize_base_url(raw).unwrap().as_str(),
                "https://acme.sutro.example/v1/",
                "{raw}"
            );
        }
        assert!(normalize_base_url("http://127.0.0.1:8080/v1").is_ok());
        assert!(normalize_base_url("http://localhost:8080").is_ok());
        assert!(normalize_base_url("http://[::1]:8080").is_ok());
    }

    #[test]
    fn refuses_what_the_sdk_refuses() {
        for raw in [
            "http://acme.sutro.example",
            "https://acme.sutro.example/v2",
            "https://acme.sutro.example/v1?x=1",
            "https://acme.sutro.example/#frag",
            "https://user:pw@acme.sutro.example",
            "ftp://acme.sutro.example",
            "not a url",
        ] {
            assert!(normalize_base_url(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn knows_the_retired_hosts() {
        assert!(is_retired_sutro_host(
            &normalize_base_url("https://api.sutro.sh").unwrap()
        ));
        assert!(!is_retired_sutro_host(
            &normalize_base_url("https://acme.sutro.example").unwrap()
        ));
    }
}
