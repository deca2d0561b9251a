//! The header policy (`src/proxy/headers.rs`) end to end, the real binary and raw sockets:
//! forwarding headers set by the proxy, header names with `_` dropped, jobs' `Set-Cookie`
//! lines scoped beyond their service dropped, responses with ambiguous framing refused, and
//! auth cookies joined into other cookies removed. Every case runs on every path a caller can
//! take: plain HTTP/1.1 through the relay, the same with `--http1-relay=false` (hyper),
//! HTTP/2 with prior knowledge (curl), and HTTP/1.1 and HTTP/2 over TLS (curl).

mod support;

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::file_proxy::FileProxy;
use support::load::wait_until;
use support::BASE_DOMAIN as BASE;
use task_proxy::routing::service_hash;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How a request reaches the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Relay,
    Hyper,
    H2,
    TlsH1,
    TlsH2,
}

const PATHS: [Path; 5] = [Path::Relay, Path::Hyper, Path::H2, Path::TlsH1, Path::TlsH2];

impl Path {
    fn tls(self) -> bool {
        matches!(self, Path::TlsH1 | Path::TlsH2)
    }
}

/// The proxy serving one path, with its certificate for the TLS ones.
struct Served {
    proxy: FileProxy,
    certs: Option<(tempfile::TempDir, std::path::PathBuf)>,
}

impl Served {
    /// The host the caller names (with the TLS listener's port for TLS, as curl sends it).
    fn host_seen(&self, host: &str) -> String {
        match self.proxy.proxy.tls {
            Some(tls) if self.certs.is_some() => format!("{host}:{}", tls.port()),
            _ => host.to_string(),
        }
    }
}

/// Each request path a job answered, with whether its connection has been closed since.
type Answered = Arc<Mutex<Vec<(String, Arc<AtomicBool>)>>>;

/// A job answering each request head with `answer(path)`, recording the heads it received and
/// which connections the proxy closed.
struct Job {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    answered: Answered,
    _task: tokio::task::JoinHandle<()>,
}

impl Job {
    async fn spawn(answer: fn(&str, &str) -> String, host: String) -> Job {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let answered: Answered = Arc::default();
        let (record, answers) = (heads.clone(), answered.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (record, answers, host) = (record.clone(), answers.clone(), host.clone());
                let closed = Arc::new(AtomicBool::new(false));
                tokio::spawn(async move {
                    let mut pending = Vec::new();
                    let mut buf = [0u8; 8192];
                    loop {
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&pending[..end + 4]).into_owned();
                            pending.drain(..end + 4);
                            let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                            record.lock().expect("heads").push(head);
                            answers
                                .lock()
                                .expect("answered")
                                .push((path.clone(), closed.clone()));
                            if s.write_all(answer(&path, &host).as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        match s.read(&mut buf).await {
                            Ok(n) if n > 0 => pending.extend_from_slice(&buf[..n]),
                            _ => {
                                closed.store(true, Ordering::SeqCst);
                                return;
                            }
                        }
                    }
                });
            }
        });
        Job {
            addr,
            heads,
            answered,
            _task: task,
        }
    }

    /// Whether the connection the job last answered `path` on has been closed.
    fn closed_after(&self, path: &str) -> bool {
        let answered = self.answered.lock().expect("answered");
        let last = answered.iter().rev().find(|(p, _)| p == path);
        last.is_some_and(|(_, closed)| closed.load(Ordering::SeqCst))
    }

    fn heads(&self) -> Vec<String> {
        std::mem::take(&mut *self.heads.lock().expect("heads"))
    }
}

