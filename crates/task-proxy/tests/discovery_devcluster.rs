//! Discovery against the dev cluster, driven by the real `yt` CLI as a user would: the quick
//! start from the user guide, job restarts, aborts, named ports, SPYT shapes, malformed
//! annotations, and a failing or hanging cluster.

use std::sync::Arc;
use std::time::{Duration, Instant};
use task_proxy::discovery::{Discovery, DiscoveryConfig, PassReport};
use task_proxy::routing::{service_hash, Protocol, Route, RoutingSnapshot, RoutingTable};
use yt_client::{ClientConfig, YtClient};
use yt_devcluster::{CommandKnob, DevCluster, DevClusterConfig};

const BASE: &str = "tp.test";

async fn cluster() -> DevCluster {
    DevCluster::start(DevClusterConfig::default())
        .await
        .unwrap()
}

fn client(cluster: &DevCluster) -> YtClient {
    let mut config = ClientConfig::new(cluster.url()).with_token("robot-token");
    config.timeout = Duration::from_secs(5);
    config.max_retries = 1;
    config.initial_backoff = Duration::from_millis(10);
    YtClient::new(config).unwrap()
}

fn discovery(cluster: &DevCluster) -> Discovery {
    let mut config = DiscoveryConfig::new(BASE);
    config.period = Duration::from_millis(500);
    config.pass_timeout = Duration::from_secs(3);
    Discovery::new(client(cluster), config)
}

/// Runs the real `yt` CLI as alice (or `token`'s user) against the cluster; returns stdout.
async fn yt_as(cluster: &DevCluster, token: &str, args: &[&str]) -> String {
    test_support::yt_async(&cluster.url(), token, args).await
}

async fn yt(cluster: &DevCluster, args: &[&str]) -> String {
    yt_as(cluster, "alice-token", args).await
}

/// `yt vanilla ... --async`; returns the operation id.
async fn vanilla(cluster: &DevCluster, tasks: &str, spec: &str) -> String {
    let id = yt(
        cluster,
        &["vanilla", "--tasks", tasks, "--spec", spec, "--async"],
    )
    .await;
    assert!(id.split('-').count() == 4, "an operation id: {id:?}");
    id
}

/// Runs passes until `check` holds for the published snapshot, or panics after `timeout`.
/// Creates the discovery nodes a SPYT cluster at `path` registers: `(kind, host:port)` pairs,
/// e.g. `("webui", "127.0.0.6:8080")`.
async fn spyt_discovery_nodes(cluster: &DevCluster, path: &str, nodes: &[(&str, &str)]) {
    for (dir, node) in nodes {
        yt(
            cluster,
            &[
                "create",
                "map_node",
                &format!("{path}/discovery/{dir}/{node}"),
                "--recursive",
            ],
        )
        .await;
    }
}

