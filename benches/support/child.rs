//! The server side of the benchmark runs in a child process (this same binary, started
//! with `--serve-child`): the simulator, the gateway, and two bare tonic servers. The
//! client side stays in the parent, so the child's memory is the server's alone, and
//! each phase gets a fresh child whose heap no earlier phase has grown.
//!
//! The child prints `READY key=addr ...`, then answers one line per command on stdin:
//! `MEM` (resident and live heap bytes), `CALLS <route>` (simulator calls on a route),
//! `TOTAL` (simulator calls on every route), `CPU` (CPU seconds used), `WATCHES`
//! (upstream pollers running in the gateway), `QUIT` (shuts down, answers `BYE`).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use batchgate::config::{Config, ConfigLayer};
use batchgate::sim::{self, SimConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use super::mem;

/// The argument that makes this binary the server child.
pub const CHILD_FLAG: &str = "--serve-child";

/// Rows the simulated Sutro processes per second, once a job runs.
pub const ROWS_PER_SECOND: f64 = 100.0;

/// How often the simulator's progress stream looks for new rows, unless told otherwise:
/// `SimConfig::fast()`'s pace. Each look that finds new rows sends two lines (rows,
/// tokens), and the gateway publishes each, so watchers see up to 100 changes a second.
pub const FAST_PROGRESS_MS: u64 = 20;

/// The pace of `batchgate sim` and of the demo (`SimConfig::default()`): 8 changes a second.
pub const DEMO_PROGRESS_MS: u64 = 250;

/// The argument that sets the progress stream's pace in the child.
const PROGRESS_FLAG: &str = "--progress-ms";

/// The argument that makes the child count live heap bytes (one relaxed atomic add
/// per allocation and per free; left off where only time is measured).
const COUNT_HEAP_FLAG: &str = "--count-heap";

/// The simulator: jobs start within 50 ms and then run at `ROWS_PER_SECOND`; the
/// progress stream looks for new rows every `progress_ms` and sends a heartbeat each second.
fn sim_config(progress_ms: u64) -> SimConfig {
    SimConfig {
        rows_per_second: ROWS_PER_SECOND,
        heartbeat_ms: 1_000,
        progress_ms,
        ..SimConfig::fast()
    }
}

/// Runs the server child until `QUIT` or the end of stdin.
pub async fn serve() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == COUNT_HEAP_FLAG) {
        mem::start_counting();
    }
    let progress_ms = args
        .iter()
        .position(|a| a == PROGRESS_FLAG)
        .map(|i| {
            args.get(i + 1)
                .and_then(|v| v.parse().ok())
                .expect("a number of milliseconds after --progress-ms")
        })
        .unwrap_or(FAST_PROGRESS_MS);
    batchgate::upstream::http::install_crypto_provider();
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let sim = sim::start(sim_config(progress_ms), loopback)
        .await
        .expect("start the simulator");
    let config = Config::resolve(ConfigLayer {
        listen: Some(loopback),
        admin_listen: Some(loopback),
        sutro_base_url: Some(sim.sutro_base_url()),
        sutro_api_key: Some(sim::DEMO_API_KEY.into()),
        xai_base_url: Some(sim.xai_base_url()),
        xai_api_key: Some(sim::XAI_DEMO_API_KEY.into()),
        allow_anonymous: Some(true),
        xai_creates_per_second: Some(0.0),
        xai_add_calls_per_30s: Some(0.0),
        watch_poll_ms: Some(100),
        watch_heartbeat_ms: Some(5_000),
        drain_timeout_ms: Some(2_000),
        ..Default::default()
    })
    .expect("gateway config");
    let app = batchgate::server::App::start(config)
        .await
        .expect("start the gateway");
    let bare = bare_tonic(true);
    let bare_nagle = bare_tonic(false);
    println!(
        "READY gateway={} sim={} bare={bare} bare_nagle={bare_nagle}",
        app.local_addr(),
        sim.addr()
    );

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines
        .next_line()
        .await
        .expect("read a command from the parent")
    {
        match line.split_once(' ').unwrap_or((line.as_str(), "")) {
            ("MEM", _) => println!("MEM {} {}", mem::rss_bytes(), mem::heap_bytes()),
            ("CALLS", route) => println!("CALLS {}", sim.calls(route)),
            ("TOTAL", _) => println!("TOTAL {}", sim.total_calls()),
            ("CPU", _) => println!("CPU {}", mem::cpu_seconds()),
            ("WATCHES", _) => println!("WATCHES {}", app.active_watches()),
            ("QUIT", _) => break,
            _ => panic!("unknown command {line:?}"),
        }
    }
    app.shutdown().await.expect("gateway shutdown");
    sim.shutdown().await;
    println!("BYE");
}

