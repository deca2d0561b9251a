//! Sticky sessions end to end: the dev cluster runs a vanilla operation (started with the real
//! `yt` CLI) whose task `web` has three demo echo jobs behind a service with `sticky=%true`
//! and whose task `spread` has three behind one without; the discovering proxy routes them;
//! curl with a cookie jar is the browser. The echo's `/headers` names the job that answered
//! and shows the cookies it got.

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::{curl, Proxy, BASE_DOMAIN};
use task_proxy::routing::service_hash;
use test_support::wait_until;

/// One answer of the echo: the job, the cookies it got, and the `Set-Cookie` lines the caller
/// got.
#[derive(Debug)]
struct Echo {
    job: String,
    local_port: u16,
    cookies: Vec<String>,
    set_cookies: Vec<String>,
}

struct Env {
    cluster: yt_devcluster::DevCluster,
    proxy: Proxy,
    op: String,
    dir: tempfile::TempDir,
}

impl Env {
    async fn start() -> Env {
        let bin = env!("CARGO_BIN_EXE_task-proxy");
        assert!(!bin.contains('\''), "{bin}");
        let command = format!("exec '{bin}' demo-job http --port ${{YT_PORT_0}}");
        let tasks = format!(
            "{{web={{job_count=3; port_count=1; command=\"{command}\"}}; \
              spread={{job_count=3; port_count=1; command=\"{command}\"}}}}"
        );
        let spec = "{annotations={task_proxy={enabled=%true; tasks_info={\
                    web={app={port_index=0; sticky=%true}}; spread={app={port_index=0}}}}}}";
        let cluster = support::dev_cluster().await;
        let op = support::start_operation(&cluster, &tasks, spec);
        let proxy = support::discovering_proxy(
            &cluster.url(),
            &[
                "--auth-enabled=false".into(),
                "--discovery-period-seconds".into(),
                "1".into(),
            ],
        );
        let env = Env {
            cluster,
            proxy,
            op,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        for task in ["web", "spread"] {
            wait_until(
                &format!("three answering jobs of {task}"),
                Duration::from_secs(60),
                || {
                    let jobs: BTreeSet<String> = (0..12)
                        .filter_map(|_| env.try_get(task, &[]).map(|e| e.job))
                        .collect();
                    (env.endpoints(task).len() == 3 && jobs.len() >= 2).then_some(())
                },
            );
        }
        env
    }

    fn domain(&self, task: &str) -> String {
        format!("{}.{BASE_DOMAIN}", service_hash(&self.op, task, "app"))
    }

    fn service(&self, task: &str) -> Value {
        let (_, body) = self.proxy.admin_get("/services");
        let services: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        services["services"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["operation_id"] == self.op.as_str() && s["task_name"] == task)
            .cloned()
            .unwrap_or(Value::Null)
    }

    fn endpoints(&self, task: &str) -> Vec<String> {
        self.service(task)["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["address"].as_str().map(str::to_string))
            .collect()
    }

    fn jar(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `GET /headers` of `task`'s service with curl `args`; None unless a 200 from a job.
    fn try_get(&self, task: &str, args: &[&str]) -> Option<Echo> {
        let host = format!("Host: {}", self.domain(task));
        let url = format!("http://{}/headers", self.proxy.plain);
        let mut all = vec!["--max-time", "20", "-i", "-H", host.as_str()];
        all.extend_from_slice(args);
        all.push(&url);
        let (code, out) = curl(&all);
        let (head, body) = out.split_once("\r\n\r\n")?;
        if code != 0 || !head.contains(" 200") {
            return None;
        }
        let echoed: Value = serde_json::from_str(body).ok()?;
        let set_cookies = head
            .lines()
            .filter_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("set-cookie")
                    .then(|| value.trim().to_string())
            })
            .collect();
        let cookies = echoed["header_list"]
            .as_array()?
            .iter()
            .filter(|pair| {
                pair[0]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case("cookie"))
            })
            .filter_map(|pair| pair[1].as_str().map(str::to_string))
            .collect();
        let local_port = echoed["local_addr"]
            .as_str()?
            .rsplit(':')
            .next()?
            .parse()
            .ok()?;
        Some(Echo {
            job: echoed["job"].as_str()?.to_string(),
            local_port,
            cookies,
            set_cookies,
        })
    }

    fn get(&self, task: &str, args: &[&str]) -> Echo {
        self.try_get(task, args)
            .unwrap_or_else(|| panic!("GET {task} {args:?} failed\n{}", self.proxy.log()))
    }
}

/// The affinity token curl keeps in `jar` (None when it has none).
fn jar_token(jar: &Path) -> Option<String> {
    let text = std::fs::read_to_string(jar).ok()?;
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split('\t').collect();
        // `#HttpOnly_<domain>`: the cookie is HttpOnly.
        (fields.len() == 7 && fields[5] == "tp_affinity").then(|| {
            assert!(line.starts_with("#HttpOnly_"), "{line}");
            assert_eq!(fields[1], "FALSE", "host-only: {line}");
            fields[6].to_string()
        })
    })
}

