//! Printing the watch runs: one block per run, a table of repeats, and the ratios of
//! N watchers against one.

use std::time::Duration;

use super::child::ROWS_PER_SECOND;
use super::stats::{fmt_duration, ratio};
use super::watch::{ROUTES, WatchRun};

/// Bytes as MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0 / 1024.0
}

/// The heading of a fan-out at one pace.
pub fn print_heading(run: &WatchRun, progress_ms: u64, connections: usize) {
    println!();
    println!(
        "## watch fan-out, progress looked for every {progress_ms} ms: {} WatchJob watchers of one Sutro job ({} rows at {} rows/s), over {connections} connections",
        run.n, run.rows, ROWS_PER_SECOND
    );
}

/// Memory per watcher of `run` (sampled in its first run), against the bare tonic
/// stream's `(RSS, heap)` KiB.
pub fn print_memory(run: &WatchRun, stream: (f64, f64)) {
    let Some((before, open)) = run.memory else {
        return;
    };
    let (rss, heap) = open.growth_kib_per(before, run.n);
    println!(
        "  server process RSS {:.1} MiB → {:.1} MiB with the watchers open: {rss:.2} KiB per watcher; live heap {heap:.2} KiB per watcher",
        mib(before.rss),
        mib(open.rss)
    );
    if run.finals_at_memory > 0 {
        println!(
            "  WARNING: {} watchers already had FINAL when the memory was read; the job ended too soon",
            run.finals_at_memory
        );
    }
    println!(
        "  ratio memory  gateway watcher / bare tonic stream = {:.2} (RSS), {:.2} (heap)",
        rss / stream.0,
        heap / stream.1
    );
}

/// N watchers (`runs`, the first in full) against `one`.
pub fn print_ratios(runs: &[WatchRun], one: &WatchRun) {
    let many = &runs[0];
    println!();
    println!(
        "## ratios, {} watchers (run 1{}) against 1 watcher, same server and pace",
        many.n,
        if runs.len() > 1 {
            format!("; in brackets the range over runs 1–{}", runs.len())
        } else {
            String::new()
        }
    );
    for (i, (what, route)) in ROUTES.iter().enumerate() {
        println!(
            "  upstream {what:<17} {:>6} vs {:>6}  ({route})",
            many.calls[i], one.calls[i]
        );
    }
    println!(
        "  upstream progress streams per watcher = {:.6} (1/{})",
        many.calls[0] as f64 / many.n as f64,
        many.n
    );
    let messages_ratio = |run: &WatchRun| mean_messages(run) / mean_messages(one);
    println!(
        "  messages per watcher  mean {:.1} vs {:.1}: ratio {:.3}{}",
        mean_messages(many),
        mean_messages(one),
        messages_ratio(many),
        range(runs, messages_ratio, |r| format!("{r:.3}"))
    );
    let cpu_ratio = |run: &WatchRun| cpu_per_message(run) / cpu_per_message(one);
    println!(
        "  server CPU per delivered message  {:.1} µs vs {:.1} µs: ratio {:.3}{}",
        cpu_per_message(many),
        cpu_per_message(one),
        cpu_ratio(many),
        range(runs, cpu_ratio, |r| format!("{r:.3}"))
    );
    let lag_ratio = |run: &WatchRun| ratio(run.lag.2, one.lag.2);
    println!(
        "  FINAL lag after upstream completion, last watcher  {} vs {}: ratio {:.1}{}",
        fmt_duration(many.lag.2),
        fmt_duration(one.lag.2),
        lag_ratio(many),
        range(runs, lag_ratio, |r| format!("{r:.1}"))
    );
}

/// ` [min – max]` of `of` over `runs`, or nothing for a single run.
fn range(runs: &[WatchRun], of: impl Fn(&WatchRun) -> f64, show: impl Fn(f64) -> String) -> String {
    if runs.len() < 2 {
        return String::new();
    }
    let values = runs.iter().map(of);
    let (min, max) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    format!(" [{} – {}]", show(min), show(max))
}

