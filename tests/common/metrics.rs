//! Reads a gateway's admin port: a `/metrics` scrape parsed into samples, and the
//! status of `/healthz` and `/readyz`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

/// One sample line: its metric name, labels and value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed Prometheus text page.
#[derive(Debug)]
pub struct Scrape {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// The sum of the samples of `name` whose labels include every pair of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// Whether any sample of `name` has every pair of `labels`.
    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.matching(name, labels).next().is_some()
    }

    /// The metric families named in `# TYPE` lines.
    pub fn families(&self) -> Vec<String> {
        self.text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }
}

/// GET `path` on the admin port: its status and body.
pub async fn get(admin: SocketAddr, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{admin}{path}"))
        .await
        .expect("the admin port answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a text body"))
}

/// Scrapes `/metrics`.
pub async fn scrape(admin: SocketAddr) -> Scrape {
    let (status, text) = get(admin, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    let samples = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(parse_sample)
        .collect();
    Scrape { text, samples }
}

/// `name{k="v",…} value`; label values here never hold `",` or escaped quotes.
fn parse_sample(line: &str) -> Sample {
    let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
    let value = value.parse().expect("a numeric value");
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => {
            let rest = rest.strip_suffix('}').expect("labels close");
            let labels = rest
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                    (k.to_owned(), v.trim_end_matches('"').to_owned())
                })
                .collect();
            (name.to_owned(), labels)
        }
        None => (series.to_owned(), BTreeMap::new()),
    };
    Sample {
        name,
        labels,
        value,
    }
}
