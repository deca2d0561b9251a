//! Auth end to end: the real `task-proxy serve` binary with auth on, the dev cluster (its demo
//! users, an operation started by the real `yt` CLI), demo jobs behind it, and real clients:
//! curl, grpcurl and headless Chromium.

mod support;

use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use support::{curl, grpcurl, set_acl, status_of, AuthEnv as Env, BASE_DOMAIN};
use task_proxy::routing::service_hash;
use yt_devcluster::CommandKnob;

const LOGIN_URL: &str = "https://yt.example.net/login";

impl Env {
    async fn start(extra: &[&str]) -> Env {
        let mut flags = vec!["--auth-login-url", LOGIN_URL];
        flags.extend_from_slice(extra);
        Env::with(&["ui"], &flags).await
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy.plain)
    }

    /// The status curl gets from `service` at `path` with one extra header (or none).
    fn http_status(&self, service: &str, path: &str, header: Option<&str>) -> u16 {
        let host = format!("Host: {}", self.domain(service));
        let mut args = vec!["-H", host.as_str(), "--path-as-is"];
        if let Some(h) = header {
            args.extend(["-H", h]);
        }
        status_of(&self.url(path), &args)
    }

    /// grpcurl's result for `helloworld.Greeter/SayHello` with one extra header (or none):
    /// "OK" or the gRPC code name it printed.
    fn grpc_code(&self, header: Option<&str>) -> String {
        let mut args = vec!["-d", "{\"name\":\"auth\"}"];
        if let Some(h) = header {
            args.extend(["-H", h]);
        }
        grpc_outcome(grpcurl(
            self.proxy.plain,
            &self.domain("api"),
            &args,
            "helloworld.Greeter/SayHello",
        ))
    }

    fn counts(&self) -> (u64, u64) {
        let counts = self.cluster.request_counts();
        (
            counts.get("whoami").copied().unwrap_or(0),
            counts
                .get("check_operation_permission")
                .copied()
                .unwrap_or(0),
        )
    }
}

fn grpc_outcome((code, output): (i32, String)) -> String {
    if code == 0 {
        assert!(output.contains("Hello auth"), "{output}");
        return "OK".into();
    }
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix("Code: "))
        .map(str::to_string)
        .unwrap_or_else(|| format!("unexpected grpcurl output: {output}"))
}

