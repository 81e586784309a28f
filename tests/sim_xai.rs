//! The xAI half of the simulator over plain HTTP, batch by batch: keys, the documented
//! shape, listing, counters over simulated time, file batches, cancel, limits, errors.

use std::time::Duration;

use batchgate::sim;
use batchgate::sim::xai::XaiSimConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};

mod sim_xai_support;
use sim_xai_support::*;

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
