//! Several replicas of the real binary against one dev cluster, electing their leader through
//! a Cypress lock: a steady load spread over all of them while operations start and stop (the
//! real `yt` CLI), the leader killed, then stopped, then cut off from the cluster; and the
//! cluster load with one and with three replicas, from the dev cluster's own counters.
//!
//! Throughout, a watcher samples every replica's `task_proxy_leader_is_leader` and the lock's
//! holder (`@locks` of the lock node, `#<transaction>/@task_proxy_leader/name`): never two
//! replicas act as leader, and the one that does holds the lock.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::load::Load;
use support::{start_operation, yt, BASE_DOMAIN};
use task_proxy::routing::service_hash;
use yt_devcluster::{CommandKnob, DevCluster};

const LOCK: &str = "//sys/task_proxies/leader";
const HTTP_TASKS: &str =
    r#"{web={job_count=1; command="python3 -m http.server ${YT_PORT_0}"; port_count=1}}"#;
const EXPOSED: &str = "{annotations={task_proxy={enabled=%true}}}";

/// One replica: the real binary with its pod name.
struct Replica {
    name: String,
    proxy: test_support::Proxy,
}

fn start_replica(cluster: &DevCluster, name: &str, timeout: &str) -> Replica {
    let proxy = test_support::Proxy::start_with_env(
        std::path::Path::new(env!("CARGO_BIN_EXE_task-proxy")),
        &[
            "--yt-proxy",
            &cluster.url(),
            "--yt-token",
            "robot-token",
            "--base-domain",
            BASE_DOMAIN,
            "--auth-enabled=false",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--worker-threads",
            "1",
            "--discovery-period-seconds",
            "1",
            "--leader-transaction-timeout",
            timeout,
            "--pod-name",
            name,
        ],
        &[("RUST_LOG", "info")],
    );
    Replica {
        name: name.to_string(),
        proxy,
    }
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn is_leader(replica: &Replica) -> bool {
    let (_, text) = replica.proxy.admin_get("/metrics");
    metric(&text, "task_proxy_leader_is_leader") == Some(1.0)
}

fn generation(replica: &Replica) -> f64 {
    let (_, text) = replica.proxy.admin_get("/metrics");
    metric(&text, "task_proxy_leader_snapshot_generation").unwrap_or(0.0)
}

/// The name in the attributes of the transaction holding the lock, if one holds it.
async fn lock_holder(client: &yt_client::YtClient) -> Option<String> {
    let locks = client.get(&format!("{LOCK}/@locks")).await.ok()?;
    let tx = locks.as_list()?.iter().find_map(|l| {
        (l.get("state")?.as_str()? == "acquired")
            .then(|| l.get("transaction_id")?.as_str().map(str::to_string))
            .flatten()
    })?;
    let name = client
        .get(&format!("#{tx}/@task_proxy_leader/name"))
        .await
        .ok()?;
    name.as_str().map(str::to_string)
}

/// The replicas' names and admin addresses, shared with the [`Watcher`] (a test removes the
/// ones it stops).
type Admins = Arc<Mutex<Vec<(String, std::net::SocketAddr)>>>;

/// Three replicas with leader transaction timeout `timeout`, and their [`Admins`].
fn three_replicas(cluster: &DevCluster, timeout: &str) -> (Vec<Replica>, Admins) {
    let replicas: Vec<Replica> = ["replica-a", "replica-b", "replica-c"]
        .iter()
        .map(|name| start_replica(cluster, name, timeout))
        .collect();
    let admins = replicas
        .iter()
        .map(|r| (r.name.clone(), r.proxy.admin))
        .collect();
    (replicas, Arc::new(Mutex::new(admins)))
}

/// Samples replicas and the lock until stopped; records every moment two replicas said they
/// lead, or one said so without holding the lock.
struct Watcher {
    stop: Arc<AtomicBool>,
    violations: Arc<Mutex<Vec<String>>>,
    samples: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    fn start(cluster_url: String, admins: Admins) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let violations = Arc::new(Mutex::new(Vec::new()));
        let samples = Arc::new(Mutex::new(0));
        let (s, v, n) = (stop.clone(), violations.clone(), samples.clone());
        let task = tokio::spawn(async move {
            let mut config = yt_client::ClientConfig::new(cluster_url);
            config.token = Some("robot-token".into());
            config.max_retries = 0;
            let client = yt_client::YtClient::new(config).unwrap();
            while !s.load(Ordering::Relaxed) {
                let replicas = admins.lock().unwrap().clone();
                let leaders: Vec<String> = tokio::task::spawn_blocking(move || {
                    replicas
                        .iter()
                        .filter(|(_, admin)| {
                            let (_, text) = test_support::http_get(*admin, "/metrics");
                            metric(&text, "task_proxy_leader_is_leader") == Some(1.0)
                        })
                        .map(|(name, _)| name.clone())
                        .collect()
                })
                .await
                .unwrap();
                let holder = lock_holder(&client).await;
                if leaders.len() > 1 {
                    v.lock()
                        .unwrap()
                        .push(format!("two leaders at once: {leaders:?}"));
                }
                if let Some(leader) = leaders.first() {
                    if holder.as_deref() != Some(leader.as_str()) {
                        v.lock()
                            .unwrap()
                            .push(format!("{leader} leads but the lock is held by {holder:?}"));
                    }
                }
                *n.lock().unwrap() += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Watcher {
            stop,
            violations,
            samples,
            task,
        }
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let samples = *self.samples.lock().unwrap();
        assert!(samples > 20, "the watcher took only {samples} samples");
        let violations = self.violations.lock().unwrap().clone();
        assert!(violations.is_empty(), "{violations:#?}");
    }
}

fn domain(operation_id: &str) -> String {
    format!(
        "{}.{BASE_DOMAIN}",
        service_hash(operation_id, "web", "port_0")
    )
}

fn routable(replica: &Replica, operation_id: &str) -> bool {
    let url = format!("http://{}/", replica.proxy.plain);
    support::status_of(
        &url,
        &[
            "-H",
            &format!("Host: {}", domain(operation_id)),
            "--max-time",
            "3",
        ],
    ) == 200
}

/// Waits until every operation routes on `replica`; if not within `limit`, fails with what
/// the replica knows (its election metrics, its services and the end of its log), so that a
/// failure says whether the replica missed the leader's snapshot or the job did not answer.
async fn wait_routable(replica: &Replica, operations: &[String], limit: Duration) {
    let started = Instant::now();
    while !tokio::task::block_in_place(|| operations.iter().all(|op| routable(replica, op))) {
        if started.elapsed() >= limit {
            let (_, metrics) = replica.proxy.admin_get("/metrics");
            let election: Vec<&str> = metrics
                .lines()
                .filter(|l| l.starts_with("task_proxy_leader_"))
                .collect();
            let (_, services) = replica.proxy.admin_get("/services");
            let log = replica.proxy.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "{}: {operations:?} not all routable within {limit:?}\nelection: {election:#?}\nservices: {services}\nlog (newest first): {tail:#?}",
                replica.name
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let ok = tokio::task::block_in_place(&mut check);
        if ok {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn the_leader(replicas: &[Replica]) -> Option<usize> {
    let leaders: Vec<usize> = (0..replicas.len())
        .filter(|&i| is_leader(&replicas[i]))
        .collect();
    (leaders.len() == 1).then(|| leaders[0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_hand_over_without_failing_a_request() {
    let cluster = support::dev_cluster().await;
    let first = start_operation(&cluster, HTTP_TASKS, EXPOSED);
    // Generous against the 1 s period: the handover after a kill takes about this long.
    let timeout = Duration::from_secs(6);
    let (mut replicas, admins) = three_replicas(&cluster, "6s");
    let watcher = Watcher::start(cluster.url(), admins.clone());
    for replica in &replicas {
        wait_routable(
            replica,
            std::slice::from_ref(&first),
            Duration::from_secs(30),
        )
        .await;
    }
    let leader = the_leader(&replicas).expect("one leader");
    // Followers do not run passes: they serve the leader's snapshot.
    for (i, replica) in replicas.iter().enumerate() {
        let (_, text) = replica.proxy.admin_get("/metrics");
        let passes = metric(&text, "task_proxy_discovery_passes_total").unwrap_or(0.0);
        assert_eq!(
            passes > 0.0,
            i == leader,
            "{}: {passes} passes",
            replica.name
        );
        let (_, page) = replica.proxy.admin_get("/");
        assert!(
            page.contains(&replicas[leader].name),
            "{} names no leader",
            replica.name
        );
    }

    // A steady load on every replica.
    let mut loads: Vec<Option<Load>> = replicas
        .iter()
        .map(|r| {
            Some(Load::start(
                r.proxy.plain,
                &domain(&first),
                "/",
                1,
                Duration::from_millis(20),
            ))
        })
        .collect();

    // Operations start and stop while the load runs.
    let second = start_operation(&cluster, HTTP_TASKS, EXPOSED);
    let third = start_operation(&cluster, HTTP_TASKS, EXPOSED);
    for replica in &replicas {
        wait_for(
            Duration::from_secs(30),
            "new operations routable everywhere",
            || routable(replica, &second) && routable(replica, &third),
        )
        .await;
    }
    yt(&cluster, "alice-token", &["abort-op", &third]);
    for replica in &replicas {
        wait_for(
            Duration::from_secs(20),
            "an aborted operation unroutable everywhere",
            || !routable(replica, &third),
        )
        .await;
    }

    // SIGKILL the leader: its own clients stop with it; the others must not notice.
    let killed = replicas[leader].name.clone();
    let before = generation(&replicas[(leader + 1) % 3]);
    let report = loads[leader].take().unwrap().stop().await;
    assert!(
        report.failures.is_empty(),
        "before the kill: {:?}",
        report.failures
    );
    let mut gone = replicas.remove(leader);
    loads.remove(leader);
    admins.lock().unwrap().retain(|(name, _)| *name != killed);
    gone.proxy.signal("KILL");
    while gone.proxy.try_wait().is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed_at = Instant::now();
    let took = wait_for(
        timeout + Duration::from_secs(6),
        "a new leader after the kill",
        || the_leader(&replicas).is_some_and(|i| generation(&replicas[i]) > before),
    )
    .await;
    eprintln!("after SIGKILL a new leader published in {took:?} (transaction timeout {timeout:?})");
    assert!(
        killed_at.elapsed() <= timeout + Duration::from_secs(4),
        "the new leader took {took:?}"
    );
    // Followers are ready all along (a table is loaded), leader or not.
    for replica in &replicas {
        assert_eq!(
            replica.proxy.admin_get("/readyz").0,
            200,
            "{}",
            replica.name
        );
    }
    // An operation started after the kill becomes routable through every survivor.
    let fourth = start_operation(&cluster, HTTP_TASKS, EXPOSED);
    for replica in &replicas {
        wait_for(
            Duration::from_secs(30),
            "an operation started after the kill",
            || routable(replica, &fourth),
        )
        .await;
    }

    // The new leader wrote the services table (its writes fenced by its transaction).
    wait_for(
        Duration::from_secs(10),
        "the new leader's services table",
        || {
            yt(
                &cluster,
                "robot-token",
                &[
                    "read-table",
                    "//sys/task_proxies/services",
                    "--format",
                    "json",
                ],
            )
            .contains(&fourth)
        },
    )
    .await;

    // SIGTERM the new leader: it aborts its transaction, the last replica takes over at once
    // (well before the transaction could have expired).
    let leader = the_leader(&replicas).expect("one leader");
    let before = generation(&replicas[1 - leader]);
    let report = loads[leader].take().unwrap().stop().await;
    assert!(
        report.failures.is_empty(),
        "on the second leader: {:?}",
        report.failures
    );
    let stopped = replicas[leader].name.clone();
    admins.lock().unwrap().retain(|(name, _)| *name != stopped);
    replicas[leader].proxy.signal("TERM");
    let took = wait_for(
        Duration::from_secs(5),
        "a leader right after SIGTERM",
        || is_leader(&replicas[1 - leader]) && generation(&replicas[1 - leader]) > before,
    )
    .await;
    eprintln!("after SIGTERM the next leader published in {took:?}");
    assert!(took < timeout / 2, "handover after SIGTERM took {took:?}");
    assert!(routable(&replicas[1 - leader], &fourth));

    for load in loads.into_iter().flatten() {
        let report = load.stop().await;
        assert!(report.ok > 100, "too little load: {}", report.ok);
        assert!(
            report.failures.is_empty(),
            "through a survivor: {:?}",
            report.failures
        );
    }
    watcher.finish().await;
    yt(&cluster, "alice-token", &["abort-op", &first]);
    yt(&cluster, "alice-token", &["abort-op", &second]);
    yt(&cluster, "alice-token", &["abort-op", &fourth]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_steps_down_and_one_other_takes_over() {
    let cluster = support::dev_cluster().await;
    let op = start_operation(&cluster, HTTP_TASKS, EXPOSED);
    let (replicas, admins) = three_replicas(&cluster, "4s");
    let watcher = Watcher::start(cluster.url(), admins);
    for replica in &replicas {
        wait_routable(replica, std::slice::from_ref(&op), Duration::from_secs(30)).await;
    }
    let leader = the_leader(&replicas).expect("one leader");
    // Every request of the leader's client hangs (the knob picks it by its user agent).
    cluster.knobs().set(
        "*",
        CommandKnob {
            hang: true,
            hang_ms: Some(60_000),
            user_agent: Some(format!("({})", replicas[leader].name)),
            ..CommandKnob::default()
        },
    );
    let stepped_down = wait_for(
        Duration::from_secs(6),
        "the cut-off leader steps down",
        || !is_leader(&replicas[leader]),
    )
    .await;
    eprintln!("the partitioned leader stepped down after {stepped_down:?}");
    wait_for(Duration::from_secs(10), "another leader", || {
        the_leader(&replicas).is_some_and(|i| i != leader)
    })
    .await;
    // The cut-off replica keeps serving its last table, and stays ready.
    assert!(routable(&replicas[leader], &op));
    assert_eq!(replicas[leader].proxy.admin_get("/readyz").0, 200);
    cluster.knobs().clear();
    // Back in touch, it follows: the new leader's next snapshot reaches it.
    let second = start_operation(&cluster, HTTP_TASKS, EXPOSED);
    for replica in &replicas {
        wait_for(
            Duration::from_secs(30),
            "routable after the partition",
            || routable(replica, &second),
        )
        .await;
    }
    assert!(!is_leader(&replicas[leader]));
    watcher.finish().await;
    yt(&cluster, "alice-token", &["abort-op", &op]);
    yt(&cluster, "alice-token", &["abort-op", &second]);
}

/// Requests per second by command over `window`, from the dev cluster's counters.
async fn cluster_rate(
    cluster: &DevCluster,
    window: Duration,
) -> (f64, std::collections::BTreeMap<String, u64>) {
    cluster.reset_request_counts();
    tokio::time::sleep(window).await;
    let counts = cluster.request_counts();
    let total: u64 = counts.values().sum();
    (total as f64 / window.as_secs_f64(), counts)
}

const PASS_COMMANDS: &[&str] = &[
    "list_operations",
    "execute_batch",
    "list_jobs",
    "get_operation",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_cost_the_cluster_little_more_than_one() {
    let cluster = support::dev_cluster().await;
    let ops: Vec<String> = (0..2)
        .map(|_| start_operation(&cluster, HTTP_TASKS, EXPOSED))
        .collect();
    let window = Duration::from_secs(15);
    let mut replicas = vec![start_replica(&cluster, "replica-a", "10s")];
    wait_routable(&replicas[0], &ops, Duration::from_secs(30)).await;
    let (one, one_counts) = cluster_rate(&cluster, window).await;
    let pass: f64 = PASS_COMMANDS
        .iter()
        .map(|c| one_counts.get(*c).copied().unwrap_or(0) as f64)
        .sum::<f64>()
        / window.as_secs_f64();
    for name in ["replica-b", "replica-c"] {
        replicas.push(start_replica(&cluster, name, "10s"));
    }
    for replica in &replicas {
        wait_routable(replica, &ops, Duration::from_secs(30)).await;
    }
    let (three, three_counts) = cluster_rate(&cluster, window).await;
    eprintln!(
        "cluster requests per 1 s period: 1 replica {one:.2} {one_counts:?}; 3 replicas {three:.2} {three_counts:?}; one pass {pass:.2}"
    );
    assert!(
        pass >= 3.0,
        "a pass costs {pass:.2} requests: the load did not run"
    );
    // Two followers add at most one pass and two revision reads per period.
    assert!(
        three - one <= pass + 2.0,
        "3 replicas cost {three:.2}/period, 1 replica {one:.2}/period, a pass {pass:.2}"
    );
    // And only one replica ran passes.
    let listings = three_counts.get("list_operations").copied().unwrap_or(0) as f64;
    assert!(
        listings <= window.as_secs_f64() + 2.0,
        "{listings} listings in {window:?}"
    );
    for op in &ops {
        yt(&cluster, "alice-token", &["abort-op", op]);
    }
}