const ALICE_OAUTH: &str = "Authorization: OAuth alice-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_of_users_and_credential_forms_over_http_and_grpc() {
    let env = Env::start(&["--auth-allow-ttl", "300ms", "--auth-deny-ttl", "300ms"]).await;
    let cases: &[(Option<&str>, u16, &str)] = &[
        (Some(ALICE_OAUTH), 200, "OK"),
        (Some("Authorization: oauth alice-token"), 200, "OK"),
        (Some("Cookie: YTCypressCookie=alice-cookie"), 200, "OK"),
        (Some("Cookie: YTCypressCookie alice-cookie"), 200, "OK"),
        (
            Some("Cookie: a=1; YTCypressCookie=\"alice-cookie\""),
            200,
            "OK",
        ),
        (Some("Authorization: OAuth bob-token"), 200, "OK"),
        (Some("Authorization: Bearer bob-iam"), 200, "OK"),
        (Some("Authorization: OAuth root-token"), 200, "OK"),
        (
            Some("Authorization: OAuth stranger-token"),
            401,
            "Unauthenticated",
        ),
        (
            Some("Authorization: Bearer not-a-token"),
            401,
            "Unauthenticated",
        ),
        (Some("Authorization: OAuth"), 401, "Unauthenticated"),
        (
            Some("Cookie: YTCypressCookie=wrong"),
            401,
            "Unauthenticated",
        ),
        (
            Some("Authorization: Basic YWxpY2U6eA=="),
            401,
            "Unauthenticated",
        ),
        (None, 401, "Unauthenticated"),
    ];
    for (header, http, grpc) in cases {
        assert_eq!(
            env.http_status("web", "/", *header),
            *http,
            "http {header:?}"
        );
        assert_eq!(env.grpc_code(*header), *grpc, "grpc {header:?}");
    }

    // bob loses read: 403 / PERMISSION_DENIED once his cached allow expires.
    set_acl(&env.cluster, &env.op, "[]");
    tokio::time::sleep(Duration::from_millis(400)).await;
    for bob in [
        "Authorization: OAuth bob-token",
        "Authorization: Bearer bob-iam",
    ] {
        assert_eq!(env.http_status("web", "/", Some(bob)), 403, "{bob}");
        assert_eq!(env.grpc_code(Some(bob)), "PermissionDenied", "{bob}");
    }
    assert_eq!(env.http_status("web", "/", Some(ALICE_OAUTH)), 200);

    // An unknown service: NOT_FOUND from the data plane, before auth.
    let (code, out) = grpcurl(
        env.proxy.plain,
        "00000000.tp.test",
        &["-H", ALICE_OAUTH, "-d", "{}"],
        "helloworld.Greeter/SayHello",
    );
    assert_eq!(grpc_outcome((code, out)), "NotFound");

    // The answers are what each caller needs.
    let host = format!("Host: {}", env.domain("web"));
    let (_, body) = curl(&["-i", "-H", &host, &env.url("/")]);
    assert!(
        body.contains("authentication required: no credentials"),
        "{body}"
    );
    assert!(
        body.to_ascii_lowercase().contains("www-authenticate:"),
        "{body}"
    );
    // A browser is sent to the portal's login, which returns to the URL asked for.
    let (_, page) = curl(&[
        "-i",
        "-H",
        &host,
        "-H",
        "Accept: text/html,application/xhtml+xml",
        &env.url("/"),
    ]);
    assert!(page.starts_with("HTTP/1.1 302"), "{page}");
    assert!(
        page.contains(&format!("location: http://{BASE_DOMAIN}/login?return=")),
        "{page}"
    );

    let metrics = env.proxy.metrics();
    for needle in [
        "task_proxy_auth_decisions_total{outcome=\"allowed\"}",
        "task_proxy_auth_decisions_total{outcome=\"denied\"}",
        "task_proxy_auth_cache_lookups_total{cache=\"decision\",result=\"hit\"}",
        "task_proxy_auth_cluster_call_seconds_count{call=\"whoami\",result=\"ok\"}",
    ] {
        assert!(metrics.contains(needle), "{needle} missing in:\n{metrics}");
    }
    for secret in ["alice-token", "alice-cookie", "bob-iam", "robot-token"] {
        assert!(!metrics.contains(secret));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_never_see_yt_credentials() {
    let env = Env::start(&[]).await;
    let host = format!("Host: {}", env.domain("web"));
    for credential in [
        ALICE_OAUTH,
        "Cookie: theme=dark; YTCypressCookie=alice-cookie; lang=en",
        "Cookie: YTCypressCookie alice-cookie",
    ] {
        let (_, body) = curl(&[
            "-H",
            &host,
            "-H",
            credential,
            "-H",
            "Cookie: session=xyz",
            "-H",
            "X-Custom: kept",
            &env.url("/headers"),
        ]);
        let echoed: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        let headers = echoed["headers"].to_string();
        // The login reaches the job (the identity headers), the credential never does.
        assert!(!headers.contains("alice-token"), "{credential}: {headers}");
        assert!(!headers.contains("alice-cookie"), "{credential}: {headers}");
        assert!(
            !headers.to_ascii_lowercase().contains("authorization"),
            "{headers}"
        );
        assert!(!headers.contains("YTCypressCookie"), "{headers}");
        assert!(headers.contains("session=xyz"), "{headers}");
        assert!(headers.contains("kept"), "{headers}");
        if credential.contains("theme") {
            assert!(headers.contains("theme=dark; lang=en"), "{headers}");
        }
    }
    // gRPC: the job's view of the metadata.
    for credential in [ALICE_OAUTH, "Cookie: YTCypressCookie alice-cookie; keep=1"] {
        let (code, out) = grpcurl(
            env.proxy.plain,
            &env.domain("api"),
            &["-H", credential, "-H", "x-custom: kept", "-d", "{}"],
            "demo.Inspect/Metadata",
        );
        assert_eq!(code, 0, "{out}");
        assert!(!out.contains("alice-token"), "{credential}: {out}");
        assert!(!out.contains("alice-cookie"), "{credential}: {out}");
        assert!(!out.contains("YTCypressCookie"), "{out}");
        assert!(
            !out.to_ascii_lowercase().contains("\"authorization\""),
            "{out}"
        );
        assert!(out.contains("kept"), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_requests_cost_one_lookup_each() {
    let env = Env::start(&[]).await;
    let host = format!("Host: {}", env.domain("web"));
    env.cluster.reset_request_counts();
    // 1,000 requests by alice over keep-alive connections (curl with many URLs).
    let url = env.url("/");
    for _ in 0..4 {
        let mut args = vec![
            "-H",
            host.as_str(),
            "-H",
            ALICE_OAUTH,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}\n",
        ];
        for _ in 0..250 {
            args.push(url.as_str());
        }
        let (_, out) = curl(&args);
        assert_eq!(out.lines().filter(|l| *l == "200").count(), 250, "{out}");
    }
    assert_eq!(env.counts(), (1, 1));

    // 100 concurrent first requests by root: one whoami, one check.
    env.cluster.reset_request_counts();
    let mut args = vec![
        "--parallel",
        "--parallel-immediate",
        "--parallel-max",
        "100",
        "-H",
        host.as_str(),
        "-H",
        "Authorization: OAuth root-token",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}\n",
    ];
    for _ in 0..100 {
        args.push(url.as_str());
    }
    let (_, out) = curl(&args);
    assert_eq!(out.lines().filter(|l| *l == "200").count(), 100, "{out}");
    assert_eq!(env.counts(), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_failures_grace_and_recovery() {
    let env = Env::start(&support::outage_auth_flags("2s")).await;
    assert_eq!(env.http_status("web", "/", Some(ALICE_OAUTH)), 200);
    assert_eq!(env.grpc_code(Some(ALICE_OAUTH)), "OK");

    let failing = CommandKnob {
        error_rate: 1.0,
        ..CommandKnob::default()
    };
    env.cluster.knobs().set("whoami", failing.clone());
    env.cluster
        .knobs()
        .set("check_operation_permission", failing);
    tokio::time::sleep(Duration::from_millis(400)).await;
    env.cluster.reset_request_counts();
    // Known users keep access within the grace period.
    for _ in 0..3 {
        assert_eq!(env.http_status("web", "/", Some(ALICE_OAUTH)), 200);
        assert_eq!(env.grpc_code(Some(ALICE_OAUTH)), "OK");
    }
    assert!(env.counts().0 >= 1, "the proxy tried the cluster");
    // New users get 503 with Retry-After, UNAVAILABLE over gRPC.
    let root = "Authorization: OAuth root-token";
    let host = format!("Host: {}", env.domain("web"));
    let (_, head) = curl(&["-i", "-H", &host, "-H", root, &env.url("/")]);
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: "),
        "{head}"
    );
    assert_eq!(env.grpc_code(Some(root)), "Unavailable");

    // Recovery.
    env.cluster.knobs().clear();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.http_status("web", "/", Some(root)), 200);
    assert_eq!(env.grpc_code(Some(root)), "OK");
    assert_eq!(env.http_status("web", "/", Some(ALICE_OAUTH)), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_paths_of_ui_services() {
    let env = Env::start(&[]).await;
    // A clean /static path of the `ui` service reaches the job without credentials.
    let host = format!("Host: {}", env.domain("ui"));
    let (_, body) = curl(&["-H", &host, &env.url("/static/app.js")]);
    assert!(body.contains("from demo job http-job"), "{body}");
    for path in [
        "/static/../headers",
        "/static/%2e%2e/headers",
        "/static/..%2fheaders",
        "//static/app.js",
        "/static//app.js",
        "/static/..;/headers",
        "/static",
        "/headers",
    ] {
        assert_eq!(env.http_status("ui", path, None), 401, "{path}");
    }
    // Only `ui` services skip.
    assert_eq!(env.http_status("web", "/static/app.js", None), 401);
}

fn browser_page(proxy: SocketAddr, url: &str, cookie: Option<&str>) -> String {
    let script = support::support_dir().join("browser_page.py");
    let mut command = std::process::Command::new(test_support::tool("python3"));
    command.arg(script).arg(url).arg("--resolve").arg(format!(
        "MAP *.{BASE_DOMAIN} {proxy}, MAP {BASE_DOMAIN} {proxy}"
    ));
    if let Some(c) = cookie {
        command.arg("--cookie").arg(c);
    }
    let output = command.output().expect("run the browser script");
    assert!(
        output.status.success(),
        "browser failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_with_and_without_the_session_cookie() {
    let env = Env::start(&[]).await;
    let url = format!("http://{}/", env.domain("web"));
    let page = browser_page(env.proxy.plain, &url, Some("YTCypressCookie=alice-cookie"));
    assert!(page.contains("demo job http-job"), "{page}");
    // Without it, the portal's login page (on the base domain): a token form and the link to
    // the YTsaurus UI.
    let page = browser_page(env.proxy.plain, &url, None);
    assert!(page.contains("name=\"token\""), "{page}");
    assert!(page.contains(LOGIN_URL), "{page}");
}

/// What `n` requests with fresh random OAuth tokens got, sent by `concurrency` clients over
/// HTTP/1.1 (the relay) or HTTP/2 with prior knowledge (hyper's path): (status, Retry-After)
/// per request, and how long the flood took.
async fn fresh_token_flood(
    env: &Env,
    service: &str,
    n: usize,
    concurrency: usize,
    http2: bool,
) -> (Vec<(u16, Option<String>)>, Duration) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(http2)
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let url = env.url("/");
    // HTTP/2 names the service by x-yt-taskproxy-id: the client's :authority is the proxy's
    // address (a Host header beside it would be refused).
    let (name, value) = if http2 {
        ("x-yt-taskproxy-id", service_hash(&env.op, "main", service))
    } else {
        ("host", env.domain(service))
    };
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|i| {
            let (client, url, value) = (client.clone(), url.clone(), value.clone());
            let count = n / concurrency + usize::from(i < n % concurrency);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for _ in 0..count {
                    let token = format!("OAuth flood-{:016x}", rand::random::<u64>());
                    let request = http::Request::get(&url)
                        .header(name, &value)
                        .header("authorization", token)
                        .body(http_body_util::Empty::new())
                        .expect("request");
                    let response = client.request(request).await.expect("an answer");
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    seen.push((response.status().as_u16(), retry_after));
                    let _ = http_body_util::BodyExt::collect(response.into_body()).await;
                }
                seen
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("flood client"));
    }
    (all, started.elapsed())
}

/// The value of the metric line that starts with `series` (0 when absent).
fn metric_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_token_floods_are_limited_per_client_and_known_users_keep_access() {
    // The defaults: 20 look-ups/s, burst 40, per client; 200/s overall.
    let env = Env::start(&[]).await;
    let alice = [("authorization", "OAuth alice-token")];
    assert_eq!(env.http_status("web", "/", Some(ALICE_OAUTH)), 200);
    // alice (cached) under load over both protocols throughout.
    let load = support::load::Load::start_with_headers(
        env.proxy.plain,
        &env.domain("web"),
        "/",
        &alice,
        2,
        Duration::from_millis(5),
    );
    let mut limited_total = 0;
    for http2 in [false, true] {
        // A full bucket for the next flood (40 at 20/s).
        tokio::time::sleep(Duration::from_millis(2500)).await;
        env.cluster.reset_request_counts();
        let (answers, took) = fresh_token_flood(&env, "web", 300, 20, http2).await;
        let whoami = env.counts().0;
        let limited: Vec<_> = answers.iter().filter(|(s, _)| *s == 429).collect();
        let unauthenticated = answers.iter().filter(|(s, _)| *s == 401).count();
        eprintln!(
            "http2={http2}: 300 fresh tokens in {took:?}: {} x 429, {unauthenticated} x 401, \
             {whoami} whoami calls",
            limited.len()
        );
        assert_eq!(limited.len() + unauthenticated, 300, "{answers:?}");
        assert!(limited.len() >= 200, "{answers:?}");
        assert!(
            limited
                .iter()
                .all(|(_, retry)| retry.as_deref().and_then(|r| r.parse::<u32>().ok()) >= Some(1)),
            "{limited:?}"
        );
        // Every look-up the limiter let through is one whoami; at most the burst plus the
        // rate over the flood's duration.
        let bound = 40 + (20.0 * took.as_secs_f64()).ceil() as u64 + 1;
        assert_eq!(whoami, unauthenticated as u64, "one whoami per 401");
        assert!(whoami <= bound, "{whoami} whoami calls > {bound}");
        limited_total += limited.len();
    }
    let report = load.stop().await;
    assert!(report.ok > 0, "{report:?}");
    assert!(report.failures.is_empty(), "alice refused: {report:?}");
    let metrics = env.proxy.metrics();
    let limited_metric = metric_value(
        &metrics,
        "task_proxy_auth_new_credential_lookups_total{result=\"limited_client\"}",
    );
    assert_eq!(limited_metric as usize, limited_total, "{metrics}");
    assert!(
        metric_value(
            &metrics,
            "task_proxy_auth_new_credential_lookups_total{result=\"made\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        metric_value(
            &metrics,
            "task_proxy_auth_decisions_total{outcome=\"limited\"}"
        ) as usize
            == limited_total,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overall_lookup_limit_answers_503_with_retry_after() {
    let env = Env::start(&[
        "--auth-lookup-rate-per-client",
        "0",
        "--auth-lookup-rate",
        "1",
        "--auth-lookup-burst",
        "10",
    ])
    .await;
    assert_eq!(env.http_status("web", "/", Some(ALICE_OAUTH)), 200);
    env.cluster.reset_request_counts();
    let (answers, took) = fresh_token_flood(&env, "web", 100, 10, false).await;
    let unavailable: Vec<_> = answers.iter().filter(|(s, _)| *s == 503).collect();
    let whoami = env.counts().0;
    eprintln!(
        "100 fresh tokens in {took:?}: {} x 503, {whoami} whoami calls",
        unavailable.len()
    );
    assert!(unavailable.len() >= 80, "{answers:?}");
    assert!(unavailable.iter().all(|(_, r)| r.is_some()), "{answers:?}");
    assert!(
        whoami <= 10 + took.as_secs_f64().ceil() as u64 + 1,
        "{whoami}"
    );
    // Known users are not limited.
    assert_eq!(env.http_status("web", "/", Some(ALICE_OAUTH)), 200);
    assert_eq!(env.grpc_code(Some(ALICE_OAUTH)), "OK");
    // gRPC callers with new credentials get UNAVAILABLE (the bucket refills one a second).
    let mut grpc_limited = 0;
    for i in 0..2 {
        let code = env.grpc_code(Some(&format!("Authorization: OAuth grpc-flood-{i}")));
        assert!(
            ["Unavailable", "Unauthenticated"].contains(&code.as_str()),
            "{code}"
        );
        grpc_limited += usize::from(code == "Unavailable");
    }
    assert!(grpc_limited >= 1);
    let metrics = env.proxy.metrics();
    assert_eq!(
        metric_value(
            &metrics,
            "task_proxy_auth_new_credential_lookups_total{result=\"limited_overall\"}"
        ) as usize,
        unavailable.len() + grpc_limited,
        "{metrics}"
    );
}

/// A banned cluster proxy answers 503 with `Retry-After: 60`; an uncached user still gets the
/// proxy's 503 within the auth timeout, not after a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_cluster_proxy_answers_uncached_users_within_the_auth_timeout() {
    let env = Env::start(&["--auth-timeout", "2s"]).await;
    env.cluster.knobs().set(
        "whoami",
        CommandKnob {
            banned: true,
            ..CommandKnob::default()
        },
    );
    let host = format!("Host: {}", env.domain("web"));
    let started = std::time::Instant::now();
    let (_, head) = curl(&[
        "-i",
        "-m",
        "90",
        "-H",
        &host,
        "-H",
        "Authorization: OAuth root-token",
        &env.url("/"),
    ]);
    let took = started.elapsed();
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(env.counts().0 >= 1, "the proxy asked the cluster");
    env.cluster.knobs().clear();
}

/// A cluster that refuses `Authorization: Bearer` (code 111, "Malformed Authorization
/// header") gives the caller a 401 that says so, without retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_refusing_bearer_tokens_gives_a_clear_401() {
    let env = Env::start(&[]).await;
    env.cluster.knobs().set(
        "*",
        CommandKnob {
            reject_bearer: true,
            ..CommandKnob::default()
        },
    );
    env.cluster.reset_request_counts();
    let host = format!("Host: {}", env.domain("web"));
    let (_, out) = curl(&[
        "-i",
        "-H",
        &host,
        "-H",
        "Authorization: Bearer bob-iam",
        &env.url("/"),
    ]);
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    assert!(out.contains("does not accept Bearer tokens"), "{out}");
    assert_eq!(env.counts().0, 1, "one whoami, not retried");
    // OAuth still works.
    assert_eq!(env.http_status("web", "/", Some(ALICE_OAUTH)), 200);
}

/// A cluster without `check_operation_permission` (an older server: 404 "Command ... is not
/// registered", and missing from `/api/v4`) is detected on first use: a 503 that names the
/// requirement, and `/readyz` failing with the same reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_the_permission_command_fails_readiness_with_the_reason() {
    let env = Env::start(&[]).await;
    let readyz = format!("http://{}/readyz", env.proxy.admin);
    assert_eq!(status_of(&readyz, &[]), 200);
    env.cluster.knobs().set(
        "check_operation_permission",
        CommandKnob {
            unregistered: true,
            ..CommandKnob::default()
        },
    );
    let host = format!("Host: {}", env.domain("web"));
    for _ in 0..2 {
        let (_, out) = curl(&["-i", "-H", &host, "-H", ALICE_OAUTH, &env.url("/")]);
        assert!(out.starts_with("HTTP/1.1 503"), "{out}");
        assert!(out.contains("check_operation_permission"), "{out}");
    }
    assert_eq!(env.counts().1, 1, "asked once, then known");
    let (_, out) = curl(&["-i", &readyz]);
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(out.contains("check_operation_permission"), "{out}");
}