/// The job's answers, by path (`host`: the service's domain).
fn answer(path: &str, host: &str) -> String {
    let injected = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ninjected";
    match path {
        "/cookies" => format!(
            "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2; Domain={host}\r\n\
             Set-Cookie: c=3; Domain=.{BASE}; Path=/\r\nSet-Cookie: d=4; domain=TP.TEST\r\n\
             Set-Cookie: e=5; Domain=test\r\nSet-Cookie: YTCypressCookie=planted; Domain={host}\r\n\
             Set-Cookie: f=6; Path=/; HttpOnly\r\nSet-Cookie: g=7; Domain=.{}\r\n\
             Content-Length: 2\r\n\r\nok",
            host.to_uppercase()
        ),
        "/affinity" => "HTTP/1.1 200 OK\r\nSet-Cookie: tp_affinity=planted; Path=/\r\n\
             Set-Cookie: __Host-tp_affinity=planted; Path=/; Secure\r\nSet-Cookie: a=1\r\n\
             Content-Length: 2\r\n\r\nok"
            .to_string(),
        "/gzip-with-length" => format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello{injected}"
        ),
        "/chunked-with-length" => format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n{injected}"
        ),
        "/gzip-until-close" => {
            format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello{injected}")
        }
        "/chunked-twice" => format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n{injected}"
        ),
        _ => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_string(),
    }
}

fn service(op: &str, endpoint: SocketAddr) -> Value {
    json!({"operation_id": op, "task_name": "task", "service": "web", "protocol": "http",
           "endpoints": [endpoint.to_string()]})
}

fn host_of(op: &str) -> String {
    format!("{}.{BASE}", service_hash(op, "task", "web"))
}

/// The proxy for `path` (the relay on or off, TLS with a fresh certificate) with `extra` flags.
fn proxy_for(path: Path, op: &str, job: &Job, extra: &[&str]) -> Served {
    proxy_serving(path, &[service(op, job.addr)], extra)
}

/// [`proxy_for`] with the services file's entries `services`.
fn proxy_serving(path: Path, services: &[Value], extra: &[&str]) -> Served {
    let relay = match path {
        Path::Hyper => "--http1-relay=false",
        _ => "--http1-relay=true",
    };
    let mut flags: Vec<String> = vec!["--auth-enabled=false".into(), relay.into()];
    flags.extend(extra.iter().map(|f| f.to_string()));
    let certs = path.tls().then(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let certified =
            rcgen::generate_simple_self_signed(vec![format!("*.{BASE}")]).expect("cert");
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, certified.cert.pem()).expect("write cert");
        std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write key");
        flags.extend([
            "--tls-cert".to_string(),
            cert.to_string_lossy().into_owned(),
            "--tls-key".to_string(),
            key.to_string_lossy().into_owned(),
            "--tls-listen".to_string(),
            "127.0.0.1:0".to_string(),
        ]);
        (dir, cert)
    });
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Served {
        proxy: FileProxy::start(services, &flags, &[]),
        certs,
    }
}

/// Sends GET `target` with `headers` (`Name: value` lines) over `path`; returns the response
/// head and body as the caller got them (the connection is closed after the answer).
async fn get(
    served: &Served,
    path: Path,
    host: &str,
    target: &str,
    headers: &[&str],
) -> (String, String) {
    let plain = served.proxy.proxy.plain;
    if path != Path::Relay && path != Path::Hyper {
        let mut cmd = tokio::process::Command::new("curl");
        cmd.args(["-s", "-i", "--max-time", "10"]);
        match (path, &served.certs, served.proxy.proxy.tls) {
            (Path::H2, _, _) => {
                cmd.arg("--http2-prior-knowledge");
                cmd.args(["-H", &format!("Host: {host}")]);
                cmd.arg(format!("http://{plain}{target}"));
            }
            (_, Some((_, cert)), Some(tls)) => {
                let port = tls.port();
                cmd.arg(if path == Path::TlsH1 {
                    "--http1.1"
                } else {
                    "--http2"
                });
                cmd.arg("--cacert").arg(cert);
                cmd.args(["--resolve", &format!("{host}:{port}:127.0.0.1")]);
                cmd.arg(format!("https://{host}:{port}{target}"));
            }
            _ => panic!("{path:?} needs the TLS listener"),
        }
        for h in headers {
            cmd.args(["-H", h]);
        }
        let out = cmd.output().await.expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        return (head.to_string(), body.to_string());
    }
    let mut request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n");
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("Connection: close\r\n\r\n");
    let mut s = TcpStream::connect(plain).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_string(), body.to_string())
}

