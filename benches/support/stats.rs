//! Latency and throughput of one kind of call: warm-up, then interleaved rounds so a
//! slow spell on the machine lands on every case alike.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One call of a case, as a boxed future.
pub type Call = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A call this slow is counted as a stall: on loopback nothing should take 30 ms,
/// except a write held back by Nagle's algorithm until a delayed ACK (Linux: 40 ms).
pub const STALL: Duration = Duration::from_millis(30);

/// A named kind of call.
pub struct Case {
    /// What is called, as printed.
    pub name: &'static str,
    /// Makes one call (panics with a message if the call fails).
    pub call: Call,
}

/// Latencies and wall time of one case, pooled over rounds.
#[derive(Default)]
pub struct Samples {
    latencies: Vec<Duration>,
    busy: Duration,
}

/// The summary of one case.
pub struct Stats {
    /// Calls measured.
    pub calls: usize,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Worst latency.
    pub max: Duration,
    /// Calls that took `STALL` or longer.
    pub stalls: usize,
    /// Calls per second while the case ran.
    pub per_sec: f64,
}

impl Samples {
    /// Summarises the pooled rounds.
    pub fn stats(mut self) -> Stats {
        self.latencies.sort();
        let at = |p: f64| self.latencies[((self.latencies.len() - 1) as f64 * p).round() as usize];
        Stats {
            calls: self.latencies.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: at(1.0),
            stalls: self.latencies.iter().filter(|&&l| l >= STALL).count(),
            per_sec: self.latencies.len() as f64 / self.busy.as_secs_f64(),
        }
    }
}

/// Runs `calls` calls of `case`, `concurrency` at a time (each worker makes
/// `calls / concurrency` in a row), adding latencies and wall time to `samples`.
pub async fn run(case: &Case, calls: usize, concurrency: usize, samples: &mut Samples) {
    let per_worker = calls / concurrency;
    let started = Instant::now();
    let workers = (0..concurrency).map(|_| {
        let call = case.call.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_worker);
            for _ in 0..per_worker {
                let t = Instant::now();
                call().await;
                latencies.push(t.elapsed());
            }
            latencies
        })
    });
    for worker in futures_util::future::join_all(workers).await {
        samples
            .latencies
            .extend(worker.expect("a benchmark worker panicked"));
    }
    samples.busy += started.elapsed();
}

/// Stats of every case, pooled over the rounds and per round.
pub struct Comparison {
    /// Per case (in the order given), all rounds pooled.
    pub pooled: Vec<Stats>,
    /// Per round, per case.
    pub rounds: Vec<Vec<Stats>>,
}

/// Warms every case up, then measures `calls` calls of each in `rounds` interleaved
/// rounds (case 1, case 2, …, case 1, case 2, …).
pub async fn compare(
    cases: &[Case],
    warm_up: usize,
    calls: usize,
    rounds: usize,
    concurrency: usize,
) -> Comparison {
    for case in cases {
        run(case, warm_up, concurrency, &mut Samples::default()).await;
    }
    let mut pooled: Vec<Samples> = cases.iter().map(|_| Samples::default()).collect();
    let mut per_round = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let mut this_round = Vec::with_capacity(cases.len());
        for (case, pooled) in cases.iter().zip(&mut pooled) {
            let mut samples = Samples::default();
            run(case, calls / rounds, concurrency, &mut samples).await;
            pooled.latencies.extend_from_slice(&samples.latencies);
            pooled.busy += samples.busy;
            this_round.push(samples.stats());
        }
        per_round.push(this_round);
    }
    Comparison {
        pooled: pooled.into_iter().map(Samples::stats).collect(),
        rounds: per_round,
    }
}

/// A duration in µs below 10 ms, in ms above.
pub fn fmt_duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 10_000.0 {
        format!("{us:.1} µs")
    } else {
        format!("{:.2} ms", us / 1e3)
    }
}

/// `a / b` for durations.
pub fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}
