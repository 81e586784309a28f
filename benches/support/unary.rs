//! Unary overhead: gateway `GetQuotas` (gRPC → gateway → simulator over HTTP) against a
//! bare tonic call and a direct REST call to the same simulator route.

use std::net::SocketAddr;
use std::sync::Arc;

use batchgate::proto::sutro::v1::{self as pb, job_service_client::JobServiceClient};
use batchgate::sim;
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::child::{self, ServerChild};
use super::fanout;
use super::stats::{self, Case, STALL, Stats, fmt_duration, ratio};

/// Sizes of the unary phase.
pub struct Sizes {
    /// Unmeasured calls per case before measuring, at each concurrency.
    pub warm_up: usize,
    /// Measured calls per case, at each concurrency.
    pub calls: usize,
    /// Interleaved rounds the measured calls are split into.
    pub rounds: usize,
}

// Indices into the cases below.
const SAME_SERVER: usize = 2;
const REST: usize = 3;
const GATEWAY: usize = 4;

async fn connect(addr: SocketAddr) -> Channel {
    fanout::connect(addr, 1).await.pop().expect("one channel")
}

fn health_case(name: &'static str, channel: Channel) -> Case {
    let client = HealthClient::new(channel);
    Case {
        name,
        call: Arc::new(move || {
            let mut client = client.clone();
            Box::pin(async move {
                client
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .expect("Health/Check");
            })
        }),
    }
}

/// Runs the unary phase on a fresh server child and prints it.
pub async fn run(sizes: &Sizes) {
    let child = ServerChild::spawn(child::FAST_PROGRESS_MS, false).await;
    let gateway = connect(child.gateway).await;
    let http = reqwest::Client::new();
    let quotas_url = format!("http://{}/v1/get-quotas", child.sim);
    let jobs = JobServiceClient::new(gateway.clone());
    let cases = [
        health_case(
            "tonic Health/Check, bare server, TCP_NODELAY on",
            connect(child.bare).await,
        ),
        health_case(
            "tonic Health/Check, bare server, TCP_NODELAY off",
            connect(child.bare_nagle).await,
        ),
        health_case("tonic Health/Check on the gateway's server", gateway),
        Case {
            name: "REST GET /v1/get-quotas, direct (reqwest)",
            call: Arc::new(move || {
                let (http, url) = (http.clone(), quotas_url.clone());
                Box::pin(async move {
                    http.get(url)
                        .header("authorization", format!("Key {}", sim::DEMO_API_KEY))
                        .send()
                        .await
                        .expect("direct REST get-quotas")
                        .error_for_status()
                        .expect("direct REST get-quotas status")
                        .bytes()
                        .await
                        .expect("direct REST get-quotas body");
                })
            }),
        },
        Case {
            name: "gateway JobService/GetQuotas (gRPC → REST)",
            call: Arc::new(move || {
                let mut jobs = jobs.clone();
                Box::pin(async move {
                    jobs.get_quotas(pb::GetQuotasRequest {})
                        .await
                        .expect("GetQuotas");
                })
            }),
        },
    ];
    for concurrency in [1, 16] {
        let result = stats::compare(
            &cases,
            sizes.warm_up,
            sizes.calls,
            sizes.rounds,
            concurrency,
        )
        .await;
        print(&cases, &result, sizes, concurrency);
    }
    child.quit().await;
}

/// gateway / (tonic on the gateway's server + direct REST), for one statistic.
fn overhead(stats: &[Stats], of: impl Fn(&Stats) -> std::time::Duration) -> f64 {
    ratio(
        of(&stats[GATEWAY]),
        of(&stats[SAME_SERVER]) + of(&stats[REST]),
    )
}

fn print(cases: &[Case], result: &stats::Comparison, sizes: &Sizes, concurrency: usize) {
    let pooled = &result.pooled;
    println!();
    println!(
        "## unary calls, concurrency {concurrency} (one connection per server; {} warm-up calls per case, then {} measured calls per case in {} interleaved rounds)",
        sizes.warm_up, pooled[0].calls, sizes.rounds
    );
    println!(
        "  {:<52} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "case",
        "p50",
        "p99",
        "max",
        "calls/s",
        format!("≥{} ms", STALL.as_millis())
    );
    for (case, s) in cases.iter().zip(pooled) {
        println!(
            "  {:<52} {:>10} {:>10} {:>10} {:>9.0} {:>9}",
            case.name,
            fmt_duration(s.p50),
            fmt_duration(s.p99),
            fmt_duration(s.max),
            s.per_sec,
            s.stalls
        );
    }
    let (g, t, r) = (&pooled[GATEWAY], &pooled[SAME_SERVER], &pooled[REST]);
    let per_round: Vec<String> = result
        .rounds
        .iter()
        .map(|round| format!("{:.2}", overhead(round, |s| s.p50)))
        .collect();
    println!(
        "  ratio p50  gateway / (tonic on its server + direct REST) = {:.2}  ({} vs {}; per round {})",
        overhead(pooled, |s| s.p50),
        fmt_duration(g.p50),
        fmt_duration(t.p50 + r.p50),
        per_round.join(", ")
    );
    println!(
        "  ratio p99  gateway / (tonic on its server + direct REST) = {:.2}",
        overhead(pooled, |s| s.p99)
    );
    println!(
        "  ratio throughput  gateway / tonic on its server = {:.2};  gateway / direct REST = {:.2}",
        g.per_sec / t.per_sec,
        g.per_sec / r.per_sec
    );
}