/// Every value of header `name` in a head, in order.
fn values<'a>(head: &'a str, name: &str) -> Vec<&'a str> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .collect()
}

fn status(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_the_proxys_own_on_every_path() {
    let op = "op-forwarding";
    let host = host_of(op);
    let job = Job::spawn(answer, host.clone()).await;
    let spoofed = [
        "X-Forwarded-For: 1.1.1.1",
        "X-Forwarded-For: 2.2.2.2, 3.3.3.3",
        "X-Forwarded-Host: evil.example",
        "X-Forwarded-Proto: https",
        "Forwarded: for=6.6.6.6;host=evil.example;proto=https",
        "X-Real-IP: 6.6.6.6",
    ];
    let mut seen = Vec::new();
    for path in PATHS {
        let served = proxy_for(path, op, &job, &[]);
        let (head, _) = get(&served, path, &host, "/", &spoofed).await;
        assert_eq!(status(&head), 200, "{path:?}: {head}");
        let heads = job.heads();
        assert_eq!(heads.len(), 1, "{path:?}: {heads:?}");
        let forwarded = &heads[0];
        let one = |name: &str| {
            let v = values(forwarded, name);
            assert_eq!(v.len(), 1, "{path:?}: {name} in {forwarded}");
            v[0].to_string()
        };
        assert_eq!(
            one("x-forwarded-for"),
            "1.1.1.1, 2.2.2.2, 3.3.3.3, 127.0.0.1",
            "{path:?}"
        );
        // TLS callers name the TLS port: the host is then quoted in `Forwarded`.
        let (seen_host, scheme) = match path.tls() {
            true => (served.host_seen(&host), "https"),
            false => (host.clone(), "http"),
        };
        let quoted = match path.tls() {
            true => format!("\"{seen_host}\""),
            false => seen_host.clone(),
        };
        assert_eq!(one("x-forwarded-host"), seen_host, "{path:?}");
        assert_eq!(one("x-forwarded-proto"), scheme, "{path:?}");
        assert_eq!(
            one("forwarded"),
            format!("for=127.0.0.1;host={quoted};proto={scheme}"),
            "{path:?}"
        );
        assert_eq!(one("x-real-ip"), "127.0.0.1", "{path:?}");
        assert!(
            !forwarded.contains("evil") && !forwarded.contains("6.6.6.6"),
            "{path:?}: {forwarded}"
        );
        let mut lines: Vec<String> = [
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "forwarded",
            "x-real-ip",
        ]
        .iter()
        .map(|name| format!("{name}: {}", one(name)))
        .collect();
        lines.sort();
        if !path.tls() {
            seen.push(lines);
        }
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_names_with_underscores_are_dropped_unless_allowed() {
    let op = "op-underscores";
    let host = host_of(op);
    let job = Job::spawn(answer, host.clone()).await;
    let sent = [
        "Content_Length: 40",
        "Transfer_Encoding: chunked",
        "X_Forwarded_For: 6.6.6.6",
        "X-Mixed_Name: 1",
        "X-Dashed-Name: kept",
    ];
    for path in PATHS {
        for allowed in [false, true] {
            let flags: &[&str] = if allowed {
                &["--underscores-in-headers"]
            } else {
                &[]
            };
            let served = proxy_for(path, op, &job, flags);
            let (head, _) = get(&served, path, &host, "/", &sent).await;
            assert_eq!(status(&head), 200, "{path:?} {allowed}: {head}");
            let heads = job.heads();
            assert_eq!(heads.len(), 1, "{path:?}: {heads:?}");
            let forwarded = &heads[0];
            for name in [
                "content_length",
                "transfer_encoding",
                "x_forwarded_for",
                "x-mixed_name",
            ] {
                assert_eq!(
                    values(forwarded, name).len(),
                    usize::from(allowed),
                    "{path:?} allowed={allowed}: {name} in {forwarded}"
                );
            }
            assert_eq!(values(forwarded, "x-dashed-name"), ["kept"], "{path:?}");
            assert_eq!(
                values(forwarded, "x-forwarded-for"),
                ["127.0.0.1"],
                "{path:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_cookies_scoped_beyond_the_service_never_reach_callers() {
    let op = "op-cookies";
    let host = host_of(op);
    let job = Job::spawn(answer, host.clone()).await;
    for path in PATHS {
        let served = proxy_for(path, op, &job, &[]);
        let (head, _) = get(&served, path, &host, "/cookies", &[]).await;
        assert_eq!(status(&head), 200, "{path:?}: {head}");
        assert_eq!(
            values(&head, "set-cookie"),
            vec![
                "a=1".to_string(),
                format!("b=2; Domain={host}"),
                "f=6; Path=/; HttpOnly".to_string(),
                format!("g=7; Domain=.{}", host.to_uppercase()),
            ],
            "{path:?}: {head}"
        );
        let metrics = served.proxy.proxy.admin_get("/metrics").1;
        assert!(
            metrics.contains("task_proxy_set_cookies_dropped_total 4"),
            "{path:?}: {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_with_ambiguous_framing_get_502_and_their_connection_is_closed() {
    let op = "op-framing";
    let host = host_of(op);
    let job = Job::spawn(answer, host.clone()).await;
    for path in PATHS {
        let served = proxy_for(path, op, &job, &[]);
        for target in [
            "/gzip-with-length",
            "/chunked-with-length",
            "/gzip-until-close",
            "/chunked-twice",
        ] {
            let (head, body) = get(&served, path, &host, target, &[]).await;
            assert_eq!(
                status(&head),
                502,
                "{path:?} {target}: {head}\r\n\r\n{body}"
            );
            assert!(
                !body.contains("injected") && !body.contains("hello"),
                "{path:?} {target}: {body}"
            );
            // The job's connection is closed, never pooled.
            wait_until(Duration::from_secs(3), "the job connection closed", || {
                job.closed_after(target).then_some(())
            })
            .await;
        }
        // A well-framed request afterwards is served on a fresh connection.
        let (head, body) = get(&served, path, &host, "/", &[]).await;
        assert_eq!((status(&head), body.as_str()), (200, "ok"), "{path:?}");
        job.heads();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_cookies_joined_into_other_cookies_never_reach_the_job() {
    let op = "op-joined-cookie";
    let host = host_of(op);
    let job = Job::spawn(answer, host.clone()).await;
    for path in PATHS {
        let served = proxy_for(path, op, &job, &[]);
        for cookie in [
            "Cookie: a=1, YTCypressCookie=joinedSecret1",
            "Cookie: YTCypressCookie=joinedSecret2, a=1",
            "Cookie: a=1,YTCypressCookie joinedSecret3",
            "Cookie: a=1 YTCypressCookie=joinedSecret4; b=2",
        ] {
            let (head, _) = get(&served, path, &host, "/", &[cookie]).await;
            assert_eq!(status(&head), 200, "{path:?} {cookie}: {head}");
            let heads = job.heads();
            assert_eq!(heads.len(), 1, "{path:?}: {heads:?}");
            assert!(
                !heads[0].contains("joinedSecret") && !heads[0].contains("YTCypressCookie"),
                "{path:?} {cookie}: {}",
                heads[0]
            );
        }
    }
}

/// A sticky service's affinity cookie on every path: the proxy's own (`__Host-` and `Secure`
/// under TLS), a job's attempt at that name dropped, the cookie never forwarded, and the same
/// cookie naming the same job whichever path reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_affinity_cookie_is_the_proxys_own_on_every_path() {
    let op = "op-affinity";
    let host = host_of(op);
    let job = Job::spawn(answer, host.clone()).await;
    let mut sticky = service(op, job.addr);
    sticky["sticky"] = json!(true);
    for path in PATHS {
        let served = proxy_serving(path, std::slice::from_ref(&sticky), &[]);
        let (head, _) = get(&served, path, &host, "/affinity", &[]).await;
        assert_eq!(status(&head), 200, "{path:?}: {head}");
        let set = values(&head, "set-cookie");
        let (name, secure) = match path.tls() {
            true => ("__Host-tp_affinity=", true),
            false => ("tp_affinity=", false),
        };
        assert_eq!(set.len(), 2, "{path:?}: {head}");
        assert_eq!(set[0], "a=1", "{path:?}");
        let ours = set[1];
        assert!(
            ours.starts_with(name) && !ours.contains("planted"),
            "{path:?}: {ours}"
        );
        assert_eq!(ours.contains("; Secure"), secure, "{path:?}: {ours}");
        assert!(
            ours.ends_with("; HttpOnly; SameSite=Lax"),
            "{path:?}: {ours}"
        );
        job.heads();

        // Sent back, it is taken out before the job; with it the job answers without a new
        // one.
        let token = ours
            .split(';')
            .next()
            .and_then(|pair| pair.split_once('='))
            .map(|(_, v)| v.to_string())
            .unwrap_or_default();
        let cookie = format!("Cookie: a=1; {name}{token}; b=2");
        let (head, _) = get(&served, path, &host, "/", &[&cookie]).await;
        assert_eq!(status(&head), 200, "{path:?}: {head}");
        assert!(values(&head, "set-cookie").is_empty(), "{path:?}: {head}");
        let heads = job.heads();
        assert_eq!(heads.len(), 1, "{path:?}: {heads:?}");
        assert!(
            !heads[0].contains(&token) && heads[0].contains("a=1; b=2"),
            "{path:?}: {}",
            heads[0]
        );
    }

    // `--sticky-sessions-default` makes a service that does not say sticky; `"sticky": false`
    // keeps one out.
    let plain = service(op, job.addr);
    let mut not_sticky = service("op-not-sticky", job.addr);
    not_sticky["sticky"] = json!(false);
    let served = proxy_serving(
        Path::Relay,
        &[plain, not_sticky],
        &["--sticky-sessions-default"],
    );
    let (head, _) = get(&served, Path::Relay, &host, "/", &[]).await;
    assert_eq!(values(&head, "set-cookie").len(), 1, "{head}");
    let (head, _) = get(&served, Path::Relay, &host_of("op-not-sticky"), "/", &[]).await;
    assert!(values(&head, "set-cookie").is_empty(), "{head}");
    job.heads();

    // Behind an ingress that ends TLS (`--portal-scheme https`) the plaintext listener's
    // cookie is the secure one, and only that name counts.
    for path in [Path::Relay, Path::H2] {
        let served = proxy_serving(
            path,
            std::slice::from_ref(&sticky),
            &["--portal-scheme", "https"],
        );
        let (head, _) = get(&served, path, &host, "/", &[]).await;
        let set = values(&head, "set-cookie");
        assert_eq!(set.len(), 1, "{path:?}: {head}");
        assert!(
            set[0].starts_with("__Host-tp_affinity=") && set[0].contains("; Secure"),
            "{path:?}: {head}"
        );
        let token = set[0]
            .split(';')
            .next()
            .and_then(|pair| pair.split_once('='))
            .map(|(_, v)| v.to_string())
            .unwrap_or_default();
        let plain_name = format!("Cookie: tp_affinity={token}");
        let (head, _) = get(&served, path, &host, "/", &[&plain_name]).await;
        assert_eq!(values(&head, "set-cookie").len(), 1, "{path:?}: {head}");
        let secure_name = format!("Cookie: __Host-tp_affinity={token}");
        let (head, _) = get(&served, path, &host, "/", &[&secure_name]).await;
        assert!(values(&head, "set-cookie").is_empty(), "{path:?}: {head}");
        job.heads();
    }
}
