//! The xAI half of the simulator, driven over plain HTTP: the documented shapes, requests
//! finishing over simulated time, atomic and idempotent adds, cancel, paging and errors.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use batchgate::sim::xai::XaiSimConfig;
use batchgate::sim::{self, SimConfig, SimHandle};
use chrono::NaiveDate;
use reqwest::StatusCode;
use serde_json::{Value, json};

const CANCEL_ROUTE: &str = "POST /v1/batches/{batch_id}:cancel";

struct Sim {
    handle: SimHandle,
    http: reqwest::Client,
    base: String,
}

impl Sim {
    async fn start(xai: XaiSimConfig) -> Self {
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

    async fn fast() -> Self {
        Self::start(XaiSimConfig::fast()).await
    }

    /// A simulator whose requests take `request_ms` to finish.
    async fn paced(request_ms: u64) -> Self {
        Self::start(XaiSimConfig {
            request_ms,
            ..XaiSimConfig::fast()
        })
        .await
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(self.url(path))
            .bearer_auth(sim::XAI_DEMO_API_KEY)
    }

    fn post(&self, path: &str, body: Value) -> reqwest::RequestBuilder {
        self.http
            .post(self.url(path))
            .bearer_auth(sim::XAI_DEMO_API_KEY)
            .json(&body)
    }

    async fn json(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.expect("the simulator answers");
        let status = response.status();
        (status, response.json().await.expect("a JSON body"))
    }

    async fn create(&self, name: &str) -> String {
        let (status, batch) = self
            .json(self.post("batches", json!({ "name": name })))
            .await;
        assert_eq!(status, StatusCode::OK, "{batch}");
        batch["batch_id"].as_str().expect("a batch id").to_owned()
    }

    async fn add(&self, batch_id: &str, requests: Vec<Value>) -> (StatusCode, Value) {
        self.json(self.post(
            &format!("batches/{batch_id}/requests"),
            json!({ "batch_requests": requests }),
        ))
        .await
    }

    async fn add_ok(&self, batch_id: &str, requests: Vec<Value>) {
        let (status, body) = self.add(batch_id, requests).await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, json!({})),
            "an accepted add answers `{{}}`"
        );
    }

    async fn batch(&self, batch_id: &str) -> Value {
        let (status, batch) = self.json(self.get(&format!("batches/{batch_id}"))).await;
        assert_eq!(status, StatusCode::OK, "{batch}");
        batch
    }

    async fn cancel(&self, batch_id: &str) -> (StatusCode, Value) {
        self.json(self.post(&format!("batches/{batch_id}:cancel"), json!({})))
            .await
    }

    /// Polls the batch until `done` holds for its state.
    async fn wait_for(&self, batch_id: &str, done: impl Fn(&Value) -> bool) -> Value {
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

    async fn wait_until_finished(&self, batch_id: &str) -> Value {
        self.wait_for(batch_id, |b| {
            b["state"]["num_pending"] == 0 && b["state"]["num_requests"] != 0
        })
        .await
    }

    /// Every page of a list, following `pagination_token` to the last page.
    async fn all_pages(&self, path: &str, key: &str, limit: u32) -> Vec<Value> {
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

fn chat(id: Option<&str>, prompt: &str) -> Value {
    chat_with(
        id,
        json!({ "model": "grok-4", "messages": [{ "role": "user", "content": prompt }] }),
    )
}

fn chat_with(id: Option<&str>, body: Value) -> Value {
    let mut item = json!({ "batch_request": { "chat_get_completion": body } });
    if let Some(id) = id {
        item["batch_request_id"] = json!(id);
    }
    item
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["batch_request_id"].as_str().expect("an id").to_owned())
        .collect()
}

fn date(value: &Value) -> NaiveDate {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("a date string, got {value}"));
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .unwrap_or_else(|_| panic!("a date-only time, got {text}"))
}

/// xAI's error body: exactly `code` (the gRPC status text) and `error` (the message).
fn assert_xai_error(body: &Value, code: &str, error_contains: &str) {
    let keys: Vec<&String> = body.as_object().expect("an object").keys().collect();
    assert_eq!(keys, ["code", "error"], "{body}");
    assert_eq!(body["code"], code, "{body}");
    let error = body["error"].as_str().expect("a string error");
    assert!(
        error.contains(error_contains),
        "{error:?} should contain {error_contains:?}"
    );
}

