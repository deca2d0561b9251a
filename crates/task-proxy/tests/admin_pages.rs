//! The admin listener as operators use it, against `task-proxy serve` with discovery and auth
//! on the dev cluster: the status page in headless Chromium (a screenshot is saved under
//! `target/`), a strict parse of every line of `/metrics` with the families dashboards need,
//! and the JSON access log (one line per request, the user named, no credential).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::{curl, dev_cluster, start_operation, Proxy};

const TASKS: &str = r#"{example_http_server={job_count=2; command="python3 -m http.server ${YT_PORT_0}"; port_count=1}}"#;
const ANNOTATED: &str = "{annotations={task_proxy={enabled=%true}}}";

/// The binary (its JSON log on stderr is part of what is checked), discovering on the cluster.
fn serve(cluster_url: &str) -> Proxy {
    Proxy::builder()
        .flags(&[
            "--yt-proxy",
            cluster_url,
            "--worker-threads",
            "1",
            "--discovery-period-seconds",
            "1",
            "--log-format",
            "json",
        ])
        .env(&[("YT_TOKEN", "robot-token")])
        .binary_at(std::path::Path::new(env!("CARGO_BIN_EXE_task-proxy")))
        .no_wait()
        .start()
}

/// The services of `/services` for `operation` once it has `jobs` endpoints: (domain, hash).
fn wait_for_service(admin: &str, operation: &str, jobs: usize) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = curl(&[&format!("http://{admin}/services")]);
        if let Ok(view) = serde_json::from_str::<serde_json::Value>(&body) {
            let found = view["services"].as_array().and_then(|services| {
                services.iter().find(|s| {
                    s["operation_id"] == operation
                        && s["endpoints"].as_array().map_or(0, Vec::len) >= jobs
                })
            });
            // Routable, and every job already listens: the metrics below count exact
            // statuses, so no request may meet a job still starting up.
            let listening = |s: &serde_json::Value| {
                s["endpoints"].as_array().is_some_and(|endpoints| {
                    endpoints.iter().all(|e| {
                        let address = e["address"]
                            .as_str()
                            .and_then(|a| std::net::ToSocketAddrs::to_socket_addrs(a).ok()?.next());
                        address.is_some_and(|a| {
                            std::net::TcpStream::connect_timeout(&a, Duration::from_millis(500))
                                .is_ok()
                        })
                    })
                })
            };
            if let Some(s) = found.filter(|s| listening(s)) {
                return (
                    s["domain"].as_str().unwrap_or_default().to_string(),
                    s["hash"].as_str().unwrap_or_default().to_string(),
                );
            }
        }
        assert!(
            Instant::now() < deadline,
            "{operation} not routable: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A strict reader of the Prometheus/OpenMetrics text exposition: every line must be a
/// well-formed comment or sample of a declared family. Returns family name -> type.
fn parse_exposition(text: &str) -> std::collections::BTreeMap<String, String> {
    fn is_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    fn parse_labels(s: &str, line: &str) {
        // name="value" pairs, comma separated; values escape \\, \" and \n.
        let mut rest = s;
        while !rest.is_empty() {
            let (name, after) = rest
                .split_once("=\"")
                .unwrap_or_else(|| panic!("bad label in {line:?}"));
            assert!(is_name(name), "bad label name {name:?} in {line:?}");
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => {
                        let escaped = chars.next().map(|(_, c)| c);
                        assert!(
                            matches!(escaped, Some('\\' | '"' | 'n')),
                            "bad escape in {line:?}"
                        );
                    }
                    Some((i, '"')) => break i,
                    Some(_) => {}
                    None => panic!("unterminated label value in {line:?}"),
                }
            };
            rest = &after[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    let mut families = std::collections::BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.last(),
        Some(&"# EOF"),
        "the exposition ends with # EOF"
    );
    for line in &lines[..lines.len() - 1] {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            assert!(is_name(name), "bad family name in {line:?}");
            match kind {
                "TYPE" => {
                    let t = parts.next().unwrap_or("");
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "summary",
                            "info",
                            "unknown"
                        ]
                        .contains(&t),
                        "bad type in {line:?}"
                    );
                    families.insert(name.to_string(), t.to_string());
                }
                "HELP" => assert!(parts.next().is_some_and(|h| !h.is_empty()), "{line:?}"),
                "UNIT" => {}
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad value in {line:?}"
        );
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                parse_labels(labels, line);
                name
            }
            None => series,
        };
        assert!(is_name(name), "bad sample name in {line:?}");
        let family = ["_total", "_bucket", "_count", "_sum", "_created", "_info"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| families.contains_key(*base))
            })
            .unwrap_or(name);
        let t = families
            .get(family)
            .unwrap_or_else(|| panic!("sample of an undeclared family: {line:?}"));
        if t == "counter" {
            assert!(
                name.ends_with("_total") || name.ends_with("_created"),
                "{line:?}"
            );
        }
    }
    for (name, t) in &families {
        assert!(name.starts_with("task_proxy_"), "{name} lacks the prefix");
        if t == "histogram" {
            assert!(
                name.ends_with("_seconds"),
                "{name}: histograms measure seconds"
            );
        }
    }
    families
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_metrics_and_access_log() {
    let cluster = dev_cluster().await;
    let operation = start_operation(&cluster, TASKS, ANNOTATED);
    let proxy = serve(&cluster.url());
    let (domain, hash) = wait_for_service(&proxy.admin.to_string(), &operation, 2);

    // Traffic: allowed, unauthenticated, unknown service.
    let url = format!("http://{}/", proxy.plain);
    let host = format!("Host: {domain}");
    for _ in 0..3 {
        let (_, body) = curl(&["-H", &host, "-H", "Authorization: OAuth alice-token", &url]);
        assert!(body.contains("Directory listing"), "{body}");
    }
    curl(&["-H", &host, "-H", "Authorization: OAuth wrong-token", &url]);
    curl(&[
        "-H",
        &format!("Host: 00000000.{}", support::BASE_DOMAIN),
        &url,
    ]);

    // Metrics: every line parses; the families dashboards need are there.
    let (_, metrics) = curl(&[&format!("http://{}/metrics", proxy.admin)]);
    let families = parse_exposition(&metrics);
    for family in [
        "task_proxy_requests",
        "task_proxy_upstream_latency_seconds",
        "task_proxy_routing_services",
        "task_proxy_routing_endpoints",
        "task_proxy_routing_collisions",
        "task_proxy_unrouted_requests",
        "task_proxy_discovery_passes",
        "task_proxy_discovery_failed_passes",
        "task_proxy_discovery_pass_duration_seconds",
        "task_proxy_auth_decisions",
        "task_proxy_auth_cache_lookups",
        "task_proxy_auth_cluster_call_seconds",
    ] {
        assert!(families.contains_key(family), "no {family} in {families:?}");
    }
    assert!(
        metrics.contains(&format!(
            "task_proxy_requests_total{{service=\"{hash}\",protocol=\"http\",class=\"2xx\"}} 3"
        )),
        "{metrics}"
    );
    assert!(!metrics.contains("alice-token") && !metrics.contains("robot-token"));

    // The status page in a browser, with a screenshot to look at.
    let screenshot = test_support::workspace_root().join("target/status-page.png");
    let output = Command::new(test_support::tool("python3"))
        .arg(support::support_dir().join("browser_page.py"))
        .arg(format!("http://{}/", proxy.admin))
        .args(["--resolve", "MAP nothing.invalid 127.0.0.1"])
        .arg("--screenshot")
        .arg(&screenshot)
        .output()
        .expect("run the browser");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let page = String::from_utf8_lossy(&output.stdout);
    for expected in [
        domain.as_str(),
        operation.as_str(),
        "example_http_server",
        "healthy",
        "Discovery",
        "succeeded",
        "Auth",
        "allowed 3",
        "unauthenticated 1",
    ] {
        assert!(
            page.contains(expected),
            "no {expected:?} in the page: {page}"
        );
    }
    assert!(!page.contains("alice-token") && !page.contains("robot-token"));
    assert!(std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 1000));

    // The access log: JSON lines, one per request, the user named, no credential.
    let access_lines = |log: &str| -> Vec<serde_json::Value> {
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["target"] == "task_proxy::access")
            .collect()
    };
    // The log is read from the proxy's stderr as it comes: wait for the five lines.
    let log = test_support::wait_until("five access log lines", Duration::from_secs(5), || {
        let log = proxy.log();
        (access_lines(&log).len() >= 5).then_some(log)
    });
    let access = access_lines(&log);
    assert_eq!(access.len(), 5, "{log}");
    let alice = access
        .iter()
        .filter(|l| l["user"] == "alice" && l["status"] == 200 && l["service"] == domain.as_str())
        .count();
    assert_eq!(alice, 3, "{log}");
    assert!(access.iter().any(|l| l["status"] == 401));
    assert!(access.iter().any(|l| l["status"] == 404));
    assert!(access
        .iter()
        .all(|l| l["bytes"].is_u64() && l["duration_ms"].is_f64()));
    assert!(!log.contains("alice-token") && !log.contains("wrong-token"));
}
