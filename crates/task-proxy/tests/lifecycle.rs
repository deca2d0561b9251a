//! The request lifecycle both forwarding paths share, end to end through the real binary: the
//! same raw requests are sent once to the HTTP/1.1 relay and once to hyper's path
//! (`--http1-relay=false`), against a test job, and must meet the same timeouts and retries.
//! - The response timeout runs from when the whole request was passed to the job: a slow upload
//!   does not eat into the job's time, and the 504 comes one timeout after the request ended.
//! - A pooled connection the job closes before answering is not an attempt for a request that
//!   may be sent twice (sent again, answered 200 with one job); a POST is not sent twice (502).

mod support;

use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::file_proxy::FileProxy;
use support::BASE_DOMAIN as BASE;
use task_proxy::routing::service_hash;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A job answering `ok` to every request once it has read all of it: after `/delay/<ms>`
/// milliseconds for that path; `/once` is answered only as the first request of a connection
/// (later ones close the connection unanswered, as a job that closed it while it was idle).
struct Job {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl Job {
    async fn spawn() -> Job {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(s));
            }
        });
        Job {
            addr,
            connections,
            _task: task,
        }
    }
}

async fn serve(mut s: TcpStream) {
    let mut pending = Vec::new();
    let mut served = 0;
    loop {
        let Some((path, len)) = read_request(&mut s, &mut pending).await else {
            return;
        };
        pending.drain(..len);
        served += 1;
        if path == "/once" && served > 1 {
            return;
        }
        if let Some(ms) = path.strip_prefix("/delay/") {
            let ms = ms.parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        if s.write_all(answer).await.is_err() {
            return;
        }
    }
}

/// Reads one whole request (head and a `Content-Length` body): its path and length.
async fn read_request(s: &mut TcpStream, pending: &mut Vec<u8>) -> Option<(String, usize)> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
            let body: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if pending.len() >= end + 4 + body {
                let path = head.split(' ').nth(1).unwrap_or("").to_string();
                return Some((path, end + 4 + body));
            }
        }
        match s.read(&mut buf).await {
            Ok(n) if n > 0 => pending.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
}

/// Writes `pieces` with `gap` between them, then reads the answer's status: the status and
/// the time from the last piece to the answer.
async fn exchange(s: &mut TcpStream, pieces: &[String], gap: Duration) -> (u16, Duration) {
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        s.write_all(piece.as_bytes()).await.expect("write");
    }
    let sent = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Every answer here is small and has a Content-Length.
    let status = loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let body: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + body {
                break head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
            }
        }
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break 0,
        }
    };
    (status, sent.elapsed())
}

fn start(op: &str, job: &Job, relay: bool) -> FileProxy {
    let service = json!({"operation_id": op, "task_name": "task", "service": "web",
                         "protocol": "http", "endpoints": [job.addr.to_string()]});
    let flag = format!("--http1-relay={relay}");
    FileProxy::start(
        &[service],
        &[
            "--auth-enabled=false",
            &flag,
            "--upstream-response-timeout",
            "2s",
        ],
        &[],
    )
}

fn host(op: &str) -> String {
    format!("{}.{BASE}", service_hash(op, "task", "web"))
}

/// A POST to `path` sent in four pieces: the head in two, then its body in two.
fn slow_post(path: &str, host: &str) -> Vec<String> {
    vec![
        format!("POST {path} HTTP/1.1\r\n"),
        format!("Host: {host}\r\nContent-Length: 4\r\n\r\n"),
        "ab".into(),
        "cd".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_response_timeout_runs_from_the_end_of_the_request_on_both_paths() {
    let job = Job::spawn().await;
    let op = "op-lifecycle-timeout";
    let host = host(op);
    for relay in [true, false] {
        let served = start(op, &job, relay);
        let mut s = TcpStream::connect(served.proxy.plain)
            .await
            .expect("connect");
        // 1.5 s of upload and 1.5 s of the job: 3 s in all, but the job answered within the
        // 2 s it had once it had the request.
        let gap = Duration::from_millis(500);
        let (status, _) = exchange(&mut s, &slow_post("/delay/1500", &host), gap).await;
        assert_eq!(
            status, 200,
            "relay {relay}: a slow upload ate into the job's time"
        );

        // A job that takes 3.5 s: 504, 2 s after the request ended (not after it began).
        let (status, waited) = exchange(&mut s, &slow_post("/delay/3500", &host), gap).await;
        assert_eq!(status, 504, "relay {relay}");
        assert!(
            waited >= Duration::from_millis(1900) && waited < Duration::from_millis(2900),
            "relay {relay}: 504 after {waited:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_closed_unanswered_is_not_an_attempt_on_both_paths() {
    let job = Job::spawn().await;
    let op = "op-lifecycle-stale";
    let host = host(op);
    let get = format!("GET /once HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let post = format!("POST /once HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n");
    let mut runs = Vec::new();
    for relay in [true, false] {
        let served = start(op, &job, relay);
        let before = job.connections.load(Ordering::SeqCst);
        // One caller connection: its requests go through one worker and its pool.
        let mut s = TcpStream::connect(served.proxy.plain)
            .await
            .expect("connect");
        let mut statuses = Vec::new();
        for request in [&get, &get, &post] {
            let (status, _) = exchange(&mut s, std::slice::from_ref(request), Duration::ZERO).await;
            statuses.push(status);
        }
        let opened = job.connections.load(Ordering::SeqCst) - before;
        runs.push((relay, statuses, opened));
    }
    for (relay, statuses, opened) in &runs {
        // The second GET found the pooled connection closed and went on a new one (the only
        // job was not used up); the POST, which may not be sent twice, was not.
        assert_eq!(statuses, &[200, 200, 502], "relay {relay}");
        assert_eq!(*opened, 2, "relay {relay}: job connections opened");
    }
}
