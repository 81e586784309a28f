//! The xAI simulator over plain HTTP, for the simulator's own tests: a started
//! simulator with a client, request builders, and checks of xAI's error shape.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use batchgate::sim::xai::XaiSimConfig;
use batchgate::sim::{self, SimConfig, SimHandle};
use chrono::NaiveDate;
use reqwest::StatusCode;
use serde_json::{Value, json};

pub const CANCEL_ROUTE: &str = "POST /v1/batches/{batch_id}:cancel";

pub struct Sim {
    pub handle: SimHandle,
    pub http: reqwest::Client,
    pub base: String,
}

impl Sim {
    pub async fn start(xai: XaiSimConfig) -> Self {
        batchgate::upstream::http::install_crypto_provider();
        let config = SimConfig {
            xai,
            ..SimConfig::fast()
        };
        let handle = sim::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("simulator starts");
        let base = handle.xai_base_url();
        Self {
            handle,
            http: reqwest::Client::new(),
            base,
        }
    }

    pub async fn fast() -> Self {
        Self::start(XaiSimConfig::fast()).await
    }

    /// A simulator whose requests take `request_ms` to finish.
    pub async fn paced(request_ms: u64) -> Self {
        Self::start(XaiSimConfig {
            request_ms,
            ..XaiSimConfig::fast()
        })
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(self.url(path))
            .bearer_auth(sim::XAI_DEMO_API_KEY)
    }

    pub fn post(&self, path: &str, body: Value) -> reqwest::RequestBuilder {
        self.http
            .post(self.url(path))
            .bearer_auth(sim::XAI_DEMO_API_KEY)
            .json(&body)
    }

    pub async fn json(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.expect("the simulator answers");
        let status = response.status();
        (status, response.json().await.expect("a JSON body"))
    }

    pub async fn create(&self, name: &str) -> String {
        let (status, batch) = self
            .json(self.post("batches", json!({ "name": name })))
            .await;
        assert_eq!(status, StatusCode::OK, "{batch}");
        batch["batch_id"].as_str().expect("a batch id").to_owned()
    }

    pub async fn add(&self, batch_id: &str, requests: Vec<Value>) -> (StatusCode, Value) {
        self.json(self.post(
            &format!("batches/{batch_id}/requests"),
            json!({ "batch_requests": requests }),
        ))
        .await
    }

    pub async fn add_ok(&self, batch_id: &str, requests: Vec<Value>) {
        let (status, body) = self.add(batch_id, requests).await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, json!({})),
            "an accepted add answers `{{}}`"
        );
    }

    pub async fn batch(&self, batch_id: &str) -> Value {
        let (status, batch) = self.json(self.get(&format!("batches/{batch_id}"))).await;
        assert_eq!(status, StatusCode::OK, "{batch}");
        batch
    }

    pub async fn cancel(&self, batch_id: &str) -> (StatusCode, Value) {
        self.json(self.post(&format!("batches/{batch_id}:cancel"), json!({})))
            .await
    }

    /// Polls the batch until `done` holds for its state.
    pub async fn wait_for(&self, batch_id: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..500 {
            let batch = self.batch(batch_id).await;
            if done(&batch) {
                return batch;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "batch {batch_id} never got there: {}",
            self.batch(batch_id).await
        );
    }

    pub async fn wait_until_finished(&self, batch_id: &str) -> Value {
        self.wait_for(batch_id, |b| {
            b["state"]["num_pending"] == 0 && b["state"]["num_requests"] != 0
        })
        .await
    }

    /// Every page of a list, following `pagination_token` to the last page.
    pub async fn all_pages(&self, path: &str, key: &str, limit: u32) -> Vec<Value> {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..100 {
            let mut request = self.get(path).query(&[("limit", limit.to_string())]);
            if let Some(token) = &token {
                request = request.query(&[("pagination_token", token)]);
            }
            let (status, page) = self.json(request).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            let listed = page[key].as_array().expect("a list").clone();
            assert!(listed.len() <= limit as usize);
            items.extend(listed);
            match &page["pagination_token"] {
                Value::Null => return items,
                Value::String(next) => token = Some(next.clone()),
                other => panic!("pagination_token must be a string or null, got {other}"),
            }
        }
        panic!("{path} never reached its last page");
    }
}

pub fn chat(id: Option<&str>, prompt: &str) -> Value {
    chat_with(
        id,
        json!({ "model": "grok-4", "messages": [{ "role": "user", "content": prompt }] }),
    )
}

pub fn chat_with(id: Option<&str>, body: Value) -> Value {
    let mut item = json!({ "batch_request": { "chat_get_completion": body } });
    if let Some(id) = id {
        item["batch_request_id"] = json!(id);
    }
    item
}

pub fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["batch_request_id"].as_str().expect("an id").to_owned())
        .collect()
}

pub fn date(value: &Value) -> NaiveDate {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("a date string, got {value}"));
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .unwrap_or_else(|_| panic!("a date-only time, got {text}"))
}

/// xAI's error body: exactly `code` (the gRPC status text) and `error` (the message).
pub fn assert_xai_error(body: &Value, code: &str, error_contains: &str) {
    let keys: Vec<&String> = body.as_object().expect("an object").keys().collect();
    assert_eq!(keys, ["code", "error"], "{body}");
    assert_eq!(body["code"], code, "{body}");
    let error = body["error"].as_str().expect("a string error");
    assert!(
        error.contains(error_contains),
        "{error:?} should contain {error_contains:?}"
    );
}

pub const INVALID: &str = "Client specified an invalid argument";
pub const NOT_FOUND: &str = "Some requested entity was not found";
pub const FAILED_PRECONDITION: &str =
    "The system is not in a state required for the operation's execution";
