//! The `batchgate` command line: documented settings and their precedence
//! (flags > BATCHGATE_* env > TOML file > defaults), secrets never printed; and the
//! client commands (`watch`, `jobs`, `batches`, `health`) against a live gateway.

mod common;

use std::process::Command;
use std::time::Duration;

use batchgate::proto::sutro::v1 as pb;
use batchgate::sim::xai::XaiSimConfig;
use batchgate::sim::{JobOutcome, SimConfig};
use common::{TestApp, spawn_app, spawn_app_with};

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

/// The rows of README.md's configuration table (from its `| setting` header to the
/// first line that is not a row).
fn readme_configuration_table() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split_once("## Configuration")
        .expect("README.md has a Configuration section")
        .1;
    let start = section.find("| setting").expect("the configuration table");
    section[start..]
        .lines()
        .take_while(|line| line.starts_with('|'))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_readme_configuration_table_lists_every_setting_of_serve_help() {
    let table = readme_configuration_table();
    let missing = |what: &str| format!("{what} is not in README.md's configuration table");
    let name = |word: &str, extra: char| {
        !word.is_empty()
            && word
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == extra)
    };
    let (ok, help) = batchgate(&["serve", "--help"], &[]);
    assert!(ok, "{help}");
    let mut flags = 0;
    for word in help.split_whitespace() {
        let word = word.trim_end_matches(',');
        if let Some(flag) = word
            .strip_prefix("--")
            .filter(|f| name(f, '-') && *f != "help")
        {
            flags += 1;
            assert!(table.contains(&format!("`--{flag}`")), "{}", missing(word));
            let key = flag.replace('-', "_");
            if flag != "config" {
                assert!(table.contains(&format!("`{key}`")), "{}", missing(&key));
            }
        }
        // `[env: BATCHGATE_LISTEN=]`
        let env = word.split('=').next().unwrap_or_default();
        if env.starts_with("BATCHGATE_")
            && env
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            assert!(table.contains(&format!("`{env}`")), "{}", missing(env));
        }
    }
    assert!(flags > 40, "only {flags} flags found in:\n{help}");
    // Every key check-config names (set or unset), TOML-only tables included.
    let (ok, out) = batchgate(&["check-config"], &[]);
    assert!(ok, "{out}");
    let mut keys = 0;
    for line in out.lines() {
        let line = line.trim_start_matches("# ");
        let Some((key, _)) = line.split_once([' ', ':']) else {
            continue;
        };
        if name(key, '_') {
            keys += 1;
            assert!(
                table.contains(&format!("`{key}`")) || table.contains(&format!("`[{key}.")),
                "{}",
                missing(key)
            );
        }
    }
    assert!(keys > 40, "only {keys} keys found in:\n{out}");
}

