//! The configuration's unit tests: layering, validation, defaults and printing.

use std::path::Path;

use super::*;
use crate::ratelimit::RedisDown;

#[test]
fn higher_layer_wins_and_gaps_fall_through() {
    let flags = ConfigLayer {
        upstream_timeout_ms: Some(1_000),
        ..Default::default()
    };
    let file: ConfigLayer = toml::from_str(
        "upstream_timeout_ms = 5000\nretry_max_attempts = 2\nsutro_base_url = \"https://acme.sutro.example\"\n",
    )
    .unwrap();
    let config = Config::resolve(flags.over(file)).unwrap();
    assert_eq!(config.upstream_timeout, Duration::from_secs(1));
    assert_eq!(config.retry.max_attempts, 2);
    assert_eq!(
        config.sutro_base_url.unwrap().as_str(),
        "https://acme.sutro.example/v1/"
    );
}

#[test]
fn unknown_file_keys_and_bad_values_are_refused() {
    assert!(toml::from_str::<ConfigLayer>("no_such_setting = 1").is_err());
    let bad_url = ConfigLayer {
        sutro_base_url: Some("https://acme.example/api".into()),
        ..Default::default()
    };
    assert!(Config::resolve(bad_url).is_err());
}

#[test]
fn secrets_do_not_print() {
    let config = Config::resolve(ConfigLayer {
        sutro_api_key: Some("sk_live_secret".into()),
        ..Default::default()
    })
    .unwrap();
    assert!(!format!("{config:?}").contains("sk_live_secret"));
}

#[test]
fn redis_settings_resolve_with_defaults_and_hide_passwords() {
    let config = Config::embedded();
    assert_eq!(config.redis, None);
    assert_eq!(config.redis_timeout, Duration::from_millis(250));
    assert_eq!(config.cache_live_ttl, Duration::from_secs(1));
    assert_eq!(config.cache_final_ttl, Duration::from_secs(3_600));
    assert_eq!(config.auth_ttl, Duration::from_secs(60));

    let file: ConfigLayer = toml::from_str(
        "redis_url = \"rediss://:redis_pw_secret@cache.internal:6380\"\nwatch_lease_ms = 3000\n",
    )
    .unwrap();
    let config = Config::resolve(file).unwrap();
    assert!(matches!(config.redis, Some(RedisTarget::Single(ref u)) if u.is_tls()));
    assert_eq!(config.watch_lease, Duration::from_secs(3));
    let shown = format!("{config:?}");
    assert!(!shown.contains("redis_pw_secret"), "{shown}");

    let both = ConfigLayer {
        redis_url: Some("redis://a:1".into()),
        redis_cluster_nodes: Some("b:1,c:1".into()),
        ..Default::default()
    };
    assert!(Config::resolve(both).is_err());
}

#[test]
fn resource_bounds_have_defaults_and_refuse_zero() {
    let config = Config::embedded();
    assert_eq!(config.http2_max_concurrent_streams, 1000);
    assert_eq!(config.max_request_bytes_in_flight, 256 << 20);
    assert_eq!(config.upstream_max_in_flight, 64);
    let file: ConfigLayer =
        toml::from_str("http2_max_concurrent_streams = 50\nupstream_max_in_flight = 8\n").unwrap();
    let config = Config::resolve(file).unwrap();
    assert_eq!(config.http2_max_concurrent_streams, 50);
    assert_eq!(config.upstream_max_in_flight, 8);
    for zero in [
        "http2_max_concurrent_streams = 0",
        "upstream_max_in_flight = 0",
    ] {
        let layer: ConfigLayer = toml::from_str(zero).unwrap();
        assert!(Config::resolve(layer).is_err(), "{zero}");
    }
}

#[test]
fn rate_limits_come_from_toml_tables_and_are_off_by_default() {
    assert!(!Config::embedded().rate_limits.enabled());
    let file: ConfigLayer = toml::from_str(
        "max_streams_per_tenant = 4\nrate_limit_redis_down = \"open\"\nrate_limit_replicas = 3\n\
         [rate_limits.read]\nper_second = 50\nburst = 10\n\
         [tenant_limits.\"key-abc\".read]\nper_second = 5\nburst = 1\n",
    )
    .unwrap();
    let limits = Config::resolve(file).unwrap().rate_limits;
    let read = |tenant| {
        limits
            .limit(tenant, crate::ratelimit::Class::Read)
            .map(|l| l.burst)
    };
    assert_eq!((read("other"), read("key-abc")), (Some(10), Some(1)));
    assert_eq!(limits.max_streams_per_tenant, Some(4));
    assert_eq!(limits.redis_down, RedisDown::Open);
    assert_eq!(limits.replicas, 3);
    let bad: ConfigLayer = toml::from_str("[rate_limits.read]\nper_second = 0\n").unwrap();
    let error = Config::resolve(bad).unwrap_err();
    assert!(
        error.0.contains("rate_limits.read.per_second"),
        "{}",
        error.0
    );
}

#[test]
fn tls_needs_both_a_certificate_and_a_key() {
    assert_eq!(Config::embedded().tls, None);
    let both: ConfigLayer =
        toml::from_str("tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\ntls_client_ca = \"ca.pem\"\n")
            .unwrap();
    let tls = Config::resolve(both).unwrap().tls.unwrap();
    assert_eq!(tls.client_ca.as_deref(), Some(Path::new("ca.pem")));
    for half in [
        "tls_cert = \"c.pem\"",
        "tls_key = \"k.pem\"",
        "tls_client_ca = \"ca.pem\"",
    ] {
        let layer: ConfigLayer = toml::from_str(half).unwrap();
        let error = Config::resolve(layer).unwrap_err();
        assert!(error.0.contains("tls_"), "{half}: {}", error.0);
    }
}

