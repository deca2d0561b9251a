//! `serve --yt-proxy ...` end to end with the default discovery period: the proxy (in process)
//! discovers the quick-start operation on the dev cluster (submitted with the real `yt` CLI)
//! and forwards a request to its job by the service's domain; discovery's metrics are on the
//! admin listener.

use std::time::{Duration, Instant};
use task_proxy::routing::service_hash;
use test_support::{body_of, curl_async, wait_for, yt_async, Proxy};
use yt_devcluster::{DevCluster, DevClusterConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_discovers_and_forwards_to_the_quick_start_operation() {
    let cluster = DevCluster::start(DevClusterConfig::default())
        .await
        .expect("dev cluster");
    let dir = tempfile::tempdir().expect("tempdir");
    let token_path = dir.path().join("token");
    std::fs::write(&token_path, "robot-token\n").expect("token file");
    let proxy = Proxy::builder()
        .flags(&[
            "--yt-proxy",
            &cluster.url(),
            "--yt-token-path",
            token_path.to_str().expect("utf-8 path"),
            "--auth-enabled=false",
            "--worker-threads",
            "1",
        ])
        .no_wait()
        .start();

    let op = yt_async(
        &cluster.url(),
        "alice-token",
        &[
            "vanilla",
            "--tasks",
            r#"{example_http_server={job_count=2; command="python3 -m http.server ${YT_PORT_0}"; port_count=1}}"#,
            "--spec",
            "{annotations={task_proxy={enabled=%true;}}}",
            "--async",
        ],
    )
    .await;
    let submitted = Instant::now();
    let domain = format!(
        "{}.tp.test",
        service_hash(&op, "example_http_server", "port_0")
    );
    let host = format!("Host: {domain}");
    let body = wait_for(
        "the job to be forwarded to",
        Duration::from_secs(15),
        || async {
            let (code, text) = curl_async(&["-H", &host, &proxy.url("/")]).await;
            (code == 200).then(|| body_of(&text).to_string())
        },
    )
    .await;
    assert!(body.contains("Directory listing"), "{body}");
    // With the default period (2 s); the job's own start-up is included.
    eprintln!(
        "forwarded {:?} after the operation was submitted",
        submitted.elapsed()
    );
    let (code, metrics) = proxy.admin_get("/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("task_proxy_discovery_services 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("task_proxy_discovery_passes_total"),
        "{metrics}"
    );
    let (code, ready) = proxy.admin_get("/readyz");
    assert_eq!((code, ready.trim()), (200, "ready"));
    drop(proxy);
    cluster.shutdown().await;
}
