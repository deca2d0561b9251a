//! HTTP/2 callers to HTTP/1.1 jobs over the relay's raw job connections
//! (`--raw-job-streams`, on by default): a scripted job answers with exact bytes and counts
//! the connections it accepts, and every case runs with the raw connections and with hyper's
//! HTTP/1.1 client (`--raw-job-streams=false`), which must look the same to the caller and to
//! the job: chunked bodies with trailers, one job connection reused across streams, no reuse
//! after `Connection: close` or a body cut by the job (whose stream is reset), and ambiguous
//! framing answered 502.

mod support;

use bytes::Bytes;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use support::file_proxy::FileProxy;
use support::BASE_DOMAIN as BASE;
use task_proxy::routing::service_hash;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn answer(path: &str) -> (&'static [u8], bool) {
    match path {
        "/fixed" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello",
            false,
        ),
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-t\r\n\r\n\
              5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-t: 1\r\n\r\n",
            false,
        ),
        "/close-after" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            true,
        ),
        // Announces 10 bytes, sends 3 and closes.
        "/cut" => (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true),
        "/http10" => (b"HTTP/1.0 200 OK\r\n\r\nuntil close", true),
        "/te-and-cl" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            // Kept open: only the proxy decides it is not reused.
            false,
        ),
        _ => (
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            false,
        ),
    }
}

/// A job answering bodiless requests with [`answer`], counting its connections and keeping
/// the request heads.
struct Job {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    heads: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Job {
    async fn spawn() -> Job {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (count, record) = (accepted.clone(), heads.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(s, record.clone()));
            }
        });
        Job {
            addr,
            accepted,
            heads,
        }
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn serve(mut s: TcpStream, heads: Arc<std::sync::Mutex<Vec<String>>>) {
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end + 4]).into_owned();
            pending.drain(..end + 4);
            let path = head.split(' ').nth(1).unwrap_or("").to_string();
            heads.lock().expect("heads").push(head);
            let (bytes, close) = answer(&path);
            if s.write_all(bytes).await.is_err() {
                return;
            }
            if path == "/cut" {
                // The head reaches the caller before the cut (a stream reset drops frames
                // still queued for it).
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            if close {
                return;
            }
        }
        match s.read(&mut buf).await {
            Ok(n) if n > 0 => pending.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
}

/// What an HTTP/2 caller got: status, a header, the body, trailers, or the stream's error.
#[derive(Debug, PartialEq, Eq)]
struct Got {
    status: u16,
    x_a: Option<String>,
    body: String,
    trailers: Option<String>,
    reset: bool,
}

async fn h2_get(client: &h2::client::SendRequest<Bytes>, authority: &str, path: &str) -> Got {
    let mut client = client.clone().ready().await.expect("ready");
    let req = http::Request::get(format!("http://{authority}{path}"))
        .body(())
        .expect("request");
    let (resp, _) = client.send_request(req, true).expect("send");
    let resp = resp.await.expect("response head");
    let status = resp.status().as_u16();
    let x_a = resp
        .headers()
        .get("x-a")
        .map(|v| v.to_str().unwrap_or("").to_string());
    let mut body = resp.into_body();
    let mut data = Vec::new();
    let mut reset = false;
    while let Some(chunk) = body.data().await {
        match chunk {
            Ok(chunk) => {
                let _ = body.flow_control().release_capacity(chunk.len());
                data.extend_from_slice(&chunk);
            }
            Err(_) => {
                reset = true;
                break;
            }
        }
    }
    let trailers = match reset {
        true => None,
        false => match body.trailers().await {
            Ok(t) => t.and_then(|t| t.get("x-t").map(|v| v.to_str().unwrap_or("").to_string())),
            Err(_) => {
                reset = true;
                None
            }
        },
    };
    Got {
        status,
        x_a,
        body: String::from_utf8_lossy(&data).into_owned(),
        trailers,
        reset,
    }
}

