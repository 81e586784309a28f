//! 100 000 result rows arrive in order, in several messages, none over 4 MiB.

mod common;

use batchgate::proto::sutro::v1 as pb;
use batchgate::sim::SimConfig;
use common::{create_job, spawn_app_with, watch_job_to_end};
use prost::Message;

#[tokio::test]
async fn a_hundred_thousand_rows_stream_in_chunks_under_4_mib() {
    let sim = SimConfig {
        rows_per_second: 10_000_000.0,
        ..SimConfig::fast()
    };
    let mut app = spawn_app_with(sim, |_| {}).await;
    const ROWS: usize = 100_000;
    let values = (0..ROWS)
        .map(|i| format!("Summarise item number {i} in one sentence."))
        .collect();
    let job_id = create_job(&mut app, values).await;
    let last = watch_job_to_end(&mut app, &job_id).await;
    assert_eq!(last.progress.unwrap().status(), pb::JobStatus::Succeeded);

    let mut stream = app
        .jobs
        .get_job_results(pb::GetJobResultsRequest {
            job_id,
            include_inputs: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (mut chunks, mut next_index) = (0, 0i64);
    while let Some(chunk) = stream.message().await.unwrap() {
        chunks += 1;
        assert!(
            chunk.encoded_len() < 4 * 1024 * 1024,
            "chunk of {} bytes",
            chunk.encoded_len()
        );
        assert_eq!(chunk.total_rows, ROWS as i64);
        for row in chunk.rows {
            assert_eq!(row.index, next_index);
            assert!(row.output.is_some() && row.input.is_some());
            next_index += 1;
        }
    }
    assert_eq!(next_index, ROWS as i64);
    assert!(chunks > 1, "{chunks} chunk(s)");
}

#[tokio::test]
async fn results_larger_than_the_gateway_reads_point_to_the_download_url() {
    let mut app = spawn_app_with(SimConfig::fast(), |s| {
        s.max_upstream_body_bytes = Some(64 * 1024);
    })
    .await;
    let values = (0..2_000).map(|i| format!("row {i}")).collect();
    let job_id = create_job(&mut app, values).await;
    watch_job_to_end(&mut app, &job_id).await;

    let mut jobs = app.jobs.clone();
    let results = async move {
        let request = pb::GetJobResultsRequest {
            job_id,
            ..Default::default()
        };
        jobs.get_job_results(request)
            .await?
            .into_inner()
            .message()
            .await
    };
    let err = results.await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("GetJobResultsUrl"),
        "{}",
        err.message()
    );
}