/// A tonic server with nothing but the health service, on a free port. With `nodelay`
/// its connections get TCP_NODELAY, as `Server::serve` gives them; without, they keep
/// the socket default, as `serve_with_incoming` over a plain `TcpListenerStream` does.
fn bare_tonic(nodelay: bool) -> SocketAddr {
    let incoming = TcpIncoming::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind a bare tonic server")
        .with_nodelay(Some(nodelay));
    let addr = incoming.local_addr().expect("bare tonic server address");
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        Server::builder()
            .add_service(health)
            .serve_with_incoming(incoming),
    );
    addr
}

/// Resident and live heap bytes of the server child.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// Resident set size.
    pub rss: u64,
    /// Live heap bytes (a counter; only differences mean anything).
    pub heap: i64,
}

impl Memory {
    /// KiB per item of the growth from `before` to `self`: (RSS, heap).
    pub fn growth_kib_per(&self, before: Memory, items: usize) -> (f64, f64) {
        let per = |bytes: f64| bytes / 1024.0 / items as f64;
        (
            per(self.rss as f64 - before.rss as f64),
            per((self.heap - before.heap) as f64),
        )
    }
}

/// The parent's handle on a server child.
pub struct ServerChild {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// The gateway (gRPC).
    pub gateway: SocketAddr,
    /// The simulator (REST).
    pub sim: SocketAddr,
    /// A bare tonic health server, TCP_NODELAY on.
    pub bare: SocketAddr,
    /// A bare tonic health server, TCP_NODELAY off.
    pub bare_nagle: SocketAddr,
}

impl ServerChild {
    /// Starts a server child whose simulator looks for progress every `progress_ms`
    /// (counting live heap bytes if `count_heap`), and waits until it serves.
    pub async fn spawn(progress_ms: u64, count_heap: bool) -> Self {
        let exe = std::env::current_exe().expect("the benchmark's own path");
        let mut command = Command::new(exe);
        command
            .arg(CHILD_FLAG)
            .arg(PROGRESS_FLAG)
            .arg(progress_ms.to_string());
        if count_heap {
            command.arg(COUNT_HEAP_FLAG);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the server child");
        let stdin = child.stdin.take().expect("the child's stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("the child's stdout")).lines();
        let ready = lines
            .next_line()
            .await
            .expect("read the child's READY line")
            .expect("the child exited before it was ready");
        let addr = |key: &str| -> SocketAddr {
            ready
                .split_whitespace()
                .find_map(|field| field.strip_prefix(key)?.strip_prefix('='))
                .and_then(|addr| addr.parse().ok())
                .unwrap_or_else(|| panic!("no {key}=<address> in {ready:?}"))
        };
        Self {
            gateway: addr("gateway"),
            sim: addr("sim"),
            bare: addr("bare"),
            bare_nagle: addr("bare_nagle"),
            child,
            stdin,
            lines,
        }
    }

    async fn ask(&mut self, command: &str) -> String {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .expect("send a command to the child");
        self.lines
            .next_line()
            .await
            .expect("read the child's answer")
            .unwrap_or_else(|| panic!("the child exited instead of answering {command:?}"))
    }

    fn number<T: std::str::FromStr>(answer: &str, index: usize) -> T {
        answer
            .split_whitespace()
            .nth(index)
            .and_then(|field| field.parse().ok())
            .unwrap_or_else(|| panic!("field {index} of the child's answer {answer:?}"))
    }

    /// The child's memory now.
    pub async fn memory(&mut self) -> Memory {
        let answer = self.ask("MEM").await;
        Memory {
            rss: Self::number(&answer, 1),
            heap: Self::number(&answer, 2),
        }
    }

    /// Simulator calls on `route` so far, e.g. `"GET /v1/jobs/{job_id}"`.
    pub async fn calls(&mut self, route: &str) -> u64 {
        let answer = self.ask(&format!("CALLS {route}")).await;
        Self::number(&answer, 1)
    }

    /// Simulator calls on every route so far.
    pub async fn total_calls(&mut self) -> u64 {
        let answer = self.ask("TOTAL").await;
        Self::number(&answer, 1)
    }

    /// CPU seconds the child has used so far.
    pub async fn cpu_seconds(&mut self) -> f64 {
        let answer = self.ask("CPU").await;
        Self::number(&answer, 1)
    }

    /// Upstream pollers running in the gateway (one per watched job or batch).
    pub async fn active_watches(&mut self) -> usize {
        let answer = self.ask("WATCHES").await;
        Self::number(&answer, 1)
    }

    /// Shuts the child down (the gateway drains for at most 2 s).
    pub async fn quit(mut self) {
        let bye = tokio::time::timeout(Duration::from_secs(10), self.ask("QUIT")).await;
        if !matches!(bye.as_deref(), Ok("BYE")) {
            eprintln!("warning: the server child did not shut down cleanly; killing it");
            self.child.kill().await.expect("kill the server child");
        }
        self.child.wait().await.expect("wait for the server child");
    }
}