async fn pass_until(
    discovery: &mut Discovery,
    table: &RoutingTable,
    timeout: Duration,
    what: &str,
    check: impl Fn(&RoutingSnapshot) -> bool,
) -> PassReport {
    let deadline = Instant::now() + timeout;
    loop {
        let report = discovery.run_pass(table).await;
        if report.succeeded() && check(&table.load()) {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached within {timeout:?}; last report {report:?}; routes {:?}",
            table.load().routes()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts an operation exposing service `s` (port 0) on two jobs, and runs passes until the
/// table routes it to both; the operation's id.
async fn two_job_service(
    cluster: &DevCluster,
    discovery: &mut Discovery,
    table: &RoutingTable,
) -> String {
    let op = vanilla(
        cluster,
        r#"{s={job_count=2; command="sleep 1000"; port_count=1}}"#,
        "{annotations={task_proxy={enabled=%true}}}",
    )
    .await;
    pass_until(
        discovery,
        table,
        Duration::from_secs(10),
        "the service",
        |s| route(s, &op, "s", "port_0").is_some_and(|r| r.endpoints.len() == 2),
    )
    .await;
    op
}

fn route<'a>(
    snapshot: &'a RoutingSnapshot,
    op: &str,
    task: &str,
    service: &str,
) -> Option<&'a Arc<Route>> {
    snapshot.get(&service_hash(op, task, service))
}

async fn http_get_status(host: &str, port: u16) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect((host, port)).await.ok()?;
    stream
        .write_all(format!("GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    head.split_whitespace().nth(1)?.parse().ok()
}

/// The rows of the services table, as the real CLI reads them.
async fn services_table_by_cli(cluster: &DevCluster) -> Vec<serde_json::Value> {
    yt(
        cluster,
        &[
            "read-table",
            "//sys/task_proxies/services",
            "--format",
            "json",
        ],
    )
    .await
    .lines()
    .filter(|l| !l.trim().is_empty())
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_service_is_found_follows_a_restarted_job_and_leaves_on_abort() {
    let cluster = cluster().await;
    let table = Arc::new(RoutingTable::new(BASE));
    let discovery = discovery(&cluster);
    let status = discovery.status();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = tokio::spawn(discovery.run(table.clone(), async {
        let _ = stopped.await;
    }));

    let started = Instant::now();
    let op = vanilla(
        &cluster,
        r#"{example_http_server={job_count=2; command="python3 -m http.server ${YT_PORT_0}"; port_count=1}}"#,
        "{annotations={task_proxy={enabled=%true;}}}",
    )
    .await;
    let hash = service_hash(&op, "example_http_server", "port_0");
    let deadline = Instant::now() + Duration::from_secs(10);
    let found = loop {
        if let Some(r) = table.load().get(&hash).filter(|r| r.endpoints.len() == 2) {
            break r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "service not routable; last pass {:?}",
            status.last_pass()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "routable after {elapsed:?}"
    );
    assert_eq!(found.domain, format!("{hash}.{BASE}"));
    assert_eq!(found.protocol, Protocol::Http);
    assert_eq!(found.key.task_name, "example_http_server");
    // The endpoints are the jobs' real servers.
    for endpoint in &found.endpoints {
        let deadline = Instant::now() + Duration::from_secs(10);
        while http_get_status(&endpoint.host, endpoint.port).await != Some(200) {
            assert!(Instant::now() < deadline, "{endpoint} does not answer");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // The services table lists it (read with the real CLI: `yt read-table ... --format json`).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let rows = services_table_by_cli(&cluster).await;
        if rows.iter().any(|r| r["domain"] == found.domain.as_str()) {
            let row = rows
                .iter()
                .find(|r| r["domain"] == found.domain.as_str())
                .unwrap();
            assert_eq!(row["operation_id"], op.as_str());
            assert_eq!(row["task_name"], "example_http_server");
            assert_eq!(row["service"], "port_0");
            assert_eq!(row["protocol"], "http");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no row for {} in {rows:?}",
            found.domain
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Kill one job's server: the cluster starts a replacement with a new port, and discovery
    // follows it.
    let victim = found.endpoints[0].clone();
    let survivor = found.endpoints[1].clone();
    let pid = test_support::listener_pid(victim.port).expect("the job's server pid");
    assert!(
        test_support::signal_process(pid as u32, "KILL"),
        "kill the job"
    );
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(15);
    let moved = loop {
        let snapshot = table.load();
        if let Some(r) = snapshot.get(&hash) {
            if r.endpoints.len() == 2
                && !r.endpoints.contains(&victim)
                && r.endpoints.contains(&survivor)
            {
                break r.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the replacement job was not followed: {:?}",
            snapshot.get(&hash)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let followed_after = killed.elapsed();
    let replacement = moved
        .endpoints
        .iter()
        .find(|e| **e != survivor)
        .unwrap()
        .clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get_status(&replacement.host, replacement.port).await != Some(200) {
        assert!(
            Instant::now() < deadline,
            "the replacement {replacement} does not answer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "routable {elapsed:?} after submit; replacement followed {followed_after:?} after the kill"
    );

    // Abort: the service leaves the routing table and the services table.
    yt(&cluster, &["abort-op", &op]).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while table.load().get(&hash).is_some() {
        assert!(
            Instant::now() < deadline,
            "the aborted operation's service is still routed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while services_table_by_cli(&cluster)
        .await
        .iter()
        .any(|r| r["domain"] == found.domain.as_str())
    {
        assert!(
            Instant::now() < deadline,
            "the aborted operation's row is still in the table"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let report = status.last_pass().unwrap();
    assert!(report.succeeded(), "{report:?}");
    let _ = stop.send(());
    runner.await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_ports_with_partial_tasks_info() {
    let cluster = cluster().await;
    let table = RoutingTable::new(BASE);
    let mut discovery = discovery(&cluster);
    let op = vanilla(
        &cluster,
        r#"{a={job_count=1; command="sleep 1000"; port_count=2}; b={job_count=2; command="sleep 1000"; port_count=2}}"#,
        r#"{annotations={task_proxy={enabled=%true; tasks_info={a={api={protocol="grpc"; port_index=1}}}}}}"#,
    )
    .await;
    pass_until(
        &mut discovery,
        &table,
        Duration::from_secs(10),
        "four services with jobs",
        |s| {
            ["a", "b"].iter().all(|t| {
                s.routes()
                    .iter()
                    .filter(|r| r.key.operation_id == op && r.key.task_name == *t)
                    .all(|r| !r.endpoints.is_empty())
            }) && s.len() == 4
        },
    )
    .await;
    let snapshot = table.load();
    let api = route(&snapshot, &op, "a", "api").expect("a/api");
    assert_eq!(api.protocol, Protocol::Grpc);
    assert_eq!(api.endpoints.len(), 1);
    let a0 = route(&snapshot, &op, "a", "port_0").expect("a/port_0 keeps its default name");
    assert_eq!(a0.protocol, Protocol::Http);
    assert_ne!(
        a0.endpoints[0].port, api.endpoints[0].port,
        "different ports of one job"
    );
    assert_eq!(a0.endpoints[0].host, api.endpoints[0].host);
    assert!(
        route(&snapshot, &op, "a", "port_1").is_none(),
        "port 1 is named api"
    );
    for port in ["port_0", "port_1"] {
        let r = route(&snapshot, &op, "b", port).expect("b's default services");
        assert_eq!(r.endpoints.len(), 2, "b has two jobs");
        assert_eq!(r.protocol, Protocol::Http);
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spyt_driver_and_standalone_cluster() {
    let cluster = cluster().await;
    let table = RoutingTable::new(BASE);
    let mut discovery = discovery(&cluster);
    let driver = vanilla(
        &cluster,
        r#"{driver={job_count=1; command="sleep 1000"}}"#,
        r#"{title="Spark driver for app-20270101"; annotations={description={"Web UI"="http://127.0.0.5:4040"}}}"#,
    )
    .await;
    let spark = vanilla(
        &cluster,
        r#"{master={job_count=1; command="sleep 1000"}}"#,
        r#"{annotations={is_spark=%true; description={"Spark over YT"={discovery_path="//home/spark/c1"}}}}"#,
    )
    .await;
    spyt_discovery_nodes(
        &cluster,
        "//home/spark/c1",
        &[
            ("webui", "127.0.0.6:8080"),
            ("webui", "127.0.0.7:8080"),
            ("rest", "127.0.0.6:6066"),
        ],
    )
    .await;
    pass_until(
        &mut discovery,
        &table,
        Duration::from_secs(10),
        "SPYT services",
        |s| {
            route(s, &driver, "driver", "ui").is_some()
                && route(s, &spark, "master", "rest").is_some()
        },
    )
    .await;
    let snapshot = table.load();
    let ui = route(&snapshot, &driver, "driver", "ui").unwrap();
    assert_eq!(ui.endpoints, vec!["127.0.0.5:4040".parse().unwrap()]);
    let master = route(&snapshot, &spark, "master", "ui").unwrap();
    assert_eq!(master.endpoints.len(), 2);
    let rest = route(&snapshot, &spark, "master", "rest").unwrap();
    assert_eq!(rest.endpoints, vec!["127.0.0.6:6066".parse().unwrap()]);
    assert!(
        route(&snapshot, &spark, "history", "ui").is_none(),
        "no history server yet"
    );

    // The history server appears later; the master moves.
    yt(
        &cluster,
        &[
            "create",
            "map_node",
            "//home/spark/c1/discovery/shs/127.0.0.8:18080",
            "--recursive",
        ],
    )
    .await;
    yt(
        &cluster,
        &["remove", "//home/spark/c1/discovery/webui/127.0.0.7:8080"],
    )
    .await;
    pass_until(
        &mut discovery,
        &table,
        Duration::from_secs(10),
        "history server",
        |s| {
            route(s, &spark, "history", "ui").is_some()
                && route(s, &spark, "master", "ui").is_some_and(|r| r.endpoints.len() == 1)
        },
    )
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_annotations_are_skipped_and_the_rest_kept() {
    let cluster = cluster().await;
    let table = RoutingTable::new(BASE);
    let mut discovery = discovery(&cluster);
    let task = r#"{t={job_count=1; command="sleep 1000"; port_count=2}}"#;
    let good = vanilla(&cluster, task, "{annotations={task_proxy={enabled=%true}}}").await;
    let string_enabled = vanilla(
        &cluster,
        task,
        r#"{annotations={task_proxy={enabled="true"}}}"#,
    )
    .await;
    let not_a_map = vanilla(&cluster, task, "{annotations={task_proxy=%true}}").await;
    let disabled = vanilla(
        &cluster,
        task,
        "{annotations={task_proxy={enabled=%false}}}",
    )
    .await;
    let bad_entries = vanilla(
        &cluster,
        task,
        r#"{annotations={task_proxy={enabled=%true; tasks_info={t={
            ftp={protocol="ftp"; port_index=0};
            float={protocol="http"; port_index=1.};
            missing={protocol="grpc"};
            ok={protocol="grpc"; port_index=1}
        }; ghost=[1]}}}}"#,
    )
    .await;
    let bad_driver = vanilla(
        &cluster,
        task,
        r#"{title="Spark driver for x"; annotations={description={"Web UI"="not a url"}}}"#,
    )
    .await;
    let bad_spark = vanilla(&cluster, task, r#"{annotations={is_spark=%true}}"#).await;
    let report = pass_until(
        &mut discovery,
        &table,
        Duration::from_secs(10),
        "good services",
        |s| {
            route(s, &good, "t", "port_1").is_some_and(|r| !r.endpoints.is_empty())
                && route(s, &bad_entries, "t", "ok").is_some_and(|r| !r.endpoints.is_empty())
        },
    )
    .await;
    let snapshot = table.load();
    assert!(route(&snapshot, &good, "t", "port_0").is_some());
    assert_eq!(
        route(&snapshot, &bad_entries, "t", "ok").unwrap().protocol,
        Protocol::Grpc
    );
    assert!(
        route(&snapshot, &bad_entries, "t", "port_0").is_some(),
        "the bad name for port 0 was skipped"
    );
    for skipped in [
        &string_enabled,
        &not_a_map,
        &disabled,
        &bad_driver,
        &bad_spark,
    ] {
        assert!(
            snapshot
                .routes()
                .iter()
                .all(|r| &r.key.operation_id != skipped),
            "{skipped} must expose nothing"
        );
    }
    assert_eq!(snapshot.len(), 4);
    assert_eq!(report.malformed_operations, 4, "{report:?}");
    assert_eq!(report.operations_exposing, 2);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_hanging_cluster_keeps_the_last_table_until_it_recovers() {
    let cluster = cluster().await;
    let table = RoutingTable::new(BASE);
    let mut discovery = discovery(&cluster);
    let op = two_job_service(&cluster, &mut discovery, &table).await;
    let generation = table.load().generation();
    let before = table.load().routes().to_vec();

    // Errors on every listing.
    cluster.knobs().set(
        "list_operations",
        CommandKnob {
            error_rate: 1.0,
            ..CommandKnob::default()
        },
    );
    let report = discovery.run_pass(&table).await;
    assert!(!report.succeeded());
    assert!(
        report.error.as_deref().unwrap().contains("503"),
        "{report:?}"
    );
    assert_eq!(table.load().generation(), generation, "nothing published");

    // Jobs and orchid unreadable: the last services stay.
    cluster.knobs().clear();
    cluster.knobs().set(
        "execute_batch",
        CommandKnob {
            error_rate: 1.0,
            ..CommandKnob::default()
        },
    );
    cluster.knobs().set(
        "list_jobs",
        CommandKnob {
            error_rate: 1.0,
            ..CommandKnob::default()
        },
    );
    let report = discovery.run_pass(&table).await;
    assert!(report.succeeded(), "{report:?}");
    assert!(report.errors > 0);
    assert_eq!(
        table.load().routes(),
        before.as_slice(),
        "the last services are kept"
    );

    // A hang: the pass gives up at its timeout.
    cluster.knobs().clear();
    cluster.knobs().set(
        "list_operations",
        CommandKnob {
            hang: true,
            hang_ms: Some(20_000),
            ..CommandKnob::default()
        },
    );
    let started = Instant::now();
    let report = discovery.run_pass(&table).await;
    assert!(!report.succeeded());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(table.load().generation(), generation);

    // Recovery: the abort done meanwhile is noticed.
    cluster.knobs().clear();
    yt(&cluster, &["abort-op", &op]).await;
    pass_until(
        &mut discovery,
        &table,
        Duration::from_secs(10),
        "recovery",
        |s| s.is_empty(),
    )
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_passes_send_few_requests() {
    let cluster = cluster().await;
    let load = cluster
        .add_synthetic_operations(yt_devcluster::SyntheticLoad {
            operations: 150,
            jobs_per_operation: 3,
            ports_per_job: 2,
            ..yt_devcluster::SyntheticLoad::default()
        })
        .unwrap();
    cluster
        .add_synthetic_operations(yt_devcluster::SyntheticLoad {
            operations: 300,
            jobs_per_operation: 0,
            task_proxy: false,
            ..yt_devcluster::SyntheticLoad::default()
        })
        .unwrap();
    let table = RoutingTable::new(BASE);
    let mut discovery = discovery(&cluster);
    let cold = discovery.run_pass(&table).await;
    assert!(cold.succeeded(), "{cold:?}");
    assert_eq!((cold.operations_seen, cold.operations_exposing), (450, 150));
    assert_eq!((cold.services, cold.endpoints, cold.jobs), (300, 900, 450));
    // Specs (150, in 2 batches), jobs (150, in 2 batches), ports (450, in 5 batches).
    assert_eq!(
        cold.requests_by_command.get("execute_batch"),
        Some(&9),
        "{cold:?}"
    );
    assert_eq!(cold.requests_by_command.get("list_operations"), Some(&1));
    assert!(cold.table_written);
    let steady = discovery.run_pass(&table).await;
    assert!(steady.succeeded());
    assert!(
        !steady.published && !steady.table_written,
        "nothing changed"
    );
    assert_eq!(steady.endpoints, 900);
    let expected: std::collections::BTreeMap<String, u64> = [
        ("execute_batch".to_string(), 2),
        ("list_operations".to_string(), 1),
    ]
    .into();
    assert_eq!(
        steady.requests_by_command, expected,
        "only the listing and the jobs"
    );
    assert_eq!(steady.requests, 3);
    let first = load.first_operation_id.unwrap();
    assert!(table
        .load()
        .get(&service_hash(&first, "server", "port_1"))
        .is_some_and(|r| r.endpoints.len() == 3));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_collisions_are_resolved_counted_once_and_reported() {
    // Two service keys whose 8-character hashes collide (a birthday search).
    let mut seen = std::collections::HashMap::new();
    let (older_op, newer_op) = (0..200_000u32)
        .find_map(|i| {
            let op = format!("op-{i}");
            seen.insert(service_hash(&op, "t", "s"), op.clone())
                .map(|previous| (previous, op))
        })
        .expect("a collision within 200k keys");
    let spec = |op: &str, start: &str, port: u16| task_proxy::routing::ServiceSpec {
        operation_id: op.to_string(),
        task_name: "t".into(),
        service: "s".into(),
        protocol: Protocol::Http,
        endpoints: vec![task_proxy::routing::Endpoint::new("127.0.0.1", port)],
        operation_start_time: Some(start.to_string()),
        timeouts: Default::default(),
        sticky: None,
    };
    let cluster = cluster().await;
    let mut config = DiscoveryConfig::new(BASE);
    config.static_services = vec![
        spec(&newer_op, "2027-02-01T00:00:00.000000Z", 2),
        spec(&older_op, "2027-01-01T00:00:00.000000Z", 1),
    ];
    let mut discovery = Discovery::new(client(&cluster), config);
    let status = discovery.status();
    let table = RoutingTable::new(BASE);
    for _ in 0..2 {
        let report = discovery.run_pass(&table).await;
        assert!(report.succeeded(), "{report:?}");
        assert_eq!((report.services, report.collisions), (2, 1));
    }
    let snapshot = table.load();
    let short = service_hash(&older_op, "t", "s");
    assert_eq!(
        snapshot.get(&short).unwrap().key.operation_id,
        older_op,
        "the older keeps the short hash"
    );
    let renamed = &snapshot.collisions()[0].renamed_hash;
    assert_eq!(snapshot.get(renamed).unwrap().key.operation_id, newer_op);
    // Both domains are in the services table.
    let rows = yt(
        &cluster,
        &[
            "read-table",
            "//sys/task_proxies/services",
            "--format",
            "json",
        ],
    )
    .await;
    assert!(
        rows.contains(&format!("{short}.{BASE}")) && rows.contains(&format!("{renamed}.{BASE}")),
        "{rows}"
    );
    let mut registry = prometheus_client::registry::Registry::default();
    status.register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("task_proxy_discovery_hash_collisions 1"),
        "{text}"
    );
    assert!(
        text.contains("task_proxy_discovery_hash_collisions_detected_total 1"),
        "counted once: {text}"
    );
    cluster.shutdown().await;
}

/// `list_jobs` succeeding with `errors` (the controller agent unreachable: no jobs) or with
/// jobs marked `is_stale` is not the operation's jobs: the last endpoints stay for the pass.
#[tokio::test]
async fn incomplete_job_lists_keep_the_last_endpoints() {
    let cluster = cluster().await;
    let table = RoutingTable::new(BASE);
    let mut discovery = discovery(&cluster);
    let op = two_job_service(&cluster, &mut discovery, &table).await;
    let before = table.load().routes().to_vec();

    // The shape is the server's: a successful answer with the failure in `errors`.
    let answer = yt(&cluster, &["list-jobs", &op, "--format", "json"]).await;
    let json: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(json["errors"], serde_json::json!([]), "{answer}");
    cluster.knobs().set(
        "list_jobs",
        CommandKnob {
            controller_agent_unreachable: true,
            ..CommandKnob::default()
        },
    );
    let answer = yt(&cluster, &["list-jobs", &op, "--format", "json"]).await;
    let json: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(json["jobs"], serde_json::json!([]), "{answer}");
    assert_eq!(json["errors"].as_array().map(Vec::len), Some(1), "{answer}");

    for _ in 0..2 {
        let report = discovery.run_pass(&table).await;
        assert!(report.succeeded(), "{report:?}");
        assert!(report.errors > 0, "{report:?}");
        assert_eq!(table.load().routes(), before.as_slice(), "endpoints kept");
    }

    cluster.knobs().set(
        "list_jobs",
        CommandKnob {
            stale_jobs: true,
            ..CommandKnob::default()
        },
    );
    let answer = yt(&cluster, &["list-jobs", &op, "--format", "json"]).await;
    let json: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert!(
        json["jobs"].as_array().is_some_and(|jobs| !jobs.is_empty()
            && jobs
                .iter()
                .all(|j| j["is_stale"] == serde_json::json!(true))),
        "{answer}"
    );
    let report = discovery.run_pass(&table).await;
    assert!(report.succeeded(), "{report:?}");
    assert!(report.errors > 0, "stale jobs are not taken: {report:?}");
    assert_eq!(table.load().routes(), before.as_slice(), "endpoints kept");

    cluster.knobs().clear();
    let report = discovery.run_pass(&table).await;
    assert!(report.succeeded() && report.errors == 0, "{report:?}");
    assert_eq!(table.load().routes(), before.as_slice());
    cluster.shutdown().await;
}

/// SPYT writes `{"Spark over YT"={discovery_path=...}}` into the spec's top-level
/// `description` (not into annotations, and `list_operations` does not return it): discovery
/// reads the spec of such `is_spark` operations (once; it is remembered).
#[tokio::test]
async fn spyt_standalone_described_in_the_spec() {
    let cluster = cluster().await;
    let table = RoutingTable::new(BASE);
    let mut discovery = discovery(&cluster);
    let spark = vanilla(
        &cluster,
        r#"{master={job_count=1; command="sleep 1000"}}"#,
        r#"{annotations={is_spark=%true}; description={"Spark over YT"={discovery_path="//home/spark/c2"}}}"#,
    )
    .await;
    spyt_discovery_nodes(
        &cluster,
        "//home/spark/c2",
        &[("webui", "127.0.0.9:8080"), ("rest", "127.0.0.9:6066")],
    )
    .await;
    pass_until(
        &mut discovery,
        &table,
        Duration::from_secs(10),
        "SPYT services from the spec",
        |s| {
            route(s, &spark, "master", "ui").is_some()
                && route(s, &spark, "master", "rest").is_some()
        },
    )
    .await;
    let snapshot = table.load();
    let rest = route(&snapshot, &spark, "master", "rest").unwrap();
    assert_eq!(rest.endpoints, vec!["127.0.0.9:6066".parse().unwrap()]);
    let report = discovery.run_pass(&table).await;
    assert!(report.succeeded() && report.errors == 0, "{report:?}");
    assert_eq!(report.malformed_operations, 0, "{report:?}");
    assert_eq!(report.spyt_operations, 1, "{report:?}");
    cluster.shutdown().await;
}

/// A banned cluster proxy (503, `Retry-After: 60`) fails the pass within its period instead
/// of holding it for the header's minute (or the pass timeout).
#[tokio::test]
async fn a_banned_cluster_proxy_fails_the_pass_within_its_period() {
    let cluster = cluster().await;
    let table = RoutingTable::new(BASE);
    let period = Duration::from_millis(500);
    let mut client_config = ClientConfig::new(cluster.url()).with_token("robot-token");
    client_config.timeout = Duration::from_secs(5);
    client_config.max_retries = 3;
    client_config.deadline = Some(period);
    let mut config = DiscoveryConfig::new(BASE);
    config.period = period;
    config.pass_timeout = Duration::from_secs(3);
    let mut discovery = Discovery::new(YtClient::new(client_config).unwrap(), config);
    cluster.knobs().set(
        "list_operations",
        CommandKnob {
            banned: true,
            ..CommandKnob::default()
        },
    );
    let started = Instant::now();
    let report = discovery.run_pass(&table).await;
    let took = started.elapsed();
    assert!(!report.succeeded(), "{report:?}");
    assert!(
        report
            .error
            .as_deref()
            .is_some_and(|e| e.contains("banned")),
        "{report:?}"
    );
    assert!(report.requests >= 1, "{report:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(!table.is_loaded());

    cluster.knobs().clear();
    let report = discovery.run_pass(&table).await;
    assert!(report.succeeded(), "{report:?}");
    cluster.shutdown().await;
}
