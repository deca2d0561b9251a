//! The auth gate with the real cluster client against the dev cluster: identities from
//! `whoami`, decisions from `check_operation_permission`, the caches (counted by the dev
//! cluster), and the grace period while the cluster fails (its fault knobs).

mod support;

use std::sync::Arc;
use std::time::Duration;
use support::{dev_cluster, set_acl, start_operation, BOB_READS};
use task_proxy::auth::{Admitted, AuthConfig, Gate, Refusal};
use task_proxy::routing::{Endpoint, Protocol, Route, ServiceKey};
use yt_client::{ClientConfig, YtClient};
use yt_devcluster::{CommandKnob, DevCluster};

/// The client address the requests come from.
const CLIENT: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// One optional request header.
type Header<'a> = Option<(&'a str, &'a str)>;

const TASKS: &str = "{main={command=\"sleep 1000\";job_count=1;port_count=1}}";

fn route(operation_id: &str) -> Route {
    Route {
        hash: "00000000".into(),
        domain: "00000000.tp.test".into(),
        alias_domain: None,
        key: ServiceKey {
            operation_id: operation_id.into(),
            task_name: "main".into(),
            service: "port_0".into(),
        },
        protocol: Protocol::Http,
        endpoints: vec![Endpoint {
            host: "127.0.0.1".into(),
            port: 1,
        }],
        operation_start_time: None,
        timeouts: Default::default(),
        sticky: None,
    }
}

fn client(cluster: &DevCluster) -> YtClient {
    YtClient::new(
        ClientConfig::new(cluster.url())
            .with_token("robot-token")
            .with_timeout(Duration::from_secs(5))
            .with_max_retries(0),
    )
    .expect("client")
}

fn gate(cluster: &DevCluster, config: AuthConfig) -> Gate {
    Gate::new(config, Arc::new(client(cluster))).expect("gate")
}

async fn admit(
    gate: &Gate,
    route: &Route,
    header: Option<(&str, &str)>,
) -> Result<Admitted, Refusal> {
    let mut builder = http::Request::builder().uri("/");
    if let Some((name, value)) = header {
        builder = builder.header(name, value);
    }
    let mut parts = builder.body(()).unwrap().into_parts().0;
    let result = gate.admit(&mut parts, true, route, CLIENT).await;
    assert!(parts.headers.get("authorization").is_none());
    assert!(parts.headers.get("cookie").is_none());
    result
}

fn user(name: &str) -> Result<Admitted, Refusal> {
    Ok(Admitted {
        user: Some(name.into()),
    })
}

