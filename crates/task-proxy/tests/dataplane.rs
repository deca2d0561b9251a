//! The data plane end to end: the real `task-proxy` binary, demo jobs as upstreams, and real
//! clients (curl, grpcurl, a WebSocket client) in front.

mod support;

use demo_services::{spawn_grpc, spawn_http, Running, JOB_HEADER};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use task_proxy::routing::service_hash;
use test_support::{body_of, curl_async as curl, tool, wait_for, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

const BASE: &str = "tp.test";

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_task-proxy"))
}

/// A service of the services file.
struct Svc<'a> {
    op: &'a str,
    protocol: &'a str,
    endpoints: Vec<String>,
}

impl Svc<'_> {
    fn hash(&self) -> String {
        service_hash(self.op, "task", "svc")
    }
    fn domain(&self) -> String {
        format!("{}.{BASE}", self.hash())
    }
}

fn services_json(services: &[Svc]) -> String {
    let items: Vec<_> = services
        .iter()
        .map(|s| {
            serde_json::json!({"operation_id": s.op, "task_name": "task", "service": "svc",
                "protocol": s.protocol, "endpoints": s.endpoints})
        })
        .collect();
    serde_json::json!({ "services": items }).to_string()
}

struct Env {
    proxy: Proxy,
}

impl Env {
    fn url(&self, path: &str) -> String {
        self.proxy.url(path)
    }
}

fn builder(services: &[Svc], extra: &[&str]) -> test_support::ProxyBuilder {
    let services: serde_json::Value =
        serde_json::from_str(&services_json(services)).expect("services JSON");
    let services = services["services"].as_array().cloned().unwrap_or_default();
    Proxy::builder()
        .services(&services)
        .flags(&["--auth-enabled=false"])
        .flags(extra)
}

/// The proxy in process.
fn start(services: &[Svc], extra: &[&str]) -> Env {
    Env {
        proxy: builder(services, extra).start(),
    }
}

/// The proxy as the real binary, for tests that need its process (signals, log, memory).
fn start_binary(services: &[Svc], extra: &[&str]) -> Env {
    Env {
        proxy: builder(services, extra).binary_at(binary()).start(),
    }
}

fn addr(job: &Running) -> String {
    job.addr.to_string()
}

