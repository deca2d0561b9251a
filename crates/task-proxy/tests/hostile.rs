//! Hostile input end to end (issue 8): request smuggling over raw TCP, header limits,
//! slowloris, connection floods, attempts to get around auth, and a scan for leaked
//! credentials. The real `task-proxy` binary; auth cases use the dev cluster with auth on.

mod support;

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::file_proxy::FileProxy;
use support::load::wait_until;
use support::BASE_DOMAIN as BASE;
use task_proxy::routing::service_hash;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the proxy answers to `request` on a new connection, and whether it then closed the
/// connection (within 3 s).
async fn exchange(proxy: SocketAddr, request: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(proxy).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out))
        .await
        .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// A job that records every byte it receives and answers each request head with a small 200
/// (keep-alive). Bodies are not parsed: the record is what matters.
///
/// With [`RecordingJob::spawn_h2c`] it speaks h2c the way hypercorn, Go's h2c handler or Jetty
/// do: a request carrying `Upgrade: h2c` gets `101 Switching Protocols` and the HTTP/2 server
/// preface (with `eager`, every request does), and the connection only records from then on.
struct RecordingJob {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
    /// Connections from the proxy still open: once none is, the record cannot grow.
    open: Arc<std::sync::atomic::AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl RecordingJob {
    async fn spawn() -> RecordingJob {
        RecordingJob::start(None).await
    }

    async fn spawn_h2c(eager: bool) -> RecordingJob {
        RecordingJob::start(Some(eager)).await
    }

    /// `h2c`: `None` never switches protocols; `Some(eager)` as in [`RecordingJob::spawn_h2c`].
    async fn start(h2c: Option<bool>) -> RecordingJob {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let record = received.clone();
        let counted = open.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let record = record.clone();
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let counted = counted.clone();
                tokio::spawn(async move {
                    // Counts the connection closed however the loop below ends.
                    struct Closed(Arc<std::sync::atomic::AtomicUsize>);
                    impl Drop for Closed {
                        fn drop(&mut self) {
                            self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                    let _closed = Closed(counted);
                    let mut pending = Vec::new();
                    let mut buf = [0u8; 8192];
                    let mut switched = false;
                    loop {
                        let n = match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        record.lock().expect("record").extend_from_slice(&buf[..n]);
                        if switched {
                            continue;
                        }
                        pending.extend_from_slice(&buf[..n]);
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&pending[..end]).to_lowercase();
                            pending.drain(..end + 4);
                            switched =
                                h2c.is_some_and(|eager| eager || head.contains("\r\nupgrade: h2c"));
                            let answer: &[u8] = if switched {
                                // 101, then an empty SETTINGS frame (the server preface).
                                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"
                            } else {
                                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                            };
                            if s.write_all(answer).await.is_err() {
                                return;
                            }
                            if switched {
                                break;
                            }
                        }
                    }
                });
            }
        });
        RecordingJob {
            addr,
            received,
            open,
            _task: task,
        }
    }

    /// The record once it is final: after the proxy has closed every connection to the job
    /// (nothing more can arrive), or after `window` if one stays open (a pooled keep-alive
    /// connection), whichever comes first. Call it after the client's exchange ended, so a
    /// request the proxy wrongly passes on has had the time to arrive.
    async fn settled(&self, window: Duration) -> String {
        let deadline = tokio::time::Instant::now() + window;
        while self.open.load(std::sync::atomic::Ordering::SeqCst) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.take()
    }

    fn take(&self) -> String {
        let mut r = self.received.lock().expect("record");
        String::from_utf8_lossy(&std::mem::take(&mut *r)).into_owned()
    }
}

