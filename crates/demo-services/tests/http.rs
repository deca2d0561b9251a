//! The HTTP job against real peers: curl (HTTP/1.1 and h2c prior knowledge), python
//! `websockets`, and a tokio-tungstenite client.

use std::process::Stdio;
use std::time::{Duration, Instant};

use demo_services::{pattern_byte, spawn_http, spawn_http_on};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;

const HTTP1: &str = "--http1.1";
const HTTP2: &str = "--http2-prior-knowledge";

/// Runs curl with `args` and returns its stdout; fails the test if curl fails.
/// The status code of a `method` request to `url`, as curl prints it.
async fn status_of(method: &str, url: &str) -> String {
    curl(&["-o", "/dev/null", "-w", "%{http_code}", "-X", method, url]).await
}

async fn curl(args: &[&str]) -> String {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .await
        .expect("curl runs");
    assert!(
        output.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("curl printed UTF-8")
}

#[tokio::test]
async fn index_names_the_job_over_http1_and_http2() {
    let job = spawn_http("alpha").await;
    for (protocol, status_line) in [(HTTP1, "HTTP/1.1 200"), (HTTP2, "HTTP/2 200")] {
        let response = curl(&["-i", protocol, &format!("{}/", job.url())]).await;
        assert!(response.starts_with(status_line), "{protocol}: {response}");
        assert!(
            response.contains("x-demo-job: alpha\r\n"),
            "{protocol}: {response}"
        );
        assert!(
            response.contains("demo job alpha"),
            "{protocol}: {response}"
        );
    }
    // Every answer carries the job's name, errors included.
    let response = curl(&["-i", &format!("{}/no/such/page", job.url())]).await;
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    assert!(response.contains("x-demo-job: alpha\r\n"), "{response}");
}

#[tokio::test]
async fn headers_echo_reports_what_reached_the_job() {
    let job = spawn_http("echo").await;
    for (protocol, version) in [(HTTP1, "HTTP/1.1"), (HTTP2, "HTTP/2.0")] {
        let url = format!("{}/headers?q=1", job.url());
        let output = curl(&[
            protocol,
            "-H",
            "x-test: a",
            "-H",
            "x-test: b",
            "-d",
            "hello",
            &url,
        ])
        .await;
        let echo: Value = serde_json::from_str(&output).expect("JSON");
        assert_eq!(echo["job"], "echo");
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["path"], "/headers?q=1");
        assert_eq!(echo["authority"], job.addr.to_string());
        assert_eq!(echo["version"], version);
        assert_eq!(echo["headers"]["x-test"], "a, b");
        assert_eq!(echo["body_bytes"], 5);
        let listed: Vec<&Value> = echo["header_list"]
            .as_array()
            .expect("header_list")
            .iter()
            .filter(|pair| pair[0] == "x-test")
            .collect();
        assert_eq!(listed.len(), 2, "{echo}");
    }
}

#[tokio::test]
async fn sse_events_arrive_one_by_one() {
    let job = spawn_http("sse").await;
    for protocol in [HTTP1, HTTP2] {
        let url = format!("{}/sse?count=4&interval_ms=300", job.url());
        let mut child = Command::new("curl")
            .args(["-sS", "-N", protocol, &url])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("curl runs");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut arrivals = Vec::new();
        while let Some(line) = lines.next_line().await.expect("read curl output") {
            if let Some(data) = line.strip_prefix("data: ") {
                arrivals.push((data.to_owned(), Instant::now()));
            }
        }
        let data: Vec<&str> = arrivals.iter().map(|(data, _)| data.as_str()).collect();
        assert_eq!(data, ["0", "1", "2", "3"], "{protocol}");
        let spread = arrivals[3].1 - arrivals[0].1;
        assert!(
            spread >= Duration::from_millis(700),
            "{protocol}: events were buffered, all arrived within {spread:?}"
        );
    }
}

