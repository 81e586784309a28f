//! What caller rate limits cost: cache-hit `GetJobStatus` on a gateway with limits on
//! (a read limit no call reaches, in memory) against one with limits off, in one run.

use std::collections::BTreeMap;
use std::time::Duration;

use batchgate::proto::sutro::v1 as pb;
use batchgate::ratelimit::{Class, LimitSetting};
use batchgate::sim::SimConfig;

use super::Replicas;
use super::throughput::{Case, measure, median};

const CONNECTIONS: usize = 50;

pub async fn run(quick: bool) {
    // Many short rounds, each case first in every other one: on two shared cores the
    // machine's drift is the largest error, and it cancels out of the median ratio.
    let (rounds, window) = if quick {
        (2, Duration::from_secs(2))
    } else {
        (8, Duration::from_secs(3))
    };
    println!();
    println!(
        "## rate limits on vs off: cache-hit GetJobStatus, {CONNECTIONS} connections × 20 streams, \
         {rounds} rounds of {} s per case, alternating which goes first",
        window.as_secs()
    );
    println!("| limits off calls/s | limits on calls/s | on ÷ off (median of rounds) |");
    println!("|---|---|---|");
    let off = Replicas::start(SimConfig::fast(), 1, None).await;
    // Every call is checked and stamped with x-ratelimit-*, none is ever refused.
    let on = Replicas::start_with(SimConfig::fast(), 1, None, |layer| {
        layer.rate_limits = Some(BTreeMap::from([(
            Class::Read,
            LimitSetting {
                per_second: 1e6,
                burst: Some(1_000_000),
            },
        )]));
    })
    .await;
    let mut gateways = Vec::new();
    for replicas in [&off, &on] {
        let job_id = replicas.create_job(3).await;
        replicas.wait_for(&job_id, pb::JobStatus::Succeeded).await;
        let channels = replicas.connect(0, CONNECTIONS).await;
        measure(&channels, Case::Status, &job_id, Duration::from_millis(500)).await;
        gateways.push((channels, job_id));
    }
    let (mut offs, mut ons, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let run = |i: usize| measure(&gateways[i].0, Case::Status, &gateways[i].1, window);
        let (a, b) = if round % 2 == 0 {
            let a = run(0).await;
            (a, run(1).await)
        } else {
            let b = run(1).await;
            (run(0).await, b)
        };
        offs.push(a);
        ons.push(b);
        ratios.push(b / a);
    }
    println!(
        "| {:.0} | {:.0} | {:.2} (rounds: {}; goal ≥ 0.90) |",
        median(&offs),
        median(&ons),
        median(&ratios),
        ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    drop(gateways);
    off.stop().await;
    on.stop().await;
}
