//! What shared state buys, as ratios measured in one run: cache-hit `GetJobStatus`
//! throughput against `Health/Check` on the same server (memory and Redis backends),
//! upstream status reads under polling (one replica and three sharing Redis), and
//! watch fan-out over three replicas, what caller rate limits cost, and what tracing and
//! metrics export cost. Run: `cargo bench --bench shared_state` (`-- --quick` for a short
//! run, `-- watchers` for one phase). Needs `redis-server` (not for `-- telemetry`).
//!
//! Everything runs in this process on a multi-threaded runtime: the ratios compare
//! cases that pay the same client costs, measured in interleaved rounds. The exception
//! is `telemetry`, whose two gateways are `batchgate serve` processes (see its module).

#[path = "support/mem.rs"]
#[allow(dead_code)]
mod mem;
#[path = "../tests/common/redis.rs"]
#[allow(dead_code)]
mod redis_server;
mod shared;

use shared::{limiter, polling, telemetry, throughput, watchers};

fn main() {
    // The gateway binary's runtime (no LIFO slot), so the gateways here run as they do there.
    batchgate::runtime::build()
        .expect("a Tokio runtime")
        .block_on(run());
}

async fn run() {
    batchgate::upstream::http::install_crypto_provider();
    // `RUST_LOG=info` shows what the gateways log (lease takeovers, Redis fallbacks).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let quick = std::env::args().any(|a| a == "--quick");
    println!(
        "# batchgate shared-state benchmark{} — {} CPUs, load average at start: {}",
        if quick { " (--quick)" } else { "" },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        shared::load_average()
    );
    // `-- watchers` (or `throughput`, `polling`, `limiter`, `telemetry`) runs that phase alone.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| {
            ["throughput", "polling", "watchers", "limiter", "telemetry"].contains(&a.as_str())
        })
        .collect();
    let wanted = |phase: &str| only.is_empty() || only.iter().any(|o| o == phase);
    if wanted("throughput") {
        throughput::run(quick).await;
    }
    if wanted("polling") {
        polling::run(quick).await;
    }
    if wanted("watchers") {
        watchers::run(quick).await;
    }
    if wanted("limiter") {
        limiter::run(quick).await;
    }
    if wanted("telemetry") {
        telemetry::run(quick).await;
    }
    println!();
    println!("# load average at end: {}", shared::load_average());
}
