//! A web page in a real headless Chromium, served from one origin, calls the gateway on
//! another origin through a generated gRPC-Web client (Connect-ES): Sutro CreateJob, then
//! WatchJob to its FINAL. The same page is refused by a gateway that allows only another
//! origin, so CORS is what lets it through. tests/node/browser_check.js drives Chromium.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use batchgate::sim::{self, SimConfig};

use crate::common::{TestApp, spawn_app_with};
use crate::{repo, run, tool};

/// Serves `index.html` and `bundle.js` from `dir` (read on each request: the driver
/// writes them after this starts) on a port of its own: the page's origin.
async fn serve_page(dir: PathBuf) -> SocketAddr {
    use axum::extract::Path as UrlPath;
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let addr = listener.local_addr().expect("bound");
    let file = move |UrlPath(name): UrlPath<String>| {
        let dir = dir.clone();
        async move {
            let kind = match name.as_str() {
                "index.html" => "text/html; charset=utf-8",
                "bundle.js" => "text/javascript; charset=utf-8",
                _ => return StatusCode::NOT_FOUND.into_response(),
            };
            match tokio::fs::read(dir.join(&name)).await {
                Ok(bytes) => ([(header::CONTENT_TYPE, kind)], bytes).into_response(),
                Err(_) => StatusCode::NOT_FOUND.into_response(),
            }
        }
    };
    let router = axum::Router::new().route("/{name}", axum::routing::get(file));
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// A gateway whose only allowed web origin is `origin`, with a create limit on so that
/// CreateJob answers carry `x-ratelimit-*`, a header only CORS lets a page read.
async fn gateway_allowing(origin: String) -> TestApp {
    spawn_app_with(SimConfig::fast(), |settings| {
        settings.cors_allowed_origins = Some(vec![origin]);
        let limits: batchgate::config::ConfigLayer =
            toml::from_str("[rate_limits.create]\nper_second = 100\nburst = 100\n")
                .expect("valid limits");
        settings.rate_limits = limits.rate_limits;
    })
    .await
}

/// The driver's `result <name> <json>` line for `name`.
fn result(stdout: &str, name: &str) -> serde_json::Value {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("result {name} ")))
        .unwrap_or_else(|| panic!("no result for {name} in:\n{stdout}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[tokio::test]
async fn a_page_on_another_origin_creates_and_watches_a_job_through_grpc_web() {
    // Installed by tests/node/setup.sh (npm packages, and Debian's chromium).
    tool(
        "BATCHGATE_NODE_MODULES",
        "tests/node/node_modules/playwright-core",
        "tests/node/setup.sh",
    );
    tool(
        "BATCHGATE_NODE_MODULES",
        "tests/node/node_modules/@connectrpc/connect-web",
        "tests/node/setup.sh",
    );
    let chromium = tool(
        "BATCHGATE_CHROMIUM",
        "/usr/bin/chromium",
        "tests/node/setup.sh",
    );

    let build = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&build).expect("the build folder");
    let page = serve_page(build.clone()).await;
    let page_origin = format!("http://{page}");
    // `localhost` and 127.0.0.1 are different origins: the near miss is refused.
    let allowed = gateway_allowing(page_origin.clone()).await;
    let refused = gateway_allowing(format!("http://localhost:{}", page.port())).await;

    let mut command = Command::new("node");
    command
        .arg(repo().join("tests/node/browser_check.js"))
        .current_dir(repo().join("tests/node"))
        .env("BATCHGATE_BROWSER_BUILD", &build)
        .env("BATCHGATE_CHROMIUM", &chromium)
        .env("BATCHGATE_PAGE_URL", format!("{page_origin}/index.html"))
        .env(
            "BATCHGATE_GATEWAYS",
            format!(
                "allowed=http://{},refused=http://{}",
                allowed.addr, refused.addr
            ),
        )
        .env("BATCHGATE_KEY", sim::DEMO_API_KEY);
    let stdout = run(
        "the browser check (tests/node/browser_check.js; node, its packages and chromium come from `bash tests/node/setup.sh`)",
        command,
        Duration::from_secs(90),
    )
    .await;

    let ok = result(&stdout, "allowed");
    assert_eq!(ok["ok"], true, "{ok}");
    assert_eq!(ok["origin"], page_origin.as_str(), "{ok}");
    let job_id = ok["jobId"].as_str().expect("a job id");
    assert!(job_id.starts_with("job-"), "{ok}");
    assert_eq!(ok["finalJobId"], job_id, "{ok}");
    assert_eq!(ok["finalStatus"], "SUCCEEDED", "{ok}");
    // SNAPSHOT, changes, FINAL; or the FINAL alone when the fast simulator was done first.
    let kinds: Vec<&str> = ok["kinds"]
        .as_array()
        .expect("kinds")
        .iter()
        .filter_map(|k| k.as_str())
        .collect();
    assert_eq!(kinds.last(), Some(&"FINAL"), "{ok}");
    assert_eq!(kinds.iter().filter(|k| **k == "FINAL").count(), 1, "{ok}");
    assert!(ok["events"].as_u64().is_some_and(|n| n >= 1), "{ok}");
    assert!(
        ok["rateLimit"]
            .as_str()
            .is_some_and(|l| l.starts_with("100")),
        "CreateJob's x-ratelimit-limit, exposed through CORS: {ok}"
    );
    assert_eq!(ok["corsBlocked"], false, "{ok}");
    assert_eq!(allowed.sim.calls("POST /v1/batch-inference"), 1);

    let no = result(&stdout, "refused");
    assert_eq!(no["ok"], false, "{no}");
    assert_eq!(
        no["corsBlocked"], true,
        "Chromium logs a CORS refusal: {no}"
    );
    assert_eq!(
        refused.sim.calls("POST /v1/batch-inference"),
        0,
        "the preflight was refused, so the create never left the browser"
    );
}
