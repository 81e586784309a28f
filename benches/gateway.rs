//! Gateway overhead and watch fan-out, each as a ratio against a baseline measured in the
//! same run, with the raw figures. Run: `cargo bench --bench gateway` (about 2 minutes on
//! 2 cores), or `cargo bench --bench gateway -- --quick` (well under a minute).
//!
//! The server side (simulator, gateway, bare tonic servers) runs in a child process (this
//! binary again, see `support/child.rs`), the clients here; each phase gets a fresh child.
//!
//! 1. Unary: gateway `GetQuotas` (gRPC → gateway → simulator over HTTP) against a bare
//!    tonic call (Health/Check on the gateway's own server, and on bare tonic servers)
//!    and a direct REST call to the same simulator route, at concurrency 1 and 16.
//! 2. Memory per open stream in the server process: N gateway WatchJob watchers against
//!    N bare tonic Health/Watch streams.
//! 3. Watch fan-out: N watchers of one running Sutro job against one watcher of an
//!    identical job: upstream calls, messages delivered, CPU, FINAL delivery lag; at the
//!    simulator's fast pace (up to 100 changes a second), then at its demo pace (8).
//! 4. CreateJob memory, on its own: `cargo bench --bench gateway -- create-memory`. Peak
//!    and settled RSS of the real `batchgate` binary for one and eight 60 MB creates.

mod support;

use support::child::{self, ServerChild};
use support::report::{self, mib};
use support::{fanout, unary, watch};

/// Sizes of one run.
struct Plan {
    unary: unary::Sizes,
    watchers: usize,
    connections: usize,
    rows: usize,
    repeats: usize,
}

fn main() {
    // The gateway binary's runtime (no LIFO slot), in the server child and here alike.
    batchgate::runtime::build()
        .expect("a Tokio runtime")
        .block_on(run());
}

async fn run() {
    if std::env::args().any(|a| a == child::CHILD_FLAG) {
        child::serve().await;
        return;
    }
    batchgate::upstream::http::install_crypto_provider();
    if std::env::args().any(|a| a == "create-memory") {
        support::create_memory::run().await;
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let plan = if quick {
        Plan {
            unary: unary::Sizes {
                warm_up: 500,
                calls: 3_000,
                rounds: 3,
            },
            watchers: 1_000,
            connections: 16,
            rows: 300,
            repeats: 1,
        }
    } else {
        Plan {
            unary: unary::Sizes {
                warm_up: 2_000,
                calls: 50_000,
                rounds: 5,
            },
            watchers: 10_000,
            connections: 16,
            rows: 1_000,
            repeats: 3,
        }
    };
    println!(
        "# batchgate gateway benchmark{} — {} CPUs, load average at start: {}",
        if quick { " (--quick)" } else { "" },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    unary::run(&plan.unary).await;
    let stream_memory = health_memory(&plan).await;
    fan_out(
        &plan,
        child::FAST_PROGRESS_MS,
        plan.repeats,
        Some(stream_memory),
    )
    .await;
    fan_out(&plan, child::DEMO_PROGRESS_MS, 1, None).await;
    println!();
    println!("# load average at end: {}", load_average());
}

/// The 1, 5 and 15 minute load averages, to show whether the machine was busy.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// KiB per bare tonic Health/Watch stream in the server process: (RSS, heap).
async fn health_memory(plan: &Plan) -> (f64, f64) {
    let mut child = ServerChild::spawn(child::FAST_PROGRESS_MS, true).await;
    let channels = fanout::connect(child.gateway, plan.connections).await;
    let (before, open) = fanout::health_streams(&mut child, &channels, plan.watchers).await;
    drop(channels);
    child.quit().await;
    let (rss, heap) = open.growth_kib_per(before, plan.watchers);
    println!();
    println!(
        "## baseline: {} bare tonic Health/Watch streams (open, waiting) on the gateway's server, over {} connections",
        plan.watchers, plan.connections
    );
    println!(
        "  server process RSS {:.1} MiB → {:.1} MiB: {rss:.2} KiB per stream; live heap {heap:.2} KiB per stream",
        mib(before.rss),
        mib(open.rss)
    );
    (rss, heap)
}

/// `repeats` runs of N watchers, then one watcher, on a fresh child whose simulator
/// looks for progress every `progress_ms`; with `stream_memory`, the first run reads
/// the memory and compares it with the bare tonic stream's.
async fn fan_out(plan: &Plan, progress_ms: u64, repeats: usize, stream_memory: Option<(f64, f64)>) {
    let mut child = ServerChild::spawn(progress_ms, stream_memory.is_some()).await;
    let channels = fanout::connect(child.gateway, plan.connections).await;
    let mut runs = Vec::with_capacity(repeats);
    for repeat in 0..repeats {
        // Memory is read in the first run only: later runs reuse freed memory.
        let sample_memory = repeat == 0 && stream_memory.is_some();
        let run = watch::watch_run(
            &mut child,
            &channels,
            plan.watchers,
            plan.rows,
            sample_memory,
        )
        .await;
        runs.push(run);
    }
    let one = watch::watch_run(&mut child, &channels, 1, plan.rows, false).await;
    drop(channels);
    child.quit().await;

    report::print_heading(&runs[0], progress_ms, plan.connections);
    report::print_run(&runs[0]);
    if let Some(stream) = stream_memory {
        report::print_memory(&runs[0], stream);
    }
    if runs.len() > 1 {
        report::print_repeats(&runs);
    }
    println!();
    println!("## baseline: 1 WatchJob watcher of an identical job, same server and pace");
    report::print_run(&one);
    report::print_ratios(&runs, &one);
}
