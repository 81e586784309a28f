//! A Node client (@grpc/grpc-js with @grpc/proto-loader, loading proto/ at run time)
//! drives the in-process gateway: Sutro CreateJob (and its retry) then WatchJob to FINAL;
//! xAI CreateBatch, AddBatchRequests, then WatchBatch to FINAL.

use std::process::Command;
use std::time::Duration;

use crate::common::spawn_app;
use crate::{repo, run, tool};

#[tokio::test]
async fn a_node_grpc_js_client_drives_the_gateway() {
    // Installed by tests/node/setup.sh; node itself must be on PATH.
    tool(
        "BATCHGATE_NODE_MODULES",
        "tests/node/node_modules/@grpc/grpc-js",
        "tests/node/setup.sh",
    );
    let app = spawn_app().await;
    let mut command = Command::new("node");
    command
        .arg(repo().join("tests/node/client_check.js"))
        .current_dir(repo().join("tests/node"))
        .env("BATCHGATE_ADDR", app.addr.to_string())
        .env("BATCHGATE_PROTO_DIR", repo().join("proto"));
    let stdout = run(
        "the Node client check (tests/node/client_check.js; `node` comes from tests/node/setup.sh)",
        command,
        Duration::from_secs(120),
    )
    .await;
    for step in [
        "create-job",
        "create-job-replayed",
        "watch-job",
        "create-batch",
        "add-batch-requests",
        "watch-batch",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("ok: {step} "))),
            "no `ok: {step}` in:\n{stdout}"
        );
    }
    assert_eq!(
        app.sim.calls("POST /v1/batch-inference"),
        1,
        "the retried create was replayed, not sent again"
    );
}
