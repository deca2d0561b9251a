//! The client against the dev cluster (a real HTTP API server that the real `yt` CLI drives):
//! credentials, permissions, paging over more than one page, jobs, batches, Cypress and tables,
//! and injected failures.

use std::time::{Duration, Instant};
use yson::Node;
use yt_client::{BatchRequest, ClientConfig, Credentials, Error, YtClient};
use yt_devcluster::{CommandKnob, DevCluster, DevClusterConfig, SyntheticLoad};

async fn cluster() -> DevCluster {
    DevCluster::start(DevClusterConfig::default())
        .await
        .unwrap()
}

fn robot(cluster: &DevCluster) -> YtClient {
    let mut config = ClientConfig::new(cluster.url()).with_token("robot-token");
    config.initial_backoff = Duration::from_millis(5);
    YtClient::new(config).unwrap()
}

fn root(cluster: &DevCluster) -> YtClient {
    YtClient::new(ClientConfig::new(cluster.url()).with_token("root-token")).unwrap()
}

#[tokio::test]
async fn whoami_with_each_kind_of_credentials() {
    let cluster = cluster().await;
    let client = robot(&cluster);
    let cases = [
        (Credentials::OAuth("alice-token".into()), "alice"),
        (Credentials::OAuth("robot-token".into()), "robot-task-proxy"),
        (Credentials::Bearer("bob-iam".into()), "bob"),
        (
            Credentials::Cookie {
                name: "YTCypressCookie".into(),
                value: "alice-cookie".into(),
            },
            "alice",
        ),
    ];
    for (credentials, login) in cases {
        assert_eq!(
            client.whoami(&credentials).await.unwrap(),
            login,
            "{credentials:?}"
        );
    }
    for bad in [
        Credentials::OAuth("nope".into()),
        Credentials::Bearer("alice-token-not".into()),
        Credentials::Cookie {
            name: "YTCypressCookie".into(),
            value: "stale".into(),
        },
    ] {
        let e = client.whoami(&bad).await.unwrap_err();
        assert!(matches!(e, Error::Unauthenticated(_)), "{bad:?}: {e}");
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn running_operations_page_and_permissions_follow_the_acl() {
    let cluster = cluster().await;
    let summary = cluster
        .add_synthetic_operations(SyntheticLoad {
            operations: 250,
            jobs_per_operation: 0,
            task_proxy: false,
            ..SyntheticLoad::default()
        })
        .unwrap();
    assert_eq!(summary.operations, 250);
    let client = robot(&cluster);
    cluster.reset_request_counts();
    let ops = client
        .list_running_operations(&["id", "runtime_parameters"])
        .await
        .unwrap();
    assert_eq!(ops.len(), 250);
    let mut ids: Vec<&str> = ops
        .iter()
        .filter_map(|o| o.get("id").and_then(Node::as_str))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 250, "each operation once");
    let pages = cluster.request_counts().get("list_operations").copied();
    assert_eq!(pages, Some(3), "pages of 100");

    let op = summary.first_operation_id.unwrap();
    assert!(client
        .check_operation_permission(&op, "alice", "read")
        .await
        .unwrap());
    assert!(client
        .check_operation_permission(&op, "root", "read")
        .await
        .unwrap());
    assert!(!client
        .check_operation_permission(&op, "bob", "read")
        .await
        .unwrap());
    let e = client
        .check_operation_permission("1-2-3-4", "alice", "read")
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn jobs_and_their_ports_through_a_batch() {
    let cluster = cluster().await;
    let summary = cluster
        .add_synthetic_operations(SyntheticLoad {
            operations: 1,
            jobs_per_operation: 230,
            ports_per_job: 2,
            ..SyntheticLoad::default()
        })
        .unwrap();
    let op = summary.first_operation_id.unwrap();
    let client = robot(&cluster);
    let jobs = client.list_jobs(&op, Some("running")).await.unwrap();
    assert_eq!(jobs.len(), 230, "three pages by offset");
    assert!(jobs
        .iter()
        .all(|j| j.host().starts_with("127.0.0.") && j.task_name == "server"));
    let mut requests: Vec<BatchRequest> = jobs
        .iter()
        .map(|j| {
            BatchRequest::get(format!(
                "//sys/exec_nodes/{}/orchid/exec_node/job_controller/active_jobs/{}/job_ports",
                j.address, j.id
            ))
        })
        .collect();
    requests.push(BatchRequest::get("//sys/exec_nodes/127.0.0.1:9012/orchid/exec_node/job_controller/active_jobs/0-0-0-0/job_ports"));
    cluster.reset_request_counts();
    let results = client.execute_batch(&requests, 16).await.unwrap();
    assert_eq!(results.len(), 231);
    for result in &results[..230] {
        let ports = result.as_ref().unwrap().as_list().unwrap();
        assert_eq!(ports.len(), 2);
    }
    assert!(results[230].as_ref().unwrap_err().is_resolve_error());
    assert_eq!(
        cluster.request_counts().get("execute_batch"),
        Some(&3),
        "chunks of 100"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn cypress_and_tables() {
    let cluster = cluster().await;
    let client = root(&cluster);
    assert!(!client.exists("//home/t/dir").await.unwrap());
    client
        .create("map_node", "//home/t/dir", None, true, false)
        .await
        .unwrap();
    client
        .create("map_node", "//home/t/dir", None, true, true)
        .await
        .unwrap();
    let e = client
        .create("map_node", "//home/t/dir", None, true, false)
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
    client
        .set("//home/t/dir/@note", &Node::string("hello"))
        .await
        .unwrap();
    assert_eq!(
        client.get("//home/t/dir/@note").await.unwrap().as_str(),
        Some("hello")
    );
    client
        .create(
            "map_node",
            "//home/t/dir/127.0.0.1:8080",
            None,
            false,
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        client.list("//home/t/dir").await.unwrap(),
        vec!["127.0.0.1:8080"]
    );
    let e = client.get("//home/t/missing").await.unwrap_err();
    assert!(e.is_resolve_error(), "{e}");

    let rows: Vec<Node> = (0..3)
        .map(|i| {
            Node::map(vec![
                ("domain".into(), Node::string(format!("{i}.tp.test"))),
                ("protocol".into(), Node::string("http")),
            ])
        })
        .collect();
    client
        .write_table("//home/t/table", &rows)
        .await
        .unwrap_or_else(|e| {
            panic!("write_table to a missing table: {e}");
        });
    assert_eq!(client.read_table("//home/t/table").await.unwrap(), rows);
    client
        .write_table("//home/t/table", &rows[..1])
        .await
        .unwrap();
    assert_eq!(
        client.read_table("//home/t/table").await.unwrap().len(),
        1,
        "overwritten"
    );
    client.remove("//home/t", true, false).await.unwrap();
    assert!(!client.exists("//home/t").await.unwrap());
    cluster.shutdown().await;
}

#[tokio::test]
async fn injected_failures_are_retried_then_reported() {
    let cluster = cluster().await;
    let client = robot(&cluster);
    cluster.knobs().set(
        "get",
        CommandKnob {
            error_rate: 1.0,
            ..CommandKnob::default()
        },
    );
    cluster.reset_request_counts();
    let e = client.get("//sys").await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(matches!(e, Error::Yt { status: 503, .. }), "{e}");
    assert_eq!(client.stats().retries_total, 3, "the default 3 retries");

    cluster.knobs().set(
        "get",
        CommandKnob {
            hang: true,
            hang_ms: Some(5_000),
            ..CommandKnob::default()
        },
    );
    let impatient = YtClient::new(
        ClientConfig::new(cluster.url())
            .with_token("robot-token")
            .with_timeout(Duration::from_millis(300))
            .with_max_retries(0),
    )
    .unwrap();
    let started = Instant::now();
    assert!(matches!(
        impatient.get("//sys").await.unwrap_err(),
        Error::Timeout
    ));
    assert!(started.elapsed() < Duration::from_secs(2));

    cluster.knobs().clear();
    assert!(client.get("//sys").await.is_ok(), "recovers");
    cluster.shutdown().await;
}

/// A banned proxy answers 503 with `Retry-After: 60`: the client neither waits a minute nor
/// outlives its deadline, and the failed attempts are counted.
#[tokio::test]
async fn a_banned_proxy_costs_at_most_the_callers_deadline() {
    let cluster = cluster().await;
    cluster.knobs().set(
        "whoami",
        CommandKnob {
            banned: true,
            ..CommandKnob::default()
        },
    );
    let client = YtClient::new(
        ClientConfig::new(cluster.url())
            .with_token("robot-token")
            .with_timeout(Duration::from_secs(2))
            .with_deadline(Duration::from_secs(2))
            .with_max_retries(3),
    )
    .unwrap();
    let started = Instant::now();
    let e = client
        .whoami(&Credentials::OAuth("alice-token".into()))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let yt = e.yt_error().expect("the proxy's error");
    assert_eq!(yt.code, yt_client::codes::PROXY_BANNED, "{e}");
    assert!(e.is_transient());
    let stats = client.stats();
    assert!(stats.errors_total >= 1 && stats.errors_total == stats.requests_total);

    // Without a deadline the wait is still bounded by the back-off cap, not the header.
    let mut config = ClientConfig::new(cluster.url()).with_max_retries(1);
    config.max_backoff = Duration::from_millis(200);
    let client = YtClient::new(config).unwrap();
    let started = Instant::now();
    client
        .whoami(&Credentials::OAuth("alice-token".into()))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(client.stats().requests_total, 2, "one retry");
    cluster.shutdown().await;
}

/// Invalid credentials (code 111) are a definitive answer, never retried as a ban.
#[tokio::test]
async fn invalid_credentials_are_not_retried() {
    let cluster = cluster().await;
    cluster.knobs().set(
        "whoami",
        CommandKnob {
            error_rate: 1.0,
            error_status: Some(401),
            error_code: Some(111),
            ..CommandKnob::default()
        },
    );
    let client = robot(&cluster);
    let e = client
        .whoami(&Credentials::OAuth("alice-token".into()))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unauthenticated(_)), "{e}");
    assert_eq!(client.stats().requests_total, 1);
    cluster.shutdown().await;
}

/// A server without a command answers 404 "not registered", leaves it out of `/api/v4`, and
/// the client neither retries nor mistakes it for anything else.
#[tokio::test]
async fn an_unregistered_command_is_recognised() {
    let cluster = cluster().await;
    let client = robot(&cluster);
    assert!(client
        .has_command("check_operation_permission")
        .await
        .unwrap());
    cluster.knobs().set(
        "check_operation_permission",
        CommandKnob {
            unregistered: true,
            ..CommandKnob::default()
        },
    );
    assert!(!client
        .has_command("check_operation_permission")
        .await
        .unwrap());
    let before = client.stats().requests_total;
    let e = client
        .check_operation_permission("1-2-3-4", "alice", "read")
        .await
        .unwrap_err();
    assert!(e.is_unregistered_command(), "{e}");
    assert_eq!(client.stats().requests_total - before, 1, "not retried");
    cluster.shutdown().await;
}

/// The server refuses `list_operations` pages over 1000 (it does not cap them): the client
/// never asks for more, whatever page size it is given.
#[tokio::test]
async fn list_operations_pages_stay_within_the_servers_limit() {
    let cluster = cluster().await;
    cluster
        .add_synthetic_operations(SyntheticLoad {
            operations: 1200,
            jobs_per_operation: 0,
            task_proxy: false,
            ..SyntheticLoad::default()
        })
        .unwrap();
    let client = robot(&cluster);
    let refused = client
        .list_operations(&yt_client::ListOperationsRequest {
            limit: Some(1001),
            ..yt_client::ListOperationsRequest::default()
        })
        .await
        .unwrap_err();
    let yt = refused.yt_error().expect("the server's error");
    assert!(
        yt.message
            .contains("Requested result limit (1001) exceeds maximum allowed limit (1000)"),
        "{refused}"
    );
    assert!(!refused.is_transient());
    cluster.reset_request_counts();
    let ops = client
        .list_running_operations_paged(&["id"], 5000)
        .await
        .unwrap();
    assert_eq!(ops.len(), 1200);
    assert_eq!(cluster.request_counts().get("list_operations"), Some(&2));
    cluster.shutdown().await;
}

/// The server's `list_operations` cursor is exclusive: a page from `cursor_time` = an
/// operation's start time does not list that operation; paging still loses none of those
/// that share a start time.
#[tokio::test]
async fn the_list_operations_cursor_is_exclusive() {
    let cluster = cluster().await;
    cluster
        .add_synthetic_operations(SyntheticLoad {
            operations: 30,
            jobs_per_operation: 0,
            task_proxy: false,
            ..SyntheticLoad::default()
        })
        .unwrap();
    let client = robot(&cluster);
    let first = client
        .list_operations(&yt_client::ListOperationsRequest {
            state: Some("running".into()),
            limit: Some(1),
            cursor_direction: Some(yt_client::CursorDirection::Past),
            attributes: vec!["id".into(), "start_time".into()],
            ..yt_client::ListOperationsRequest::default()
        })
        .await
        .unwrap();
    let newest = &first.operations[0];
    let start = newest.get("start_time").and_then(Node::as_str).unwrap();
    let next = client
        .list_operations(&yt_client::ListOperationsRequest {
            state: Some("running".into()),
            limit: Some(1000),
            cursor_time: Some(start.to_string()),
            cursor_direction: Some(yt_client::CursorDirection::Past),
            attributes: vec!["id".into(), "start_time".into()],
            ..yt_client::ListOperationsRequest::default()
        })
        .await
        .unwrap();
    let id = newest.get("id").and_then(Node::as_str).unwrap();
    assert!(
        next.operations
            .iter()
            .all(|o| o.get("id").and_then(Node::as_str) != Some(id)),
        "the cursor's own operation is not listed again"
    );
    assert_eq!(next.operations.len(), 29);
    let all = client.list_running_operations(&["id"]).await.unwrap();
    assert_eq!(all.len(), 30);
    cluster.shutdown().await;
}

/// A control proxy redirects heavy reads (307 to a data proxy, `Connection: close`) unless
/// the request carries `X-YT-Suppress-Redirect` or a cookie; the client follows one hop to a
/// data proxy the cluster lists in `/hosts`, with its credentials.
#[tokio::test]
async fn heavy_reads_follow_the_redirect_to_a_listed_data_proxy() {
    let cluster = cluster().await;
    let client = robot(&cluster);
    let rows = table_with_rows(&client, "//home/r/table", 3).await;
    cluster.knobs().set(
        "read_table",
        CommandKnob {
            redirect: true,
            ..CommandKnob::default()
        },
    );
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = format!("{}/api/v4/read_table?path=//home/r/table", cluster.url());
    let answer = plain
        .get(&url)
        .header("Authorization", "OAuth robot-token")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 307);
    let location = answer.headers()["location"].to_str().unwrap().to_string();
    let hosts: Vec<String> = plain
        .get(format!("{}/hosts", cluster.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        hosts
            .iter()
            .any(|h| location.starts_with(&format!("http://{h}/"))),
        "{location} names a listed data proxy {hosts:?}"
    );
    // Browsers (a cookie) are served in place, as by the server.
    let browser = plain
        .get(&url)
        .header("Cookie", "YTCypressCookie=robot-cookie")
        .send()
        .await
        .unwrap();
    assert_ne!(browser.status().as_u16(), 307);

    let before = client.stats();
    assert_eq!(client.read_table("//home/r/table").await.unwrap(), rows);
    let sent = client.stats().by_command_since(&before);
    assert_eq!(sent.get("read_table"), Some(&1), "one call, {sent:?}");
    cluster.shutdown().await;
}

/// A redirect to a host the cluster does not list as a data proxy is refused: the client
/// never connects there, so the credentials cannot leak.
#[tokio::test]
async fn heavy_reads_refuse_a_redirect_to_an_unlisted_host() {
    let cluster = cluster().await;
    let client = robot(&cluster);
    table_with_rows(&client, "//home/r/table", 1).await;
    let foreign = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let foreign_addr = foreign.local_addr().unwrap();
    cluster.knobs().set(
        "read_table",
        CommandKnob {
            redirect: true,
            redirect_host: Some(foreign_addr.to_string()),
            ..CommandKnob::default()
        },
    );
    let error = client.read_table("//home/r/table").await.unwrap_err();
    assert!(matches!(error, Error::Redirect(_)), "{error}");
    assert!(
        error.to_string().contains(&foreign_addr.to_string()),
        "{error}"
    );
    assert!(!error.is_transient());
    let accepted = tokio::time::timeout(Duration::from_millis(200), foreign.accept()).await;
    assert!(accepted.is_err(), "the unlisted host got a connection");
    cluster.shutdown().await;
}

/// A data proxy that fails after sending the head reports the error in trailers over a 200;
/// the read fails instead of returning the rows that came before the error.
#[tokio::test]
async fn an_error_trailer_fails_the_read() {
    let cluster = cluster().await;
    let client = robot(&cluster);
    let rows = table_with_rows(&client, "//home/r/table", 40).await;
    assert_eq!(client.read_table("//home/r/table").await.unwrap(), rows);
    cluster.knobs().set(
        "read_table",
        CommandKnob {
            error_trailer: true,
            ..CommandKnob::default()
        },
    );
    let error = client.read_table("//home/r/table").await.unwrap_err();
    assert!(
        error.to_string().contains("Error reading table chunk"),
        "{error}"
    );
    cluster.shutdown().await;
}

async fn table_with_rows(client: &YtClient, path: &str, count: usize) -> Vec<Node> {
    client
        .create("table", path, None, true, false)
        .await
        .unwrap();
    let rows: Vec<Node> = (0..count)
        .map(|i| Node::map(vec![("k".into(), Node::string(format!("value-{i}")))]))
        .collect();
    client.write_table(path, &rows).await.unwrap();
    rows
}
