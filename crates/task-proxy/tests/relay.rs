//! The HTTP/1.1 relay end to end: a scripted job answers with exact bytes (chunked bodies with
//! trailers, interim 1xx responses, HTTP/1.0 bodies delimited by close, hop-by-hop headers,
//! redirects to itself, idle connections it closes), and each case is run through the real
//! binary twice, with the relay and with `--http1-relay=false` (the general path), which must
//! give callers the same answers. Pipelined requests, hand-over to the general path in the
//! middle of a connection, stale pooled connections and the response timeout are covered too.

mod support;

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::file_proxy::FileProxy;
use support::BASE_DOMAIN as BASE;
use task_proxy::routing::service_hash;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the scripted job answers for a request path.
fn scripted_answer(method: &str, path: &str, own: SocketAddr) -> (Vec<u8>, bool) {
    let path = path.split('?').next().unwrap_or(path);
    let (answer, close): (String, bool) = match path {
        "/fixed" if method == "HEAD" => ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".into(), false),
        "/fixed" => ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".into(), false),
        "/chunked" => (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-t\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-t: 1\r\n\r\n".into(),
            false,
        ),
        "/http10" => ("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close".into(), true),
        "/close-after" => ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".into(), true),
        "/redirect" => (
            format!("HTTP/1.1 302 Found\r\nLocation: http://{own}/landed?x=1\r\nContent-Length: 0\r\n\r\n"),
            false,
        ),
        "/early-hints" => (
            "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".into(),
            false,
        ),
        "/hop" => (
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Agent: j\r\nX-Kept: 1\r\nContent-Length: 2\r\n\r\nok".into(),
            false,
        ),
        "/no-content" => ("HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n".into(), false),
        "/cookies" => (
            "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2; Domain=.tp.test\r\nSet-Cookie: YTCypressCookie=planted\r\nSet-Cookie: c=3; Path=/\r\nContent-Length: 2\r\n\r\nok".into(),
            false,
        ),
        "/bad" => ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok".into(), true),
        _ => ("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".into(), false),
    };
    (answer.into_bytes(), close)
}

/// A job answering [`scripted_answer`]s, recording request heads, and closing connections that
/// stay idle longer than `idle_close`.
struct ScriptedJob {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl ScriptedJob {
    async fn spawn(idle_close: Duration) -> ScriptedJob {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let record = heads.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let mut pending = Vec::new();
                    let mut buf = [0u8; 8192];
                    loop {
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&pending[..end + 4]).into_owned();
                            let chunked = header(&head, "transfer-encoding").is_some();
                            // The tests' chunked bodies have no trailers: they end at 0 CRLF CRLF.
                            let length = match chunked {
                                true => match pending[end + 4..]
                                    .windows(5)
                                    .position(|w| w == b"0\r\n\r\n")
                                {
                                    Some(i) => i + 5,
                                    None => break,
                                },
                                false => header(&head, "content-length")
                                    .and_then(|v| v.parse::<usize>().ok())
                                    .unwrap_or(0),
                            };
                            if pending.len() < end + 4 + length {
                                break;
                            }
                            pending.drain(..end + 4 + length);
                            let mut words = head.split(' ');
                            let method = words.next().unwrap_or("").to_string();
                            let path = words.next().unwrap_or("").to_string();
                            record.lock().expect("heads").push(head);
                            if path == "/slow" {
                                tokio::time::sleep(Duration::from_secs(3)).await;
                            }
                            let (answer, close) = scripted_answer(&method, &path, addr);
                            if s.write_all(&answer).await.is_err() || close {
                                return;
                            }
                        }
                        let read = tokio::time::timeout(idle_close, s.read(&mut buf)).await;
                        match read {
                            Ok(Ok(n)) if n > 0 => pending.extend_from_slice(&buf[..n]),
                            _ => return,
                        }
                    }
                });
            }
        });
        ScriptedJob {
            addr,
            heads,
            _task: task,
        }
    }

    fn heads(&self) -> Vec<String> {
        std::mem::take(&mut *self.heads.lock().expect("heads"))
    }
}

/// The value of header `name` in a head (first one, case-insensitive name).
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Every value of header `name` in a head, in order.
fn lines_of(head: &str, name: &str) -> Vec<String> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

/// One response read off a connection: status, head, the body as received (chunked framing
/// kept) and the trailer-free decoded body.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        header(&self.head, name)
    }
}