fn service_json(op: &str, service: &str, endpoint: &str) -> Value {
    json!({"operation_id": op, "task_name": "task", "service": service, "protocol": "http",
           "endpoints": [endpoint]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_smuggling_attempts_get_400_close_and_never_reach_the_job() {
    let job = RecordingJob::spawn().await;
    let served = FileProxy::start(
        &[service_json("op-smuggle", "svc", &job.addr.to_string())],
        &["--auth-enabled=false"],
        &[],
    );
    let proxy = &served.proxy;
    let host = format!("{}.{BASE}", service_hash("op-smuggle", "task", "svc"));
    let smuggled = format!("GET /smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let cases: Vec<(&str, String)> = vec![
        (
            "Content-Length and Transfer-Encoding",
            format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "Transfer-Encoding and Content-Length",
            format!("POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "two different Content-Lengths",
            format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nContent-Length: 40\r\n\r\n{smuggled}"),
        ),
        (
            "two equal Content-Lengths",
            format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n{smuggled}"),
        ),
        (
            "a Content-Length list",
            format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0, 40\r\n\r\n{smuggled}"),
        ),
        (
            "a signed Content-Length",
            format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: +0\r\n\r\n{smuggled}"),
        ),
        (
            "Transfer-Encoding not ending in chunked",
            format!("POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "an unknown Transfer-Encoding",
            format!("POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "Transfer-Encoding with obs-fold",
            format!("POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "an obs-folded header",
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-Folded: a\r\n b\r\n\r\n{smuggled}"),
        ),
        (
            "a bare CR in a header",
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-Bare: a\rb\r\n\r\n{smuggled}"),
        ),
        (
            "a bare CR line ending",
            format!("GET / HTTP/1.1\rHost: {host}\r\n\r\n{smuggled}"),
        ),
        (
            "a space before the colon",
            format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length : 40\r\n\r\n{smuggled}"),
        ),
        (
            "two Host headers",
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nHost: other.{BASE}\r\n\r\n{smuggled}"),
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            format!("POST / HTTP/1.0\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        ),
    ];
    let mut outcomes = Vec::new();
    for (name, request) in &cases {
        let (answer, closed) = exchange(proxy.plain, request.as_bytes()).await;
        let seen = job.take();
        outcomes.push(format!(
            "{name}: {} closed={closed} job_saw={}B",
            answer.lines().next().unwrap_or(""),
            seen.len()
        ));
        assert!(
            answer.starts_with("HTTP/1.1 400") || answer.starts_with("HTTP/1.0 400"),
            "{name}: {answer}"
        );
        assert_eq!(answer.matches("HTTP/1.").count(), 1, "{name}: {answer}");
        assert!(closed, "{name}: connection left open");
        assert!(seen.is_empty(), "{name}: the job received {seen:?}");
    }

    // Invalid chunks: the head may already be on its way to the job (bodies stream), but the
    // job never gets a second request, and the client gets 400 and a closed connection.
    for (name, body) in [
        ("a non-hex chunk size", "zz\r\nabc\r\n0\r\n\r\n"),
        (
            "an overflowing chunk size",
            "fffffffffffffffff1\r\nabc\r\n0\r\n\r\n",
        ),
        ("a negative chunk size", "-1\r\nabc\r\n0\r\n\r\n"),
        ("a chunk longer than its size", "1\r\nabcdef\r\n0\r\n\r\n"),
    ] {
        let request = format!(
            "POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n{body}{smuggled}"
        );
        let (answer, closed) = exchange(proxy.plain, request.as_bytes()).await;
        let seen = job.settled(Duration::from_secs(1)).await;
        outcomes.push(format!(
            "{name}: {} closed={closed} job_saw={}B",
            answer.lines().next().unwrap_or(""),
            seen.len()
        ));
        assert!(answer.starts_with("HTTP/1.1 400"), "{name}: {answer}");
        assert_eq!(answer.matches("HTTP/1.").count(), 1, "{name}: {answer}");
        assert!(closed, "{name}: connection left open");
        assert!(
            !seen.contains("/smuggled"),
            "{name}: the job received {seen:?}"
        );
    }
    eprintln!("smuggling attempts:\n  {}", outcomes.join("\n  "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_too_many_headers_get_431_slowloris_is_cut_and_floods_are_refused() {
    let job = RecordingJob::spawn().await;
    let served = FileProxy::start(
        &[service_json("op-limits", "svc", &job.addr.to_string())],
        &[
            "--auth-enabled=false",
            "--header-read-timeout",
            "700ms",
            "--max-connections",
            "20",
        ],
        &[],
    );
    let proxy = &served.proxy;
    let host = format!("{}.{BASE}", service_hash("op-limits", "task", "svc"));

    // One header over the limit, and many small ones.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nX-Big: {}\r\n\r\n",
        "x".repeat(70_000)
    );
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: {host}\r\n{many}\r\n");
    for (name, request) in [("one big header", big), ("200 headers", many)] {
        let (answer, closed) = exchange(proxy.plain, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{name}: {answer}");
        assert!(closed, "{name}: connection left open");
    }
    assert!(job.take().is_empty());

    // Slowloris: a byte every 100 ms, never finishing the head, is cut at the header timeout.
    let mut slow = TcpStream::connect(proxy.plain).await.expect("connect");
    let started = Instant::now();
    let head = format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-Slow: ");
    let mut cut_after = None;
    for byte in head.bytes().chain(std::iter::repeat(b'a')).take(100) {
        if slow.write_all(&[byte]).await.is_err() {
            cut_after = Some(started.elapsed());
            break;
        }
        let mut probe = [0u8; 256];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(100), slow.read(&mut probe)).await
        {
            if n == 0 || probe.starts_with(b"HTTP/1.1 408") {
                cut_after = Some(started.elapsed());
                break;
            }
        }
    }
    let cut_after = cut_after.expect("slowloris not cut within 10 s");
    assert!(cut_after < Duration::from_secs(3), "{cut_after:?}");

    // A flood beyond the cap: refused cleanly while an existing keep-alive connection goes on.
    let mut kept = TcpStream::connect(proxy.plain).await.expect("connect");
    let request = format!("GET /kept HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let mut kept_answers = 0;
    let mut flood = Vec::new();
    for round in 0..3 {
        kept.write_all(request.as_bytes())
            .await
            .expect("kept write");
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(2), kept.read(&mut buf))
            .await
            .expect("kept answer in time")
            .expect("kept read");
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "kept: {:?}",
            &buf[..n]
        );
        kept_answers += 1;
        if round < 2 {
            for _ in 0..30 {
                let mut s = TcpStream::connect(proxy.plain).await.expect("connect");
                let _ = s.write_all(b"GET / HTTP/1.1\r\n").await; // never finished
                flood.push(s);
            }
        }
    }
    let mut refused = 0;
    for s in &mut flood {
        let mut buf = [0u8; 64];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(20), s.read(&mut buf)).await {
            if buf[..n].starts_with(b"HTTP/1.1 503") {
                refused += 1;
            }
        }
    }
    drop(flood);
    eprintln!(
        "431 for big and many headers; slowloris cut after {cut_after:?}; flood of 60 over a cap \
         of 20: {refused} refused with 503, the kept connection answered {kept_answers} of 3"
    );
    assert!(refused >= 40, "only {refused} of 60 refused");
}

/// Distinctive secrets of the leak scan: a user's token, cookie and IAM token, a token the
/// cluster rejects, and the proxy's own robot token.
const SECRETS: [&str; 5] = [
    "tpSecretTokenQ7ZK3",
    "tpSecretCookieW3XP9",
    "tpSecretIamM4RB1",
    "tpRejectedTokenH8NV2",
    "tpRobotTokenJ5TC6",
];

/// The dev cluster with carol (the secrets above) and a robot user, an operation of alice's
/// that carol may read and one she may not, and the proxy with auth on in front of demo jobs.
struct AuthEnv {
    cluster: yt_devcluster::DevCluster,
    served: FileProxy,
    readable: String,
    forbidden: String,
    _job: demo_services::Running,
    _dir: tempfile::TempDir,
}

impl AuthEnv {
    async fn start() -> AuthEnv {
        AuthEnv::start_with(false, |_, _| Vec::new()).await
    }

    /// [`AuthEnv::start`] with the proxy as the binary logging at trace level (its log is
    /// scanned for credentials).
    async fn start_logged() -> AuthEnv {
        AuthEnv::start_with(true, |_, _| Vec::new()).await
    }

    /// [`AuthEnv::start`] with more services: `extra(readable, forbidden)` gives their
    /// services-file entries.
    async fn start_with(logged: bool, extra: impl FnOnce(&str, &str) -> Vec<Value>) -> AuthEnv {
        let dir = tempfile::tempdir().expect("tempdir");
        let users = dir.path().join("users.json");
        std::fs::write(
            &users,
            json!({"users": [
                {"name": "carol", "tokens": [SECRETS[0]], "cookies": [SECRETS[1]],
                 "bearer_tokens": [SECRETS[2]], "superuser": false},
                {"name": "tp-robot", "tokens": [SECRETS[4]], "superuser": true},
            ]})
            .to_string(),
        )
        .expect("users file");
        let cluster = yt_devcluster::DevCluster::start(yt_devcluster::DevClusterConfig {
            users_file: Some(users),
            ..Default::default()
        })
        .await
        .expect("dev cluster");
        let tasks = "{main={command=\"sleep 1000\";job_count=1;port_count=1}}";
        let readable = support::start_operation(
            &cluster,
            tasks,
            "{acl=[{action=allow;subjects=[carol];permissions=[read]}]}",
        );
        let forbidden = support::start_operation(&cluster, tasks, "{}");
        let job = demo_services::spawn_http("auth-job").await;
        let endpoint = job.addr.to_string();
        let mut services = vec![
            json!({"operation_id": readable, "task_name": "main", "service": "web", "protocol": "http", "endpoints": [endpoint]}),
            json!({"operation_id": forbidden, "task_name": "main", "service": "web", "protocol": "http", "endpoints": [endpoint]}),
            json!({"operation_id": forbidden, "task_name": "main", "service": "ui", "protocol": "http", "endpoints": [endpoint]}),
        ];
        services.extend(extra(&readable, &forbidden));
        let token_file = dir.path().join("robot-token");
        std::fs::write(&token_file, SECRETS[4]).expect("token file");
        let flags = [
            "--yt-proxy",
            &cluster.url(),
            "--yt-token-path",
            token_file.to_str().expect("utf-8"),
        ];
        let served = if logged {
            FileProxy::start_binary(&services, &flags, &[("RUST_LOG", "trace")])
        } else {
            FileProxy::start(&services, &flags, &[])
        };
        AuthEnv {
            cluster,
            served,
            readable,
            forbidden,
            _job: job,
            _dir: dir,
        }
    }

    fn hash(&self, op: &str, service: &str) -> String {
        service_hash(op, "main", service)
    }

    /// The status of a raw HTTP/1.1 request (the head lines after the request line, without
    /// the final empty line), sent exactly as written.
    async fn status(&self, request_line: &str, headers: &[String]) -> u16 {
        let mut request = format!("{request_line}\r\n");
        for h in headers {
            request.push_str(h);
            request.push_str("\r\n");
        }
        request.push_str("Connection: close\r\n\r\n");
        let (answer, _) = exchange(self.served.proxy.plain, request.as_bytes()).await;
        answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_cannot_be_bypassed_by_routing_headers_or_path_tricks() {
    let env = AuthEnv::start().await;
    let carol = format!("Authorization: OAuth {}", SECRETS[0]);
    let readable = env.hash(&env.readable, "web");
    let forbidden = env.hash(&env.forbidden, "web");
    let host = |hash: &str| format!("Host: {hash}.{BASE}");
    let get = "GET / HTTP/1.1";
    // Sanity: carol reads one and not the other.
    assert_eq!(
        env.status(get, &[host(&readable), carol.clone()]).await,
        200
    );
    assert_eq!(
        env.status(get, &[host(&forbidden), carol.clone()]).await,
        403
    );

    let cases: Vec<(&str, Vec<String>, u16)> = vec![
        (
            "Host of a readable service, header naming the forbidden one",
            vec![
                host(&readable),
                format!("x-yt-taskproxy-id: {forbidden}"),
                carol.clone(),
            ],
            403,
        ),
        (
            "mixed-case routing header",
            vec![
                host(&readable),
                format!("X-YT-TaskProxy-Id: {forbidden}"),
                carol.clone(),
            ],
            403,
        ),
        (
            "upper-case hash",
            vec![
                host(&readable),
                format!("x-yt-taskproxy-id: {}", forbidden.to_uppercase()),
                carol.clone(),
            ],
            403,
        ),
        (
            "duplicated routing header",
            vec![
                host(&forbidden),
                format!("x-yt-taskproxy-id: {readable}"),
                format!("X-Yt-Taskproxy-Id: {forbidden}"),
                carol.clone(),
            ],
            400,
        ),
        (
            "routing header naming a readable service, Host of the forbidden one",
            vec![
                host(&forbidden),
                format!("x-yt-taskproxy-id: {readable}"),
                carol.clone(),
            ],
            200,
        ),
        (
            "duplicated Host",
            vec![host(&readable), host(&forbidden), carol.clone()],
            400,
        ),
        (
            "no credentials, routing header only",
            vec![format!("x-yt-taskproxy-id: {forbidden}")],
            401,
        ),
        (
            "a valid auth cookie joined into another cookie with a comma",
            vec![
                host(&readable),
                format!("Cookie: a=1, YTCypressCookie={}", SECRETS[1]),
            ],
            401,
        ),
        (
            "a valid auth cookie after whitespace inside another cookie",
            vec![
                host(&readable),
                format!("Cookie: a=1 YTCypressCookie={}", SECRETS[1]),
            ],
            401,
        ),
    ];
    for (name, headers, expected) in &cases {
        assert_eq!(env.status(get, headers).await, *expected, "{name}");
    }
    // Absolute-form request targets route by their authority (and are checked for it).
    let absolute = format!("GET http://{forbidden}.{BASE}/ HTTP/1.1");
    assert_eq!(
        env.status(&absolute, &[host(&readable), carol.clone()])
            .await,
        403
    );
    assert_eq!(
        env.status(
            "GET / HTTP/1.0",
            &[format!("x-yt-taskproxy-id: {forbidden}"), carol.clone()]
        )
        .await,
        403
    );

    // The /static exemption of the forbidden operation's `ui` service: only clean paths skip.
    let ui = env.hash(&env.forbidden, "ui");
    assert_eq!(
        env.status("GET /static/app.js HTTP/1.1", &[host(&ui)])
            .await,
        200,
        "a clean static path skips auth by design"
    );
    for path in [
        "/static/../headers",
        "/static/%2e%2e/headers",
        "/static/%2E%2E/headers",
        "/static/.%2e/headers",
        "/static/..%2fheaders",
        "/static/..%2Fheaders",
        "/static%2f..%2fheaders",
        "/static/..%5cheaders",
        "/static/..\\headers",
        "/static/..;/headers",
        "/static/%252e%252e/headers",
        "//static/../headers",
        "//static/app.js",
        "/static//app.js",
        "/STATIC/app.js",
        "/Static/app.js",
        "/./static/app.js",
        "/headers/../static/app.js",
        "/static",
        "/headers",
    ] {
        let line = format!("GET {path} HTTP/1.1");
        assert_eq!(
            env.status(&line, &[host(&ui)]).await,
            401,
            "{path} without credentials"
        );
        assert_eq!(
            env.status(&line, &[host(&ui), carol.clone()]).await,
            403,
            "{path} as carol"
        );
    }
    env.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_appears_in_logs_metrics_status_pages_or_forwarded_requests() {
    let env = AuthEnv::start_logged().await;
    let readable = format!("Host: {}.{BASE}", env.hash(&env.readable, "web"));
    let forbidden = format!("Host: {}.{BASE}", env.hash(&env.forbidden, "web"));
    let credentials = [
        format!("Authorization: OAuth {}", SECRETS[0]),
        format!("Authorization: Bearer {}", SECRETS[2]),
        format!("Cookie: a=1; YTCypressCookie={}; b=2", SECRETS[1]),
        format!("Cookie: YTCypressCookie {}", SECRETS[1]),
        format!("Authorization: OAuth {}", SECRETS[3]),
        format!("Cookie: YTCypressCookie=\"{}\"", SECRETS[3]),
        format!("Authorization: oauth   {}", SECRETS[0]),
        // Auth cookies inside other cookies, next to a credential that admits the request
        // (alone they are refused before anything is forwarded).
        format!(
            "Authorization: OAuth {}\r\nCookie: a=1, YTCypressCookie={}",
            SECRETS[0], SECRETS[1]
        ),
        format!(
            "Authorization: OAuth {}\r\nCookie: YTCypressCookie={}, a=1",
            SECRETS[0], SECRETS[1]
        ),
        format!(
            "Authorization: OAuth {}\r\nCookie: a=1 YTCypressCookie={}",
            SECRETS[0], SECRETS[1]
        ),
    ];
    let mut forwarded = String::new();
    for credential in &credentials {
        for host in [&readable, &forbidden] {
            for path in ["/headers", "/static/../headers"] {
                let request = format!(
                    "GET {path} HTTP/1.1\r\n{host}\r\n{credential}\r\nConnection: close\r\n\r\n"
                );
                let (answer, _) = exchange(env.served.proxy.plain, request.as_bytes()).await;
                forwarded.push_str(&answer);
            }
        }
    }
    // The same over HTTP/2 (curl, prior knowledge).
    for credential in &credentials[..3] {
        let out = tokio::process::Command::new("curl")
            .args([
                "-s",
                "--http2-prior-knowledge",
                "--max-time",
                "10",
                "-H",
                &readable,
                "-H",
            ])
            .arg(credential)
            .arg(format!("http://{}/headers", env.served.proxy.plain))
            .output()
            .await
            .expect("curl");
        forwarded.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    assert!(
        forwarded.contains("\"headers\""),
        "the job echoed headers: {forwarded}"
    );

    let mut places = vec![("forwarded requests (the job's echo)", forwarded)];
    for path in ["/metrics", "/services", "/", "/healthz", "/readyz"] {
        places.push((path, env.served.proxy.admin_get(path).1));
    }
    // Let the log writer catch up with the last requests, then read the log (trace level).
    let log = wait_until(Duration::from_secs(2), "log lines", || {
        let log = env.served.proxy.log();
        (log.lines().count() > 50).then_some(log)
    })
    .await;
    places.push(("stderr/stdout log (RUST_LOG=trace)", log));
    let mut scanned = 0;
    for (place, text) in &places {
        scanned += text.len();
        for secret in SECRETS {
            assert!(!text.contains(secret), "{secret} leaked into {place}");
        }
    }
    eprintln!(
        "{} requests with {} credential forms; scanned {scanned} bytes of forwarded requests, \
         admin pages and logs: no secret found",
        credentials.len() * 4 + 3,
        credentials.len()
    );
    env.cluster.shutdown().await;
}

/// The status codes of the responses in `answer`, in order.
fn statuses(answer: &str) -> Vec<u16> {
    answer
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| answer.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

/// The `/static/` skip admits plain GET/HEAD only: an `Upgrade: h2c` (or any upgrade, method
/// or body) there goes through the gate, an admitted h2c upgrade reaches the job as a plain
/// HTTP/1.1 request, and a job switching protocols on its own gets no tunnel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_on_static_paths_are_checked_and_h2c_never_becomes_a_tunnel() {
    let h2c = RecordingJob::spawn_h2c(false).await;
    let eager = RecordingJob::spawn_h2c(true).await;
    let (h2c_endpoint, eager_endpoint) = (h2c.addr.to_string(), eager.addr.to_string());
    let env = AuthEnv::start_with(false, |readable, _| {
        vec![
            json!({"operation_id": readable, "task_name": "main", "service": "ui", "protocol": "http", "endpoints": [h2c_endpoint]}),
            json!({"operation_id": readable, "task_name": "main", "service": "eager", "protocol": "http", "endpoints": [eager_endpoint]}),
        ]
    })
    .await;
    let proxy = env.served.proxy.plain;
    let ui = format!("Host: {}.{BASE}", env.hash(&env.readable, "ui"));
    let carol = format!("Authorization: OAuth {}", SECRETS[0]);
    let h2c_upgrade = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA";
    let send = |head: String| async move {
        let (answer, _) = exchange(proxy, format!("{head}\r\n\r\n").as_bytes()).await;
        answer
    };

    // The probe: no credentials, an h2c upgrade of a static path, then HTTP/2 on the tunnel.
    let mut s = TcpStream::connect(proxy).await.expect("connect");
    s.write_all(format!("GET /static/app.js HTTP/1.1\r\n{ui}\r\n{h2c_upgrade}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // Had a tunnel opened, this would reach the job as HTTP/2.
    let _ = s
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await;
    drop(s);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = h2c.take();
    assert!(seen.is_empty(), "the job received {seen:?}");

    // Every upgrade, method or body on a static path needs credentials.
    let refused = [
        format!("GET /static/app.js HTTP/1.1\r\n{ui}\r\n{h2c_upgrade}\r\nConnection: close"),
        format!("GET /static/app.js HTTP/1.1\r\n{ui}\r\nUpgrade: h2c\r\nConnection: close"),
        format!("GET /static/app.js HTTP/1.1\r\n{ui}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nConnection: close"),
        format!("POST /static/x HTTP/1.1\r\n{ui}\r\nContent-Length: 0\r\nConnection: close"),
        format!("POST /static/x HTTP/1.1\r\n{ui}\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"),
        format!("PUT /static/x HTTP/1.1\r\n{ui}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0"),
        format!("GET /static/app.js HTTP/1.1\r\n{ui}\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"),
        format!("GET /static/app.js HTTP/1.1\r\n{ui}\r\nConnection: close, x-forwarded-for"),
    ];
    for head in refused {
        let answer = send(head.clone()).await;
        assert_eq!(statuses(&answer), [401], "{head:?}: {answer}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = h2c.take();
    assert!(seen.is_empty(), "the job received {seen:?}");

    // A plain static fetch still skips auth.
    for method in ["GET", "HEAD"] {
        let answer = send(format!(
            "{method} /static/app.js HTTP/1.1\r\n{ui}\r\nConnection: close"
        ))
        .await;
        assert_eq!(statuses(&answer), [200], "{method}: {answer}");
    }
    h2c.take();

    // With credentials the h2c upgrade is dropped: an ordinary answer, and the job never sees
    // the upgrade.
    for path in ["/static/app.js", "/api"] {
        let answer = send(format!(
            "GET {path} HTTP/1.1\r\n{ui}\r\n{carol}\r\n{h2c_upgrade}\r\nConnection: close"
        ))
        .await;
        assert_eq!(statuses(&answer), [200], "{path}: {answer}");
        let seen = wait_until(Duration::from_secs(2), "the job's record", || {
            let seen = h2c.take();
            (!seen.is_empty()).then_some(seen)
        })
        .await
        .to_lowercase();
        assert!(
            seen.starts_with(&format!("get {path} http/1.1\r\n")),
            "{seen}"
        );
        assert!(!seen.contains("upgrade"), "the job saw {seen:?}");
        assert!(!seen.contains("http2-settings"), "the job saw {seen:?}");
    }
    // `websocket, h2c` is narrowed to websocket: the h2c job sees no h2c (and refuses nothing
    // here, it answers 200).
    let answer = send(format!("GET /ws HTTP/1.1\r\n{ui}\r\n{carol}\r\nConnection: Upgrade\r\nUpgrade: websocket, h2c\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nConnection: close")).await;
    assert_eq!(statuses(&answer), [200], "{answer}");
    let seen = h2c.take().to_lowercase();
    assert!(
        seen.contains("\r\nupgrade: websocket\r\n") && !seen.contains("h2c"),
        "{seen}"
    );

    // A job answering 101 to a request sent without Upgrade: 502, never a tunnel.
    let eager_host = format!("Host: {}.{BASE}", env.hash(&env.readable, "eager"));
    for extra in ["", "\r\nConnection: Upgrade\r\nUpgrade: h2c"] {
        let answer = send(format!(
            "GET / HTTP/1.1\r\n{eager_host}\r\n{carol}{extra}\r\nConnection: close"
        ))
        .await;
        assert_eq!(statuses(&answer), [502], "{extra:?}: {answer}");
        assert!(!answer.contains("\x00\x00\x00\x04"), "{answer:?}");
    }
    let seen = eager.take().to_lowercase();
    assert!(!seen.contains("upgrade"), "{seen}");
    env.cluster.shutdown().await;
}

/// The framing guard keeps checking after a request with an `Upgrade` header that did not
/// become a tunnel, and refuses an over-long chunk line instead of going blind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_checks_go_on_after_a_refused_upgrade_and_a_long_chunk_line() {
    let job = RecordingJob::spawn().await;
    let served = FileProxy::start(
        &[service_json("op-guard", "svc", &job.addr.to_string())],
        &["--auth-enabled=false"],
        &[],
    );
    let proxy = &served.proxy;
    let host = format!("{}.{BASE}", service_hash("op-guard", "task", "svc"));
    let smuggled = format!("GET /smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let cl_te = format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}");
    for upgrade in [
        "Upgrade: foo\r\nConnection: upgrade",
        "Upgrade: foo",
        "Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABk",
        "Upgrade: websocket\r\nConnection: upgrade",
    ] {
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n{upgrade}\r\n\r\n{cl_te}");
        let (answer, closed) = exchange(proxy.plain, request.as_bytes()).await;
        assert_eq!(statuses(&answer), [200, 400], "{upgrade:?}: {answer}");
        assert!(closed, "{upgrade:?}: connection left open");
        let seen = job.take();
        assert!(
            !seen.contains("/smuggled"),
            "{upgrade:?}: the job received {seen:?}"
        );
        assert!(
            !seen.contains("POST"),
            "{upgrade:?}: the job received {seen:?}"
        );
        // Only a WebSocket upgrade is passed on (this job refuses it with its 200).
        let passed_on = seen.to_lowercase().contains("upgrade");
        assert_eq!(passed_on, upgrade.contains("websocket"), "{seen:?}");
    }
    // The same, the second request written only after the first answer (keep-alive).
    let mut s = TcpStream::connect(proxy.plain).await.expect("connect");
    s.write_all(
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("write");
    let mut first = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut first))
        .await
        .expect("first answer in time")
        .expect("read");
    assert_eq!(statuses(&String::from_utf8_lossy(&first[..n])), [200]);
    s.write_all(cl_te.as_bytes()).await.expect("write");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest))
        .await
        .is_ok();
    let rest = String::from_utf8_lossy(&rest).into_owned();
    assert_eq!(statuses(&rest), [400], "{rest}");
    assert!(closed);
    assert!(!job.take().contains("/smuggled"));

    // A chunk extension past the guard's line limit (hyper alone takes up to 16 KiB of them).
    let long_line = format!(
        "POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n1;ext={}\r\nx\r\n0\r\n\r\n{cl_te}",
        "a".repeat(6000)
    );
    let (answer, closed) = exchange(proxy.plain, long_line.as_bytes()).await;
    let seen = job.settled(Duration::from_secs(1)).await;
    // The job may answer the first request from its head before the body fails (bodies
    // stream): at most that 200, then the refusal; the second request never gets one.
    let got = statuses(&answer);
    assert!(got == [400] || got == [200, 400], "{answer}");
    assert!(closed, "connection left open");
    assert!(!seen.contains("/smuggled"), "the job received {seen:?}");
    assert!(
        seen.matches("POST").count() <= 1,
        "the job received {seen:?}"
    );
}

/// A WebSocket tunnel through the proxy to the demo job's echo, opened on a fresh connection.
async fn open_tunnel(
    proxy: SocketAddr,
    host: &str,
) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let stream = TcpStream::connect(proxy).await.expect("connect");
    let mut request = format!("ws://{host}/ws")
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("host", host.parse().expect("host"));
    let (ws, response) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::client_async(request, stream),
    )
    .await
    .expect("handshake in time")
    .expect("websocket handshake through the proxy");
    assert_eq!(response.status(), 101);
    ws
}

/// Sends `text` and waits for its echo (None: the tunnel is closed or failed).
async fn echo(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>, text: &str) -> Option<()> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::Text(text.into())).await.ok()?;
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .ok()??
        .ok()?;
    (echoed.into_text().ok()? == text).then_some(())
}

/// The value of an unlabelled series in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Tunnels count against --max-connections until they end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnels_count_against_the_connection_cap() {
    let job = demo_services::spawn_http("ws-cap").await;
    let served = FileProxy::start(
        &[service_json("op-tunnels", "svc", &job.addr.to_string())],
        &["--auth-enabled=false", "--max-connections", "5"],
        &[],
    );
    let proxy = &served.proxy;
    let host = format!("{}.{BASE}", service_hash("op-tunnels", "task", "svc"));
    let mut tunnels = Vec::new();
    for i in 0..5 {
        let mut ws = open_tunnel(proxy.plain, &host).await;
        assert!(
            echo(&mut ws, &format!("tunnel {i}")).await.is_some(),
            "tunnel {i}"
        );
        tunnels.push(ws);
    }
    // hyper has let go of every upgraded connection by now; the tunnels still hold their places.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let (answer, closed) = exchange(proxy.plain, request.as_bytes()).await;
    assert_eq!(statuses(&answer), [503], "the 6th connection: {answer}");
    assert!(closed);
    for (i, ws) in tunnels.iter_mut().enumerate() {
        assert!(
            echo(ws, "still open").await.is_some(),
            "tunnel {i} after the refusal"
        );
    }
    let metrics = proxy.admin_get("/metrics").1;
    assert_eq!(
        metric(&metrics, "task_proxy_active_tunnels"),
        Some(5.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "task_proxy_tunnels_total"),
        Some(5.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "task_proxy_active_connections"),
        Some(5.0),
        "{metrics}"
    );

    // A tunnel that ends gives its place back.
    let mut closing = tunnels.pop().expect("a tunnel");
    closing.close(None).await.expect("close");
    drop(closing);
    let mut replacement = None;
    for _ in 0..50 {
        let (answer, _) = exchange(proxy.plain, request.as_bytes()).await;
        if statuses(&answer) == [200] {
            replacement = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(replacement.is_some(), "no place after a tunnel closed");
}

/// --tunnel-idle-timeout closes a tunnel without a byte either way, not a busy one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tunnels_are_closed_after_the_tunnel_idle_timeout() {
    use futures_util::StreamExt;
    let job = demo_services::spawn_http("ws-idle").await;
    let served = FileProxy::start(
        &[service_json("op-idle", "svc", &job.addr.to_string())],
        &["--auth-enabled=false", "--tunnel-idle-timeout", "1s"],
        &[],
    );
    let proxy = &served.proxy;
    let host = format!("{}.{BASE}", service_hash("op-idle", "task", "svc"));
    let mut idle = open_tunnel(proxy.plain, &host).await;
    let mut busy = open_tunnel(proxy.plain, &host).await;
    let opened = Instant::now();
    let idle_closed = tokio::spawn(async move {
        // Ends (None, a close or an error) when the proxy closes the tunnel.
        let _ = tokio::time::timeout(Duration::from_secs(10), idle.next()).await;
        Instant::now()
    });
    // Busier than the timeout: a message every 300 ms for 2.5 s.
    while opened.elapsed() < Duration::from_millis(2500) {
        assert!(
            echo(&mut busy, "busy").await.is_some(),
            "the busy tunnel was closed after {:?}",
            opened.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let closed_after = idle_closed.await.expect("join").duration_since(opened);
    eprintln!("idle tunnel closed after {closed_after:?}");
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after < Duration::from_millis(2500),
        "idle tunnel closed after {closed_after:?}"
    );
    let metrics = proxy.admin_get("/metrics").1;
    assert_eq!(
        metric(&metrics, "task_proxy_tunnels_closed_idle_total"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "task_proxy_active_tunnels"),
        Some(1.0),
        "{metrics}"
    );
}
