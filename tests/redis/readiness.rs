//! The admin port against a real Redis: `/readyz` and `batchgate_redis_up` turn when
//! Redis goes away and turn back when it comes back on the same port; leases are counted.

use std::time::Duration;

use batchgate::sim::SimConfig;

use crate::common::metrics::{get, scrape};
use crate::common::redis::RedisServer;
use crate::common::{create_job, spawn_app_with, watch_job_to_end};

/// Polls `/readyz` until it answers `status` (Redis is probed twice a second while down).
async fn wait_for_readyz(admin: std::net::SocketAddr, status: u16) -> String {
    let mut last = (0, String::new());
    for _ in 0..100 {
        last = get(admin, "/readyz").await;
        if last.0 == status {
            return last.1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/readyz never answered {status}; last: {last:?}");
}

#[tokio::test]
async fn readyz_turns_when_redis_goes_and_comes_back() {
    let mut server = RedisServer::start();
    let url = server.url();
    let mut app = spawn_app_with(SimConfig::fast(), |settings| {
        settings.redis_url = Some(url);
    })
    .await;
    let admin = app.app.as_ref().expect("running").admin_addr();
    assert_eq!(get(admin, "/healthz").await.0, 200);
    wait_for_readyz(admin, 200).await;
    let up = |page: &crate::common::metrics::Scrape| page.sum("batchgate_redis_up", &[]);
    assert_eq!(up(&scrape(admin).await), 1.0);

    // A watch through Redis: this replica takes the resource's lease.
    let job = create_job(&mut app, vec!["hello".into()]).await;
    watch_job_to_end(&mut app, &job).await;
    let page = scrape(admin).await;
    assert_eq!(
        page.sum("batchgate_watch_leases_taken_total", &[]),
        1.0,
        "{}",
        page.text
    );

    server.stop();
    let why = wait_for_readyz(admin, 503).await;
    assert!(why.contains("redis"), "{why}");
    assert_eq!(
        get(admin, "/healthz").await.0,
        200,
        "the process is still up"
    );
    assert_eq!(up(&scrape(admin).await), 0.0);

    server.restart();
    wait_for_readyz(admin, 200).await;
    assert_eq!(up(&scrape(admin).await), 1.0);
}
