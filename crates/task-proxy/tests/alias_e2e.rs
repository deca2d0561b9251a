//! Alias routing end to end: an operation submitted by the real `yt` CLI with
//! `alias="*my_nb"`, discovered on the dev cluster by the real `task-proxy serve` binary (auth
//! on), and reached by its alias domain, by the operation-alias and operation-id headers, and
//! by its hash, over the HTTP/1.1 relay and over hyper (h2c) alike.

mod support;

use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{curl, dev_cluster, start_operation, yt, Proxy, BASE_DOMAIN};
use task_proxy::routing::service_hash;

/// `main` serves `ui` (named); `bad-task` has a name an alias domain cannot carry.
const TASKS: &str = r#"{main={job_count=1; command="python3 -m http.server ${YT_PORT_0}"; port_count=1}; "bad-task"={job_count=1; command="python3 -m http.server ${YT_PORT_0}"; port_count=1}}"#;
const SPEC: &str =
    "{alias=\"*my_nb\"; annotations={task_proxy={enabled=%true; tasks_info={main={ui={port_index=0}}}}}}";
const ALICE: &str = "Authorization: OAuth alice-token";
const BOB: &str = "Authorization: OAuth bob-token";

/// The two ways curl reaches the proxy: HTTP/1.1 (the relay) and h2c (hyper).
const PROTOCOLS: [&str; 2] = ["--http1.1", "--http2-prior-knowledge"];

