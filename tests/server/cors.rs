//! CORS for gRPC-Web pages on other origins (`cors_allowed_origins`): preflights, the
//! allowed origin on answers, the headers a page may read, and no CORS at all by default.
//! Plain HTTP here; tests/adoption/browser.rs runs the same through a real Chromium.

use batchgate::cors::EXPOSED_RESPONSE_HEADERS;
use batchgate::proto::sutro::v1 as pb;
use batchgate::sim::SimConfig;
use prost::Message;

use crate::common::{TestApp, create_job, spawn_app, spawn_app_with};

/// The page's origin, and another one (a different host name is a different origin).
const PAGE: &str = "http://127.0.0.1:8411";
const OTHER: &str = "http://localhost:8411";

async fn allowing(
    origins: &[&str],
    tweak: impl FnOnce(&mut batchgate::config::ConfigLayer),
) -> TestApp {
    let origins = origins.iter().map(|o| o.to_string()).collect();
    spawn_app_with(SimConfig::fast(), |settings| {
        settings.cors_allowed_origins = Some(origins);
        tweak(settings);
    })
    .await
}

fn http1() -> reqwest::Client {
    batchgate::upstream::http::install_crypto_provider();
    reqwest::Client::builder()
        .http1_only()
        .build()
        .expect("a client")
}

/// A Sutro method by name, or any `package.Service/Method`.
fn url(app: &TestApp, method: &str) -> String {
    if method.contains('/') {
        format!("http://{}/{method}", app.addr)
    } else {
        format!("http://{}/batchgate.sutro.v1.JobService/{method}", app.addr)
    }
}

/// What a browser sends before a gRPC-Web call from another origin.
async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    http1()
        .request(reqwest::Method::OPTIONS, url(app, "GetJob"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,grpc-timeout,x-grpc-web,x-user-agent",
        )
        .send()
        .await
        .expect("the gateway answers")
}

/// A gRPC-Web call as a page sends it, from `origin` when given.
async fn grpc_web(
    app: &TestApp,
    method: &str,
    message: impl Message,
    origin: Option<&str>,
) -> reqwest::Response {
    let encoded = message.encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(encoded.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&encoded);
    let mut request = http1()
        .post(url(app, method))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(body);
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request.send().await.expect("the gateway answers")
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii").to_owned())
}

/// A comma-separated header's items, lowercase.
fn items(response: &reqwest::Response, name: &str) -> Vec<String> {
    header(response, name)
        .unwrap_or_default()
        .split(',')
        .map(|i| i.trim().to_ascii_lowercase())
        .filter(|i| !i.is_empty())
        .collect()
}

