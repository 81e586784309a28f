//! Who may call: managed mode (gateway tokens from a tenants file), passthrough (the
//! caller's own upstream key), and anonymous use of the gateway's key only when allowed.

use batchgate::proto::sutro::v1 as pb;
use batchgate::proto::xai::v1::ListBatchesRequest;
use batchgate::sim::{DEMO_API_KEY, SimConfig};
use sha2::{Digest, Sha256};
use tonic::Code;

use crate::common::{TestApp, spawn_app_with, with_key};

const LIST_JOBS: &str = "GET /v1/list-jobs";

fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

fn list_jobs() -> pb::ListJobsRequest {
    pb::ListJobsRequest::default()
}

/// A gateway in managed mode: tenant `search` may use Sutro only, `ops` everything.
async fn managed(dir: &tempfile::TempDir) -> TestApp {
    let path = dir.path().join("tenants.toml");
    let hash = |token: &str| hex::encode(Sha256::digest(token.as_bytes()));
    std::fs::write(
        &path,
        format!(
            "[[tenant]]\nname = \"search\"\ntoken_sha256 = \"{}\"\nservices = [\"sutro\"]\n\n\
             [[tenant]]\nname = \"ops\"\ntoken_sha256 = \"{}\"\n",
            hash("tok-search"),
            hash("tok-ops")
        ),
    )
    .expect("write the tenants file");
    spawn_app_with(SimConfig::fast(), |settings| {
        settings.tenants_file = Some(path);
    })
    .await
}

#[tokio::test]
async fn managed_mode_admits_known_tokens_to_the_services_their_tenant_may_use() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut app = managed(&dir).await;
    app.jobs
        .list_jobs(bearer(list_jobs(), "tok-search"))
        .await
        .expect("search may list Sutro jobs");
    app.batches
        .list_batches(bearer(ListBatchesRequest::default(), "tok-ops"))
        .await
        .expect("ops may list xAI batches");
    let denied = app
        .batches
        .list_batches(bearer(ListBatchesRequest::default(), "tok-search"))
        .await
        .expect_err("search may not use xAI");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("search"), "{}", denied.message());
    assert_eq!(app.sim.calls("GET /v1/batches"), 1, "only ops reached xAI");
}

#[tokio::test]
async fn managed_mode_refuses_unknown_and_missing_tokens_before_the_upstream() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut app = managed(&dir).await;
    let unknown = app
        .jobs
        .list_jobs(bearer(list_jobs(), "tok-guess"))
        .await
        .expect_err("an unknown token");
    assert_eq!(unknown.code(), Code::Unauthenticated);
    assert!(
        !unknown.message().contains("tok-guess"),
        "{}",
        unknown.message()
    );
    let missing = app
        .jobs
        .list_jobs(list_jobs())
        .await
        .expect_err("no token, even with anonymous use allowed in passthrough");
    assert_eq!(missing.code(), Code::Unauthenticated);
    // A caller's own upstream key is not a gateway token either.
    let upstream_key = app
        .jobs
        .list_jobs(with_key(list_jobs(), DEMO_API_KEY))
        .await
        .expect_err("an upstream key in managed mode");
    assert_eq!(upstream_key.code(), Code::Unauthenticated);
    assert_eq!(app.sim.calls(LIST_JOBS), 0, "nothing reached the upstream");
}

#[tokio::test]
async fn passthrough_callers_need_a_key_unless_anonymous_use_is_allowed() {
    let mut app = spawn_app_with(SimConfig::fast(), |settings| {
        settings.allow_anonymous = None;
    })
    .await;
    let missing = app
        .jobs
        .list_jobs(list_jobs())
        .await
        .expect_err("no credentials and no allow_anonymous");
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert!(
        missing.message().contains("allow_anonymous"),
        "{}",
        missing.message()
    );
    assert_eq!(app.sim.calls(LIST_JOBS), 0, "refused before the upstream");
    app.jobs
        .list_jobs(with_key(list_jobs(), DEMO_API_KEY))
        .await
        .expect("a caller with its own key");
    assert_eq!(app.sim.calls(LIST_JOBS), 1);

    let mut open = spawn_app_with(SimConfig::fast(), |_| {}).await;
    open.jobs
        .list_jobs(list_jobs())
        .await
        .expect("allow_anonymous: the gateway's own key");
}
