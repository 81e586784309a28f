//! Peak and settled memory of the real `batchgate` binary for large CreateJobs: one,
//! then eight at once, against the simulator running in this (the parent) process.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use batchgate::proto::sutro::v1::{
    CreateJobRequest, StringInputs, create_job_request::Inputs,
    job_service_client::JobServiceClient,
};
use batchgate::sim::{self, SimConfig};
use tokio::process::{Child, Command};

use super::report::mib;

/// Bytes of prompt text in one create (60 MB, as in the issue).
const MESSAGE_BYTES: usize = 60_000_000;
/// Bytes of one prompt.
const PROMPT_BYTES: usize = 1_000;
/// How long the gateway gets to give memory back before "settled" is read.
const SETTLE: Duration = Duration::from_secs(3);

/// One case: `creates` at once, with the byte budget `budget` (None: the default).
struct Case {
    creates: usize,
    budget: Option<usize>,
}

/// Runs every case, each against a fresh gateway process, and prints a table.
pub async fn run() {
    let sim = sim::start(SimConfig::fast(), SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("start the simulator");
    let prompts: Vec<String> = (0..MESSAGE_BYTES / PROMPT_BYTES)
        .map(|i| format!("{i:08} {}", "x".repeat(PROMPT_BYTES - 9)))
        .collect();
    println!();
    println!(
        "## CreateJob memory: {} MB of prompts per message ({} prompts), gateway binary RSS",
        MESSAGE_BYTES / 1_000_000,
        prompts.len()
    );
    println!(
        "  {:<34} {:>9} {:>9} {:>10} {:>10} {:>8} {:>8}",
        "case", "idle MiB", "peak MiB", "growth MiB", "settled", "peak/msg", "time s"
    );
    let cases = [
        Case {
            creates: 1,
            budget: None,
        },
        Case {
            creates: 8,
            budget: None,
        },
        Case {
            creates: 8,
            budget: Some(0),
        },
    ];
    for case in cases {
        run_case(&sim.sutro_base_url(), &prompts, &case).await;
    }
    sim.shutdown().await;
}

async fn run_case(sutro: &str, prompts: &[String], case: &Case) {
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_batchgate"));
    command
        .arg("serve")
        .env("BATCHGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("BATCHGATE_ADMIN_LISTEN", "127.0.0.1:0")
        .env("BATCHGATE_SUTRO_BASE_URL", sutro)
        .env("BATCHGATE_SUTRO_API_KEY", sim::DEMO_API_KEY)
        .env("BATCHGATE_ALLOW_ANONYMOUS", "true")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true);
    if let Some(budget) = case.budget {
        command.env("BATCHGATE_MAX_REQUEST_BYTES_IN_FLIGHT", budget.to_string());
    }
    let mut child = command.spawn().expect("start the gateway binary");
    let pid = child.id().expect("the gateway's pid");
    let channel = connect(port).await;
    let client = JobServiceClient::new(channel)
        .max_encoding_message_size(128 * 1024 * 1024)
        .max_decoding_message_size(128 * 1024 * 1024);
    // One small create first, so the idle figure includes connections and pools.
    client
        .clone()
        .create_job(request(prompts[..1].to_vec()))
        .await
        .expect("a small create");
    let idle = status_kib(pid, "VmRSS:");
    let started = Instant::now();
    let calls: Vec<_> = (0..case.creates)
        .map(|_| {
            let mut client = client.clone();
            let message = request(prompts.to_vec());
            tokio::spawn(async move { client.create_job(message).await })
        })
        .collect();
    for call in calls {
        call.await
            .expect("a create task")
            .expect("a large create succeeds");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let peak = status_kib(pid, "VmHWM:");
    tokio::time::sleep(SETTLE).await;
    let settled = status_kib(pid, "VmRSS:");
    stop(&mut child).await;

    let kib = |k: u64| mib(k * 1024);
    let growth = peak.saturating_sub(idle) * 1024;
    let label = format!(
        "{} create{} at once, budget {}",
        case.creates,
        if case.creates == 1 { "" } else { "s" },
        match case.budget {
            None => "256 MiB".into(),
            Some(0) => "off".into(),
            Some(b) => format!("{} MiB", b >> 20),
        }
    );
    println!(
        "  {label:<34} {:>9.0} {:>9.0} {:>10.0} {:>10.0} {:>8.2} {:>8.1}",
        kib(idle),
        kib(peak),
        mib(growth),
        kib(settled),
        growth as f64 / (MESSAGE_BYTES * case.creates) as f64,
        elapsed
    );
}

fn request(values: Vec<String>) -> CreateJobRequest {
    CreateJobRequest {
        model: "gpt-oss-20b".into(),
        inputs: Some(Inputs::Prompts(StringInputs { values })),
        ..Default::default()
    }
}

/// A port free right now (the gateway binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn connect(port: u16) -> tonic::transport::Channel {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("a channel URI")
            .connect()
            .await;
        match attempt {
            Ok(channel) => return channel,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the gateway did not start serving: {e}"),
        }
    }
}

/// A `kB` line of `/proc/<pid>/status` (VmRSS: now; VmHWM: the peak so far).
fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read the status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{key} in /proc/{pid}/status"))
}

async fn stop(child: &mut Child) {
    child.start_kill().expect("stop the gateway");
    child.wait().await.expect("wait for the gateway");
}