#[tokio::test]
async fn websocket_echo_with_python_websockets() {
    let job = spawn_http("ws").await;
    let script = r#"
import asyncio, sys, websockets
async def main():
    async with websockets.connect(sys.argv[1]) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
        await ws.send(b"\x00\x01\xff")
        assert await ws.recv() == b"\x00\x01\xff"
        await ws.ping()
    print("close", ws.close_code)
asyncio.run(main())
"#;
    let output = Command::new(test_support::tool("python3"))
        .args(["-c", script, &format!("ws://{}/ws", job.addr)])
        .output()
        .await
        .expect("python runs");
    assert!(
        output.status.success(),
        "python websockets client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "close 1000");
}

#[tokio::test]
async fn websocket_echo_with_tungstenite_answers_close() {
    let job = spawn_http("ws").await;
    let (mut socket, response) = tokio_tungstenite::connect_async(format!("ws://{}/ws", job.addr))
        .await
        .expect("handshake");
    assert_eq!(response.headers()["x-demo-job"], "ws");
    socket.send(Message::text("ping me")).await.expect("send");
    assert_eq!(
        socket.next().await.expect("reply").expect("frame"),
        Message::text("ping me")
    );
    socket
        .send(Message::binary(vec![7u8; 100_000]))
        .await
        .expect("send");
    assert_eq!(
        socket.next().await.expect("reply").expect("frame"),
        Message::binary(vec![7u8; 100_000])
    );
    socket.close(None).await.expect("close");
    // The server answers the close, then the stream ends.
    while let Some(message) = socket.next().await {
        match message {
            Ok(Message::Close(_)) => {}
            Ok(other) => panic!("unexpected message after close: {other:?}"),
            Err(error) => panic!("close was not answered cleanly: {error}"),
        }
    }
}

#[tokio::test]
async fn redirect_points_at_the_address_the_client_reached() {
    // Listening on all addresses, reached through 127.0.0.2 as on a simulated exec node.
    let job = spawn_http_on("0.0.0.0:0".parse().expect("address"), "node2")
        .await
        .expect("bind");
    let base = format!("http://127.0.0.2:{}", job.addr.port());
    let response = curl(&["-i", &format!("{base}/redirect")]).await;
    assert!(response.starts_with("HTTP/1.1 302"), "{response}");
    assert!(
        response.contains(&format!("location: {base}/target\r\n")),
        "{response}"
    );
    let followed = curl(&["-L", &format!("{base}/redirect")]).await;
    assert!(
        followed.contains("redirect target of demo job node2"),
        "{followed}"
    );
}

#[tokio::test]
async fn status_delay_static_and_trailers() {
    let job = spawn_http("misc").await;
    let url = job.url();
    assert_eq!(status_of("GET", &format!("{url}/status/418")).await, "418");
    assert_eq!(status_of("GET", &format!("{url}/status/abc")).await, "400");

    assert_eq!(status_of("POST", &format!("{url}/sse")).await, "405");
    assert_eq!(status_of("POST", &format!("{url}/nope")).await, "404");

    let started = Instant::now();
    let delayed = curl(&[HTTP2, &format!("{url}/delay?ms=300")]).await;
    assert!(started.elapsed() >= Duration::from_millis(300), "{delayed}");
    assert_eq!(delayed, "delayed 300 ms\n");

    let page = curl(&[&format!("{url}/static/css/site.css")]).await;
    assert_eq!(page, "static /static/css/site.css from demo job misc\n");

    let chunked = curl(&["--raw", "-H", "TE: trailers", &format!("{url}/trailers")]).await;
    assert!(chunked.contains("x-demo-trailer: done"), "{chunked}");
    let http2 = Command::new("curl")
        .args(["-sS", "-v", HTTP2, &format!("{url}/trailers")])
        .output()
        .await
        .expect("curl runs");
    let verbose = String::from_utf8_lossy(&http2.stderr);
    assert!(verbose.contains("< x-demo-trailer: done"), "{verbose}");
}

const BIG: u64 = 50 << 20;

fn expected_digest(len: u64) -> String {
    let mut hasher = Sha256::new();
    let mut chunk = Vec::with_capacity(1 << 16);
    let mut offset = 0;
    while offset < len {
        chunk.clear();
        let end = (offset + (1 << 16)).min(len);
        chunk.extend((offset..end).map(pattern_byte));
        hasher.update(&chunk);
        offset = end;
    }
    hex::encode(hasher.finalize())
}

#[tokio::test]
async fn fifty_mebibytes_down_and_up_keep_their_digest() {
    let job = spawn_http("bulk").await;
    let expected = expected_digest(BIG);
    for protocol in [HTTP1, HTTP2] {
        // Download: curl prints the body; we hash it as it comes.
        let url = format!("{}/bytes?size={BIG}", job.url());
        let mut child = Command::new("curl")
            .args(["-sS", protocol, "-D", "/dev/stderr", &url])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("curl runs");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let mut hasher = Sha256::new();
        let mut received: u64 = 0;
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let read = stdout.read(&mut buffer).await.expect("read body");
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
            received += read as u64;
        }
        let output = child.wait_with_output().await.expect("curl ends");
        let head = String::from_utf8_lossy(&output.stderr).to_lowercase();
        assert!(
            head.contains(&format!("content-length: {BIG}")),
            "{protocol}: {head}"
        );
        assert_eq!(received, BIG, "{protocol}");
        assert_eq!(hex::encode(hasher.finalize()), expected, "{protocol}");

        // Upload: curl streams its stdin (no Content-Length, chunked on HTTP/1.1).
        let mut child = Command::new("curl")
            .args([
                "-sS",
                protocol,
                "-T",
                "-",
                "-X",
                "POST",
                &format!("{}/upload", job.url()),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("curl runs");
        let mut stdin = child.stdin.take().expect("piped stdin");
        let writer = tokio::spawn(async move {
            let mut chunk = Vec::with_capacity(1 << 16);
            let mut offset = 0;
            while offset < BIG {
                chunk.clear();
                let end = (offset + (1 << 16)).min(BIG);
                chunk.extend((offset..end).map(pattern_byte));
                stdin.write_all(&chunk).await.expect("feed curl");
                offset = end;
            }
        });
        let output = child.wait_with_output().await.expect("curl ends");
        writer.await.expect("writer");
        let reply: Value = serde_json::from_slice(&output.stdout).expect("JSON reply");
        assert_eq!(reply["bytes"], BIG, "{protocol}");
        assert_eq!(reply["sha256"], expected, "{protocol}");
    }
}

#[tokio::test]
async fn dropping_the_job_closes_its_connections() {
    let job = spawn_http("doomed").await;
    let mut stream = tokio::net::TcpStream::connect(job.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /sse?count=1000&interval_ms=1000 HTTP/1.1\r\nHost: doomed\r\n\r\n")
        .await
        .expect("send request");
    let mut buffer = vec![0u8; 4096];
    let read = stream.read(&mut buffer).await.expect("response head");
    assert!(buffer[..read].starts_with(b"HTTP/1.1 200"));
    let addr = job.addr;
    drop(job);
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection outlived its job");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener outlived its job"
    );
}