fn counts(cluster: &DevCluster) -> (u64, u64) {
    let counts = cluster.request_counts();
    (
        counts.get("whoami").copied().unwrap_or(0),
        counts
            .get("check_operation_permission")
            .copied()
            .unwrap_or(0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_for_demo_users_and_credential_forms() {
    let cluster = dev_cluster().await;
    let op = start_operation(&cluster, TASKS, BOB_READS);
    let route = route(&op);
    let config = AuthConfig {
        deny_ttl: Duration::from_millis(200),
        allow_ttl: Duration::from_millis(200),
        ..AuthConfig::default()
    };
    let gate = gate(&cluster, config);
    let forbidden = |name: &str| Err(Refusal::Forbidden { user: name.into() });
    let cases: Vec<(Header, Result<Admitted, Refusal>)> = vec![
        (Some(("authorization", "OAuth alice-token")), user("alice")),
        (Some(("authorization", "oauth alice-token")), user("alice")),
        (
            Some(("cookie", "YTCypressCookie=alice-cookie")),
            user("alice"),
        ),
        (
            Some(("cookie", "YTCypressCookie alice-cookie")),
            user("alice"),
        ),
        (Some(("authorization", "OAuth bob-token")), user("bob")),
        (Some(("authorization", "Bearer bob-iam")), user("bob")),
        (Some(("authorization", "OAuth root-token")), user("root")),
    ];
    for (header, expected) in &cases {
        assert_eq!(&admit(&gate, &route, *header).await, expected, "{header:?}");
    }
    for header in [
        None,
        Some(("authorization", "OAuth stranger-token")),
        Some(("authorization", "Bearer bad token")),
        Some(("cookie", "YTCypressCookie=nope")),
    ] {
        assert!(
            matches!(
                admit(&gate, &route, header).await,
                Err(Refusal::Unauthenticated { .. })
            ),
            "{header:?}"
        );
    }

    // Revoke bob's read with the real CLI: once the cached allow expires, bob gets 403.
    set_acl(&cluster, &op, "[]");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        admit(&gate, &route, Some(("authorization", "Bearer bob-iam"))).await,
        forbidden("bob")
    );
    assert_eq!(
        admit(&gate, &route, Some(("authorization", "OAuth alice-token"))).await,
        user("alice")
    );
    // Granted again: the denial is short-lived.
    set_acl(
        &cluster,
        &op,
        "[{action=allow;subjects=[bob];permissions=[read]}]",
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        admit(&gate, &route, Some(("authorization", "Bearer bob-iam"))).await,
        user("bob")
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_requests_cost_one_whoami_and_one_check() {
    let cluster = dev_cluster().await;
    let op = start_operation(&cluster, TASKS, "{}");
    let route = route(&op);
    let gate = gate(&cluster, AuthConfig::default());
    cluster.reset_request_counts();
    for _ in 0..1000 {
        assert_eq!(
            admit(&gate, &route, Some(("authorization", "OAuth alice-token"))).await,
            user("alice")
        );
    }
    assert_eq!(counts(&cluster), (1, 1));

    // 100 concurrent first requests of another user: still one of each.
    cluster.reset_request_counts();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let gate = gate.clone();
        let route = route.clone();
        tasks.push(tokio::spawn(async move {
            admit(&gate, &route, Some(("authorization", "OAuth root-token"))).await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), user("root"));
    }
    assert_eq!(counts(&cluster), (1, 1));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_period_during_cluster_failures() {
    let cluster = dev_cluster().await;
    let op = start_operation(&cluster, TASKS, "{}");
    let route = route(&op);
    let config = AuthConfig {
        identity_ttl: Duration::from_millis(300),
        allow_ttl: Duration::from_millis(300),
        grace: Duration::from_secs(60),
        failure_hold: Duration::from_millis(200),
        ..AuthConfig::default()
    };
    let gate = gate(&cluster, config);
    let alice = Some(("authorization", "OAuth alice-token"));
    assert_eq!(admit(&gate, &route, alice).await, user("alice"));

    let failing = CommandKnob {
        error_rate: 1.0,
        ..CommandKnob::default()
    };
    cluster.knobs().set("whoami", failing.clone());
    cluster.knobs().set("check_operation_permission", failing);
    tokio::time::sleep(Duration::from_millis(400)).await;
    cluster.reset_request_counts();
    // Alice's answers expired, the cluster fails: the stale answers are used.
    for _ in 0..3 {
        assert_eq!(admit(&gate, &route, alice).await, user("alice"));
    }
    assert!(counts(&cluster).0 >= 1, "the gate did try the cluster");
    // A user never seen: 503.
    assert_eq!(
        admit(&gate, &route, Some(("authorization", "OAuth root-token"))).await,
        Err(Refusal::Unavailable {
            retry_after_seconds: 5
        })
    );
    // A hanging cluster (beyond the client's timeout) is a failure too.
    cluster.knobs().clear();
    cluster.knobs().set(
        "whoami",
        CommandKnob {
            hang: true,
            hang_ms: Some(30_000),
            ..CommandKnob::default()
        },
    );
    let fast_client = YtClient::new(
        ClientConfig::new(cluster.url())
            .with_token("robot-token")
            .with_timeout(Duration::from_millis(300))
            .with_max_retries(0),
    )
    .unwrap();
    let impatient = Gate::new(AuthConfig::default(), Arc::new(fast_client)).unwrap();
    assert!(matches!(
        admit(
            &impatient,
            &route,
            Some(("authorization", "OAuth bob-token"))
        )
        .await,
        Err(Refusal::Unavailable { .. })
    ));

    // Recovery (seen once the failure hold is over).
    cluster.knobs().clear();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(admit(&gate, &route, alice).await, user("alice"));
    assert_eq!(
        admit(&gate, &route, Some(("authorization", "OAuth root-token"))).await,
        user("root")
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_cluster_is_waited_for_once_per_key() {
    let cluster = dev_cluster().await;
    let op = start_operation(&cluster, TASKS, "{}");
    let route = route(&op);
    let client = YtClient::new(
        ClientConfig::new(cluster.url())
            .with_token("robot-token")
            .with_timeout(Duration::from_millis(500))
            .with_max_retries(0),
    )
    .unwrap();
    let gate = Gate::new(AuthConfig::default(), Arc::new(client)).unwrap();
    cluster.knobs().set(
        "whoami",
        CommandKnob {
            hang: true,
            hang_ms: Some(30_000),
            ..CommandKnob::default()
        },
    );
    cluster.reset_request_counts();
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let gate = gate.clone();
        let route = route.clone();
        tasks.push(tokio::spawn(async move {
            admit(&gate, &route, Some(("authorization", "OAuth alice-token"))).await
        }));
    }
    for task in tasks {
        assert!(matches!(
            task.await.unwrap(),
            Err(Refusal::Unavailable { .. })
        ));
    }
    // One timed-out call, shared by all 50 requests (not 50 timeouts one after another).
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(counts(&cluster).0, 1);
    cluster.knobs().clear();
    cluster.shutdown().await;
}