/// No cookie of the proxy's reached the job.
fn no_affinity_cookie(echo: &Echo) {
    assert!(
        echo.cookies.iter().all(|c| !c.contains("tp_affinity")),
        "the job saw the affinity cookie: {echo:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_sticks_to_one_job_moves_once_when_it_dies_and_the_job_never_sees_the_cookie() {
    let env = Env::start().await;
    assert_eq!(env.service("web")["sticky"], true);
    assert_eq!(env.service("spread")["sticky"], false);

    // A browser: 50 requests with a cookie jar, each on a new connection (the relay).
    let jar = env.jar("browser");
    let jar_s = jar.to_str().expect("utf-8");
    let jar_args = ["-b", jar_s, "-c", jar_s];
    let first = env.get("web", &jar_args);
    assert_eq!(first.set_cookies.len(), 1, "{first:?}");
    let set = &first.set_cookies[0];
    assert!(
        set.starts_with("tp_affinity=")
            && set.contains("HttpOnly")
            && set.contains("SameSite=Lax")
            && set.contains("Path=/")
            && !set.to_ascii_lowercase().contains("domain="),
        "{set}"
    );
    let token = jar_token(&jar).expect("the affinity cookie in the jar");
    assert_eq!(token.len(), 22, "{token}");
    for address in env.endpoints("web") {
        let port = address.rsplit(':').next().unwrap_or_default();
        assert!(!token.contains(port), "the token names no port: {token}");
    }
    for i in 1..50 {
        let echo = env.get("web", &jar_args);
        assert_eq!(echo.job, first.job, "request {i} left the job");
        assert!(echo.set_cookies.is_empty(), "request {i}: {echo:?}");
        no_affinity_cookie(&echo);
    }
    // Other cookies reach the job, ours never does, in any spelling a job's parser may split.
    let cookie_headers = [
        format!("Cookie: a=1; tp_affinity={token}; b=2"),
        format!("Cookie: a=1, tp_affinity={token}"),
        format!("Cookie: a=1 tp_affinity={token}; b=2"),
        format!("Cookie: __Host-tp_affinity={token}; b=2"),
    ];
    for header in &cookie_headers {
        let echo = env.get("web", &["-H", header]);
        no_affinity_cookie(&echo);
        assert!(
            echo.cookies
                .iter()
                .any(|c| c.contains("b=2") || c.contains("a=1")),
            "{echo:?}"
        );
    }
    // Both of hyper's paths read the same cookie: an HTTP/1.1 chunked upload and h2c.
    for (what, extra) in [
        (
            "hyper HTTP/1.1",
            vec!["-H", "Transfer-Encoding: chunked", "--data-binary", "x=1"],
        ),
        ("h2c", vec!["--http2-prior-knowledge"]),
    ] {
        for _ in 0..10 {
            let mut args = jar_args.to_vec();
            args.extend_from_slice(&extra);
            let echo = env.get("web", &args);
            assert_eq!(echo.job, first.job, "{what}");
            assert!(echo.set_cookies.is_empty(), "{what}: {echo:?}");
            no_affinity_cookie(&echo);
        }
    }

    // A WebSocket handshake goes by the cookie too: the job it names switches protocols (any
    // other would come with a replacement cookie); without a cookie the 101 sets one.
    let ws = |args: &[&str]| -> String {
        let host = format!("Host: {}", env.domain("web"));
        let url = format!("http://{}/ws", env.proxy.plain);
        let mut all = vec!["-i", "--max-time", "2", "-H", host.as_str()];
        all.extend_from_slice(&support::WEBSOCKET_HANDSHAKE);
        all.extend_from_slice(args);
        all.push(&url);
        // curl waits on the open tunnel until --max-time: only the head matters.
        curl(&all).1
    };
    let with_cookie = ws(&["-b", jar_s]);
    assert!(with_cookie.starts_with("HTTP/1.1 101"), "{with_cookie}");
    assert!(
        !with_cookie.to_ascii_lowercase().contains("set-cookie"),
        "{with_cookie}"
    );
    let without = ws(&[]);
    assert!(without.starts_with("HTTP/1.1 101"), "{without}");
    assert!(without.contains("tp_affinity="), "{without}");

    // A forged, tampered or garbage cookie is ignored: a normal pick and a new cookie.
    let mut tampered: Vec<char> = token.chars().collect();
    tampered[3] = if tampered[3] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    for value in [tampered.as_str(), "AAAAAAAAAAAAAAAAAAAAAA", "%%garbage", ""] {
        let header = format!("Cookie: tp_affinity={value}");
        for extra in [&[][..], &["--http2-prior-knowledge"][..]] {
            let mut args = vec!["-H", header.as_str()];
            args.extend_from_slice(extra);
            let echo = env.get("web", &args);
            assert_eq!(echo.set_cookies.len(), 1, "{value:?} {extra:?}: {echo:?}");
            assert!(!echo.set_cookies[0].contains(value) || value.is_empty());
            no_affinity_cookie(&echo);
        }
    }

    // h2 sticks from its own first request too.
    let h2_jar = env.jar("h2");
    let h2_jar_s = h2_jar.to_str().expect("utf-8");
    let h2_args = ["--http2-prior-knowledge", "-b", h2_jar_s, "-c", h2_jar_s];
    let h2_first = env.get("web", &h2_args);
    assert_eq!(h2_first.set_cookies.len(), 1, "{h2_first:?}");
    for _ in 0..20 {
        assert_eq!(env.get("web", &h2_args).job, h2_first.job);
    }

    // A service that is not sticky spreads, and sets no cookie.
    let plain_jar = env.jar("plain");
    let plain_jar_s = plain_jar.to_str().expect("utf-8");
    let mut spread_jobs = BTreeSet::new();
    for _ in 0..30 {
        let echo = env.get("spread", &["-b", plain_jar_s, "-c", plain_jar_s]);
        assert!(echo.set_cookies.is_empty(), "{echo:?}");
        spread_jobs.insert(echo.job);
    }
    assert!(spread_jobs.len() >= 2, "{spread_jobs:?}");
    assert_eq!(jar_token(&plain_jar), None);

    // The job dies: the next request goes to exactly one other job, and the cookie is replaced.
    let pid = test_support::listener_pid(first.local_port).expect("the sticky job's pid");
    assert!(
        test_support::signal_process(pid as u32, "KILL"),
        "kill the job"
    );
    let killed = std::time::Instant::now();
    let moved = env.get("web", &jar_args);
    eprintln!(
        "the first request after the kill was answered by another job in {:?}",
        killed.elapsed()
    );
    assert_ne!(moved.job, first.job);
    assert_eq!(
        moved.set_cookies.len(),
        1,
        "a replacement cookie: {moved:?}"
    );
    let replaced = jar_token(&jar).expect("the replacement in the jar");
    assert_ne!(replaced, token);
    for i in 0..30 {
        let echo = env.get("web", &jar_args);
        assert_eq!(echo.job, moved.job, "request {i} after the move");
        assert!(echo.set_cookies.is_empty(), "request {i}: {echo:?}");
    }
    // Still with the new job once discovery has followed the replacement of the dead one.
    wait_until("the dead job replaced", Duration::from_secs(30), || {
        let now = env.endpoints("web");
        (now.len() == 3
            && !now
                .iter()
                .any(|a| a.ends_with(&format!(":{}", first.local_port))))
        .then_some(())
    });
    for _ in 0..10 {
        assert_eq!(env.get("web", &jar_args).job, moved.job);
    }
    env.cluster.shutdown().await;
}

/// gRPC is balanced as before: no cookie is set on its responses even for a sticky service,
/// and an affinity cookie a client sends anyway never reaches the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_get_no_affinity_cookie_and_never_forward_one() {
    let (a, b) = (
        demo_services::spawn_grpc("grpc-a").await,
        demo_services::spawn_grpc("grpc-b").await,
    );
    let op = "op-sticky-grpc";
    let service = serde_json::json!({"operation_id": op, "task_name": "main", "service": "api",
        "protocol": "grpc", "sticky": true,
        "endpoints": [a.addr.to_string(), b.addr.to_string()]});
    let proxy = support::proxy_with_services(
        Value::Array(vec![service]),
        &["--auth-enabled=false".to_string()],
    );
    let domain = format!("{}.{BASE_DOMAIN}", service_hash(op, "main", "api"));
    let mut jobs = BTreeSet::new();
    for cookie in [
        None,
        Some("Cookie: a=1; tp_affinity=AAAAAAAAAAAAAAAAAAAAAA"),
    ] {
        for _ in 0..10 {
            let mut args = vec!["-v", "-d", "{}"];
            if let Some(cookie) = cookie {
                args.extend(["-H", cookie]);
            }
            let (code, out) =
                support::grpcurl(proxy.plain, &domain, &args, "demo.Inspect/Metadata");
            assert_eq!(code, 0, "{out}");
            // `-v` prints the request's metadata first; what came back follows.
            let received = out
                .split_once("Response headers received:")
                .map(|(_, r)| r)
                .unwrap_or_else(|| panic!("{out}"));
            assert!(
                !received.to_ascii_lowercase().contains("set-cookie"),
                "{out}"
            );
            assert!(!received.contains("tp_affinity"), "{out}");
            if cookie.is_some() {
                assert!(received.contains("a=1"), "{out}");
            }
            jobs.extend(["grpc-a", "grpc-b"].into_iter().filter(|j| out.contains(j)));
        }
    }
    assert_eq!(jobs.len(), 2, "gRPC calls are spread: {jobs:?}");
}
