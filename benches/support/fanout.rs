//! Many connections, and the baseline of many open streams: bare tonic Health/Watch
//! streams that only wait (the gateway's watchers are in `watch.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::child::{Memory, ServerChild};

/// How long the watchers are left open before the memory is read.
pub const SETTLE: Duration = Duration::from_millis(500);

/// `n` separate HTTP/2 connections to `addr`.
pub async fn connect(addr: SocketAddr, n: usize) -> Vec<Channel> {
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("a channel URI")
            .connect()
            .await
            .expect("connect to the server child");
        channels.push(channel);
    }
    channels
}

/// Memory of `n` Health/Watch streams that wait, spread over `channels`: the child's
/// memory before and with the streams open.
pub async fn health_streams(
    child: &mut ServerChild,
    channels: &[Channel],
    n: usize,
) -> (Memory, Memory) {
    let before = child.memory().await;
    let subscribed = Arc::new(Semaphore::new(0));
    let streams: Vec<JoinHandle<()>> = (0..n)
        .map(|i| {
            let mut health = HealthClient::new(channels[i % channels.len()].clone());
            let subscribed = subscribed.clone();
            tokio::spawn(async move {
                let mut stream = health
                    .watch(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .expect("Health/Watch call")
                    .into_inner();
                stream.message().await.expect("Health/Watch first message");
                subscribed.add_permits(1);
                // Hold the stream open until the task is aborted.
                let _ = stream.message().await;
                std::future::pending::<()>().await;
            })
        })
        .collect();
    let all = u32::try_from(n).expect("stream count fits u32");
    tokio::time::timeout(Duration::from_secs(120), subscribed.acquire_many(all))
        .await
        .expect("every Health/Watch stream open within 120 s")
        .expect("semaphore open")
        .forget();
    tokio::time::sleep(SETTLE).await;
    let open = child.memory().await;
    for stream in &streams {
        stream.abort();
    }
    for stream in streams {
        let _ = stream.await;
    }
    (before, open)
}
