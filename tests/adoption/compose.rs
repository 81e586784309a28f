//! deploy/compose.yaml: every batchgate service runs a real subcommand with real flags
//! and BATCHGATE_* variables, the gateways share one Redis, and every file it mounts
//! exists. (`docker compose config` is not available where the suite runs.)

use serde_json::Value;

use crate::{assert_known_variables, documented, repo, yaml_documents};

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().expect("a string").to_owned())
            .collect(),
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        Value::Null => Vec::new(),
        other => panic!("not a list of strings: {other}"),
    }
}

fn environment(service: &Value) -> Vec<(String, String)> {
    match &service["environment"] {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                let (k, v) = i.as_str().unwrap().split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        Value::Null => Vec::new(),
        other => panic!("environment is {other}"),
    }
}

#[test]
fn compose_services_use_the_gateways_real_flags_and_variables() {
    let path = repo().join("deploy/compose.yaml");
    let compose = yaml_documents(&path).remove(0);
    let services = compose["services"].as_object().expect("services");

    let mut gateways = Vec::new();
    let mut sims = 0;
    for (name, service) in services {
        let image = service["image"].as_str().unwrap_or_default();
        if !image.starts_with("batchgate") {
            continue;
        }
        assert!(
            !image.ends_with(":latest") && image.contains(':'),
            "{name}: a versioned image tag, not {image}"
        );
        let command = strings(&service["command"]);
        let subcommand = command.first().map(String::as_str).unwrap_or("serve");
        let (flags, _) = documented(subcommand);
        for word in &command[1..] {
            if let Some(flag) = word.strip_prefix("--") {
                let flag = flag.split('=').next().unwrap();
                assert!(
                    flags.iter().any(|f| f == flag),
                    "{name}: `batchgate {subcommand}` has no --{flag} (it has {flags:?})"
                );
            }
        }
        let env = environment(service);
        let vars: Vec<String> = env.iter().map(|(k, _)| k.clone()).collect();
        assert_known_variables(&format!("compose.yaml {name}"), subcommand, &vars);

        // Published ports are ports the process listens on.
        let listens: Vec<String> = env
            .iter()
            .filter(|(k, _)| k.ends_with("_LISTEN"))
            .map(|(_, v)| v.clone())
            .chain(
                command
                    .windows(2)
                    .filter(|w| w[0] == "--listen")
                    .map(|w| w[1].clone()),
            )
            .collect();
        for port in strings(&service["ports"]) {
            let inside = port.rsplit(':').next().unwrap();
            assert!(
                listens.iter().any(|l| l.ends_with(&format!(":{inside}"))
                    && (l.starts_with("0.0.0.0:") || l.starts_with("[::]:"))),
                "{name}: publishes {port}, but listens on {listens:?} (in a container, bind 0.0.0.0)"
            );
        }
        match subcommand {
            "serve" => gateways.push((name.clone(), env)),
            "sim" => sims += 1,
            other => panic!("{name}: runs `batchgate {other}`"),
        }
    }
    assert_eq!(sims, 1, "one simulator");
    assert!(gateways.len() >= 2, "two gateway replicas: {gateways:?}");
    for (name, env) in &gateways {
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let redis = get("BATCHGATE_REDIS_URL").unwrap_or_else(|| panic!("{name}: no Redis"));
        assert!(
            services.contains_key(
                redis
                    .trim_start_matches("redis://")
                    .split(':')
                    .next()
                    .unwrap()
            ),
            "{name}: Redis {redis} is no service"
        );
        let otlp = get("BATCHGATE_OTLP_ENDPOINT").unwrap_or_else(|| panic!("{name}: no OTLP"));
        assert!(otlp.contains("otel-collector:4317"), "{name}: {otlp}");
        assert_eq!(
            get("BATCHGATE_ADMIN_LISTEN"),
            Some("0.0.0.0:9464"),
            "{name}"
        );
        assert_eq!(
            get("BATCHGATE_REDIS_URL"),
            gateways[0]
                .1
                .iter()
                .find(|(k, _)| k == "BATCHGATE_REDIS_URL")
                .map(|(_, v)| v.as_str()),
            "replicas share one Redis"
        );
    }
}

#[test]
fn compose_mounts_exist_and_grafana_gets_the_dashboard() {
    let deploy = repo().join("deploy");
    let compose = yaml_documents(&deploy.join("compose.yaml")).remove(0);
    let mut mounted = Vec::new();
    for (name, service) in compose["services"].as_object().unwrap() {
        for volume in strings(&service["volumes"]) {
            let host = volume.split(':').next().unwrap();
            if host.starts_with('.') {
                mounted.push(host.to_owned());
                assert!(deploy.join(host).exists(), "{name}: {host} does not exist");
            }
        }
    }
    assert!(
        mounted.iter().any(|m| m == "./grafana/batchgate.json"),
        "Grafana does not mount the dashboard: {mounted:?}"
    );
    let collector = yaml_documents(&deploy.join("otel-collector.yaml")).remove(0);
    assert!(
        collector["service"]["pipelines"]["traces"]["receivers"]
            .as_array()
            .unwrap()
            .contains(&"otlp".into())
    );
    let prometheus = yaml_documents(&deploy.join("prometheus/prometheus.yml")).remove(0);
    let targets = prometheus.to_string();
    assert!(
        targets.contains("gateway-1:9464") && targets.contains("gateway-2:9464"),
        "Prometheus scrapes both replicas' admin ports: {targets}"
    );
    let providers =
        yaml_documents(&deploy.join("grafana/provisioning/dashboards/batchgate.yaml")).remove(0);
    assert_eq!(
        providers["providers"][0]["options"]["path"],
        "/var/lib/grafana/dashboards"
    );
}
