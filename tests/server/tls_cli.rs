//! The client commands over TLS: `batchgate health` and `jobs list` reach a gateway
//! with `tls_cert` (and mutual TLS) given the CA and a client certificate, and refuse
//! clearly without them.

use std::path::{Path, PathBuf};
use tokio::process::Command;

use super::tls::{Ca, Leaf, start_mutual, start_tls};

/// Runs the binary's client command with no BATCHGATE_* from the test's environment
/// (as a child process the gateway, on this test's runtime, keeps serving meanwhile):
/// its exit code, and stdout + stderr.
async fn batchgate(args: &[&str]) -> (i32, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_batchgate"));
    command.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("BATCHGATE_") {
            command.env_remove(name);
        }
    }
    let output = command.output().await.expect("the binary runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

fn write(dir: &Path, name: &str, contents: &str) -> String {
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, contents).expect("write a PEM file");
    path.display().to_string()
}

#[tokio::test]
async fn the_cli_calls_a_tls_gateway_that_its_ca_flag_trusts() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let ca = Ca::new("test CA");
    let (app, sim, _files) = start_tls(dir.path(), &ca.server(), |_| {}).await;
    let target = format!("https://localhost:{}", app.local_addr().port());
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);

    let (code, out) = batchgate(&["health", "--target", &target, "--tls-ca", &ca_file]).await;
    assert_eq!((code, out.trim()), (0, "SERVING"), "{out}");
    // Without a scheme, a TLS flag means https.
    let bare = format!("localhost:{}", app.local_addr().port());
    let (code, out) = batchgate(&["jobs", "list", "--target", &bare, "--tls-ca", &ca_file]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(sim.calls("GET /v1/list-jobs"), 1);

    // A CA that did not sign the gateway's certificate: refused, and said why.
    let stranger = write(dir.path(), "stranger.pem", &Ca::new("another CA").pem);
    let (code, out) = batchgate(&["health", "--target", &target, "--tls-ca", &stranger]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("cannot reach the gateway") && out.contains("certificate"),
        "{out}"
    );
    // The system's roots do not know a private CA either.
    let (code, out) = batchgate(&["health", "--target", &target]).await;
    assert_eq!(code, 1, "{out}");
    // Plain text to a TLS listener is not mistaken for a healthy gateway.
    let plain = format!("http://localhost:{}", app.local_addr().port());
    let (code, out) = batchgate(&["health", "--target", &plain]).await;
    assert_eq!(code, 1, "{out}");
    // TLS flags on an http:// target are refused before any connection.
    let (code, out) = batchgate(&["health", "--target", &plain, "--tls-ca", &ca_file]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("need an https:// target"), "{out}");
    // A file that is not PEM is named, not sent.
    let junk = write(dir.path(), "junk.pem", "not a certificate");
    let (code, out) = batchgate(&["health", "--target", &target, "--tls-ca", &junk]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("--tls-ca") && out.contains("not a PEM file"),
        "{out}"
    );
    assert_eq!(sim.calls("GET /v1/list-jobs"), 1, "no call got through");
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn the_cli_presents_its_client_certificate_for_mutual_tls() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (ca, clients, app, sim) = start_mutual(dir.path()).await;
    let target = format!("https://localhost:{}", app.local_addr().port());
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let search: Leaf = clients.client("search-client", &[]);
    let cert = write(dir.path(), "search.pem", &search.cert);
    let key = write(dir.path(), "search.key", &search.key);
    let flags = [
        "--tls-ca",
        &ca_file,
        "--client-cert",
        &cert,
        "--client-key",
        &key,
    ];

    let (code, out) =
        batchgate(&[&["jobs", "list", "--target", &target][..], &flags].concat()).await;
    assert_eq!(
        code, 0,
        "the tenant its certificate names may list jobs: {out}"
    );
    assert_eq!(sim.calls("GET /v1/list-jobs"), 1);
    // The same settings from the environment, as a container's HEALTHCHECK would have them.
    let mut command = Command::new(env!("CARGO_BIN_EXE_batchgate"));
    let output = command
        .arg("health")
        .env("BATCHGATE_TARGET", &target)
        .env("BATCHGATE_TLS_CA", &ca_file)
        .env("BATCHGATE_CLIENT_CERT", &cert)
        .env("BATCHGATE_CLIENT_KEY", &key)
        .output()
        .await
        .expect("the binary runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Without a certificate the handshake fails: exit 1, no call.
    let (code, out) = batchgate(&["jobs", "list", "--target", &target, "--tls-ca", &ca_file]).await;
    assert_eq!(code, 1, "{out}");
    // Half a key pair is a mistake on the command line, named as such.
    let (code, out) = batchgate(&[
        "health",
        "--target",
        &target,
        "--tls-ca",
        &ca_file,
        "--client-cert",
        &cert,
    ])
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("--client-cert and --client-key go together"),
        "{out}"
    );
    assert_eq!(
        sim.calls("GET /v1/list-jobs"),
        1,
        "only the certified call got through"
    );
    app.shutdown().await.expect("clean shutdown");
}
