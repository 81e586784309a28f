//! Clients nobody here wrote: Sutro's official Python SDK against the simulator, and a
//! Python grpcio client generated from `proto/` against the gateway.
//! Needs the venv that `tests/interop/setup.sh` makes (tests/run.sh runs it first).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use batchgate::sim::{self, SimConfig};

fn python() -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var_os("BATCHGATE_INTEROP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join(".venv-interop/bin/python"));
    assert!(
        python.exists(),
        "{} is missing: run `bash tests/interop/setup.sh` (tests/run.sh does) to create the Python venv",
        python.display()
    );
    python
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(name)
}

/// Runs a Python check in a blocking thread; it prints `ok: <step>` lines.
async fn run(mut command: Command) -> String {
    let output = tokio::time::timeout(
        Duration::from_secs(240),
        tokio::task::spawn_blocking(move || command.output().expect("python runs")),
    )
    .await
    .expect("the Python check finishes")
    .expect("the thread joins");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "Python check failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

#[tokio::test]
async fn the_official_sutro_sdk_runs_against_the_simulator() {
    let sim = sim::start(
        SimConfig {
            rows_per_second: 50.0,
            ..SimConfig::fast()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("simulator starts");
    let origin = sim.sutro_base_url().trim_end_matches("/v1").to_owned();
    let mut command = Command::new(python());
    command
        .arg(script("sutro_sdk_check.py"))
        .env("SUTRO_API_URL", origin)
        .env("SUTRO_API_KEY", sim::DEMO_API_KEY)
        .env("HOME", std::env::temp_dir());
    let stdout = run(command).await;
    for step in ["create", "await", "results", "cancel", "quotas", "attach"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("ok: {step}"))),
            "no `ok: {step}` in:\n{stdout}"
        );
    }
    assert!(sim.calls("POST /v1/batch-inference") >= 2);
    assert!(
        sim.calls("GET /v1/stream-job-progress/{job_id}") >= 1,
        "attach used the progress stream"
    );
}

#[tokio::test]
async fn a_generated_grpcio_client_drives_the_gateway() {
    let app = common::spawn_app().await;
    let stubs = std::env::var_os("BATCHGATE_PY_STUBS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/interop-py"));
    let mut command = Command::new(python());
    command
        .arg(script("grpc_client_check.py"))
        .env("BATCHGATE_ADDR", app.addr.to_string())
        .env("BATCHGATE_PY_STUBS", stubs);
    let stdout = run(command).await;
    assert!(
        stdout.lines().filter(|l| l.starts_with("ok: ")).count() >= 4,
        "{stdout}"
    );
    assert_eq!(
        app.sim.calls("POST /v1/batch-inference"),
        1,
        "the retried create was replayed"
    );
}
