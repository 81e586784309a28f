//! The `batchgate` command line: documented settings and their precedence
//! (flags > BATCHGATE_* env > TOML file > defaults), secrets never printed.

use std::process::Command;

fn batchgate(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_batchgate"));
    command.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("BATCHGATE_") {
            command.env_remove(name);
        }
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("the binary runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn serve_help_documents_every_setting() {
    let (ok, help) = batchgate(&["serve", "--help"], &[]);
    assert!(ok, "{help}");
    for env in [
        "BATCHGATE_LISTEN",
        "BATCHGATE_SUTRO_BASE_URL",
        "BATCHGATE_SUTRO_API_KEY",
        "BATCHGATE_XAI_BASE_URL",
        "BATCHGATE_XAI_API_KEY",
        "BATCHGATE_UPSTREAM_TIMEOUT_MS",
        "BATCHGATE_RETRY_MAX_ATTEMPTS",
        "BATCHGATE_WATCH_HEARTBEAT_MS",
        "BATCHGATE_DRAIN_TIMEOUT_MS",
        "BATCHGATE_LOG_FORMAT",
        "BATCHGATE_OTLP_ENDPOINT",
        "BATCHGATE_TLS_CERT",
        "BATCHGATE_TLS_KEY",
        "BATCHGATE_TLS_CLIENT_CA",
        "BATCHGATE_CONFIG",
    ] {
        assert!(help.contains(env), "{env} is not documented in:\n{help}");
    }
    let (ok, help) = batchgate(&["--help"], &[]);
    assert!(
        ok && help.contains("serve") && help.contains("sim") && help.contains("check-config"),
        "{help}"
    );
}

#[test]
fn flags_beat_env_which_beats_the_file_and_secrets_stay_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("batchgate.toml");
    std::fs::write(
        &file,
        "upstream_timeout_ms = 1111\nretry_max_attempts = 7\nwatch_poll_ms = 3333\nsutro_api_key = \"sk_file_secret\"\n",
    )
    .unwrap();
    let (ok, out) = batchgate(
        &[
            "check-config",
            "--config",
            file.to_str().unwrap(),
            "--upstream-timeout-ms",
            "2222",
        ],
        &[
            ("BATCHGATE_RETRY_MAX_ATTEMPTS", "3"),
            ("BATCHGATE_XAI_API_KEY", "xai-env-secret"),
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("upstream_timeout: 2.222s"), "flag wins: {out}");
    assert!(out.contains("max_attempts: 3"), "env beats file: {out}");
    assert!(
        out.contains("watch_poll: 3.333s"),
        "file beats default: {out}"
    );
    assert!(
        !out.contains("sk_file_secret") && !out.contains("xai-env-secret"),
        "{out}"
    );

    let (ok, out) = batchgate(
        &["check-config", "--sutro-base-url", "http://sutro.example"],
        &[],
    );
    assert!(!ok);
    assert!(
        out.contains("sutro_base_url") && out.contains("https"),
        "{out}"
    );
    std::fs::write(&file, "no_such_setting = 1\n").unwrap();
    let (ok, out) = batchgate(&["check-config", "--config", file.to_str().unwrap()], &[]);
    assert!(!ok && out.contains("no_such_setting"), "{out}");
}

#[test]
fn check_config_refuses_half_a_tls_setting_and_unreadable_tls_files() {
    let (ok, out) = batchgate(&["check-config", "--tls-cert", "server.pem"], &[]);
    assert!(
        !ok && out.contains("tls_cert and tls_key go together"),
        "{out}"
    );
    let (ok, out) = batchgate(
        &["check-config"],
        &[
            ("BATCHGATE_TLS_CERT", "/no/such/server.pem"),
            ("BATCHGATE_TLS_KEY", "/no/such/server.key"),
        ],
    );
    assert!(!ok && out.contains("cannot read tls_cert"), "{out}");
}

#[test]
fn the_example_config_in_deploy_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/batchgate.toml");
    let (ok, out) = batchgate(&["check-config", "--config", example], &[]);
    assert!(ok, "{out}");
    assert!(out.contains("api.x.ai"), "{out}");
}
