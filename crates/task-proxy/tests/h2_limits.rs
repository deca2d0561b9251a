//! HTTP/2 callers against the real `task-proxy` binary: what one caller connection may cost the
//! proxy. Callers that never read must not make it buffer job responses; streams must not open
//! unbounded connections to a job; floods of control frames end the connection with
//! `ENHANCE_YOUR_CALM`. Frames are written by hand where a well-behaved client library would
//! not misbehave as needed.

mod support;

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::file_proxy::FileProxy;
use support::BASE_DOMAIN as BASE;
use task_proxy::routing::service_hash;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A HEADERS block for `GET path` at `authority` (HPACK: static-table names, literal values
/// without indexing, no Huffman).
fn get_block(authority: &str, path: &str) -> Vec<u8> {
    let mut out = vec![0x82, 0x86]; // :method GET, :scheme http
    out.push(0x04); // :path, literal value
    out.push(path.len() as u8);
    out.extend_from_slice(path.as_bytes());
    out.push(0x01); // :authority, literal value
    out.push(authority.len() as u8);
    out.extend_from_slice(authority.as_bytes());
    out
}

/// Reads one frame: (type, flags, stream, payload).
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    r.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok((head[3], head[4], stream, payload))
}

fn service_json(op: &str, endpoint: SocketAddr) -> Value {
    json!({"operation_id": op, "task_name": "task", "service": "svc", "protocol": "http",
           "endpoints": [endpoint.to_string()]})
}

fn domain(op: &str) -> String {
    format!("{}.{BASE}", service_hash(op, "task", "svc"))
}

