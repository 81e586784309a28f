//! The xAI half of the simulator over plain HTTP, request by request: result bodies,
//! atomic and idempotent adds, the size limit, and paging while requests arrive.

use std::collections::HashSet;

use batchgate::sim::xai::XaiSimConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};

mod sim_xai_support;
use sim_xai_support::*;

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
async fn the_repeat_knob_puts_the_first_result_on_every_later_page() {
    let sim = Sim::start(XaiSimConfig {
        repeat_first_result: true,
        ..XaiSimConfig::fast()
    })
    .await;
    let batch_id = sim.create("repeats").await;
    let originals: Vec<String> = (0..25).map(|i| format!("r{i:02}")).collect();
    sim.add_ok(
        &batch_id,
        originals.iter().map(|id| chat(Some(id), id)).collect(),
    )
    .await;
    sim.wait_until_finished(&batch_id).await;
    let path = format!("batches/{batch_id}/results");
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut request = sim.get(&path).query(&[("limit", "10")]);
        if let Some(token) = &token {
            request = request.query(&[("pagination_token", token)]);
        }
        let (status, page) = sim.json(request).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages.push(ids(page["results"].as_array().unwrap()));
        match page["pagination_token"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages.len(), 3);
    assert_eq!(pages[0], originals[..10]);
    for page in &pages[1..] {
        assert_eq!(page[0], "r00", "{page:?}");
    }
    let distinct: HashSet<_> = pages.iter().flatten().collect();
    assert_eq!(distinct.len(), 25, "nothing is lost");
}