/// Reads one response for a request with `method` from `s`, `buf` holding bytes already read.
/// Decodes chunked bodies (keeping trailers in the body text after a `|`).
async fn read_answer(s: &mut TcpStream, buf: &mut Vec<u8>, method: &str) -> Option<Answer> {
    async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
        let mut chunk = [0u8; 4096];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await,
            Ok(Ok(n)) if n > 0 && { buf.extend_from_slice(&chunk[..n]); true }
        )
    }
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if !fill(s, buf).await {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let mut body = Vec::new();
    if method == "HEAD" || status == 204 || status == 304 {
    } else if header(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                if !fill(s, buf).await {
                    return None;
                }
            };
            let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
            let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
            buf.drain(..line_end + 2);
            if size == 0 {
                // Trailers up to the empty line.
                let end = loop {
                    if buf.starts_with(b"\r\n") {
                        break 0;
                    }
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 2;
                    }
                    if !fill(s, buf).await {
                        return None;
                    }
                };
                body.push(b'|');
                body.extend_from_slice(&buf[..end]);
                buf.drain(..end + 2);
                break;
            }
            while buf.len() < size + 2 {
                if !fill(s, buf).await {
                    return None;
                }
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
        }
    } else if let Some(length) = header(&head, "content-length") {
        let length: usize = length.parse().ok()?;
        while buf.len() < length {
            if !fill(s, buf).await {
                return None;
            }
        }
        body.extend(buf.drain(..length));
    } else {
        while fill(s, buf).await {}
        body.append(buf);
    }
    Some(Answer {
        status,
        head,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn service(op: &str, endpoint: SocketAddr) -> Value {
    json!({"operation_id": op, "task_name": "task", "service": "web", "protocol": "http",
           "endpoints": [endpoint.to_string()]})
}

fn host(op: &str) -> String {
    format!("{}.{BASE}", service_hash(op, "task", "web"))
}

/// Sends `requests` one after the other on one connection, reading each answer; stops at the
/// first connection close.
async fn converse(proxy: SocketAddr, requests: &[(&str, String)]) -> Vec<Answer> {
    let mut s = TcpStream::connect(proxy).await.expect("connect");
    let mut buf = Vec::new();
    let mut answers = Vec::new();
    for (method, raw) in requests {
        if s.write_all(raw.as_bytes()).await.is_err() {
            break;
        }
        match read_answer(&mut s, &mut buf, method).await {
            Some(a) => answers.push(a),
            None => break,
        }
    }
    answers
}

fn get(method: &str, path: &str, host: &str, extra: &str) -> (&'static str, String) {
    let method: &'static str = match method {
        "HEAD" => "HEAD",
        "POST" => "POST",
        _ => "GET",
    };
    (
        method,
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n"),
    )
}

/// The conversation every relay case runs, in order, on one connection.
fn conversation(host: &str) -> Vec<(&'static str, String)> {
    vec![
        get("GET", "/fixed", host, ""),
        get("GET", "/chunked", host, ""),
        get("HEAD", "/fixed", host, ""),
        get("GET", "/early-hints", host, ""),
        get("GET", "/redirect", host, ""),
        get("GET", "/hop", host, ""),
        get("GET", "/no-content", host, ""),
        get("POST", "/fixed", host, "Content-Length: 3\r\n"),
        get("GET", "/close-after", host, ""),
        get("GET", "/fixed", host, ""),
        // Forwarding headers and names with `_` from the caller, cookies from the job.
        get(
            "GET",
            "/cookies",
            host,
            "X-Forwarded-For: 1.1.1.1\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-For: 2.2.2.2\r\n\
             Forwarded: for=6.6.6.6\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\n\
             X_Forwarded_For: 6.6.6.6\r\nCookie: a=1, YTCypressCookie=joined\r\n",
        ),
        // A chunked upload: the general path takes the connection over from here.
        (
            "POST",
            format!("POST /fixed HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
        ),
        get("GET", "/chunked", host, ""),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_general_path_answer_alike() {
    let job = ScriptedJob::spawn(Duration::from_secs(30)).await;
    let op = "op-relay";
    let host = host(op);
    let mut runs = Vec::new();
    for relay in ["true", "false"] {
        let flag = format!("--http1-relay={relay}");
        let served = FileProxy::start(
            &[service(op, job.addr)],
            &["--auth-enabled=false", &flag],
            &[],
        );
        let mut requests = conversation(&host);
        // The POST with Content-Length carries its body.
        requests[7].1.push_str("abc");
        let mut answers = converse(served.proxy.plain, &requests).await;
        // A body delimited by the job closing, on a connection of its own.
        answers.extend(converse(served.proxy.plain, &[get("GET", "/http10", &host, "")]).await);
        runs.push((relay, answers, job.heads()));
    }
    let (_, relayed, relayed_heads) = &runs[0];
    let (_, general, general_heads) = &runs[1];
    assert_eq!(relayed.len(), 14, "every request answered: {relayed:#?}");
    assert_eq!(general.len(), 14, "every request answered: {general:#?}");

    let bodies: Vec<(u16, &str)> = relayed
        .iter()
        .map(|a| (a.status, a.body.as_str()))
        .collect();
    assert_eq!(
        bodies,
        vec![
            (200, "hello"),
            (200, "hello world|x-t: 1\r\n"),
            (200, ""),
            (200, "ok"),
            (302, ""),
            (200, "ok"),
            (204, ""),
            (200, "hello"),
            (200, "ok"),
            (200, "hello"),
            (200, "ok"),
            (200, "hello"),
            // The general path passes trailers on only to callers that sent `TE: trailers`.
            (200, "hello world|"),
            (200, "until close"),
        ]
    );
    for (i, (r, g)) in relayed.iter().zip(general).enumerate() {
        let without_trailers = |body: &str| body.split('|').next().unwrap_or("").to_string();
        assert_eq!(
            (r.status, without_trailers(&r.body)),
            (g.status, without_trailers(&g.body)),
            "answer {i}"
        );
        for name in [
            "location",
            "x-hop",
            "keep-alive",
            "proxy-agent",
            "x-kept",
            "x-a",
        ] {
            assert_eq!(r.header(name), g.header(name), "{name} of answer {i}");
        }
    }
    let redirect = &relayed[4];
    assert_eq!(
        redirect.header("location"),
        Some(format!("http://{host}/landed?x=1").as_str())
    );
    assert_eq!(relayed[5].header("x-hop"), None);
    assert_eq!(relayed[5].header("x-kept"), Some("1"));
    assert_eq!(relayed[13].header("connection"), Some("close"));
    // Only the job's host-only cookies reach the caller, on both paths.
    let cookies = |a: &Answer| -> Vec<String> {
        a.head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    };
    assert_eq!(cookies(&relayed[10]), ["a=1", "c=3; Path=/"]);
    assert_eq!(cookies(&general[10]), ["a=1", "c=3; Path=/"]);

    // The job saw the same requests both times, with the same forwarding headers.
    assert_eq!(relayed_heads.len(), general_heads.len());
    for (r, g) in relayed_heads.iter().zip(general_heads) {
        assert_eq!(r.lines().next(), g.lines().next());
        // The forwarding headers are byte for byte the same lines (names lowercase).
        let lines = |head: &str| -> Vec<String> {
            let mut l: Vec<String> = head
                .split("\r\n")
                .filter(|l| {
                    let name = l.split(':').next().unwrap_or("").to_ascii_lowercase();
                    name.contains("forwarded") || name == "x-real-ip" || name.contains('_')
                })
                .map(str::to_string)
                .collect();
            l.sort();
            l
        };
        assert_eq!(lines(r), lines(g), "in {r}");
        for name in ["host", "cookie"] {
            assert_eq!(header(r, name), header(g, name), "{name} in {r}");
        }
    }
    let cookie_head = relayed_heads
        .iter()
        .find(|h| h.starts_with("GET /cookies "))
        .expect("the /cookies request reached the job");
    assert_eq!(
        lines_of(cookie_head, "x-forwarded-for"),
        ["1.1.1.1, 2.2.2.2, 127.0.0.1"]
    );
    assert_eq!(lines_of(cookie_head, "x-real-ip"), ["127.0.0.1"]);
    assert_eq!(lines_of(cookie_head, "x-forwarded-proto"), ["http"]);
    assert_eq!(lines_of(cookie_head, "x-forwarded-host"), [host.as_str()]);
    assert_eq!(
        lines_of(cookie_head, "forwarded"),
        [format!("for=127.0.0.1;host={host};proto=http")]
    );
    assert_eq!(
        lines_of(cookie_head, "x_forwarded_for"),
        Vec::<String>::new()
    );
    assert_eq!(lines_of(cookie_head, "cookie"), ["a=1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_heads_lose_hop_by_hop_headers_and_credentials() {
    let job = ScriptedJob::spawn(Duration::from_secs(30)).await;
    let op = "op-relay-heads";
    let host = host(op);
    let served = FileProxy::start(&[service(op, job.addr)], &["--auth-enabled=false"], &[]);
    let extra = "Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic eA==\r\n\
                 Authorization: OAuth secret-token\r\nCookie: a=1; YTCypressCookie=secret-cookie; b=2\r\n\
                 X-Forwarded-For: 10.1.2.3\r\nTE: trailers\r\nUser-Agent: relay-test\r\n";
    let answers = converse(
        served.proxy.plain,
        &[get("GET", "/fixed?q=1", &host, extra)],
    )
    .await;
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].status, 200);
    let heads = job.heads();
    let head = &heads[0];
    assert!(head.starts_with("GET /fixed?q=1 HTTP/1.1\r\n"), "{head}");
    for gone in [
        "connection",
        "keep-alive",
        "proxy-authorization",
        "authorization",
    ] {
        assert_eq!(header(head, gone), None, "{gone} in {head}");
    }
    assert!(!head.contains("secret"), "{head}");
    assert_eq!(header(head, "cookie"), Some("a=1; b=2"));
    assert_eq!(header(head, "x-forwarded-for"), Some("10.1.2.3, 127.0.0.1"));
    assert_eq!(header(head, "x-forwarded-proto"), Some("http"));
    assert_eq!(header(head, "x-forwarded-host"), Some(host.as_str()));
    assert_eq!(header(head, "te"), Some("trailers"));
    assert_eq!(header(head, "user-agent"), Some("relay-test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_across_the_hand_over() {
    let job = ScriptedJob::spawn(Duration::from_secs(30)).await;
    let op = "op-relay-pipe";
    let host = host(op);
    let served = FileProxy::start(&[service(op, job.addr)], &["--auth-enabled=false"], &[]);
    let mut s = TcpStream::connect(served.proxy.plain)
        .await
        .expect("connect");
    let all = format!(
        "GET /fixed HTTP/1.1\r\nHost: {host}\r\n\r\n\
         POST /fixed HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\n\r\nabc\
         GET /chunked HTTP/1.1\r\nHost: {host}\r\n\r\n\
         POST /fixed HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n\
         GET /redirect HTTP/1.1\r\nHost: {host}\r\n\r\n"
    );
    s.write_all(all.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let mut got = Vec::new();
    for method in ["GET", "POST", "GET", "POST", "GET"] {
        let a = read_answer(&mut s, &mut buf, method).await.expect("answer");
        got.push((a.status, a.body));
    }
    assert_eq!(
        got,
        vec![
            (200, "hello".to_string()),
            (200, "hello".to_string()),
            (200, "hello world|x-t: 1\r\n".to_string()),
            (200, "hello".to_string()),
            (302, String::new()),
        ]
    );
    let paths: Vec<String> = job
        .heads()
        .iter()
        .map(|h| h.lines().next().unwrap_or("").to_string())
        .collect();
    assert_eq!(paths.len(), 5, "{paths:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_job_closed_while_pooled_are_not_used() {
    // The job closes keep-alive connections idle for 200 ms.
    let job = ScriptedJob::spawn(Duration::from_millis(200)).await;
    let op = "op-relay-stale";
    let host = host(op);
    let served = FileProxy::start(&[service(op, job.addr)], &["--auth-enabled=false"], &[]);
    for round in 0..4 {
        // Several POSTs (never replayed) on pooled connections the job has closed meanwhile.
        let answers = converse(
            served.proxy.plain,
            &[get("POST", "/fixed", &host, "Content-Length: 0\r\n")],
        )
        .await;
        assert_eq!(answers.len(), 1, "round {round}");
        assert_eq!(answers[0].status, 200, "round {round}: {:?}", answers[0]);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_job_gets_504_and_the_connection_goes_on() {
    let job = ScriptedJob::spawn(Duration::from_secs(30)).await;
    let op = "op-relay-slow";
    let host = host(op);
    let served = FileProxy::start(
        &[service(op, job.addr)],
        &["--auth-enabled=false", "--upstream-response-timeout", "1s"],
        &[],
    );
    let started = std::time::Instant::now();
    let answers = converse(
        served.proxy.plain,
        &[
            get("GET", "/slow", &host, ""),
            get("GET", "/fixed", &host, ""),
            get("GET", "/bad", &host, ""),
        ],
    )
    .await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, vec![504, 200, 502], "{answers:#?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