fn status(proxy: &Proxy, protocol: &str, headers: &[&str]) -> (u16, String) {
    let mut args = vec![
        protocol,
        "--max-time",
        "20",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
    ];
    for h in headers {
        args.extend(["-H", h]);
    }
    let url = format!("http://{}/", proxy.plain);
    args.push(&url);
    let (_, out) = curl(&args);
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn services(proxy: &Proxy) -> Vec<Value> {
    let (_, body) = curl(&[&format!("http://{}/services", proxy.admin)]);
    let json: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    json["services"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliased_operation_by_domain_headers_and_hash() {
    let cluster = dev_cluster().await;
    let proxy = support::discovering_proxy(
        &cluster.url(),
        &["--discovery-period-seconds".into(), "1".into()],
    );
    let op = start_operation(&cluster, TASKS, SPEC);

    // The scheduler's rule, kept by the dev cluster: one running operation per alias.
    let second = Command::new(test_support::tool("yt"))
        .args(["vanilla", "--tasks", TASKS, "--spec", SPEC, "--async"])
        .env("YT_PROXY", cluster.url())
        .env("YT_TOKEN", "alice-token")
        .env_remove("YT_CONFIG_PATCHES")
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("alias is already used by an operation"),
        "{stderr}"
    );

    let alias_domain = format!("my_nb-main-ui.{BASE_DOMAIN}");
    let alias_host = format!("Host: {alias_domain}");
    // Wait for discovery and the jobs' servers.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, _) = status(&proxy, "--http1.1", &[&alias_host, ALICE]);
        if code == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alias domain never answered: {code}: {:?}",
            services(&proxy)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let bad_hash = service_hash(&op, "bad-task", "port_0");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let host = format!("Host: {bad_hash}.{BASE_DOMAIN}");
        if status(&proxy, "--http1.1", &[&host, ALICE]).0 == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "bad-task never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let hash_host = format!("Host: {}.{BASE_DOMAIN}", service_hash(&op, "main", "ui"));
    let op_header = format!("x-yt-taskproxy-operation-id: {op}");
    let shared_host = format!("Host: task-proxy.{BASE_DOMAIN}");
    for protocol in PROTOCOLS {
        // The alias domain (any case), the hash, and both header triples reach the job.
        let upper_host = format!("Host: {}", alias_domain.to_ascii_uppercase());
        let routes: [&[&str]; 5] = [
            &[&alias_host],
            &[&upper_host],
            &[&hash_host],
            &[
                &shared_host,
                "x-yt-taskproxy-operation-alias: my_nb",
                "x-yt-taskproxy-task-name: main",
                "x-yt-taskproxy-service: ui",
            ],
            &[
                &shared_host,
                &op_header,
                "x-yt-taskproxy-task-name: main",
                "x-yt-taskproxy-service: ui",
            ],
        ];
        for route in routes {
            let mut alice = route.to_vec();
            alice.push(ALICE);
            let (code, body) = status(&proxy, protocol, &alice);
            assert_eq!(code, 200, "{protocol} {route:?}: {body}");
            assert!(body.contains("Directory listing"), "{body}");
            // Auth applies as for the hash: bob may not read the operation.
            let mut bob = route.to_vec();
            bob.push(BOB);
            assert_eq!(
                status(&proxy, protocol, &bob).0,
                403,
                "{protocol} {route:?}"
            );
            // And nobody gets in without credentials.
            assert_eq!(
                status(&proxy, protocol, route).0,
                401,
                "{protocol} {route:?}"
            );
        }

        // Unknown aliases: 404 by domain and by header.
        let unknown = format!("Host: other_nb-main-ui.{BASE_DOMAIN}");
        assert_eq!(status(&proxy, protocol, &[&unknown, ALICE]).0, 404);
        assert_eq!(
            status(
                &proxy,
                protocol,
                &[
                    &shared_host,
                    "x-yt-taskproxy-operation-alias: other_nb",
                    "x-yt-taskproxy-task-name: main",
                    "x-yt-taskproxy-service: ui",
                    ALICE,
                ],
            )
            .0,
            404
        );
        // A task whose name breaks the rules has no alias route; its hash route works.
        let bad_alias = format!("Host: my_nb-bad-task-port_0.{BASE_DOMAIN}");
        assert_eq!(status(&proxy, protocol, &[&bad_alias, ALICE]).0, 404);
        let bad_host = format!("Host: {bad_hash}.{BASE_DOMAIN}");
        assert_eq!(status(&proxy, protocol, &[&bad_host, ALICE]).0, 200);
        // ... and its operation-id triple still routes (no naming rule there).
        assert_eq!(
            status(
                &proxy,
                protocol,
                &[
                    &shared_host,
                    &op_header,
                    "x-yt-taskproxy-task-name: bad-task",
                    "x-yt-taskproxy-service: port_0",
                    ALICE,
                ],
            )
            .0,
            200
        );

        // Partial, conflicting and duplicated routing headers: 400 with a reason.
        let bad_requests: [&[&str]; 4] = [
            &[
                "x-yt-taskproxy-operation-alias: my_nb",
                "x-yt-taskproxy-service: ui",
            ],
            &[
                "x-yt-taskproxy-id: 00000000",
                "x-yt-taskproxy-operation-alias: my_nb",
                "x-yt-taskproxy-task-name: main",
                "x-yt-taskproxy-service: ui",
            ],
            &[
                &op_header,
                "x-yt-taskproxy-operation-alias: my_nb",
                "x-yt-taskproxy-task-name: main",
                "x-yt-taskproxy-service: ui",
            ],
            &[
                "x-yt-taskproxy-operation-alias: my_nb",
                "x-yt-taskproxy-task-name: main",
                "x-yt-taskproxy-task-name: main",
                "x-yt-taskproxy-service: ui",
            ],
        ];
        for headers in bad_requests {
            let mut all = vec![alias_host.as_str(), ALICE];
            all.extend_from_slice(headers);
            let (code, body) = status(&proxy, protocol, &all);
            assert_eq!(code, 400, "{protocol} {headers:?}: {body}");
            assert!(body.contains("x-yt-taskproxy-"), "{body}");
        }
    }

    // The admin /services and status page show the alias domain next to the hash domain.
    let listed = services(&proxy);
    let ui = listed
        .iter()
        .find(|s| s["task_name"] == "main")
        .unwrap_or_else(|| panic!("{listed:?}"));
    assert_eq!(ui["alias_domain"], alias_domain.as_str());
    let bad = listed
        .iter()
        .find(|s| s["task_name"] == "bad-task")
        .unwrap_or_else(|| panic!("{listed:?}"));
    assert!(bad.get("alias_domain").is_none(), "{bad}");
    let (_, page) = curl(&[&format!("http://{}/", proxy.admin)]);
    assert!(page.contains(&alias_domain), "{page}");

    // The services table in Cypress keeps the original's rows: hash domains only.
    let deadline = Instant::now() + Duration::from_secs(15);
    let rows = loop {
        let rows = yt(
            &cluster,
            "root-token",
            &[
                "read-table",
                "//sys/task_proxies/services",
                "--format",
                "json",
            ],
        );
        if rows.contains(&op) {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "services table never written: {rows}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        rows.lines().filter(|l| l.contains(&op)).count(),
        2,
        "{rows}"
    );
    assert!(!rows.contains("my_nb"), "{rows}");

    // Once the operation is aborted, the alias is free again.
    yt(&cluster, "alice-token", &["abort-op", &op]);
    let next = start_operation(&cluster, TASKS, SPEC);
    assert_ne!(next, op);
    drop(proxy);
    cluster.shutdown().await;
}
