//! Gateway replicas as separate `batchgate serve` processes, for tests of what several
//! replicas share through Redis: each listens on port 0 and its address is read from its log.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// One gateway process; killed when dropped.
pub struct Replica {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Replica {
    /// Starts `batchgate serve` with `args` (on top of a port-0 listener and JSON logs)
    /// and `env`, and waits until it serves. No `BATCHGATE_*` variable of the test's own
    /// environment leaks in.
    pub async fn spawn(args: &[String], env: &[(String, String)]) -> Self {
        Self::spawn_under(&[], args, env).await
    }

    /// Like [`Self::spawn`], with the binary run by `wrapper` (e.g. `prlimit --nofile=64`),
    /// which must exec it so that the process id stays the gateway's.
    pub async fn spawn_under(wrapper: &[&str], args: &[String], env: &[(String, String)]) -> Self {
        let binary = env!("CARGO_BIN_EXE_batchgate");
        let mut command = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut command = Command::new(program);
                command.args(wrapper_args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command
            .args(super::serve_args("json"))
            .arg("--allow-anonymous")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, _) in std::env::vars() {
            if name.starts_with("BATCHGATE_") || name.starts_with("OTEL_") {
                command.env_remove(name);
            }
        }
        command.env("RUST_LOG", "info");
        command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut child = command.spawn().expect("the batchgate binary starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (serving_tx, serving_rx) = oneshot::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        tokio::spawn(collect(stdout, log.clone(), Some(serving_tx)));
        tokio::spawn(collect(stderr, log.clone(), None));
        let addr = match tokio::time::timeout(Duration::from_secs(30), serving_rx).await {
            Ok(Ok(addr)) => addr,
            _ => panic!(
                "the replica did not start serving; its log:\n{}",
                log.lock().unwrap().join("\n")
            ),
        };
        Self { child, addr, log }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the replica is running")
    }

    /// Kills the process at once (SIGKILL): no drain, no goodbye to Redis.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Whether any log line so far contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.log
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains(text))
    }

    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

/// Keeps every line of `output`, and reports the address of the "serving" line.
async fn collect(
    output: impl tokio::io::AsyncRead + Unpin,
    log: Arc<Mutex<Vec<String>>>,
    mut serving: Option<oneshot::Sender<SocketAddr>>,
) {
    let mut lines = BufReader::new(output).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.contains("batchgate is serving")
            && let Some(addr) = serving_addr(&line)
            && let Some(tx) = serving.take()
        {
            let _ = tx.send(addr);
        }
        log.lock().unwrap().push(line);
    }
}

fn serving_addr(line: &str) -> Option<SocketAddr> {
    let json: serde_json::Value = serde_json::from_str(line).ok()?;
    // The gateway's JSON lines carry an event's fields at the top level.
    json["addr"].as_str()?.parse().ok()
}