fn cors_headers(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_answered() {
    let app = allowing(&[PAGE, "https://console.example.com"], |_| {}).await;
    let answer = preflight(&app, PAGE).await;
    assert!(answer.status().is_success(), "{}", answer.status());
    assert_eq!(
        header(&answer, "access-control-allow-origin").as_deref(),
        Some(PAGE)
    );
    assert!(items(&answer, "access-control-allow-methods").contains(&"post".into()));
    let allowed = items(&answer, "access-control-allow-headers");
    for asked in [
        "authorization",
        "content-type",
        "grpc-timeout",
        "x-grpc-web",
        "x-user-agent",
        "x-request-id",
        "traceparent",
    ] {
        assert!(
            allowed.contains(&asked.into()),
            "{asked} not in {allowed:?}"
        );
    }
    let max_age: u64 = header(&answer, "access-control-max-age")
        .expect("a max-age")
        .parse()
        .expect("seconds");
    assert!(max_age >= 600, "{max_age}");
    // Not a credentialed (cookie) API: the `authorization` metadata is a plain header.
    assert_eq!(header(&answer, "access-control-allow-credentials"), None);
}

#[tokio::test]
async fn another_origin_gets_no_allow_origin() {
    let app = allowing(&[PAGE], |_| {}).await;
    let answer = preflight(&app, OTHER).await;
    assert_eq!(header(&answer, "access-control-allow-origin"), None);
    let call = grpc_web(&app, "GetQuotas", pb::GetQuotasRequest {}, Some(OTHER)).await;
    assert_eq!(header(&call, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn star_allows_every_origin() {
    let app = allowing(&["*"], |_| {}).await;
    let answer = preflight(&app, OTHER).await;
    assert!(answer.status().is_success(), "{}", answer.status());
    assert_eq!(
        header(&answer, "access-control-allow-origin").as_deref(),
        Some("*")
    );
}

#[tokio::test]
async fn by_default_there_is_no_cors_at_all() {
    let app = spawn_app().await;
    let answer = preflight(&app, PAGE).await;
    assert!(!answer.status().is_success(), "{}", answer.status());
    assert_eq!(cors_headers(&answer), Vec::<String>::new());
    let call = grpc_web(&app, "GetQuotas", pb::GetQuotasRequest {}, Some(PAGE)).await;
    assert_eq!(call.status(), 200);
    assert_eq!(cors_headers(&call), Vec::<String>::new());
    assert_eq!(header(&call, "vary"), None);
}

/// Every header the gateway answers with is one a page may read: gRPC's status headers
/// (on a trailers-only error) and the gateway's metadata (xAI's request id, cache, limits).
#[tokio::test]
async fn grpc_web_answers_expose_the_status_and_the_gateways_metadata() {
    let mut app = allowing(&[PAGE], |settings| {
        let limits: batchgate::config::ConfigLayer =
            toml::from_str("[rate_limits.read]\nper_second = 100\nburst = 100\n")
                .expect("valid limits");
        settings.rate_limits = limits.rate_limits;
    })
    .await;
    let created = grpc_web(
        &app,
        "batchgate.xai.v1.BatchService/CreateBatch",
        batchgate::proto::xai::v1::CreateBatchRequest {
            name: "from a page".into(),
            ..Default::default()
        },
        Some(PAGE),
    )
    .await;
    assert_eq!(created.status(), 200);
    let job_id = create_job(&mut app, vec!["hello".into()]).await;
    let found = grpc_web(&app, "GetJob", pb::GetJobRequest { job_id }, Some(PAGE)).await;
    let missing = grpc_web(
        &app,
        "GetJob",
        pb::GetJobRequest {
            job_id: "job-that-does-not-exist".into(),
        },
        Some(PAGE),
    )
    .await;
    assert!(
        header(&missing, "grpc-status").is_some_and(|s| s != "0"),
        "a trailers-only error carries grpc-status in its headers: {:?}",
        missing.headers()
    );

    for answer in [&created, &found, &missing] {
        assert_eq!(
            header(answer, "access-control-allow-origin").as_deref(),
            Some(PAGE)
        );
        let exposed = items(answer, "access-control-expose-headers");
        for name in EXPOSED_RESPONSE_HEADERS {
            assert!(exposed.contains(&name.into()), "{name} not in {exposed:?}");
        }
        // Those a browser shows every page anyway, and CORS's own.
        const VISIBLE_ANYWAY: [&str; 6] = [
            "content-type",
            "content-length",
            "date",
            "transfer-encoding",
            "vary",
            "connection",
        ];
        for name in answer.headers().keys().map(|k| k.as_str()) {
            if VISIBLE_ANYWAY.contains(&name) || name.starts_with("access-control-") {
                continue;
            }
            assert!(
                exposed.iter().any(|e| e == name),
                "the gateway answers with `{name}` but a page may not read it: {exposed:?}"
            );
        }
    }
    assert!(
        header(&created, "x-upstream-request-id").is_some(),
        "{:?}",
        created.headers()
    );
    for name in ["x-cache", "age", "x-ratelimit-remaining"] {
        assert!(
            header(&found, name).is_some(),
            "{name}: {:?}",
            found.headers()
        );
    }
}