/// A job answering every request head on a keep-alive connection after `delay` with a body of
/// `body_len` zero bytes. Counts the bytes of body it managed to write, and its open and most
/// concurrently open connections.
struct Job {
    addr: SocketAddr,
    body_written: Arc<AtomicU64>,
    open: Arc<AtomicUsize>,
    max_open: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl Job {
    async fn spawn(body_len: u64, delay: Duration) -> Job {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let body_written = Arc::new(AtomicU64::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let max_open = Arc::new(AtomicUsize::new(0));
        let (written, open2, max2) = (body_written.clone(), open.clone(), max_open.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s.set_nodelay(true);
                let (written, open, max_open) = (written.clone(), open2.clone(), max2.clone());
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                max_open.fetch_max(now, Ordering::SeqCst);
                tokio::spawn(async move {
                    let chunk = vec![0u8; 64 * 1024];
                    let mut pending = Vec::new();
                    let mut buf = [0u8; 8192];
                    'conn: loop {
                        let n = match s.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        pending.extend_from_slice(&buf[..n]);
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            pending.drain(..end + 4);
                            tokio::time::sleep(delay).await;
                            let head =
                                format!("HTTP/1.1 200 OK\r\ncontent-length: {body_len}\r\n\r\n");
                            if s.write_all(head.as_bytes()).await.is_err() {
                                break 'conn;
                            }
                            let mut left = body_len;
                            while left > 0 {
                                let n = left.min(chunk.len() as u64) as usize;
                                if s.write_all(&chunk[..n]).await.is_err() {
                                    break 'conn;
                                }
                                written.fetch_add(n as u64, Ordering::Relaxed);
                                left -= n as u64;
                            }
                        }
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Job {
            addr,
            body_written,
            open,
            max_open,
            _task: task,
        }
    }
}

/// Opens an HTTP/2 connection that grants the proxy a window of 2^31-1 bytes (per stream and
/// for the connection), asks for `path` on `streams` streams, and never reads.
async fn greedy_non_reader(
    proxy: SocketAddr,
    authority: &str,
    path: &str,
    streams: u32,
) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.expect("connect");
    let mut out = PREFACE.to_vec();
    let mut settings = Vec::new();
    settings.extend_from_slice(&SETTINGS_INITIAL_WINDOW_SIZE.to_be_bytes());
    settings.extend_from_slice(&0x7fff_ffffu32.to_be_bytes());
    out.extend(frame(SETTINGS, 0, 0, &settings));
    out.extend(frame(
        WINDOW_UPDATE,
        0,
        0,
        &(0x7fff_ffffu32 - 65_535).to_be_bytes(),
    ));
    let block = get_block(authority, path);
    for i in 0..streams {
        out.extend(frame(HEADERS, END_STREAM | END_HEADERS, 1 + 2 * i, &block));
    }
    s.write_all(&out).await.expect("write the requests");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_callers_that_never_read_do_not_make_the_proxy_buffer_job_responses() {
    const BODY: u64 = 16 * 1024 * 1024;
    let job = Job::spawn(BODY, Duration::ZERO).await;
    let served = FileProxy::start_binary(
        &[service_json("op-greedy", job.addr)],
        &["--auth-enabled=false"],
        &[],
    );
    let proxy = &served.proxy;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = proxy.rss_kib().expect("rss");
    let authority = domain("op-greedy");
    let mut conns = Vec::new();
    for _ in 0..2 {
        conns.push(greedy_non_reader(proxy.plain, &authority, "/big", 100).await);
    }
    // Let the proxy take whatever it takes, then some more.
    let mut peak = before;
    let mut last_written = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        peak = peak.max(proxy.rss_kib().expect("rss"));
        let written = job.body_written.load(Ordering::Relaxed);
        if started.elapsed() > Duration::from_secs(4) && written == last_written {
            break;
        }
        last_written = written;
    }
    let growth_mib = peak.saturating_sub(before) as f64 / 1024.0;
    let written_mib = job.body_written.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0);
    println!(
        "2 connections x 100 streams of 16 MiB, never read: proxy RSS {before} KiB -> peak {peak} KiB \
         (+{growth_mib:.1} MiB); the jobs wrote {written_mib:.1} MiB of body; job connections {}",
        job.open.load(Ordering::SeqCst)
    );
    assert!(
        growth_mib <= 20.0,
        "the proxy buffered {growth_mib:.1} MiB for callers that never read"
    );
    drop(conns);
}

/// Sends `n` GETs on one HTTP/2 connection (h2 client, all at once); returns their statuses and
/// the `retry-after` values of the 503s.
async fn h2_gets(proxy: SocketAddr, authority: &str, n: usize) -> Vec<(u16, Option<String>)> {
    let tcp = TcpStream::connect(proxy).await.expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut tasks = Vec::new();
    for _ in 0..n {
        let client = client.clone();
        let uri = format!("http://{authority}/");
        tasks.push(tokio::spawn(async move {
            let mut client = client.ready().await.ok()?;
            let req = http::Request::get(uri).body(()).ok()?;
            let (resp, _) = client.send_request(req, true).ok()?;
            let resp = resp.await.ok()?;
            let status = resp.status().as_u16();
            let retry = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let mut body = resp.into_body();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.ok()?;
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            Some((status, retry))
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.ok().flatten().unwrap_or((0, None)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_streams_share_a_bounded_set_of_job_connections() {
    // A slow job: every answer takes 1 s, so every stream holds a job connection meanwhile.
    let job = Job::spawn(2, Duration::from_secs(1)).await;
    let served = FileProxy::start_binary(
        &[service_json("op-fanout", job.addr)],
        &["--auth-enabled=false"],
        &[],
    );
    let proxy = &served.proxy;
    let authority = domain("op-fanout");

    // The proxy advertises its cap on concurrent streams in its SETTINGS.
    let mut s = TcpStream::connect(proxy.plain).await.expect("connect");
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    s.write_all(&hello).await.expect("write");
    let advertised = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let (kind, flags, _, payload) = read_frame(&mut s).await.expect("a frame");
            if kind == SETTINGS && flags & 1 == 0 {
                return payload
                    .chunks_exact(6)
                    .find(|p| u16::from_be_bytes([p[0], p[1]]) == SETTINGS_MAX_CONCURRENT_STREAMS)
                    .map(|p| u32::from_be_bytes([p[2], p[3], p[4], p[5]]));
            }
        }
    })
    .await
    .expect("the proxy's SETTINGS");
    drop(s);

    // 8 callers x 128 streams: 1024 requests at once to one job.
    let fds_before = proxy.open_fds().expect("fds");
    let sampling = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (peak, pid) = (sampling.clone(), proxy.pid());
        tokio::spawn(async move {
            loop {
                if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
                    peak.fetch_max(dir.count(), Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let started = Instant::now();
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let authority = authority.clone();
            let addr = proxy.plain;
            tokio::spawn(async move { h2_gets(addr, &authority, 128).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for c in callers {
        statuses.extend(c.await.expect("caller"));
    }
    sampler.abort();
    let peak = sampling.load(Ordering::Relaxed);
    let ok = statuses.iter().filter(|(s, _)| *s == 200).count();
    println!(
        "1024 h2 streams over 8 connections to a 1 s job: {ok} answered 200 in {:.1} s; proxy fds \
         {fds_before} -> peak {peak}; the job saw at most {} connections at once",
        started.elapsed().as_secs_f64(),
        job.max_open.load(Ordering::SeqCst)
    );
    println!("SETTINGS_MAX_CONCURRENT_STREAMS advertised: {advertised:?}");
    assert_eq!(advertised, Some(128), "SETTINGS_MAX_CONCURRENT_STREAMS");
    assert_eq!(ok, 1024, "every request is served, queued ones included");
    // The proxy's own descriptors are the measure: the job notices a closed connection only
    // a while after the proxy opened its replacement (connections are handed on by closing and
    // reopening while requests queue), so its count of open connections runs high.
    assert!(
        peak <= fds_before + 256 + 8 + 16,
        "proxy descriptors {fds_before} -> {peak}: at most 256 to the job and 8 callers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_job_connection_queue_get_503_with_retry_after() {
    // Answers take 3 s; two connections, two queued for at most 1 s.
    let job = Job::spawn(2, Duration::from_secs(3)).await;
    let served = FileProxy::start(
        &[service_json("op-queue", job.addr)],
        &[
            "--auth-enabled=false",
            "--upstream-max-connections-per-job=2",
            "--upstream-queue-length=2",
            "--upstream-queue-timeout=1s",
        ],
        &[],
    );
    let proxy = &served.proxy;
    let authority = domain("op-queue");
    let started = Instant::now();
    let statuses = h2_gets(proxy.plain, &authority, 10).await;
    let ok = statuses.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<_> = statuses.iter().filter(|(s, _)| *s == 503).collect();
    println!(
        "10 h2 streams, 2 job connections, queue of 2: {ok} x 200, {} x 503 in {:.1} s",
        refused.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(ok, 2, "{statuses:?}");
    assert_eq!(refused.len(), 8, "{statuses:?}");
    assert!(
        refused.iter().all(|(_, retry)| retry.is_some()),
        "every 503 says when to retry: {statuses:?}"
    );
    assert!(job.max_open.load(Ordering::SeqCst) <= 2);

    // The HTTP/1.1 relay shares the same limit: with both connections busy and the queue full,
    // a plain request is refused too.
    let busy = {
        let (addr, authority) = (proxy.plain, authority.clone());
        tokio::spawn(async move { h2_gets(addr, &authority, 4).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut s = TcpStream::connect(proxy.plain).await.expect("connect");
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut head = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut head))
        .await
        .expect("an answer")
        .expect("read");
    let head = String::from_utf8_lossy(&head[..n]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 503"), "{head}");
    assert!(head.contains("retry-after:"), "{head}");
    let _ = busy.await;

    let metrics = proxy.admin_get("/metrics").1;
    let refused_metric = metrics
        .lines()
        .find(|l| l.starts_with("task_proxy_upstream_refused_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(refused_metric >= 9, "{metrics}");
    assert!(
        metrics.contains("task_proxy_upstream_queued_total{"),
        "{metrics}"
    );
}

/// Floods one connection with `frame_bytes` frames after the preface; returns the GOAWAY error
/// code the proxy sent (None: no GOAWAY) and whether it then closed the connection.
async fn flood(proxy: SocketAddr, one: Vec<u8>, count: usize) -> (Option<u32>, bool) {
    let s = TcpStream::connect(proxy).await.expect("connect");
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        if w.write_all(&hello).await.is_err() {
            return;
        }
        let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 100).collect();
        for _ in 0..count / 100 {
            if w.write_all(&batch).await.is_err() {
                return;
            }
        }
        // The write half stays open (dropping it would end the connection from this side).
        std::future::pending::<()>().await;
        drop(w);
    });
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match read_frame(&mut r).await {
                Ok((GOAWAY, _, _, payload)) if payload.len() >= 8 => {
                    let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                    // The connection then ends: nothing but EOF (or a reset) follows.
                    let mut rest = Vec::new();
                    let closed =
                        tokio::time::timeout(Duration::from_secs(3), r.read_to_end(&mut rest))
                            .await
                            .is_ok();
                    return (Some(code), closed);
                }
                Ok(_) => {}
                Err(_) => return (None, true),
            }
        }
    })
    .await
    .unwrap_or((None, false));
    writer.abort();
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_control_frame_floods_get_goaway_enhance_your_calm() {
    let job = Job::spawn(2, Duration::ZERO).await;
    let served = FileProxy::start_binary(
        &[service_json("op-flood", job.addr)],
        &["--auth-enabled=false"],
        &[],
    );
    let proxy = &served.proxy;
    let authority = domain("op-flood");

    // A well-behaved caller, served all along on its own connection.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let normal = {
        let (addr, authority, stop) = (proxy.plain, authority.clone(), stop.clone());
        tokio::spawn(async move {
            let mut served = 0;
            while !stop.load(Ordering::Relaxed) {
                let got = h2_gets(addr, &authority, 1).await;
                if got.first().map(|g| g.0) == Some(200) {
                    served += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            served
        })
    };

    let cases = [
        ("PING", frame(PING, 0, 0, &[0u8; 8])),
        ("SETTINGS", frame(SETTINGS, 0, 0, &[])),
        ("PRIORITY", frame(0x2, 0, 1, &[0, 0, 0, 0, 16])),
    ];
    for (name, one) in cases {
        let started = Instant::now();
        let (code, closed) = flood(proxy.plain, one, 20_000).await;
        println!(
            "{name} flood: GOAWAY {code:?}, closed {closed} after {:.0} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
        assert_eq!(code, Some(ENHANCE_YOUR_CALM), "{name} flood: GOAWAY code");
        assert!(
            closed,
            "{name} flood: the connection is closed after the GOAWAY"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let served = normal.await.expect("normal caller");
    assert!(
        served > 0,
        "the well-behaved caller was served during the floods"
    );
    let after = h2_gets(proxy.plain, &authority, 1).await;
    assert_eq!(after.first().map(|g| g.0), Some(200), "{after:?}");
    let metrics = proxy.admin_get("/metrics").1;
    let floods = metrics
        .lines()
        .find_map(|l| l.strip_prefix("task_proxy_h2_floods_total "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(floods.is_some_and(|n| n >= 3), "{metrics}");

    // Figures: a well-behaved caller's latency, and the proxy's CPU, while an attacker
    // reconnects and floods PINGs over and over.
    let quiet = latencies(proxy.plain, &authority, 100).await;
    let cpu_before = cpu_ticks(proxy.pid());
    let attack_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attacker = {
        let (addr, stop) = (proxy.plain, attack_stop.clone());
        tokio::spawn(async move {
            let mut floods = 0;
            while !stop.load(Ordering::Relaxed) {
                flood(addr, frame(PING, 0, 0, &[0u8; 8]), 20_000).await;
                floods += 1;
            }
            floods
        })
    };
    let wall = Instant::now();
    let busy = latencies(proxy.plain, &authority, 100).await;
    let cpu = (cpu_ticks(proxy.pid()) - cpu_before) as f64 / 100.0;
    let wall = wall.elapsed().as_secs_f64();
    attack_stop.store(true, Ordering::Relaxed);
    let attacks = attacker.await.unwrap_or(0);
    println!(
        "well-behaved caller: median {:.2} ms alone, {:.2} ms during {attacks} reconnecting PING \
         floods; proxy CPU {:.0}% of a core meanwhile",
        quiet.as_secs_f64() * 1000.0,
        busy.as_secs_f64() * 1000.0,
        cpu / wall * 100.0
    );
}

/// The median latency of `n` sequential GETs on one HTTP/2 connection.
async fn latencies(proxy: SocketAddr, authority: &str, n: usize) -> Duration {
    let tcp = TcpStream::connect(proxy).await.expect("connect");
    let _ = tcp.set_nodelay(true);
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let mut client = client.clone().ready().await.expect("ready");
        let req = http::Request::get(format!("http://{authority}/"))
            .body(())
            .expect("request");
        let (resp, _) = client.send_request(req, true).expect("send");
        let mut body = resp.await.expect("response").into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("body");
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        out.push(started.elapsed());
    }
    out.sort();
    out[n / 2]
}

/// User and system CPU ticks (1/100 s) of process `pid`.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name (in parentheses), utime and stime are the 12th and 13th fields.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    tick(11) + tick(12)
}

/// The proxy's gauge of response bytes held for HTTP/2 callers.
fn bytes_held(proxy: &test_support::Proxy) -> u64 {
    let text = proxy.metrics();
    text.lines()
        .find_map(|l| l.strip_prefix("task_proxy_h2_response_bytes_held "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no task_proxy_h2_response_bytes_held in /metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_never_reads_holds_at_most_the_connection_budget_and_the_job_is_held_back() {
    use task_proxy::proxy::h2_budget::H2_CONNECTION_BUDGET;
    use task_proxy::proxy::upstream::UPSTREAM_READ_CHUNK;
    const BODY: u64 = 64 * 1024 * 1024;
    let job = Job::spawn(BODY, Duration::ZERO).await;
    let served = FileProxy::start(
        &[service_json("op-budget", job.addr)],
        &["--auth-enabled=false"],
        &[],
    );
    let proxy = &served.proxy;
    let authority = domain("op-budget");
    let conns = [
        greedy_non_reader(proxy.plain, &authority, "/big", 100).await,
        greedy_non_reader(proxy.plain, &authority, "/big", 100).await,
    ];
    // Until the job can write no more: the proxy stopped reading from it.
    let (mut peak, mut last_written, mut still) = (0, 0, 0);
    let started = Instant::now();
    while still < 6 && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(bytes_held(proxy));
        let written = job.body_written.load(Ordering::Relaxed);
        still = if written == last_written {
            still + 1
        } else {
            0
        };
        last_written = written;
    }
    // Per connection: the budget, plus the one chunk a body may take while under it.
    let bound = 2 * (H2_CONNECTION_BUDGET + UPSTREAM_READ_CHUNK) as u64;
    // Without the budget the same run holds about 8 MB (every stream's queue and chunk in hand).
    assert!(
        bound <= 1 << 20,
        "a budget of {bound} bytes bounds nothing here"
    );
    println!(
        "2 connections x 100 streams of 64 MiB, never read: at most {peak} bytes held \
         (bound {bound}); the job wrote {last_written} bytes, then stopped"
    );
    assert!(peak > 0, "the responses started");
    assert!(peak <= bound, "{peak} bytes held for two connections");
    assert!(still >= 6, "the job was never held back");
    assert!(
        last_written < 200 * BODY / 8,
        "the job wrote {last_written} bytes for callers that read nothing"
    );
    // Every charge is given back when the callers go (their streams' queued data dropped).
    drop(conns);
    let gone = Instant::now();
    while bytes_held(proxy) > 0 && gone.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        bytes_held(proxy),
        0,
        "bytes still counted after the callers left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_read_get_every_byte_of_concurrent_large_bodies_through_the_budget() {
    const BODY: u64 = 8 * 1024 * 1024;
    let job = Job::spawn(BODY, Duration::ZERO).await;
    let served = FileProxy::start(
        &[service_json("op-budget-read", job.addr)],
        &["--auth-enabled=false"],
        &[],
    );
    let proxy = served.proxy.plain;
    let authority = domain("op-budget-read");
    let tcp = TcpStream::connect(proxy).await.expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let client = client.clone();
        let uri = format!("http://{authority}/big");
        tasks.push(tokio::spawn(async move {
            let mut client = client.ready().await.expect("ready");
            let req = http::Request::get(uri).body(()).expect("request");
            let (resp, _) = client.send_request(req, true).expect("send");
            let mut body = resp.await.expect("response").into_body();
            let mut got = 0u64;
            while let Some(chunk) = body.data().await {
                let chunk = chunk.expect("chunk");
                got += chunk.len() as u64;
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            got
        }));
    }
    let all = tokio::time::timeout(Duration::from_secs(60), async {
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("task"));
        }
        out
    })
    .await
    .expect("six 8 MiB bodies on one connection within 60 s");
    assert_eq!(all, vec![BODY; 6]);
    // The last chunks are given back when h2 drops them, just after they were written.
    let done = Instant::now();
    while bytes_held(&served.proxy) > 0 && done.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(bytes_held(&served.proxy), 0, "bytes still counted");
}