/// A raw exchange on a new TCP connection: what the proxy answers to `request`.
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_http1_and_h2c_balances_and_rewrites() {
    let (a, b) = (spawn_http("job-a").await, spawn_http("job-b").await);
    let svc = Svc {
        op: "op-http",
        protocol: "http",
        endpoints: vec![addr(&a), addr(&b)],
    };
    let env = start(std::slice::from_ref(&svc), &[]);
    let (hash, domain) = (svc.hash(), svc.domain());
    let id_header = format!("x-yt-taskproxy-id: {hash}");
    let host_header = format!("Host: {domain}");

    // By x-yt-taskproxy-id, over HTTP/1.1; balanced across both jobs.
    let mut jobs = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let (code, text) = curl(&["-i", "-H", &id_header, &env.url("/")]).await;
        assert_eq!(code, 200, "{text}");
        jobs.insert(header(&text, JOB_HEADER).unwrap_or("").to_string());
    }
    assert_eq!(jobs.len(), 2, "both jobs answer: {jobs:?}");

    // By Host (any case, port ignored), over h2c with prior knowledge.
    let port = env.proxy.plain.port();
    let resolve = format!("{}:{port}:127.0.0.1", domain.to_uppercase());
    let url = format!("http://{}:{port}/", domain.to_uppercase());
    let (code, text) = curl(&[
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "--resolve",
        &resolve,
        &url,
    ])
    .await;
    assert_eq!(code, 200);
    assert!(
        text.ends_with("\t2 0") || text.contains("\t2 "),
        "HTTP/2 used: {text}"
    );

    // Headers reaching the job: hop-by-hop gone, X-Forwarded-* set, Host kept.
    let (code, text) = curl(&[
        "-H",
        &host_header,
        "-H",
        "Connection: keep-alive, X-Hop",
        "-H",
        "X-Hop: secret",
        "-H",
        "Keep-Alive: timeout=5",
        "-H",
        "Proxy-Authorization: Basic eA==",
        "-H",
        "X-Forwarded-For: 192.0.2.1",
        &env.url("/headers"),
    ])
    .await;
    assert_eq!(code, 200, "{text}");
    let seen: serde_json::Value = serde_json::from_str(body_of(&text)).expect("json");
    let h = &seen["headers"];
    for gone in ["x-hop", "keep-alive", "proxy-authorization", "connection"] {
        assert!(h.get(gone).is_none(), "{gone} reached the job: {h}");
    }
    assert_eq!(h["x-forwarded-for"], "192.0.2.1, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], domain.as_str());
    assert_eq!(h["host"], domain.as_str());

    // The same over HTTP/2: :authority becomes the job's Host.
    let (code, text) = curl(&[
        "--http2-prior-knowledge",
        "--resolve",
        &format!("{domain}:{port}:127.0.0.1"),
        &format!("http://{domain}:{port}/headers"),
    ])
    .await;
    assert_eq!(code, 200);
    let seen: serde_json::Value = serde_json::from_str(body_of(&text)).expect("json");
    assert_eq!(seen["headers"]["host"], format!("{domain}:{port}"));
    assert_eq!(seen["version"], "HTTP/1.1");

    // Trailers pass: to HTTP/1.1 callers that ask (TE: trailers), and to HTTP/2 callers.
    let (code, text) = curl(&[
        "--raw",
        "-H",
        "TE: trailers",
        "-H",
        &host_header,
        &env.url("/trailers"),
    ])
    .await;
    assert_eq!(code, 200);
    assert!(text.contains("x-demo-trailer: done"), "{text}");
    let (code, text) = curl(&[
        "-i",
        "--http2-prior-knowledge",
        "-H",
        &id_header,
        &env.url("/trailers"),
    ])
    .await;
    assert_eq!(code, 200);
    assert!(text.contains("x-demo-trailer: done"), "{text}");

    // A redirect to the job's own address comes back on the service domain.
    let (code, text) = curl(&["-i", "-H", &host_header, &env.url("/redirect")]).await;
    assert_eq!(code, 302);
    assert_eq!(
        header(&text, "location"),
        Some(format!("http://{domain}/target").as_str())
    );

    // Unknown and malformed route keys.
    let (code, text) = curl(&["-H", "x-yt-taskproxy-id: 0badf00d", &env.url("/")]).await;
    assert_eq!((code, text.contains("no such task")), (404, true), "{text}");
    let (code, _) = curl(&["-H", &format!("Host: ffffffff.{BASE}"), &env.url("/")]).await;
    assert_eq!(code, 404);
    let (code, text) = curl(&["-H", &format!("Host: {BASE}"), &env.url("/")]).await;
    assert_eq!(code, 400, "{text}");
    let (code, _) = curl(&["-H", &format!("Host: abc.{BASE}"), &env.url("/")]).await;
    assert_eq!(code, 400);
    let (code, _) = curl(&["-H", "x-yt-taskproxy-id: 123", &env.url("/")]).await;
    assert_eq!(code, 400);

    // Admin.
    assert_eq!(env.proxy.admin_get("/healthz").0, 200);
    let (code, services) = env.proxy.admin_get("/services");
    assert_eq!(code, 200);
    let services: serde_json::Value = serde_json::from_str(&services).expect("services json");
    let s = &services["services"][0];
    assert_eq!(s["hash"], hash.as_str());
    assert_eq!(s["domain"], domain.as_str());
    assert_eq!(s["operation_id"], "op-http");
    assert_eq!(s["protocol"], "http");
    assert_eq!(s["endpoints"].as_array().map(Vec::len), Some(2));
    assert_eq!(s["endpoints"][0]["healthy"], true);
    let (code, metrics) = env.proxy.admin_get("/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains(&format!(
            "task_proxy_requests_total{{service=\"{hash}\",protocol=\"http\",class=\"2xx\"}}"
        )),
        "{metrics}"
    );
    assert!(metrics.contains("task_proxy_routing_services 1"));
    assert!(metrics.contains("task_proxy_unrouted_requests_total{reason=\"no_such_task\"} 2"));
    assert!(metrics.contains("task_proxy_upstream_latency_seconds_bucket"));
    assert_eq!(env.proxy.admin_get("/").0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_streaming_and_reflection_through_grpcurl() {
    let (a, b) = (spawn_grpc("grpc-a").await, spawn_grpc("grpc-b").await);
    let svc = Svc {
        op: "op-grpc",
        protocol: "grpc",
        endpoints: vec![addr(&a), addr(&b)],
    };
    let dead = Svc {
        op: "op-grpc-dead",
        protocol: "grpc",
        endpoints: vec!["127.0.0.1:1".into()],
    };
    let env = start(&[svc, dead], &[]);
    let svc = Svc {
        op: "op-grpc",
        protocol: "grpc",
        endpoints: vec![],
    };
    let target = env.proxy.plain.to_string();
    let domain = svc.domain();
    let grpcurl = |args: Vec<String>| async move {
        let out = Command::new(tool("grpcurl"))
            .args(&args)
            .output()
            .await
            .expect("run grpcurl");
        (out.status.success(), test_support::output_text(&out))
    };
    let base = |more: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["-plaintext", "-authority", domain.as_str()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(more.iter().map(|s| s.to_string()));
        v.push(target.clone());
        v
    };
    let mut args = base(&[]);
    args.push("list".into());
    let (ok, out) = grpcurl(args).await;
    assert!(ok && out.contains("helloworld.Greeter"), "{out}");
    let mut args = base(&["-d", r#"{"name": "proxy"}"#]);
    args.push("helloworld.Greeter/SayHello".into());
    let (ok, out) = grpcurl(args).await;
    assert!(ok && out.contains("proxy"), "{out}");
    let mut args = base(&["-d", r#"{"name": "stream"}"#]);
    args.push("helloworld.Greeter/SayHelloStream".into());
    let (ok, out) = grpcurl(args).await;
    assert!(ok, "{out}");
    assert!(
        out.matches("\"message\"").count() >= 2,
        "several replies: {out}"
    );

    // By x-yt-taskproxy-id instead of the authority.
    let args: Vec<String> = [
        "-plaintext",
        "-H",
        &format!("x-yt-taskproxy-id: {}", svc.hash()),
        "-d",
        r#"{"name": "by-id"}"#,
        &target,
        "helloworld.Greeter/SayHello",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (ok, out) = grpcurl(args).await;
    assert!(ok && out.contains("by-id"), "{out}");

    // An unknown service: a gRPC NotFound status, which grpcurl prints. (With the proto given,
    // grpcurl calls the method directly instead of asking for reflection first.)
    let protos = test_support::workspace_root().join("crates/demo-services/proto");
    let args: Vec<String> = [
        "-plaintext",
        "-import-path",
        protos.to_str().unwrap_or_default(),
        "-proto",
        "helloworld.proto",
        "-authority",
        &format!("0badf00d.{BASE}"),
        "-d",
        "{}",
        &target,
        "helloworld.Greeter/SayHello",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (ok, out) = grpcurl(args.clone()).await;
    assert!(
        !ok && out.contains("NotFound") && out.contains("no such task"),
        "{out}"
    );

    // No job reachable: Unavailable, naming the service.
    let dead_authority = format!("{}.{BASE}", service_hash("op-grpc-dead", "task", "svc"));
    let args: Vec<String> = args
        .into_iter()
        .map(|a| {
            if a.starts_with("0badf00d") {
                dead_authority.clone()
            } else {
                a
            }
        })
        .collect();
    let (ok, out) = grpcurl(args).await;
    assert!(
        !ok && out.contains("Unavailable") && out.contains("no healthy job"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_and_sse_stream_through_the_proxy() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let job = spawn_http("ws-job").await;
    let svc = Svc {
        op: "op-ws",
        protocol: "http",
        endpoints: vec![addr(&job)],
    };
    let env = start(std::slice::from_ref(&svc), &[]);

    let mut request = format!("ws://{}/ws", env.proxy.plain)
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("host", svc.domain().parse().expect("host"));
    let (mut ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket handshake through the proxy");
    assert_eq!(response.status(), 101);
    for text in ["hello", "second message"] {
        support::assert_echoes(&mut ws, text).await;
    }
    ws.close(None).await.expect("close");

    // WebSocket over HTTP/2 (RFC 8441 extended CONNECT) on the h2c port.
    {
        let mut ws = support::h2_websocket(env.proxy.plain, &svc.domain(), "/ws", &[]).await;
        support::assert_echoes(&mut ws, "over h2").await;
    }

    // The same with Python's `websockets`, routed by x-yt-taskproxy-id.
    let script = r#"
import sys
from websockets.sync.client import connect
with connect(sys.argv[1], additional_headers={"x-yt-taskproxy-id": sys.argv[2]}, open_timeout=10) as ws:
    for text in ["ping", "pong" * 1000]:
        ws.send(text)
        assert ws.recv(timeout=10) == text
print("ok")
"#;
    let out = Command::new(tool("python3"))
        .args(["-c", script])
        .arg(format!("ws://{}/ws", env.proxy.plain))
        .arg(svc.hash())
        .output()
        .await
        .expect("python3");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // SSE: events arrive one by one, as the job sends them (not buffered to the end).
    let mut child = Command::new(tool("curl"))
        .args(["-sS", "-N", "-H", &format!("Host: {}", svc.domain())])
        .arg(env.url("/sse?count=4&interval_ms=400"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl");
    let mut stdout = child.stdout.take().expect("stdout");
    let started = Instant::now();
    let mut arrivals = Vec::new();
    let mut buf = [0u8; 1024];
    let mut text = String::new();
    while let Ok(n) = stdout.read(&mut buf).await {
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        let events = text.matches("data: ").count();
        while arrivals.len() < events {
            arrivals.push(started.elapsed());
        }
    }
    let _ = child.wait().await;
    assert_eq!(arrivals.len(), 4, "{text}");
    assert!(arrivals[0] < Duration::from_millis(800), "{arrivals:?}");
    assert!(
        arrivals[3] - arrivals[0] >= Duration::from_millis(1000),
        "events spread over time: {arrivals:?}"
    );
}

fn make_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let certified = rcgen::generate_simple_self_signed(vec![format!("*.{BASE}")]).expect("cert");
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write key");
    (cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_alpn_h2_and_certificate_reload() {
    let job = spawn_http("tls-job").await;
    let svc = Svc {
        op: "op-tls",
        protocol: "http",
        endpoints: vec![addr(&job)],
    };
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = make_cert(certs.path(), "tls");
    let first_ca = certs.path().join("first-ca.crt");
    std::fs::copy(&cert, &first_ca).expect("copy");
    let env = start(
        std::slice::from_ref(&svc),
        &[
            "--tls-cert",
            cert.to_str().unwrap_or_default(),
            "--tls-key",
            key.to_str().unwrap_or_default(),
            "--tls-listen",
            "127.0.0.1:0",
        ],
    );
    let port = env.proxy.tls.expect("tls listener").port();
    let domain = svc.domain();
    let resolve = format!("{domain}:{port}:127.0.0.1");
    let url = format!("https://{domain}:{port}/headers");
    let fetch = |ca: PathBuf| {
        let (resolve, url) = (resolve.clone(), url.clone());
        async move {
            curl(&[
                "--cacert",
                ca.to_str().unwrap_or_default(),
                "--resolve",
                &resolve,
                &url,
            ])
            .await
        }
    };
    let (code, text) = fetch(first_ca.clone()).await;
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("\t2 "), "ALPN chose h2: {text}");
    assert!(text.contains("\"x-forwarded-proto\":\"https\""), "{text}");

    // Replace the files: the new certificate is served without a restart.
    let (new_cert, new_key) = make_cert(certs.path(), "next");
    std::fs::copy(&new_key, &key).expect("replace key");
    std::fs::copy(&new_cert, &cert).expect("replace cert");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _) = fetch(new_cert.clone()).await;
        if code == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "new certificate not served");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (code, _) = fetch(first_ca).await;
    assert_eq!(code, 0, "the old certificate is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gigabyte_upload_and_download_stream_with_flat_memory() {
    let job = spawn_http("bulk-job").await;
    let svc = Svc {
        op: "op-bulk",
        protocol: "http",
        endpoints: vec![addr(&job)],
    };
    let env = start_binary(std::slice::from_ref(&svc), &[]);
    let host = format!("Host: {}", svc.domain());
    let base_rss = env.proxy.rss_kib().expect("rss");
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(base_rss));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        let pid = env.proxy.pid();
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    if let Some(kib) = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.split_whitespace().next()?.parse().ok())
                    {
                        peak.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    const GIB: u64 = 1 << 30;
    let started = Instant::now();
    let (code, text) = curl(&[
        "-o",
        "/dev/null",
        "-H",
        &host,
        &env.url(&format!("/bytes?size={GIB}")),
    ])
    .await;
    let download = started.elapsed();
    assert_eq!(code, 200);
    assert!(text.ends_with(&format!(" {GIB}")), "{text}");

    let started = Instant::now();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "head -c {GIB} /dev/zero | {} -sS -T - -H '{host}' {}",
            tool("curl").display(),
            env.url("/upload")
        ))
        .output()
        .await
        .expect("upload");
    let upload = started.elapsed();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains(&format!("\"bytes\":{GIB}")), "{body}");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sampler.join();
    let growth = peak.load(std::sync::atomic::Ordering::Relaxed) - base_rss;
    eprintln!("1 GiB download {download:?}, upload {upload:?}; proxy RSS {base_rss} KiB, growth {growth} KiB");
    assert!(growth < 64 * 1024, "RSS grew by {growth} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_job_under_load_loses_no_request() {
    let a = spawn_http("steady").await;
    let b = spawn_http("doomed").await;
    let svc = Svc {
        op: "op-failover",
        protocol: "http",
        endpoints: vec![addr(&a), addr(&b)],
    };
    let env = start(std::slice::from_ref(&svc), &[]);
    let proxy = env.proxy.plain;
    let domain = svc.domain();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let clients = 8;
    let per_client = 250;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, domain) = (client.clone(), domain.clone());
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut by_job = std::collections::HashMap::<String, usize>::new();
            for _ in 0..per_client {
                let req = http::Request::get(format!("http://{proxy}/"))
                    .header("host", &domain)
                    .body(http_body_util::Empty::new())
                    .expect("request");
                match client.request(req).await {
                    Ok(resp) if resp.status() == 200 => {
                        let job = resp
                            .headers()
                            .get(JOB_HEADER)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
                        *by_job.entry(job).or_default() += 1;
                    }
                    Ok(resp) => failures.push(format!("status {}", resp.status())),
                    Err(e) => failures.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(14)).await;
            }
            (failures, by_job)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let doomed_addr = addr(&b);
    drop(b); // The job dies: its listener and connections close.
    let mut failures = Vec::new();
    let mut by_job = std::collections::HashMap::<String, usize>::new();
    for t in tasks {
        let (f, j) = t.await.expect("client task");
        failures.extend(f);
        for (k, v) in j {
            *by_job.entry(k).or_default() += v;
        }
    }
    eprintln!("answers by job: {by_job:?}");
    assert!(failures.is_empty(), "lost requests: {failures:?}");
    assert_eq!(by_job.values().sum::<usize>(), clients * per_client);
    assert!(by_job.get("doomed").copied().unwrap_or(0) > 0);
    // The dead job was ejected (failures are counted until a connection succeeds again).
    let (_, services) = env.proxy.admin_get("/services");
    let services: serde_json::Value = serde_json::from_str(&services).expect("services json");
    let endpoints = services["services"][0]["endpoints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let dead = endpoints
        .iter()
        .find(|e| e["address"] == doomed_addr.as_str())
        .expect("dead endpoint listed");
    assert!(dead["consecutive_failures"].as_u64() >= Some(1), "{dead}");
    assert!(dead["ejections"].as_u64() >= Some(1), "{dead}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_and_slow_jobs_give_502_and_504() {
    let slow = spawn_http("slow").await;
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let dead = Svc {
        op: "op-dead",
        protocol: "http",
        endpoints: vec![format!("127.0.0.1:{dead_port}"), "127.0.0.1:1".into()],
    };
    let slow_svc = Svc {
        op: "op-slow",
        protocol: "http",
        endpoints: vec![addr(&slow)],
    };
    let mixed = Svc {
        op: "op-mixed",
        protocol: "http",
        endpoints: vec![format!("127.0.0.1:{dead_port}"), addr(&slow)],
    };
    let env = start(
        &[dead, slow_svc, mixed],
        &["--upstream-response-timeout", "500ms"],
    );

    // A connect failure is safe for any method: POSTs with bodies go to the live job.
    let mixed = format!(
        "x-yt-taskproxy-id: {}",
        service_hash("op-mixed", "task", "svc")
    );
    for _ in 0..6 {
        let (code, text) = curl(&[
            "-H",
            &mixed,
            "--data-binary",
            "payload",
            &env.url("/upload"),
        ])
        .await;
        assert_eq!(code, 200, "{text}");
        assert!(text.contains("\"bytes\":7"), "{text}");
    }
    let dead = service_hash("op-dead", "task", "svc");
    let started = Instant::now();
    let (code, text) = curl(&["-H", &format!("x-yt-taskproxy-id: {dead}"), &env.url("/")]).await;
    assert_eq!(code, 502, "{text}");
    assert!(
        text.contains("no healthy job for service op-dead/task/svc"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let (code, _) = curl(&["-H", &format!("x-yt-taskproxy-id: {dead}"), &env.url("/")]).await;
    assert_eq!(code, 502, "still 502 while ejected");

    let slow = service_hash("op-slow", "task", "svc");
    let started = Instant::now();
    let (code, text) = curl(&[
        "-H",
        &format!("x-yt-taskproxy-id: {slow}"),
        &env.url("/delay?ms=3000"),
    ])
    .await;
    assert_eq!(code, 504, "{text}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let (code, _) = curl(&[
        "-H",
        &format!("x-yt-taskproxy-id: {slow}"),
        &env.url("/delay?ms=10"),
    ])
    .await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_cleanly() {
    let job = spawn_http("hygiene").await;
    let svc = Svc {
        op: "op-bad",
        protocol: "http",
        endpoints: vec![addr(&job)],
    };
    let env = start(
        std::slice::from_ref(&svc),
        &["--max-connections", "3", "--worker-threads", "1"],
    );
    let proxy = env.proxy.plain;
    let domain = svc.domain();

    let big = "x".repeat(70_000);
    let request = format!("GET / HTTP/1.1\r\nHost: {domain}\r\nX-Big: {big}\r\n\r\n");
    let answer = raw(proxy, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    let answer = raw(proxy, b"THIS IS NOT HTTP\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // HTTP/1.0 without Host, routed by header: the job gets the service domain as Host.
    let answer = raw(
        proxy,
        format!(
            "GET /headers HTTP/1.0\r\nx-yt-taskproxy-id: {}\r\n\r\n",
            svc.hash()
        )
        .as_bytes(),
    )
    .await;
    assert!(
        answer.contains(&format!("\"host\":\"{domain}\"")),
        "{answer}"
    );
    let answer = raw(proxy, b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.0 400") || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    let answer = raw(
        proxy,
        b"GET / HTTP/1.1\r\nHost: \xff\xfe.tp.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.contains(" 400 "), "{answer}");
    let answer = raw(
        proxy,
        format!("GET / HTTP/1.1\r\nHost: {domain}\r\nx-yt-taskproxy-id: 1\r\nx-yt-taskproxy-id: 2\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    let answer = raw(
        proxy,
        format!("CONNECT {domain}:443 HTTP/1.1\r\nHost: {domain}:443\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");

    // The connection cap: beyond 3 open connections, a new one gets 503 and is closed; the
    // open ones go on working.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(proxy)
            .await
            .expect("connect");
        s.write_all(format!("GET / HTTP/1.1\r\nHost: {domain}\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.expect("answer");
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    let answer = raw(
        proxy,
        format!("GET / HTTP/1.1\r\nHost: {domain}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = raw(
            proxy,
            format!("GET / HTTP/1.1\r\nHost: {domain}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "slots freed: {answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_file_changes_reroute_without_restart() {
    let (a, b) = (spawn_http("first").await, spawn_http("second").await);
    let svc = |job: &Running| Svc {
        op: "op-reload",
        protocol: "http",
        endpoints: vec![addr(job)],
    };
    let env = start_binary(&[svc(&a)], &[]);
    let id = format!("x-yt-taskproxy-id: {}", svc(&a).hash());
    let job_of = || async {
        let (code, text) = curl(&["-i", "-H", &id, &env.url("/")]).await;
        (code, header(&text, JOB_HEADER).unwrap_or("").to_string())
    };
    assert_eq!(job_of().await, (200, "first".to_string()));

    env.proxy
        .services_file()
        .write_raw(&services_json(&[svc(&b)]));
    let deadline = Instant::now() + Duration::from_secs(5);
    while job_of().await.1 != "second" {
        assert!(Instant::now() < deadline, "not re-routed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A broken file is reported and changes nothing: once the proxy has read it (its log says
    // so), the route is the one from before.
    env.proxy.services_file().write_raw("{ not json");
    wait_for(
        "the broken file to be reported",
        Duration::from_secs(10),
        || async {
            env.proxy
                .log()
                .contains("services file not reloaded")
                .then_some(())
        },
    )
    .await;
    assert_eq!(job_of().await, (200, "second".to_string()));

    // A new service appears (and SIGHUP forces a reload).
    let other = Svc {
        op: "op-new",
        protocol: "http",
        endpoints: vec![addr(&a)],
    };
    env.proxy
        .services_file()
        .write_raw(&services_json(&[svc(&b), other]));
    env.proxy.signal("HUP");
    let new_id = format!(
        "x-yt-taskproxy-id: {}",
        service_hash("op-new", "task", "svc")
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (code, _) = curl(&["-H", &new_id, &env.url("/")]).await;
        if code == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "new service not routed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    let job = spawn_http("drain").await;
    let svc = Svc {
        op: "op-drain",
        protocol: "http",
        endpoints: vec![addr(&job)],
    };
    let mut env = start_binary(std::slice::from_ref(&svc), &[]);
    let id = format!("x-yt-taskproxy-id: {}", svc.hash());
    let url = env.url("/delay?ms=1500");
    let in_flight = tokio::spawn({
        let id = id.clone();
        async move { curl(&["-H", &id, &url]).await }
    });
    // SIGTERM once the request is at the job (the proxy counts it in flight there).
    wait_for(
        "the request to reach the job",
        Duration::from_secs(10),
        || async { in_flight_at_jobs(&env.proxy.metrics()).filter(|n| *n >= 1) },
    )
    .await;
    env.proxy.signal("TERM");
    wait_for(
        "/readyz to say draining",
        Duration::from_secs(5),
        || async { (env.proxy.admin_get("/readyz").0 == 503).then_some(()) },
    )
    .await;
    let (code, _) = curl(&["-H", &id, &env.url("/")]).await;
    assert_eq!(code, 0, "new connections are refused while draining");
    let (code, text) = in_flight.await.expect("in-flight request");
    assert_eq!(code, 200, "the in-flight request finished: {text}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = env.proxy.try_wait() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "proxy did not exit after draining"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The requests the proxy has in flight at jobs, summed over endpoints (`None` before the
/// gauge has a sample).
fn in_flight_at_jobs(metrics: &str) -> Option<u64> {
    let samples: Vec<u64> = metrics
        .lines()
        .filter(|l| l.starts_with("task_proxy_endpoint_in_flight{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!samples.is_empty()).then(|| samples.iter().sum())
}

#[test]
fn invalid_configurations_are_refused_with_a_clear_message() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(binary())
            .arg("serve")
            .args(args)
            .env_remove("YT_PROXY")
            .output()
            .expect("run");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, err) = run(&["--base-domain", BASE, "--services-file", "/nonexistent"]);
    assert!(!ok && err.contains("auth needs --yt-proxy"), "{err}");
    let (ok, err) = run(&[
        "--base-domain",
        BASE,
        "--auth-enabled=false",
        "--services-file",
        "/nonexistent",
    ]);
    assert!(
        !ok && err.contains("cannot load the services file"),
        "{err}"
    );
    let (ok, err) = run(&["--base-domain", BASE, "--auth-enabled=false"]);
    assert!(!ok && err.contains("nothing to route"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_disconnected() {
    let job = spawn_http("timeouts").await;
    let svc = Svc {
        op: "op-timeouts",
        protocol: "http",
        endpoints: vec![addr(&job)],
    };
    let env = start(
        std::slice::from_ref(&svc),
        &["--header-read-timeout", "500ms", "--idle-timeout", "700ms"],
    );
    let closed_within = |mut s: tokio::net::TcpStream, limit: Duration| async move {
        let started = Instant::now();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(limit, s.read_to_end(&mut buf)).await;
        (
            read.is_ok(),
            started.elapsed(),
            String::from_utf8_lossy(&buf).to_string(),
        )
    };

    // A client that never finishes its request head.
    let mut slow = tokio::net::TcpStream::connect(env.proxy.plain)
        .await
        .expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: ")
        .await
        .expect("write");
    let (closed, after, _) = closed_within(slow, Duration::from_secs(3)).await;
    assert!(closed, "slow client not disconnected (waited {after:?})");

    // An idle keep-alive connection (HTTP/1.1 here; the same watchdog covers HTTP/2). The
    // header read timeout also runs while HTTP/1.1 waits for the next request: make it longer
    // so this is the idle timeout at work.
    let env = start(
        std::slice::from_ref(&svc),
        &["--header-read-timeout", "10s", "--idle-timeout", "700ms"],
    );
    let mut idle = tokio::net::TcpStream::connect(env.proxy.plain)
        .await
        .expect("connect");
    idle.write_all(
        format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nx-yt-taskproxy-id: {}\r\n\r\n",
            svc.domain(),
            svc.hash()
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let (closed, after, text) = closed_within(idle, Duration::from_secs(3)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(closed, "idle connection kept open (waited {after:?})");
}

/// The library's handle, without the binary: `Server::start` reports the bound addresses
/// (port 0 resolved), `shutdown` drains (not ready, new connections refused, the in-flight
/// request finished), `wait` returns when stopped; a busy port is a typed start error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_start_serves_and_drains_through_its_handle() {
    use task_proxy::config::ServeArgs;
    use task_proxy::server::StartError;
    use task_proxy::Server;
    let job = spawn_http("library").await;
    let svc = Svc {
        op: "op-library",
        protocol: "http",
        endpoints: vec![addr(&job)],
    };
    let services = test_support::ServicesFile::new(&[]);
    services.write_raw(&services_json(std::slice::from_ref(&svc)));
    let path = services.path().to_str().expect("utf-8 path").to_string();
    let config = |admin: &str| {
        ServeArgs::parse_flags([
            "--services-file",
            &path,
            "--base-domain",
            BASE,
            "--auth-enabled=false",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            admin,
            "--worker-threads",
            "1",
        ])
        .expect("flags")
        .into_config()
        .expect("config")
    };
    let server = Server::start(config("127.0.0.1:0")).expect("start");
    assert_ne!(server.plain_addr().port(), 0);
    assert_ne!(server.admin_addr().port(), 0);
    assert_eq!(server.tls_addr(), None);
    assert_eq!(server.routing_table().load().routes().len(), 1);

    // The admin port is taken now: a second server fails with a typed error naming it.
    let busy = server.admin_addr().to_string();
    match Server::start(config(&busy)) {
        Err(StartError::AdminBind { addr, .. }) => assert_eq!(addr, server.admin_addr()),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a second server bound a busy admin port"),
    }

    let id = format!("x-yt-taskproxy-id: {}", svc.hash());
    let url = |path: &str| format!("http://{}{path}", server.plain_addr());
    let (code, _) = curl(&["-H", &id, &url("/")]).await;
    assert_eq!(code, 200);
    let in_flight = tokio::spawn({
        let (id, url) = (id.clone(), url("/delay?ms=1500"));
        async move { curl(&["-H", &id, &url]).await }
    });
    let admin = server.admin_addr();
    wait_for(
        "the request to reach the job",
        Duration::from_secs(10),
        || async {
            in_flight_at_jobs(&test_support::http_get(admin, "/metrics").1).filter(|n| *n >= 1)
        },
    )
    .await;
    server.shutdown();
    wait_for(
        "/readyz to say draining",
        Duration::from_secs(5),
        || async { (test_support::http_get(admin, "/readyz").0 == 503).then_some(()) },
    )
    .await;
    let (code, _) = curl(&["-H", &id, &url("/")]).await;
    assert_eq!(code, 0, "new connections are refused while draining");
    let (code, text) = in_flight.await.expect("in-flight request");
    assert_eq!(code, 200, "the in-flight request finished: {text}");
    let stopped = tokio::task::spawn_blocking(move || server.wait());
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("stopped after the drain")
        .expect("wait");
    assert_eq!(
        test_support::http_get(admin, "/readyz").0,
        0,
        "admin closed"
    );
}