#[test]
fn serve_help_states_the_real_results_chunk_bounds() {
    let (ok, help) = batchgate(&["serve", "--help"], &[]);
    assert!(ok, "{help}");
    let text = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let (_, after) = text.split_once("--results-chunk-bytes").expect("the flag");
    let entry = after.split(" --").next().unwrap_or(after);
    assert!(
        entry.contains("2 MiB") && entry.contains("[default: 1048576, 1 MiB]"),
        "{entry}"
    );
    assert!(!entry.contains("4 MiB"), "{entry}");
    let (ok, out) = batchgate(&["check-config", "--results-chunk-bytes", "2097152"], &[]);
    assert!(ok, "{out}");
    let (ok, out) = batchgate(&["check-config", "--results-chunk-bytes", "2097153"], &[]);
    assert!(!ok && out.contains("results_chunk_bytes"), "{out}");
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
    let printed: toml::Table = toml::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let int = |key: &str| printed.get(key).and_then(toml::Value::as_integer);
    assert_eq!(int("upstream_timeout_ms"), Some(2222), "flag wins: {out}");
    assert_eq!(int("retry_max_attempts"), Some(3), "env beats file: {out}");
    assert_eq!(
        int("watch_poll_ms"),
        Some(3333),
        "file beats default: {out}"
    );
    assert_eq!(int("retry_base_delay_ms"), Some(100), "default: {out}");
    assert!(
        !out.contains("sk_file_secret") && !out.contains("xai-env-secret"),
        "{out}"
    );
    assert!(out.contains("# sutro_api_key is set"), "{out}");

    // What it prints is a config file: read back, it prints the same settings.
    let printed_file = dir.path().join("printed.toml");
    std::fs::write(&printed_file, &out).unwrap();
    let (ok, again) = batchgate(
        &["check-config", "--config", printed_file.to_str().unwrap()],
        &[],
    );
    assert!(ok, "{again}");
    let settings = |text: &str| {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(settings(&again), settings(&out));

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

// ------------------------------------------------------------------ client commands

/// What one run of the binary printed, and how it exited.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// The binary with no BATCHGATE_* variables of the environment the tests run in.
fn client_command(args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_batchgate"));
    command.args(args).args(["--connect-timeout", "3"]);
    for (name, _) in std::env::vars() {
        if name.starts_with("BATCHGATE_") {
            command.env_remove(name);
        }
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command.kill_on_drop(true);
    command
}

/// Runs the binary to its end (at most 30 s) on the test's runtime, so the gateway
/// it talks to goes on serving meanwhile.
async fn client(args: &[&str], env: &[(&str, &str)]) -> Run {
    let output = tokio::time::timeout(Duration::from_secs(30), client_command(args, env).output())
        .await
        .expect("the command ends within 30 s")
        .expect("the binary runs");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn target(app: &TestApp) -> String {
    format!("http://{}", app.addr)
}

/// A gRPC address where nothing listens.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// Creates a job of `prompts` through the CLI; returns its id.
async fn cli_create_job(app: &TestApp, prompts: &str, name: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(name);
    std::fs::write(&file, prompts).unwrap();
    let run = client(
        &[
            "jobs",
            "create",
            "--model",
            "gpt-oss-20b",
            "--prompts",
            file.to_str().unwrap(),
            "--target",
            &target(app),
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.all());
    let id = run.stdout.trim().to_owned();
    assert!(id.starts_with("job-"), "{}", run.all());
    id
}

#[tokio::test]
async fn watch_job_prints_a_line_per_update_and_exits_0_on_success() {
    let app = spawn_app().await;
    let id = cli_create_job(&app, "one\ntwo\nthree\n", "prompts.txt").await;
    let run = client(&["watch", "job", &id, "--target", &target(&app)], &[]).await;
    assert_eq!(run.code, 0, "{}", run.all());
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines.len() >= 2, "{}", run.stdout);
    assert!(lines.iter().all(|l| l.starts_with(&id)), "{}", run.stdout);
    assert!(
        lines.iter().any(|l| l.contains("SUCCEEDED 3/3 rows 100%")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("elapsed"), "{}", run.stdout);
    assert_eq!(lines.last(), Some(&format!("{id} succeeded").as_str()));

    // --json: one WatchJobResponse a line, proto field names, the FINAL one last.
    let run = client(
        &["watch", "--json", "job", &id, "--target", &target(&app)],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.all());
    let messages = json_lines(&run.stdout);
    let last = messages.last().unwrap();
    assert_eq!(last["kind"], "WATCH_EVENT_KIND_FINAL");
    assert_eq!(last["progress"]["status"], "JOB_STATUS_SUCCEEDED");
    assert_eq!(last["progress"]["rows_processed"], 3);
}

#[tokio::test]
async fn watch_exits_3_for_a_failed_job_and_says_why() {
    let sim = SimConfig {
        finalize_ms: 300,
        ..SimConfig::fast()
    };
    let mut app = spawn_app_with(sim, |_| {}).await;
    let id = common::create_job(&mut app, vec!["a".into(), "b".into()]).await;
    app.sim.set_job_outcome(
        &id,
        JobOutcome::Fail {
            message: "worker crashed".into(),
        },
    );
    let run = client(&["watch", "job", &id, "--target", &target(&app)], &[]).await;
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.stdout.contains(&format!("{id} failed: worker crashed")),
        "{}",
        run.all()
    );
    assert!(run.stdout.contains(" FAILED "), "{}", run.stdout);
}

#[tokio::test]
async fn watch_exits_4_for_a_job_cancelled_by_jobs_cancel() {
    let sim = SimConfig {
        rows_per_second: 2.0,
        ..SimConfig::fast()
    };
    let mut app = spawn_app_with(sim, |_| {}).await;
    let id = common::create_job(&mut app, (0..50).map(|i| format!("p{i}")).collect()).await;
    let watch = client_command(&["watch", "job", &id, "--target", &target(&app)], &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancel = client(&["jobs", "cancel", &id, "--target", &target(&app)], &[]).await;
    assert_eq!(cancel.code, 0, "{}", cancel.all());
    assert!(
        cancel.stdout.contains("cancel requested"),
        "{}",
        cancel.all()
    );
    let output = tokio::time::timeout(Duration::from_secs(20), watch.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(4), "{stdout}");
    assert!(stdout.contains(&format!("{id} was cancelled")), "{stdout}");
}

#[tokio::test]
async fn ctrl_c_ends_the_watch_with_130_and_leaves_the_job_running() {
    use tokio::io::AsyncBufReadExt;
    let sim = SimConfig {
        rows_per_second: 2.0,
        ..SimConfig::fast()
    };
    let mut app = spawn_app_with(sim, |_| {}).await;
    let id = common::create_job(&mut app, (0..50).map(|i| format!("p{i}")).collect()).await;
    let mut watch = client_command(&["watch", "job", &id, "--target", &target(&app)], &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The first line means the watch is under way (and listening for Ctrl-C).
    let mut stdout = tokio::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), stdout.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.starts_with(&id), "{first}");
    let pid = i32::try_from(watch.id().unwrap()).unwrap();
    // SAFETY: kill(2) on the child this test started and still owns.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let output = tokio::time::timeout(Duration::from_secs(10), watch.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("keeps running upstream"), "{stderr}");
    let status = app
        .jobs
        .get_job_status(pb::GetJobStatusRequest { job_id: id })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert!(
        matches!(
            status,
            pb::JobStatus::Queued | pb::JobStatus::Starting | pb::JobStatus::Running
        ),
        "{status:?}"
    );
}

#[tokio::test]
async fn an_unreachable_gateway_is_exit_1_for_every_command() {
    let closed = closed_port();
    for args in [
        vec!["watch", "job", "job-x"],
        vec!["jobs", "list"],
        vec!["batches", "get", "batch_x"],
        vec!["health"],
    ] {
        let mut args = args.clone();
        args.extend(["--target", closed.as_str()]);
        let run = client(&args, &[]).await;
        assert_eq!(run.code, 1, "{args:?}: {}", run.all());
        assert!(
            run.stderr.contains("cannot reach the gateway"),
            "{args:?}: {}",
            run.all()
        );
    }
}

#[tokio::test]
async fn health_is_0_against_a_serving_gateway() {
    let app = spawn_app().await;
    let run = client(&["health", "--target", &target(&app)], &[]).await;
    assert_eq!(
        (run.code, run.stdout.trim()),
        (0, "SERVING"),
        "{}",
        run.all()
    );
    let run = client(&["health", "--json", "--target", &target(&app)], &[]).await;
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["status"], "SERVING");
    // A service the gateway does not serve is not healthy.
    let run = client(
        &[
            "health",
            "--service",
            "no.such.Service",
            "--target",
            &target(&app),
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("NotFound"), "{}", run.all());
}

#[tokio::test]
async fn prompts_come_from_plain_lines_or_jsonl_and_results_go_to_a_file() {
    let app = spawn_app().await;
    let target = target(&app);
    let plain = cli_create_job(&app, "first {braces} \"quotes\"\n\nsecond\n", "p.txt").await;
    let jsonl = cli_create_job(
        &app,
        "\"from a string\"\n{\"prompt\": \"from an object\"}\n",
        "p.jsonl",
    )
    .await;
    for (id, inputs) in [
        (&plain, vec!["first {braces} \"quotes\"", "second"]),
        (&jsonl, vec!["from a string", "from an object"]),
    ] {
        let run = client(&["watch", "job", id, "--target", &target], &[]).await;
        assert_eq!(run.code, 0, "{}", run.all());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("results.jsonl");
        let run = client(
            &[
                "jobs",
                "results",
                id,
                "--include-inputs",
                "--json",
                "--out",
                file.to_str().unwrap(),
                "--target",
                &target,
            ],
            &[],
        )
        .await;
        assert_eq!(run.code, 0, "{}", run.all());
        assert!(run.stdout.is_empty(), "{}", run.stdout);
        assert!(run.stderr.contains("wrote 2 rows"), "{}", run.stderr);
        let rows = json_lines(&std::fs::read_to_string(&file).unwrap());
        let got: Vec<&str> = rows.iter().map(|r| r["input"].as_str().unwrap()).collect();
        assert_eq!(got, inputs);
        assert_eq!(rows[1]["index"], 1);
        assert!(rows.iter().all(|r| r["output"].is_string()), "{rows:?}");
    }
    // Human output: index, a tab, the output.
    let run = client(&["jobs", "results", &plain, "--target", &target], &[]).await;
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(run.stdout.lines().count(), 2, "{}", run.stdout);
    assert!(run.stdout.starts_with("0\t"), "{}", run.stdout);

    // A bad JSONL line is refused before anything is sent.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"prompt\": \"ok\"}\n{\"text\": 1}\n").unwrap();
    let run = client(
        &[
            "jobs",
            "create",
            "--model",
            "m",
            "--prompts",
            bad.to_str().unwrap(),
            "--target",
            &target,
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("bad.jsonl:2"), "{}", run.stderr);
}

#[tokio::test]
async fn jobs_get_and_list_print_tables_or_one_json_document() {
    let app = spawn_app().await;
    let target = target(&app);
    let id = cli_create_job(&app, "a\nb\n", "p.txt").await;
    let run = client(&["jobs", "get", &id, "--target", &target], &[]).await;
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains(&format!("job_id:   {id}")) || run.stdout.contains(&id),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("model:"), "{}", run.stdout);

    let run = client(&["jobs", "get", &id, "--json", "--target", &target], &[]).await;
    let job: serde_json::Value = serde_json::from_str(&run.stdout).expect("one JSON document");
    assert_eq!(job["job_id"], id.as_str());
    assert_eq!(job["model"], "gpt-oss-20b");

    let run = client(&["jobs", "list", "--target", &target], &[]).await;
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.starts_with("JOB ID"), "{}", run.stdout);
    assert!(run.stdout.contains(&id), "{}", run.stdout);
    let run = client(&["jobs", "--json", "list", "--target", &target], &[]).await;
    let list: serde_json::Value = serde_json::from_str(&run.stdout).expect("one JSON document");
    assert!(
        list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["job_id"] == id.as_str()),
        "{list}"
    );
}

/// Writes `lines` to a JSONL file in `dir`; returns its path.
fn requests_file(dir: &tempfile::TempDir, lines: &[serde_json::Value]) -> String {
    let path = dir.path().join("requests.jsonl");
    let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    std::fs::write(&path, text.join("\n") + "\n").unwrap();
    path.to_str().unwrap().to_owned()
}

/// Runs `batches add` on batch `id` with `lines` as its JSONL requests file.
async fn cli_add_requests(
    target: &str,
    id: &str,
    lines: &[serde_json::Value],
    extra: &[&str],
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let requests = requests_file(&dir, lines);
    let mut args = vec![
        "batches",
        "add",
        id,
        "--requests",
        &requests,
        "--target",
        target,
    ];
    args.extend_from_slice(extra);
    client(&args, &[]).await
}

#[tokio::test]
async fn a_batch_is_created_filled_watched_and_read_through_the_cli() {
    let app = spawn_app().await;
    let target = target(&app);
    let run = client(
        &[
            "batches",
            "create",
            "--name",
            "cli batch",
            "--target",
            &target,
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.all());
    let id = run.stdout.trim().to_owned();

    let run = cli_add_requests(
        &target,
        &id,
        &[
            serde_json::json!({
                "batch_request_id": "r1",
                "chat_get_completion": {"model": "grok-4", "messages": [{"role": "user", "content": "hi"}]},
            }),
            // A bare chat-completions body gets an id from the gateway.
            serde_json::json!({"model": "grok-4", "messages": [{"role": "user", "content": "there"}]}),
        ],
        &["--json"],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.all());
    let added: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let ids = added["batch_request_ids"].as_array().unwrap();
    assert_eq!(
        (ids.len(), &ids[0]),
        (2, &serde_json::json!("r1")),
        "{added}"
    );

    let run = client(&["watch", "batch", &id, "--target", &target], &[]).await;
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("COMPLETED 2/2 requests 100%"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.ends_with(&format!("{id} completed\n")),
        "{}",
        run.stdout
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("results.jsonl");
    let run = client(
        &[
            "batches",
            "results",
            &id,
            "--json",
            "--out",
            file.to_str().unwrap(),
            "--target",
            &target,
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.all());
    let results = json_lines(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(
        results
            .iter()
            .any(|r| r["batch_request_id"] == "r1"
                && r["response"]["chat_get_completion"].is_object()),
        "{results:?}"
    );
    let run = client(&["batches", "results", &id, "--target", &target], &[]).await;
    assert!(
        run.stdout.lines().any(|l| l.starts_with("r1\tok\t")),
        "{}",
        run.stdout
    );

    let run = client(&["batches", "get", &id, "--json", "--target", &target], &[]).await;
    let batch: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(batch["state"]["num_success"], 2, "{batch}");
    let run = client(&["batches", "list", "--target", &target], &[]).await;
    assert!(
        run.stdout.starts_with("BATCH ID") && run.stdout.contains(&id),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn watch_batch_exits_4_when_the_batch_is_cancelled() {
    let sim = SimConfig {
        xai: XaiSimConfig {
            request_ms: 60_000,
            ..XaiSimConfig::fast()
        },
        ..SimConfig::fast()
    };
    let app = spawn_app_with(sim, |_| {}).await;
    let target = target(&app);
    let run = client(
        &["batches", "create", "--name", "slow", "--target", &target],
        &[],
    )
    .await;
    let id = run.stdout.trim().to_owned();
    let run = cli_add_requests(
        &target,
        &id,
        &[
            serde_json::json!({"model": "grok-4", "messages": [{"role": "user", "content": "slow"}]}),
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.all());
    let watch = client_command(&["watch", "batch", &id, "--target", &target], &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let run = client(&["batches", "cancel", &id, "--target", &target], &[]).await;
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains("cancel_time:"), "{}", run.stdout);
    let output = tokio::time::timeout(Duration::from_secs(20), watch.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(4), "{stdout}");
    assert!(stdout.contains(&format!("{id} was cancelled")), "{stdout}");
}

#[tokio::test]
async fn the_key_is_sent_but_never_printed() {
    let app = spawn_app().await;
    let target = target(&app);
    // The simulator's own key works when passed through.
    let key = batchgate::sim::DEMO_API_KEY;
    let run = client(&["jobs", "list", "--key", key, "--target", &target], &[]).await;
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(!run.all().contains(key), "{}", run.all());
    // A wrong key reaches the upstream (so it is sent) and is refused; it is in no output.
    let wrong = "sk_wrong_secret_4242";
    for run in [
        client(&["jobs", "list", "--key", wrong, "--target", &target], &[]).await,
        client(
            &["watch", "job", "job-nope", "--target", &target],
            &[("BATCHGATE_KEY", wrong)],
        )
        .await,
        client(&["jobs", "--help"], &[("BATCHGATE_KEY", wrong)]).await,
        client(&["watch", "--help"], &[("BATCHGATE_KEY", wrong)]).await,
    ] {
        assert!(!run.all().contains(wrong), "{}", run.all());
    }
    let run = client(&["jobs", "list", "--key", wrong, "--target", &target], &[]).await;
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr.to_lowercase().contains("unauthenticated"),
        "{}",
        run.all()
    );
}

#[test]
fn client_help_documents_the_exit_codes() {
    for command in ["watch", "jobs", "batches"] {
        let (ok, help) = batchgate(&[command, "--help"], &[]);
        assert!(ok, "{help}");
        for code in [
            "0 success",
            "3 the job failed",
            "4 cancelled",
            "130 interrupted",
        ] {
            assert!(help.contains(code), "{command}: {code} missing in {help}");
        }
    }
    let (ok, help) = batchgate(&["--help"], &[]);
    assert!(
        ok && ["watch", "jobs", "batches", "health"]
            .iter()
            .all(|c| help.contains(c)),
        "{help}"
    );
}

#[tokio::test]
async fn watch_batch_exits_3_when_requests_failed_and_results_show_the_error() {
    let app = spawn_app().await;
    let target = target(&app);
    let run = client(
        &[
            "batches", "create", "--name", "half bad", "--target", &target,
        ],
        &[],
    )
    .await;
    let id = run.stdout.trim().to_owned();
    let run = cli_add_requests(
        &target,
        &id,
        &[
            serde_json::json!({"batch_request_id": "good", "chat_get_completion": {"model": "grok-4", "messages": [{"role": "user", "content": "hi"}]}}),
            // Accepted when added, refused when it runs.
            serde_json::json!({"batch_request_id": "bad", "chat_get_completion": {"model": "grok-4", "max_tokens": 0, "messages": [{"role": "user", "content": "hi"}]}}),
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.all());
    let run = client(&["watch", "batch", &id, "--target", &target], &[]).await;
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.stdout
            .contains(&format!("{id} completed with 1 of 2 requests failed")),
        "{}",
        run.stdout
    );
    let run = client(&["batches", "results", &id, "--target", &target], &[]).await;
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.lines().any(|l| l.starts_with("good\tok\t")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("bad\terror\t") && l.contains("max_tokens")),
        "{}",
        run.stdout
    );
}