/// One line per run of the same fan-out.
pub fn print_repeats(runs: &[WatchRun]) {
    println!();
    println!(
        "## the same fan-out repeated: {} runs of {} watchers, each on a new job, same server",
        runs.len(),
        runs[0].n
    );
    println!(
        "  {:>3} {:>10} {:>17} {:>11} {:>10} {:>8} {:>28} {:>19} {:>22} {:>10} {:>10}",
        "run",
        "subscribed",
        "stream/job/status",
        "well-formed",
        "msgs/watch",
        "msgs/s",
        "FINAL lag first/median/last",
        "FINAL stamped last",
        "transit mean/worst",
        "server CPU",
        "client CPU"
    );
    let ms = |d: Duration| format!("{:.0}", d.as_secs_f64() * 1e3);
    for (i, run) in runs.iter().enumerate() {
        let [streams, jobs, status] = run.calls;
        println!(
            "  {:>3} {:>10} {:>17} {:>11} {:>10.1} {:>8.0} {:>28} {:>19} {:>22} {:>8.2} s {:>8.2} s",
            i + 1,
            fmt_duration(run.subscribe_time),
            format!("{streams}/{jobs}/{status}"),
            run.well_formed,
            mean_messages(run),
            messages(run) as f64 / run.all_final_time.as_secs_f64(),
            format!("{}/{}/{} ms", ms(run.lag.0), ms(run.lag.1), ms(run.lag.2)),
            format!("{} ms", ms(run.built.2)),
            format!("{}/{} ms", ms(run.transit.0), ms(run.transit.1)),
            run.cpu.0,
            run.cpu.1
        );
        for error in &run.errors {
            println!("      ERROR: {error}");
        }
    }
}

fn messages(run: &WatchRun) -> u64 {
    run.kinds.iter().sum()
}

fn mean_messages(run: &WatchRun) -> f64 {
    messages(run) as f64 / run.n as f64
}

/// Server CPU µs per message delivered during the run.
fn cpu_per_message(run: &WatchRun) -> f64 {
    run.cpu.0 * 1e6 / messages(run) as f64
}

/// One run in full.
pub fn print_run(run: &WatchRun) {
    println!(
        "  all {} watchers holding their SNAPSHOT {} after the first call",
        run.n,
        fmt_duration(run.subscribe_time)
    );
    let calls = ROUTES
        .iter()
        .zip(run.calls)
        .map(|((what, _), n)| format!("{what} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "  upstream calls seen by the simulator: {calls}; all routes {}",
        run.total_calls
    );
    let [snapshot, progress, heartbeat, fin] = run.kinds;
    println!(
        "  messages delivered: {} (snapshot {snapshot}, progress {progress}, heartbeat {heartbeat}, final {fin}); per watcher {} to {}; {:.0} messages/s",
        messages(run),
        run.per_watcher.0,
        run.per_watcher.1,
        messages(run) as f64 / run.all_final_time.as_secs_f64()
    );
    println!(
        "  streams SNAPSHOT … FINAL(SUCCEEDED, {} of {} rows) then OK: {} of {}",
        run.rows, run.rows, run.well_formed, run.n
    );
    for error in &run.errors {
        println!("  ERROR: {error}");
    }
    println!(
        "  upstream job created → completed {}; first WatchJob call → last watcher's FINAL {}",
        fmt_duration(run.upstream_duration),
        fmt_duration(run.all_final_time)
    );
    println!(
        "  FINAL delivered after upstream completion: first watcher {}, median {}, last {} (spread {})",
        fmt_duration(run.lag.0),
        fmt_duration(run.lag.1),
        fmt_duration(run.lag.2),
        fmt_duration(run.lag.2 - run.lag.0)
    );
    println!(
        "    the gateway stamped the FINAL (its observed_at) after upstream completion: first {}, median {}, last {}",
        fmt_duration(run.built.0),
        fmt_duration(run.built.1),
        fmt_duration(run.built.2)
    );
    println!(
        "    time in transit (stamped by the gateway → received by the client), every message: mean {}, worst {}",
        fmt_duration(run.transit.0),
        fmt_duration(run.transit.1)
    );
    println!(
        "  upstream pollers still running in the gateway after every stream ended: {}",
        run.pollers_after
    );
    let wall = run.all_final_time.as_secs_f64();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!(
        "  CPU during the run: server process {:.2} s ({:.1} µs per message), client process {:.2} s, over {wall:.2} s wall: {:.0}% of {cpus} CPUs busy",
        run.cpu.0,
        cpu_per_message(run),
        run.cpu.1,
        (run.cpu.0 + run.cpu.1) / (wall * cpus) * 100.0
    );
}
