//! Auth end to end: the real `task-proxy serve` binary with auth on, the dev cluster (its demo
//! users, an operation started by the real `yt` CLI), demo jobs behind it, and real clients:
//! curl, grpcurl and headless Chromium.

mod support;

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use support::{
    curl, dev_cluster, grpcurl, set_acl, start_operation, status_of, Proxy, BASE_DOMAIN, BOB_READS,
};
use task_proxy::routing::service_hash;
use yt_devcluster::{CommandKnob, DevCluster};

const TASKS: &str = "{main={command=\"sleep 1000\";job_count=1;port_count=1}}";
const LOGIN_URL: &str = "https://yt.example.net/login";

struct Env {
    cluster: DevCluster,
    op: String,
    proxy: Proxy,
    _http_job: demo_services::Running,
    _grpc_job: demo_services::Running,
}

impl Env {
    async fn start(extra: &[&str]) -> Env {
        let cluster = dev_cluster().await;
        let op = start_operation(&cluster, TASKS, BOB_READS);
        let http_job = demo_services::spawn_http("http-job").await;
        let grpc_job = demo_services::spawn_grpc("grpc-job").await;
        let services = json!([
            {"operation_id": op, "task_name": "main", "service": "web", "protocol": "http",
             "endpoints": [http_job.addr.to_string()]},
            {"operation_id": op, "task_name": "main", "service": "ui", "protocol": "http",
             "endpoints": [http_job.addr.to_string()]},
            {"operation_id": op, "task_name": "main", "service": "api", "protocol": "grpc",
             "endpoints": [grpc_job.addr.to_string()]},
        ]);
        let mut flags: Vec<String> = vec![
            "--yt-proxy".into(),
            cluster.url(),
            "--yt-token".into(),
            "robot-token".into(),
            "--auth-login-url".into(),
            LOGIN_URL.into(),
        ];
        flags.extend(extra.iter().map(|s| s.to_string()));
        let proxy = Proxy::start(services, &flags);
        Env {
            cluster,
            op,
            proxy,
            _http_job: http_job,
            _grpc_job: grpc_job,
        }
    }

    fn domain(&self, service: &str) -> String {
        format!("{}.{BASE_DOMAIN}", service_hash(&self.op, "main", service))
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
    let (_, page) = curl(&[
        "-H",
        &host,
        "-H",
        "Accept: text/html,application/xhtml+xml",
        &env.url("/"),
    ]);
    assert!(page.contains(&format!("href=\"{LOGIN_URL}\"")), "{page}");

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
        assert!(!headers.contains("alice"), "{credential}: {headers}");
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
        assert!(!out.contains("alice"), "{credential}: {out}");
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
    let env = Env::start(&[
        "--auth-identity-ttl",
        "300ms",
        "--auth-allow-ttl",
        "300ms",
        "--auth-grace",
        "60s",
        "--auth-failure-hold",
        "200ms",
        "--auth-timeout",
        "2s",
    ])
    .await;
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
    command
        .arg(script)
        .arg(url)
        .arg("--resolve")
        .arg(format!("MAP *.{BASE_DOMAIN} {proxy}"));
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
    let page = browser_page(env.proxy.plain, &url, None);
    assert!(page.contains("Log in required"), "{page}");
    assert!(page.contains(LOGIN_URL), "{page}");
}
