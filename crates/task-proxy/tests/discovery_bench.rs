//! Discovery at scale against the dev cluster (ignored by default; a measurement, not a timed
//! test): 10,000 running operations, 1,000 of them annotated with 10 jobs each (10,000 jobs),
//! 1 ms added latency on every request. Prints the duration and request count of a cold pass
//! (nothing cached) and of steady passes.
//!
//! Run: `cargo test --release -p task-proxy --test discovery_bench -- --ignored --nocapture`
//! (or `python3 bench/run.py --only discovery`, which runs it and tabulates the passes).

use std::time::Duration;
use task_proxy::discovery::{Discovery, DiscoveryConfig};
use task_proxy::routing::RoutingTable;
use yt_client::{ClientConfig, YtClient};
use yt_devcluster::{CommandKnob, DevCluster, DevClusterConfig, SyntheticLoad};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement at scale; run explicitly"]
async fn pass_over_ten_thousand_operations() {
    let cluster = DevCluster::start(DevClusterConfig {
        node_count: 10,
        ..DevClusterConfig::default()
    })
    .await
    .unwrap();
    let annotated = cluster
        .add_synthetic_operations(SyntheticLoad {
            operations: 1_000,
            jobs_per_operation: 10,
            task_proxy: true,
            ports_per_job: 1,
            ..SyntheticLoad::default()
        })
        .unwrap();
    let plain = cluster
        .add_synthetic_operations(SyntheticLoad {
            operations: 9_000,
            jobs_per_operation: 0,
            task_proxy: false,
            ..SyntheticLoad::default()
        })
        .unwrap();
    assert_eq!(annotated.jobs, 10_000);
    assert_eq!(annotated.operations + plain.operations, 10_000);
    cluster.knobs().set(
        "*",
        CommandKnob {
            latency_ms: 1,
            ..CommandKnob::default()
        },
    );
    let client = YtClient::new(ClientConfig::new(cluster.url()).with_token("robot-token")).unwrap();
    let mut config = DiscoveryConfig::new("tp.test");
    config.pass_timeout = Duration::from_secs(60);
    let mut discovery = Discovery::new(client.clone(), config);
    let table = RoutingTable::new("tp.test");
    for label in ["cold", "steady", "steady"] {
        let report = discovery.run_pass(&table).await;
        assert!(report.succeeded(), "{report:?}");
        assert_eq!(report.operations_seen, 10_000);
        assert_eq!(report.services, 1_000);
        assert_eq!(report.endpoints, 10_000);
        // bench/run.py reads "<label> pass: <duration>, <n> requests" from this line.
        println!(
            "{label} pass: {:?}, {} requests {:?}, {} operations, {} exposing, {} jobs, {} services, {} endpoints",
            report.duration,
            report.requests,
            report.requests_by_command,
            report.operations_seen,
            report.operations_exposing,
            report.jobs,
            report.services,
            report.endpoints
        );
    }
    // The share of the listing alone (sequential pages).
    let started = std::time::Instant::now();
    let listed = client
        .list_running_operations_paged(task_proxy::discovery::operation::LIST_ATTRIBUTES, 1000)
        .await
        .unwrap();
    println!(
        "listing alone: {:?} for {} operations",
        started.elapsed(),
        listed.len()
    );
    cluster.shutdown().await;
}
