//! deploy/grafana/batchgate.json: every query in the dashboard names only metrics the
//! gateway exports, as scraped from `/metrics` after traffic that exercises each of them.

use std::collections::BTreeSet;

use crate::metrics::{known_traffic, metered_app, scrape_until};

/// Exported only where Redis is configured; tests/redis/readiness.rs scrapes it.
const WITH_REDIS_ONLY: [&str; 1] = ["batchgate_redis_up"];

/// Words of PromQL that are not metric names.
const PROMQL: [&str; 14] = [
    "sum",
    "rate",
    "histogram_quantile",
    "count",
    "min",
    "max",
    "avg",
    "increase",
    "by",
    "without",
    "on",
    "ignoring",
    "and",
    "or",
];

/// Every query of the dashboard: panel targets' `expr` and variables' `definition`.
fn queries(value: &serde_json::Value, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "definition", serde_json::Value::String(query)) => {
                        found.push(query.clone())
                    }
                    _ => queries(value, found),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| queries(v, found)),
        _ => {}
    }
}

/// The metric names in `query`: what is left once label matchers `{…}`, ranges `[…]`,
/// grouping clauses `by (…)` and strings are taken out, and PromQL's own words skipped.
fn metric_names(query: &str) -> BTreeSet<String> {
    // label_values(<metric>, <label>): only the first argument is a metric.
    let query = match query.strip_prefix("label_values(") {
        Some(rest) => rest.split(',').next().unwrap_or_default().to_owned(),
        None => query.to_owned(),
    };
    let mut kept = String::new();
    let mut depth_braces = 0;
    let mut depth_brackets = 0;
    for c in query.chars() {
        match c {
            '{' => depth_braces += 1,
            '}' => depth_braces -= 1,
            '[' => depth_brackets += 1,
            ']' => depth_brackets -= 1,
            _ if depth_braces == 0 && depth_brackets == 0 => kept.push(c),
            _ => {}
        }
    }
    // `by (a, b)`: drop the clause's parenthesis with its labels.
    for clause in ["by (", "without ("] {
        while let Some(start) = kept.find(clause) {
            let end = kept[start..]
                .find(')')
                .map_or(kept.len(), |e| start + e + 1);
            kept.replace_range(start..end, " ");
        }
    }
    kept.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| !w.is_empty())
        .filter(|w| !w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .filter(|w| !PROMQL.contains(w))
        .map(str::to_owned)
        .collect()
}

#[test]
fn metric_names_are_found_apart_from_labels_and_functions() {
    let names = metric_names(
        "histogram_quantile(0.99, sum by (le, rpc_method) (rate(x_bucket{a=\"b\"}[5m]))) / sum(y_total) * 60",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["x_bucket", "y_total"]
    );
    assert_eq!(
        metric_names("label_values(z_count, instance)")
            .into_iter()
            .collect::<Vec<_>>(),
        ["z_count"]
    );
}

#[tokio::test]
async fn every_dashboard_query_names_an_exported_metric() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/batchgate.json");
    let text = std::fs::read_to_string(path).expect("the dashboard exists");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(dashboard["schemaVersion"], 39);
    assert!(
        dashboard["templating"]["list"]
            .as_array()
            .is_some_and(|vars| vars.iter().any(|v| v["type"] == "datasource")),
        "a data source variable, so the dashboard imports anywhere"
    );
    let mut found = Vec::new();
    queries(&dashboard, &mut found);
    assert!(found.len() >= 10, "{found:?}");

    let mut app = metered_app().await;
    known_traffic(&mut app).await;
    let page = scrape_until(&app, |page| page.has("batchgate_watch_watchers", &[])).await;
    let exported: BTreeSet<&str> = page.samples.iter().map(|s| s.name.as_str()).collect();
    for query in &found {
        let names = metric_names(query);
        assert!(!names.is_empty(), "a query naming no metric: {query}");
        for name in names {
            assert!(
                exported.contains(name.as_str()) || WITH_REDIS_ONLY.contains(&name.as_str()),
                "{name} (in `{query}`) is not exported; the gateway exports {exported:?}"
            );
        }
    }
}