#[test]
fn cors_origins_are_off_by_default_and_checked() {
    assert_eq!(Config::embedded().cors, CorsOrigins::None);
    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        layer: ConfigLayer,
    }
    let flags = <Flags as clap::Parser>::try_parse_from([
        "batchgate",
        "--cors-allowed-origins",
        "http://127.0.0.1:8080,https://Console.example.com",
    ])
    .unwrap();
    let file: ConfigLayer = toml::from_str("cors_allowed_origins = [\"*\"]\n").unwrap();
    let config = Config::resolve(flags.layer.over(file.clone())).unwrap();
    assert_eq!(
        config.cors,
        CorsOrigins::List(vec![
            "http://127.0.0.1:8080".into(),
            "https://console.example.com".into()
        ])
    );
    assert_eq!(Config::resolve(file).unwrap().cors, CorsOrigins::Any);
    for bad in [
        "cors_allowed_origins = [\"https://console.example.com/app\"]",
        "cors_allowed_origins = [\"*\", \"https://console.example.com\"]",
        "cors_allowed_origins = [\"console.example.com\"]",
    ] {
        let layer: ConfigLayer = toml::from_str(bad).unwrap();
        let error = Config::resolve(layer).unwrap_err();
        assert!(
            error.0.starts_with("cors_allowed_origins: "),
            "{bad}: {}",
            error.0
        );
    }
}

#[test]
fn the_defaults_resolve_and_every_flag_help_states_its_default() {
    let embedded = Config::embedded();
    assert_eq!(embedded.listen, SocketAddr::from(([127, 0, 0, 1], 50051)));
    assert!(embedded.sutro_base_url.is_none() && embedded.redis.is_none());
    // Every key the defaults print is a setting, and a setting's key is its flag's.
    let keys = ConfigLayer::keys();
    let printed: toml::Table =
        toml::from_str(&toml::to_string(&ConfigLayer::defaults()).unwrap()).unwrap();
    for key in printed.keys() {
        assert!(keys.contains(key), "{key}");
    }
    assert!(keys.iter().any(|k| k == "results_chunk_bytes"));
    assert!(keys.iter().any(|k| k == "tenant_limits"));
    // `--help` says `[default: X]` in prose; X must be what `ConfigLayer::defaults()` sets.
    use clap::Args;
    let command = ConfigLayer::augment_args(clap::Command::new("batchgate"));
    let mut checked = 0;
    for arg in command.get_arguments() {
        let key = arg.get_id().to_string();
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        let Some(stated) = help.split("[default: ").nth(1) else {
            assert!(
                !printed.contains_key(&key),
                "{key}'s --help states no default"
            );
            continue;
        };
        let stated = stated.split([',', ';', ']']).next().unwrap().trim();
        let Some(value) = printed.get(&key) else {
            assert_eq!(
                stated, "none",
                "{key} has no default, its --help says {stated}"
            );
            continue;
        };
        let actual = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Float(f) if f.fract() == 0.0 => format!("{f:.0}"),
            other => other.to_string(),
        };
        assert_eq!(
            stated, actual,
            "{key}: --help and ConfigLayer::defaults() differ"
        );
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} defaults checked");
}

#[test]
fn the_effective_settings_print_as_toml_that_reads_back_without_secrets() {
    let layer: ConfigLayer = toml::from_str(
        "sutro_base_url = \"https://acme.sutro.example\"\nsutro_api_key = \"sk_live_secret\"\n\
         xai_api_key = \"xai-secret\"\nredis_cluster_nodes = \"redis://:pw_one@a:7000,b:7000\"\n\
         upstream_timeout_ms = 5000\n[rate_limits.read]\nper_second = 2.5\n",
    )
    .unwrap();
    let config = Config::resolve(layer.clone()).unwrap();
    let text = layer.effective(&config).to_redacted_toml().unwrap();
    for secret in ["sk_live_secret", "xai-secret", "pw_one"] {
        assert!(!text.contains(secret), "{secret} in:\n{text}");
    }
    assert!(text.contains("# sutro_api_key is set"), "{text}");
    assert!(text.contains("redis://:***@a:7000"), "{text}");
    let back: ConfigLayer = toml::from_str(&text).unwrap();
    assert_eq!(back.sutro_api_key, None);
    assert_eq!(back.redis_cluster_nodes, None);
    assert_eq!(back.upstream_timeout_ms, Some(5000));
    assert_eq!(back.retry_max_delay_ms, Some(2000));
    assert_eq!(
        back.sutro_base_url.as_deref(),
        Some("https://acme.sutro.example/v1/")
    );
    assert_eq!(back.allow_anonymous, Some(false));
    let again = Config::resolve(back.clone()).unwrap();
    // Read back, the same settings print again: only the notes on secrets differ.
    let settings = |text: &str| {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let reprinted = back.effective(&again).to_redacted_toml().unwrap();
    assert_eq!(settings(&reprinted), settings(&text));
    assert_eq!(
        again
            .rate_limits
            .limit("anyone", crate::ratelimit::Class::Read),
        config
            .rate_limits
            .limit("anyone", crate::ratelimit::Class::Read)
    );
}

#[test]
fn idempotency_records_must_outlive_a_create() {
    let short = ConfigLayer {
        upstream_timeout_ms: Some(60_000),
        idempotency_ttl_secs: Some(30),
        ..Default::default()
    };
    let error = Config::resolve(short).unwrap_err();
    assert!(error.0.contains("idempotency_ttl_secs (30)"), "{}", error.0);
    let enough = ConfigLayer {
        upstream_timeout_ms: Some(60_000),
        idempotency_ttl_secs: Some(62),
        ..Default::default()
    };
    assert!(Config::resolve(enough).is_ok());
}