const INVALID: &str = "Client specified an invalid argument";
const NOT_FOUND: &str = "Some requested entity was not found";
const FAILED_PRECONDITION: &str =
    "The system is not in a state required for the operation's execution";

#[tokio::test]
async fn every_route_checks_the_key_first_and_masks_a_wrong_one() {
    let sim = Sim::fast().await;
    let batch_id = sim.create("auth").await;
    let routes = [
        ("GET", "batches".to_owned()),
        ("POST", "batches".to_owned()),
        ("GET", format!("batches/{batch_id}")),
        ("POST", format!("batches/{batch_id}:cancel")),
        ("POST", format!("batches/{batch_id}/requests")),
        ("GET", format!("batches/{batch_id}/requests")),
        ("GET", "batches/batch_unknown/results".to_owned()),
    ];
    for (method, path) in routes {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let request = sim
            .http
            .request(method.clone(), sim.url(&path))
            .json(&json!({}));
        let (status, body) = sim.json(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
        assert_xai_error(
            &body,
            "The request does not have valid authentication credentials for the operation",
            "",
        );

        // xAI takes only `Bearer`: Sutro's `Key` scheme is no credential at all.
        let request = sim
            .http
            .request(method.clone(), sim.url(&path))
            .header("authorization", format!("Key {}", sim::XAI_DEMO_API_KEY))
            .json(&json!({}));
        let (status, body) = sim.json(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");

        let request = sim
            .http
            .request(method.clone(), sim.url(&path))
            .bearer_auth("xai-wrong-key")
            .json(&json!({}));
        let (status, body) = sim.json(request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path}: {body}");
        assert_xai_error(&body, INVALID, "Incorrect API key provided: xa***ey");
        assert!(
            !body.to_string().contains("xai-wrong-key"),
            "the key never appears whole"
        );
    }
    assert_eq!(
        sim.batch(&batch_id).await["cancel_time"],
        Value::Null,
        "a refused cancel did nothing"
    );
}

#[tokio::test]
async fn a_batch_has_the_documented_shape() {
    let sim = Sim::fast().await;
    let (status, created) = sim
        .json(sim.post("batches", json!({ "name": "nightly eval" })))
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let mut keys: Vec<&str> = created
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "batch_id",
            "cancel_by_xai_message",
            "cancel_time",
            "create_api_key_id",
            "create_time",
            "expire_time",
            "name",
            "state"
        ],
        "an inline batch has no input_file_id"
    );
    let batch_id = created["batch_id"].as_str().unwrap();
    let uuid = batch_id.strip_prefix("batch_").expect("batch_<uuid>");
    assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{batch_id}");
    assert_eq!(created["name"], "nightly eval");
    assert_eq!(
        date(&created["expire_time"]) - date(&created["create_time"]),
        chrono::Duration::days(30)
    );
    assert!(!created["create_api_key_id"].as_str().unwrap().is_empty());
    assert!(
        !created.to_string().contains(sim::XAI_DEMO_API_KEY),
        "the key id is not the key"
    );
    assert_eq!(
        (&created["cancel_time"], &created["cancel_by_xai_message"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(
        created["state"],
        json!({ "num_requests": 0, "num_pending": 0, "num_success": 0, "num_error": 0, "num_cancelled": 0 })
    );
    assert_eq!(
        sim.batch(batch_id).await,
        created,
        "GET answers the same batch"
    );

    let (status, body) = sim
        .json(sim.post("batches", json!({ "input_file_id": "file-1" })))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_xai_error(&body, INVALID, "name");
    let empty = sim
        .http
        .post(sim.url("batches"))
        .bearer_auth(sim::XAI_DEMO_API_KEY);
    let (status, _) = sim.json(empty).await;
    assert_eq!(
        status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "an empty POST body is 415"
    );
}

#[tokio::test]
async fn batches_list_newest_first_across_pages() {
    let sim = Sim::fast().await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(sim.create(&format!("b{i}")).await);
    }
    let (_, first) = sim.json(sim.get("batches").query(&[("limit", "2")])).await;
    assert_eq!(
        ids_of_batches(&first["batches"]),
        [created[4].clone(), created[3].clone()]
    );
    let token = first["pagination_token"]
        .as_str()
        .expect("more pages")
        .to_owned();
    // A batch created between pages lands on the first page, never on the ones to come.
    let newest = sim.create("late").await;
    let (_, second) = sim
        .json(
            sim.get("batches")
                .query(&[("limit", "2"), ("pagination_token", &token)]),
        )
        .await;
    assert_eq!(
        ids_of_batches(&second["batches"]),
        [created[2].clone(), created[1].clone()]
    );

    let everything = sim.all_pages("batches", "batches", 2).await;
    let mut expected = created.clone();
    expected.push(newest);
    expected.reverse();
    assert_eq!(ids_of_batches(&Value::Array(everything)), expected);
    let (_, default_page) = sim.json(sim.get("batches")).await;
    assert_eq!(default_page["batches"].as_array().unwrap().len(), 6);
    assert_eq!(default_page["pagination_token"], Value::Null);

    let (status, body) = sim
        .json(
            sim.get("batches")
                .query(&[("pagination_token", "not-a-token")]),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_xai_error(&body, INVALID, "pagination_token");
}

fn ids_of_batches(batches: &Value) -> Vec<String> {
    batches
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["batch_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn counters_and_metadata_move_over_simulated_time() {
    let sim = Sim::paced(800).await;
    let batch_id = sim.create("timed").await;
    sim.add_ok(
        &batch_id,
        vec![
            chat(Some("q1"), "hi"),
            chat(None, "there"),
            chat(None, "again"),
        ],
    )
    .await;

    let state = sim.batch(&batch_id).await["state"].clone();
    assert_eq!(
        state,
        json!({ "num_requests": 3, "num_pending": 3, "num_success": 0, "num_error": 0, "num_cancelled": 0 })
    );
    let (_, metadata) = sim
        .json(sim.get(&format!("batches/{batch_id}/requests")))
        .await;
    let listed = metadata["batch_request_metadata"].as_array().unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(metadata["pagination_token"], Value::Null);
    for m in listed {
        assert_eq!(m["endpoint"], "xai_api.Chat/GetCompletion");
        assert_eq!(m["model"], "grok-4");
        assert_eq!(m["state"], "pending");
        assert_eq!(m["finish_time"], Value::Null);
        date(&m["create_time"]);
    }
    let generated: Vec<String> = ids(listed).into_iter().filter(|id| id != "q1").collect();
    assert_eq!(generated.len(), 2, "q1 keeps its id");
    for id in &generated {
        let uuid = id
            .strip_prefix("batch_request_")
            .expect("batch_request_<uuid>");
        assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{id}");
    }
    let (_, results) = sim
        .json(sim.get(&format!("batches/{batch_id}/results")))
        .await;
    assert_eq!(
        results,
        json!({ "results": [], "pagination_token": null }),
        "nothing has finished yet"
    );

    let done = sim.wait_until_finished(&batch_id).await;
    assert_eq!(done["state"]["num_success"], 3);
    let (_, metadata) = sim
        .json(sim.get(&format!("batches/{batch_id}/requests")))
        .await;
    for m in metadata["batch_request_metadata"].as_array().unwrap() {
        assert_eq!(m["state"], "succeeded");
        assert!(date(&m["finish_time"]) >= date(&m["create_time"]));
    }
    let (_, results) = sim
        .json(sim.get(&format!("batches/{batch_id}/results")))
        .await;
    let mut sorted = ids(results["results"].as_array().unwrap());
    assert_eq!(sorted.len(), 3);
    let listed = sorted.clone();
    sorted.sort();
    assert_eq!(listed, sorted, "results come sorted by id");
}

#[tokio::test]
async fn results_answer_each_kind_deterministically_and_bad_bodies_fail_per_request() {
    let sim = Sim::fast().await;
    let batch_id = sim.create("kinds").await;
    let bad_tokens = json!({ "model": "grok-4", "max_tokens": -5, "messages": [{ "role": "user", "content": "x" }] });
    sim.add_ok(
        &batch_id,
        vec![
            chat(Some("a-chat"), "What is the capital of France?"),
            chat_with(Some("b-bad"), bad_tokens),
            json!({ "batch_request_id": "c-responses", "batch_request": { "responses": { "model": "grok-4.3", "input": "Say hi" } } }),
            json!({ "batch_request_id": "d-image", "batch_request": { "image_generation": { "model": "grok-imagine-image", "prompt": "a cat" } } }),
            json!({ "batch_request_id": "e-video", "batch_request": { "video_generation": { "model": "grok-imagine-video", "prompt": "a dog" } } }),
        ],
    )
    .await;
    let done = sim.wait_until_finished(&batch_id).await;
    assert_eq!(
        (&done["state"]["num_success"], &done["state"]["num_error"]),
        (&json!(4), &json!(1))
    );

    let (_, page) = sim
        .json(sim.get(&format!("batches/{batch_id}/results")))
        .await;
    let results = page["results"].as_array().unwrap();
    assert_eq!(
        ids(results),
        ["a-chat", "b-bad", "c-responses", "d-image", "e-video"]
    );

    let completion = &results[0]["batch_result"]["response"]["chat_get_completion"];
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["model"], "grok-4");
    assert!(
        completion["created"].is_i64()
            && completion["id"].is_string()
            && completion["system_fingerprint"].is_string()
    );
    let choice = &completion["choices"][0];
    assert_eq!(
        (&choice["index"], &choice["finish_reason"]),
        (&json!(0), &json!("stop"))
    );
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(
        choice["message"]["content"]
            .as_str()
            .unwrap()
            .contains("What is the capital of France?")
    );
    assert!(choice["message"].get("refusal").is_some());
    let usage = &completion["usage"];
    for key in [
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "num_sources_used",
        "cost_in_usd_ticks",
    ] {
        assert!(usage[key].is_u64(), "usage.{key}: {usage}");
    }
    assert!(
        usage["prompt_tokens_details"].is_object()
            && usage["completion_tokens_details"].is_object()
    );
    assert!(usage["total_tokens"].as_u64() >= Some(usage["prompt_tokens"].as_u64().unwrap() + 1));

    assert_eq!(
        results[1]["batch_result"],
        json!({ "error": "Maximum number of tokens max_tokens must be positive but max_tokens = -5" })
    );
    let responses = &results[2]["batch_result"]["response"];
    assert!(
        responses["chat_get_completion"]["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("Say hi"),
        "a responses request answers as a chat completion: {responses}"
    );
    assert!(
        results[3]["batch_result"]["response"]["image_generation"]["data"][0]["url"]
            .as_str()
            .unwrap()
            .starts_with("https://")
    );
    assert!(
        results[4]["batch_result"]["response"]["video_generation"]["video"]["url"]
            .as_str()
            .unwrap()
            .starts_with("https://")
    );

    let (_, again) = sim
        .json(sim.get(&format!("batches/{batch_id}/results")))
        .await;
    assert_eq!(again, page, "results do not change once made");

    let (_, metadata) = sim
        .json(sim.get(&format!("batches/{batch_id}/requests")))
        .await;
    let states: Vec<(&str, &str, &str)> = metadata["batch_request_metadata"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["batch_request_id"].as_str().unwrap(),
                m["state"].as_str().unwrap(),
                m["endpoint"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(states[1], ("b-bad", "failed", "xai_api.Chat/GetCompletion"));
    assert_eq!(
        states[2].2, "xai_api.Chat/GetCompletion",
        "responses run as chat completions"
    );
    assert!(states[3].2.starts_with("xai_api.Image/") && states[4].2.starts_with("xai_api.Video/"));
}

#[tokio::test]
async fn one_bad_request_refuses_the_whole_add_call() {
    let sim = Sim::fast().await;
    let batch_id = sim.create("atomic").await;
    let unsupported = chat_with(Some("r2"), json!({ "model": "grok-4.5", "messages": [] }));
    let (status, body) = sim
        .add(&batch_id, vec![chat(Some("r1"), "fine"), unsupported])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_xai_error(
        &body,
        INVALID,
        "Model grok-4.5 is not supported for batch processing.",
    );

    let (status, body) = sim
        .add(
            &batch_id,
            vec![chat(Some("same"), "a"), chat(Some("same"), "b")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_xai_error(&body, INVALID, "same");

    let two_kinds = json!({ "batch_request": { "chat_get_completion": { "model": "grok-4" }, "responses": { "model": "grok-4" } } });
    let unknown_kind = json!({ "batch_request": { "completion": { "model": "grok-4" } } });
    for bad in [two_kinds, unknown_kind, json!({ "batch_request_id": "x" })] {
        let (status, body) = sim.add(&batch_id, vec![chat(None, "fine"), bad]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_xai_error(&body, INVALID, "exactly one of chat_get_completion");
    }
    for model in [
        "grok-4",
        "grok-4.3",
        "grok-4.20-0309-reasoning",
        "grok-4.20-0309-non-reasoning",
        "grok-4-fast-reasoning",
        "grok-3",
        "grok-3-mini",
    ] {
        let (status, body) = sim
            .add(
                &sim.create(model).await,
                vec![chat_with(None, json!({ "model": model, "messages": [] }))],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{model}: {body}");
    }
    assert_eq!(
        sim.batch(&batch_id).await["state"]["num_requests"],
        0,
        "refused calls added nothing"
    );

    let (status, body) = sim
        .add(
            "batch_00000000-0000-0000-0000-000000000000",
            vec![chat(None, "x")],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_xai_error(
        &body,
        NOT_FOUND,
        "batch_00000000-0000-0000-0000-000000000000",
    );
}

#[tokio::test]
async fn a_request_over_the_size_limit_refuses_the_call() {
    let sim = Sim::start(XaiSimConfig {
        max_request_bytes: 2_000,
        ..XaiSimConfig::fast()
    })
    .await;
    let batch_id = sim.create("sizes").await;
    let (status, body) = sim
        .add(
            &batch_id,
            vec![
                chat(Some("small"), "ok"),
                chat(Some("big"), &"x".repeat(3_000)),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_xai_error(&body, INVALID, "'big'");
    assert_eq!(sim.batch(&batch_id).await["state"]["num_requests"], 0);
    sim.add_ok(
        &batch_id,
        vec![
            chat(Some("small"), "ok"),
            chat(Some("medium"), &"x".repeat(1_500)),
        ],
    )
    .await;
}

#[tokio::test]
async fn re_adding_an_id_is_a_no_op_and_changed_content_is_refused() {
    let sim = Sim::paced(300).await;
    let batch_id = sim.create("idempotent").await;
    sim.add_ok(
        &batch_id,
        vec![chat(Some("q1"), "one"), chat(Some("q2"), "two")],
    )
    .await;
    sim.add_ok(
        &batch_id,
        vec![chat(Some("q1"), "one"), chat(Some("q2"), "two")],
    )
    .await;
    assert_eq!(sim.batch(&batch_id).await["state"]["num_requests"], 2);

    let (status, body) = sim
        .add(
            &batch_id,
            vec![chat(Some("q3"), "three"), chat(Some("q1"), "changed")],
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_xai_error(
        &body,
        FAILED_PRECONDITION,
        "batch_request_id 'q1' content differs from originally submitted",
    );
    assert_eq!(
        sim.batch(&batch_id).await["state"]["num_requests"],
        2,
        "q3 was not added either"
    );

    // A re-add after the request finished changes nothing either.
    sim.wait_until_finished(&batch_id).await;
    sim.add_ok(&batch_id, vec![chat(Some("q1"), "one")]).await;
    let batch = sim.batch(&batch_id).await;
    assert_eq!(
        (
            &batch["state"]["num_requests"],
            &batch["state"]["num_success"]
        ),
        (&json!(2), &json!(2))
    );
}

#[tokio::test]
async fn a_file_batch_is_sealed_and_then_cancelled_by_xai() {
    let sim = Sim::paced(150).await;
    let (status, created) = sim
        .json(sim.post(
            "batches",
            json!({ "name": "from file", "input_file_id": "file-abc" }),
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(created["input_file_id"], "file-abc");
    assert_eq!(
        created["cancel_by_xai_message"],
        Value::Null,
        "the file is still being processed"
    );
    let batch_id = created["batch_id"].as_str().unwrap();

    let (status, body) = sim.add(batch_id, vec![chat(None, "inline")]).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_xai_error(
        &body,
        FAILED_PRECONDITION,
        "Cannot add inline requests to a file-based batch",
    );

    let cancelled = sim
        .wait_for(batch_id, |b| !b["cancel_by_xai_message"].is_null())
        .await;
    assert_eq!(
        cancelled["cancel_by_xai_message"],
        "JSONL file validation failed: file file-abc not found"
    );
    date(&cancelled["cancel_time"]);
    assert_eq!(cancelled["state"]["num_requests"], 0);
    let (status, _) = sim.add(batch_id, vec![chat(None, "inline")]).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "still sealed");
}

#[tokio::test]
async fn cancel_keeps_finished_results_and_refuses_later_adds() {
    let sim = Sim::paced(1_000).await;
    let batch_id = sim.create("to cancel").await;
    sim.add_ok(&batch_id, vec![chat(Some("early"), "first")])
        .await;
    sim.wait_for(&batch_id, |b| b["state"]["num_success"] == 1)
        .await;
    sim.add_ok(
        &batch_id,
        vec![
            chat(Some("late-1"), "second"),
            chat(Some("late-2"), "third"),
        ],
    )
    .await;

    let (status, cancelled) = sim.cancel(&batch_id).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["batch_id"], batch_id.as_str());
    date(&cancelled["cancel_time"]);
    assert_eq!(cancelled["cancel_by_xai_message"], Value::Null);
    assert_eq!(
        cancelled["state"],
        json!({ "num_requests": 3, "num_pending": 0, "num_success": 1, "num_error": 0, "num_cancelled": 2 })
    );
    let (status, again) = sim.cancel(&batch_id).await;
    assert_eq!(
        (status, &again),
        (StatusCode::OK, &cancelled),
        "cancelling again is harmless"
    );
    assert_eq!(sim.handle.calls(CANCEL_ROUTE), 2);

    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        sim.batch(&batch_id).await["state"],
        cancelled["state"],
        "cancelled requests never run"
    );
    let (_, page) = sim
        .json(sim.get(&format!("batches/{batch_id}/results")))
        .await;
    let results = page["results"].as_array().unwrap();
    assert_eq!(ids(results), ["early", "late-1", "late-2"]);
    assert!(
        results[0]["batch_result"]["response"]["chat_get_completion"].is_object(),
        "the finished result is kept"
    );
    assert_eq!(
        results[1]["batch_result"],
        json!({ "error": "Batch cancelled" })
    );
    let (_, metadata) = sim
        .json(sim.get(&format!("batches/{batch_id}/requests")))
        .await;
    let listed = metadata["batch_request_metadata"].as_array().unwrap();
    assert_eq!(listed[0]["state"], "succeeded");
    assert_eq!(
        (&listed[2]["state"], listed[2]["finish_time"].is_string()),
        (&json!("cancelled"), true)
    );

    let (status, body) = sim.add(&batch_id, vec![chat(None, "too late")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_xai_error(
        &body,
        "The caller does not have permission to execute the specified operation",
        "cancelled",
    );
    let (status, body) = sim.cancel("batch_unknown").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_xai_error(&body, NOT_FOUND, "batch_unknown");
    assert_eq!(sim.handle.calls(CANCEL_ROUTE), 3);
}

#[tokio::test]
async fn results_and_metadata_page_through_every_id_once_while_requests_are_added() {
    let sim = Sim::fast().await;
    let batch_id = sim.create("pages").await;
    let originals: Vec<String> = (0..25).map(|i| format!("r{i:02}")).collect();
    sim.add_ok(
        &batch_id,
        originals.iter().map(|id| chat(Some(id), id)).collect(),
    )
    .await;
    sim.wait_until_finished(&batch_id).await;

    let results_path = format!("batches/{batch_id}/results");
    let (_, first) = sim
        .json(sim.get(&results_path).query(&[("limit", "10")]))
        .await;
    assert_eq!(ids(first["results"].as_array().unwrap()), originals[..10]);
    let token = first["pagination_token"]
        .as_str()
        .expect("more pages")
        .to_owned();
    // New requests between pages: one sorts before the cursor, one after it.
    sim.add_ok(
        &batch_id,
        vec![chat(Some("a-new"), "x"), chat(Some("z-new"), "y")],
    )
    .await;
    sim.wait_until_finished(&batch_id).await;
    let mut seen = ids(first["results"].as_array().unwrap());
    let mut token = Some(token);
    while let Some(next) = token {
        let (status, page) = sim
            .json(
                sim.get(&results_path)
                    .query(&[("limit", "10"), ("pagination_token", &next)]),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(ids(page["results"].as_array().unwrap()));
        token = page["pagination_token"].as_str().map(str::to_owned);
    }
    let mut expected = originals.clone();
    expected.push("z-new".into());
    assert_eq!(
        seen, expected,
        "each id once, in order; ids before the cursor stay behind it"
    );

    let all = ids(&sim.all_pages(&results_path, "results", 10).await);
    assert_eq!(all.len(), 27);
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), 27);
    let metadata = ids(&sim
        .all_pages(
            &format!("batches/{batch_id}/requests"),
            "batch_request_metadata",
            7,
        )
        .await);
    assert_eq!(
        metadata, all,
        "metadata pages list the same ids in the same order"
    );
    let (_, one_page) = sim.json(sim.get(&results_path)).await;
    assert_eq!(
        (
            one_page["results"].as_array().unwrap().len(),
            &one_page["pagination_token"]
        ),
        (27, &Value::Null)
    );

    for path in [results_path.clone(), format!("batches/{batch_id}/requests")] {
        let (status, body) = sim.json(sim.get(&path).query(&[("limit", "1001")])).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert_xai_error(&body, INVALID, "1000");
        let (status, _) = sim.json(sim.get(&path).query(&[("limit", "1000")])).await;
        assert_eq!(status, StatusCode::OK);
    }
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let sim = Sim::start(XaiSimConfig {
        creates_per_second: 2,
        add_calls_per_30s: 3,
        ..XaiSimConfig::fast()
    })
    .await;
    let batch_id = sim.create("one").await;
    sim.create("two").await;
    let response = sim
        .post("batches", json!({ "name": "three" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1).contains(&retry_after), "{retry_after}");
    assert_xai_error(
        &response.json().await.unwrap(),
        "Some resource has been exhausted",
        "",
    );

    for i in 0..3 {
        sim.add_ok(&batch_id, vec![chat(Some(&format!("r{i}")), "x")])
            .await;
    }
    let response = sim
        .post(
            &format!("batches/{batch_id}/requests"),
            json!({ "batch_requests": [chat(None, "x")] }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(sim.batch(&batch_id).await["state"]["num_requests"], 3);

    tokio::time::sleep(Duration::from_millis(1_050)).await;
    sim.create("after a second").await;
}

#[tokio::test]
async fn unknown_batches_paths_and_methods_answer_in_xais_error_shape() {
    let sim = Sim::fast().await;
    let batch_id = sim.create("errors").await;
    for path in [
        "batches/batch_nope",
        "batches/batch_nope/requests",
        "batches/batch_nope/results",
    ] {
        let (status, body) = sim.json(sim.get(path)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_xai_error(&body, NOT_FOUND, "batch_nope");
    }
    let (status, body) = sim
        .json(sim.post(&format!("batches/{batch_id}"), json!({})))
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "only `:cancel` is a POST on a batch"
    );
    assert_xai_error(&body, NOT_FOUND, "");
    assert_eq!(sim.batch(&batch_id).await["cancel_time"], Value::Null);
    let (status, body) = sim
        .json(sim.post(&format!("batches/{batch_id}:pause"), json!({})))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let delete = sim
        .http
        .delete(sim.url(&format!("batches/{batch_id}")))
        .bearer_auth(sim::XAI_DEMO_API_KEY);
    let (status, body) = sim.json(delete).await;
    assert_eq!(
        status,
        StatusCode::METHOD_NOT_ALLOWED,
        "no DELETE exists: {body}"
    );
    let (status, body) = sim
        .json(sim.get("batches").query(&[("limit", "ten")]))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_xai_error(&body, INVALID, "limit");
}