/// Runs the cases on one HTTP/2 connection: what the caller got, and the job's connection
/// count after each request.
async fn run(raw: bool) -> (Vec<(Got, usize)>, Vec<String>) {
    let job = Job::spawn().await;
    let op = "op-h2-raw";
    let service = json!({"operation_id": op, "task_name": "task", "service": "web",
                         "protocol": "http", "endpoints": [job.addr.to_string()]});
    let flag = format!("--raw-job-streams={raw}");
    // One worker: pools are per worker, and the connection counts must not depend on which
    // worker took the connection.
    let served = FileProxy::start(
        &[service],
        &["--auth-enabled=false", &flag, "--worker-threads", "1"],
        &[],
    );
    let authority = format!("{}.{BASE}", service_hash(op, "task", "web"));
    let tcp = TcpStream::connect(served.proxy.plain)
        .await
        .expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut seen = Vec::new();
    for path in [
        "/fixed",
        "/fixed",
        "/chunked",
        "/fixed",
        "/close-after",
        "/fixed",
        "/cut",
        "/fixed",
        "/http10",
        "/fixed",
        "/te-and-cl",
        "/fixed",
    ] {
        let got = h2_get(&client, &authority, path).await;
        // The job counts a connection when it accepts it; the proxy reuses or opens one only
        // for the next request, so the count is read after this one's answer.
        seen.push((got, job.connections()));
    }
    let heads = std::mem::take(&mut *job.heads.lock().expect("heads"));
    (seen, heads)
}

fn ok(body: &str, x_a: Option<&str>, trailers: Option<&str>) -> Got {
    Got {
        status: 200,
        x_a: x_a.map(str::to_string),
        body: body.into(),
        trailers: trailers.map(str::to_string),
        reset: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_callers_get_the_same_answers_over_raw_job_connections() {
    let (raw, raw_heads) = run(true).await;
    let (hyper, hyper_heads) = run(false).await;
    let cut = Got {
        status: 200,
        x_a: None,
        body: "abc".into(),
        trailers: None,
        reset: true,
    };
    let bad = |got: &Got| got.status;
    let expected = [
        (ok("hello", Some("1"), None), 1),
        // The same job connection carries the next stream.
        (ok("hello", Some("1"), None), 1),
        // Chunks decoded, the trailers passed on as HTTP/2 trailers.
        (ok("hello world", None, Some("1")), 1),
        (ok("hello", Some("1"), None), 1),
        // `Connection: close`: the connection is not pooled, the next request opens one.
        (ok("ok", None, None), 1),
        (ok("hello", Some("1"), None), 2),
        // A body the job cut: the stream is reset, the connection not pooled.
        (cut, 2),
        (ok("hello", Some("1"), None), 3),
        // An HTTP/1.0 body delimited by the close.
        (ok("until close", None, None), 3),
        (ok("hello", Some("1"), None), 4),
    ];
    for (name, seen) in [("raw", &raw), ("hyper", &hyper)] {
        assert_eq!(seen.len(), 12, "{name}");
        for (i, (want, got)) in expected.iter().zip(seen.iter()).enumerate() {
            assert_eq!(got, want, "{name}: request {i}");
        }
        // Transfer-Encoding with Content-Length: refused, and that connection not pooled.
        assert_eq!(bad(&seen[10].0), 502, "{name}: {:?}", seen[10]);
        assert_eq!(seen[11], (ok("hello", Some("1"), None), 5), "{name}");
    }
    // The job saw the same heads from both (header order aside).
    assert_eq!(raw_heads.len(), hyper_heads.len());
    for (r, h) in raw_heads.iter().zip(&hyper_heads) {
        let lines = |head: &str| {
            let mut l: Vec<String> = head
                .split("\r\n")
                .filter(|l| !l.is_empty())
                .map(|l| l.to_ascii_lowercase())
                .collect();
            l[1..].sort();
            l
        };
        assert_eq!(lines(r), lines(h));
    }
    assert!(
        raw_heads[0]
            .to_ascii_lowercase()
            .contains("\r\nte: trailers\r\n"),
        "{}",
        raw_heads[0]
    );
}
