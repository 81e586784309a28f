//! What a team adopting batchgate relies on beyond the Rust API: the error-detail protos
//! served by reflection, buf lint and format of `proto/`, a Node client, a web page in
//! Chromium calling with gRPC-Web from another origin, and the files in
//! `deploy/` (Dockerfile, compose, Kubernetes).
//!
//! External tools come from setup scripts that tests/run.sh runs first:
//! `tests/node/setup.sh` (Node packages, buf and Chromium) and `tests/tools/setup.sh`
//! (kubernetes-validate). A missing tool fails its test with the command that installs it.

mod common;

#[path = "adoption/browser.rs"]
mod browser;
#[path = "adoption/buf.rs"]
mod buf;
#[path = "adoption/compose.rs"]
mod compose;
#[path = "adoption/dockerfile.rs"]
mod dockerfile;
#[path = "adoption/kubernetes.rs"]
mod kubernetes;
#[path = "adoption/node.rs"]
mod node;
#[path = "adoption/reflection.rs"]
mod reflection;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The repository root.
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A tool at `default` (relative to the repo) or at the path in `env_var`; a missing one
/// fails the test with how to get it.
fn tool(env_var: &str, default: &str, setup: &str) -> PathBuf {
    let path = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(default));
    assert!(
        path.exists(),
        "{} is missing: run `bash {setup}` (tests/run.sh does), or set {env_var}",
        path.display()
    );
    path
}

/// Runs `command` in a blocking thread with a time limit; fails the test on a non-zero
/// exit, showing both outputs. Returns stdout.
async fn run(what: &str, mut command: Command, limit: Duration) -> String {
    let output: Output =
        tokio::time::timeout(limit, tokio::task::spawn_blocking(move || command.output()))
            .await
            .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
            .expect("the thread joins")
            .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{what} failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    stdout
}

/// A YAML file's documents, as JSON values.
fn yaml_documents(path: &Path) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let value = serde_yaml::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
            // Merge keys (`<<: *anchor`) are resolved as compose does.
            let mut value = value;
            value
                .apply_merge()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            serde_json::to_value(value).expect("YAML maps to JSON")
        })
        .collect()
}

/// The flags and `BATCHGATE_*` variables `batchgate <subcommand> --help` documents.
fn documented(subcommand: &str) -> (Vec<String>, Vec<String>) {
    let output = Command::new(env!("CARGO_BIN_EXE_batchgate"))
        .args([subcommand, "--help"])
        .output()
        .expect("batchgate runs");
    assert!(
        output.status.success(),
        "batchgate {subcommand} --help failed"
    );
    let help = String::from_utf8_lossy(&output.stdout);
    let mut flags = Vec::new();
    let mut vars = Vec::new();
    for word in help.split(|c: char| c.is_whitespace() || c == '[' || c == ']' || c == ',') {
        if let Some(flag) = word.strip_prefix("--") {
            let flag = flag.split(['=', '<']).next().unwrap_or_default();
            if !flag.is_empty() {
                flags.push(flag.to_owned());
            }
        }
        if word.starts_with("BATCHGATE_") {
            vars.push(word.trim_end_matches('=').to_owned());
        }
    }
    flags.sort();
    flags.dedup();
    vars.sort();
    vars.dedup();
    (flags, vars)
}

/// Fails unless every variable is one `batchgate <subcommand>` reads.
fn assert_known_variables(file: &str, subcommand: &str, used: &[String]) {
    let (_, known) = documented(subcommand);
    let unknown: Vec<_> = used
        .iter()
        .filter(|v| v.starts_with("BATCHGATE_"))
        .filter(|v| !known.contains(v))
        .collect();
    assert!(
        unknown.is_empty(),
        "{file}: `batchgate {subcommand}` reads no {unknown:?} (it reads {known:?})"
    );
}
